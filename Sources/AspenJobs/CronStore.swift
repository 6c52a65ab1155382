import AspenCore
import AspenKV
import AspenLayer
import Foundation

/// A recurring job: a cron schedule and the job each of its ticks submits.
public struct CronRecord: Sendable, Equatable {
    /// What happens to ticks missed while no leader could fire them (an outage).
    public enum CatchUp: String, Sendable, CaseIterable {
        /// Missed ticks older than `CronRecord.misfireGraceMs` are dropped.
        case skip
        /// Of the missed ticks, only the latest runs.
        case latest
        /// Every missed tick runs (at most `CronRecord.catchUpMax` per manager pass).
        case all
    }

    /// What a tick does while the job of an earlier tick has not finished.
    public enum Overlap: String, Sendable, CaseIterable {
        /// The tick is skipped (and the skip recorded).
        case skip
        /// The tick's job waits for the earlier one to end.
        case queue
        /// The tick's job runs alongside.
        case allow
    }

    public var name: String
    public var expression: String
    /// An IANA time zone name (`UTC`, `Europe/Paris`).
    public var timeZone: String
    /// The job each tick submits (its idempotency key and run-at are the tick's own).
    public var spec: JobSpec
    public var catchUp: CatchUp
    public var overlap: Overlap
    public var paused: Bool
    /// Every tick at or before this instant has been handled (fired or skipped).
    public var lastTickMs: Int64
    /// The job of the last tick fired.
    public var lastJob: UInt64?
    public var createdAtMs: Int64

    /// How old a missed tick may be and still run under `skip`.
    public static let misfireGraceMs: Int64 = 60_000
    /// Missed ticks one manager pass fires at most under `all`.
    public static let catchUpMax = 100
    /// How long a tick's record (`aspen cron history`) is kept.
    public static let tickHistoryMs: Int64 = 86_400_000

    public init(
        name: String, expression: String, timeZone: String = "UTC", spec: JobSpec, catchUp: CatchUp = .skip, overlap: Overlap = .allow,
        createdAtMs: Int64 = 0
    ) {
        self.name = name
        self.expression = expression
        self.timeZone = timeZone
        self.spec = spec
        self.catchUp = catchUp
        self.overlap = overlap
        self.paused = false
        self.lastTickMs = createdAtMs
        self.createdAtMs = createdAtMs
    }

    /// The parsed schedule, or why it cannot be used.
    public func schedule() throws(JobError) -> CronSchedule {
        guard let zone = TimeZone(identifier: timeZone) else { throw .invalid("unknown time zone \(timeZone) (an IANA name: UTC, Europe/Paris)") }
        do {
            return try CronSchedule(expression, timeZone: zone)
        } catch {
            throw .invalid(error.description)
        }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(1)
        writer.writeString(name)
        writer.writeString(expression)
        writer.writeString(timeZone)
        writer.writeBytes(spec.encoded)
        writer.writeString(catchUp.rawValue)
        writer.writeString(overlap.rawValue)
        writer.write(paused)
        writer.writeVarint(signed: lastTickMs)
        writer.write(lastJob != nil)
        if let lastJob { writer.writeVarint(lastJob) }
        writer.writeVarint(signed: createdAtMs)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown schedule version") }
        name = try reader.readString(limit: limits.jobNameBytesMax)
        expression = try reader.readString(limit: CronSchedule.expressionBytesMax)
        timeZone = try reader.readString(limit: 64)
        spec = try JobSpec(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits)), limits: limits)
        guard let catchUp = CatchUp(rawValue: try reader.readString(limit: 16)), let overlap = Overlap(rawValue: try reader.readString(limit: 16)) else {
            throw .invalid("unknown catch-up or overlap policy")
        }
        self.catchUp = catchUp
        self.overlap = overlap
        paused = try reader.readBool()
        lastTickMs = try reader.readSignedVarint()
        lastJob = try reader.readBool() ? try reader.readVarint() : nil
        createdAtMs = try reader.readSignedVarint()
        try reader.expectEnd()
    }
}

/// What became of one tick of a schedule.
public struct CronTick: Sendable, Equatable {
    public var tickMs: Int64
    /// The job it submitted (nil: skipped).
    public var job: UInt64?
    public var message: String

