import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Replication")
struct ReplicationTests {
    static func isAppend(_ message: Raft.Message) -> Bool {
        if case .append = message.kind { return true }
        return false
    }

    @Test("a new leader appends a no-op of its term and commits it by quorum")
    func noopOnElection() {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(2)
        let raft = cluster.raft(2)
        #expect(raft.entry(at: 1)?.payload == .noop)
        #expect(raft.entry(at: 1)?.term == raft.term)
        for id in cluster.ids { #expect(cluster.raft(id).commitIndex == 1, "\(id)") }
    }

    @Test("an entry of an earlier term is never committed by counting replicas (Raft figure 8)")
    func figureEight() throws {
        let cluster = LockstepCluster(voters: 5, seed: 2) { $0.limits.raftBatchEntriesMax = 1 }
        func expireLeases(_ ids: [NodeID]) {
            cluster.filter = { _ in false }
            for id in ids { cluster.tick(id, times: 10) }
            cluster.deliverAll()
            cluster.heal()
        }
        cluster.elect(1)
        // X reaches only node 2.
        cluster.filter = { !($0.from == 1 && [3, 4, 5].contains($0.to) && Self.isAppend($0)) }
        let x = try cluster.propose(0, 1, via: 1)
        cluster.deliverAll()
        #expect(cluster.raft(2).entry(at: x.indexes.lowerBound) != nil)
        cluster.crash(1)

        // Node 5 leads a later term with 3 and 4, appends its no-op alone, and crashes.
        expireLeases([3, 4, 5])
        cluster.filter = { $0.from != 5 || !Self.isAppend($0) }
        cluster.elect(5)
        #expect(cluster.raft(5).role == .leader)
        cluster.crash(5)
        cluster.heal()

        // Node 1 returns and leads an even later term; X reaches node 3 alone, ahead of 1's no-op.
        cluster.restart(1)
        expireLeases([1, 2, 3, 4])
        let xIndex = x.indexes.lowerBound
        cluster.filter = { message in
            guard message.from == 1, case .append(let append) = message.kind else { return true }
            // Node 2 hears everything; node 4 nothing; node 3 never receives 1's no-op: while it
            // lacks X it rejects every append that does not bring X.
            if message.to == 2 { return true }
            guard message.to == 3 else { return false }
            return append.entries.allSatisfy { $0.index <= xIndex } || cluster.raft(3).entry(at: xIndex) == nil
        }
        // The first attempt may only teach node 1 the term that 3 and 4 voted in.
        for _ in 0..<3 where cluster.raft(1).role != .leader { cluster.elect(1) }
        #expect(cluster.raft(1).role == .leader)
        #expect(cluster.raft(3).entry(at: x.indexes.lowerBound)?.term == x.term)
        // X is on 1, 2 and 3 (a majority) but is of an old term: it must not count as committed.
        // The no-op of the current term is only on 1 and 2.
        #expect(cluster.raft(1).followers.first { $0.id == 3 }?.matchIndex == xIndex)
        #expect(cluster.raft(1).commitIndex < x.indexes.lowerBound)

        // Node 5 can still win (with 3 and 4) and overwrite X, which is safe only because X never committed.
        cluster.crash(1)
        cluster.heal()
        cluster.restart(5)
        expireLeases([2, 3, 4, 5])
        cluster.filter = { $0.to != 2 }
        for _ in 0..<3 where cluster.raft(5).role != .leader { cluster.elect(5) }
        #expect(cluster.raft(5).role == .leader)
        #expect(cluster.raft(3).entry(at: x.indexes.lowerBound)?.term != x.term)
        #expect(cluster.invariants.ok, "\(cluster.invariants.violations)")
    }

    @Test("a follower with a long divergent log is repaired with few round trips (conflict hints)")
    func fastBacktracking() throws {
        let cluster = LockstepCluster(voters: 3, seed: 12)
        cluster.elect(1)
        // Node 1 appends 50 entries that only it holds, then loses leadership.
        cluster.partition([1])
        for value in UInt64(1)...50 { _ = try cluster.propose(0, value, via: 1) }
        cluster.crash(1)
        cluster.heal()
        cluster.run { cluster.leader != nil }
        let leader = try #require(cluster.leader)
        for value in UInt64(100)...130 { try cluster.put(0, value, via: leader) }
        // Count rejections while node 1 is repaired.
        var rejections = 0
        cluster.filter = { message in
            if case .appendResponse(let response) = message.kind, response.rejected { rejections += 1 }
            return true
        }
        cluster.restart(1)
        cluster.run { cluster.value(0, on: 1) == 130 }
        #expect(cluster.value(0, on: 1) == 130)
        #expect(rejections <= 3, "one rejection per divergent term is enough, saw \(rejections)")
        #expect(cluster.invariants.ok)
    }

    @Test("followers learn the commit index from notices they do not answer; one that does not match rejects a notice")
    func commitNotices() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        var sent: [Raft.Message] = []
        cluster.filter = { message in
            sent.append(message)
            return true
        }
        for value in UInt64(1)...5 {
            _ = try cluster.propose(0, value, via: 1)
            cluster.deliverAll()
        }
        let commit = cluster.raft(1).commitIndex
        for follower in [NodeID(2), NodeID(3)] {
            #expect(cluster.raft(follower).commitIndex == commit, "\(follower)")
            let appends = sent.compactMap { message -> Raft.Append? in
                guard message.to == follower, case .append(let append) = message.kind else { return nil }
                return append
            }
            let notices = appends.filter { !$0.wantsAnswer }
            let answers = sent.filter { message in
                guard message.from == follower, case .appendResponse = message.kind else { return false }
                return true
            }
            // Each write's commit reaches the follower in a notice, which costs no answer.
            #expect(notices.count >= 5, "\(follower): \(notices.count) notices")
            #expect(notices.allSatisfy { $0.entries.isEmpty })
            #expect(answers.count == appends.count - notices.count, "\(follower): \(answers.count) answers to \(appends.count) appends")
        }
        // A notice whose previous entry the follower lacks is rejected like any append, so the
        // leader finds the match again.
        sent = []
        let last = cluster.raft(2).lastIndex
        let notice = Raft.Message(
            group: 0, from: 1, to: 2, term: cluster.raft(1).term,
            kind: .append(Raft.Append(prevIndex: last + 3, prevTerm: cluster.raft(1).term, entries: [], commit: last + 3, wantsAnswer: false)))
        cluster.with(2) { $0.step(notice) }
        let rejection = cluster.inFlight.contains { message in
            guard message.from == 2, case .appendResponse(let response) = message.kind else { return false }
            return response.rejected
        }
        #expect(rejection)
        #expect(cluster.raft(2).commitIndex == commit)
    }

