import AspenCore

extension Raft.Instance {
    /// Advances logical time by one tick.
    public mutating func tick() {
        ticks += 1
        expireForwardedReads()
        expireForwardedProposals()
        if role == .leader {
            tickLeader()
            return
        }
        electionElapsed += 1
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            campaign(transfer: false)
        }
    }

    /// Starts an election now (as if the election timer had fired).
    public mutating func campaign() {
        guard role != .leader else { return }
        campaign(transfer: false)
    }

    private mutating func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if transferTarget != nil {
            transferElapsed += 1
            if transferElapsed >= config.electionTicks { transferTarget = nil }
        }
        if leaving {
            leavingElapsed += 1
            handOverIfLeaving()
            guard role == .leader else { return }
        }
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum {
                let me = id
                let active = membership.hasQuorum { $0 == me || progress[$0]?.recentActive == true }
                for member in progress.keys { progress[member]?.recentActive = false }
                if !active {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
        retransmitStalledSnapshots()
    }

    mutating func campaign(transfer: Bool) {
        guard isPromotable else { return }
        if config.preVote && !transfer {
            role = .preCandidate
            leader = nil
            votes = [id: true]
            electionElapsed = 0
            resetRandomizedElectionTimeout()
            if membership.voteResult(votes) == .won {
                becomeCandidate(transfer: false)
            } else {
                requestVotes(pre: true, transfer: false)
            }
        } else {
            becomeCandidate(transfer: transfer)
        }
    }

    private mutating func becomeCandidate(transfer: Bool) {
        reset(term: term + 1)
        role = .candidate
        vote = id
        votes = [id: true]
        if membership.voteResult(votes) == .won {
            becomeLeader()
        } else {
            requestVotes(pre: false, transfer: transfer)
        }
    }

    private mutating func requestVotes(pre: Bool, transfer: Bool) {
        let (lastIndex, lastTerm) = (log.lastIndex, log.lastTerm)
        for voter in membership.allVoters where voter != id {
            if pre {
                send(to: voter, .preVote(lastIndex: lastIndex, lastTerm: lastTerm), term: term + 1)
            } else {
                send(to: voter, .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: transfer))
            }
        }
    }

    /// Moves to `newTerm` (forgetting the vote if the term changes) and clears every per-term state.
    /// Reads waiting on this node's leadership can never be served now: they are dropped.
    mutating func reset(term newTerm: Raft.Term) {
        if newTerm != term {
            term = newTerm
            vote = nil
        }
        dropPendingReads()
        leader = nil
        electionElapsed = 0
        heartbeatElapsed = 0
        resetRandomizedElectionTimeout()
        votes = [:]
        transferTarget = nil
        transferElapsed = 0
        leaving = false
        leavingElapsed = 0
        progress = [:]
        broadcastRequested = false
        readRoundRequested = false
    }

    mutating func becomeFollower(term newTerm: Raft.Term, leader newLeader: NodeID?) {
        reset(term: newTerm)
        role = .follower
        leader = newLeader
    }

    private mutating func becomeLeader() {
        role = .leader
        leader = id
        let next = log.lastIndex + 1
        for member in membership.allMembers where member != id {
            progress[member] = Raft.Progress(next: next)
        }
        uncommittedBytes = 0
        forwardedHighWater = [:]
        // Commit an entry of this term at once: earlier terms' entries commit with it (Raft §5.4.2),
        // and reads may be served only once it has committed.
        appendAsLeader([.noop])
        // No membership change until everything from earlier terms has committed.
        pendingMembershipIndex = log.lastIndex
    }

    // MARK: Messages

    /// Handles one message from a peer. Messages for another group or another node are ignored.
    public mutating func step(_ message: Raft.Message) {
        guard message.group == config.group, message.to == id, message.from != id else { return }
        if message.term > term {
            guard acceptHigherTerm(message) else { return }
        } else if message.term < term {
            answerStaleTerm(message)
            return
        }
        dispatch(message)
    }

    /// Returns false if the message must be ignored.
    private mutating func acceptHigherTerm(_ message: Raft.Message) -> Bool {
        switch message.kind {
        case .preVote:
            return !inLease
        case .vote(_, _, let transfer):
            if inLease && !transfer { return false }
            becomeFollower(term: message.term, leader: nil)
        case .preVoteResponse(true):
            // Carries the term we would campaign in; our own term does not move.
            break
        case .append, .heartbeat, .snapshotChunk:
            becomeFollower(term: message.term, leader: message.from)
        default:
            becomeFollower(term: message.term, leader: nil)
        }
        return true
    }

    private mutating func answerStaleTerm(_ message: Raft.Message) {
        switch message.kind {
        case .append, .heartbeat, .snapshotChunk:
            // A leader of an old term (one that was cut off) learns the new term and steps down.
            send(to: message.from, .heartbeatResponse(readRound: 0))
        case .preVote:
            send(to: message.from, .preVoteResponse(granted: false))
        default:
            break
        }
    }

    private mutating func dispatch(_ message: Raft.Message) {
        switch message.kind {
        case .preVote(let lastIndex, let lastTerm):
            answerVoteRequest(message, lastIndex: lastIndex, lastTerm: lastTerm, pre: true)
        case .vote(let lastIndex, let lastTerm, _):
            answerVoteRequest(message, lastIndex: lastIndex, lastTerm: lastTerm, pre: false)
        case .preVoteResponse(let granted):
            // A grant carries the term we would campaign in; a rejection carries the voter's own
            // term, which is ours (a higher one made us a follower in `acceptHigherTerm`).
            guard role == .preCandidate, message.term == (granted ? term + 1 : term) else { return }
            tallyVote(from: message.from, granted: granted, pre: true)
        case .voteResponse(let granted):
            guard role == .candidate else { return }
            tallyVote(from: message.from, granted: granted, pre: false)
        case .append(let append):
            followLeader(message.from)
            handleAppend(append, from: message.from)
        case .heartbeat(let commit, let readRound):
            followLeader(message.from)
            handleHeartbeat(commit: commit, readRound: readRound, from: message.from)
        case .snapshotChunk(let chunk):
            followLeader(message.from)
            handleSnapshotChunk(chunk, from: message.from)
        case .appendResponse(let response):
            handleAppendResponse(response, from: message.from)
        case .heartbeatResponse(let round):
            handleHeartbeatResponse(readRound: round, from: message.from)
        case .snapshotResponse(let response):
            handleSnapshotResponse(response, from: message.from)
        case .timeoutNow(let commit):
            guard role != .leader else { return }
            if leader == message.from && pendingInstall == nil {
                // Sent only once our log matched the leader's through its last index.
                advanceCommit(to: min(commit, log.lastIndex))
            }
            campaign(transfer: true)
        case .readIndex(let context):
            handleForwardedRead(context: context, from: message.from)
        case .readIndexResponse(let context, let index):
            handleReadIndexResponse(context: context, index: index)
        case .propose(let proposals):
            handleForwardedProposals(proposals, from: message.from)
        case .proposeResponse(let contexts, let placement):
            handleProposeResponse(contexts: contexts, placement: placement)
        }
    }

    private mutating func answerVoteRequest(_ message: Raft.Message, lastIndex: Raft.Index, lastTerm: Raft.Term, pre: Bool) {
        let canVote = vote == message.from || (vote == nil && leader == nil) || (pre && message.term > term)
        if canVote && log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm) {
            if pre {
                send(to: message.from, .preVoteResponse(granted: true), term: message.term)
            } else {
                vote = message.from
                electionElapsed = 0
                send(to: message.from, .voteResponse(granted: true))
            }
        } else {
            send(to: message.from, pre ? .preVoteResponse(granted: false) : .voteResponse(granted: false))
        }
    }

    private mutating func tallyVote(from voter: NodeID, granted: Bool, pre: Bool) {
        votes[voter] = granted
        switch membership.voteResult(votes) {
        case .won:
            if pre { becomeCandidate(transfer: false) } else { becomeLeader() }
        case .lost:
            // As etcd-io/raft does: a (pre-)candidate that a quorum rejected cannot win this
            // round, so it goes back to following rather than wait out its election timeout.
            becomeFollower(term: term, leader: nil)
        case .pending:
            break
        }
    }

    /// A message from the leader of our term: remember it and restart the election timer.
    private mutating func followLeader(_ from: NodeID) {
        if role != .follower {
            becomeFollower(term: term, leader: from)
        }
        leader = from
        electionElapsed = 0
    }
}
