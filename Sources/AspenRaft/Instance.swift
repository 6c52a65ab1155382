import AspenCore

extension Raft {
    /// One member of one Raft group, as a pure value.
    ///
    /// Feed it inputs (`tick`, `step`, `propose`, `proposeMembership`, `transferLeadership`,
    /// `readIndex`, and the shell's acknowledgements `persisted` and `snapshotInstalled`), then call
    /// `ready()` to collect what the shell must do; see `Ready` for the order in which to do it.
    /// Several inputs may be given before one `ready()`: proposals that arrive together leave in
    /// one append per follower (the basis of group commit).
    public struct Instance: Sendable {
        public let config: Config
        public var id: NodeID { config.id }
        var random: SplitMix64

        public internal(set) var role: Role = .follower
        public internal(set) var term: Term
        public internal(set) var vote: NodeID?
        /// The leader of `term`, if known.
        public internal(set) var leader: NodeID?
        var log: Log

        /// The configuration in force: the last committed membership entry.
        public internal(set) var membership: Membership
        /// Committed membership entries after the snapshot, for compaction.
        var membershipHistory: [(index: Index, membership: Membership)] = []
        var snapshotMembership: Membership
        /// The index of the last membership entry this leader appended (one change at a time).
        var pendingMembershipIndex: Index = 0

        var progress: [NodeID: Progress] = [:]
        var votes: [NodeID: Bool] = [:]
        var electionElapsed = 0
        var heartbeatElapsed = 0
        var randomizedElectionTimeout = 0
        /// Logical time: ticks since this instance was created.
        var ticks: UInt64 = 0
        public internal(set) var transferTarget: NodeID?
        /// This leader has been removed from the voters and is handing over.
        var leaving = false
        var leavingElapsed = 0
        var transferElapsed = 0
        var uncommittedBytes = 0

        // Linearizable reads (leader side).
        var readRound: UInt64 = 0
        var readsAwaitingCommit: [PendingRead] = []
        var readsAwaitingQuorum: [PendingRead] = []
        var readRoundRequested = false
        /// Reads this follower forwarded to a leader: to whom, and when (in ticks). Dropped if that
        /// leader is no longer the leader, or no answer came within an election timeout (the
        /// request or its answer was lost), so a read never waits forever.
        var readsForwarded: [ReadContext: (leader: NodeID, sentAt: UInt64)] = [:]

        // Commands forwarded to the leader (follower side): queued until the next `ready()`, so
        // commands that arrive together leave in one message; then awaiting the leader's answer,
        // given up like forwarded reads.
        var forwardQueue: [(context: ProposalContext, command: [UInt8])] = []
        var proposalsForwarded: [ProposalContext: (leader: NodeID, sentAt: UInt64)] = [:]
        /// Forwarded commands still unanswered when a later one was answered, and when: each is
        /// given up one election timeout later unless its own answer comes.
        var forwardsOvertaken: [ProposalContext: UInt64] = [:]
        /// When the leader last answered a forwarded command of this node's (ticks).
        var lastForwardAnswer: UInt64 = 0
        /// Leader side: the last context appended for each follower in this term. A forwarded
        /// command at or below it is a duplicate or a reordered copy, refused rather than
        /// appended twice.
        var forwardedHighWater: [NodeID: ProposalContext] = [:]

        // Snapshots: where the log was compacted; the image a leader streams to followers the
        // log no longer reaches, and whether (and when) one was last asked of the shell; the
        // image this follower is receiving, and one received for the shell to install.
        var snapshot: SnapshotMetadata
        var image: SnapshotImage?
        var imageRequested = false
        var imageRequestTick: UInt64?
        var incomingSnapshot: IncomingSnapshot?
        /// An image received whole, until the shell says it installed it or refused it.
        var pendingInstall: PendingInstall?
        /// Images this leader gave up because a follower could not install them.
        public internal(set) var imagesRefused: UInt64 = 0

        // Output not yet collected by `ready()`.
        var outbox = Ready()
        var broadcastRequested = false
        var lastHardState: HardState
        var appliedHandedOut: Index

        public init(config: Config, state: PersistentState) {
            config.validate()
            self.config = config
            self.random = SplitMix64(seed: config.seed ^ 0xA5BE_2D11_0F00_D5E7)
            let metadata = state.snapshot
            self.term = state.hardState.term
            self.vote = state.hardState.vote
            self.log = Log(
                snapshotIndex: metadata.index, snapshotTerm: metadata.term, entries: state.entries,
                committed: max(state.hardState.commit, state.appliedIndex))
            self.snapshot = state.snapshot
            self.snapshotMembership = metadata.membership
            self.membership = metadata.membership
            self.lastHardState = state.hardState
            self.appliedHandedOut = min(max(state.appliedIndex, metadata.index), log.committed)
            if log.committed > log.snapshotIndex {
                for index in log.firstIndex...log.committed {
                    if case .membership(let next)? = log.entry(at: index)?.payload {
                        membership = next
                        membershipHistory.append((index, next))
                    }
                }
            }
            resetRandomizedElectionTimeout()
        }

