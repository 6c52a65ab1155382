import AspenCore

extension Raft.Instance {
    /// Proposes a membership change (leader only). A change of the voter set goes through joint
    /// consensus: the entry carries the joint configuration, and when it commits the leader
    /// proposes the final configuration by itself. One change at a time.
    @discardableResult
    public mutating func proposeMembership(_ changes: [Raft.MembershipChange]) throws(Raft.ProposalError)
        -> Raft.ProposalReceipt
    {
        try checkCanPropose(count: 1)
        guard pendingMembershipIndex <= log.committed, !membership.isJoint else {
            throw .membershipChangeInProgress
        }
        let next = try membership.proposing(changes, membersMax: config.limits.raftMembersMax)
        let receipt = appendAsLeader([.membership(next)])
        pendingMembershipIndex = receipt.indexes.upperBound
        return receipt
    }

    /// Hands leadership to `target`: once its log is caught up it is told to campaign at once.
    /// Proposals are refused while the transfer is under way; it is abandoned after an election
    /// timeout.
    public mutating func transferLeadership(to target: NodeID) throws(Raft.ProposalError) {
        guard role == .leader else { throw .notLeader(leaderHint: leader) }
        guard target != id else { throw .invalidTransferTarget(target, reason: "it is already the leader") }
        guard membership.voters.contains(target), let pr = progress[target] else {
            throw .invalidTransferTarget(target, reason: "it is not a voter")
        }
        if transferTarget == target { return }
        transferTarget = target
        transferElapsed = 0
        if pr.match == log.lastIndex {
            send(to: target, .timeoutNow(commit: log.committed))
        } else {
            sendAppend(to: target, evenIfEmpty: true)
        }
    }

    /// A membership entry has committed: it is now the configuration in force.
    mutating func adoptMembership(_ next: Raft.Membership, at index: Raft.Index) {
        membership = next
        membershipHistory.append((index, next))
        guard role == .leader else { return }
        let nextIndex = log.lastIndex + 1
        for member in next.allMembers where member != id && progress[member] == nil {
            progress[member] = Raft.Progress(next: nextIndex)
        }
        for member in Array(progress.keys) where !next.isMember(member) {
            progress[member] = nil
        }
        if let target = transferTarget, !next.voters.contains(target) { transferTarget = nil }
        if !next.isVoter(id) {
            // Removed: stop taking proposals, and hand over once a voter has caught up.
            leaving = true
            leavingElapsed = 0
            transferTarget = nil
            handOverIfLeaving()
        }
    }

    /// A leader removed from the voters keeps replicating until one of the remaining voters has
    /// its whole log, then tells it to campaign (with the commit index, so it campaigns under the
    /// new membership) and steps down. Stepping down at once could strand followers that still
    /// count the old leader's vote in the joint configuration.
    mutating func handOverIfLeaving() {
        guard role == .leader, leaving else { return }
        let successor = membership.voters
            .compactMap { voter in progress[voter].map { (voter, $0.match) } }
            .max { $0.1 < $1.1 }
        if let (voter, match) = successor, match == log.lastIndex {
            send(to: voter, .timeoutNow(commit: log.committed))
            becomeFollower(term: term, leader: nil)
        } else if leavingElapsed >= config.electionTicks {
            becomeFollower(term: term, leader: nil)
        }
    }

    /// In a joint configuration whose entry has committed, propose leaving it.
    mutating func leaveJointIfDue() {
        guard role == .leader, membership.isJoint, pendingMembershipIndex <= log.committed else { return }
        let receipt = appendAsLeader([.membership(membership.leavingJoint())])
        pendingMembershipIndex = receipt.indexes.upperBound
    }
}
