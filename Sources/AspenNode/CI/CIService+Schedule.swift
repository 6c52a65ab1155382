import AspenBlob
import AspenCI
import AspenCore
import AspenJobs
import AspenKV
import Foundation

// The scheduler's step for one run: decide the jobs whose needs have ended, submit those that
// run, record those the job system finished, and end the run when every job has.
extension CIService {
    /// Moves run `id` one step along and records what changed (with the commit's statuses) in
    /// one transaction conditioned on the run being unchanged since it was read.
    func advance(_ id: UInt64) async throws {
        guard let (current, revision) = try await run(id) else {
            _ = try await commit([], [.delete(Delete(.key(CIKeys.active(id))))])
            return
        }
        guard !current.state.ended else {
            pipelines.withLock { $0[id] = nil }
            _ = try await commit([Compare(key: CIKeys.run(id), .modRevision(revision))], [.delete(Delete(.key(CIKeys.active(id))))])
            return
        }
        let pipeline = try await storedPipeline(of: id)
        var run = current
        var changed = Set<String>()
        var operations: [TransactionOperation] = []
        var compares = [Compare(key: CIKeys.run(id), .modRevision(revision))]
        if run.state == .queued, !run.cancelRequested {
            guard try await takeGroup(&run, pipeline, &compares, &operations) else { return }
            run.state = .running
            changed.formUnion(run.jobs.map(\.name))
        }
        let now = node.nowMs()
        var ended: [String: AspenCI.JobOutcome] = [:]
        for job in run.jobs { if let outcome = job.state.outcome { ended[job.name] = outcome } }
        for (index, planned) in pipeline.plan.enumerated() where index < run.jobs.count {
            var job = run.jobs[index]
            let definition = pipeline.job(named: planned.jobName)
            switch job.state {
            case .running:
                guard let attempt = job.attempts.last else {
                    job.state = .pending
                    break
                }
                let record: JobRecord
                do {
                    record = try await jobs.jobs.job(attempt.jobID)
                } catch JobError.notFound {
                    // Its record is gone (past the job system's retention): the try is lost.
                    job.state = .failure
                    job.detail = "job \(attempt.jobID) of the job system is gone"
                    job.endedMs = now
                    changed.insert(job.name)
                    break
                }
                // fail_fast: a failed expansion stops its running siblings too.
                let failedSibling =
                    definition?.failFast == true && !planned.matrix.isEmpty
                    ? zip(pipeline.plan, run.jobs).first { $0.0.jobName == planned.jobName && $0.1.state == .failure }?.1.name : nil
                if !record.state.isFinal {
                    if run.cancelRequested || failedSibling != nil, !record.cancelRequested { _ = try? await jobs.jobs.cancel(attempt.jobID) }
                    break
                }
                let result = Self.result(of: record)
                job.attempts[job.attempts.count - 1].exitCode = result.exitCode
                job.attempts[job.attempts.count - 1].endedMs = record.finishedAtMs ?? now
                job.attempts[job.attempts.count - 1].detail = CIWire.message(Self.describe(result))
                if result.succeeded {
                    job.state = .success
                } else if result.cancelled || run.cancelRequested || failedSibling != nil {
                    job.state = .cancelled
                } else if let retry = definition?.retry, job.attempts.count <= retry.retriesMax, !result.timedOut, let code = result.exitCode,
                    retry.onExitCodes.isEmpty || retry.onExitCodes.contains(Int(code))
                {
                    try await submit(&job, index: index, planned, pipeline, run)
                } else {
                    job.state = .failure
                }
                job.detail = CIWire.message(
                    (job.state == .cancelled && failedSibling != nil && !run.cancelRequested ? "fail_fast: '\(failedSibling!)' failed; " : "")
                        + Self.describe(result) + (job.attempts.count > 1 ? " (\(job.attempts.count) tries)" : ""))
                if job.state.ended { job.endedMs = now }
                changed.insert(job.name)
            case .pending:
                if run.cancelRequested {
                    // A try submitted by a pass whose record did not commit (the cancel won the
                    // race) is found by its key and stopped too.
                    if let orphan = try await jobs.jobs.job(idempotencyKey: "ci/\(run.id)/\(index)/\(job.attempts.count + 1)"), !orphan.state.isFinal {
                        _ = try? await jobs.jobs.cancel(orphan.id)
                    }
                    job.state = .cancelled
                    job.detail = "the run was cancelled"
                } else if definition?.failFast == true, !planned.matrix.isEmpty,
                    let failed = zip(pipeline.plan, run.jobs).first(where: { $0.0.jobName == planned.jobName && $0.1.state == .failure })
                {
                    job.state = .cancelled
                    job.detail = "fail_fast: '\(failed.1.name)' failed"
                } else if planned.needs.allSatisfy({ ended[$0] != nil }) {
                    switch pipeline.decide(planned, ended: ended, ref: run.ref, event: run.event) {
                    case .skip(let reason):
                        job.state = .skipped
                        job.detail = reason
                    case .run:
                        if let most = definition?.maxParallel,
                            zip(pipeline.plan, run.jobs).filter({ $0.0.jobName == planned.jobName && $0.1.state == .running }).count >= most
                        {
                            break
                        }
                        try await submit(&job, index: index, planned, pipeline, run)
                        job.startedMs = now
                    }
                } else {
                    break
                }
                if job.state.ended { job.endedMs = now }
                changed.insert(job.name)
            case .success, .failure, .skipped, .cancelled:
                break
            }
            run.jobs[index] = job
            if let outcome = job.state.outcome { ended[job.name] = outcome }
        }
        if run.jobs.allSatisfy({ $0.state.ended }) {
            run.state = Self.state(of: run, pipeline)
            run.endedMs = now
            if run.message.isEmpty || !run.cancelRequested { run.message = Self.summary(run) }
            operations.append(.delete(Delete(.key(CIKeys.active(id)))))
            if let group = run.group {
                let key = CIKeys.group(run.repo, group)
                if let holder = try await read(key), Self.runID(holder.value) == run.id {
                    compares.append(Compare(key: key, .modRevision(holder.modRevision)))
                    operations.append(.delete(Delete(.key(key))))
                }
            }
            changed.insert("")
        }
        guard run != current else { return }
        operations.append(.put(Put(key: CIKeys.run(id), value: run.encoded)))
        operations += statusWrites(run, jobs: changed.subtracting([""]).sorted(), pipeline: run.state != current.state || changed.contains(""))
        if try await commit(compares, operations), run.state.ended {
            pipelines.withLock { $0[id] = nil }
            logger.info("CI run ended", metadata: ["run": "\(id)", "repo": "\(run.repo)", "state": "\(run.state)", "message": "\(run.message)"])
            _ = try? await prune(repo: run.repo)
        }
    }

