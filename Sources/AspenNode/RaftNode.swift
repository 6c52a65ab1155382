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
    nonisolated let termNow = Atomic<UInt64>(0)
    /// The highest index whose writer was answered before its batch was durable; stale reads
    /// wait until it has applied, so a node's reads always show the writes it acknowledged.
    nonisolated let answeredThrough = Atomic<UInt64>(0)
    public nonisolated var term: Raft.Term { termNow.load(ordering: .relaxed) }
    /// Sends messages in order; those to one peer leave together (one write on its connection).
    let send: @Sendable ([Raft.Message]) -> Void
    let membershipChanged: @Sendable (Raft.Membership) -> Void
    /// Called on the node's loop after a system write applied or a snapshot installed: the
    /// system records (the cluster's trust state among them) may have changed.
    let systemRecordsChanged: @Sendable () -> Void
    public nonisolated let nowMs: @Sendable () -> Int64
    let logger: Logger

    typealias Writer = CheckedContinuation<Result<KVResult, KVError>, any Error>
    /// Writers waiting for their entries, and those whose commands this follower forwarded to
    /// the leader (the simulator runs the same book).
    var writers = Raft.WriterBook<Writer>()
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
    /// When leases are extended and expired (the simulator runs the same policy).
    var leasePolicy: Raft.LeasePolicy<LeaseID>
    /// Lease proposals under way.
    var leaseTasks = 0
    var stopped = false {
        didSet { stoppedFlag.store(stopped, ordering: .relaxed) }
    }
    var autoCompaction: AutoCompaction?
    var historyCompactionInFlight = false
    /// Told of each snapshot this node takes (its index and term).
    var snapshotObserver: (@Sendable (Raft.Index, Raft.Term) -> Void)?
    /// Where the compactions `autoCompaction` decides go (nil: proposed here).
    var historyCompactionSubmitter: (@Sendable (Revision) async throws -> Void)?
    /// An image for followers is being written (off the actor).
    var preparingImage = false
    /// When to compact the log and when to try again after a failure (the simulator runs the
    /// same policy), on the clock of `monotonicMs`.
    var compaction: Raft.CompactionPolicy
    let clockStart = ContinuousClock.now
    var lastRole: Raft.Role = .follower
    var lastTerm: Raft.Term = 0
    var lastMembership: Raft.Membership?
    /// Member records this node can vouch for: its own (always current) and, for founders, the
    /// addresses given at bootstrap. The leader records whichever the membership lacks.
    var localRecords: [NodeID: [UInt8]] = [:]
    var recordProposalIndex: Raft.Index = 0
    /// Counters for /metrics (reads are counted off the actor, in `readsServed`).
    public internal(set) var counters: Counters {
        get {
            var counters = tally
            counters.reads = readsServed.load(ordering: .relaxed)
            return counters
        }
        _modify { yield &tally }
    }
    private var tally = Counters()

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
        systemRecordsChanged: @escaping @Sendable () -> Void = {},
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
        self.systemRecordsChanged = systemRecordsChanged
        self.nowMs = nowMs
        self.appliedIndex = state.appliedIndex
        self.appliedMirror.store(state.appliedIndex, ordering: .releasing)
        self.autoCompaction = configuration.autoCompaction
        self.leasePolicy = Raft.LeasePolicy(extensionsInFlightMax: configuration.limits.leaseRefreshesInFlightMax)
        self.compaction = Raft.CompactionPolicy(threshold: configuration.compactionThreshold, waitMs: Int64(configuration.compactionWaitMs))
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
        let (waiting, forwarded) = writers.takeAll()
        for writer in waiting + forwarded { writer.resume(throwing: NodeError.stopped) }
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
        var waited = 0
        while (committing || compaction.compacting || preparingImage || leaseTasks > 0) && waited < timeoutMs {
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
        runLeasePolicy()
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

    /// Reads of the store under way (see `read(_:consistency:)`).
    nonisolated let readsInFlight = Atomic<Int>(0)
    /// Reads served, counted where they are served (on the actor or off it).
    nonisolated let readsServed = Atomic<Int>(0)
    /// `appliedIndex` and `stopped`, for the stale reads that need not wait on the actor.
    nonisolated let appliedMirror = Atomic<UInt64>(0)
    nonisolated let stoppedFlag = Atomic<Bool>(false)

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

    /// Throws `notLeader` (with the leader's id, if known) unless this node leads.
    public func requireLeader() throws(NodeError) {
        guard raft.isLeader else { throw .notLeader(leaderHint: raft.leader) }
    }

    public var status: Status {
        Status(
            id: id, role: raft.role, term: raft.term, leader: raft.leader, commitIndex: raft.commitIndex,
            appliedIndex: appliedIndex, lastIndex: raft.lastIndex, membership: raft.membership,
            snapshotIndex: raft.snapshotMetadata.index)
    }
}
