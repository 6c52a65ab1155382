import AspenBlob
import AspenCI
import AspenCore
import AspenForge
import AspenKV
import Foundation

// Runs come into being here: from a push event in the forge's outbox, from `aspen ci run`, and
// from `aspen ci rerun`. Each is created by one transaction that also takes what caused it (the
// outbox entry, the request id), so that nothing makes two runs.
extension CIService {
    /// A run to create, with what it needs stored beside it.
    struct NewRun {
        var run: CIRun
        /// The normalized pipeline (nil for a run in error).
        var pipeline: [UInt8]?
        /// The key that says this run exists (a pushed commit's, a request's).
        var claim: [UInt8]?
    }

    /// Outbox entries taken per pass.
    static let pushesPerPass = 16

    /// Takes the forge's push events in order: each becomes the runs it starts (maybe none) in
    /// the transaction that removes it.
    func takePushes() async throws {
        for entry in try await scan(ForgeKeys.outbox, limit: Self.pushesPerPass) {
            let taken = [Compare(key: entry.key, .modRevision(entry.modRevision))]
            let remove: [TransactionOperation] = [.delete(Delete(.key(entry.key)))]
            guard let event = try? PushEvent(decoding: entry.value, limits: limits) else {
                logger.warning("a push event CI cannot read was dropped", metadata: ["key": "\(Hex.encode(entry.key))"])
                _ = try await commit(taken, remove)
                continue
            }
            do {
                let runs = try await plan(event)
                // One run per transaction (a push of many tags would not fit one), the event
                // removed with the last: a run already made is found by its claim if this is
                // taken again.
                for (index, run) in runs.enumerated() where index < runs.count - 1 { try await create([run]) }
                try await create(runs.last.map { [$0] } ?? [], compares: taken, operations: remove)
                metrics.pushesTaken.add(1, ordering: .relaxed)
                intakeFailures.withLock { _ = $0.removeValue(forKey: entry.key) }
            } catch ForgeError.notFound {
                // The repository is gone: nothing to run.
                _ = try await commit(taken, remove)
            } catch {
                let tries = intakeFailures.withLock { failures -> Int in
                    failures[entry.key, default: 0] += 1
                    return failures[entry.key]!
                }
                guard tries >= Self.intakeTriesMax else { throw error }
                // Said, not dropped in silence: a run in error per ref, then the event goes.
                logger.error("a push event could not become runs", metadata: ["repo": "\(event.repo)", "error": "\(error)"])
                let failed = event.record.updates.filter { !ForgeNames.isZero($0.new) }.map { update in
                    NewRun(
                        run: CIRun(
                            id: 0, repo: event.repo, ref: update.name, sha: update.new, event: update.name.hasPrefix("refs/for/") ? .patch : .push,
                            creator: event.record.pusher, createdMs: node.nowMs(), endedMs: node.nowMs(), state: .error,
                            message: CIWire.message("the run could not be created: \(error)")),
                        pipeline: nil, claim: CIKeys.idempotency(event.repo, ref: update.name, sha: update.new, pipeline: CIRun.defaultPipeline))
                }
                for run in failed { try await create([run]) }
                _ = try await commit(taken, remove)
                intakeFailures.withLock { _ = $0.removeValue(forKey: entry.key) }
            }
        }
    }

    /// The runs a push starts: one per updated ref whose commit has a pipeline that the push
    /// triggers (a deleted ref, a commit asking `[skip ci]`, an untriggered ref: none).
    func plan(_ event: PushEvent) async throws -> [NewRun] {
        let updates = event.record.updates.filter { !ForgeNames.isZero($0.new) }
        guard !updates.isEmpty else { return [] }
        let (path, _) = try await forge.prepare(event.repo)
        var runs: [NewRun] = []
        for update in updates {
            let kind: TriggerKind = update.name.hasPrefix("refs/for/") ? .patch : .push
            let changed = try await changedPaths(update, kind: kind, cache: path)
            if let run = try await newRun(
                repo: event.repo, ref: update.name, sha: update.new, kind: kind, changed: changed, creator: event.record.pusher, cache: path)
            {
                runs.append(run)
            }
        }
        return runs
    }