    /// Run `id`'s pipeline, from the cache or decoded from its stored form (then kept).
    func storedPipeline(of id: UInt64) async throws -> Pipeline {
        if let cached = pipelines.withLock({ $0[id] }) { return cached }
        guard let stored = try await read(CIKeys.pipeline(id)) else { throw CIError.failed("run \(id) has no stored pipeline") }
        let pipeline = try Pipeline(decoding: stored.value, limits: limits)
        pipelines.withLock { cache in
            if cache.count >= limits.ciActiveRunsMax { cache.removeAll() }
            cache[id] = pipeline
        }
        return pipeline
    }

    /// Submits the next try of `job` to the job system; a second submission of the same try
    /// (after a leader change) finds the first job by its idempotency key.
    func submit(_ job: inout CIRunJob, index: Int, _ planned: PlannedJob, _ pipeline: Pipeline, _ run: CIRun) async throws {
        guard let definition = pipeline.job(named: planned.jobName) else { throw CIError.failed("the plan names an unknown job \(planned.jobName)") }
        let number = job.attempts.count + 1
        let resolved: ResolvedJob
        do {
            let hashes = try await fileHashes(for: definition, run: run)
            let context = InterpolationContext(ref: run.ref, sha: run.sha, event: run.event, hashOfPath: { path in
                guard let hash = hashes[path] else { throw PipelineError(.interpolation, "${hash:\(path)}: no such file at \(run.sha.prefix(12))") }
                return hash
            })
            resolved = try pipeline.resolve(planned, in: context, limits: limits)
        } catch let error as PipelineError {
            job.state = .failure
            job.detail = CIWire.message("\(error)")
            return
        }
        var env = resolved.env
        for binding in planned.matrix { env[MatrixAxis.environmentName(binding.axis)] = binding.value }
        let task = CIJobTask(
            run: run.id, repo: run.repo, ref: run.ref, sha: run.sha, event: run.event, job: planned.name, attempt: number, script: resolved.run, env: env,
            timeoutMs: definition.timeoutMs, secrets: run.trusted ? definition.secrets : [], artifacts: definition.artifacts, needs: planned.needs,
            cacheKey: resolved.cacheKey, cachePaths: definition.cache?.paths ?? [])
        var tags: [String: String] = [:]
        for tag in definition.tags {
            let parts = tag.split(separator: "=", maxSplits: 1).map(String.init)
            tags[parts[0]] = parts.count == 2 ? parts[1] : "true"
        }
        let spec = JobSpec(
            type: CIJobTask.jobType, payload: task.encoded, maxAttempts: Self.infrastructureAttempts,
            backoff: JobBackoff.standard, timeoutMs: 0, idempotencyKey: "ci/\(run.id)/\(index)/\(number)", requiredTags: tags)
        let (jobID, created) = try await jobs.jobs.submit(spec, origin: "ci run \(run.id)")
        if created { metrics.jobsSubmitted.add(1, ordering: .relaxed) }
        job.attempts.append(CIAttempt(number: number, jobID: jobID))
        job.state = .running
    }

