import AspenCore
import AspenKV
import AspenLayer
import Synchronization

/// A worker as it asks for work: the job types it runs, its tags, and where it runs.
public struct WorkerInfo: Sendable, Equatable {
    public var name: String
    /// The node it runs on (0: outside the cluster).
    public var node: UInt64
    public var types: [String]
    public var tags: [String: String]

    public init(name: String, node: UInt64 = 0, types: [String], tags: [String: String] = [:]) {
        self.name = name
        self.node = node
        self.types = types
        self.tags = tags
    }
}

/// How an attempt ended, as its worker reports it.
public enum JobOutcome: Sendable, Equatable {
    case succeeded(result: [UInt8])
    /// `retryable: false` sends the job to the dead letters whatever attempts it has left.
    case failed(message: String, retryable: Bool)
}

/// The job system's durable state, as a layer over `KeyValueStore`: every job, its attempts,
/// indexes and history are keys under the reserved subspace `("aspen", "job")`, and every change
/// of a job is one transaction conditioned on the job's record being unchanged since it was
/// read. Nothing lives only in memory: a node that runs this and dies leaves nothing behind that
/// another cannot pick up.
///
/// Keys (tuple-encoded in the subspace):
/// - `("j", id)`: the record; `("h", id, n)`: its n-th history entry;
/// - indexes, derived from the record's state and rewritten with it (`indexKeys`):
///   `("r", type, rank, readyAt, id)` ready, `("t", due, id)` timers, `("w", id)` waiting on
///   dependencies, `("x", leaseExpiry, id)` running, `("d", id)` dead letters;
/// - `("f", finishedAt, id)`: finished jobs, oldest first, for retention;
/// - `("i", key)`: the job an idempotency key names; `("n")`: the id counter.
///
/// Time comes from `nowMs` (in a node: the leader's clock, as every call runs on the leader).
public final class JobStore: Sendable {
    public let store: any KeyValueStore
    public static let space = Subspace(["aspen", "job"])
    var space: Subspace { Self.space }
    let limits: Limits
    let nowMs: @Sendable () -> Int64
    let random: @Sendable () -> UInt64
    let ids = JobIDs()
    /// Woken when a job becomes ready, so that waiting claims look again at once.
    public let signals = JobSignals()
    /// Woken when a job ends on this node's writes (CI's scheduler waits on it).
    public let finished = JobSignals()
    /// Jobs a claim on this node is trying to take.
    let claiming = Mutex<Set<UInt64>>([])
    /// Ids of the claims running here.
    let claimsUnderWay = Mutex<Set<UInt64>>([])
    /// Set when the node stops: waiting claims end at once instead of holding up its drain.
    let stopping = Atomic<Bool>(false)
    public var isStopping: Bool { stopping.load(ordering: .relaxed) }
    /// The nodes holding a blob, for jobs that prefer to run near one (nil: no preference kept).
    let blobHolders: (@Sendable ([UInt8]) async -> Set<UInt64>)?

    /// How long a placement wish (a preferred node, a blob's holders) holds a ready job back from
    /// other workers.
    public static let preferenceGraceMs: Int64 = 3000
    /// Records one batched claim writes at most, in bytes (well inside a log entry).
    static let claimBatchBytesMax = 512 * 1024
    /// Attempts at a change before giving up under contention.
    static let attemptsMax = 16
    /// How long a finished job (its record, history, output and idempotency key) is kept.
    public let retentionMs: Int64
    /// The pub/sub stream served beside the jobs (nil: none).
    public let topics: TopicLog?
    /// What runs in-process hooks' commands (nil: their events are acknowledged and dropped).
    public let inProcessRunner = Mutex<InProcessHookRunner?>(nil)
    /// Where ended attempts' output goes (nil: it stays in the store until the job is purged).
    let outputArchive: JobOutputArchive?

    public init(
        store: any KeyValueStore, limits: Limits = .standard, nowMs: @escaping @Sendable () -> Int64,
        random: @escaping @Sendable () -> UInt64 = { UInt64.random(in: 1...UInt64.max) },
        blobHolders: (@Sendable ([UInt8]) async -> Set<UInt64>)? = nil, retentionMs: Int64 = 7 * 86_400_000, topics: TopicLog? = nil,
        outputArchive: JobOutputArchive? = nil
    ) {
        self.outputArchive = outputArchive
        self.store = store
        self.retentionMs = retentionMs
        self.topics = topics
        self.limits = limits
        self.nowMs = nowMs
        self.random = random
        self.blobHolders = blobHolders
    }

    // MARK: Keys

