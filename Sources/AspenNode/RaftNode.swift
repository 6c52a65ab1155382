import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Why a request to a node failed.
public enum NodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Writes and linearizable reads go to the leader; the hint names it when known.
    case notLeader(leaderHint: NodeID?)
    /// The proposal was overwritten by another leader's entry: it did not and will not apply.
    case proposalLost
    /// The node lost track of the proposal (it installed a snapshot or stopped): it may or may
    /// not have applied.
    case outcomeUnknown
    case stopped
    case refused(String)
    /// The node cannot serve this now (it is installing a snapshot image): retry, or ask another.
    case unavailable(String)

    public var description: String {
        switch self {
        case .notLeader(let hint): return "not the leader" + (hint.map { "; try \($0)" } ?? "; no leader is known yet")
        case .proposalLost: return "the write was superseded by a new leader and did not apply; retry it"
        case .outcomeUnknown:
            return "the outcome of the write is unknown: it may or may not have applied (the leader changed, or this node caught up by snapshot, before it could tell)"
        case .stopped: return "the node is shutting down"
        case .refused(let reason), .unavailable(let reason): return reason
        }
    }
}

public struct NodeConfiguration: Sendable {
    public var id: NodeID
    /// One Raft tick; heartbeats go out every tick, elections time out after `electionTicks`.
    public var tickMs: Int = 100
    public var electionTicks: Int = 15
    /// The longest randomized election timeout, in ticks (default: twice `electionTicks`, less one).
    public var electionTicksMax: Int?
    public var limits = Limits.standard
    /// Compact the log once this many applied entries follow the last snapshot (etcd's default
    /// snapshot count). Compaction makes the state durable and deletes log files; it writes no
    /// image (images are written when a follower needs one).
    public var compactionThreshold: Raft.Index = 100_000
    /// A leader compacts through a snapshot only once every follower has the entries up to it,
    /// so that one a little behind catches up from the log rather than by a whole snapshot
    /// (which also ends its forwarded writes as of unknown outcome). It waits at most this long,
    /// or until the log is twice `compactionThreshold` long; a follower that is down or far
    /// behind then gets the snapshot.
    public var compactionWaitMs = 10_000
    /// The key-value history the leader compacts by itself (nil: only clients compact).
    public var autoCompaction: AutoCompaction?

    public init(id: NodeID) { self.id = id }
}

