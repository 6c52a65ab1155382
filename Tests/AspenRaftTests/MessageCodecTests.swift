import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Raft wire codec")
struct MessageCodecTests {
    @Test("every message a simulated cluster sends survives encoding and decoding unchanged")
    func roundTripFromSimulation() throws {
        // Collect real traffic, every kind included, from a busy lockstep cluster.
        let cluster = LockstepCluster(voters: 3, seed: 5) { $0.limits.raftSnapshotChunkBytes = 16 }
        cluster.addJoiningNode(4)
        var seen: [Raft.Message] = []
        cluster.filter = { message in
            seen.append(message)
            return true
        }
        cluster.elect(1)
        for value in UInt64(1)...20 { try cluster.put(UInt8(value % 3), value, via: 1) }
        try cluster.read(1, via: 2, context: 99)
        try cluster.forward(1, 77, via: 3)
        cluster.deliverAll()
        cluster.compact(1)
        try cluster.with(1) { try $0.proposeMembership([.addLearner(4)]) }
        cluster.tickAll(times: 20)
        try cluster.with(1) { try $0.transferLeadership(to: 2) }
        cluster.deliverAll()
        var kinds = Set<String>()
        for message in seen {
            let decoded = try Raft.Message(decoding: message.encoded())
            #expect(decoded == message)
            kinds.insert(String("\(message.kind)".prefix(while: { $0 != "(" })))
        }
        #expect(kinds.isSuperset(of: ["append", "appendResponse", "heartbeat", "heartbeatResponse", "snapshotChunk", "snapshotResponse", "timeoutNow", "readIndex", "readIndexResponse", "propose", "proposeResponse"]), "\(kinds)")
    }

    @Test("forwarded proposals and their answers round-trip; a refusal carries no placement")
    func proposeRoundTrip() throws {
        let kinds: [Raft.Message.Kind] = [
            .propose(Raft.ForwardedProposals(contexts: [5, 6], commands: [[1, 2], []])),
            .proposeResponse(contexts: [5, 6], placement: Raft.ProposalPlacement(term: 4, firstIndex: 10)),
            .proposeResponse(contexts: [7], placement: nil),
            .append(Raft.Append(prevIndex: 9, prevTerm: 3, entries: [], commit: 8, wantsAnswer: false)),
            .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: 12, nextOffset: 0, refused: true)),
        ]
        for kind in kinds {
            let message = Raft.Message(group: 0, from: 2, to: 1, term: 4, kind: kind)
            #expect(try Raft.Message(decoding: message.encoded()) == message)
        }
        var limits = Limits()
        limits.raftBatchEntriesMax = 1
        let two = Raft.Message(group: 0, from: 2, to: 1, term: 4, kind: kinds[0]).encoded()
        #expect(throws: DecodingError.lengthTooLarge(length: 2, limit: 1)) { try Raft.Message(decoding: two, limits: limits) }
    }

    @Test("an append whose entries do not follow prevIndex without gaps, or whose terms go down, is refused at decoding")
    func appendsThatNoLogHolds() throws {
        func append(prevIndex: Raft.Index, prevTerm: Raft.Term, _ entries: [(index: Raft.Index, term: Raft.Term)]) -> [UInt8] {
            Raft.Message(
                group: 0, from: 1, to: 2, term: 5,
                kind: .append(
                    Raft.Append(
                        prevIndex: prevIndex, prevTerm: prevTerm,
                        entries: entries.map { Raft.Entry(term: $0.term, index: $0.index, payload: .noop) }, commit: 0))
            ).encoded()
        }
        #expect(throws: Never.self) { try Raft.Message(decoding: append(prevIndex: 1, prevTerm: 1, [(2, 1), (3, 2), (4, 2)])) }
        // A gap, a repeat, an entry before prevIndex, an index that overflows: each would trip the log.
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: 1, prevTerm: 1, [(5, 1)])) }
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: 1, prevTerm: 1, [(2, 1), (2, 1)])) }
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: 4, prevTerm: 1, [(3, 1)])) }
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: .max, prevTerm: 1, [(0, 1)])) }
        // Terms that go down.
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: 1, prevTerm: 3, [(2, 2)])) }
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: append(prevIndex: 1, prevTerm: 1, [(2, 3), (3, 2)])) }
    }

    @Test("truncated, garbled and oversized messages are errors, never crashes")
    func garbage() throws {
        let append = Raft.Message(
            group: 0, from: 1, to: 2, term: 3,
            kind: .append(Raft.Append(prevIndex: 1, prevTerm: 1, entries: [Raft.Entry(term: 3, index: 2, payload: .command([1, 2, 3]))], commit: 1)))
        let bytes = append.encoded()
        for cut in 0..<bytes.count {
            #expect(throws: DecodingError.self) { try Raft.Message(decoding: Array(bytes.prefix(cut))) }
        }
        #expect(throws: DecodingError.self) { try Raft.Message(decoding: bytes + [0]) }
        var limits = Limits()
        limits.raftBatchEntriesMax = 0
        #expect(throws: DecodingError.lengthTooLarge(length: 1, limit: 0)) { try Raft.Message(decoding: bytes, limits: limits) }
        var generator = SplitMix64(seed: 11)
        for _ in 0..<5000 {
            var mutated = bytes
            for _ in 0..<Int(generator.next(in: 1...4)) {
                mutated[Int(generator.next(in: 0...UInt64(mutated.count - 1)))] = UInt8(truncatingIfNeeded: generator.next())
            }
            _ = try? Raft.Message(decoding: mutated)
        }
    }
}
