import AspenCore
import AspenRaft
import AspenTesting
import Testing

/// The scenarios the consensus core must survive, each on a hand-driven cluster whose every step
/// is checked by the invariant checker.
@Suite("Scenarios")
struct ScenarioTests {
    @Test("5 nodes split {1,2} | {3,4,5}: only the majority commits; on heal every committed write is everywhere")
    func partitionedFiveNodes() throws {
        let cluster = LockstepCluster(voters: 5, seed: 11)
        cluster.elect(1)
        try cluster.put(0, 1, via: 1)
        cluster.partition([1, 2])

        // The old leader, on the minority side, accepts a proposal that can never commit.
        let stranded = try cluster.propose(0, 99, via: 1)
        cluster.deliverAll()
        #expect(cluster.raft(1).commitIndex < stranded.indexes.lowerBound)

        // The majority elects a leader (once their leases on node 1 expire) and commits.
        #expect(cluster.run { [3, 4, 5].contains { cluster.raft($0).role == .leader } })
        let majorityLeader = try #require(cluster.ids.first { $0 >= 3 && cluster.raft($0).role == .leader })
        for value in UInt64(2)...11 { try cluster.put(0, value, via: majorityLeader) }
        for id: NodeID in [3, 4, 5] { #expect(cluster.value(0, on: id) == 11) }
        for id: NodeID in [1, 2] { #expect(cluster.value(0, on: id) == 1) }
        // A write sent to the minority side fails: node 2 is not the leader, node 1 can no longer commit.
        #expect(throws: Raft.ProposalError.self) { try cluster.propose(0, 98, via: 2) }

        cluster.heal()
        cluster.run { cluster.ids.allSatisfy { cluster.value(0, on: $0) == 11 } }
        let top = cluster.raft(majorityLeader).commitIndex
        for id in cluster.ids {
            #expect(cluster.value(0, on: id) == 11)
            #expect(cluster.raft(id).commitIndex == top)
            #expect(cluster.node(id).appliedIndex == top)
        }
        // The stranded proposal was overwritten, and its proposer learned so.
        #expect(cluster.outcomes.contains(.lost(operationID: 2)))
        #expect(cluster.invariants.ok, "\(cluster.invariants.violations)")
    }

    @Test("one follower 100x slower: 100 writes commit without it, and it catches up afterwards")
    func slowFollower() throws {
        let cluster = LockstepCluster(voters: 3, seed: 3)
        cluster.elect(1)
        cluster.slowDown(3)
        for value in UInt64(1)...100 { try cluster.put(7, value, via: 1) }
        #expect(cluster.raft(1).commitIndex == 101)
        #expect(cluster.value(7, on: 2) == 100)
        #expect(cluster.raft(3).commitIndex < 101)
        cluster.release(3)
        cluster.run { cluster.value(7, on: 3) == 100 }
        #expect(cluster.value(7, on: 3) == 100)
        #expect(cluster.invariants.ok)
    }

    @Test("an isolated old leader steps down, cannot commit or serve a linearizable read, and does not disrupt on return")
    func isolatedOldLeader() throws {
        let cluster = LockstepCluster(voters: 3, seed: 5)
        cluster.elect(1)
        try cluster.put(1, 10, via: 1)
        cluster.partition([1])

        // Still leader for a while, but nothing commits and reads are never released.
        let receipt = try cluster.propose(1, 20, via: 1)
        try cluster.read(1, via: 1, context: 500)
        cluster.deliverAll()
        #expect(cluster.raft(1).commitIndex < receipt.indexes.lowerBound)
        #expect(!cluster.outcomes.contains { if case .read(500, _) = $0 { true } else { false } })

        // The rest elect a new leader, which commits a new value.
        #expect(cluster.run { cluster.ids.contains { $0 != 1 && cluster.raft($0).role == .leader } })
        let newLeader = try #require(cluster.ids.first { $0 != 1 && cluster.raft($0).role == .leader })
        try cluster.put(1, 30, via: newLeader)
        let newTerm = cluster.raft(newLeader).term

        // CheckQuorum: the old leader steps down; its pending read is dropped, never served.
        #expect(cluster.run { cluster.raft(1).role != .leader })
        #expect(cluster.outcomes.contains(.readFailed(context: 500)))
        #expect(!cluster.outcomes.contains { if case .read(500, _) = $0 { true } else { false } })

        // Rejoining does not depose the new leader (PreVote) and the stale proposal is lost.
        cluster.heal()
        cluster.tickAll(times: 50)
        #expect(cluster.raft(newLeader).role == .leader)
        #expect(cluster.raft(newLeader).term == newTerm)
        #expect(cluster.value(1, on: 1) == 30)
        #expect(cluster.outcomes.contains(.lost(operationID: 2)))
        #expect(cluster.invariants.ok)
    }

    @Test("add a learner, promote it, remove a voter, remove the leader: under 10% message loss")
    func membershipUnderLoss() throws {
        let cluster = LockstepCluster(voters: 3, seed: 21)
        cluster.addJoiningNode(4)
        cluster.lossRate = 0.10
        #expect(cluster.run { cluster.leader != nil })

        func change(_ changes: [Raft.MembershipChange], until done: (Raft.Membership) -> Bool) {
            let ok = cluster.run(ticksMax: 3000) {
                guard let leader = cluster.leader else { return false }
                let membership = cluster.raft(leader).membership
                if done(membership) && !membership.isJoint { return true }
                _ = try? cluster.with(leader) { try $0.proposeMembership(changes) }
                return false
            }
            #expect(ok, "membership change \(changes) did not complete")
        }

        change([.addLearner(4)]) { $0.learners == [4] }
        // The learner receives the log but never votes or counts for a quorum.
        try cluster.put(3, 33, via: cluster.leader!)
        #expect(cluster.run { cluster.value(3, on: 4) == 33 })
        #expect(!cluster.raft(4).membership.isVoter(4))

        change([.addVoter(4)]) { $0.voters == [1, 2, 3, 4] }
        change([.remove(2)]) { $0.voters == [1, 3, 4] }
        let leader = try #require(cluster.leader)
        change([.remove(leader)]) { !$0.voters.contains(leader) && $0.voters.count == 2 }

        #expect(cluster.run { cluster.leader.map { $0 != leader && $0 != 2 } ?? false })
        let finalLeader = try #require(cluster.leader)
        #expect(cluster.raft(finalLeader).membership.voters.allSatisfy { $0 != leader && $0 != 2 })
        let receipt = try cluster.propose(5, 55, via: finalLeader)
        #expect(cluster.run { cluster.raft(finalLeader).commitIndex >= receipt.indexes.lowerBound })
        #expect(cluster.invariants.ok, "\(cluster.invariants.violations)")
    }

    @Test("replace a majority of voters at once through joint consensus")
    func replaceMajority() throws {
        let cluster = LockstepCluster(voters: 3, seed: 8)
        for id: NodeID in [4, 5, 6] { cluster.addJoiningNode(id) }
        cluster.elect(1)
        try cluster.with(1) { try $0.proposeMembership([.addLearner(4), .addLearner(5), .addLearner(6)]) }
        cluster.deliverAll()
        #expect(cluster.raft(1).membership.learners == [4, 5, 6])
        let changeIndex = cluster.raft(1).lastIndex + 1
        // Every configuration the leader and a new voter are in, as each message is delivered.
        var seen: [NodeID: [Raft.Membership]] = [1: [], 5: []]
        cluster.filter = { _ in
            for id: NodeID in [1, 5] where seen[id]!.last != cluster.raft(id).membership {
                seen[id]!.append(cluster.raft(id).membership)
            }
            return true
        }
        try cluster.with(1) {
            try $0.proposeMembership([.remove(2), .remove(3), .addVoter(4), .addVoter(5)])
        }
        cluster.deliverAll()
        cluster.tickAll(times: 5)
        cluster.heal()
        let membership = cluster.raft(1).membership
        #expect(membership.voters == [1, 4, 5])
        #expect(membership.learners == [6])
        #expect(!membership.isJoint)
        // The change went through joint consensus: the log holds the joint configuration (old and
        // new voters), then the final one, and both were in force on the leader and on node 5.
        let changes = (changeIndex...cluster.raft(1).commitIndex).compactMap { index -> Raft.Membership? in
            if case .membership(let next)? = cluster.raft(1).entry(at: index)?.payload { return next }
            return nil
        }
        #expect(changes.count == 2, "\(changes)")
        #expect(changes.first?.isJoint == true && changes.first?.outgoingVoters == [1, 2, 3] && changes.first?.voters == [1, 4, 5])
        #expect(changes.last == membership)
        for id: NodeID in [1, 5] {
            let history = seen[id]!.drop { !$0.isJoint }
            #expect(history.first?.outgoingVoters == [1, 2, 3], "node \(id) was never in the joint configuration: \(seen[id]!)")
            #expect(history.last == membership, "node \(id) did not leave the joint configuration: \(seen[id]!)")
        }
        try cluster.put(9, 90, via: 1)
        #expect(cluster.value(9, on: 5) == 90)
        #expect(cluster.invariants.ok)
    }

    @Test("member addresses travel with the membership: set with a change, dropped on removal, carried by snapshots")
    func memberAddresses() throws {
        let cluster = LockstepCluster(voters: 3, seed: 12)
        cluster.addJoiningNode(4)
        cluster.addJoiningNode(5)
        cluster.elect(1)
        try cluster.with(1) { try $0.proposeMembership([.setAddress(1, [1]), .setAddress(2, [2]), .setAddress(3, [3])]) }
        cluster.deliverAll()
        #expect(cluster.raft(2).membership.addresses == [1: [1], 2: [2], 3: [3]])
        // An address for a node that is not (and does not become) a member is refused.
        #expect(throws: Raft.ProposalError.self) { try cluster.with(1) { try $0.proposeMembership([.setAddress(9, [9])]) } }
        // The same addresses again change nothing and are refused as such.
        #expect(throws: Raft.ProposalError.self) { try cluster.with(1) { try $0.proposeMembership([.setAddress(2, [2])]) } }
        try cluster.with(1) { try $0.proposeMembership([.addLearner(4), .setAddress(4, [4, 4])]) }
        cluster.deliverAll()
        #expect(cluster.raft(4).membership.addresses[4] == [4, 4])
        // Removing a voter goes through the joint configuration; its address goes when it does.
        try cluster.with(1) { try $0.proposeMembership([.remove(3)]) }
        cluster.deliverAll()
        cluster.tickAll(times: 3)
        #expect(cluster.raft(1).membership.addresses == [1: [1], 2: [2], 4: [4, 4]])
        // The encoding round-trips, addresses included.
        let membership = cluster.raft(1).membership
        #expect(try Raft.decodeMembership(Raft.encode(membership)) == membership)
        // A snapshot carries them to a node that never saw the entries.
        for value in UInt64(1)...10 { try cluster.put(UInt8(value % 4), value, via: 1) }
        let snapshot = try #require(cluster.compact(1))
        try cluster.with(1) { try $0.proposeMembership([.addLearner(5)]) }
        cluster.run { cluster.raft(5).membership.learners.contains(5) }
        #expect(cluster.node(5).snapshotIndex >= snapshot.index, "node 5 caught up through the snapshot")
        #expect(cluster.raft(5).membership.addresses == [1: [1], 2: [2], 4: [4, 4]])
        #expect(cluster.invariants.ok)
    }

    @Test("a follower behind the compacted log gets a chunked snapshot; a membership change during the transfer applies after")
    func snapshotCatchUp() throws {
        let cluster = LockstepCluster(voters: 3, seed: 4) { config in
            config.limits.raftSnapshotChunkBytes = 16
        }
        cluster.addJoiningNode(4)
        cluster.elect(1)
        cluster.partition([3])
        for value in UInt64(1)...40 { try cluster.put(UInt8(value % 8), value, via: 1) }
        let snapshot = try #require(cluster.compact(1))
        #expect(snapshot.index == 41)
        #expect(cluster.raft(1).firstIndex == 42)

        // Heal, and propose a membership change while the snapshot travels in 16-byte chunks.
        var chunks = 0
        cluster.filter = { message in
            if case .snapshotChunk = message.kind { chunks += 1 }
            return true
        }
        cluster.tickAll()
        try cluster.with(1) { try $0.proposeMembership([.addLearner(4)]) }
        cluster.run { cluster.raft(3).membership.learners == [4] && cluster.raft(3).commitIndex == cluster.raft(1).commitIndex }

        #expect(chunks >= 4, "a \(snapshot.index)-entry state should need several 16-byte chunks")
        #expect(cluster.node(3).snapshotIndex >= 41, "node 3 caught up through a snapshot")
        #expect(cluster.raft(3).membership.learners == [4])
        for key in UInt8(0)..<8 { #expect(cluster.value(key, on: 3) == cluster.value(key, on: 1)) }
        #expect(cluster.invariants.ok)
    }

    @Test("leadership transfer to a caught-up follower")
    func leadershipTransfer() throws {
        let cluster = LockstepCluster(voters: 3, seed: 6)
        cluster.elect(1)
        try cluster.put(1, 1, via: 1)
        let term = cluster.raft(1).term
        try cluster.with(1) { try $0.transferLeadership(to: 3) }
        cluster.deliverAll()
        #expect(cluster.raft(3).role == .leader)
        #expect(cluster.raft(3).term == term + 1)
        #expect(cluster.raft(1).leader == 3)
        try cluster.put(1, 2, via: 3)
        #expect(cluster.value(1, on: 1) == 2)
    }

    @Test("leadership transfer to a lagging follower waits for it to catch up first")
    func leadershipTransferToLaggard() throws {
        let cluster = LockstepCluster(voters: 3, seed: 6)
        cluster.elect(1)
        cluster.slowDown(3)
        for value in UInt64(1)...5 { try cluster.put(1, value, via: 1) }
        try cluster.with(1) { try $0.transferLeadership(to: 3) }
        // Proposals are refused while the transfer is under way.
        #expect(throws: Raft.ProposalError.leadershipTransferInProgress(to: 3)) { try cluster.propose(1, 6, via: 1) }
        #expect(cluster.raft(1).role == .leader)
        cluster.release(3)
        cluster.deliverAll()
        #expect(cluster.raft(3).role == .leader)
        #expect(cluster.value(1, on: 3) == 5)
    }

    @Test("crash and restart of every node in turn, including between persisting and sending: nothing committed is lost")
    func crashEveryNode() throws {
        let cluster = LockstepCluster(voters: 3, seed: 9)
        cluster.elect(1)
        var value: UInt64 = 0
        for round in 0..<6 {
            for victim in cluster.ids {
                value += 1
                let leader = try #require(cluster.leader)
                try cluster.put(2, value, via: leader)
                if round % 2 == 0 {
                    // Between persisting and sending: the write is durable, the acknowledgement never leaves.
                    _ = try? cluster.propose(2, value + 1000, via: victim)
                    cluster.process(victim, dropAfterPersist: true)
                }
                cluster.crash(victim)
                cluster.run { cluster.leader != nil && cluster.leader != victim }
                cluster.restart(victim)
                cluster.run {
                    cluster.leader != nil && cluster.ids.allSatisfy { cluster.node($0).appliedIndex == cluster.raft(cluster.leader!).commitIndex }
                }
                for id in cluster.ids {
                    let seen = cluster.value(2, on: id)
                    #expect(seen == value || seen == value + 1000, "\(id) lost the committed value \(value)")
                }
            }
        }
        #expect(cluster.invariants.ok, "\(cluster.invariants.violations)")
    }
}
