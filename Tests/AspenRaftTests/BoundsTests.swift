import AspenCore
import AspenRaft
import AspenTesting
import Testing

/// Every bound refuses with an error that names it; nothing is dropped silently.
@Suite("Bounds and refusals")
struct BoundsTests {
    static func leader(_ configure: (inout Raft.Config) -> Void = { _ in }) -> Raft.Instance {
        var config = Raft.Config(id: 1)
        configure(&config)
        var raft = Raft.Instance(config: config, state: .bootstrap(Raft.Membership(voters: [1])))
        raft.campaign()
        let ready = raft.ready()
        raft.persisted(upTo: ready.entries.last!.index, term: ready.entries.last!.term)
        _ = raft.ready()
        return raft
    }

    /// Hands out every Ready, persisting what it carries; returns the sizes of the batches.
    static func persistAll(_ raft: inout Raft.Instance) -> [Int] {
        var batches: [Int] = []
        for _ in 0..<100 where raft.hasReady {
            let ready = raft.ready()
            guard let last = ready.entries.last else { continue }
            batches.append(ready.entries.count)
            raft.persisted(upTo: last.index, term: last.term)
        }
        return batches
    }

    @Test("one Ready hands out at most raftReadyEntriesMax entries to persist; the rest follow in the next ones")
    func readyEntriesBound() throws {
        var raft = Self.leader { $0.limits.raftReadyEntriesMax = 10 }
        let receipt = try raft.propose(Array(repeating: [1], count: 25))
        #expect(Self.persistAll(&raft) == [10, 10, 5])
        #expect(raft.commitIndex == receipt.indexes.upperBound)
    }

    @Test("one Ready hands out at most raftReadyBytesMax entry bytes to persist (and always at least one entry)")
    func readyBytesBound() throws {
        var raft = Self.leader { $0.limits.raftReadyBytesMax = 1000 }
        try raft.propose(Array(repeating: [UInt8](repeating: 7, count: 400), count: 5))
        #expect(Self.persistAll(&raft) == [2, 2, 1])
        var large = Self.leader { $0.limits.raftReadyBytesMax = 10 }
        try large.propose([[UInt8](repeating: 7, count: 400)])
        #expect(Self.persistAll(&large) == [1])
    }

    @Test("past raftLogEntriesMax entries in memory the leader refuses proposals, naming the bound, until compaction makes room")
    func logEntriesBound() throws {
        var raft = Self.leader { $0.limits.raftLogEntriesMax = 10 }
        for _ in 0..<9 { try raft.propose([1]) }
        _ = Self.persistAll(&raft)
        #expect(raft.lastIndex == 10 && raft.commitIndex == 10)
        let error = #expect(throws: Raft.ProposalError.self) { try raft.propose([1]) }
        #expect(error?.description.contains("raftLogEntriesMax") == true, "\(String(describing: error))")
        #expect(raft.lastIndex == 10)
        try raft.compact(through: 10)
        #expect(throws: Never.self) { try raft.propose([1]) }
    }

    @Test("a follower takes only the part of an append that fits in raftLogEntriesMax, and says how far it got")
    func followerLogBound() {
        var config = Raft.Config(id: 2)
        config.limits.raftLogEntriesMax = 5
        var raft = Raft.Instance(config: config, state: .bootstrap(Raft.Membership(voters: [1, 2])))
        let entries = (1...8).map { Raft.Entry(term: 1, index: Raft.Index($0), payload: .command([1])) }
        raft.step(
            Raft.Message(
                group: .root, from: 1, to: 2, term: 1,
                kind: .append(Raft.Append(prevIndex: 0, prevTerm: 0, entries: entries, commit: 0))))
        #expect(raft.lastIndex == 5)
        let ready = raft.ready()
        let answers = (ready.messages + ready.messagesAfterPersist).compactMap { message -> Raft.Index? in
            if case .appendResponse(let response) = message.kind, !response.rejected { return response.index }
            return nil
        }
        #expect(answers == [5])
    }

    @Test("a follower refuses proposals and names the leader")
    func notLeader() {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(2)
        #expect(throws: Raft.ProposalError.notLeader(leaderHint: 2)) { try cluster.propose(0, 1, via: 1) }
        #expect(Raft.ProposalError.notLeader(leaderHint: 2).description.contains("n2"))
    }

