import AspenCore

/// Commands proposed on a follower travel to the leader inside Raft's own traffic (etcd's
/// MsgProp), not as client requests: the leader appends them and says where, and the follower
/// answers its writers when it applies those indexes itself. Commands that arrive together on a
/// follower leave as one message, as proposals on a leader leave as one append.
extension Raft.Instance {
    /// Proposes `command` wherever this node is: on the leader it is appended at once; on a
    /// follower it is sent to the leader at the next `ready()`. Its fate appears in a later
    /// Ready's `forwardedProposals` under `context`. Refused (appended nowhere) when no leader is
    /// known or a bound would be exceeded.
    ///
    /// Contexts must increase from one call to the next, across restarts too (derive them from
    /// a clock, say): the leader appends a node's forwarded command only if its context is above
    /// every one it appended for that node in its term, so a duplicated or reordered message can
    /// never append a command twice.
    public mutating func forward(_ command: [UInt8], context: Raft.ProposalContext) throws(Raft.ProposalError) {
        if role == .leader {
            let receipt = try propose([command])
            outbox.forwardedProposals.append(
                Raft.ForwardedOutcome(context: context, result: .appended(term: receipt.term, index: receipt.indexes.lowerBound)))
            return
        }
        guard leader != nil else { throw .notLeader(leaderHint: nil) }
        guard command.count <= config.limits.raftEntryBytesMax else {
            throw .entryTooLarge(bytes: command.count, limit: config.limits.raftEntryBytesMax)
        }
        let limit = config.limits.raftPendingProposalsMax
        guard forwardQueue.count + proposalsForwarded.count < limit else { throw .tooManyPendingEntries(limit: limit) }
        forwardQueue.append((context, command))
    }

    /// Sends the queued commands to the leader, in messages within the append bounds.
    mutating func flushForwardQueue() {
        let queued = forwardQueue
        forwardQueue = []
        if role == .leader {
            // Elected meanwhile: append here.
            for item in queued {
                do {
                    try forward(item.command, context: item.context)
                } catch {
                    outbox.forwardedProposals.append(Raft.ForwardedOutcome(context: item.context, result: .refused))
                }
            }
            return
        }
        guard let leader else {
            for item in queued { outbox.forwardedProposals.append(Raft.ForwardedOutcome(context: item.context, result: .refused)) }
            return
        }
        var start = 0
        while start < queued.count {
            var end = start
            var bytes = 0
            while end < queued.count, end - start < config.limits.raftBatchEntriesMax,
                end == start || bytes + queued[end].command.count <= config.limits.raftAppendBytesMax
            {
                bytes += queued[end].command.count
                end += 1
            }
            let chunk = queued[start..<end]
            for item in chunk { proposalsForwarded[item.context] = (leader, ticks) }
            send(to: leader, .propose(Raft.ForwardedProposals(contexts: chunk.map(\.context), commands: chunk.map(\.command))))
            start = end
        }
    }

    /// The leader's side: append the follower's commands together and say where, or that they
    /// were not appended.
    ///
    /// Only a leader answers, and only about commands it has never appended: a refusal must be
    /// certain, since the follower's writers may retry elsewhere. A node that is not the leader
    /// cannot be certain (it may have led this term before a restart) and stays silent; so does a
    /// leader given a copy of commands it already took. The follower then gives up on them as
    /// of unknown outcome.
    mutating func handleForwardedProposals(_ proposals: Raft.ForwardedProposals, from follower: NodeID) {
        guard role == .leader, let first = proposals.contexts.first, first > forwardedHighWater[follower] ?? 0,
            zip(proposals.contexts, proposals.contexts.dropFirst()).allSatisfy({ $0 < $1 })
        else { return }
        forwardedHighWater[follower] = proposals.contexts.last
        guard let receipt = try? propose(proposals.commands) else {
            send(to: follower, .proposeResponse(contexts: proposals.contexts, placement: nil))
            return
        }
        send(
            to: follower,
            .proposeResponse(
                contexts: proposals.contexts, placement: Raft.ProposalPlacement(term: receipt.term, firstIndex: receipt.indexes.lowerBound)))
    }

    mutating func handleProposeResponse(contexts: [Raft.ProposalContext], placement: Raft.ProposalPlacement?) {
        lastForwardAnswer = ticks
        // The leader answers forwarded commands in the order they were sent (one connection,
        // one inbox): commands sent before these that are still unanswered were most likely
        // skipped (their message or its answer was lost, or it arrived out of order and was
        // ignored). But answers can also overtake each other (across a reconnection, say): each
        // gets one election timeout for its own answer before it is given up.
        if let first = contexts.first {
            for context in proposalsForwarded.keys where context < first && forwardsOvertaken[context] == nil {
                forwardsOvertaken[context] = ticks
            }
        }
        for (offset, context) in contexts.enumerated() {
            forwardsOvertaken[context] = nil
            guard proposalsForwarded.removeValue(forKey: context) != nil else { continue }  // already given up
            let result: Raft.ForwardedOutcome.Result =
                placement.map { .appended(term: $0.term, index: $0.firstIndex + Raft.Index(offset)) } ?? .refused
            outbox.forwardedProposals.append(Raft.ForwardedOutcome(context: context, result: result))
        }
    }

    /// Gives up on forwarded commands whose leader is gone, or when the leader has answered
    /// none of this node's forwards for ten election timeouts: their outcome is unknown (the
    /// leader may have appended them). The answer is the leader's first reaction to the
    /// message, and answers come in order, so while the leader keeps answering earlier
    /// forwards the later ones are only queued behind them — an overloaded leader can be
    /// seconds behind, and giving up then would turn writes that succeed into errors. Only a
    /// lost connection keeps every answer away that long. A forward still unanswered when a
    /// later one was answered is given up after one election timeout.
    mutating func expireForwardedProposals() {
        guard !proposalsForwarded.isEmpty else { return }
        let overtaken = forwardsOvertaken.filter { ticks - $0.value >= UInt64(max(1, config.electionTicks)) }.keys
        let given = Set(overdue(proposalsForwarded, patience: UInt64(max(1, config.electionTicks) * 10), answeredAt: lastForwardAnswer)).union(overtaken)
        for context in given.sorted() {
            forwardsOvertaken[context] = nil
            guard proposalsForwarded.removeValue(forKey: context) != nil else { continue }
            outbox.forwardedProposals.append(Raft.ForwardedOutcome(context: context, result: .unknown))
        }
    }
}
