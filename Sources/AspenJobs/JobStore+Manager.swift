import AspenCore
import AspenKV
import AspenLayer

/// What one pass of the job manager did.
public struct JobTick: Sendable, Equatable {
    /// Attempts whose lease ran out: re-queued, dead or cancelled.
    public var expired = 0
    /// Timers that came due: their jobs are ready now.
    public var promoted = 0
    /// Waiting jobs whose dependencies settled: ready, or cancelled.
    public var resolved = 0
    /// Jobs submitted by schedules' ticks.
    public var fired = 0
    /// Moves of sagas: a step's or a compensation's job submitted or met done.
    public var sagaMoves = 0
    /// Finished jobs past the retention, removed with everything they kept.
    public var purged = 0
    /// Jobs made by hooks for new events.
    public var hookJobs = 0
    /// The earliest lease expiry or timer still ahead (nil: none), so the manager can sleep until then.
    public var nextDueMs: Int64?

    public init() {}
}

extension JobStore {
    /// Work a pass does at most per kind, so one pass stays short however much is due.
    static let tickBatch = 256

    /// One pass of the job manager: expires attempts whose lease ran out on this clock, makes
    /// due timers ready, settles jobs waiting on dependencies, fires schedules' due ticks and moves sagas on. It runs on the leader only,
    /// but nothing it does depends on that for safety: every change is conditioned on the job's
    /// record, so a pass racing another (an old leader's) or a worker changes each job once.
    public func tick() async throws -> JobTick {
        var tick = JobTick()
        let now = nowMs()
        let (leases, nextExpiry) = try await due("x", through: now)
        for id in leases {
            if try await expire(id, now: now) { tick.expired += 1 }
        }
        let (timers, nextTimer) = try await due("t", through: now)
        for id in timers {
            let promoted = try await update(id) { record in
                guard record.state == .scheduled, record.readyAtMs <= now else { return nil }
                var next = record
                next.state = .pending
                return (next, JobHistoryEntry(atMs: now, state: .pending, message: "due"))
            }
            if promoted.state == .pending { tick.promoted += 1 }
        }
        let waiting = space.subspace(["w"])
        let page = try await store.scan(
            .range(start: waiting.range.start, end: waiting.range.end), limit: Self.tickBatch, keysOnly: true, consistency: .stale)
        for kv in page.kvs {
            guard case .int(let id)? = try waiting.unpack(kv.key).elements.first else { continue }
            if try await settle(UInt64(id), now: now) { tick.resolved += 1 }
        }
        let (fired, nextTick) = try await fireSchedules(now: now)
        tick.fired = fired
        tick.sagaMoves = try await advanceSagas(now: now)
        tick.purged = try await purge(finishedBefore: now - retentionMs)
        tick.hookJobs = try await runHooks()
        tick.nextDueMs = [nextExpiry, nextTimer, nextTick].compactMap { $0 }.min()
        return tick
    }

    /// The jobs of a time index (`x` leases, `t` timers) due by `now`, earliest first (at most a
    /// batch), and the first time after `now` one comes due.
    ///
    /// The indexes are read from this node's applied state (the leader's, where this runs): no
    /// round to the followers per pass. Every change is conditioned on the job's record, read
    /// afresh, so an entry already gone or not yet seen changes nothing but the next pass.
    func due(_ index: TupleElement, through now: Int64) async throws -> (ids: [UInt64], next: Int64?) {
        let entries = space.subspace([index])
        let page = try await store.scan(
            .range(start: entries.range.start, end: entries.range.end), limit: Self.tickBatch + 1, keysOnly: true, consistency: .stale)
        var ids: [UInt64] = []
        for kv in page.kvs {
            let elements = try entries.unpack(kv.key).elements
            guard elements.count == 2, case .int(let due) = elements[0], case .int(let id) = elements[1] else { continue }
            guard due <= now else { return (ids, due) }
            if ids.count < Self.tickBatch { ids.append(UInt64(id)) }
        }
        // More due than a batch: the next pass should come at once.
        return (ids, page.more || page.kvs.count > Self.tickBatch ? now : nil)
    }