    /// The run of `sha` for `kind`, read from the commit's own pipeline file; nil when the
    /// commit has none, asks to skip CI, or the event does not trigger it.
    func newRun(
        repo: String, ref: String, sha: String, kind: TriggerKind, changed: [String], creator: String, cache: String
    ) async throws -> NewRun? {
        let file = "\(sha):\(CIRun.pipelinePath)"
        let size = try await Git.run(["cat-file", "-s", file], in: cache)
        guard size.status == 0 else { return nil }
        var run = CIRun(id: 0, repo: repo, ref: ref, sha: sha, event: kind, creator: creator, createdMs: node.nowMs())
        let claim = kind == .manual ? nil : CIKeys.idempotency(repo, ref: ref, sha: sha, pipeline: run.pipeline)
        if let bytes = Int(size.text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes > limits.ciPipelineFileBytesMax {
            run.state = .error
            run.message = "\(CIRun.pipelinePath) is \(bytes) bytes, over ciPipelineFileBytesMax (\(limits.ciPipelineFileBytesMax))"
            return NewRun(run: run, pipeline: nil, claim: claim)
        }
        let message = try await Git.check(["log", "-1", "--format=%B", sha], in: cache).text
        if kind != .manual, CommitMessage.requestsSkippingCI(message) { return nil }
        let source = try await Git.check(["cat-file", "blob", file], in: cache).output
        let pipeline: Pipeline
        do throws(PipelineError) {
            pipeline = try Pipeline(yaml: source, limits: limits)
        } catch {
            run.state = .error
            run.message = CIWire.message(error.line > 0 ? "ci.yml:\(error.line):\(error.column): \(error.message)" : "ci.yml: \(error.message)")
            return NewRun(run: run, pipeline: nil, claim: claim)
        }
        let encoded = pipeline.encoded()
        guard encoded.count <= limits.valueBytesMax else {
            run.state = .error
            run.message = "the pipeline's stored form of \(encoded.count) bytes exceeds valueBytesMax (\(limits.valueBytesMax)): make it smaller"
            return NewRun(run: run, pipeline: nil, claim: claim)
        }
        run.jobs = pipeline.plan.map { CIRunJob(name: $0.name) }
        switch pipeline.decide(TriggerEvent(kind: kind, ref: ref, changedPaths: changed), limits: limits) {
        case .notTriggered:
            return nil
        case .skipAll(let reason):
            // Required checks see `skipped`, not a status that never comes.
            run.state = .skipped
            run.message = reason
            run.endedMs = run.createdMs
            for index in run.jobs.indices {
                run.jobs[index].state = .skipped
                run.jobs[index].detail = reason
            }
        case .run:
            break
        }
        return NewRun(run: run, pipeline: encoded, claim: claim)
    }

    /// The paths a push changed, for the path filters: against the old commit, or for a new
    /// branch or a patch, against where it left its target; empty (no filtering) when unknown or
    /// past `ciChangedPathsMax`.
    func changedPaths(_ update: RefUpdate, kind: TriggerKind, cache: String) async throws -> [String] {
        var base: String?
        if !ForgeNames.isZero(update.old) {
            base = update.old
        } else if kind == .patch {
            let target = "refs/heads/" + String(update.name.dropFirst("refs/for/".count).split(separator: "%").first ?? "")
            let found = try await Git.run(["merge-base", target, update.new], in: cache)
            if found.status == 0 { base = found.text.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        guard let base else { return [] }
        let diff = try await Git.run(["diff", "--name-only", "-z", "--no-renames", base, update.new], in: cache)
        guard diff.status == 0 else { return [] }
        let paths = diff.output.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return paths.count <= limits.ciChangedPathsMax ? paths : []
    }

    /// Creates `runs` (ids from the sequence) in one transaction with `compares` and
    /// `operations`. A run whose claim is already taken is not made again: the existing run is
    /// returned in its place. Returns the runs as stored.
    @discardableResult
    func create(_ runs: [NewRun], compares: [Compare] = [], operations: [TransactionOperation] = []) async throws -> [CIRun] {
        var runs = runs
        try await holdToActiveLimits(&runs)
        for _ in 0..<8 {
            var existing: [Int: CIRun] = [:]
            for (index, new) in runs.enumerated() {
                guard let claim = new.claim, let kv = try await read(claim, consistency: .linearizable) else { continue }
                if let id = Self.runID(kv.value), let found = try await run(id, consistency: .linearizable) { existing[index] = found.run }
            }
            let sequence = try await read(CIKeys.sequence, consistency: .linearizable)
            var next = sequence.flatMap { Self.runID($0.value) } ?? 0
            var all = compares
            var writes = operations
            all.append(sequence.map { Compare(key: CIKeys.sequence, .modRevision($0.modRevision)) } ?? .absent(CIKeys.sequence))
            var made: [CIRun] = []
            for (index, new) in runs.enumerated() {
                if let found = existing[index] {
                    made.append(found)
                    continue
                }
                next += 1
                var run = new.run
                run.id = next
                made.append(run)
                if let claim = new.claim {
                    all.append(.absent(claim))
                    writes.append(.put(Put(key: claim, value: Self.runIDValue(run.id))))
                }
                writes.append(.put(Put(key: CIKeys.run(run.id), value: run.encoded)))
                writes.append(.put(Put(key: CIKeys.repoRun(run.repo, run.id), value: [])))
                if let pipeline = new.pipeline { writes.append(.put(Put(key: CIKeys.pipeline(run.id), value: pipeline))) }
                if run.state.ended {
                    writes += statusWrites(run, jobs: run.jobs.map(\.name))
                } else {
                    writes.append(.put(Put(key: CIKeys.active(run.id), value: Array(run.repo.utf8))))
                }
            }
            writes.append(.put(Put(key: CIKeys.sequence, value: Self.runIDValue(next))))
            if try await commit(all, writes) {
                metrics.runsCreated.add(made.count - existing.count, ordering: .relaxed)
                for run in made where existing.values.allSatisfy({ $0.id != run.id }) {
                    logger.info("CI run created", metadata: ["run": "\(run.id)", "repo": "\(run.repo)", "ref": "\(run.ref)", "sha": "\(run.sha.prefix(12))", "state": "\(run.state)"])
                }
                return made
            }
            // Another run took the sequence, or what caused these runs was taken: look again.
            if !compares.isEmpty {
                var stillThere = true
                for compare in compares {
                    if try await read(compare.key, consistency: .linearizable) == nil { stillThere = false }
                }
                if !stillThere { return [] }
            }
        }
        throw CIError.unavailable("runs could not be created: the run sequence kept changing")
    }

    /// A run past `ciActiveRunsPerRepoMax` or `ciActiveRunsMax` is made in `error`, naming the
    /// bound (a push is never dropped in silence); a manual run or rerun is refused instead.
    func holdToActiveLimits(_ runs: inout [NewRun]) async throws {
        guard runs.contains(where: { !$0.run.state.ended }) else { return }
        let active = try await scan(CIKeys.active)
        var perRepo: [String: Int] = [:]
        for kv in active { perRepo[String(decoding: kv.value, as: UTF8.self), default: 0] += 1 }
        var total = active.count
        for index in runs.indices where !runs[index].run.state.ended {
            let repo = runs[index].run.repo
            let problem: String? =
                perRepo[repo, default: 0] >= limits.ciActiveRunsPerRepoMax
                ? "\(repo) has \(perRepo[repo, default: 0]) runs not yet ended, at ciActiveRunsPerRepoMax (\(limits.ciActiveRunsPerRepoMax))"
                : total >= limits.ciActiveRunsMax ? "the cluster has \(total) runs not yet ended, at ciActiveRunsMax (\(limits.ciActiveRunsMax))" : nil
            if let problem {
                guard runs[index].claim.map({ !$0.starts(with: CIKeys.space.pack(["request"])) }) ?? false else { throw CIError.unavailable(problem) }
                runs[index].run.state = .error
                runs[index].run.message = problem
                runs[index].run.endedMs = runs[index].run.createdMs
                runs[index].run.jobs = []
                runs[index].pipeline = nil
                continue
            }
            perRepo[repo, default: 0] += 1
            total += 1
        }
    }

    /// `aspen ci run REPO --ref REF`: a manual run of the ref's commit. The request id makes a
    /// call sent again find the run its first sending made.
    func startManual(_ repo: String, ref: String, request: String, creator: String) async throws -> CIRun {
        try ForgeNames.validate(repo: repo, limits: limits)
        try ForgeNames.validate(ref: ref, limits: limits)
        let requestKey = CIKeys.request(repo, request)
        if let kv = try await read(requestKey, consistency: .linearizable) {
            if let id = Self.runID(kv.value), let found = try await run(id) { return found.run }
        }
        let (cache, _) = try await forge.prepare(repo)
        let state = try await forge.state(repo)
        guard let sha = state.refs[ref] else { throw CIError.notFound("\(repo) has no ref \(ref)") }
        guard var new = try await newRun(repo: repo, ref: ref, sha: sha, kind: .manual, changed: [], creator: creator, cache: cache) else {
            throw CIError.badInput("\(ref) at \(sha.prefix(12)) has no \(CIRun.pipelinePath) with a manual trigger")
        }
        new.claim = requestKey
        guard let made = try await create([new]).first else { throw CIError.failed("the run was not created") }
        return made
    }

    /// A new run of `run`'s commit and stored pipeline; with `failedOnly`, the jobs that
    /// succeeded keep their result and only the others (and what needs them) run again.
    func rerun(_ run: CIRun, failedOnly: Bool, creator: String) async throws -> CIRun {
        guard run.state.ended else { throw CIError.conflict("run \(run.id) is still \(run.state): cancel it or wait for it to end") }
        guard let stored = try await read(CIKeys.pipeline(run.id), consistency: .linearizable) else {
            throw CIError.conflict("run \(run.id) has no pipeline to run again (\(run.message))")
        }
        let pipeline = try Pipeline(decoding: stored.value, limits: limits)
        var again = CIRun(id: 0, repo: run.repo, ref: run.ref, sha: run.sha, event: run.event, creator: creator, createdMs: node.nowMs(), rerunOf: run.id)
        again.jobs = pipeline.plan.map { CIRunJob(name: $0.name) }
        if failedOnly {
            // A job is kept when it and everything it needs succeeded.
            var kept = Set<String>()
            for planned in pipeline.plan where run.job(planned.name)?.state == .success && planned.needs.allSatisfy(kept.contains) {
                kept.insert(planned.name)
            }
            for index in again.jobs.indices where kept.contains(again.jobs[index].name) {
                again.jobs[index].state = .success
                again.jobs[index].detail = "succeeded in run \(run.id)"
            }
        }
        guard let made = try await create([NewRun(run: again, pipeline: stored.value, claim: nil)]).first else { throw CIError.failed("the run was not created") }
        return made
    }
}