/// The shell around one Raft instance: it ticks it, carries out its Readies (persist, send,
/// apply, advance) against the node store, answers writes once their entry applies, and serves
/// linearizable reads through ReadIndex.
///
/// **Group commit is adaptive:** the storage commit of a Ready runs off the actor; proposals that
/// arrive meanwhile accumulate in the instance and leave together in the next Ready.
public actor RaftNode {
    public nonisolated let id: NodeID
    /// The event loop the actor runs on. Given the loop that also carries the node's
    /// connections, a Raft message or a request is read, stepped, and its replies written on one
    /// thread; only storage commits leave it.
    public nonisolated let loop: any EventLoop
    private nonisolated let executor: any SerialExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    let configuration: NodeConfiguration
    var raft: Raft.Instance
    let storage: any NodeStorage
    /// Watchers of this node's applied changes.
    public nonisolated let watches: WatchHub
    /// The current term, readable without waiting for the actor (for response headers).
    private nonisolated let termNow = Atomic<UInt64>(0)
    /// The highest index whose writer was answered before its batch was durable; stale reads
    /// wait until it has applied, so a node's reads always show the writes it acknowledged.
    private nonisolated let answeredThrough = Atomic<UInt64>(0)
    public nonisolated var term: Raft.Term { termNow.load(ordering: .relaxed) }
    /// Sends messages in order; those to one peer leave together (one write on its connection).
    let send: @Sendable ([Raft.Message]) -> Void
    let membershipChanged: @Sendable (Raft.Membership) -> Void
    let nowMs: @Sendable () -> Int64
    let logger: Logger

    struct Proposal: Sendable {
        var term: Raft.Term
        var continuation: CheckedContinuation<Result<KVResult, KVError>, any Error>
    }

    var proposals: [Raft.Index: Proposal] = [:]
    /// Writers whose commands this follower forwarded to the leader, until the leader says where
    /// it put them (they then wait in `proposals`, like the leader's own writers).
    var forwardedWriters: [Raft.ProposalContext: CheckedContinuation<Result<KVResult, KVError>, any Error>] = [:]
    /// Increasing across restarts too, as `Raft.Instance.forward` requires: it starts from the
    /// clock (milliseconds, shifted past any number of writes a millisecond could see).
    var nextProposalContext: Raft.ProposalContext
    var readIndexWaiters: [Raft.ReadContext: CheckedContinuation<Raft.Index, any Error>] = [:]
    var applyWaiters: [(index: Raft.Index, continuation: CheckedContinuation<Void, Never>)] = []
    var appliedIndex: Raft.Index
    var committing = false
    var earlySendScheduled = false
    var nextReadContext: Raft.ReadContext = 1
    var tickTask: Task<Void, Never>?
    /// The new leader's lease refresh, while it runs (see `refreshLeasesAsNewLeader`).
    var leaseRefreshTask: Task<Void, Never>?
    var leaseRefreshGeneration = 0
    var stopped = false
    var expiryInFlight = false
    var autoCompaction: AutoCompaction?
    var historyCompactionInFlight = false
    /// The term in which this node, as leader, has extended every lease by its own clock; it
    /// expires nothing in a term before that (see `refreshLeasesAsNewLeader`).
    var leasesRefreshedInTerm: Raft.Term = 0
    var snapshotting = false
    /// An image for followers is being written (off the actor).
    var preparingImage = false
    /// After a compaction or an image failed: no new attempt before this instant, and the
    /// pause that follows the next failure (doubling up to `snapshotRetryMsMax`).
    var snapshotRetryAt: ContinuousClock.Instant?
    var snapshotBackoffMs: Int64 = 0
    static let snapshotRetryMsMin: Int64 = 1_000
    static let snapshotRetryMsMax: Int64 = 60_000
    /// A compaction due, waiting for the followers to reach its index.
    var heldSnapshot: (index: Raft.Index, since: ContinuousClock.Instant)?
    var lastRole: Raft.Role = .follower
    var lastTerm: Raft.Term = 0
    var lastMembership: Raft.Membership?
    /// Member records this node can vouch for: its own (always current) and, for founders, the
    /// addresses given at bootstrap. The leader records whichever the membership lacks.
    var localRecords: [NodeID: [UInt8]] = [:]
    var recordProposalIndex: Raft.Index = 0
    /// Counters for /metrics.
    public private(set) var counters = Counters()

    public struct Counters: Sendable {
        public var proposals = 0
        /// Writes this node forwarded to the leader inside Raft's traffic, and of those the
        /// ones whose outcome it could not tell (no answer, or the answer came after the entry
        /// applied) and the ones the leader refused.
        public var proposalsForwarded = 0
        public var proposalsForwardedUnknown = 0
        public var proposalsForwardedRefused = 0
        /// Raft messages dropped because too many were waiting to be stepped.
        public var raftMessagesDropped = 0
        public var reads = 0
        public var storageCommits = 0
        /// Of those, the ones that only applied entries and ran on the node's loop.
        public var storageCommitsInline = 0
        /// Entries written by those commits: with `storageCommits`, the mean group-commit batch.
        public var committedEntries = 0
        public var storageCommitSeconds = 0.0
        public var storageCommitSecondsMax = 0.0
        /// Storage commit latency (one fsync each) and entries per commit (the group-commit batch).
        public var storageCommitLatency = Histogram.latency
        public var groupCommitEntries = Histogram.batchSize
        public var snapshotsInstalled = 0
        /// Images received whole that did not decode (this node kept its state and asked for
        /// another), and, as leader, images given up because a follower refused them.
        public var snapshotsRefused = 0
        public var snapshotImagesRefused = 0
        /// Images of the state written for followers, and the image bytes sent to them.
        public var snapshotImagesPrepared = 0
        public var snapshotBytesSent = 0
        /// Ticks that came at least a tick (and 100 ms) late, and the latest one's delay.
        public var ticksLate = 0
        public var tickDelaySecondsMax = 0.0
        /// Compactions a leader made while a follower still lacked entries before the snapshot.
        public var compactionsWithFollowerBehind = 0
        /// Failures while a new leader extended the leases (reading them, or a keep-alive that
        /// did not apply); each is retried.
        public var leaseRefreshFailures = 0
        /// Compactions, and images for followers, that could not be made; each is retried with
        /// backoff, and the log keeps growing meanwhile.
        public var snapshotFailures = 0
    }

    public init(
        configuration: NodeConfiguration, storage: any NodeStorage, state: Raft.PersistentState,
        send: @escaping @Sendable ([Raft.Message]) -> Void, nowMs: @escaping @Sendable () -> Int64, logger: Logger,
        membershipChanged: @escaping @Sendable (Raft.Membership) -> Void = { _ in },
        loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
    ) {
        self.id = configuration.id
        self.loop = loop
        self.executor = loop.executor
        self.configuration = configuration
        self.raft = Raft.Instance(config: Self.raftConfig(configuration, nowMs: nowMs), state: state)
        self.storage = storage
        self.watches = WatchHub(storage: storage, limits: configuration.limits)
        self.send = send
        self.membershipChanged = membershipChanged
        self.nowMs = nowMs
        self.appliedIndex = state.appliedIndex
        self.autoCompaction = configuration.autoCompaction
        self.nextProposalContext = UInt64(max(1, nowMs())) << 20
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.id)"
        self.logger = logger
    }

    static func raftConfig(_ configuration: NodeConfiguration, nowMs: () -> Int64) -> Raft.Config {
        var raftConfiguration = Raft.Config(
            id: configuration.id, electionTicks: configuration.electionTicks, heartbeatTicks: 1,
            seed: configuration.id.rawValue &* 0x9E37_79B9 &+ UInt64(nowMs()), limits: configuration.limits)
        raftConfiguration.appendRetryTicks = 3
        raftConfiguration.electionTicksMax = configuration.electionTicksMax
        return raftConfiguration
    }

    // MARK: Lifecycle

    public func start() {
        noteMembershipChange()
        guard tickTask == nil else { return }
        let interval = Duration.milliseconds(configuration.tickMs)
        tickTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await self?.tick()
            }
        }
    }

    /// Stops ticking and fails everything still waiting.
    public func stop() {
        stopped = true
        tickTask?.cancel()
        tickTask = nil
        for (_, proposal) in proposals { proposal.continuation.resume(throwing: NodeError.stopped) }
        proposals = [:]
        for (_, writer) in forwardedWriters { writer.resume(throwing: NodeError.stopped) }
        forwardedWriters = [:]
        for (_, waiter) in readIndexWaiters { waiter.resume(throwing: NodeError.stopped) }
        readIndexWaiters = [:]
        for waiter in applyWaiters { waiter.continuation.resume() }
        applyWaiters = []
        watches.close()
    }

    /// Waits (bounded) for what was under way when the node stopped: a storage commit, a
    /// snapshot or compaction, the lease refresh. Its event loop (this actor's executor) may
    /// be shut down next, and none of them may come back to the actor after that.
    public func waitUntilIdle(timeoutMs: Int = 5000) async {
        leaseRefreshTask?.cancel()
        var waited = 0
        while (committing || snapshotting || preparingImage || leaseRefreshTask != nil) && waited < timeoutMs {
            try? await Task.sleep(for: .milliseconds(5))
            waited += 5
        }
    }

    // MARK: Inputs

    /// Raft messages received and not yet stepped, in arrival order, and whether a task is on
    /// its way to step them.
    private nonisolated let inbox = Mutex<(messages: [Raft.Message], scheduled: Bool)>(([], false))

    /// Queues a message from a peer without waiting for the actor. One task at a time steps
    /// everything queued, in order, and pumps once: under load that is one actor turn for many
    /// messages instead of one each, and messages from one connection are never reordered.
    /// Beyond `raftInboxMessagesMax` queued messages, new ones are dropped (Raft's retries
    /// recover, as from any lost message) — except forwarded commands and the answers about
    /// them, which nothing retries: a lost one leaves its writers with an unknown outcome.
    /// Their number is bounded by each follower's own limit on commands forwarded and
    /// unanswered.
    public nonisolated func enqueue(_ message: Raft.Message) {
        let limit = configuration.limits.raftInboxMessagesMax
        let forwarding: Bool
        switch message.kind {
        case .propose, .proposeResponse: forwarding = true
        default: forwarding = false
        }
        let schedule = inbox.withLock { inbox -> Bool? in
            guard inbox.messages.count < limit || forwarding else { return nil }
            inbox.messages.append(message)
            defer { inbox.scheduled = true }
            return !inbox.scheduled
        }
        guard let schedule else {
            inboxDropped.add(1, ordering: .relaxed)
            return
        }
        // On the actor's own loop this queues behind the current read, without a wake-up.
        if schedule { loop.execute { self.assumeIsolated { $0.stepInbox() } } }
    }

    /// Raft messages dropped because the inbox was full.
    private nonisolated let inboxDropped = Atomic<Int>(0)

    func stepInbox() {
        let messages = inbox.withLock { inbox -> [Raft.Message] in
            defer {
                inbox.messages = []
                inbox.scheduled = false
            }
            return inbox.messages
        }
        guard !stopped else { return }
        counters.raftMessagesDropped = inboxDropped.load(ordering: .relaxed)
        for message in messages { raft.step(message) }
        pump()
    }

    func tick() {
        guard !stopped else { return }
        noteTickDelay()
        raft.tick()
        expireLeasesIfDue()
        compactHistoryIfDue()
        publishRecordsIfDue()
        pump()
    }

    var lastTick: ContinuousClock.Instant?
    var lateTickLoggedAt: ContinuousClock.Instant?

    /// A tick that comes much later than its interval means the node's event loop (or the
    /// machine) was held up: its heartbeats, elections and requests were late with it. Counted
    /// for /metrics and logged, at most every few seconds, with how late (as etcd warns of a
    /// heartbeat sent late).
    func noteTickDelay() {
        let now = ContinuousClock.now
        defer { lastTick = now }
        guard let last = lastTick else { return }
        let delay = now - last - .milliseconds(configuration.tickMs)
        guard delay >= .milliseconds(max(configuration.tickMs, 100)) else { return }
        let delayMs = Int(delay / .milliseconds(1))
        counters.ticksLate += 1
        counters.tickDelaySecondsMax = max(counters.tickDelaySecondsMax, Double(delayMs) / 1000)
        guard lateTickLoggedAt.map({ now - $0 >= .seconds(5) }) ?? true else { return }
        lateTickLoggedAt = now
        logger.warning(
            "a Raft tick came late: the node's event loop or the machine was held up",
            metadata: [
                "late_ms": "\(delayMs)", "tick_ms": "\(configuration.tickMs)", "role": "\(raft.role)", "term": "\(raft.term)",
                "late_ticks": "\(counters.ticksLate)",
            ])
    }

    public func campaign() {
        raft.campaign()
        pump()
    }

    /// Applies a write through the log; returns its result once it has applied here. A follower
    /// answers `notLeader`.
    public func write(_ request: KVWriteRequest) async throws -> KVResult {
        try await write(request, forwarding: false)
    }

    /// Applies a write through the log; returns its result once it has applied here.
    ///
    /// A follower answers `notLeader`, unless `forwarding` is set: then it forwards the command
    /// to the leader inside Raft's own traffic (batched with the others that arrive meanwhile)
    /// and answers once it has applied the command itself. Commands that carry time (lease
    /// grants and keep-alives) are never forwarded: the leader's clock stamps those.
    public func write(_ request: KVWriteRequest, forwarding: Bool) async throws -> KVResult {
        guard !stopped else { throw NodeError.stopped }
        let command = request.command(nowMs: nowMs())
        try KVValidator.validate(command, limits: configuration.limits)
        let result = forwarding && request.isTimeless && !raft.isLeader ? try await forward(command) : try await propose(command)
        return try result.get()
    }

    /// Applies a client's write once, however often the client sends it: the command carries
    /// the client's session stamp and the leader's clock (by which idle sessions are forgotten).
    public func write(_ request: KVWriteRequest, stamp: ClientStamp) async throws -> KVResult {
        guard !stopped else { throw NodeError.stopped }
        let now = nowMs()
        let command = KVCommand.sessioned(stamp, nowMs: now, request.command(nowMs: now))
        try KVValidator.validate(command, limits: configuration.limits)
        return try await propose(command).get()
    }

    static func nodeError(_ error: Raft.ProposalError) -> NodeError {
        switch error {
        case .notLeader(let hint): return .notLeader(leaderHint: hint)
        case .leaderBeingRemoved, .leadershipTransferInProgress: return .notLeader(leaderHint: nil)
        default: return .refused(error.description)
        }
    }

    func propose(_ command: KVCommand) async throws -> Result<KVResult, KVError> {
        let receipt: Raft.ProposalReceipt
        counters.proposals += 1
        do {
            receipt = try raft.propose(command.encoded())
        } catch {
            throw Self.nodeError(error)
        }
        return try await withCheckedThrowingContinuation { continuation in
            wait(Proposal(term: receipt.term, continuation: continuation), at: receipt.indexes.lowerBound)
            pump()
        }
    }

    /// Waits for the entry at `index` to apply. A writer already waiting there (a forward placed
    /// by a leader that died before this node got the entry, say) waited for an entry of another
    /// term, which the new one replaces: it never applies, and is told so rather than forgotten.
    func wait(_ proposal: Proposal, at index: Raft.Index) {
        proposals.updateValue(proposal, forKey: index)?.continuation.resume(throwing: NodeError.proposalLost)
    }

    func forward(_ command: KVCommand) async throws -> Result<KVResult, KVError> {
        let context = nextProposalContext
        nextProposalContext += 1
        counters.proposalsForwarded += 1
        do {
            try raft.forward(command.encoded(), context: context)
        } catch {
            throw Self.nodeError(error)
        }
        return try await withCheckedThrowingContinuation { continuation in
            forwardedWriters[context] = continuation
            pump()
        }
    }

    /// The leader placed (or refused, or never answered about) a forwarded command. Called before
    /// the Ready that carried the answer applies anything, so an index it applies is waited for.
    func place(_ outcome: Raft.ForwardedOutcome) {
        guard let writer = forwardedWriters.removeValue(forKey: outcome.context) else { return }
        switch outcome.result {
        case .appended(let term, let index) where index > appliedIndex:
            wait(Proposal(term: term, continuation: writer), at: index)
        case .appended:
            // Applied before the answer came (its result is gone): rare, and not a loss.
            counters.proposalsForwardedUnknown += 1
            writer.resume(throwing: NodeError.outcomeUnknown)
        case .refused:
            counters.proposalsForwardedRefused += 1
            writer.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
        case .unknown:
            counters.proposalsForwardedUnknown += 1
            writer.resume(throwing: NodeError.outcomeUnknown)
        }
    }

    /// Reads the applied state: after a ReadIndex round with a quorum (linearizable), or as it is
    /// here (stale). Only the wait for the index to read at is the actor's; the read itself runs
    /// on the caller's thread when it is the only one under way (usually the node's event loop:
    /// no hand-over), and on the concurrency pool when others are, so that many reads use
    /// every core rather than the loop's one (the store serves reads concurrently, each in its
    /// own transaction).
    public nonisolated func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult {
        try await readable(request, consistency: consistency)
        let alone = readsInFlight.wrappingAdd(1, ordering: .relaxed).newValue == 1
        defer { readsInFlight.wrappingSubtract(1, ordering: .relaxed) }
        let store = self.storage
        if alone { return try Self.serving { try store.read(request).get() } }
        return try await Task.detached { try Self.serving { try store.read(request).get() } }.value
    }

    /// A store busy installing a snapshot image makes the node unavailable for the request.
    nonisolated static func serving<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch StorageError.busy(_, let detail) {
            throw NodeError.unavailable("this node cannot serve reads now: \(detail)")
        }
    }

    /// Reads of the store under way (see `read(_:consistency:)`).
    private nonisolated let readsInFlight = Atomic<Int>(0)

    /// The checksum of this node's applied key-value state as of `revision` (0: the current
    /// one), read off the actor; see `NodeStorage.stateHash(at:page:)`.
    public nonisolated func stateHash(at revision: Revision) async throws -> StateHash {
        let storage = self.storage
        return try await Task.detached { try storage.stateHash(at: revision) }.value.get()
    }

    /// Rewrites this node's database without its free pages; see `NodeStorage.defragment()`.
    public nonisolated func defragment() async throws -> (before: Int64, after: Int64)? {
        let storage = self.storage
        return try await Task.detached { try storage.defragment() }.value
    }

    /// Returns once the applied state may serve `request` at `consistency`.
    func readable(_ request: RangeRequest, consistency: ReadConsistency) async throws {
        guard !stopped else { throw NodeError.stopped }
        try KVValidator.validate(request, limits: configuration.limits)
        counters.reads += 1
        if consistency == .linearizable {
            let context = nextReadContext
            nextReadContext += 1
            let index: Raft.Index = try await withCheckedThrowingContinuation { continuation in
                do {
                    try raft.readIndex(context: context)
                    readIndexWaiters[context] = continuation
                    pump()
                } catch {
                    continuation.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
                }
            }
            await waitUntilApplied(index)
        } else {
            await waitUntilApplied(answeredThrough.load(ordering: .relaxed))
        }
    }

    public func proposeMembership(_ changes: [Raft.MembershipChange]) throws {
        do {
            try raft.proposeMembership(changes)
        } catch {
            if case .notLeader(let hint) = error { throw NodeError.notLeader(leaderHint: hint) }
            throw NodeError.refused(error.description)
        }
        pump()
    }

    public func transferLeadership(to target: NodeID) throws {
        do {
            try raft.transferLeadership(to: target)
        } catch {
            if case .notLeader(let hint) = error { throw NodeError.notLeader(leaderHint: hint) }
            throw NodeError.refused(error.description)
        }
        pump()
    }

    public struct Status: Sendable, Equatable {
        public var id: NodeID
        public var role: Raft.Role
        public var term: Raft.Term
        public var leader: NodeID?
        public var commitIndex: Raft.Index
        public var appliedIndex: Raft.Index
        public var lastIndex: Raft.Index
        public var membership: Raft.Membership
        public var snapshotIndex: Raft.Index
    }

    public var status: Status {
        Status(
            id: id, role: raft.role, term: raft.term, leader: raft.leader, commitIndex: raft.commitIndex,
            appliedIndex: appliedIndex, lastIndex: raft.lastIndex, membership: raft.membership,
            snapshotIndex: raft.snapshotMetadata.index)
    }

    // MARK: Leases: time decided by the leader

    /// The leader proposes the expiry of leases past their time by its clock; every node applies
    /// the same command with the same timestamp.
    func expireLeasesIfDue() {
        // A node that just won an election may tick before its Ready loop has noticed (and
        // before it has applied what earlier leaders committed): judging leases then would
        // expire ones a failover kept from being renewed. Only after this term's refresh.
        guard raft.isLeader, leasesRefreshedInTerm == raft.term, !expiryInFlight else { return }
        let now = nowMs()
        guard let earliest = try? storage.earliestLeaseExpiry(), earliest <= now else { return }
        expiryInFlight = true
        Task {
            _ = try? await self.propose(.expireLeases(nowMs: now))
            self.expiryDone()
        }
    }

    func expiryDone() { expiryInFlight = false }

    /// The leader compacts the key-value history when its `AutoCompaction` says so, through the
    /// log like a client's compaction; a node that is not leading forgets what it sampled.
    func compactHistoryIfDue() {
        guard autoCompaction != nil, !historyCompactionInFlight else { return }
        guard raft.isLeader else {
            autoCompaction?.reset()
            return
        }
        guard let target = autoCompaction?.due(nowMs: nowMs(), revision: watches.revision),
            let compacted = try? storage.revisions().compacted, target > compacted
        else { return }
        historyCompactionInFlight = true
        let mode = autoCompaction.map { "\($0.mode)" } ?? ""
        Task {
            do {
                _ = try await self.propose(.compact(target)).get()
                self.logger.info("history compacted", metadata: ["revision": "\(target)", "auto-compaction": "\(mode)"])
            } catch {
                self.logger.warning("automatic compaction failed", metadata: ["revision": "\(target)", "error": "\(error)"])
            }
            self.historyCompactionDone()
        }
    }

    func historyCompactionDone() { historyCompactionInFlight = false }

    func leasesRefreshed(in term: Raft.Term) { leasesRefreshedInTerm = max(leasesRefreshedInTerm, term) }

    // MARK: The Ready loop

    func pump() {
        guard !stopped else { return }
        guard !committing else {
            scheduleEarlySend()
            return
        }
        committing = true
        Task { await self.drain() }
    }

    /// While a storage commit is in flight, what may leave before it ends (new appends to
    /// followers, forwarded commands, answers to them) leaves in a task of its own rather than
    /// after the commit: followers write new entries while the leader does, and a follower's
    /// forwarded command does not wait for its own fsync. One task serves every input that
    /// arrives before it runs.
    func scheduleEarlySend() {
        guard !earlySendScheduled else { return }
        earlySendScheduled = true
        Task { self.sendEarly() }
    }

    func sendEarly() {
        earlySendScheduled = false
        guard !stopped else { return }
        dispatch(raft.takeMessagesSendableNow())
    }

    /// Persist, send, apply, advance — until the instance has nothing more to do.
    func drain() async {
        defer { committing = false }
        while !stopped {
            let ready = raft.ready()
            if ready.isEmpty { break }
            noteRoleChange()
            for outcome in ready.forwardedProposals { place(outcome) }
            dispatch(ready.messages)
            if ready.wantsSnapshotImage { prepareImage() }
            var batch = StorageBatch(ready)
            var applied: [AppliedEntry] = []
            if !batch.isEmpty {
                let storage = self.storage
                // The writers of the entries this batch applies are answered as soon as their
                // results are known, without waiting for the batch's fsync (see
                // `NodeStorage.commit(_:resultsKnown:)`); whoever is not answered then is after.
                let waiting = Mutex<[Raft.Index: Proposal]>([:])
                for entry in batch.committedEntries {
                    if let proposal = proposals.removeValue(forKey: entry.index) { waiting.withLock { $0[entry.index] = proposal } }
                }
                let answerKnown: @Sendable ([AppliedEntry]) -> Void = { [self] results in
                    for entry in results {
                        guard let proposal = waiting.withLock({ $0.removeValue(forKey: entry.index) }) else { continue }
                        self.answeredThrough.max(entry.index, ordering: .relaxed)
                        Self.answer(proposal, with: entry)
                    }
                }
                while !batch.isEmpty {
                    do {
                        let clock = ContinuousClock()
                        let started = clock.now
                        if appliesQuickly(batch) {
                            counters.storageCommitsInline += 1
                            applied = try storage.commit(batch, resultsKnown: answerKnown)
                        } else {
                            // Off the actor: proposals keep arriving and join the next batch.
                            let attempt = batch
                            applied = try await Task.detached { try storage.commit(attempt, resultsKnown: answerKnown) }.value
                        }
                        let elapsed = (clock.now - started).components
                        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18
                        counters.storageCommits += 1
                        counters.committedEntries += batch.entries.count
                        counters.storageCommitSeconds += seconds
                        counters.storageCommitSecondsMax = max(counters.storageCommitSecondsMax, seconds)
                        counters.storageCommitLatency.observe(seconds)
                        if !batch.entries.isEmpty { counters.groupCommitEntries.observe(Double(batch.entries.count)) }
                        break
                    } catch StorageError.imageRefused(let index, let detail) where batch.snapshot?.index == index {
                        // A damaged image is not a damaged node: it keeps its state and log, and
                        // the leader sends another. The rest of the batch (a term or vote) is
                        // written without it.
                        logger.error("snapshot image refused; the leader will send another", metadata: ["index": "\(index)", "error": "\(detail)"])
                        counters.snapshotsRefused += 1
                        raft.snapshotRefused(batch.snapshot!)
                        batch.snapshot = nil
                        batch.snapshotChunks = []
                    } catch {
                        for (index, proposal) in waiting.withLock({ $0 }) { proposals[index] = proposal }
                        logger.critical("storage failed; stopping the node", metadata: ["error": "\(error)"])
                        stop()
                        return
                    }
                }
                // Entries the store skipped (already applied) are answered below, as before.
                for (index, proposal) in waiting.withLock({ $0 }) { proposals[index] = proposal }
                if let snapshot = batch.snapshot {
                    // Watchers cannot be told the changes a snapshot skipped: they resume.
                    watches.endAll(.lagged)
                    counters.snapshotsInstalled += 1
                    raft.snapshotInstalled(snapshot)
                    failProposals(through: snapshot.index, with: NodeError.outcomeUnknown)
                    advanceApplied(to: snapshot.index)
                }
                if let last = batch.entries.last { raft.persisted(upTo: last.index, term: last.term) }
            }
            dispatch(ready.messagesAfterPersist)
            watches.publish(applied.flatMap(\.events))
            for entry in applied { resolve(entry) }
            if let last = batch.committedEntries.last { advanceApplied(to: last.index) }
            noteMembershipChange()
            counters.snapshotImagesRefused = Int(raft.imagesRefused)
            for state in ready.readStates { readIndexWaiters.removeValue(forKey: state.context)?.resume(returning: state.index) }
            for context in ready.droppedReads {
                readIndexWaiters.removeValue(forKey: context)?.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
            }
        }
        compactIfDue()
    }

    /// Whether to commit `batch` on the node's loop rather than hand it to a pool thread and
    /// back: at low load those two thread switches, for the append and again for the apply, are
    /// a good part of what a put costs. Only a batch that applies a few committed entries of
    /// bounded work (puts, lease grants and keep-alives, no-ops) qualifies, and only when the
    /// store says it needs no disk wait for it (no fsync, no checkpoint, no other write ahead of
    /// it). Deletes of ranges, transactions and compactions, which can touch any number of
    /// rows, always go to the pool.
    func appliesQuickly(_ batch: StorageBatch) -> Bool {
        guard !batch.committedEntries.isEmpty, batch.committedEntries.count <= configuration.limits.inlineApplyEntriesMax,
            storage.commitsWithoutDisk(batch)
        else { return false }
        var bytes = 0
        for entry in batch.committedEntries {
            guard case .command(let payload) = entry.payload else { continue }
            bytes += payload.count
            guard bytes <= configuration.limits.inlineApplyBytesMax, KVCommand.hasBoundedWork(encoded: payload) else { return false }
        }
        return true
    }

    // Under load, batches are larger and the loop has sockets to serve: those go to the pool,
    // where they run beside the loop on another core (`Limits.inlineApplyEntriesMax`).

    func noteMembershipChange() {
        guard raft.membership != lastMembership else { return }
        if lastMembership != nil { logger.info("membership changed", metadata: ["membership": "\(raft.membership)", "term": "\(raft.term)"]) }
        lastMembership = raft.membership
        membershipChanged(raft.membership)
    }

    func noteRoleChange() {
        if raft.role != lastRole || raft.term != lastTerm {
            lastRole = raft.role
            lastTerm = raft.term
            termNow.store(raft.term, ordering: .relaxed)
            logger.info("role changed", metadata: ["role": "\(raft.role)", "term": "\(raft.term)", "leader": "\(raft.leader.map(\.description) ?? "none")"])
            if raft.isLeader { refreshLeasesAsNewLeader() }
        }
    }

    /// A new leader judges lease expiry by its own clock, which may run ahead of the clock that
    /// set the expiries. So before expiring anything it extends every lease to its time plus
    /// the lease's TTL (as etcd does): a lease can outlive its TTL by a failover, never expire
    /// early because clocks disagree. What fails (reading the leases, a keep-alive that does
    /// not apply) is logged, counted and retried a tick later; until every lease is extended
    /// this term expires nothing.
    func refreshLeasesAsNewLeader() {
        expiryInFlight = true
        let term = raft.term
        leaseRefreshGeneration += 1
        let generation = leaseRefreshGeneration
        leaseRefreshTask = Task {
            // The state must include everything committed before this term: wait until an entry
            // of this term (the leader's no-op) has committed and applied.
            while self.leads(term), self.raft.term(at: self.raft.commitIndex) != term || self.appliedIndex < self.raft.commitIndex {
                try? await Task.sleep(for: .milliseconds(self.configuration.tickMs))
            }
            var pending: [LeaseID]?
            var extended = 0
            while self.leads(term) {
                if pending == nil {
                    do {
                        pending = try self.storage.leases().map(\.id)
                    } catch {
                        self.leaseRefreshFailed(count: 1, term: term, problem: "reading the leases failed: \(error)")
                    }
                }
                if let ids = pending {
                    let (failed, problem) = await self.extendLeases(ids, term: term)
                    extended += ids.count - failed.count
                    pending = failed
                    if failed.isEmpty {
                        if extended > 0 { self.logger.info("leases extended by the new leader's clock", metadata: ["leases": "\(extended)", "term": "\(term)"]) }
                        self.leasesRefreshed(in: term)
                        break
                    }
                    self.leaseRefreshFailed(count: failed.count, term: term, problem: problem ?? "unknown")
                }
                try? await Task.sleep(for: .milliseconds(self.configuration.tickMs))
            }
            self.expiryDone()
            if self.leaseRefreshGeneration == generation { self.leaseRefreshTask = nil }
        }
    }

    func leads(_ term: Raft.Term) -> Bool { !stopped && raft.isLeader && raft.term == term }

    func leaseRefreshFailed(count: Int, term: Raft.Term, problem: String) {
        counters.leaseRefreshFailures += count
        logger.error(
            "extending the leases as the new leader failed; retrying, and expiring none until it succeeds",
            metadata: ["leases": "\(count)", "term": "\(term)", "error": "\(problem)"])
    }

    /// Keeps `ids` alive by this leader's clock, many at a time, so that they share appends and
    /// fsyncs rather than wait for one commit each (at a millisecond or so a commit, a hundred
    /// thousand leases one by one would take minutes). Returns the leases not extended, and why
    /// the first of them was not. A lease gone meanwhile (revoked) needs nothing.
    func extendLeases(_ ids: [LeaseID], term: Raft.Term) async -> (failed: [LeaseID], problem: String?) {
        var failed: [LeaseID] = []
        var problem: String?
        let chunkSize = configuration.limits.leaseRefreshesInFlightMax
        for start in stride(from: 0, to: ids.count, by: chunkSize) {
            let chunk = ids[start..<min(start + chunkSize, ids.count)]
            guard leads(term) else { return (failed + chunk, problem ?? "leadership lost") }
            let outcomes = await withTaskGroup(of: (LeaseID, String?).self) { group in
                for id in chunk {
                    group.addTask {
                        do {
                            switch try await self.propose(.leaseKeepAlive(id, nowMs: self.nowMs())) {
                            case .success, .failure(.leaseNotFound): return (id, nil)
                            case .failure(let error): return (id, "\(error)")
                            }
                        } catch {
                            return (id, "\(error)")
                        }
                    }
                }
                var outcomes: [(LeaseID, String?)] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            for case (let id, let why?) in outcomes {
                failed.append(id)
                problem = problem ?? why
            }
        }
        return (failed, problem)
    }

    func resolve(_ entry: AppliedEntry) {
        guard let proposal = proposals.removeValue(forKey: entry.index) else { return }
        Self.answer(proposal, with: entry)
    }

    /// Answers a proposal with what its index applied: its result, or `proposalLost` when
    /// another term's entry took the index.
    nonisolated static func answer(_ proposal: Proposal, with entry: AppliedEntry) {
        guard proposal.term == entry.term, let result = entry.result else {
            proposal.continuation.resume(throwing: NodeError.proposalLost)
            return
        }
        proposal.continuation.resume(returning: result)
    }

    func failProposals(through index: Raft.Index, with error: NodeError) {
        for key in proposals.keys where key <= index {
            proposals.removeValue(forKey: key)?.continuation.resume(throwing: error)
        }
    }

    func advanceApplied(to index: Raft.Index) {
        guard index > appliedIndex else { return }
        appliedIndex = index
        let ready = applyWaiters.filter { $0.index <= index }
        applyWaiters.removeAll { $0.index <= index }
        for waiter in ready { waiter.continuation.resume() }
    }

    func waitUntilApplied(_ index: Raft.Index) async {
        guard index > appliedIndex else { return }
        await withCheckedContinuation { continuation in applyWaiters.append((index, continuation)) }
    }

    func compactIfDue() {
        if heldSnapshot != nil { compactHeldSnapshotIfCaughtUp() }
        guard !snapshotting, heldSnapshot == nil,
            appliedIndex >= raft.snapshotMetadata.index + configuration.compactionThreshold,
            snapshotRetryAt.map({ ContinuousClock.now >= $0 }) ?? true
        else { return }
        // Not past an image being streamed to a follower: it would be of no use once it arrives,
        // and the transfer would start over (until the log grows too long to keep waiting).
        var index = appliedIndex
        let logLength = raft.lastIndex - raft.snapshotMetadata.index
        if raft.isLeader, logLength < 4 * configuration.compactionThreshold,
            let streaming = raft.followers.filter({ $0.snapshotIndex > 0 }).map(\.snapshotIndex).min()
        {
            index = min(index, streaming)
        }
        guard index > raft.snapshotMetadata.index else { return }
        heldSnapshot = (index, ContinuousClock.now)
        compactHeldSnapshotIfCaughtUp()
    }

    // MARK: Images for followers

    /// Messages as they leave, in order: a snapshot chunk gets its bytes from the prepared image
    /// here (the instance only says which range). If the image cannot be read (replaced,
    /// damaged, gone), Raft is told, and asks for a new one. The messages go in one call, so
    /// those to the same peer share a write: a forwarded command's answer and the append that
    /// carries it reach the follower together.
    func dispatch(_ messages: [Raft.Message]) {
        guard !messages.isEmpty else { return }
        var leaving: [Raft.Message] = []
        leaving.reserveCapacity(messages.count)
        for message in messages {
            do {
                if let filled = try storage.withImageBytes(message) {
                    if case .snapshotChunk(let chunk) = filled.kind { counters.snapshotBytesSent += chunk.length }
                    leaving.append(filled)
                    continue
                }
            } catch {
                logger.error("reading the snapshot image failed", metadata: ["error": "\(error)"])
            }
            if case .snapshotChunk(let chunk) = message.kind { raft.snapshotImageUnavailable(index: chunk.metadata.index) }
        }
        send(leaving)
    }

    /// Writes an image of the applied state for followers the log no longer reaches, off the
    /// actor (one read transaction, streamed to a file); Raft then streams it to them.
    func prepareImage() {
        guard !preparingImage, !stopped, snapshotRetryAt.map({ ContinuousClock.now >= $0 }) ?? true else { return }
        preparingImage = true
        let storage = self.storage
        Task {
            let clock = ContinuousClock()
            let started = clock.now
            let prepared = await Task.detached { Result { try storage.prepareSnapshotImage() } }.value
            self.imagePrepared(prepared, milliseconds: Int((clock.now - started) / .milliseconds(1)))
        }
    }

    func imagePrepared(_ prepared: Result<(index: Raft.Index, bytes: Int), any Error>, milliseconds: Int) {
        preparingImage = false
        guard !stopped else { return }
        switch prepared {
        case .success(let (index, bytes)):
            snapshotBackoffMs = 0
            snapshotRetryAt = nil
            counters.snapshotImagesPrepared += 1
            let image = raft.snapshotImagePrepared(index: index, bytes: bytes)
            logger.info(
                "snapshot image written for followers",
                metadata: ["index": "\(index)", "bytes": "\(bytes)", "ms": "\(milliseconds)", "used": "\(image != nil)"])
            pump()
        case .failure(let error):
            snapshotFailed("writing a snapshot image for a follower failed", error)
        }
    }

    /// Counts and logs a failed snapshot or compaction, and puts the next attempt off.
    func snapshotFailed(_ what: String, _ error: any Error) {
        counters.snapshotFailures += 1
        snapshotBackoffMs = min(Self.snapshotRetryMsMax, max(Self.snapshotRetryMsMin, snapshotBackoffMs * 2))
        snapshotRetryAt = ContinuousClock.now + .milliseconds(snapshotBackoffMs)
        logger.error(
            "\(what); the log keeps growing until it succeeds",
            metadata: [
                "error": "\(error)", "retry_in_ms": "\(snapshotBackoffMs)", "failures": "\(counters.snapshotFailures)",
                "applied": "\(appliedIndex)", "snapshot_index": "\(raft.snapshotMetadata.index)",
            ])
    }

    /// Compacts the log through a held index; its storage half (deleting the prefix) runs off
    /// the actor, and no other compaction starts until it is done.
    func compactHeld(_ held: (index: Raft.Index, since: ContinuousClock.Instant)) {
        snapshotting = true
        Task {
            do {
                _ = try await self.compact(through: held.index)
                self.snapshotBackoffMs = 0
                self.snapshotRetryAt = nil
            } catch {
                self.snapshotFailed("compacting the log through a snapshot failed", error)
            }
            self.snapshotting = false
        }
    }

    /// Compacts through the held snapshot once no follower still needs the entries before it
    /// (see `NodeConfiguration.compactionWaitMs`); a follower compacts its own log at once.
    func compactHeldSnapshotIfCaughtUp() {
        guard let held = heldSnapshot, !stopped else { return }
        if raft.isLeader, raft.followers.contains(where: { $0.matchIndex < held.index }) {
            let waited = ContinuousClock.now - held.since
            let logLength = raft.lastIndex - raft.snapshotMetadata.index
            if waited < .milliseconds(configuration.compactionWaitMs) && logLength < 2 * configuration.compactionThreshold { return }
            counters.compactionsWithFollowerBehind += 1
        }
        heldSnapshot = nil
        compactHeld(held)
    }

    /// Compacts the log through `index` (applied); nothing when the last snapshot already
    /// covers it. Returns the snapshot now in force.
    ///
    /// Raft's log is compacted at once; the store deletes the prefix off the actor (a hundred
    /// thousand rows take long enough to delay heartbeats past an election timeout). Until it
    /// is done the store still holds entries Raft no longer needs, which is harmless.
    func compact(through index: Raft.Index) async throws -> Raft.SnapshotMetadata {
        guard index > raft.snapshotMetadata.index else { return raft.snapshotMetadata }
        do {
            // The store first: if it fails, Raft's log stays as it was and the next attempt comes.
            let metadata = try raft.compaction(through: index)
            let storage = self.storage
            let clock = ContinuousClock()
            let started = clock.now
            try await Task.detached { try storage.compacted(metadata) }.value
            // (A snapshot installed meanwhile may have moved Raft past it.)
            if metadata.index > raft.snapshotMetadata.index { try raft.compact(through: metadata.index) }
            logger.info(
                "log compacted",
                metadata: [
                    "through": "\(metadata.index)", "term": "\(raft.term)",
                    "storage_ms": "\(Int((clock.now - started) / .milliseconds(1)))",
                ])
            return metadata
        } catch {
            logger.error("compaction failed", metadata: ["error": "\(error)"])
            throw NodeError.refused("the snapshot could not be taken: \(error)")
        }
    }

    /// Compacts the log through the applied state and writes an image of it for followers
    /// (`aspen cluster snapshot`), off the actor. Returns the compaction's index and term, and
    /// the image's size.
    @discardableResult
    public func snapshotNow() async throws -> (index: Raft.Index, term: Raft.Term, bytes: Int) {
        let metadata = try await compact(through: appliedIndex)
        // One image at a time: the store keeps one.
        while preparingImage { try await Task.sleep(for: .milliseconds(10)) }
        preparingImage = true
        defer { preparingImage = false }
        let storage = self.storage
        let prepared: (index: Raft.Index, bytes: Int)
        do {
            prepared = try await Task.detached { try storage.prepareSnapshotImage() }.value
        } catch {
            throw NodeError.refused("the snapshot image could not be written: \(error)")
        }
        counters.snapshotImagesPrepared += 1
        raft.snapshotImagePrepared(index: prepared.index, bytes: prepared.bytes)
        pump()
        return (metadata.index, metadata.term, prepared.bytes)
    }
}