    public init(tickMs: Int64, job: UInt64?, message: String) {
        self.tickMs = tickMs
        self.job = job
        self.message = message
    }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(signed: tickMs)
        writer.write(job != nil)
        if let job { writer.writeVarint(job) }
        writer.writeString(message)
        return writer.bytes
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        tickMs = try reader.readSignedVarint()
        job = try reader.readBool() ? try reader.readVarint() : nil
        message = try reader.readString(limit: 4096)
        try reader.expectEnd()
    }
}

extension JobStore {
    func scheduleKey(_ name: String) -> Bytes { space.pack(["c", .string(name)]) }
    func tickKey(_ name: String, _ tickMs: Int64) -> Bytes { space.pack(["k", .string(name), .int(tickMs)]) }

    /// Creates a schedule (or, with `replace`, changes one: its ticks go on from where they were).
    public func createSchedule(_ record: CronRecord, replace: Bool) async throws -> CronRecord {
        var record = record
        try validateName(record.name, "a schedule name")
        _ = try record.schedule()
        record.spec.idempotencyKey = nil
        record.spec.runAtMs = nil
        do throws(JobPolicyError) {
            try record.spec.validate(limits: limits)
        } catch {
            throw JobError.invalid(error.description)
        }
        guard record.spec.dependsOn.isEmpty else { throw JobError.invalid("a scheduled job cannot depend on other jobs") }
        let now = nowMs()
        record.createdAtMs = now
        record.lastTickMs = now
        let key = scheduleKey(record.name)
        for _ in 0..<Self.attemptsMax {
            let current = try await store.get(key)
            if let current {
                guard replace else { throw JobError.invalid("a schedule named \(record.name) exists (aspen cron rm, or --replace)") }
                let old = try CronRecord(decoding: current.value, limits: limits)
                record.createdAtMs = old.createdAtMs
                record.lastTickMs = old.lastTickMs
                record.lastJob = old.lastJob
                record.paused = old.paused
            }
            let compare = current.map { Compare(key: key, .modRevision($0.modRevision)) } ?? .absent(key)
            let outcome = try await store.transaction(Transaction(compares: [compare], success: [.put(Put(key: key, value: record.encoded))]))
            if outcome.succeeded { return record }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    func validateName(_ name: String, _ what: String) throws(JobError) {
        guard !name.isEmpty, name.utf8.count <= limits.jobNameBytesMax, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { throw .invalid("\(what) must be 1 to \(limits.jobNameBytesMax) bytes without control characters") }
    }

    public func schedules() async throws -> [CronRecord] {
        let all = space.subspace(["c"])
        var records: [CronRecord] = []
        var continuation: Bytes?
        repeat {
            let page = try await store.scan(.range(start: all.range.start, end: all.range.end), limit: 1000, continuation: continuation)
            records += try page.kvs.map { try CronRecord(decoding: $0.value, limits: limits) }
            continuation = page.continuation
        } while continuation != nil
        return records
    }

    public func schedule(_ name: String) async throws -> (record: CronRecord, kv: KeyValue) {
        guard let kv = try await store.get(scheduleKey(name)) else { throw JobError.invalid("no schedule named \(name)") }
        return (try CronRecord(decoding: kv.value, limits: limits), kv)
    }

    /// Pauses or resumes a schedule. Ticks that pass while it is paused never fire: a resume
    /// starts from the next tick after it.
    public func setPaused(_ name: String, _ paused: Bool) async throws -> CronRecord {
        for _ in 0..<Self.attemptsMax {
            var (record, kv) = try await schedule(name)
            guard record.paused != paused else { return record }
            record.paused = paused
            if !paused { record.lastTickMs = max(record.lastTickMs, nowMs()) }
            let outcome = try await store.transaction(
                Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: [.put(Put(key: kv.key, value: record.encoded))]))
            if outcome.succeeded { return record }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    /// Removes a schedule and its tick history; the jobs its ticks made stay.
    public func removeSchedule(_ name: String) async throws {
        _ = try await schedule(name)
        let ticks = space.subspace(["k", .string(name)])
        _ = try await store.transaction(
            Transaction(
                compares: [],
                success: [.delete(Delete(.key(scheduleKey(name)))), .delete(Delete(.range(start: ticks.range.start, end: ticks.range.end)))]))
    }

    /// The schedule's latest ticks, newest last.
    public func ticks(_ name: String, limit: Int = 100) async throws -> [CronTick] {
        _ = try await schedule(name)
        let ticks = space.subspace(["k", .string(name)])
        // The newest: a reverse scan is not offered, so read the count and skip to the end.
        var entries: [CronTick] = []
        var continuation: Bytes?
        repeat {
            let page = try await store.scan(.range(start: ticks.range.start, end: ticks.range.end), limit: 1000, continuation: continuation)
            entries += try page.kvs.map { try CronTick(decoding: $0.value) }
            if entries.count > limit { entries.removeFirst(entries.count - limit) }
            continuation = page.continuation
        } while continuation != nil
        return entries
    }

    /// Fires the due ticks of every unpaused schedule; returns how many jobs it submitted and
    /// the next instant a tick comes due.
    ///
    /// A tick is claimed by the job's idempotency key, `cron:NAME:TICK`, created in the
    /// transaction that creates the job: however many passes (an old leader's and a new one's)
    /// handle one tick, one job comes of it.
    func fireSchedules(now: Int64) async throws -> (fired: Int, next: Int64?) {
        let all = space.subspace(["c"])
        let page = try await store.scan(.range(start: all.range.start, end: all.range.end), limit: Self.tickBatch, consistency: .stale)
        var fired = 0
        var next: Int64?
        for kv in page.kvs {
            var record = try CronRecord(decoding: kv.value, limits: limits)
            guard !record.paused, let schedule = try? record.schedule() else { continue }
            var ticks: [Int64] = []
            var after = record.lastTickMs
            while ticks.count < CronRecord.catchUpMax, let tick = schedule.nextFire(after: Date(timeIntervalSince1970: Double(after) / 1000)) {
                let tickMs = Int64((tick.timeIntervalSince1970 * 1000).rounded())
                guard tickMs <= now else {
                    next = min(next ?? tickMs, tickMs)
                    break
                }
                ticks.append(tickMs)
                after = tickMs
            }
            guard let last = ticks.last else { continue }
            let chosen: [Int64] =
                switch record.catchUp {
                case .skip: ticks.filter { now - $0 <= CronRecord.misfireGraceMs }
                case .latest: [last]
                case .all: ticks
                }
            for tick in ticks {
                let (job, message) = chosen.contains(tick) ? try await fire(record, tick) : (nil, "missed during an outage (catch-up skip)")
                if let job {
                    record.lastJob = job
                    fired += 1
                }
                let key = tickKey(record.name, tick)
                _ = try await store.transaction(
                    Transaction(compares: [.absent(key)], success: [.put(Put(key: key, value: CronTick(tickMs: tick, job: job, message: message).encoded))]))
            }
            record.lastTickMs = last
            // Conditioned on the schedule unchanged: a pause or an edit since this read wins, and
            // the next pass finds any tick left (its job, if made, is found by its key). Ticks
            // older than a day leave the history here.
            let history = space.subspace(["k", .string(record.name)])
            _ = try await store.transaction(
                Transaction(
                    compares: [Compare(key: kv.key, .modRevision(kv.modRevision))],
                    success: [
                        .put(Put(key: kv.key, value: record.encoded)),
                        .delete(Delete(.range(start: history.range.start, end: history.pack([.int(last - CronRecord.tickHistoryMs)])))),
                    ]))
        }
        return (fired, next)
    }

    /// Submits one tick's job (or skips it under `overlap: skip`).
    func fire(_ record: CronRecord, _ tickMs: Int64) async throws -> (UInt64?, String) {
        var spec = record.spec
        spec.idempotencyKey = "cron:\(record.name):\(tickMs)"
        if let existing = try await idempotent(spec.idempotencyKey!) { return (existing, "fired") }
        if let previous = record.lastJob, record.overlap != .allow, let (last, _) = try await load(previous), !last.state.isFinal {
            if record.overlap == .skip { return (nil, "skipped: job \(previous) of an earlier tick is \(last.state.rawValue)") }
            spec.dependsOn = [previous]
            spec.onDependencyFailure = .continue
        }
        let (id, _) = try await submit(spec, origin: "cron:\(record.name)")
        return (id, "fired")
    }
}