    func recordKey(_ id: UInt64) -> Bytes { space.pack(["j", .int(Int64(id))]) }
    func historyKey(_ id: UInt64, _ number: Int) -> Bytes { space.pack(["h", .int(Int64(id)), .int(Int64(number))]) }
    func idempotencyKey(_ key: String) -> Bytes { space.pack(["i", .string(key)]) }
    var counterKey: Bytes { space.pack(["n"]) }
    /// The running jobs a claim request took (kept while they run).
    func claimSpace(_ claim: UInt64) -> Subspace { space.subspace(["cl", .int(Int64(bitPattern: claim))]) }
    func readySpace(_ type: String, _ priority: JobPriority) -> Subspace { space.subspace(["r", .string(type), .int(Int64(priority.rank))]) }

    /// The index entries a record in its state has; a change deletes the old ones and writes the new.
    func indexKeys(_ record: JobRecord) -> [Bytes] {
        let id = TupleElement.int(Int64(record.id))
        switch record.state {
        case .pending: return [readySpace(record.spec.type, record.spec.priority).pack([.int(record.readyAtMs), id])]
        case .scheduled: return [space.pack(["t", .int(record.readyAtMs), id])]
        case .waiting: return [space.pack(["w", id])]
        case .running:
            let lease = space.pack(["x", .int(record.attempt?.leaseExpiresAtMs ?? 0), id])
            guard let claim = record.attempt?.claim, claim != 0 else { return [lease] }
            return [lease, claimSpace(claim).pack([id])]
        case .dead: return [space.pack(["d", id]), space.pack(["f", .int(record.finishedAtMs ?? 0), id])]
        case .succeeded, .cancelled: return [space.pack(["f", .int(record.finishedAtMs ?? 0), id])]
        }
    }

    // MARK: Reading

    /// The index a job in `state` has (nil: finished states, found by the records themselves).
    func stateIndex(_ state: JobState, type: String?) -> Subspace? {
        switch state {
        case .running: space.subspace(["x"])
        case .scheduled: space.subspace(["t"])
        case .waiting: space.subspace(["w"])
        case .pending: type.map { space.subspace(["r", .string($0)]) } ?? space.subspace(["r"])
        case .succeeded, .dead, .cancelled: nil
        }
    }

    /// The job's record. Reads before a conditioned write may be `.stale` (this node's applied
    /// state): a record read behind only fails the write's condition, and is read again.
    func load(_ id: UInt64, consistency: ReadConsistency = .linearizable) async throws -> (record: JobRecord, kv: KeyValue)? {
        guard let kv = try await store.get(recordKey(id), consistency: consistency) else { return nil }
        return (try JobRecord(decoding: kv.value, limits: limits), kv)
    }

    public func job(_ id: UInt64) async throws -> JobRecord {
        guard let (record, _) = try await load(id) else { throw JobError.notFound(id) }
        return record
    }

    public func history(_ id: UInt64) async throws -> [JobHistoryEntry] {
        let prefix = space.subspace(["h", .int(Int64(id))])
        var entries: [JobHistoryEntry] = []
        var continuation: Bytes?
        repeat {
            let page = try await store.scan(.range(start: prefix.range.start, end: prefix.range.end), limit: 1000, continuation: continuation)
            entries += try page.kvs.map { try JobHistoryEntry(decoding: $0.value, limits: limits) }
            continuation = page.continuation
        } while continuation != nil
        if entries.isEmpty { _ = try await job(id) }
        return entries
    }

