import AspenBlob
import AspenClient
import AspenCore
import AspenJobs
import AspenKV
import AspenTransport
import AspenWorker
import Logging
import Foundation
import Synchronization

/// The node's part of the job system: it answers job calls (on the leader, against the node
/// itself and the leader's clock) and, while this node leads, runs the job manager, which
/// expires leases, fires timers and settles dependencies. The manager keeps nothing of its own:
/// a new leader's manager picks up from the records where the last one stopped.
public final class JobService: Sendable {
    public let jobs: JobStore
    /// The cluster's own events on `hooks.…` subjects, published by the leader's manager.
    public let events: ClusterEvents
    let node: RaftNode
    let logger: Logger
    private let manager = Mutex<Task<Void, Never>?>(nil)
    /// Publishes the events of things this node did (through the leader).
    private let eventCalls = Mutex<LeaderJobCalls?>(nil)
    /// Moves ended attempts' output to the blob store while this node leads.
    private let archiver = Mutex<Task<Void, Never>?>(nil)
    private let workers = Mutex<Task<Void, Never>?>(nil)
    private let inProcess = Mutex<InProcessHooks?>(nil)
    private let upkeep = Mutex<(scheduler: MaintenanceScheduler?, needed: (@Sendable () async -> Bool)?, worker: Task<Void, Never>?)>((nil, nil, nil))
    /// Longest pause between manager passes while leading.
    static let passMsMax: Int64 = 200

    /// `blobs`: where ended attempts' output goes (nil: it stays in the key-value store).
    init(node: RaftNode, limits: Limits, retentionMs: Int64 = 7 * 86_400_000, blobs: BlobService? = nil, logger: Logger) {
        self.node = node
        self.logger = logger
        let topics = TopicLog(store: node, limits: limits, nowMs: node.nowMs)
        self.events = ClusterEvents(topics: topics, history: node, limits: limits)
        self.jobs = JobStore(
            store: node, limits: limits, nowMs: node.nowMs,
            blobHolders: { hash in
                guard let hash = BlobHash(bytes: hash), let records = try? await node.systemRecords(prefix: BlobRecords.holderPrefix(hash)) else {
                    return []
                }
                return Set(records.compactMap { BlobRecords.node(fromHolderName: $0.name) })
            }, retentionMs: retentionMs, topics: topics,
            outputArchive: blobs.map { blobs in
                JobOutputArchive(
                    keep: { bytes, name in try await blobs.add(bytes, tag: name, tagTtlMs: 0).bytes },
                    load: { hash in
                        guard let hash = BlobHash(bytes: hash) else { throw JobError.invalid("a job's output names no blob") }
                        return try await blobs.bytes(hash)
                    },
                    forget: { name in try await blobs.removeTag(name) })
            })
    }

    /// Consumer groups' figures, read by the leader's manager every few seconds.
    private let groupLines = Mutex<[String]>([])

    /// In-process hooks' counters and (on the leader) consumer groups' figures, for `/metrics`.
    public var metricsExposition: [String] { (inProcess.withLock { $0 }?.exposition ?? []) + groupLines.withLock { $0 } }

    /// Runs a call here if this node leads (its reads of its own applied state are then
    /// current enough to act on); else `notLeader`, and the caller goes to the leader.
    public func run(_ call: JobCall) async throws -> JobAnswer {
        try await node.requireLeader()
        if case .claim = call, jobs.isStopping {
            throw NodeError.unavailable("this node is stopping: ask another")
        }
        return try await jobs.run(call)
    }

