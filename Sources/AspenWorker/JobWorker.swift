import AspenCore
import AspenJobs
import Foundation
import Logging
import Synchronization

/// How a worker presents itself and runs what it takes.
public struct JobWorkerOptions: Sendable {
    /// Unique among workers (it is recorded with each attempt).
    public var name: String
    /// The node it runs on (0: outside the cluster).
    public var node: UInt64
    public var types: [String]
    public var tags: [String: String]
    /// Jobs run at once.
    public var concurrency: Int
    /// The lease each attempt holds; renewed every third of it.
    public var leaseMs: Int64
    /// How long one claim waits on the leader for a job to become ready.
    public var claimWaitMs: Int64
    /// Output of one shell attempt kept, in bytes (the rest is dropped and the drop noted).
    public var outputBytesMax: Int
    /// The environment shell jobs start from (the job's id and attempt are added).
    public var environment: [String: String]
    public var workingDirectory: String?
    /// Starts the marker of each attempt's processes: unique to this worker across restarts
    /// (a node's key), so that a restarted worker finds what its killed predecessor left.
    public var markerPrefix: String

    public init(
        name: String, node: UInt64 = 0, types: [String] = ["shell"], tags: [String: String] = [:], concurrency: Int = 1, leaseMs: Int64 = 30_000,
        claimWaitMs: Int64 = 5000, outputBytesMax: Int = 1 << 20, environment: [String: String] = [:], workingDirectory: String? = nil,
        markerPrefix: String = ""
    ) {
        self.markerPrefix = markerPrefix
        self.name = name
        self.node = node
        self.types = types
        self.tags = tags
        self.concurrency = concurrency
        self.leaseMs = leaseMs
        self.claimWaitMs = claimWaitMs
        self.outputBytesMax = outputBytesMax
        self.environment = environment
        self.workingDirectory = workingDirectory
    }
}

/// Runs a job of a type other than shell: returns the result, or throws to fail the attempt.
public typealias JobHandler = @Sendable (JobRecord) async throws -> [UInt8]

/// A worker: `concurrency` loops that each claim a job (waiting on the leader for one), run it
/// while renewing its lease, and report how it ended. The attempt token fences every report: when
/// the cluster gave up on an attempt (its lease ran out, say, while this worker was cut off), the
/// renewal is refused, the work is stopped and nothing it did is reported.
public final class JobWorker: Sendable {
    let calls: any JobCalling
    public let options: JobWorkerOptions
    let handlers: [String: JobHandler]
    let logger: Logger
    let runner = ShellRunner()
    let reporter: Reporter
    private let counts = Mutex<(succeeded: Int, failed: Int, lost: Int)>((0, 0, 0))

    public init(calls: any JobCalling, options: JobWorkerOptions, handlers: [String: JobHandler] = [:], logger: Logger) {
        self.calls = calls
        self.options = options
        self.handlers = handlers
        self.logger = logger
        self.reporter = Reporter(calls: calls)
    }

    /// Attempts this worker finished, by how they ended; `lost`: refused as stale.
    public var finished: (succeeded: Int, failed: Int, lost: Int) { counts.withLock { $0 } }

    /// Longest a busy worker holds back a claim for more free slots.
    static let batchWaitMs = 10

    var info: WorkerInfo {
        WorkerInfo(name: options.name, node: options.node, types: options.types, tags: options.tags.merging(Self.capabilityTags) { $1 })
    }

    /// Tags for what this worker can do beyond its options': `aspen.network=none` where it can
    /// give a shell job a network namespace (root, the trampoline beside it).
    static let capabilityTags: [String: String] =
        geteuid() == 0 && CgroupPlacement.trampolineExecutable != nil ? [ShellNetwork.isolationTag.name: ShellNetwork.isolationTag.value] : [:]

    /// Runs until the calling task is cancelled; a job under way is stopped (and reported failed,
    /// so that it is retried) first.
    ///
    /// One claim at a time takes as many jobs as there are free slots (up to
    /// `JobCall.claimBatchMax`), in one transaction on the leader; each job runs in a task of its
    /// own. An idle worker claims at once; a busy one waits up to `batchWaitMs` for a quarter of
    /// its slots to be free, so that its claims stay batches when jobs end one by one.
    public func run() async {
        let slots = Slots(max(1, options.concurrency))
        await withTaskCancellationHandler {
            await claimAndRun(slots, reports: Slots(max(1, options.concurrency)))
        } onCancel: {
            reporter.stopping.store(true, ordering: .relaxed)
        }
    }

