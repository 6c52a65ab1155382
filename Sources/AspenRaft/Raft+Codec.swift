import AspenCore

/// Binary forms of the Raft values that are stored or sent: entries' payloads, memberships,
/// hard states and snapshot metadata. Each starts with a version byte; every decoder checks its
/// lengths against `Limits` before allocating.
extension Raft {
    static let codecVersion: UInt8 = 2

    public static func encode(_ membership: Membership, into writer: inout ByteWriter) {
        for set in [membership.voters, membership.outgoingVoters, membership.learners, membership.learnersNext] {
            writer.writeVarint(UInt64(set.count))
            for id in set { writer.writeVarint(id.rawValue) }
        }
        let addressed = membership.addresses.keys.sorted()
        writer.writeVarint(UInt64(addressed.count))
        for id in addressed {
            writer.writeVarint(id.rawValue)
            writer.writeBytes(membership.addresses[id]!)
        }
    }

    public static func decodeMembership(from reader: inout ByteReader, limits: Limits = .standard) throws(DecodingError) -> Membership {
        var sets: [[NodeID]] = []
        for _ in 0..<4 {
            let count = try reader.readCount(limit: limits.raftMembersMax)
            var set: [NodeID] = []
            for _ in 0..<count { set.append(NodeID(try reader.readVarint())) }
            sets.append(set)
        }
        var addresses: [NodeID: [UInt8]] = [:]
        for _ in 0..<(try reader.readCount(limit: limits.raftMembersMax * 2)) {
            let id = NodeID(try reader.readVarint())
            addresses[id] = try reader.readBytes(limit: Membership.addressBytesMax)
        }
        return Membership(voters: sets[0], outgoingVoters: sets[1], learners: sets[2], learnersNext: sets[3], addresses: addresses)
    }

    public static func encode(_ membership: Membership) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(codecVersion)
        encode(membership, into: &writer)
        return writer.bytes
    }

    public static func decodeMembership(_ bytes: [UInt8]) throws(DecodingError) -> Membership {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == codecVersion else { throw .invalid("unknown membership encoding version") }
        let membership = try decodeMembership(from: &reader)
        try reader.expectEnd()
        return membership
    }
}

extension Raft.Payload {
    /// Tag byte, then the payload.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: byteCount + 8)
        switch self {
        case .command(let bytes):
            writer.write(0)
            writer.writeBytes(bytes)
        case .noop:
            writer.write(1)
        case .membership(let membership):
            writer.write(2)
            Raft.encode(membership, into: &writer)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 0: self = .command(try reader.readBytes(limit: limits.raftEntryBytesMax))
        case 1: self = .noop
        case 2: self = .membership(try Raft.decodeMembership(from: &reader, limits: limits))
        case let tag: throw .unknownTag(tag, context: "entry payload")
        }
        try reader.expectEnd()
    }
}

extension Raft.Entry {
    /// The checksum stored beside an entry: covers its index, term and payload, so an entry read
    /// back at the wrong place, or torn, is caught.
    public static func checksum(index: Raft.Index, term: Raft.Term, payload: [UInt8]) -> UInt32 {
        var header = ByteWriter(capacity: 16)
        header.writeFixed(index)
        header.writeFixed(term)
        return CRC32C.checksum(payload, seed: CRC32C.checksum(header.bytes))
    }
}
