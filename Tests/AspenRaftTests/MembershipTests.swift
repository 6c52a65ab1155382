import AspenCore
import AspenRaft
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
        // Shaped as a joint configuration would be after proposing old {1,2,3} -> new {3,4,5}.
        let acks: [NodeID: Raft.Index] = [1: 9, 2: 9, 3: 4, 4: 2, 5: 1]
        let old = Raft.Membership(voters: [1, 2, 3])
        let new = Raft.Membership(voters: [3, 4, 5])
        let joint = min(old.committedIndex { acks[$0]! }, new.committedIndex { acks[$0]! })
        #expect(joint == 2)
    }
}