    /// A slot is a job running: it comes free when the job's work ends, its report then going
    /// with others while the next jobs run. `reports` bounds the reports not yet answered (a
    /// job whose work ended waits for one, holding its slot, when the cluster answers slowly).
    func claimAndRun(_ slots: Slots, reports: Slots) async {
        // Discarding: a finished job's task is not kept for a result nobody reads.
        await withDiscardingTaskGroup { group in
            var pauseMs: Int64 = 50
            var failures = 0
            while !Task.isCancelled {
                let free = await slots.free(batching: Self.batchWaitMs)
                if Task.isCancelled { break }
                do {
                    let call = JobCall.claim(info, leaseMs: options.leaseMs, waitMs: options.claimWaitMs, max: min(free, JobCall.claimBatchMax))
                    let claimed: [JobRecord]
                    switch try await abandoningOnCancel({ try await self.calls.job(call) }) {
                    case .claimed(let job): claimed = job.map { [$0] } ?? []
                    case .jobs(let jobs): claimed = jobs
                    default: throw JobError.invalid("the node answered a claim with something else")
                    }
                    pauseMs = 50
                    failures = 0
                    for job in claimed {
                        slots.take()
                        group.addTask {
                            await self.execute(job) {
                                await reports.acquire()
                                slots.give()
                            }
                            reports.give()
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    // No leader yet (a cluster starting, an election) is the common case: retried
                    // within a second, and reported only when it lasts.
                    failures += 1
                    logger.log(
                        level: failures == 20 || failures % 300 == 0 ? .warning : .debug, "claiming jobs keeps failing; trying again",
                        metadata: ["error": "\(error)", "failures": "\(failures)"])
                    try? await Task.sleep(for: .milliseconds(pauseMs))
                    pauseMs = min(pauseMs * 2, 1000)
                }
            }
        }
    }

    /// Runs `body` in a task of its own and returns its answer, or throws `CancellationError` as
    /// soon as the caller is cancelled, leaving the task to end unwatched. A claim waits on the
    /// leader for seconds and a client request cannot be taken back: a stopping worker does not
    /// wait for it (the node cancels it when the connection goes; a job it claimed for nobody
    /// waits out its lease).
    func abandoningOnCancel<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let answered = Waiter<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                answered.continuation.withLock { $0 = continuation }
                // Cancelled before the continuation was there to take.
                if Task.isCancelled {
                    answered.continuation.withLock { $0.take() }?.resume(throwing: CancellationError())
                    return
                }
                Task {
                    let result: Result<T, any Error>
                    do {
                        result = .success(try await body())
                    } catch {
                        result = .failure(error)
                    }
                    answered.continuation.withLock { $0.take() }?.resume(with: result)
                }
            }
        } onCancel: {
            answered.continuation.withLock { $0.take() }?.resume(throwing: CancellationError())
        }
    }

    /// Runs one claimed attempt to its end and reports it; `ended` is awaited once the work is
    /// over (whatever the outcome), before the report.
    func execute(_ job: JobRecord, ended: () async -> Void = {}) async {
        guard let attempt = job.attempt else { return await ended() }
        let lost = Atomic<Bool>(false)
        logger.info(
            "job started", metadata: ["job": "\(job.id)", "attempt": "\(attempt.number)", "type": "\(job.spec.type)", "worker": "\(options.name)"])
        let work = Task { await self.perform(job, attempt) }
        let renewals = Task {
            let everyMs = max(50, options.leaseMs / 3)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(everyMs))
                if Task.isCancelled { return }
                do {
                    let record = try await calls.job(.renew(job.id, type: job.spec.type, token: attempt.token, leaseMs: options.leaseMs))
                    if case .job(let current) = record, current.cancelRequested {
                        logger.info("job cancelled: stopping it", metadata: ["job": "\(job.id)"])
                        work.cancel()
                    }
                } catch let error as JobError {
                    // Stale (the cluster gave the job to another attempt) or gone: stop, report nothing.
                    logger.warning("job attempt lost: stopping it", metadata: ["job": "\(job.id)", "error": "\(error)"])
                    lost.store(true, ordering: .relaxed)
                    work.cancel()
                    return
                } catch {
                    // The cluster is unreachable for now; the lease has slack for two more tries.
                    logger.info("renewing a job's lease failed; trying again", metadata: ["job": "\(job.id)", "error": "\(error)"])
                }
            }
        }
        let (outcome, exitCode) = await withTaskCancellationHandler {
            await work.value
        } onCancel: {
            work.cancel()
        }
        renewals.cancel()
        await ended()
        if lost.load(ordering: .relaxed) {
            counts.withLock { $0.lost += 1 }
            return
        }
        await report(job, attempt, outcome, exitCode)
    }

    /// Reports an attempt's end, with the other ends waiting to go (one write for them all),
    /// again on a lost answer (a finish is fenced and answers its replay).
    func report(_ job: JobRecord, _ attempt: JobAttempt, _ outcome: JobOutcome, _ exitCode: Int32?) async {
        switch await reporter.report(JobReport(id: job.id, type: job.spec.type, token: attempt.token, outcome: outcome, exitCode: exitCode)) {
        case .success:
            counts.withLock {
                if case .succeeded = outcome { $0.succeeded += 1 } else { $0.failed += 1 }
            }
            let how: String = if case .failed(let message, _) = outcome { "failed: \(message)" } else { "succeeded" }
            logger.info("job ended", metadata: ["job": "\(job.id)", "attempt": "\(attempt.number)", "outcome": "\(how)"])
        case .failure(.refused(let error)):
            counts.withLock { $0.lost += 1 }
            logger.warning("job report refused", metadata: ["job": "\(job.id)", "error": "\(error)"])
        case .failure(.undelivered):
            logger.warning("job report not delivered; its lease will run out and it will be retried", metadata: ["job": "\(job.id)"])
        }
    }

    /// Does the work of one attempt.
    func perform(_ job: JobRecord, _ attempt: JobAttempt) async -> (JobOutcome, Int32?) {
        if job.spec.type == "shell" { return await shell(job, attempt) }
        guard let handler = handlers[job.spec.type] else {
            return (.failed(message: "worker \(options.name) has no handler for type \(job.spec.type)", retryable: true), nil)
        }
        do {
            return (.succeeded(result: try await handler(job)), nil)
        } catch {
            return (.failed(message: Task.isCancelled ? "cancelled" : "\(error)", retryable: true), nil)
        }
    }

    func shell(_ job: JobRecord, _ attempt: JobAttempt) async -> (JobOutcome, Int32?) {
        var environment = options.environment
        environment["ASPEN_JOB_ID"] = String(job.id)
        environment["ASPEN_JOB_ATTEMPT"] = String(attempt.number)
        // A hook's event (or another payload) as text, when it fits an environment variable.
        if !job.spec.payload.isEmpty, job.spec.payload.count <= 64 * 1024 {
            environment["ASPEN_EVENT"] = String(decoding: job.spec.payload, as: UTF8.self)
        }
        let command = ShellCommand(
            arguments: job.spec.command, environment: environment, workingDirectory: options.workingDirectory, timeoutMs: job.spec.timeoutMs,
            outputBytesMax: options.outputBytesMax,
            network: job.spec.requiredTags[ShellNetwork.isolationTag.name] == ShellNetwork.isolationTag.value ? .loopbackOnly : .host)
        let output = Mutex<(stdout: [UInt8], stderr: [UInt8])>(([], []))
        let resultMax = Limits.standard.jobResultBytesMax
        let logs = OutputShipper(job: job, attempt: attempt, calls: calls)
        let shipping = Task { await logs.run() }
        defer { shipping.cancel() }
        do {
            let outcome = try await runner.run(command, marker: "\(options.markerPrefix)job-\(job.id)-\(String(attempt.token, radix: 16))") { chunk in
                logs.add(chunk)
                output.withLock { output in
                    switch chunk.stream {
                    case .standardOutput: output.stdout += chunk.bytes.prefix(max(0, resultMax - output.stdout.count))
                    case .standardError:
                        output.stderr += chunk.bytes
                        if output.stderr.count > 2048 { output.stderr.removeFirst(output.stderr.count - 2048) }
                    }
                }
            }
            // The whole output is stored before the attempt is reported.
            logs.close()
            await shipping.value
            let (stdout, stderr) = output.withLock { $0 }
            let tail = String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let exitCode: Int32? = if case .exited(let code) = outcome.termination { code } else { nil }
            if outcome.succeeded { return (.succeeded(result: stdout), 0) }
            let why: String =
                outcome.cancelled ? "cancelled"
                : outcome.timedOut ? "timed out after \(JobDuration.format(ms: job.spec.timeoutMs))" : "\(outcome.termination)"
            return (.failed(message: tail.isEmpty ? why : "\(why): \(tail)", retryable: true), exitCode)
        } catch {
            // It could not start (no such program, a bad directory): another attempt would not either.
            return (.failed(message: "\(error)", retryable: !(error is ShellRunError)), nil)
        }
    }
}

