import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("ReadIndex")
struct ReadIndexTests {
    static func served(_ cluster: LockstepCluster, _ context: Raft.ReadContext) -> UInt64?? {
        for outcome in cluster.outcomes {
            if case .read(context, let value) = outcome { return .some(value) }
        }
        return nil
    }

    @Test("a read on the leader is released only after a quorum answers a heartbeat round")
    func quorumRound() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        try cluster.put(1, 5, via: 1)
        try cluster.read(1, via: 1, context: 77)
        // Nothing released before the round trip.
        #expect(Self.served(cluster, 77) == nil)
        let heartbeats = cluster.inFlight.filter { if case .heartbeat = $0.kind { true } else { false } }
        #expect(heartbeats.count == 2)
        cluster.deliverAll()
        #expect(Self.served(cluster, 77) == .some(5))
    }

    @Test("many reads that arrive together share one heartbeat round")
    func readsShareARound() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        var heartbeats = 0
        cluster.filter = { message in
            if case .heartbeat = message.kind { heartbeats += 1 }
            return true
        }
        try cluster.read(0, via: 1, contexts: Array(1...50))
        cluster.deliverAll()
        #expect(heartbeats == 2)
        let served = (Raft.ReadContext(1)...50).filter { Self.served(cluster, $0) != nil }
        #expect(served.count == 50)
    }

    @Test("a read on a follower is forwarded to the leader and served locally once applied")
    func followerRead() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        try cluster.put(2, 9, via: 1)
        try cluster.read(2, via: 3, context: 12)
        cluster.deliverAll()
        #expect(Self.served(cluster, 12) == .some(9))
    }

    @Test("a new leader holds reads until an entry of its own term has committed")
    func waitsForCommitInTerm() throws {
        let cluster = LockstepCluster(voters: 3)
        // Node 2 wins, but its no-op does not reach anyone yet.
        cluster.filter = { message in
            if case .append = message.kind { return false }
            return true
        }
        cluster.elect(2)
        let raft = cluster.raft(2)
        #expect(raft.role == .leader)
        #expect(raft.commitIndex < raft.lastIndex)
        try cluster.read(0, via: 2, context: 3)
        cluster.deliverAll()
        #expect(Self.served(cluster, 3) == nil)
        cluster.heal()
        cluster.tickAll(times: 2)
        #expect(Self.served(cluster, 3) == .some(nil))
    }

    @Test("a deposed leader never releases a read; it reports it dropped")
    func deposedLeaderDropsReads() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.partition([1])
        try cluster.read(0, via: 1, context: 44)
        cluster.deliverAll()
        cluster.run { cluster.raft(1).role != .leader }
        #expect(cluster.outcomes.contains(.readFailed(context: 44)))
        cluster.heal()
        cluster.tickAll(times: 30)
        #expect(Self.served(cluster, 44) == nil)
    }

    @Test("a read a follower forwarded to a leader that dies is reported dropped, never left waiting")
    func forwardedReadToDeadLeader() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        try cluster.put(1, 5, via: 1)
        // The leader is cut off before it answers the follower's forwarded read.
        cluster.partition([1])
        try cluster.read(0, via: 3, context: 61)
        cluster.deliverAll()
        cluster.run { cluster.outcomes.contains(.readFailed(context: 61)) }
        #expect(cluster.outcomes.contains(.readFailed(context: 61)))
        #expect(Self.served(cluster, 61) == nil)
    }

    @Test("a forwarded read whose answer is lost while the leader stays is dropped after an election timeout")
    func forwardedReadAnswerLost() throws {
        let cluster = LockstepCluster(voters: 3)
        cluster.elect(1)
        cluster.filter = { message in
            if case .readIndexResponse = message.kind { return false }
            return true
        }
        try cluster.read(0, via: 2, context: 62)
        cluster.deliverAll()
        cluster.tickAll(times: 15)
        cluster.deliverAll()
        #expect(cluster.raft(1).role == .leader)
        #expect(cluster.outcomes.contains(.readFailed(context: 62)))
    }

    @Test("a follower without a known leader refuses a read at once")
    func noLeader() {
        let cluster = LockstepCluster(voters: 3)
        #expect(throws: Raft.ReadError.noLeader) { try cluster.read(0, via: 2, context: 1) }
    }

    @Test("pending reads are bounded by raftPendingReadsMax")
    func pendingReadsBounded() throws {
        let cluster = LockstepCluster(voters: 3) { $0.limits.raftPendingReadsMax = 5 }
        cluster.elect(1)
        cluster.partition([1])
        try cluster.node(1).withRaftForTesting { raft in
            for context in Raft.ReadContext(1)...5 { try raft.readIndex(context: context) }
            #expect(throws: Raft.ReadError.tooManyPendingReads(limit: 5)) { try raft.readIndex(context: 6) }
        }
    }

    @Test("lease reads, when enabled, skip the heartbeat round")
    func leaseRead() throws {
        let cluster = LockstepCluster(voters: 3) { $0.leaseRead = true }
        cluster.elect(1)
        try cluster.put(1, 3, via: 1)
        cluster.filter = { _ in false }
        try cluster.read(1, via: 1, context: 8)
        #expect(Self.served(cluster, 8) == .some(3))
    }
}