    @Test("no more than raftInflightAppendsMax appends are in flight to one follower")
    func inflightWindow() throws {
        let cluster = LockstepCluster(voters: 3, seed: 1) {
            $0.limits.raftInflightAppendsMax = 4
            $0.limits.raftBatchEntriesMax = 1
        }
        cluster.elect(1)
        // Node 3 stops answering; node 2 keeps the quorum.
        cluster.filter = { $0.from != 3 }
        for value in UInt64(1)...20 { _ = try cluster.propose(0, value, via: 1) }
        let appendsToThree = cluster.inFlight.filter { $0.to == 3 && Self.isAppend($0) }.count
        #expect(appendsToThree <= 4)
        cluster.deliverAll()
        #expect(cluster.raft(1).commitIndex == 21)
        cluster.heal()
        cluster.run { cluster.value(0, on: 3) == 20 }
        #expect(cluster.value(0, on: 3) == 20)
    }

    @Test("appends never exceed raftBatchEntriesMax entries or raftAppendBytesMax bytes")
    func appendBounds() throws {
        let cluster = LockstepCluster(voters: 3, seed: 1) {
            $0.limits.raftBatchEntriesMax = 10
            $0.limits.raftAppendBytesMax = 200
        }
        cluster.elect(1)
        var largest = (entries: 0, bytes: 0)
        cluster.filter = { message in
            if case .append(let append) = message.kind {
                largest.entries = max(largest.entries, append.entries.count)
                largest.bytes = max(largest.bytes, append.entries.reduce(0) { $0 + $1.sizeBytes })
            }
            return true
        }
        cluster.slowDown(2)
        cluster.slowDown(3)
        for value in UInt64(1)...40 { _ = try cluster.propose(0, value, via: 1) }
        cluster.release(2)
        cluster.release(3)
        cluster.run { cluster.value(0, on: 3) == 40 }
        #expect(cluster.value(0, on: 3) == 40)
        #expect(largest.entries <= 10)
        #expect(largest.bytes <= 200)
    }

    @Test("duplicated and reordered messages change nothing")
    func duplicatesAndReordering() throws {
        let cluster = LockstepCluster(voters: 3, seed: 1)
        cluster.elect(1)
        var replayed: [Raft.Message] = []
        cluster.filter = { message in
            replayed.append(message)
            return true
        }
        for value in UInt64(1)...10 { try cluster.put(4, value, via: 1) }
        // Deliver every message again, newest first.
        cluster.filter = { _ in true }
        for message in replayed.reversed() {
            cluster.node(message.to).withRaftForTesting { $0.step(message) }
            cluster.process(message.to)
        }
        cluster.deliverAll()
        for id in cluster.ids { #expect(cluster.value(4, on: id) == 10) }
        #expect(cluster.invariants.ok)
    }
}