/// Whoever waits for an answer: the first to take it answers.
final class Waiter<T: Sendable>: Sendable {
    let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)
}

/// Sends an attempt's output to the cluster as it comes (`aspen job logs --follow` reads it):
/// pieces read close together go as one, at most every 100 ms or 64 KiB, in order. A refusal
/// (the attempt is stale) stops the shipping; the work itself is stopped by the renewals.
final class OutputShipper: Sendable {
    let job: JobRecord
    let attempt: JobAttempt
    let calls: any JobCalling
    private let state = Mutex<(pending: [JobOutputChunk], offset: Int64, closed: Bool)>(([], 0, false))
    private let wakeup = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    static let pieceBytesMax = Limits.standard.jobOutputChunkBytesMax

    init(job: JobRecord, attempt: JobAttempt, calls: any JobCalling) {
        self.job = job
        self.attempt = attempt
        self.calls = calls
    }

    func add(_ chunk: ShellOutputChunk) {
        let isError = chunk.stream == .standardError
        let full = state.withLock { state -> Bool in
            var consumed = 0
            while consumed < chunk.bytes.count {
                let left = chunk.bytes.count - consumed
                if var last = state.pending.last, last.isError == isError, last.bytes.count < Self.pieceBytesMax {
                    let taken = min(left, Self.pieceBytesMax - last.bytes.count)
                    last.bytes += chunk.bytes[consumed..<(consumed + taken)]
                    state.pending[state.pending.count - 1] = last
                    consumed += taken
                } else {
                    let taken = min(left, Self.pieceBytesMax)
                    state.pending.append(
                        JobOutputChunk(offset: state.offset + Int64(consumed), isError: isError, bytes: Array(chunk.bytes[consumed..<(consumed + taken)])))
                    consumed += taken
                }
            }
            state.offset += Int64(chunk.bytes.count)
            return state.pending.count > 1
        }
        if full { wakeup.continuation.yield() }
    }