    /// Starts the manager: a pass whenever something is due, at least every `passMsMax` while
    /// this node leads.
    public func start() {
        let task = Task { [self] in
            let clock = ContinuousClock()
            var nextPrune = clock.now
            await whileLeading(pauseMs: Self.passMsMax, "job manager pass did not finish; it runs again", level: .info, logEvery: 50) { status in
                if clock.now >= nextPrune, let topics = jobs.topics {
                    nextPrune = clock.now + .seconds(5)
                    let pruned = try await topics.prune()
                    if pruned > 0 { logger.debug("pub/sub retention", metadata: ["messages": "\(pruned)"]) }
                    let lines = try await topics.groupMetrics()
                    groupLines.withLock { $0 = lines }
                }
                let tick = try await jobs.tick()
                let published = try await events.pass(
                    ClusterEvents.Leadership(
                        node: node.id.rawValue, term: status.term, voters: status.membership.voters.map(\.rawValue),
                        learners: status.membership.learners.map(\.rawValue)))
                if published > 0 { logger.debug("cluster events", metadata: ["published": "\(published)"]) }
                if let (scheduler, needed) = upkeep.withLock({ upkeep in upkeep.scheduler.map { ($0, upkeep.needed) } }) {
                    let made = try await scheduler.pass(
                        jobs, nowMs: node.nowMs(), members: (status.membership.voters + status.membership.learners).map(\.rawValue),
                        needed: { await needed?() ?? true })
                    if made > 0 { logger.debug("maintenance jobs submitted", metadata: ["jobs": "\(made)"]) }
                }
                if tick.expired + tick.promoted + tick.resolved + tick.fired + tick.sagaMoves + tick.purged + tick.hookJobs > 0 {
                    logger.debug("job manager pass", metadata: ["expired": "\(tick.expired)", "due": "\(tick.promoted)", "settled": "\(tick.resolved)", "fired": "\(tick.fired)", "saga moves": "\(tick.sagaMoves)", "purged": "\(tick.purged)"])
                }
                return tick.nextDueMs.map { min(Self.passMsMax, max(5, $0 - node.nowMs())) } ?? Self.passMsMax
            }
        }
        manager.withLock { $0 = task }
        let archiving = Task { [self] in
            await whileLeading(pauseMs: 1000, "moving job output to the blob store failed; it is tried again", level: .warning, logEvery: 60) { _ in
                let (moved, problems) = try await jobs.archiveOutputs()
                if let problem = problems.first { throw JobError.invalid(problem) }
                // A full page: more are waiting.
                return moved >= 16 ? 10 : 1000
            }
        }
        archiver.withLock { $0 = archiving }
    }

    /// Runs `pass` while this node leads until the task is cancelled, pausing the milliseconds
    /// it returns (`pauseMs` while this node follows or after a pass that failed: leadership
    /// lost mid-pass, or the store busy, and the next pass starts over). A failure is logged
    /// the first time and every `logEvery`-th time in a row.
    private func whileLeading(
        pauseMs: Int64, _ failed: Logger.Message, level: Logger.Level, logEvery: Int, _ pass: (RaftNode.Status) async throws -> Int64
    ) async {
        var failures = 0
        while !Task.isCancelled {
            var pause = pauseMs
            let status = await node.status
            if status.leader == node.id {
                do {
                    pause = try await pass(status)
                    failures = 0
                } catch {
                    failures += 1
                    if failures == 1 || failures % logEvery == 0 { logger.log(level: level, failed, metadata: ["error": "\(error)"]) }
                }
            }
            try? await Task.sleep(for: .milliseconds(pause))
        }
    }