    /// Jobs after `after` in id order, of one state and type when given: up to `limit` of them,
    /// looking at no more than `scanMax` records.
    public func list(state: JobState? = nil, type: String? = nil, after: UInt64 = 0, limit: Int = 100, scanMax: Int = 20_000) async throws
        -> [JobRecord]
    {
        if state == .dead {
            // The dead letters have an index of their own.
            let dead = space.subspace(["d"])
            let start = after == 0 ? dead.range.start : dead.pack([.int(Int64(after) + 1)])
            let page = try await store.scan(.range(start: start, end: dead.range.end), limit: limit, keysOnly: true)
            var records: [JobRecord] = []
            for kv in page.kvs {
                guard case .int(let id)? = try dead.unpack(kv.key).elements.first, let (record, _) = try await load(UInt64(id)) else { continue }
                if type == nil || record.spec.type == type { records.append(record) }
            }
            return records
        }
        if let state, let index = stateIndex(state, type: type) {
            // Jobs in a live state are found through the index the state keeps, whatever the
            // number of finished jobs before them.
            // A set: a renewal moves a running job's entry while the index is read.
            var ids = Set<UInt64>()
            var start = index.range.start
            var scanned = 0
            while scanned < scanMax {
                let page = try await store.scan(.range(start: start, end: index.range.end), limit: min(1000, scanMax - scanned), keysOnly: true)
                scanned += page.kvs.count
                for kv in page.kvs {
                    if case .int(let id)? = try index.unpack(kv.key).elements.last, UInt64(id) > after { ids.insert(UInt64(id)) }
                }
                guard let last = page.kvs.last, page.more else { break }
                start = last.key + [0]
            }
            var records: [JobRecord] = []
            let sorted = ids.sorted()
            for chunk in stride(from: 0, to: sorted.count, by: 256) where records.count < limit {
                let found = try await store.getMany(sorted[chunk..<min(chunk + 256, sorted.count)].map(recordKey))
                for kv in found.compactMap({ $0 }) where records.count < limit {
                    let record = try JobRecord(decoding: kv.value, limits: limits)
                    if record.state == state, type.map({ $0 == record.spec.type }) ?? true { records.append(record) }
                }
            }
            return records
        }
        let records = space.subspace(["j"])
        var start = records.pack([.int(Int64(after) + 1)])
        var found: [JobRecord] = []
        var scanned = 0
        while found.count < limit, scanned < scanMax {
            let page = try await store.scan(.range(start: start, end: records.range.end), limit: min(1000, scanMax - scanned))
            scanned += page.kvs.count
            for kv in page.kvs {
                let record = try JobRecord(decoding: kv.value, limits: limits)
                if state.map({ $0 == record.state }) ?? true, type.map({ $0 == record.spec.type }) ?? true {
                    found.append(record)
                    if found.count == limit { break }
                }
            }
            guard let last = page.kvs.last, page.more else { break }
            start = last.key + [0]
        }
        return found
    }

    // MARK: Writing

    /// Writes `new` over `old` (nil: creates it), with the index changes its state implies and a
    /// history entry; false when the record changed since it was read.
    func write(over old: (record: JobRecord, kv: KeyValue)?, _ new: JobRecord, history entry: JobHistoryEntry?, extra: [TransactionOperation] = [])
        async throws -> (written: Bool, record: JobRecord)
    {
        let change = changes(over: old, new, history: entry)
        let outcome = try await store.transaction(Transaction(compares: [change.compare], success: change.operations + extra))
        if outcome.succeeded, change.record.state == .pending { await signals.notify() }
        return (outcome.succeeded, change.record)
    }

    /// What writing `new` over `old` takes: the condition on the record as read, the record,
    /// its index entries and its history entry; and the record as written.
    func changes(over old: (record: JobRecord, kv: KeyValue)?, _ new: JobRecord, history entry: JobHistoryEntry?)
        -> (compare: Compare, operations: [TransactionOperation], record: JobRecord)
    {
        var new = new
        let key = recordKey(new.id)
        var operations: [TransactionOperation] = []
        if let entry {
            operations.append(.put(Put(key: historyKey(new.id, new.transitions), value: entry.encoded)))
            new.transitions += 1
        }
        let before = old.map { indexKeys($0.record) } ?? []
        let after = indexKeys(new)
        for stale in before where !after.contains(stale) { operations.append(.delete(Delete(.key(stale)))) }
        for fresh in after where !before.contains(fresh) { operations.append(.put(Put(key: fresh, value: []))) }
        operations.append(.put(Put(key: key, value: new.encoded)))
        return (old.map { Compare(key: key, .modRevision($0.kv.modRevision)) } ?? .absent(key), operations, new)
    }