    @Test("a batch above raftBatchEntriesMax is refused")
    func batchTooLarge() {
        var raft = Self.leader { $0.limits.raftBatchEntriesMax = 10 }
        let error = #expect(throws: Raft.ProposalError.self) {
            try raft.propose(Array(repeating: [1], count: 11))
        }
        #expect(error == .batchTooLarge(entries: 11, limit: 10))
        #expect(error?.description.contains("raftBatchEntriesMax") == true)
    }

    @Test("an entry above raftEntryBytesMax is refused")
    func entryTooLarge() {
        var raft = Self.leader { $0.limits.raftEntryBytesMax = 100 }
        #expect(throws: Raft.ProposalError.entryTooLarge(bytes: 101, limit: 100)) {
            try raft.propose([UInt8](repeating: 0, count: 101))
        }
        #expect(throws: Never.self) { try raft.propose([UInt8](repeating: 0, count: 100)) }
    }

    @Test("uncommitted entries beyond raftPendingProposalsMax are refused, not dropped")
    func pendingBound() throws {
        let cluster = LockstepCluster(voters: 3) { $0.limits.raftPendingProposalsMax = 8 }
        cluster.elect(1)
        cluster.partition([1])
        for value in UInt64(1)...8 { try cluster.propose(0, value, via: 1) }
        #expect(throws: Raft.ProposalError.tooManyPendingEntries(limit: 8)) { try cluster.propose(0, 9, via: 1) }
        // Once they commit there is room again.
        cluster.heal()
        cluster.tickAll(times: 3)
        #expect(throws: Never.self) { try cluster.propose(0, 10, via: 1) }
    }

    @Test("pending bytes are bounded by raftPendingProposalBytesMax")
    func pendingBytesBound() {
        var raft = Self.leader { $0.limits.raftPendingProposalBytesMax = 1000 }
        // A leader alone commits only once it persists; nothing is persisted here.
        #expect(throws: Never.self) { try raft.propose([UInt8](repeating: 0, count: 500)) }
        #expect(throws: Raft.ProposalError.tooManyPendingBytes(limit: 1000)) {
            try raft.propose([UInt8](repeating: 0, count: 500))
        }
    }

    @Test("an empty proposal is refused")
    func emptyProposal() {
        var raft = Self.leader()
        #expect(throws: Raft.ProposalError.emptyProposal) { try raft.propose([[UInt8]]()) }
    }

    @Test("one membership change at a time, and never one that leaves no voter")
    func membershipRefusals() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.partition([1])
        try cluster.with(1) { try $0.proposeMembership([.remove(3)]) }
        #expect(throws: Raft.ProposalError.membershipChangeInProgress) {
            try cluster.with(1) { try $0.proposeMembership([.remove(2)]) }
        }
        cluster.heal()
        cluster.tickAll(times: 3)
        #expect(throws: Raft.ProposalError.invalidMembership("the change would leave no voters")) {
            try cluster.with(1) { try $0.proposeMembership([.remove(1), .remove(2)]) }
        }
        #expect(throws: Raft.ProposalError.invalidMembership("n9 is not a member")) {
            try cluster.with(1) { try $0.proposeMembership([.remove(9)]) }
        }
    }

    @Test("transfers go only to voters other than the leader")
    func transferRefusals() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        #expect(throws: Raft.ProposalError.self) { try cluster.with(1) { try $0.transferLeadership(to: 1) } }
        #expect(throws: Raft.ProposalError.self) { try cluster.with(1) { try $0.transferLeadership(to: 7) } }
        #expect(throws: Raft.ProposalError.notLeader(leaderHint: 1)) {
            try cluster.with(2) { try $0.transferLeadership(to: 3) }
        }
    }

    @Test("messages for another group or another node are ignored")
    func misroutedMessages() {
        var raft = Raft.Instance(config: Raft.Config(id: 1), state: .bootstrap(Raft.Membership(voters: [1, 2, 3])))
        raft.step(Raft.Message(group: 7, from: 2, to: 1, term: 9, kind: .heartbeat(commit: 0, readRound: 0)))
        raft.step(Raft.Message(group: .root, from: 2, to: 3, term: 9, kind: .heartbeat(commit: 0, readRound: 0)))
        #expect(raft.term == 0)
        #expect(!raft.hasReady || raft.ready().messages.isEmpty)
    }

    @Test("compaction refuses indexes not yet applied or already compacted")
    func compactionRefusals() throws {
        let cluster = LockstepCluster(voters: 1)
        cluster.elect(1)
        try cluster.put(0, 1, via: 1)
        try cluster.node(1).withRaftForTesting { raft in
            #expect(throws: Raft.CompactionError.notApplied(index: 10, applied: 2)) {
                try raft.compact(through: 10)
            }
            try raft.compact(through: 2)
            #expect(throws: Raft.CompactionError.alreadyCompacted(index: 1, snapshotIndex: 2)) {
                try raft.compact(through: 1)
            }
        }
    }
}