    func close() {
        state.withLock { $0.closed = true }
        wakeup.continuation.yield()
    }

    func run() async {
        var refused = false
        var wakeups = wakeup.stream.makeAsyncIterator()
        while true {
            let (pieces, closed) = state.withLock { state in
                defer { state.pending = [] }
                return (state.pending, state.closed)
            }
            for piece in pieces where !refused {
                do {
                    _ = try await calls.job(.appendOutput(job.id, type: job.spec.type, token: attempt.token, chunk: piece))
                } catch is JobError {
                    refused = true
                } catch {
                    // Unreachable for now: the piece is dropped rather than hold the job back.
                }
            }
            if closed { return }
            let tick = Task { [wakeup] in
                try? await Task.sleep(for: .milliseconds(100))
                wakeup.continuation.yield()
            }
            _ = await wakeups.next()
            tick.cancel()
            if Task.isCancelled { return }
        }
    }
}

/// A worker's free slots: `free()` waits until there is one.
final class Slots: Sendable {
    /// Whoever waits for a slot; each looks again when one is given.
    private let state: Mutex<(free: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) {
        total = count
        state = Mutex((count, []))
    }

    let total: Int

    /// The free slots: at once when all are; else once a quarter are, or `batching` ms after
    /// the first came free.
    func free(batching waitMs: Int) async -> Int {
        // Counted from the first free slot.
        var deadline: ContinuousClock.Instant?
        let enough = max(1, total / 4)
        while true {
            let free = state.withLock { $0.free }
            if free > 0, deadline == nil { deadline = .now + .milliseconds(waitMs) }
            if free == total || free >= enough || (free > 0 && ContinuousClock.now >= deadline!) { return free }
            if free > 0 {
                try? await Task.sleep(for: .milliseconds(1))
                if Task.isCancelled { return free }
                continue
            }
            await untilGiven()
        }
    }

