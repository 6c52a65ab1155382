import AspenBlob
import AspenCI
import AspenCore
import AspenJobs
import AspenKV
import AspenWorker
import Foundation
import Synchronization

// A worker's side of a CI job: the exact commit checked out with a real `.git`, the script run
// by the job system's shell executor, the log stored as it comes.
extension CIService {
    /// The job handler of type `ci` for this node's worker; `markerPrefix` marks every process
    /// of its jobs as this node's (a restarted node kills what its predecessor left).
    func handler(markerPrefix: String) -> JobHandler {
        let runner = ShellRunner()
        return { [self] record in try await runTry(record, runner: runner, markerPrefix: markerPrefix) }
    }

    func runTry(_ record: JobRecord, runner: ShellRunner, markerPrefix: String) async throws -> [UInt8] {
        let task = try CIJobTask(decoding: record.spec.payload, limits: limits)
        guard let attempt = record.attempt else { throw CIError.failed("job \(record.id) has no attempt") }
        // Secrets first: their values are masked in everything the log stores.
        var secretValues: [String: String] = [:]
        var secretProblem: String?
        if !task.secrets.isEmpty {
            do {
                secretValues = try await self.secretValues(task.repo, names: task.secrets)
            } catch let error as CIError {
                secretProblem = error.description
            }
        }
        let log = CILogWriter(service: self, run: task.run, job: task.job, jobID: record.id, attempt: attempt.number, mask: SecretMask(Array(secretValues.values)))
        await log.begin()
        if let secretProblem {
            await log.append(Array("aspen: \(secretProblem)\n".utf8))
            await log.finish()
            return CIJobResult(exitCode: nil, detail: secretProblem).encoded
        }
        // An untrusted job (a patch: anyone's code) runs as an unprivileged user in a checkout of
        // its own outside the node's data directory, when the node can arrange it (it runs as root).
        let isolated = !task.event.isTrusted && getuid() == 0
        guard !isolated || untrustedRoot != nil else {
            await log.append(Array("aspen: this node has no private directory for untrusted checkouts\n".utf8))
            await log.finish()
            throw CIError.failed("no private directory for untrusted checkouts on node \(node.id.rawValue)")
        }
        let directory = ((isolated ? untrustedRoot! : workRoot) as NSString).appendingPathComponent("\(task.run)-\(record.id)-\(attempt.number)")
        defer {
            if isolated {
                // Emptied as its user first: root walking a tree that user can still change could
                // be sent elsewhere by a link swapped in meanwhile. Then root removes what is
                // left only if it is empty.
                Task {
                    _ = try? await Git.runProgram("setpriv", ["--reuid=\(Self.untrustedID)", "--regid=\(Self.untrustedID)", "--clear-groups", "--", "rm", "-rf", "--one-file-system", "--", directory])
                    rmdir(directory)
                }
            } else {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try await checkout(task, into: directory, isolated: isolated)
            await log.append(Array("aspen: checked out \(task.sha) in \(ForgeService.milliseconds(clock.now - started)) ms on node \(node.id.rawValue)\n".utf8))
        } catch {
            // The commit could not be had here: another worker may do better.
            await log.append(Array("aspen: checkout of \(task.sha) failed: \(error)\n".utf8))
            await log.finish()
            throw error
        }
        // What the jobs it needs kept, and its cache: a failure here is the node's, not the job's.
        let cacheHit: Bool
        do {
            try await restoreArtifacts(task, into: directory, log: log)
            // A patch's run shares no cache with trusted runs: it could poison one, and tar, run as
            // root, would follow the links its tree holds.
            if task.event.isTrusted || task.cacheKey == nil {
                cacheHit = try await restoreCache(task, into: directory, log: log)
            } else {
                cacheHit = false
                await log.append(Array("aspen: untrusted run: caches are neither restored nor saved\n".utf8))
            }
        } catch {
            await log.append(Array("aspen: restoring artifacts or the cache failed: \(error)\n".utf8))
            await log.finish()
            throw error
        }
        if isolated {
            guard try await Git.runProgram("chown", ["-R", "\(Self.untrustedID):\(Self.untrustedID)", directory]) == 0 else {
                await log.finish()
                throw CIError.failed("the untrusted job's checkout could not be given to uid \(Self.untrustedID)")
            }
            await log.append(
                Array("aspen: untrusted run: the job runs as uid \(Self.untrustedID), without secrets, seeing no other user's processes, \(untrustedNetwork ? "on the host's network" : "with no network but its own loopback")\n".utf8))
        } else if !task.event.isTrusted {
            await log.append(Array("aspen: untrusted run: this node is not root, so the job runs as the node's user (no secrets)\n".utf8))
        }
        var environment = JobEnvironment.make(
            from: ProcessInfo.processInfo.environment, own: task.env, secrets: secretValues,
            run: JobEnvironment.Run(
                mode: "cluster", repo: task.repo, run: task.run, ref: task.ref, sha: task.sha, event: task.event, job: task.job, attempt: task.attempt))
        if isolated { environment["HOME"] = directory }
        let command = ShellCommand(
            arguments: ["bash", "-eo", "pipefail", "-c", task.script], environment: environment, workingDirectory: directory,
            timeoutMs: task.timeoutMs, outputBytesMax: limits.ciLogBytesPerJobMax, network: isolated && !untrustedNetwork ? .loopbackOnly : .host,
            hidesOthersProcesses: isolated, user: isolated ? ShellUser(uid: UInt32(Self.untrustedID), gid: UInt32(Self.untrustedID)) : nil)
        let outcome: ShellOutcome
        do {
            let marker = "\(markerPrefix)ci-\(record.id)-\(String(attempt.token, radix: 16))"
            let work = Task { try await runner.run(command, marker: marker) { chunk in await log.append(chunk.bytes) } }
            // A cancelled run is seen here within `cancelCheckMs` (the job system's own cancel
            // reaches a worker only at its next lease renewal).
            let watch = Task { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(Self.cancelCheckMs))
                    let runCancelled = (try? await self.run(task.run))?.run.cancelRequested == true
                    // The job itself cancelled (fail_fast, an operator) shows in its record here too.
                    let jobCancelled = runCancelled ? false : (try? await jobs.jobs.job(record.id))?.cancelRequested == true
                    if runCancelled || jobCancelled {
                        work.cancel()
                        return
                    }
                }
            }
            defer { watch.cancel() }
            outcome = try await withTaskCancellationHandler { try await work.value } onCancel: { work.cancel() }
        } catch is CancellationError {
            await log.finish()
            return CIJobResult(exitCode: nil, cancelled: true, detail: "cancelled before it started").encoded
        } catch {
            await log.append(Array("aspen: the job could not start: \(error)\n".utf8))
            await log.finish()
            return CIJobResult(exitCode: nil, runMs: ForgeService.milliseconds(clock.now - started), detail: "it could not start: \(error)").encoded
        }
        if outcome.truncated {
            await log.append(Array("\naspen: output past ciLogBytesPerJobMax (\(limits.ciLogBytesPerJobMax) bytes) was dropped\n".utf8))
        }
        if outcome.timedOut {
            await log.append(Array("\naspen: timed out after \(JobDuration.format(ms: task.timeoutMs)); every process of the job was stopped\n".utf8))
        }
        // A signal is reported as the shell does (128 + N), so `retry.on_exit: [137]` sees a SIGKILL.
        let exitCode: Int32? =
            switch outcome.termination {
            case .exited(let code): code
            case .signaled(let signal): outcome.timedOut || outcome.cancelled ? nil : 128 + signal
            }
        var kept: String?
        if isolated, outcome.succeeded, !task.artifacts.isEmpty {
            // Read as root from a tree other untrusted jobs (the same user) can change, a kept
            // file could be swapped for a link to the node's own: a patch's run keeps none.
            await log.append(Array("aspen: untrusted run: artifacts are not kept\n".utf8))
        } else if outcome.succeeded {
            do {
                kept = try await keepArtifacts(task, from: directory, log: log)
                if kept == nil, !cacheHit, task.event.isTrusted { try await saveCache(task, from: directory, log: log) }
            } catch {
                kept = "artifacts or the cache could not be stored: \(error)"
            }
            if let kept {
                await log.append(Array("aspen: \(kept)\n".utf8))
            }
        }
        await log.finish()
        if let kept { return CIJobResult(exitCode: nil, runMs: outcome.runMs, detail: "the script succeeded, but \(kept)").encoded }
        let detail = outcome.timedOut ? "after \(JobDuration.format(ms: task.timeoutMs))" : exitCode == nil ? "\(outcome.termination)" : ""
        return CIJobResult(
            exitCode: exitCode, timedOut: outcome.timedOut, cancelled: outcome.cancelled, outputBytes: Int64(outcome.outputBytes), runMs: outcome.runMs,
            detail: detail
        ).encoded
    }

    /// A clone of the node's forge cache sharing its objects (`SharedClone`), at the commit,
    /// detached: in the job `git rev-parse HEAD` is the commit and the tree is clean.
    /// `isolated` (an untrusted job): the objects it needs are then copied in and the link to the
    /// node's cache removed, so that the job reads nothing of the node's.
    func checkout(_ task: CIJobTask, into directory: String, isolated: Bool = false) async throws {
        let (cache, state) = try await forge.prepare(task.repo)
        try? FileManager.default.removeItem(atPath: directory)
        try SharedClone.create(at: directory, cache: cache, refs: state.refs, defaultBranch: state.record.defaultBranch)
        try await Git.check(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", task.sha], in: directory)
        if isolated {
            // Without -l, repack copies what the clone borrowed (reachable from HEAD and the refs).
            try await Git.check(["repack", "-a", "-d", "-q"], in: directory)
            try FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(".git/objects/info/alternates"))
        }
    }

    // MARK: Logs

    /// A page of a job's log: `offset` onwards of one try, waiting up to `waitMs` for bytes.
    func logPage(_ run: CIRun, job: String, attempt: Int, offset: Int64, waitMs: Int64) async throws -> CILogPage {
        let deadline = ContinuousClock.now + .milliseconds(waitMs)
        while true {
            let tries = try await scan(CIKeys.tries(run.id, job)).compactMap { kv -> (jobID: UInt64, number: Int, record: CILogTry)? in
                guard let numbers = CIKeys.integers(in: CIKeys.tries(run.id, job), kv.key), numbers.count == 2, let record = try? CILogTry(decoding: kv.value)
                else { return nil }
                return (UInt64(numbers[0]), Int(numbers[1]), record)
            }
            let current = try await self.run(run.id)?.run ?? run
            let jobEnded = current.job(job)?.state.ended ?? true
            // A try has ended when it says so, or another followed it, or its job ended (its
            // worker died); the last try's log is complete only once the job has ended (a
            // retry may follow it).
            var attempts = tries.enumerated().map { index, found in
                CILogAttempt(
                    jobID: found.jobID, number: found.number, bytes: found.record.bytes,
                    ended: index < tries.count - 1 || jobEnded)
            }
            if tries.isEmpty {
                if jobEnded || ContinuousClock.now >= deadline { return CILogPage(attempts: [], attempt: 0, offset: offset, bytes: [], complete: jobEnded) }
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            guard attempt <= tries.count else { throw CIError.notFound("job '\(job)' of run \(run.id) has \(tries.count) tries, not \(attempt)") }
            let index = attempt == 0 ? tries.count - 1 : attempt - 1
            let chosen = tries[index]
            let chunks = try await storedChunks(run.id, job, jobID: chosen.jobID, attempt: chosen.number, skippingGaps: attempts[index].ended)
            let available = chunks.reduce(Int64(0)) { $0 + Int64($1.size) }
            if !chosen.record.ended { attempts[index].bytes = available }
            if offset < available {
                var bytes: [UInt8] = []
                var start: Int64 = 0
                for chunk in chunks {
                    let end = start + Int64(chunk.size)
                    defer { start = end }
                    guard end > offset + Int64(bytes.count) else { continue }
                    guard bytes.count < CILogPage.bytesMax else { break }
                    let content: [UInt8]
                    switch chunk {
                    case .blob(let reference): content = try await blobs.bytes(reference.hash)
                    case .inline(let inline): content = inline
                    }
                    let from = Int(max(0, offset + Int64(bytes.count) - start))
                    bytes += content[min(from, content.count)...].prefix(CILogPage.bytesMax - bytes.count)
                }
                let complete = attempts[index].ended && offset + Int64(bytes.count) >= available
                return CILogPage(attempts: attempts, attempt: index + 1, offset: offset, bytes: bytes, complete: complete)
            }
            if attempts[index].ended || ContinuousClock.now >= deadline {
                return CILogPage(attempts: attempts, attempt: index + 1, offset: offset, bytes: [], complete: attempts[index].ended)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The chunks of one try's log stored so far, in order, up to the first one missing (a
    /// later one may have landed first).
    /// Once the try has ended (`skippingGaps`), a chunk that was never stored no longer hides
    /// the ones after it.
    func storedChunks(_ run: UInt64, _ job: String, jobID: UInt64, attempt: Int, skippingGaps: Bool = false) async throws -> [CILogChunk] {
        let subspace = CIKeys.chunks(run, job, jobID: jobID, attempt: attempt)
        var chunks: [CILogChunk] = []
        var next: Int64 = 0
        for kv in try await scan(subspace) {
            guard let seq = CIKeys.integers(in: subspace, kv.key)?.first, let chunk = CILogChunk(decoding: kv.value) else { continue }
            if seq != next, !skippingGaps { break }
            chunks.append(chunk)
            next = seq + 1
        }
        return chunks
    }
}

/// One try's log on its way to the blob store: output gathers until a chunk is full or has
/// waited `logFlushMs`, then goes to the blob store, its reference to the key-value store
/// (two writes per chunk however much a job prints, so that a noisy job leaves the key-value
/// write path alone; a chunk of at most `CILogChunk.inlineBytesMax` bytes goes into its record
/// instead, one write). Chunks are stored one after another, in order.
actor CILogWriter {
    let service: CIService
    let run: UInt64
    let job: String
    let jobID: UInt64
    let attempt: Int
    private var buffer: [UInt8] = []
    private var firstBufferedAt: ContinuousClock.Instant?
    private var seq = 0
    private var total: Int64 = 0
    /// Bytes of this try kept in key-value records (`CILogChunk.inline`).
    private var inlined = 0
    private var storing: Task<Void, Never>?
    private var ticker: Task<Void, Never>?
    private var mask: SecretMask

    init(service: CIService, run: UInt64, job: String, jobID: UInt64, attempt: Int, mask: SecretMask = SecretMask([])) {
        self.mask = mask
        self.service = service
        self.run = run
        self.job = job
        self.jobID = jobID
        self.attempt = attempt
    }

    /// Records the try (so that `ci logs` lists it before it prints anything) and starts the
    /// timer that stores what waited long enough. The record is written while the job goes on
    /// (its checkout); every chunk, and the end, is stored after it.
    func begin() {
        let (service, run, job, jobID, attempt) = (service, run, job, jobID, attempt)
        let record = CILogTry(node: service.node.id.rawValue, ended: false, bytes: 0)
        storing = Task {
            await Self.store([], inline: true, service: service, run: run, job: job, jobID: jobID, attempt: attempt, seq: 0, record: record)
        }
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(CIService.logFlushMs / 2))
                await self?.tick()
            }
        }
    }

    func append(_ raw: [UInt8]) async {
        let bytes = mask.mask(raw)
        guard !bytes.isEmpty else { return }
        if buffer.isEmpty { firstBufferedAt = .now }
        buffer += bytes
        if buffer.count >= CIService.logChunkBytes { await ship() }
    }

    private func tick() async {
        guard let first = firstBufferedAt, ContinuousClock.now - first >= .milliseconds(CIService.logFlushMs) else { return }
        await ship()
    }

    /// Hands the buffer to the store chain; waits while more than one chunk is in flight (a
    /// job printing faster than the blob store takes it slows down, it does not fill memory).
    /// `last`: the try has ended, and the record saying so goes with this chunk's reference.
    private func ship(last: Bool = false) async {
        guard !buffer.isEmpty || last else { return }
        let bytes = buffer
        buffer = []
        firstBufferedAt = nil
        let number = seq
        if !bytes.isEmpty { seq += 1 }
        total += Int64(bytes.count)
        let previous = storing
        let (service, run, job, jobID, attempt) = (service, run, job, jobID, attempt)
        let record = last ? CILogTry(node: service.node.id.rawValue, ended: true, bytes: total) : nil
        let inline = bytes.count <= CILogChunk.inlineBytesMax && inlined + bytes.count <= CILogChunk.inlineBytesPerTryMax
        if inline { inlined += bytes.count }
        // Not the caller's task: a cancelled job's last output is stored all the same.
        let next = Task {
            await previous?.value
            await Self.store(bytes, inline: inline, service: service, run: run, job: job, jobID: jobID, attempt: attempt, seq: number, record: record)
        }
        storing = next
        if !last { await previous?.value }
    }

    /// Stores what is left and marks the try ended with its log's length, in one write.
    ///
    /// A stopping node (the calling task cancelled) waits for that at most `stopWaitMs`: cut off
    /// from the cluster, each write would wait for a leader and then retry, and the node would
    /// not stop for minutes. The try then reads as ended once its job has (`logPage`), and the
    /// output of a last chunk not stored is lost with the node's stop.
    func finish() async {
        ticker?.cancel()
        let rest = mask.mask([], final: true)
        if !rest.isEmpty {
            if buffer.isEmpty { firstBufferedAt = .now }
            buffer += rest
        }
        await ship(last: true)
        guard let chain = storing else { return }
        guard Task.isCancelled else { return await chain.value }
        let stored = await Self.value(of: chain, waitingAtMostMs: Self.stopWaitMs)
        if !stored { service.logger.warning("the end of a CI try's log was not stored before the node stopped", metadata: ["run": "\(run)", "job": "\(job)"]) }
    }

    /// How long a stopping node waits for a try's last log chunk to be stored.
    static let stopWaitMs: Int64 = 5000

    /// Waits for `task` at most `ms` (a cancelled caller too: the timer is a task of its own,
    /// which the caller's cancellation does not cut short); says whether it ended in time.
    private static func value(of task: Task<Void, Never>, waitingAtMostMs ms: Int64) async -> Bool {
        final class First: Sendable {
            let continuation = Mutex<CheckedContinuation<Bool, Never>?>(nil)
            func resume(_ value: Bool) { continuation.withLock { $0.take() }?.resume(returning: value) }
        }
        let first = First()
        return await withCheckedContinuation { continuation in
            first.continuation.withLock { $0 = continuation }
            Task {
                await task.value
                first.resume(true)
            }
            Task {
                try? await Task.sleep(for: .milliseconds(ms))
                first.resume(false)
            }
        }
    }

    /// Stores one chunk (none if `bytes` is empty; in its record if `inline`, else in the blob
    /// store) and its reference, with the try's record (its start or its end) when there is one,
    /// in one write; tried a few times, then given up (said in the node's log).
    private static func store(
        _ bytes: [UInt8], inline: Bool, service: CIService, run: UInt64, job: String, jobID: UInt64, attempt: Int, seq: Int, record: CILogTry?
    ) async {
        for round in 0..<5 {
            do {
                var puts: [Put] = []
                if !bytes.isEmpty {
                    let chunk: CILogChunk
                    if inline {
                        chunk = .inline(bytes)
                    } else {
                        // Two copies: a log outlives one node, and a node down does not stop a job's log.
                        let hash = try await service.blobs.add(bytes, tag: "aspen/ci/log/\(run)/\(jobID)/\(attempt)/\(seq)", tagTtlMs: 3_600_000, replicas: 2)
                        chunk = .blob(BlobReference(hash: hash, size: UInt64(bytes.count)))
                    }
                    puts.append(Put(key: CIKeys.chunk(run, job, jobID: jobID, attempt: attempt, seq: seq), value: chunk.encoded))
                }
                if let record { puts.append(Put(key: CIKeys.tryKey(run, job, jobID: jobID, attempt: attempt), value: record.encoded)) }
                if puts.count == 1 {
                    _ = try await service.node.write(.put(puts[0]), forwarding: true)
                } else if !puts.isEmpty {
                    _ = try await service.node.write(.transaction(Transaction(compares: [], success: puts.map { .put($0) })), forwarding: true)
                }
                return
            } catch {
                service.logger.info("storing a CI log chunk or try record failed; trying again", metadata: ["run": "\(run)", "job": "\(job)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200 << round))
            }
        }
        service.logger.warning(
            "a CI log chunk or try record was lost", metadata: ["run": "\(run)", "job": "\(job)", "seq": "\(seq)", "bytes": "\(bytes.count)", "record": "\(record != nil)"])
    }
}
