import AspenAuth
import AspenBlob
import AspenCI
import AspenCore
import AspenForge
import AspenJobs
import AspenKV
import AspenLayer
import AspenSecrets
import Foundation
import Logging
import Synchronization

/// CI on the cluster (DESIGN §15). While this node leads, its scheduler takes push events from
/// the forge's outbox (each removed by the transaction that creates its runs, so a push starts
/// exactly one run whichever leader takes it) and moves every active run along: a job whose
/// needs have ended is decided, then skipped or submitted to the job system (under an
/// idempotency key, so a new leader submitting again finds the same job), and a job the job
/// system finished is recorded with its commit status. The scheduler keeps nothing of its own:
/// a new leader picks up from the records. Every node's worker runs CI jobs (type `ci`): the
/// exact commit checked out of the node's forge cache, the script under `bash -eo pipefail`,
/// its log to the blob store in chunks indexed in the key-value store.
public final class CIService: Sendable {
    let node: RaftNode
    let forge: ForgeService
    let jobs: JobService
    let blobs: BlobService
    let secrets: SecretsService
    let limits: Limits
    let logger: Logger
    /// Where jobs' checkouts go (each removed when its try ends).
    let workRoot: String
    /// Where untrusted jobs' checkouts go: outside the data directory, which their user cannot enter.
    let untrustedRoot: String?
    /// The user and group untrusted jobs run as (nobody).
    static let untrustedID = 65534
    /// Whether untrusted jobs see the host's network (`ci-untrusted-network host`); otherwise
    /// they get a namespace with only a loopback.
    let untrustedNetwork: Bool
    private let scheduler = Mutex<Task<Void, Never>?>(nil)
    /// Pulls pushed packs into this node's forge cache as pushes commit (`startWarming`).
    let warming = Mutex<Task<Void, Never>?>(nil)
    /// Push events that failed to become runs, by outbox key, and how often.
    let intakeFailures = Mutex<[[UInt8]: Int]>([:])
    /// When the leader last deleted old runs.
    let lastPrune = Mutex<ContinuousClock.Instant?>(nil)
    /// Between two prunes of old runs.
    static let pruneEveryMs: Int64 = 30_000
    /// Tries before a push event that keeps failing becomes a run in error.
    static let intakeTriesMax = 20
    /// Runs the scheduler has looked at and found waiting on nothing it can change yet.
    let metrics = CIMetrics()
    /// Active runs' pipelines, decoded once: a run's stored pipeline never changes (written with
    /// the run, deleted with it), and every pass of the scheduler needs it. At most
    /// `Limits.ciActiveRunsMax` entries; an ended run's goes.
    let pipelines = Mutex<[UInt64: Pipeline]>([:])

    /// Longest pause between scheduler passes while leading (a job ending cuts it short).
    static let passMs: Int64 = 100
    /// How long a log chunk waits for more output before it is stored (what `--follow` sees
    /// within a second).
    static let logFlushMs: Int64 = 250
    /// Largest log chunk, in bytes.
    static let logChunkBytes = 1 << 20
    /// How often a running job looks whether its run was cancelled.
    static let cancelCheckMs: Int64 = 250
    /// Job-system attempts of one try (a worker that dies mid-job is replaced this often).
    static let infrastructureAttempts = 3

    init(
        dataDirectory: String, node: RaftNode, forge: ForgeService, jobs: JobService, blobs: BlobService, secrets: SecretsService, limits: Limits,
        untrustedNetwork: Bool = false, logger: Logger
    ) {
        self.untrustedNetwork = untrustedNetwork
        self.node = node
        self.secrets = secrets
        self.forge = forge
        self.jobs = jobs
        self.blobs = blobs
        self.limits = limits
        self.logger = logger
        workRoot = (dataDirectory as NSString).appendingPathComponent("ci/work")
        // Checkouts left by a node that died mid-job: their tries are over.
        try? FileManager.default.removeItem(atPath: workRoot)
        try? FileManager.default.createDirectory(atPath: workRoot, withIntermediateDirectories: true)
        untrustedRoot = Self.privateDirectory(prefix: "aspen-ci-untrusted-\(node.id.rawValue)-")
    }