    /// `${hash:PATH}` of every path `job` names, at the run's commit.
    func fileHashes(for job: Job, run: CIRun) async throws -> [String: String] {
        var paths = Set<String>()
        for text in [job.run] + job.env.values + [job.cache?.key].compactMap({ $0 }) {
            for reference in try Interpolation.references(in: text) {
                if case .hash(let path) = reference { paths.insert(path) }
            }
        }
        guard !paths.isEmpty else { return [:] }
        let (cache, _) = try await forge.prepare(run.repo)
        var hashes: [String: String] = [:]
        for path in paths {
            let blob = try await Git.run(["cat-file", "blob", "\(run.sha):\(path)"], in: cache)
            if blob.status == 0 { hashes[path] = Hex.encode(BLAKE3.hash(blob.output)) }
        }
        return hashes
    }

    /// Takes the run's concurrency group, if its pipeline names one: a run already holding it is
    /// cancelled (`cancel_in_progress`) or waited for. False: the run waits.
    func takeGroup(_ run: inout CIRun, _ pipeline: Pipeline, _ compares: inout [Compare], _ operations: inout [TransactionOperation]) async throws -> Bool {
        let context = InterpolationContext(ref: run.ref, sha: run.sha, event: run.event, hashOfPath: { path in
            throw PipelineError(.interpolation, "${hash:\(path)} is not available in a concurrency group")
        })
        guard let group = try? pipeline.concurrencyGroup(in: context, limits: limits), !group.isEmpty else { return true }
        let key = CIKeys.group(run.repo, group)
        let holder = try await read(key)
        if let holder, let other = Self.runID(holder.value), other != run.id,
            let (held, _) = try await self.run(other), !held.state.ended
        {
            if pipeline.concurrency?.cancelInProgress == true {
                // The newer run supersedes the older, whichever took the group first.
                if other < run.id, !held.cancelRequested {
                    _ = try? await requestCancel(other, reason: "superseded by run \(run.id) (concurrency group \(group))")
                } else if other > run.id {
                    run.cancelRequested = true
                    run.message = "superseded by run \(other) (concurrency group \(group))"
                    return true
                }
            }
            return false
        }
        compares.append(holder.map { Compare(key: key, .modRevision($0.modRevision)) } ?? .absent(key))
        operations.append(.put(Put(key: key, value: Self.runIDValue(run.id))))
        run.group = group
        return true
    }

    /// A run id as the claim, group and sequence keys hold it (a varint), and back.
    static func runIDValue(_ id: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(id)
        return writer.bytes
    }

    static func runID(_ value: [UInt8]) -> UInt64? {
        var reader = ByteReader(value)
        return try? reader.readVarint()
    }

    /// How a finished job-system job ended, as a CI result.
    static func result(of record: JobRecord) -> CIJobResult {
        switch record.state {
        case .succeeded:
            return (try? CIJobResult(decoding: record.result)) ?? CIJobResult(exitCode: nil, detail: "the worker's result could not be read")
        case .cancelled:
            return CIJobResult(exitCode: nil, cancelled: true, detail: "cancelled")
        default:
            return CIJobResult(exitCode: nil, detail: "the job could not run: \(record.lastError ?? "\(record.state)")")
        }
    }

    static func describe(_ result: CIJobResult) -> String {
        let what: String
        if result.cancelled {
            what = "cancelled"
        } else if result.timedOut {
            what = "timed out"
        } else if let code = result.exitCode {
            what = "exit code \(code)"
        } else {
            what = "no exit code"
        }
        let seconds = String(format: "%.1f s", Double(result.runMs) / 1000)
        return result.detail.isEmpty ? "\(what), \(seconds)" : "\(what): \(result.detail)"
    }

    /// A run's end from its jobs': a failure (not allowed to fail) makes it fail, else a
    /// cancellation cancels it; all skipped is skipped.
    static func state(of run: CIRun, _ pipeline: Pipeline) -> CIRunState {
        let failed = zip(pipeline.plan, run.jobs).contains { planned, job in
            job.state == .failure && pipeline.job(named: planned.jobName)?.continueOnError != true
        }
        if failed { return .failure }
        if run.cancelRequested || run.jobs.contains(where: { $0.state == .cancelled }) { return .cancelled }
        if !run.jobs.isEmpty, run.jobs.allSatisfy({ $0.state == .skipped }) { return .skipped }
        return .success
    }

    static func summary(_ run: CIRun) -> String {
        let counts = Dictionary(grouping: run.jobs, by: \.state.description).map { "\($0.value.count) \($0.key)" }.sorted()
        return counts.joined(separator: ", ")
    }

    /// The commit statuses of `jobs` of `run` (and of the whole pipeline when `pipeline`).
    func statusWrites(_ run: CIRun, jobs names: [String], pipeline: Bool = true) -> [TransactionOperation] {
        let now = node.nowMs()
        var writes: [TransactionOperation] = []
        for name in names {
            guard let job = run.job(name) else { continue }
            let status = CommitStatus(context: run.context(job: name), state: CommitStatusState(job.state), description: job.detail, run: run.id, updatedMs: now)
            writes.append(.put(Put(key: CIKeys.status(run.repo, run.sha, status.context), value: status.encoded)))
        }
        if pipeline {
            let status = CommitStatus(context: run.context(), state: CommitStatusState(run.state), description: run.message, run: run.id, updatedMs: now)
            writes.append(.put(Put(key: CIKeys.status(run.repo, run.sha, status.context), value: status.encoded)))
        }
        return writes
    }
}