    func take() { state.withLock { $0.free -= 1 } }

    /// Returns once a slot is free (at once if one is now).
    private func untilGiven() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                guard state.free == 0 else { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Takes a slot, waiting for one.
    func acquire() async {
        while true {
            let taken = state.withLock { state -> Bool in
                guard state.free > 0 else { return false }
                state.free -= 1
                return true
            }
            if taken { return }
            await untilGiven()
        }
    }

    func give() {
        let waiters = state.withLock { state in
            state.free += 1
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Sends attempts' ends as they come, in batches: whatever arrived while the last call was under
/// way goes in the next (`finishMany`, one transaction on the leader), within `batchBytesMax`.
final class Reporter: Sendable {
    /// Recorded, refused (why), or not delivered.
    typealias Answer = Result<Void, ReportError>
    enum ReportError: Error { case refused(JobError), undelivered }
    let calls: any JobCalling
    private let queue = Mutex<(waiting: [(report: JobReport, answer: CheckedContinuation<Answer, Never>)], sending: Bool)>(([], false))
    /// Set when the worker stops: reports are tried a few times, not for minutes.
    let stopping = Atomic<Bool>(false)
    /// Results and messages one batch carries at most (well inside a log entry).
    static let batchBytesMax = 512 * 1024

    static func bytes(_ report: JobReport) -> Int {
        switch report.outcome {
        case .succeeded(let result): result.count + 64
        case .failed(let message, _): message.utf8.count + 64
        }
    }

    init(calls: any JobCalling) { self.calls = calls }

    /// The job as the report left it, why it was refused, or nil when it could not be delivered.
    func report(_ report: JobReport) async -> Answer {
        await withCheckedContinuation { continuation in
            let lead = queue.withLock { queue -> Bool in
                queue.waiting.append((report, continuation))
                defer { queue.sending = true }
                return !queue.sending
            }
            if lead { Task { await self.send() } }
        }
    }

    func send() async {
        while true {
            let batch = queue.withLock { queue in
                var count = 0
                var bytes = 0
                for entry in queue.waiting.prefix(JobCall.claimBatchMax) {
                    bytes += Self.bytes(entry.report)
                    guard count == 0 || bytes <= Self.batchBytesMax else { break }
                    count += 1
                }
                let batch = Array(queue.waiting.prefix(count))
                queue.waiting.removeFirst(count)
                if batch.isEmpty { queue.sending = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            let answers = await deliver(batch.map(\.report))
            for (entry, answer) in zip(batch, answers) { entry.answer.resume(returning: answer) }
        }
    }

    /// One answer per report; retried while the cluster cannot be reached (up to 20 times; 3
    /// once the worker stops). A batch that fails as a whole (refused by a node that does not
    /// know batches or by a credential short of one type, or not answered) is sent again one
    /// report at a time.
    func deliver(_ reports: [JobReport]) async -> [Answer] {
        var pauseMs: Int64 = 50
        var attempt = 0
        while attempt < (stopping.load(ordering: .relaxed) ? 3 : 20) {
            attempt += 1
            do {
                if reports.count == 1 {
                    guard case .job = try await calls.job(reports[0].call) else { return [.failure(.undelivered)] }
                    return [.success(())]
                }
                guard case .reported(let results) = try await calls.job(.finishMany(reports)), results.count == reports.count else {
                    return reports.map { _ in .failure(.undelivered) }
                }
                return results.map { $0.map { .failure(.refused($0)) } ?? .success(()) }
            } catch let error as JobError where reports.count == 1 {
                return [.failure(.refused(error))]
            } catch where reports.count > 1 {
                // Each report alone (a replay of what did apply is answered as such), each with
                // its own retries.
                var answers: [Answer] = []
                for report in reports { answers += await deliver([report]) }
                return answers
            } catch {
                try? await Task.sleep(for: .milliseconds(pauseMs))
                pauseMs = min(pauseMs * 2, 2000)
            }
        }
        return reports.map { _ in .failure(.undelivered) }
    }

}