    /// A directory made here and now under the temporary directory, owned by this process's user,
    /// mode 0711 (others may reach what is in it, not list or change it). Made new, never taken
    /// over: a name someone made first is passed by. Nil if none could be made.
    static func privateDirectory(prefix: String) -> String? {
        for _ in 0..<8 {
            let path = (NSTemporaryDirectory() as NSString).appendingPathComponent(prefix + UUID().uuidString)
            guard mkdir(path, 0o700) == 0 else { continue }
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(), chmod(path, 0o711) == 0 else { continue }
            return path
        }
        return nil
    }

    /// Starts the scheduler: a pass at least every `passMs` while this node leads.
    public func start() {
        let task = Task { [self] in
            var failures = 0
            while !Task.isCancelled {
                // A job that ends while the pass runs wakes the next pass at once.
                let generation = await jobs.jobs.finished.generation
                if await node.status.leader == node.id {
                    do {
                        try await pass()
                        failures = 0
                    } catch {
                        failures += 1
                        if failures == 1 || failures % 100 == 0 { logger.info("CI scheduler pass did not finish; it runs again", metadata: ["error": "\(error)"]) }
                    }
                }
                await jobs.jobs.finished.wait(upToMs: Self.passMs, since: generation)
            }
        }
        scheduler.withLock { $0 = task }
    }

    public func stop() {
        scheduler.withLock { $0 }?.cancel()
        warming.withLock { $0 }?.cancel()
        if let untrustedRoot { try? FileManager.default.removeItem(atPath: untrustedRoot) }
    }

    /// One pass: new pushes into runs, then every active run one step further.
    func pass() async throws {
        // Runs go on whatever the intake meets.
        do {
            try await takePushes()
        } catch {
            logger.info("CI could not take a push event yet; it tries again", metadata: ["error": "\(error)"])
        }
        await pruneIfDue()
        for id in try await activeRuns() {
            do {
                try await advance(id)
            } catch {
                logger.info("CI run not advanced; it is tried again", metadata: ["run": "\(id)", "error": "\(error)"])
            }
        }
    }

    // MARK: Reading

    func read(_ key: [UInt8], consistency: ReadConsistency = .stale) async throws -> KeyValue? {
        try await node.read(RangeRequest(.key(key)), consistency: consistency).kvs.first
    }

    func scan(_ subspace: Subspace, limit: Int? = nil, keysOnly: Bool = false) async throws -> [KeyValue] {
        let range = subspace.range
        if let limit {
            return try await node.read(RangeRequest(.range(start: range.start, end: range.end), limit: limit, keysOnly: keysOnly), consistency: .stale).kvs
        }
        return try await RepoCache.scan(node, start: range.start, end: range.end, keysOnly: keysOnly)
    }

    func run(_ id: UInt64, consistency: ReadConsistency = .stale) async throws -> (run: CIRun, revision: Revision)? {
        guard let kv = try await read(CIKeys.run(id), consistency: consistency) else { return nil }
        return (try CIRun(decoding: kv.value, limits: limits), kv.modRevision)
    }

    func activeRuns() async throws -> [UInt64] {
        try await scan(CIKeys.active, keysOnly: true).compactMap { kv in CIKeys.integers(in: CIKeys.active, kv.key)?.first.map { UInt64($0) } }
    }

    /// A transaction through the leader; true if its compares held.
    func commit(_ compares: [Compare], _ operations: [TransactionOperation]) async throws -> Bool {
        guard case .transaction(let result) = try await node.write(.transaction(Transaction(compares: compares, success: operations)), forwarding: true)
        else { throw CIError.failed("unexpected result of a CI transaction") }
        return result.succeeded
    }

    // MARK: Calls

