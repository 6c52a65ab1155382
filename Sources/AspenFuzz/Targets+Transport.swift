import AspenCore
import AspenTransport

/// What a node or client learns about a cluster from outside it: tickets (pasted by people) and
/// member records (carried in the Raft membership and in `cluster.members`).
extension FuzzTarget {
    static let transportTargets: [FuzzTarget] = [ticketText, ticket, memberRecord]

    static let ticketText = FuzzTarget(
        name: "ticket-text", summary: "ClusterTicket(parsing:) on any text: the prefix, base32 and checksum checks",
        seeds: {
            // As pasted: whitespace around it, the base32 in capitals.
            TransportSeeds.tickets.map { Array($0.encoded.utf8) } + [Array(" aspen1\(TransportSeeds.tickets[0].encoded.dropFirst(6).uppercased())\n".utf8)]
        }
    ) { input in
        FuzzCheck.roundTrip(
            input, decode: { try ClusterTicket(parsing: String(decoding: $0, as: UTF8.self)) }, encode: { Array($0.encoded.utf8) })
    }

    /// The ticket's contents with a right checksum, so that mutation reaches the fields behind it.
    static let ticket = FuzzTarget(
        name: "ticket", summary: "ClusterTicket(parsing:) past the checksum: the input is the ticket's body, sealed and base32-encoded first",
        seeds: { TransportSeeds.tickets.map(TransportSeeds.body) }
    ) { input in
        FuzzCheck.roundTrip(
            input, decode: { try ClusterTicket(parsing: TransportSeeds.sealedTicket($0)) }, encode: TransportSeeds.body)
    }

    static let memberRecord = FuzzTarget(
        name: "member-record", summary: "MemberRecord(decoding:) and ClusterMembers(decoding:limits:): the cluster's record of each member",
        seeds: {
            selected(0, TransportSeeds.records.map(\.encoded)) + selected(1, TransportSeeds.members.map(\.encoded))
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try MemberRecord(decoding: $0) }, encode: \.encoded) },
            { FuzzCheck.roundTrip($0, decode: { try ClusterMembers(decoding: $0) }, encode: \.encoded) },
        ])
    }
}

enum TransportSeeds {
    static func key(_ fill: UInt8) -> NodeKey { NodeKey(bytes: Array(repeating: fill, count: 32))! }

    static let tickets: [ClusterTicket] = [
        ClusterTicket(clusterID: Array(0..<16), peers: [
            ClusterTicket.Peer(id: 1, key: key(0xA1), host: "10.0.0.1", port: 7000), ClusterTicket.Peer(id: 2, key: key(0), host: "::1", port: 65535),
        ]),
        ClusterTicket(clusterID: [], peers: []),
        ClusterTicket(clusterID: Array(repeating: 0xFF, count: 64), peers: (1...3).map { ClusterTicket.Peer(id: NodeID($0), key: key(UInt8($0)), host: "node\($0).example", port: 0) }),
    ]

    static let records: [MemberRecord] = [
        MemberRecord(key: key(7), host: "10.0.0.7", port: 7000, clusterID: Array(0..<16)),
        MemberRecord(key: key(8), host: "fe80::1", port: 1, clusterID: [], etcdAddress: "10.0.0.8:2379"),
        MemberRecord(key: key(9), host: "", port: 65535, clusterID: Array(repeating: 1, count: 64), etcdAddress: ""),
    ]

    static let members: [ClusterMembers] = [
        ClusterMembers(voters: [1, 2], learners: [3], records: [1: records[0], 2: records[1], 3: records[2]]),
        ClusterMembers(voters: [], learners: [], records: [:]),
    ]

    /// A ticket's bytes before its checksum and base32: what `ticket` mutates.
    static func body(_ ticket: ClusterTicket) -> [UInt8] {
        let text = ticket.encoded.dropFirst("aspen1".count)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        var bytes: [UInt8] = []
        var (buffer, bits): (UInt32, Int) = (0, 0)
        for character in text.utf8 {
            buffer = buffer << 5 | UInt32(alphabet.firstIndex(of: character) ?? 0)
            bits += 5
            if bits >= 8 {
                bytes.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
        }
        return Array(bytes.dropLast(4))
    }

    /// `body` as a ticket: its CRC-32C appended, base32 (RFC 4648, lowercase, no padding), the prefix.
    static func sealedTicket(_ body: [UInt8]) -> String {
        let bytes = crcSealed(body)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        var output: [UInt8] = []
        var (buffer, bits): (UInt32, Int) = (0, 0)
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return "aspen1" + String(decoding: output, as: UTF8.self)
    }
}
