import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Proposals forwarded by followers")
struct ForwardingTests {
    static func committed(_ cluster: LockstepCluster, _ operation: UInt64) -> Bool {
        cluster.outcomes.contains { if case .committed(operation, _) = $0 { true } else { false } }
    }

    @Test("a put forwarded by a follower commits once, and the follower answers it after applying it")
    func forwardedPutCommits() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        let operation = try cluster.forward(4, 41, via: 3)
        cluster.deliverAll()
        #expect(Self.committed(cluster, operation))
        for id in cluster.ids { #expect(cluster.value(4, on: id) == 41) }
        // Exactly one entry carries it: the no-op and the put.
        #expect(cluster.raft(1).lastIndex == 2)
    }

    @Test("commands forwarded together leave in one message and take consecutive indexes")
    func forwardsBatch() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        var proposeMessages = 0
        cluster.filter = { message in
            if case .propose(let proposals) = message.kind {
                proposeMessages += 1
                #expect(proposals.commands.count == 20)
            }
            return true
        }
        try cluster.node(2).withRaftForTesting { raft in
            for offset in UInt64(0)..<20 { try raft.forward([UInt8(offset)], context: 1000 + offset) }
        }
        cluster.process(2)
        cluster.deliverAll()
        #expect(proposeMessages == 1)
        #expect(cluster.raft(1).lastIndex == 21)
        #expect(cluster.raft(2).commitIndex == 21)
    }

    @Test("a duplicated or replayed propose message never appends its commands twice")
    func duplicatesIgnored() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        var captured: Raft.Message?
        cluster.filter = { message in
            if case .propose = message.kind { captured = message }
            return true
        }
        let operation = try cluster.forward(1, 7, via: 2)
        cluster.deliverAll()
        #expect(Self.committed(cluster, operation))
        let last = cluster.raft(1).lastIndex
        // The same message again, twice: the leader has already taken those contexts.
        let replay = try #require(captured)
        cluster.with(1) { $0.step(replay) }
        cluster.with(1) { $0.step(replay) }
        cluster.process(1)
        cluster.deliverAll()
        #expect(cluster.raft(1).lastIndex == last)
    }

    @Test("a forward sent to a leader that dies is reported of unknown outcome, never left waiting")
    func leaderDies() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.partition([1])
        let operation = try cluster.forward(2, 5, via: 3)
        cluster.deliverAll()
        cluster.run { cluster.outcomes.contains(.unknown(operationID: operation)) }
        #expect(cluster.outcomes.contains(.unknown(operationID: operation)))
        #expect(!Self.committed(cluster, operation))
    }

    @Test("a forward the leader skipped is given up one election timeout after a later one is answered; an answered one waits while answers keep coming")
    func skippedForward() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        var dropped = false
        cluster.filter = { message in
            if case .propose = message.kind, !dropped {
                dropped = true
                return false
            }
            return true
        }
        let lost = try cluster.forward(2, 5, via: 3)
        cluster.deliverAll()
        let kept = try cluster.forward(4, 6, via: 3)
        cluster.deliverAll()
        #expect(Self.committed(cluster, kept))
        #expect(!cluster.outcomes.contains(.unknown(operationID: lost)), "given up before its own answer had time to come")
        // Far sooner than the ten election timeouts a silent leader gets: the later answer
        // tells the follower the first was most likely skipped.
        cluster.tick(3, times: 10)
        cluster.deliverAll()
        #expect(cluster.outcomes.contains(.unknown(operationID: lost)))
        #expect(cluster.value(4, on: 3) == 6)
        #expect(cluster.value(2, on: 3) == nil, "the lost forward never reached the leader")
    }

    @Test("an answer overtaken by a later one still answers its writer: the write is not reported as of unknown outcome")
    func overtakenAnswer() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        // The first answer is held back, and node 3 gets no appends meanwhile (so it has not
        // applied either command when the answers come).
        var held: Raft.Message?
        cluster.filter = { message in
            if case .proposeResponse = message.kind, held == nil {
                held = message
                return false
            }
            if message.to == 3, case .append = message.kind { return false }
            if message.to == 3, case .heartbeat = message.kind { return false }
            return true
        }
        let first = try cluster.forward(2, 5, via: 3)
        cluster.deliverAll()
        let second = try cluster.forward(4, 6, via: 3)
        cluster.deliverAll()
        let answer = try #require(held)
        cluster.with(3) { $0.step(answer) }
        cluster.process(3)
        cluster.heal()
        cluster.tick(1, times: 2)
        cluster.deliverAll()
        cluster.tick(3, times: 20)
        cluster.deliverAll()
        #expect(Self.committed(cluster, second))
        #expect(Self.committed(cluster, first), "\(cluster.outcomes)")
        #expect(!cluster.outcomes.contains(.unknown(operationID: first)))
    }

    @Test("a forward whose answer is lost while the leader stays is given up after ten election timeouts")
    func answerLost() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.filter = { message in
            if case .proposeResponse = message.kind { return false }
            return true
        }
        let operation = try cluster.forward(2, 5, via: 3)
        cluster.deliverAll()
        cluster.tickAll(times: 100)
        cluster.deliverAll()
        #expect(!cluster.outcomes.contains(.unknown(operationID: operation)), "not given up within ten election timeouts")
        cluster.tickAll(times: 60)
        cluster.deliverAll()
        #expect(cluster.raft(1).role == .leader)
        // The leader did append it (and it applied everywhere), but the follower cannot know.
        #expect(cluster.outcomes.contains(.unknown(operationID: operation)))
        #expect(cluster.value(2, on: 3) == 5)
    }

    @Test("a leader over its bounds refuses a forward, and the refusal is definite")
    func refusedByLeader() throws {
        let cluster = LockstepCluster(voters: 3) { $0.limits.raftPendingProposalsMax = 2 }
        cluster.elect(1)
        // Cut the leader's followers off its appends so its entries stay uncommitted.
        cluster.filter = { message in
            if case .append = message.kind { return false }
            return true
        }
        _ = try cluster.propose(1, 1, via: 1)
        _ = try cluster.propose(1, 2, via: 1)
        let operation = try cluster.forward(2, 5, via: 3)
        cluster.deliverAll()
        #expect(cluster.outcomes.contains(.lost(operationID: operation)))
    }

    @Test("a follower that knows no leader refuses at once; a leader forwards to itself")
    func noLeaderAndSelf() throws {
        let cluster = LockstepCluster(voters: 3)
        #expect(throws: Raft.ProposalError.notLeader(leaderHint: nil)) { try cluster.forward(1, 1, via: 2) }
        cluster.elect(1)
        let operation = try cluster.forward(1, 9, via: 1)
        cluster.deliverAll()
        #expect(Self.committed(cluster, operation))
    }
}