    /// Answers a CLI call; `authorize` checks what the caller's credential allows.
    public func call(_ call: CICall, caller: String, authorize: (Requirement) throws -> Void) async throws -> CIAnswer {
        switch call {
        case .list(let repo, let limit):
            try authorize(.service(.ci, .read, resource: Array(repo.utf8)))
            try await forge.barrier()
            let keys = try await scan(CIKeys.repoRuns(repo), limit: max(1, min(limit, CICall.listMax)), keysOnly: true)
            var runs: [CIRun] = []
            for kv in keys {
                guard let inverted = CIKeys.integers(in: CIKeys.repoRuns(repo), kv.key)?.first, let found = try await run(UInt64(Int64.max - inverted)) else { continue }
                runs.append(found.run)
            }
            return .runs(runs)
        case .show(let id):
            let run = try await authorized(id, .read, authorize)
            return .run(run)
        case .logs(let id, let job, let attempt, let offset, let waitMs):
            let run = try await authorized(id, .read, authorize)
            guard run.job(job) != nil else { throw CIError.notFound("run \(id) has no job '\(job)' (it has \(run.jobs.map(\.name).joined(separator: ", ")))") }
            return .log(try await logPage(run, job: job, attempt: attempt, offset: offset, waitMs: waitMs))
        case .status(let repo, let sha):
            try authorize(.service(.ci, .read, resource: Array(repo.utf8)))
            try await forge.barrier()
            let statuses = try await scan(CIKeys.statuses(repo, sha)).map { try CommitStatus(decoding: $0.value, limits: limits) }
            return .statuses(statuses)
        case .cancel(let id):
            _ = try await authorized(id, .write, authorize)
            return .run(try await requestCancel(id, reason: "cancelled by \(caller.prefix(16))"))
        case .rerun(let id, let failedOnly):
            let run = try await authorized(id, .write, authorize)
            return .run(try await rerun(run, failedOnly: failedOnly, creator: caller))
        case .start(let repo, let ref, let request):
            try authorize(.service(.ci, .write, resource: Array(repo.utf8)))
            return .run(try await startManual(repo, ref: ref, request: request, creator: caller))
        case .artifacts(let id, let job):
            _ = try await authorized(id, .read, authorize)
            return .artifacts(try await artifacts(of: id, job: job))
        case .secretSet(let repo, let name, let value):
            try authorize(.service(.ci, .full, resource: Array(repo.utf8)))
            return .names(try await setSecret(repo, name: name, value: value))
        case .secretList(let repo):
            try authorize(.service(.ci, .full, resource: Array(repo.utf8)))
            return .names(try await secretNames(repo))
        case .secretDelete(let repo, let name):
            try authorize(.service(.ci, .full, resource: Array(repo.utf8)))
            return .names(try await deleteSecret(repo, name: name))
        case .caches(let repo):
            try authorize(.service(.ci, .read, resource: Array(repo.utf8)))
            try await forge.barrier()
            return .caches(try await caches(of: repo))
        case .cacheDelete(let repo, let key):
            try authorize(.service(.ci, .write, resource: Array(repo.utf8)))
            try await forge.barrier()
            return .caches(try await deleteCaches(of: repo, key: key))
        }
    }

    /// The run, once the caller may `access` its repository.
    func authorized(_ id: UInt64, _ access: Capability.Access, _ authorize: (Requirement) throws -> Void) async throws -> CIRun {
        try await forge.barrier()
        guard let found = try await run(id) else { throw CIError.notFound("no run \(id)") }
        try authorize(.service(.ci, access, resource: Array(found.run.repo.utf8)))
        return found.run
    }

    /// Marks a run to be cancelled: the scheduler stops its running jobs (their whole process
    /// groups) and cancels the rest.
    func requestCancel(_ id: UInt64, reason: String) async throws -> CIRun {
        for _ in 0..<5 {
            guard let (current, revision) = try await run(id, consistency: .linearizable) else { throw CIError.notFound("no run \(id)") }
            // A cancel sent again after its answer was lost finds the run it cancelled.
            if current.state == .cancelled { return current }
            guard !current.state.ended else { throw CIError.conflict("run \(id) has ended (\(current.state))") }
            if current.cancelRequested { return current }
            var next = current
            next.cancelRequested = true
            next.message = CIWire.message(reason)
            if try await commit([Compare(key: CIKeys.run(id), .modRevision(revision))], [.put(Put(key: CIKeys.run(id), value: next.encoded))]) {
                return next
            }
        }
        throw CIError.unavailable("run \(id) kept changing while it was cancelled: try again")
    }
}

/// CI's counters, for `/metrics`.
final class CIMetrics: Sendable {
    let runsCreated = Atomic<Int>(0)
    let jobsSubmitted = Atomic<Int>(0)
    let pushesTaken = Atomic<Int>(0)

    var exposition: [String] {
        [
            "# TYPE aspen_ci_runs_created_total counter", "aspen_ci_runs_created_total \(runsCreated.load(ordering: .relaxed))",
            "# TYPE aspen_ci_jobs_submitted_total counter", "aspen_ci_jobs_submitted_total \(jobsSubmitted.load(ordering: .relaxed))",
            "# TYPE aspen_ci_pushes_taken_total counter", "aspen_ci_pushes_taken_total \(pushesTaken.load(ordering: .relaxed))",
        ]
    }
}
