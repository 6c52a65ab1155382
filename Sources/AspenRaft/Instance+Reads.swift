import AspenCore

extension Raft {
    struct PendingRead: Sendable {
        var context: ReadContext
        var origin: NodeID
        var index: Index = 0
        var round: UInt64 = 0
    }
}

extension Raft.Instance {
    /// Asks for a linearizable read. Its `ReadState` appears in a later Ready once this node (the
    /// leader, or the leader on a follower's behalf) has confirmed with a quorum that it was still
    /// the leader after the read arrived; serve the read once the state machine has applied the
    /// read state's index. If leadership is lost first, the context appears in `droppedReads`.
    public mutating func readIndex(context: Raft.ReadContext) throws(Raft.ReadError) {
        if role == .leader {
            try startRead(Raft.PendingRead(context: context, origin: id))
            return
        }
        guard let leader else { throw .noLeader }
        let limit = config.limits.raftPendingReadsMax
        guard readsForwarded.count < limit else { throw .tooManyPendingReads(limit: limit) }
        readsForwarded[context] = (leader, ticks)
        send(to: leader, .readIndex(context: context))
    }

    /// The leader answered a forwarded read (with its index, or nil when it could not serve it).
    mutating func handleReadIndexResponse(context: Raft.ReadContext, index: Raft.Index?) {
        guard readsForwarded.removeValue(forKey: context) != nil else { return }  // already given up
        if let index {
            outbox.readStates.append(Raft.ReadState(index: index, context: context))
        } else {
            outbox.droppedReads.append(context)
        }
    }

    /// Gives up on forwarded reads whose leader is gone or that went unanswered too long.
    mutating func expireForwardedReads() {
        guard !readsForwarded.isEmpty else { return }
        for context in overdue(readsForwarded, patience: UInt64(max(1, config.electionTicks))) {
            readsForwarded.removeValue(forKey: context)
            outbox.droppedReads.append(context)
        }
    }

    /// Of requests forwarded to a leader (reads, commands), the ones to give up on: sent to a
    /// node that is no longer this one's leader, or unanswered for more than `patience` ticks
    /// since they were sent or, if later, since the leader last answered (`answeredAt`).
    /// In context order: a dictionary's own order differs from run to run.
    func overdue(_ pending: [UInt64: (leader: NodeID, sentAt: UInt64)], patience: UInt64, answeredAt: UInt64 = 0) -> [UInt64] {
        pending.filter { $0.value.leader != leader || role == .leader || ticks - max($0.value.sentAt, answeredAt) > patience }.keys.sorted()
    }

    mutating func handleForwardedRead(context: Raft.ReadContext, from follower: NodeID) {
        guard role == .leader else {
            send(to: follower, .readIndexResponse(context: context, index: nil))
            return
        }
        do {
            try startRead(Raft.PendingRead(context: context, origin: follower))
        } catch {
            send(to: follower, .readIndexResponse(context: context, index: nil))
        }
    }

    private mutating func startRead(_ read: Raft.PendingRead) throws(Raft.ReadError) {
        let limit = config.limits.raftPendingReadsMax
        guard readsAwaitingCommit.count + readsAwaitingQuorum.count < limit else {
            throw .tooManyPendingReads(limit: limit)
        }
        guard log.term(at: log.committed) == term else {
            // Until an entry of this term commits, this leader may not know the latest commit index.
            readsAwaitingCommit.append(read)
            return
        }
        confirm(read)
    }

    private mutating func confirm(_ pending: Raft.PendingRead) {
        var read = pending
        read.index = log.committed
        let soleVoter = !membership.isJoint && membership.voters == [id]
        if soleVoter || config.leaseRead {
            release(read)
            return
        }
        // One heartbeat round, sent at the next `ready()`, confirms every read that joined it.
        read.round = readRound + 1
        readRoundRequested = true
        readsAwaitingQuorum.append(read)
    }

    mutating func startReadsAwaitingCommit() {
        guard !readsAwaitingCommit.isEmpty, log.term(at: log.committed) == term else { return }
        let waiting = readsAwaitingCommit
        readsAwaitingCommit = []
        for read in waiting { confirm(read) }
    }

    /// Releases the reads whose heartbeat round a quorum has answered.
    mutating func releaseConfirmedReads() {
        guard !readsAwaitingQuorum.isEmpty else { return }
        let me = id
        let current = readRound
        let confirmed = membership.committedIndex { $0 == me ? current : (progress[$0]?.readRoundAcked ?? 0) }
        var released = 0
        while released < readsAwaitingQuorum.count && readsAwaitingQuorum[released].round <= confirmed {
            release(readsAwaitingQuorum[released])
            released += 1
        }
        if released > 0 { readsAwaitingQuorum.removeFirst(released) }
    }

    private mutating func release(_ read: Raft.PendingRead) {
        if read.origin == id {
            outbox.readStates.append(Raft.ReadState(index: read.index, context: read.context))
        } else {
            send(to: read.origin, .readIndexResponse(context: read.context, index: read.index))
        }
    }

    /// Leadership is gone: no pending read may ever be served from this term.
    mutating func dropPendingReads() {
        for read in readsAwaitingCommit + readsAwaitingQuorum {
            if read.origin == id {
                outbox.droppedReads.append(read.context)
            } else {
                send(to: read.origin, .readIndexResponse(context: read.context, index: nil))
            }
        }
        readsAwaitingCommit = []
        readsAwaitingQuorum = []
    }
}
