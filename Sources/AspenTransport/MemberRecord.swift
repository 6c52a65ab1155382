import AspenCore
import Crypto

/// What the cluster records about one member, carried with the Raft membership (so it travels in
/// the log and in snapshots and always describes exactly the current members): the key the
/// member must prove, where it listens, and the id of the cluster it belongs to.
public struct MemberRecord: Sendable, Equatable {
    public var key: NodeKey
    public var host: String
    public var port: Int
    public var clusterID: [UInt8]
    /// Where the member serves etcd's v3 API (HOST:PORT), when it does.
    public var etcdAddress: String?

    public init(key: NodeKey, host: String, port: Int, clusterID: [UInt8], etcdAddress: String? = nil) {
        self.key = key
        self.host = host
        self.port = port
        self.clusterID = clusterID
        self.etcdAddress = etcdAddress
    }

    static let version: UInt8 = 1

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.writeRaw(key.bytes)
        writer.writeString(host)
        writer.writeVarint(UInt64(port))
        writer.writeBytes(clusterID)
        if let etcdAddress { writer.writeString(etcdAddress) }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.version else { throw .invalid("unknown member record version") }
        var keyBytes: [UInt8] = []
        for _ in 0..<32 { keyBytes.append(try reader.readByte()) }
        guard let key = NodeKey(bytes: keyBytes) else { throw .invalid("member key") }
        self.key = key
        host = try reader.readString(limit: 255)
        port = try reader.readCount(limit: 65535)
        clusterID = try reader.readBytes(limit: 64)
        etcdAddress = reader.isAtEnd ? nil : try reader.readString(limit: 300)
        try reader.expectEnd()
    }

    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The cluster id as etcd's 64-bit form (its first eight bytes).
    public static func etcdClusterID(_ clusterID: [UInt8]) -> UInt64 {
        clusterID.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// The id of a cluster founded by these members (id and key of each): every founder derives
    /// the same one without talking to the others.
    public static func foundingClusterID(_ founders: [(id: NodeID, key: NodeKey)]) -> [UInt8] {
        var hash = SHA256()
        for founder in founders.sorted(by: { $0.id < $1.id }) {
            var writer = ByteWriter()
            writer.writeVarint(founder.id.rawValue)
            writer.writeRaw(founder.key.bytes)
            hash.update(data: writer.bytes)
        }
        return Array(hash.finalize().prefix(16))
    }
}

/// The cluster's members as a node reports them (`cluster.members`): who votes, who learns, and
/// each one's record.
public struct ClusterMembers: Sendable, Equatable {
    public var voters: [NodeID]
    public var learners: [NodeID]
    public var records: [NodeID: MemberRecord]

    public init(voters: [NodeID], learners: [NodeID], records: [NodeID: MemberRecord]) {
        self.voters = voters
        self.learners = learners
        self.records = records
    }

    public var clusterID: [UInt8] { records.values.first?.clusterID ?? [] }

    /// A ticket naming every member whose address is recorded.
    public var ticket: ClusterTicket {
        ClusterTicket(
            clusterID: clusterID,
            peers: records.keys.sorted().map { id in
                let record = records[id]!
                return ClusterTicket.Peer(id: id, key: record.key, host: record.host, port: record.port)
            })
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        for set in [voters, learners] {
            writer.writeVarint(UInt64(set.count))
            for id in set { writer.writeVarint(id.rawValue) }
        }
        writer.writeVarint(UInt64(records.count))
        for id in records.keys.sorted() {
            writer.writeVarint(id.rawValue)
            writer.writeBytes(records[id]!.encoded)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        var sets: [[NodeID]] = []
        for _ in 0..<2 {
            var set: [NodeID] = []
            for _ in 0..<(try reader.readCount(limit: limits.raftMembersMax)) { set.append(NodeID(try reader.readVarint())) }
            sets.append(set)
        }
        var records: [NodeID: MemberRecord] = [:]
        for _ in 0..<(try reader.readCount(limit: limits.raftMembersMax * 2)) {
            let id = NodeID(try reader.readVarint())
            records[id] = try MemberRecord(decoding: try reader.readBytes(limit: 1024))
        }
        try reader.expectEnd()
        (voters, learners, self.records) = (sets[0], sets[1], records)
    }
}