    /// Ends an attempt whose lease ran out; its token is dead from here on.
    func expire(_ id: UInt64, now: Int64) async throws -> Bool {
        var expired = false
        try await update(id) { record in
            guard record.state == .running, var attempt = record.attempt, attempt.leaseExpiresAtMs <= now else { return nil }
            attempt.endedAtMs = now
            var next = record
            next.attempt = attempt
            let node = attempt.node == 0 ? "" : " on node \(attempt.node)"
            expired = true
            return self.failed(
                next, attempt, now, message: "lease expired: worker \(attempt.worker)\(node) stopped renewing attempt \(attempt.number)",
                retryable: true)
        }
        return expired
    }

    /// Moves a waiting job on when its dependencies allow: ready once every one succeeded (or,
    /// with `continue`, once every one ended); cancelled when one failed for good under `cancel`.
    func settle(_ id: UInt64, now: Int64) async throws -> Bool {
        guard let (record, _) = try await load(id), record.state == .waiting else { return false }
        let found = try await store.getMany(record.spec.dependsOn.map(recordKey))
        var states: [(UInt64, JobState)] = []
        for (dependency, kv) in zip(record.spec.dependsOn, found) {
            // A dependency that vanished (purged) counts as cancelled.
            states.append((dependency, try kv.map { try JobRecord(decoding: $0.value, limits: limits).state } ?? .cancelled))
        }
        let failed = states.first { $0.1 == .dead || $0.1 == .cancelled }
        let decision: (JobState, String)?
        if let failed, record.spec.onDependencyFailure == .cancel {
            decision = (.cancelled, "dependency \(failed.0) is \(failed.1.rawValue)")
        } else if states.allSatisfy({ $0.1 == .succeeded }) || (record.spec.onDependencyFailure == .continue && states.allSatisfy({ $0.1.isFinal })) {
            let due = (record.spec.runAtMs ?? now) > now
            decision = (due ? .scheduled : .pending, "dependencies settled")
        } else {
            decision = nil
        }
        guard let (state, message) = decision else { return false }
        var settled = false
        try await update(id) { current in
            guard current.state == .waiting else { return nil }
            var next = current
            next.state = state
            next.readyAtMs = state == .scheduled ? current.spec.runAtMs! : now
            if state == .cancelled { next.finishedAtMs = now }
            settled = true
            return (next, JobHistoryEntry(atMs: now, state: state, message: message))
        }
        return settled
    }

    /// Removes jobs finished before `cutoff`: record, history, output, index entries and
    /// idempotency key, each job in one transaction conditioned on its record (a retry or
    /// redrive since wins). A submit with the key of a removed job makes a new job.
    func purge(finishedBefore cutoff: Int64) async throws -> Int {
        let finished = space.subspace(["f"])
        let page = try await store.scan(
            .range(start: finished.range.start, end: finished.pack([.int(cutoff)])), limit: Self.tickBatch, keysOnly: true, consistency: .stale)
        var purged = 0
        for kv in page.kvs {
            let elements = try finished.unpack(kv.key).elements
            guard elements.count == 2, case .int(let id) = elements[1] else { continue }
            guard let (record, current) = try await load(UInt64(id)) else {
                // A stray entry (its job is gone): drop it.
                _ = try await store.delete(kv.key)
                continue
            }
            guard record.state.isFinal, let finishedAt = record.finishedAtMs, finishedAt < cutoff else { continue }
            // Its output's blobs first: should that fail, the job stays, and is tried again.
            do {
                try await forgetArchivedOutput(record.id)
            } catch {
                continue
            }
            let job = TupleElement.int(id)
            var operations: [TransactionOperation] = indexKeys(record).map { .delete(Delete(.key($0))) }
            operations.append(.delete(Delete(.key(current.key))))
            for prefix in [space.subspace(["h", job]), space.subspace(["o", job]), space.subspace(["oa", job]), space.subspace(["om", job])] {
                operations.append(.delete(Delete(.range(start: prefix.range.start, end: prefix.range.end))))
            }
            if let key = record.spec.idempotencyKey { operations.append(.delete(Delete(.key(idempotencyKey(key))))) }
            let outcome = try await store.transaction(
                Transaction(compares: [Compare(key: current.key, .modRevision(current.modRevision))], success: operations))
            if outcome.succeeded { purged += 1 }
        }
        return purged
    }
}
