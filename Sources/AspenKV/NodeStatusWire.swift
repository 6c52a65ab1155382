import AspenCore

/// What one node reports about itself (`cluster.status`).
public struct NodeStatusInfo: Sendable, Equatable {
    public var id: UInt64
    /// "leader", "follower", "candidate", "preCandidate".
    public var role: String
    public var term: UInt64
    public var leader: UInt64?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64
    public var voters: [UInt64]
    public var learners: [UInt64]
    /// The last index the node's snapshot covers: its log starts after it.
    public var snapshotIndex: UInt64 = 0

    public init(
        id: UInt64, role: String, term: UInt64, leader: UInt64?, commitIndex: UInt64, appliedIndex: UInt64, lastIndex: UInt64,
        voters: [UInt64], learners: [UInt64]
    ) {
        self.id = id
        self.role = role
        self.term = term
        self.leader = leader
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.lastIndex = lastIndex
        self.voters = voters
        self.learners = learners
    }
}

public enum NodeStatusWire {
    public static func encode(_ status: NodeStatusInfo) -> Bytes {
        var writer = ByteWriter()
        writer.writeVarint(status.id)
        writer.writeString(status.role)
        writer.writeVarint(status.term)
        writer.writeVarint(status.leader ?? 0)
        writer.writeVarint(status.commitIndex)
        writer.writeVarint(status.appliedIndex)
        writer.writeVarint(status.lastIndex)
        for set in [status.voters, status.learners] {
            writer.writeVarint(UInt64(set.count))
            for id in set { writer.writeVarint(id) }
        }
        writer.writeVarint(status.snapshotIndex)
        return writer.bytes
    }

    public static func decode(_ bytes: Bytes) throws(DecodingError) -> NodeStatusInfo {
        var reader = ByteReader(bytes)
        let id = try reader.readVarint()
        let role = try reader.readString(limit: 32)
        let term = try reader.readVarint()
        let leader = try reader.readVarint()
        let commit = try reader.readVarint()
        let applied = try reader.readVarint()
        let last = try reader.readVarint()
        var sets: [[UInt64]] = []
        for _ in 0..<2 {
            let count = try reader.readCount(limit: Limits.standard.raftMembersMax)
            var set: [UInt64] = []
            for _ in 0..<count { set.append(try reader.readVarint()) }
            sets.append(set)
        }
        let snapshotIndex = try reader.readVarint()
        try reader.expectEnd()
        var status = NodeStatusInfo(
            id: id, role: role, term: term, leader: leader == 0 ? nil : leader, commitIndex: commit, appliedIndex: applied,
            lastIndex: last, voters: sets[0], learners: sets[1])
        status.snapshotIndex = snapshotIndex
        return status
    }
}