    /// Starts the node's built-in worker: `settings.workers` shell jobs at once, claimed
    /// through the leader (this node's calls, forwarded to the leader when this node follows).
    /// Also starts the runner of in-process hooks' commands.
    /// `handlers`: the job types this node's worker runs besides shell, given the marker
    /// prefix of the node's processes.
    public func startWorkers(
        _ settings: NodeSettings.JobSettings, identity: NodeIdentity, cookie: ClusterCookie?, handlers: (String) -> [String: JobHandler] = { _ in [:] }
    ) {
        // A node killed while it ran jobs (or hook commands) left their processes running: they
        // are this node's (its key marks them) and their attempts are dead, so they go before
        // any new one starts.
        let markerPrefix = "\(identity.key.hex.prefix(16))/"
        let leftovers = ShellRunner.killLeftovers(markerPrefix: markerPrefix)
        if leftovers > 0 { logger.notice("killed processes left by this node's jobs before it restarted", metadata: ["processes": "\(leftovers)"]) }
        let hooks = InProcessHooks(
            markerPrefix: markerPrefix, environment: ProcessInfo.processInfo.environment, enabled: settings.workers > 0, logger: logger)
        inProcess.withLock { $0 = hooks }
        jobs.inProcessRunner.withLock { $0 = { hooks.run($0, $1) } }
        guard settings.workers > 0 else { return }
        let calls = LeaderJobCalls(service: self, identity: identity, cookie: cookie)
        let extra = handlers(markerPrefix)
        let worker = JobWorker(
            calls: calls,
            options: JobWorkerOptions(
                name: "node-\(node.id.rawValue)", node: node.id.rawValue, types: ["shell"] + extra.keys.sorted(), tags: settings.workerTags,
                concurrency: settings.workers, leaseMs: settings.leaseMs, environment: ProcessInfo.processInfo.environment, markerPrefix: markerPrefix),
            handlers: extra, logger: logger)
        let task = Task {
            await worker.run()
            await calls.close()
        }
        workers.withLock { $0 = task }
    }

    /// Schedules `tasks` as maintenance jobs (while this node leads) and starts this node's
    /// maintenance worker, which runs them with `run` (given the job's command, its first word
    /// the task; a task's summary; nil: no such task).
    /// `needed` says whether there is anything to maintain (else no jobs are made).
    public func startMaintenance(
        _ tasks: [MaintenanceTask], needed: @escaping @Sendable () async -> Bool, run: @escaping @Sendable ([String]) async throws -> [UInt8]?,
        identity: NodeIdentity, cookie: ClusterCookie?
    ) {
        let calls = LeaderJobCalls(service: self, identity: identity, cookie: cookie)
        let worker = JobWorker(
            calls: calls,
            options: JobWorkerOptions(
                name: "node-\(node.id.rawValue)-maintenance", node: node.id.rawValue, types: [MaintenanceTask.jobType],
                tags: [MaintenanceTask.workerTag: "yes", MaintenanceTask.nodeTag: "\(node.id.rawValue)"], concurrency: 1),
            handlers: [
                MaintenanceTask.jobType: { [node] job in
                    let name = job.spec.command.first ?? ""
                    if name == MaintenanceTask.historyCompaction {
                        guard job.spec.command.count == 2, let revision = Int64(job.spec.command[1]), revision > 0 else {
                            throw JobError.invalid("\(MaintenanceTask.historyCompaction) takes one revision, not \(job.spec.command.dropFirst())")
                        }
                        return try await Self.compactHistory(node, through: revision)
                    }
                    guard let summary = try await run(job.spec.command) else {
                        throw JobError.invalid("no maintenance task named '\(name)' (there are \(tasks.map(\.name).joined(separator: ", ")))")
                    }
                    return summary
                }
            ],
            logger: logger)
        let task = Task {
            await worker.run()
            await calls.close()
        }
        upkeep.withLock { $0 = (MaintenanceScheduler(tasks: tasks, nowMs: node.nowMs()), needed, task) }
        eventCalls.withLock { $0 = LeaderJobCalls(service: self, identity: identity, cookie: cookie) }
        // The leader's automatic compactions become jobs too (`kv-compact REVISION`).
        let jobs = self.jobs
        Task { [node, self] in
            await node.setHistoryCompactionSubmitter { revision in
                _ = try await jobs.submit(MaintenanceTask.historyCompactionSpec(revision), origin: "maintenance")
            }
            let id = node.id.rawValue
            await node.setSnapshotObserver { index, term in
                self.publishNodeEvents([
                    TopicMessage(
                        subject: "hooks.cluster.snapshot", payload: ClusterEvents.json(["node": id, "index": index, "term": term]),
                        messageID: "snapshot:\(id):\(index)")
                ])
            }
        }
    }

