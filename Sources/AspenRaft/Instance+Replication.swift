import AspenCore

extension Raft.Instance {
    /// Appends application commands to the log (leader only). Refused, with a reason, when this
    /// node is not the leader, a transfer is under way, or a bound would be exceeded.
    @discardableResult
    public mutating func propose(_ commands: [[UInt8]]) throws(Raft.ProposalError) -> Raft.ProposalReceipt {
        try checkCanPropose(count: commands.count)
        var bytes = 0
        for command in commands {
            guard command.count <= config.limits.raftEntryBytesMax else {
                throw .entryTooLarge(bytes: command.count, limit: config.limits.raftEntryBytesMax)
            }
            bytes += command.count + 24
        }
        guard uncommittedBytes + bytes <= config.limits.raftPendingProposalBytesMax else {
            throw .tooManyPendingBytes(limit: config.limits.raftPendingProposalBytesMax)
        }
        return appendAsLeader(commands.map { .command($0) })
    }

    /// Proposes one command.
    @discardableResult
    public mutating func propose(_ command: [UInt8]) throws(Raft.ProposalError) -> Raft.ProposalReceipt {
        try propose([command])
    }

    func checkCanPropose(count: Int) throws(Raft.ProposalError) {
        guard role == .leader, !leaving else { throw .notLeader(leaderHint: leaving ? nil : leader) }
        // A leader on its way out adds nothing after the final configuration: when that commits,
        // the remaining voters then hold its whole log and can elect a successor without it.
        guard !(membership.isJoint && !membership.voters.contains(id)) else { throw .leaderBeingRemoved }
        if let target = transferTarget { throw .leadershipTransferInProgress(to: target) }
        guard count > 0 else { throw .emptyProposal }
        guard count <= config.limits.raftBatchEntriesMax else {
            throw .batchTooLarge(entries: count, limit: config.limits.raftBatchEntriesMax)
        }
        let pending = Int(log.lastIndex - log.committed)
        guard pending + count <= config.limits.raftPendingProposalsMax else {
            throw .tooManyPendingEntries(limit: config.limits.raftPendingProposalsMax)
        }
        guard log.count + count <= config.limits.raftLogEntriesMax else {
            throw .logFull(entries: log.count, limit: config.limits.raftLogEntriesMax)
        }
    }

    @discardableResult
    mutating func appendAsLeader(_ payloads: [Raft.Payload]) -> Raft.ProposalReceipt {
        let first = log.lastIndex + 1
        var entries: [Raft.Entry] = []
        entries.reserveCapacity(payloads.count)
        for (offset, payload) in payloads.enumerated() {
            let entry = Raft.Entry(term: term, index: first + Raft.Index(offset), payload: payload)
            uncommittedBytes += entry.sizeBytes
            entries.append(entry)
        }
        log.append(entries)
        broadcastRequested = true
        return Raft.ProposalReceipt(term: term, indexes: first...log.lastIndex)
    }

    // MARK: Leader: sending

    mutating func broadcastAppend() {
        for member in membership.allMembers where member != id {
            sendAppend(to: member, evenIfEmpty: true, noticeIfEmpty: true)
            while sendAppend(to: member, evenIfEmpty: false) {}
        }
    }

    mutating func broadcastHeartbeat() {
        for member in membership.allMembers where member != id {
            guard let pr = progress[member] else { continue }
            send(to: member, .heartbeat(commit: min(log.committed, pr.match), readRound: readRound))
        }
    }

