import AspenCore
import AspenRaft

/// Raft's wire messages and the codecs of what Raft stores (entry payloads, memberships).
extension FuzzTarget {
    static let raftTargets: [FuzzTarget] = [raftMessage, raftCodec]

    static let raftMessage = FuzzTarget(
        name: "raft-message", summary: "Raft.Message(decoding:limits:): every message kind between members",
        seeds: { RaftSeeds.messages.map { $0.encoded() } }
    ) { input in
        FuzzCheck.roundTrip(input, decode: { try Raft.Message(decoding: $0) }, encode: { $0.encoded() }, bounds: RaftSeeds.bounds)
    }

    static let raftCodec = FuzzTarget(
        name: "raft-codec", summary: "Raft.Payload(decoding:) and Raft.decodeMembership: entry payloads and memberships as stored",
        seeds: {
            selected(0, RaftSeeds.payloads.map { $0.encoded() }) + selected(1, RaftSeeds.memberships.map { Raft.encode($0) })
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try Raft.Payload(decoding: $0) }, encode: { $0.encoded() }) },
            { FuzzCheck.roundTrip($0, decode: { try Raft.decodeMembership($0) }, encode: { Raft.encode($0) }) },
        ])
    }
}

enum RaftSeeds {
    static let memberships: [Raft.Membership] = [
        Raft.Membership(),
        Raft.Membership(voters: [1, 2, 3], learners: [4], addresses: [1: Array("10.0.0.1:7000".utf8), 4: [0, 0xFF, 0x80]]),
        Raft.Membership(voters: [1, 5], outgoingVoters: [1, 2, 3], learners: [9], learnersNext: [2], addresses: [2: Array(repeating: 7, count: 40)]),
        Raft.Membership(voters: (1...64).map { NodeID($0) }),
        Raft.Membership(voters: [NodeID(.max)], learners: [NodeID(1 << 63)]),
    ]

    static let payloads: [Raft.Payload] =
        [.noop, .command([]), .command(Array("put k v".utf8)), .command(Array(repeating: 0xAB, count: 300))] + memberships.map { .membership($0) }

    static var messages: [Raft.Message] {
        let entries = payloads.enumerated().map { Raft.Entry(term: 3 + UInt64($0.offset / 3), index: 11 + UInt64($0.offset), payload: $0.element) }
        let kinds: [Raft.Message.Kind] = [
            .preVote(lastIndex: 10, lastTerm: 2), .preVoteResponse(granted: true), .vote(lastIndex: .max, lastTerm: 7, transfer: true),
            .voteResponse(granted: false),
            .append(Raft.Append(prevIndex: 10, prevTerm: 3, entries: entries, commit: 9)),
            .append(Raft.Append(prevIndex: 0, prevTerm: 0, entries: [], commit: 0)),
            .append(Raft.Append(prevIndex: 5, prevTerm: 1, entries: [], commit: 5, wantsAnswer: false)),
            .appendResponse(Raft.AppendResponse(index: 12, rejected: true, hintIndex: 8, hintTerm: 2)),
            .heartbeat(commit: 42, readRound: 7), .heartbeatResponse(readRound: 7),
            .snapshotChunk(
                Raft.SnapshotChunk(
                    metadata: Raft.SnapshotMetadata(index: 100, term: 4, membership: memberships[2]), totalBytes: 1 << 20, offset: 4096,
                    data: Array(repeating: 0x5A, count: 64))),
            .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: 100, nextOffset: 8192)),
            .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: 100, nextOffset: 1 << 20, matchIndex: 100)),
            .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: 100, nextOffset: 0, refused: true)),
            .timeoutNow(commit: 77), .readIndex(context: 5), .readIndexResponse(context: 5, index: 99), .readIndexResponse(context: 6, index: nil),
            .propose(Raft.ForwardedProposals(contexts: [1, 2, .max], commands: [[], Array("a".utf8), Array(repeating: 1, count: 200)])),
            .proposeResponse(contexts: [1, 2], placement: Raft.ProposalPlacement(term: 3, firstIndex: 40)),
            .proposeResponse(contexts: [], placement: nil),
        ]
        return kinds.enumerated().map { Raft.Message(group: GroupID(UInt32($0.offset % 3)), from: 1, to: 2, term: 3, kind: $0.element) }
    }

    /// What a decoded message may never hold, whatever its bytes said.
    static func bounds(_ message: Raft.Message) -> String? {
        let limits = Limits.standard
        switch message.kind {
        case .append(let append):
            if append.entries.count > limits.raftBatchEntriesMax { return "\(append.entries.count) entries in one append" }
            for (position, entry) in append.entries.enumerated() where entry.index != append.prevIndex + 1 + UInt64(position) {
                return "append entry \(position) at index \(entry.index) after \(append.prevIndex)"
            }
        case .snapshotChunk(let chunk):
            if chunk.offset + chunk.data.count > chunk.totalBytes { return "a chunk past its snapshot's end" }
            if chunk.data.count > limits.raftSnapshotChunkBytes { return "a chunk of \(chunk.data.count) bytes" }
        case .propose(let proposals):
            if proposals.commands.count > limits.raftBatchEntriesMax { return "\(proposals.commands.count) forwarded commands" }
        default: break
        }
        return nil
    }
}