        // MARK: Observation

        public var commitIndex: Index { log.committed }
        public var lastIndex: Index { log.lastIndex }
        public var lastTerm: Term { log.lastTerm }
        public var firstIndex: Index { log.firstIndex }
        /// Entries through this index are durable on this node.
        public var persistedIndex: Index { log.stable }
        /// Committed entries through this index have been handed to the shell to apply.
        public var appliedIndex: Index { appliedHandedOut }
        public var snapshotMetadata: SnapshotMetadata { snapshot }
        /// The image this leader streams to followers that need one, if it has one the log
        /// still follows.
        public var snapshotImage: SnapshotImage? { usableImage }
        public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
        public var isLeader: Bool { role == .leader }

        /// The entry at `index`, if it is still in the in-memory log.
        public func entry(at index: Index) -> Entry? { log.entry(at: index) }
        public func term(at index: Index) -> Term? { log.term(at: index) }

        /// True if there is anything for `ready()` to return.
        public var hasReady: Bool {
            broadcastRequested || readRoundRequested || !outbox.isEmpty || pendingInstall?.handedOut == false || imageRequested
                || !forwardQueue.isEmpty || hardState != lastHardState
                || (pendingInstall == nil && (log.handedOut < log.lastIndex || appliedHandedOut < log.committed))
        }

        /// The leader's view of a follower, for status displays.
        public struct FollowerStatus: Sendable, Equatable {
            public var id: NodeID
            public var matchIndex: Index
            public var nextIndex: Index
            public var state: String
            /// The image being streamed to it (0: none, or one is being written).
            public var snapshotIndex: Index = 0
        }

        public var followers: [FollowerStatus] {
            guard role == .leader else { return [] }
            return membership.allMembers.compactMap { member in
                guard member != id, let pr = progress[member] else { return nil }
                return FollowerStatus(
                    id: member, matchIndex: pr.match, nextIndex: pr.next, state: "\(pr.state)",
                    snapshotIndex: pr.state == .snapshot ? pr.snapshotIndex : 0)
            }
        }

        // MARK: Output

        /// Collects everything the shell must do. See `Ready` for the order.
        public mutating func ready() -> Ready {
            prepareOutgoing()
            var ready = outbox
            outbox = Ready()
            if let install = pendingInstall, !install.handedOut {
                ready.snapshot = install.metadata
                pendingInstall?.handedOut = true
            }
            if imageRequested {
                ready.wantsSnapshotImage = true
                imageRequested = false
            }
            // While an image installs, the log it replaces hands out nothing more.
            if pendingInstall == nil && log.handedOut < log.lastIndex {
                // Bounded: what does not fit follows in the next Ready (`hasReady` stays true).
                ready.entries = log.entries(
                    from: log.handedOut + 1, countMax: config.limits.raftReadyEntriesMax, bytesMax: config.limits.raftReadyBytesMax)
                log.handedOut = ready.entries.last?.index ?? log.handedOut
            }
            let state = hardState
            if state != lastHardState {
                ready.hardState = state
                lastHardState = state
            }
            if pendingInstall == nil && appliedHandedOut < log.committed {
                ready.committedEntries = log.entries(
                    from: appliedHandedOut + 1, through: log.committed,
                    countMax: config.limits.raftApplyEntriesMax, bytesMax: config.limits.raftAppendBytesMax)
                appliedHandedOut = ready.committedEntries.last?.index ?? appliedHandedOut
            }
            return ready
        }

        /// The messages that may leave at once (`Ready.messages`: the leader's replication
        /// traffic, forwarded commands and reads, and their answers), taken out of the next
        /// Ready. A shell whose storage write is in flight sends these without waiting for it:
        /// followers then persist new entries while the leader does, and forwarded commands
        /// reach the leader at once. Everything else stays for `ready()`.
        public mutating func takeMessagesSendableNow() -> [Message] {
            prepareOutgoing()
            defer { outbox.messages = [] }
            return outbox.messages
        }

        /// Turns pending requests to send (forwarded commands, a broadcast, a read round) into
        /// messages in the outbox.
        mutating func prepareOutgoing() {
            if !forwardQueue.isEmpty { flushForwardQueue() }
            if broadcastRequested {
                broadcastRequested = false
                broadcastAppend()
            }
            if readRoundRequested {
                readRoundRequested = false
                readRound += 1
                broadcastHeartbeat()
            }
        }

        // MARK: Acknowledgements from the shell

        /// The shell has made entries through `index` (of `term`) durable. If the log was
        /// overwritten meanwhile, the acknowledgement is ignored.
        public mutating func persisted(upTo index: Index, term entryTerm: Term) {
            log.markStable(upTo: index, term: entryTerm)
            if role == .leader, commitIfQuorum() { broadcastRequested = true }
        }