    /// Publishes events of what this node did (a blob it added or collected, a snapshot it
    /// took), through the leader, when a group, hook or retention rule asks for their subjects:
    /// after the change committed, tried three times, each with a message id so that a retry
    /// is published once. A node that dies between the change and its event loses the event.
    func publishNodeEvents(_ messages: [TopicMessage]) {
        Task { [self] in
            let interest = (try? await events.interest()) ?? []
            let wanted = messages.filter { message in interest.contains { $0.matches(message.subject) } }
            guard !wanted.isEmpty, let calls = eventCalls.withLock({ $0 }) else { return }
            for attempt in 1...3 {
                do {
                    _ = try await calls.job(.publish(wanted))
                    return
                } catch {
                    if attempt == 3 {
                        logger.warning("a cluster event could not be published", metadata: ["subject": "\(wanted[0].subject)", "error": "\(error)"])
                    }
                    try? await Task.sleep(for: .milliseconds(200 * attempt))
                }
            }
        }
    }

    /// Compacts the key-value history through `revision`; one already compacted as far is done.
    static func compactHistory(_ node: RaftNode, through revision: Int64) async throws -> [UInt8] {
        do {
            // The maintenance worker may be on a follower: the command goes to the leader.
            _ = try await node.write(.compact(revision), forwarding: true)
            return MaintenanceTask.summary(["task": MaintenanceTask.historyCompaction, "revision": revision])
        } catch KVError.compacted(_, let oldest) where oldest >= revision {
            return MaintenanceTask.summary(["task": MaintenanceTask.historyCompaction, "revision": revision, "already": oldest])
        }
    }

    public func stop() async {
        // Claims waiting here (other nodes' workers') end now rather than hold up the drain.
        await jobs.stopWaiting()
        await node.setHistoryCompactionSubmitter(nil)
        await node.setSnapshotObserver(nil)
        let publisher = eventCalls.withLock { calls in
            defer { calls = nil }
            return calls
        }
        await publisher?.close()
        // The workers first: a job they stop is reported (and retried) while the manager still runs.
        let running = workers.withLock { task in
            defer { task = nil }
            return task
        }
        running?.cancel()
        await running?.value
        jobs.inProcessRunner.withLock { $0 = nil }
        let upkeeping = upkeep.withLock { upkeep in
            defer { upkeep = (nil, nil, nil) }
            return upkeep.worker
        }
        upkeeping?.cancel()
        await upkeeping?.value
        await inProcess.withLock { $0 }?.stop()
        let tasks = [
            manager.withLock { task in
                defer { task = nil }
                return task
            },
            archiver.withLock { task in
                defer { task = nil }
                return task
            },
        ].compactMap { $0 }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }
}

/// Job calls from inside a node: run here when this node leads, else sent to the leader with
/// the node's own key (members trust each other's calls). The client is rebuilt when the
/// members change.
final class LeaderJobCalls: JobCalling {
    let service: JobService
    let identity: NodeIdentity
    let cookie: ClusterCookie?
    private let forwarder = Mutex<(members: [NodeID: MemberRecord], client: AspenClient)?>(nil)

    init(service: JobService, identity: NodeIdentity, cookie: ClusterCookie?) {
        self.service = service
        self.identity = identity
        self.cookie = cookie
    }

    func job(_ call: JobCall) async throws -> JobAnswer {
        do {
            return try await service.run(call)
        } catch NodeError.notLeader {
            return try await leaderClient().job(call)
        }
    }

    func leaderClient() async throws -> AspenClient {
        let members = ClusterMembers(await service.node.membership).records
        if let current = forwarder.withLock({ $0 }), current.members == members { return current.client }
        guard !members.isEmpty else { throw NodeError.unavailable("the members' addresses are not known yet") }
        let client = try AspenClient(
            endpoints: members.keys.sorted().map { Endpoint(id: $0, host: members[$0]!.host, port: members[$0]!.port, key: members[$0]!.key) },
            identity: identity, attemptsMax: 10, cookie: cookie)
        let old = forwarder.withLock { forwarder in
            defer { forwarder = (members, client) }
            return forwarder?.client
        }
        if let old { Task { await old.close() } }
        return client
    }

    func close() async {
        let client = forwarder.withLock { forwarder in
            defer { forwarder = nil }
            return forwarder?.client
        }
        await client?.close()
    }
}
