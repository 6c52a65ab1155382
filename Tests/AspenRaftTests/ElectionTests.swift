import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Election")
struct ElectionTests {
    @Test("a three-node cluster elects exactly one leader through the randomized timeout")
    func electsOneLeader() throws {
        let cluster = LockstepCluster(voters: 3, seed: 7)
        cluster.tickAll(times: 40)
        let leader = try #require(cluster.leader)
        let leaders = cluster.ids.filter { cluster.raft($0).role == .leader }
        #expect(leaders == [leader])
        for id in cluster.ids {
            #expect(cluster.raft(id).leader == leader)
            #expect(cluster.raft(id).term == cluster.raft(leader).term)
        }
        // The no-op of the new term commits everywhere.
        #expect(cluster.ids.allSatisfy { cluster.raft($0).commitIndex == 1 })
        #expect(cluster.invariants.ok)
    }

    @Test("a single-node cluster elects itself and commits alone")
    func singleNode() throws {
        let cluster = LockstepCluster(voters: 1)
        cluster.tickAll(times: 25)
        #expect(cluster.leader == 1)
        try cluster.put(1, 42, via: 1)
        #expect(cluster.value(1, on: 1) == 42)
    }

    @Test("the election timeout is randomized between electionTicks and twice that, and seeded")
    func randomizedTimeout() {
        func firstCampaignTick(seed: UInt64) -> Int {
            var raft = Raft.Instance(
                config: Raft.Config(id: 1, electionTicks: 10, seed: seed),
                state: .bootstrap(Raft.Membership(voters: [1, 2, 3])))
            for tick in 1...40 {
                raft.tick()
                if raft.role != .follower { return tick }
            }
            return -1
        }
        let ticks = (1...50).map { firstCampaignTick(seed: UInt64($0)) }
        #expect(ticks.allSatisfy { (10..<20).contains($0) })
        #expect(Set(ticks).count > 3)
        #expect(firstCampaignTick(seed: 9) == firstCampaignTick(seed: 9))
    }

    @Test("with PreVote a losing candidate does not raise its term")
    func preVoteKeepsTerm() {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        let term = cluster.raft(1).term
        // Node 3 is cut off and times out repeatedly.
        cluster.filter = { $0.from != 3 && $0.to != 3 }
        cluster.tick(3, times: 100)
        cluster.deliverAll()
        #expect(cluster.raft(3).term == term)
        #expect(cluster.raft(3).role == .preCandidate)
    }

    @Test("PreVote: a pre-candidate that a majority rejects steps back to follower at once, without raising its term")
    func preVoteRejectedByMajority() throws {
        let cluster = LockstepCluster(voters: 5)
        cluster.elect(1)
        // Node 5 misses a committed entry: its log is stale.
        cluster.filter = { $0.to != 5 }
        try cluster.put(1, 1, via: 1)
        cluster.heal()
        let term = cluster.raft(5).term
        cluster.crash(1)
        // Nodes 2-4 stop hearing a leader (their own campaigns are lost), so they answer pre-votes.
        cluster.filter = { ![2, 3, 4].contains($0.from) }
        for id: NodeID in [2, 3, 4] { cluster.tick(id, times: 10) }
        cluster.deliverAll()
        cluster.heal()
        cluster.with(5) { $0.campaign() }
        #expect(cluster.raft(5).role == .preCandidate)
        cluster.deliverAll()
        // Three of five rejected it: it cannot win this round, and says so at once.
        #expect(cluster.raft(5).role == .follower, "node 5 is still \(cluster.raft(5).role) after a majority rejected it")
        #expect(cluster.raft(5).term == term)
        #expect(cluster.invariants.ok)
    }

    @Test("an isolated node that rejoins does not depose a healthy leader")
    func rejoinDoesNotDisrupt() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        let term = cluster.raft(1).term
        cluster.filter = { $0.from != 3 && $0.to != 3 }
        for _ in 0..<50 {
            cluster.tickAll()
        }
        cluster.heal()
        cluster.tickAll(times: 30)
        #expect(cluster.leader == 1)
        #expect(cluster.raft(1).term == term)
        #expect(cluster.raft(3).leader == 1)
    }

    @Test("a candidate with a stale log cannot win")
    func staleLogLoses() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.filter = { $0.to != 3 }
        try cluster.put(1, 1, via: 1)
        cluster.heal()
        cluster.crash(1)
        // Node 3 lacks the last entry: nodes 2 must refuse it.
        cluster.elect(3)
        #expect(cluster.raft(3).role != .leader)
        cluster.elect(2)
        #expect(cluster.leader == 2)
        #expect(cluster.invariants.ok)
    }

    @Test("CheckQuorum: a leader that cannot hear a quorum steps down")
    func checkQuorumStepsDown() {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        let term = cluster.raft(1).term
        cluster.filter = { $0.from != 1 && $0.to != 1 }
        // The first check still counts the answers heard before the cut; the second cannot.
        cluster.tick(1, times: 20)
        #expect(cluster.raft(1).role == .follower)
        #expect(cluster.raft(1).term == term)
    }
}