        /// The shell has installed the snapshot that a Ready carried.
        /// The shell has installed the image `Ready.snapshot` named, durably: the log starts
        /// over after it, and the leader is told how far this node now matches.
        public mutating func snapshotInstalled(_ metadata: SnapshotMetadata) {
            guard let pending = pendingInstall, pending.metadata == metadata else {
                preconditionFailure("installed snapshot \(metadata.index), which was not handed out to install")
            }
            pendingInstall = nil
            restore(metadata)
            send(
                to: pending.leader,
                .snapshotResponse(SnapshotResponse(snapshotIndex: metadata.index, nextOffset: pending.totalBytes, matchIndex: log.committed)))
        }

        /// The shell could not install the image `Ready.snapshot` named (it does not decode: damaged
        /// on the leader's disk or on the way). Nothing changed here; the leader is told, gives the
        /// image up and streams a new one.
        public mutating func snapshotRefused(_ metadata: SnapshotMetadata) {
            guard let pending = pendingInstall, pending.metadata == metadata else {
                preconditionFailure("refused snapshot \(metadata.index), which was not handed out to install")
            }
            pendingInstall = nil
            send(to: pending.leader, .snapshotResponse(SnapshotResponse(snapshotIndex: metadata.index, nextOffset: 0, refused: true)))
        }

        /// The shell has made the state machine through `index` durable (it applied it): the log
        /// through `index` is dropped. Followers that fall behind it then catch up from an image
        /// (`snapshotImagePrepared`). Returns the metadata for the shell to store.
        @discardableResult
        public mutating func compact(through index: Index) throws(CompactionError) -> SnapshotMetadata {
            let metadata = try compaction(through: index)
            log.compact(through: index)
            membershipHistory.removeAll { $0.index <= index }
            snapshotMembership = metadata.membership
            snapshot = metadata
            return metadata
        }

        /// What `compact(through:)` would record, without compacting: a shell stores it first,
        /// so that a store that fails leaves Raft's log as it was, and the next attempt comes.
        public func compaction(through index: Index) throws(CompactionError) -> SnapshotMetadata {
            guard index > log.snapshotIndex else {
                throw .alreadyCompacted(index: index, snapshotIndex: log.snapshotIndex)
            }
            let limit = min(appliedHandedOut, log.stable, log.committed)
            guard index <= limit else { throw .notApplied(index: index, applied: limit) }
            return SnapshotMetadata(index: index, term: log.term(at: index)!, membership: membership(at: index))
        }

        /// The shell could not read the image at `index` (its file is damaged or gone, or the
        /// shell replaced it): Raft stops sending it and asks for a new one.
        public mutating func snapshotImageUnavailable(index: Index) {
            guard image?.metadata.index == index else { return }
            image = nil
        }

        /// The shell has written an image of its state machine as of `index` (which it has
        /// applied), `bytes` long, that it can read back by byte range. A leader streams it to
        /// the followers the log no longer reaches. Returns the image, or nil if it is of no
        /// use (the log was compacted past `index` meanwhile, or it is empty): the shell drops
        /// it, and Raft asks again if it still needs one.
        @discardableResult
        public mutating func snapshotImagePrepared(index: Index, bytes: Int) -> SnapshotImage? {
            guard bytes > 0, index >= log.snapshotIndex, index <= appliedHandedOut, let entryTerm = log.term(at: index) else {
                return nil
            }
            let prepared = SnapshotImage(
                metadata: SnapshotMetadata(index: index, term: entryTerm, membership: membership(at: index)), bytes: bytes)
            image = prepared
            imageRequestTick = nil
            if role == .leader {
                for member in membership.allMembers where member != id {
                    guard let pr = progress[member], pr.state == .snapshot, pr.snapshotIndex < log.snapshotIndex || pr.snapshotIndex == 0
                    else { continue }
                    startSnapshot(to: member)
                }
            }
            return prepared
        }

        // MARK: Helpers

        mutating func send(to: NodeID, _ kind: Message.Kind, term messageTerm: Term? = nil) {
            let message = Message(group: config.group, from: id, to: to, term: messageTerm ?? term, kind: kind)
            if message.maySendBeforePersist {
                outbox.messages.append(message)
            } else {
                outbox.messagesAfterPersist.append(message)
            }
        }

        mutating func resetRandomizedElectionTimeout() {
            let spread = (config.electionTicksMax ?? 2 * config.electionTicks - 1) - config.electionTicks
            randomizedElectionTimeout = config.electionTicks + Int(random.next(in: 0...UInt64(max(0, spread))))
        }

        /// A follower that has heard from a leader within the election timeout ignores vote
        /// requests, so a node that was cut off cannot depose a leader the quorum still follows.
        var inLease: Bool {
            config.checkQuorum && leader != nil && electionElapsed < config.electionTicks
        }

        /// A voter, and not waiting for an image to install: the log it would campaign with is
        /// about to be replaced.
        var isPromotable: Bool { membership.isVoter(id) && pendingInstall == nil }
    }
}