    /// Reads the job, asks `change` what it becomes (nil: nothing to do) and writes that,
    /// again from a fresh read when another writer changed the job in between.
    @discardableResult
    func update(_ id: UInt64, _ change: (JobRecord) throws -> (JobRecord, JobHistoryEntry?)?) async throws -> JobRecord {
        for attempt in 0..<Self.attemptsMax {
            guard let loaded = try await load(id, consistency: attempt == 0 ? .stale : .linearizable) else { throw JobError.notFound(id) }
            let decided: (JobRecord, JobHistoryEntry?)?
            do {
                decided = try change(loaded.record)
            } catch where attempt == 0 {
                // A refusal is given only on a fresh read: this node's applied state may be behind.
                continue
            }
            guard let (next, entry) = decided else {
                if attempt == 0 { continue }
                return loaded.record
            }
            let (written, record) = try await write(over: loaded, next, history: entry)
            if written { return record }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    func clip(_ message: String) -> String {
        guard message.utf8.count > limits.jobMessageBytesMax else { return message }
        var clipped = Substring(message)
        while clipped.utf8.count > limits.jobMessageBytesMax - 3 { clipped = clipped.dropLast() }
        return clipped + "..."
    }

    // MARK: Submit

    /// Creates a job, or with an idempotency key that already names one, returns that one
    /// (`created` false). The key is claimed in the transaction that creates the job, so of any
    /// number of concurrent submits with one key exactly one creates a job.
    public func submit(_ spec: JobSpec, origin: String = "") async throws -> (id: UInt64, created: Bool) {
        do throws(JobPolicyError) {
            try spec.validate(limits: limits)
        } catch {
            throw JobError.invalid(error.description)
        }
        if let key = spec.idempotencyKey, let existing = try await idempotent(key, consistency: .stale) { return (existing, false) }
        if !spec.dependsOn.isEmpty {
            let found = try await store.getMany(spec.dependsOn.map(recordKey))
            if let missing = zip(spec.dependsOn, found).first(where: { $0.1 == nil }) {
                throw JobError.invalid("unknown dependency: no job \(missing.0)")
            }
        }
        for _ in 0..<Self.attemptsMax {
            let id = try await ids.take { try await self.reserveIDs(64) }
            let now = nowMs()
            let state: JobState = !spec.dependsOn.isEmpty ? .waiting : (spec.runAtMs ?? now) > now ? .scheduled : .pending
            let record = JobRecord(id: id, spec: spec, state: state, submittedAtMs: now, readyAtMs: state == .scheduled ? spec.runAtMs! : now, origin: origin)
            var compares: [Compare] = [.absent(recordKey(id))]
            var extra: [TransactionOperation] = []
            if let key = spec.idempotencyKey {
                compares.append(.absent(idempotencyKey(key)))
                extra.append(.put(Put(key: idempotencyKey(key), value: Tuple([.int(Int64(id))]).encoded)))
            }
            // A dependency is never deleted while a job waits on it; the compare keeps it so.
            for dependency in spec.dependsOn { compares.append(Compare(key: recordKey(dependency), .version(0), .greater)) }
            let entry = JobHistoryEntry(atMs: now, state: state, message: origin.isEmpty ? "submitted" : "submitted by \(origin)")
            var new = record
            new.transitions = 1
            var operations: [TransactionOperation] = [.put(Put(key: historyKey(id, 0), value: entry.encoded))]
            operations += indexKeys(new).map { .put(Put(key: $0, value: [])) }
            operations.append(.put(Put(key: recordKey(id), value: new.encoded)))
            let outcome = try await store.transaction(Transaction(compares: compares, success: operations + extra))
            if outcome.succeeded {
                if state == .pending { await signals.notify() }
                return (id, true)
            }
            if let key = spec.idempotencyKey, let existing = try await idempotent(key) { return (existing, false) }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    /// The job an idempotency key names, if any (and kept).
    public func job(idempotencyKey key: String) async throws -> JobRecord? {
        guard let id = try await idempotent(key) else { return nil }
        return try await load(id)?.record
    }

    func idempotent(_ key: String, consistency: ReadConsistency = .linearizable) async throws -> UInt64? {
        guard let kv = try await store.get(idempotencyKey(key), consistency: consistency) else { return nil }
        guard case .int(let id)? = try Tuple(decoding: kv.value).elements.first else { throw JobError.invalid("a corrupt idempotency record") }
        return UInt64(id)
    }

    /// Reserves `count` ids no other caller gets, by compare-and-swap on the counter.
    func reserveIDs(_ count: UInt64) async throws -> ClosedRange<UInt64> {
        for _ in 0..<Self.attemptsMax {
            let current = try await store.get(counterKey)
            var last: UInt64 = 0
            if let current, case .int(let value)? = try Tuple(decoding: current.value).elements.first { last = UInt64(value) }
            let compare = current.map { Compare(key: counterKey, .modRevision($0.modRevision)) } ?? .absent(counterKey)
            let next = last + count
            let outcome = try await store.transaction(
                Transaction(compares: [compare], success: [.put(Put(key: counterKey, value: Tuple([.int(Int64(next))]).encoded))]))
            if outcome.succeeded { return (last + 1)...next }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    // MARK: Claim

    /// Gives `worker` the job it should run next, under a lease of `leaseMs`, or nil when none is
    /// ready for it. Among ready jobs of its types: the best priority after aging, then the
    /// oldest. A job is claimed by a transaction conditioned on its record, so two workers never
    /// both get it; the claim carries a fresh attempt token.
    public func claim(_ worker: WorkerInfo, leaseMs: Int64) async throws -> JobRecord? {
        try await claim(worker, leaseMs: leaseMs, max: 1).first
    }

    /// Claims up to `max` ready jobs for the worker, highest effective priority first, in one
    /// transaction conditioned on each job's record; when another writer changed one of them
    /// first, each is claimed alone (those still pending are taken).
    public func claim(_ worker: WorkerInfo, leaseMs: Int64, max: Int, claim: UInt64 = 0) async throws -> [JobRecord] {
        guard (100...600_000).contains(leaseMs) else { throw JobError.invalid("a lease must be 100 ms to 10 minutes, not \(leaseMs) ms") }
        let now = nowMs()
        var candidates: [(rank: Int, readyAt: Int64, id: UInt64)] = []
        for type in Set(worker.types) {
            for priority in JobPriority.allCases {
                let ready = readySpace(type, priority)
                // The index is read from this node's applied state: the claim itself is conditioned on
                // the record, so an entry already gone only costs a failed attempt.
                let page = try await store.scan(
                    .range(start: ready.range.start, end: ready.range.end), limit: Swift.max(8, max * 2), keysOnly: true, consistency: .stale)
                for kv in page.kvs {
                    let elements = try ready.unpack(kv.key).elements
                    guard elements.count == 2, case .int(let readyAt) = elements[0], case .int(let id) = elements[1] else { continue }
                    candidates.append((priority.effectiveRank(waitedMs: now - readyAt), readyAt, UInt64(id)))
                }
            }
        }
        candidates.sort { ($0.rank, $0.readyAt, $0.id) < ($1.rank, $1.readyAt, $1.id) }
        // Claims on this node take different jobs instead of all racing for the first (the
        // losers' writes would fail their condition: work for the log and nothing done).
        var reserved: [UInt64] = []
        defer { claiming.withLock { claiming in for id in reserved { claiming.remove(id) } } }
        var prepared: [(loaded: (record: JobRecord, kv: KeyValue), claimed: JobRecord, entry: JobHistoryEntry)] = []
        var bytes = 0
        for candidate in candidates where prepared.count < max && bytes < Self.claimBatchBytesMax {
            guard claiming.withLock({ $0.insert(candidate.id).inserted }) else { continue }
            reserved.append(candidate.id)
            if var prepared1 = try await prepareClaim(candidate.id, for: worker, leaseMs: leaseMs) {
                prepared1.claimed.attempt!.claim = claim
                prepared.append(prepared1)
                bytes += prepared1.loaded.kv.value.count
            }
        }
        if prepared.count > 1 {
            let writes = prepared.map { self.changes(over: $0.loaded, $0.claimed, history: $0.entry) }
            let outcome = try await store.transaction(Transaction(compares: writes.map(\.compare), success: writes.flatMap(\.operations)))
            if outcome.succeeded { return writes.map(\.record) }
        }
        var claimed: [JobRecord] = []
        for claim in prepared {
            let (written, record) = try await write(over: claim.loaded, claim.claimed, history: claim.entry)
            if written { claimed.append(record) }
        }
        return claimed
    }

    /// The claim of one job for the worker (its record as read, as claimed, and the history
    /// entry), or nil when it is not (or no longer) for this worker.
    func prepareClaim(_ id: UInt64, for worker: WorkerInfo, leaseMs: Int64) async throws
        -> (loaded: (record: JobRecord, kv: KeyValue), claimed: JobRecord, entry: JobHistoryEntry)?
    {
        guard let loaded = try await load(id, consistency: .stale), loaded.record.state == .pending else { return nil }
        var record = loaded.record
        let spec = record.spec
        guard spec.requiredTags.allSatisfy({ worker.tags[$0.key] == $0.value }), spec.avoidNode.map({ $0 != worker.node }) ?? true else {
            return nil
        }
        let now = nowMs()
        if now - record.readyAtMs < Self.preferenceGraceMs {
            if let preferred = spec.preferNode, preferred != worker.node { return nil }
            if let blob = spec.nearBlob, let blobHolders {
                let holders = await blobHolders(blob)
                if !holders.isEmpty, !holders.contains(worker.node) { return nil }
            }
        }
        record.attempts += 1
        record.state = .running
        record.attempt = JobAttempt(
            number: record.attempts, token: random(), worker: worker.name, node: worker.node, startedAtMs: now, leaseExpiresAtMs: now + leaseMs)
        let entry = JobHistoryEntry(
            atMs: now, state: .running, attempt: record.attempts, token: record.attempt!.token, worker: worker.name, node: worker.node,
            message: "claimed")
        return (loaded, record, entry)
    }

    /// Claims like `claim`, waiting up to `waitMs` for a job to become ready.
    public func claim(_ worker: WorkerInfo, leaseMs: Int64, waitMs: Int64) async throws -> JobRecord? {
        try await claim(worker, leaseMs: leaseMs, waitMs: waitMs, max: 1).first
    }

    /// Claims like `claim(_:leaseMs:max:)`, waiting up to `waitMs` for at least one job. With a
    /// claim id (the worker's, new for each request and the same when it repeats one), the
    /// jobs a request took earlier, whose answer was lost, are answered again instead of others
    /// being taken (they would wait out their lease).
    public func claim(_ worker: WorkerInfo, leaseMs: Int64, waitMs: Int64, max: Int, claim: UInt64 = 0) async throws -> [JobRecord] {
        if claim != 0 {
            // A repeat that arrives while the original still runs here (its connection broke,
            // the client sent it again) waits for it, then finds what it took.
            while !claimsUnderWay.withLock({ $0.insert(claim).inserted }) {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        defer { if claim != 0 { _ = claimsUnderWay.withLock { $0.remove(claim) } } }
        if claim != 0 {
            let taken = claimSpace(claim)
            let page = try await store.scan(.range(start: taken.range.start, end: taken.range.end), limit: JobCall.claimBatchMax, keysOnly: true)
            var earlier: [JobRecord] = []
            for kv in page.kvs {
                guard case .int(let id)? = try taken.unpack(kv.key).elements.first, let (record, _) = try await load(UInt64(id)) else { continue }
                if record.state == .running, record.attempt?.claim == claim, record.attempt?.worker == worker.name { earlier.append(record) }
            }
            if !earlier.isEmpty { return earlier }
        }
        let deadline = nowMs() + min(Swift.max(0, waitMs), 60_000)
        while true {
            // Taken before looking: a job made ready while this claim looks, after it read the
            // index, must still end the wait.
            let seen = await signals.generation
            let claimed = try await self.claim(worker, leaseMs: leaseMs, max: max, claim: claim)
            if !claimed.isEmpty { return claimed }
            let left = deadline - nowMs()
            guard left > 0, !stopping.load(ordering: .relaxed) else { return [] }
            // Every change that makes a job ready runs here, on the leader, and signals; the bounded
            // wait covers a store changed by others (a test's, or a client running the layer).
            await signals.wait(upToMs: min(left, 2000), since: seen)
            try Task.checkCancellation()
        }
    }

    /// Ends every waiting claim (they answer no job) and makes later ones return at once.
    public func stopWaiting() async {
        stopping.store(true, ordering: .relaxed)
        await signals.notify()
    }

    // MARK: The running attempt

    /// A worker's call names the job's type (its credential was checked for that type): the job
    /// must be of it.
    func check(_ record: JobRecord, type: String?) throws(JobError) {
        if let type, record.spec.type != type { throw .invalid("job \(record.id) is of type \(record.spec.type), not \(type)") }
    }

    /// Why `token` no longer speaks for `record`.
    func stale(_ record: JobRecord, _ token: UInt64) -> JobError {
        guard let attempt = record.attempt, record.attempts > 0 else {
            return .staleAttempt(job: record.id, token: token, reason: "the job has never been claimed")
        }
        if attempt.token != token {
            return .staleAttempt(
                job: record.id, token: token,
                reason: "attempt \(attempt.number) (token \(String(attempt.token, radix: 16))) is the job's current one; the job is \(record.state.rawValue)")
        }
        return .staleAttempt(job: record.id, token: token, reason: "the attempt ended at \(attempt.endedAtMs ?? 0) ms; the job is \(record.state.rawValue)")
    }

    /// Extends the attempt's lease to `leaseMs` from now; tells the worker whether a cancel asks
    /// it to stop. Refused for any token but the current attempt's.
    public func renew(_ id: UInt64, type: String? = nil, token: UInt64, leaseMs: Int64) async throws -> JobRecord {
        guard (100...600_000).contains(leaseMs) else { throw JobError.invalid("a lease must be 100 ms to 10 minutes, not \(leaseMs) ms") }
        return try await update(id) { record in
            try self.check(record, type: type)
            guard record.state == .running, record.attempt?.token == token else { throw self.stale(record, token) }
            var next = record
            next.attempt!.leaseExpiresAtMs = self.nowMs() + leaseMs
            return (next, nil)
        }
    }

    /// Records the attempt's end as its worker reports it. A replay of the same report (the same
    /// token, the attempt already finished by its worker) answers the job as it is; a report for
    /// any other attempt is refused, so a worker the cluster gave up on changes nothing.
    public func finish(_ id: UInt64, type: String? = nil, token: UInt64, outcome: JobOutcome, exitCode: Int32? = nil) async throws -> JobRecord {
        try checkResult(outcome)
        let record = try await update(id) { record in
            try self.ending(record, JobReport(id: id, type: type ?? record.spec.type, token: token, outcome: outcome, exitCode: exitCode), typed: type != nil)
        }
        if record.state.isFinal { await finished.notify() }
        return record
    }

    func checkResult(_ outcome: JobOutcome) throws(JobError) {
        if case .succeeded(let result) = outcome, result.count > limits.jobResultBytesMax {
            throw JobError.invalid("a result of \(result.count) bytes exceeds jobResultBytesMax (\(limits.jobResultBytesMax)); put it in the blob store")
        }
    }

    /// What a report makes of the job: its next record and history entry; nil for a replay of
    /// the report that ended it (answered as it is). Refused for any attempt but the current one.
    func ending(_ record: JobRecord, _ report: JobReport, typed: Bool = true) throws -> (JobRecord, JobHistoryEntry)? {
        if typed { try check(record, type: report.type) }
        if record.state != .running, let attempt = record.attempt, attempt.token == report.token, attempt.finished { return nil }
        guard record.state == .running, record.attempt?.token == report.token else { throw stale(record, report.token) }
        let now = nowMs()
        var next = record
        next.attempt!.endedAtMs = now
        next.attempt!.finished = true
        next.attempt!.exitCode = report.exitCode
        let attempt = next.attempt!
        switch report.outcome {
        case .succeeded(let result):
            next.state = .succeeded
            next.result = result
            next.finishedAtMs = now
            return (next, entry(next, attempt, now, "succeeded"))
        case .failed(let message, let retryable):
            return failed(next, attempt, now, message: clip(message), retryable: retryable)
        }
    }

    /// Records several attempts' ends in one transaction (read from this node's applied state,
    /// conditioned on each record); a report that is refused on that read, or a transaction
    /// that fails its conditions, goes the way of a single `finish`. One result per report.
    public func finish(_ reports: [JobReport]) async throws -> [Result<JobRecord, JobError>] {
        var results = [Result<JobRecord, JobError>?](repeating: nil, count: reports.count)
        var writes: [(index: Int, compare: Compare, operations: [TransactionOperation], record: JobRecord)] = []
        let found = try await store.getMany(reports.map { recordKey($0.id) }, consistency: .stale)
        var seen = Set<UInt64>()
        for (index, (report, kv)) in zip(reports, found).enumerated() {
            guard (try? checkResult(report.outcome)) != nil, seen.insert(report.id).inserted, let kv,
                let record = try? JobRecord(decoding: kv.value, limits: limits)
            else { continue }
            let decided: (JobRecord, JobHistoryEntry)?
            do {
                decided = try ending(record, report)
            } catch {
                // Refused on this node's applied state: a single finish reads it fresh first.
                continue
            }
            guard let (next, entry) = decided else {
                results[index] = .success(record)
                continue
            }
            let change = changes(over: (record, kv), next, history: entry)
            writes.append((index, change.compare, change.operations, change.record))
        }
        if !writes.isEmpty {
            // A batch the log refuses (too large an entry) is written one by one below.
            let outcome = try? await store.transaction(Transaction(compares: writes.map(\.compare), success: writes.flatMap(\.operations)))
            if outcome?.succeeded == true {
                for write in writes { results[write.index] = .success(write.record) }
                if writes.contains(where: { $0.record.state == .pending }) { await signals.notify() }
                if writes.contains(where: { $0.record.state.isFinal }) { await finished.notify() }
            }
        }
        for (index, report) in reports.enumerated() where results[index] == nil {
            do {
                results[index] = .success(
                    try await finish(report.id, type: report.type, token: report.token, outcome: report.outcome, exitCode: report.exitCode))
            } catch let error as JobError {
                results[index] = .failure(error)
            }
        }
        return results.map { $0! }
    }

    func entry(_ record: JobRecord, _ attempt: JobAttempt, _ now: Int64, _ message: String) -> JobHistoryEntry {
        JobHistoryEntry(
            atMs: now, state: record.state, attempt: attempt.number, token: attempt.token, worker: attempt.worker, node: attempt.node,
            exitCode: attempt.exitCode, message: message)
    }

    /// What a failed attempt leads to: cancelled (a cancel was asked), another attempt after the
    /// backoff, or the dead letters.
    func failed(_ record: JobRecord, _ attempt: JobAttempt, _ now: Int64, message: String, retryable: Bool) -> (JobRecord, JobHistoryEntry) {
        var next = record
        next.lastError = message
        if next.cancelRequested {
            next.state = .cancelled
            next.finishedAtMs = now
            return (next, entry(next, attempt, now, "cancelled: \(message)"))
        }
        guard retryable, next.attemptsLeft > 0 else {
            next.state = .dead
            next.finishedAtMs = now
            let why = retryable ? "out of attempts (\(next.spec.maxAttempts))" : "not retryable"
            return (next, entry(next, attempt, now, "dead, \(why): \(message)"))
        }
        let failures = next.attempts - next.attemptsBase
        let delay = next.spec.backoff.delayMs(afterFailures: failures, unit: Double(random() >> 11) / Double(1 << 53))
        next.readyAtMs = now + delay
        next.state = delay > 0 ? .scheduled : .pending
        return (next, entry(next, attempt, now, "failed, retry in \(JobDuration.format(ms: delay)): \(message)"))
    }

    // MARK: Operators

    /// Cancels a job that has not finished. A running one is asked to stop (its worker learns at
    /// its next renewal) and ends as cancelled when its attempt ends.
    public func cancel(_ id: UInt64) async throws -> JobRecord {
        try await update(id) { record in
            guard !record.state.isFinal else { throw JobError.wrongState(job: id, state: record.state, wanted: "only an unfinished job can be cancelled") }
            let now = self.nowMs()
            var next = record
            if record.state == .running {
                guard !record.cancelRequested else { return nil }
                next.cancelRequested = true
                return (next, JobHistoryEntry(atMs: now, state: .running, message: "cancel requested"))
            }
            next.state = .cancelled
            next.finishedAtMs = now
            return (next, JobHistoryEntry(atMs: now, state: .cancelled, message: "cancelled"))
        }
    }

    /// Starts a dead or cancelled job again with a fresh budget of attempts (`deadOnly`: a
    /// dead-letter redrive, refused for a cancelled job).
    public func retry(_ id: UInt64, deadOnly: Bool = false) async throws -> JobRecord {
        try await update(id) { record in
            let allowed: Set<JobState> = deadOnly ? [.dead] : [.dead, .cancelled]
            guard allowed.contains(record.state) else {
                throw JobError.wrongState(job: id, state: record.state, wanted: deadOnly ? "only a dead job can be redriven" : "only a dead or cancelled job can be retried")
            }
            let now = self.nowMs()
            var next = record
            next.attemptsBase = record.attempts
            next.cancelRequested = false
            next.finishedAtMs = nil
            next.readyAtMs = now
            next.state = record.spec.dependsOn.isEmpty ? .pending : .waiting
            return (next, JobHistoryEntry(atMs: now, state: next.state, message: deadOnly ? "redriven from the dead letters" : "retried"))
        }
    }
}

/// Hands out job ids from blocks reserved in the store, so a submit costs no extra write.
actor JobIDs {
    private var next: UInt64 = 0
    private var end: UInt64 = 0
    /// The reservation under way: takes that find the block empty wait for it rather than race
    /// their own compare-and-swaps on the counter.
    private var reserving: Task<ClosedRange<UInt64>, any Error>?

    func take(_ reserve: @escaping @Sendable () async throws -> ClosedRange<UInt64>) async throws -> UInt64 {
        while next >= end {
            let reservation = reserving ?? Task { try await reserve() }
            reserving = reservation
            let block: ClosedRange<UInt64>
            do {
                block = try await reservation.value
            } catch {
                reserving = nil
                throw error
            }
            reserving = nil
            // The first waiter to wake takes the new block; the others find it filled.
            if next >= end, block.lowerBound >= end {
                next = block.lowerBound
                end = block.upperBound + 1
            }
        }
        defer { next += 1 }
        return next
    }
}

/// Wakes the calls waiting on this node: claims when a job becomes ready, group fetches when a
/// message is published.
public actor JobSignals {
    private var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextWaiter = 0
    /// Waits begun and not yet over, and those among them woken before they were registered
    /// (they return at once: the actor may run a wake between a wait's start and its body).
    private var pending: Set<Int> = []
    private var expired: Set<Int> = []

    /// How many times `notify` ran.
    public private(set) var generation: UInt64 = 0
    /// Waits that lasted their whole time (no `notify` ended them).
    private(set) var timedOut = 0

    public init() {}

    public func notify() {
        generation &+= 1
        let woken = waiters
        waiters = [:]
        expired.formUnion(pending.subtracting(woken.keys))
        for continuation in woken.values { continuation.resume() }
    }

    /// Returns at the next `notify`, after `upToMs`, or when the calling task is cancelled; at
    /// once if `notify` ran since `generation` was `since`.
    public func wait(upToMs: Int64, since: UInt64? = nil) async {
        if let since, since != generation { return }
        let id = nextWaiter
        nextWaiter += 1
        pending.insert(id)
        defer {
            pending.remove(id)
            expired.remove(id)
        }
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(upToMs))
            self.wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // The timer may have fired before this body ran.
                if expired.remove(id) != nil { return continuation.resume() }
                waiters[id] = continuation
            }
        } onCancel: {
            timer.cancel()
        }
        timer.cancel()
    }

    private func wake(_ id: Int) {
        if let waiter = waiters.removeValue(forKey: id) {
            timedOut += 1
            waiter.resume()
        } else if pending.contains(id) {
            timedOut += 1
            expired.insert(id)
        }
    }
}
