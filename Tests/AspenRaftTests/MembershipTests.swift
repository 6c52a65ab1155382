import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Membership arithmetic")
struct MembershipTests {
    @Test("a simple configuration commits at the median acknowledgement")
    func simpleQuorum() {
        let membership = Raft.Membership(voters: [1, 2, 3, 4, 5])
        let acks: [NodeID: Raft.Index] = [1: 9, 2: 7, 3: 5, 4: 2, 5: 1]
        #expect(membership.committedIndex { acks[$0]! } == 5)
        #expect(membership.voteResult([1: true, 2: true]) == .pending)
        #expect(membership.voteResult([1: true, 2: true, 3: true]) == .won)
        #expect(membership.voteResult([1: false, 2: false, 3: false]) == .lost)
    }

    @Test("learners never vote and never count toward a quorum")
    func learnersDoNotCount() {
        let membership = Raft.Membership(voters: [1, 2, 3], learners: [4, 5])
        let acks: [NodeID: Raft.Index] = [1: 9, 2: 1, 3: 1, 4: 9, 5: 9]
        #expect(membership.committedIndex { acks[$0]! } == 1)
        #expect(membership.voteResult([1: true, 4: true, 5: true]) == .pending)
        #expect(!membership.isVoter(4))
        #expect(membership.allMembers == [1, 2, 3, 4, 5])
    }

    @Test("a joint configuration needs a majority of both halves")
    func jointQuorum() {
        // Old voters {1,2,3} -> new voters {3,4,5}, as the joint configuration is written to the log.
        let joint = Raft.Membership(voters: [3, 4, 5], outgoingVoters: [1, 2, 3], learners: [], learnersNext: [])
        #expect(joint.isJoint)
        #expect(joint.allVoters == [1, 2, 3, 4, 5])
        // The whole new set has index 9, the old set's majority only 4: 4 is committed.
        let newAhead: [NodeID: Raft.Index] = [1: 2, 2: 4, 3: 9, 4: 9, 5: 9]
        #expect(joint.committedIndex { newAhead[$0]! } == 4)
        // And the other way round: the old set alone at 9 commits only what the new set's majority has.
        let oldAhead: [NodeID: Raft.Index] = [1: 9, 2: 9, 3: 9, 4: 1, 5: 2]
        #expect(joint.committedIndex { oldAhead[$0]! } == 2)
        // Votes: a majority of one half alone wins nothing; a majority of each wins.
        #expect(joint.voteResult([3: true, 4: true, 5: true]) == .pending)
        #expect(joint.voteResult([1: true, 2: true]) == .pending)
        #expect(joint.voteResult([1: true, 3: true, 4: true]) == .won)
        // Losing either half loses, however the other half voted.
        #expect(joint.voteResult([1: false, 2: false, 3: true, 4: true, 5: true]) == .lost)
        // CheckQuorum: the leader stays only while it hears a majority of both halves.
        #expect(!joint.hasQuorum { [3, 4, 5].contains($0) })
        #expect(!joint.hasQuorum { [1, 2, 3].contains($0) })
        #expect(joint.hasQuorum { [2, 3, 4].contains($0) })
    }

    /// Old voters {1,2,3}, new voters {1,4,5}; once the leader is in the joint configuration
    /// `cut` is cut off. What the rest hold must not commit until the cut heals.
    static func commitWhileJoint(cut: Set<NodeID>) throws {
        let cluster = LockstepCluster(voters: 3, seed: 8)
        for id: NodeID in [4, 5] { cluster.addJoiningNode(id) }
        cluster.elect(1)
        try cluster.with(1) { try $0.proposeMembership([.addLearner(4), .addLearner(5)]) }
        cluster.deliverAll()
        cluster.filter = { message in
            guard cluster.raft(1).membership.isJoint else { return true }
            return !cut.contains(message.from) && !cut.contains(message.to)
        }
        try cluster.with(1) { try $0.proposeMembership([.remove(2), .remove(3), .addVoter(4), .addVoter(5)]) }
        cluster.deliverAll()
        let joint = cluster.raft(1).membership
        #expect(joint.isJoint, "the joint configuration should have committed before the cut: \(joint)")
        #expect(joint.voters == [1, 4, 5] && joint.outgoingVoters == [1, 2, 3])

        let receipt = try cluster.propose(7, 70, via: 1)
        cluster.tickAll(times: 3)
        let holders = cluster.ids.filter { cluster.raft($0).lastIndex >= receipt.indexes.lowerBound }
        #expect(Set(holders).isSuperset(of: Set([1, 2, 3, 4, 5]).subtracting(cut)), "holders: \(holders)")
        #expect(
            cluster.raft(1).commitIndex < receipt.indexes.lowerBound,
            "committed with only \(holders) holding it: one half's majority sufficed")
        #expect(cluster.value(7, on: 1) == nil)
        #expect(cluster.raft(1).membership.isJoint, "left the joint configuration without both majorities")

        cluster.heal()
        #expect(cluster.run { cluster.leader.map { cluster.value(7, on: $0) == 70 } ?? false })
        let leader = try #require(cluster.leader)
        #expect(!cluster.raft(leader).membership.isJoint)
        #expect(cluster.raft(leader).membership.voters == [1, 4, 5])
        #expect(cluster.invariants.ok, "\(cluster.invariants.violations)")
    }

    @Test("in a joint configuration the new voters alone commit nothing")
    func newVotersAloneDoNotCommit() throws { try Self.commitWhileJoint(cut: [2, 3]) }

    @Test("in a joint configuration the old voters alone commit nothing")
    func oldVotersAloneDoNotCommit() throws { try Self.commitWhileJoint(cut: [4, 5]) }
}