    /// Sends the next append to `follower` if its progress allows. Returns true if entries went out.
    /// With `noticeIfEmpty` (the broadcast of a new commit index), an append without entries to a
    /// follower being replicated to is a notice it does not answer: the appends in flight to it
    /// are answered on their own, and if they were lost its log does not match the notice, which
    /// it then rejects. The other empty appends (probes, retries) still ask for an answer.
    @discardableResult
    mutating func sendAppend(to follower: NodeID, evenIfEmpty: Bool, noticeIfEmpty: Bool = false) -> Bool {
        guard var pr = progress[follower], !pr.isPaused(inflightMax: config.limits.raftInflightAppendsMax) else {
            return false
        }
        let prevIndex = pr.next - 1
        guard let prevTerm = log.term(at: prevIndex) else {
            startSnapshot(to: follower)
            return false
        }
        let entries = log.entries(
            from: pr.next, countMax: config.limits.raftBatchEntriesMax, bytesMax: config.limits.raftAppendBytesMax)
        if entries.isEmpty && !evenIfEmpty { return false }
        // At low load, one message fewer per follower and write.
        let notice = noticeIfEmpty && entries.isEmpty && pr.state == .replicate
        send(
            to: follower,
            .append(
                Raft.Append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: log.committed, wantsAnswer: !notice)))
        switch pr.state {
        case .replicate:
            if let last = entries.last {
                pr.next = last.index + 1
                pr.inflight.append((last.index, ticks))
            }
        case .probe:
            pr.probeSent = true
        case .snapshot:
            break
        }
        progress[follower] = pr
        return !entries.isEmpty
    }

    // MARK: Follower: receiving

    mutating func handleAppend(_ append: Raft.Append, from leaderID: NodeID) {
        // The log is about to be replaced by an image: unanswered, the append comes again.
        guard pendingInstall == nil else { return }
        if append.prevIndex < log.committed {
            // Everything through our commit index matches any leader's log.
            if append.wantsAnswer { send(to: leaderID, .appendResponse(Raft.AppendResponse(index: log.committed))) }
            return
        }
        guard log.matches(index: append.prevIndex, term: append.prevTerm) else {
            let hintIndex = log.lastIndex(atOrBelow: append.prevIndex, withTermAtMost: append.prevTerm)
            let hintTerm = log.term(at: hintIndex) ?? 0
            send(
                to: leaderID,
                .appendResponse(
                    Raft.AppendResponse(index: append.prevIndex, rejected: true, hintIndex: hintIndex, hintTerm: hintTerm)))
            return
        }
        // Only what fits in the in-memory log: the answer says how far this node got, and the
        // leader sends the rest once compaction has made room.
        let room = config.limits.raftLogEntriesMax - Int(append.prevIndex - log.snapshotIndex)
        let fitting = append.entries.prefix(max(0, room))
        let lastNew = fitting.isEmpty ? append.prevIndex : log.merge(Array(fitting))
        advanceCommit(to: min(append.commit, lastNew))
        if append.wantsAnswer { send(to: leaderID, .appendResponse(Raft.AppendResponse(index: lastNew))) }
    }

    mutating func handleHeartbeat(commit: Raft.Index, readRound: UInt64, from leaderID: NodeID) {
        if pendingInstall == nil { advanceCommit(to: min(commit, log.lastIndex)) }
        send(to: leaderID, .heartbeatResponse(readRound: readRound))
    }

    // MARK: Leader: acknowledgements

    mutating func handleAppendResponse(_ response: Raft.AppendResponse, from follower: NodeID) {
        guard role == .leader, var pr = progress[follower] else { return }
        pr.recentActive = true
        if response.rejected {
            let stale: Bool
            switch pr.state {
            case .replicate: stale = response.index <= pr.match
            case .probe: stale = response.index != pr.next - 1
            case .snapshot: stale = true
            }
            guard !stale else {
                progress[follower] = pr
                return
            }
            let candidate = log.lastIndex(atOrBelow: response.hintIndex, withTermAtMost: response.hintTerm) + 1
            pr.becomeProbe()
            pr.next = max(min(response.index, candidate), pr.match + 1)
            progress[follower] = pr
            sendAppend(to: follower, evenIfEmpty: true)
            return
        }
        let wasPaused = pr.isPaused(inflightMax: config.limits.raftInflightAppendsMax)
        let advanced = pr.acknowledge(response.index)
        if advanced {
            switch pr.state {
            case .probe: pr.becomeReplicate()
            case .snapshot where pr.match >= pr.snapshotIndex: pr.becomeProbe()
            default: break
            }
        }
        progress[follower] = pr
        guard advanced else { return }
        if commitIfQuorum() {
            broadcastRequested = true
        } else if wasPaused {
            // It may have missed the broadcast of the commit index while paused: tell it now.
            sendAppend(to: follower, evenIfEmpty: true)
        }
        while sendAppend(to: follower, evenIfEmpty: false) {}
        if transferTarget == follower && pr.match == log.lastIndex {
            send(to: follower, .timeoutNow(commit: log.committed))
        }
        handOverIfLeaving()
    }

    mutating func handleHeartbeatResponse(readRound round: UInt64, from follower: NodeID) {
        guard role == .leader, var pr = progress[follower] else { return }
        pr.recentActive = true
        pr.probeSent = false
        pr.readRoundAcked = max(pr.readRoundAcked, round)
        if pr.state == .replicate, let oldest = pr.inflight.first,
            ticks - oldest.tick >= UInt64(config.appendRetryTicks)
        {
            // An append has gone unanswered for too long: presume it lost and find the match again.
            pr.becomeProbe()
        }
        progress[follower] = pr
        releaseConfirmedReads()
        if pr.match < log.lastIndex {
            sendAppend(to: follower, evenIfEmpty: true)
        }
    }

    // MARK: Commit

    /// Advances the commit index to what a quorum has persisted, if that entry is of this term.
    mutating func commitIfQuorum() -> Bool {
        let me = id
        let stable = log.stable
        let quorumIndex = membership.committedIndex { $0 == me ? stable : (progress[$0]?.match ?? 0) }
        guard quorumIndex > log.committed, quorumIndex <= log.lastIndex, log.term(at: quorumIndex) == term else {
            return false
        }
        advanceCommit(to: quorumIndex)
        return true
    }

    /// Moves the commit index forward, adopting committed membership entries on the way.
    mutating func advanceCommit(to index: Raft.Index) {
        let old = log.committed
        guard index > old else { return }
        log.committed = index
        for position in (old + 1)...index {
            guard let entry = log.entry(at: position) else { continue }
            if role == .leader { uncommittedBytes = max(0, uncommittedBytes - entry.sizeBytes) }
            if case .membership(let next) = entry.payload {
                adoptMembership(next, at: position)
            }
        }
        if role == .leader {
            leaveJointIfDue()
            startReadsAwaitingCommit()
        }
    }
}
