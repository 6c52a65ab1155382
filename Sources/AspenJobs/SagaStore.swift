import AspenCore
import AspenKV
import AspenLayer

/// One step of a saga: a command, and the command that undoes it.
public struct SagaStep: Sendable, Equatable {
    public var name: String
    public var run: [String]
    /// Nil: nothing to undo.
    public var compensate: [String]?

    public init(name: String, run: [String], compensate: [String]? = nil) {
        self.name = name
        self.run = run
        self.compensate = compensate
    }
}

/// A saga: steps run in order, each as a job; when one fails for good, the compensations of
/// the steps that succeeded run, each once, in reverse order.
public struct SagaRecord: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        /// Running its steps.
        case running
        /// A step failed: undoing the ones before it.
        case compensating
        case succeeded
        /// Every step that ran was undone.
        case compensated
        /// A compensation itself failed for good: the saga stopped there and needs a person.
        case failed

        public var isFinal: Bool { self == .succeeded || self == .compensated || self == .failed }
    }

    public var id: UInt64
    public var name: String
    public var steps: [SagaStep]
    /// The job type the steps run as, and their attempts each.
    public var type: String
    public var maxAttempts: Int
    public var state: State
    /// Running: the step under way. Compensating: the step being undone.
    public var current: Int
    /// The job of each step's run and compensation, once submitted.
    public var runJobs: [UInt64?]
    public var compensationJobs: [UInt64?]
    /// Why it compensates or failed.
    public var reason: String?
    public var startedAtMs: Int64
    public var finishedAtMs: Int64?

    public init(id: UInt64, name: String, steps: [SagaStep], type: String = "shell", maxAttempts: Int = 3, startedAtMs: Int64) {
        self.id = id
        self.name = name
        self.steps = steps
        self.type = type
        self.maxAttempts = maxAttempts
        self.state = .running
        self.current = 0
        self.runJobs = Array(repeating: nil, count: steps.count)
        self.compensationJobs = Array(repeating: nil, count: steps.count)
        self.startedAtMs = startedAtMs
    }

    /// Refuses a saga past a bound or malformed, naming it.
    public func validate(limits: Limits) throws(JobError) {
        guard !name.isEmpty, name.utf8.count <= limits.jobNameBytesMax else { throw .invalid("a saga name must be 1 to \(limits.jobNameBytesMax) bytes") }
        guard (1...limits.sagaStepsMax).contains(steps.count) else {
            throw .invalid("a saga has 1 to sagaStepsMax (\(limits.sagaStepsMax)) steps, not \(steps.count)")
        }
        guard Set(steps.map(\.name)).count == steps.count else { throw .invalid("two steps of the saga have one name") }
        for step in steps {
            for command in [step.run] + (step.compensate.map { [$0] } ?? []) {
                do throws(JobPolicyError) {
                    try JobSpec(type: type, command: command, maxAttempts: maxAttempts).validate(limits: limits)
                } catch {
                    throw .invalid("step \(step.name): \(error)")
                }
            }
        }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(1)
        writer.writeVarint(id)
        writer.writeString(name)
        writer.writeString(type)
        writer.writeVarint(UInt64(maxAttempts))
        writer.writeVarint(UInt64(steps.count))
        for step in steps {
            writer.writeString(step.name)
            Self.write(step.run, &writer)
            writer.write(step.compensate != nil)
            if let compensate = step.compensate { Self.write(compensate, &writer) }
        }
        writer.write(UInt8(State.allCases.firstIndex(of: state)!))
        writer.writeVarint(signed: Int64(current))
        for jobs in [runJobs, compensationJobs] {
            for job in jobs { writer.writeVarint(job ?? 0) }
        }
        writer.writeOptionalBytes(reason.map { Array($0.utf8) })
        writer.writeVarint(signed: startedAtMs)
        writer.write(finishedAtMs != nil)
        if let finishedAtMs { writer.writeVarint(signed: finishedAtMs) }
        return writer.bytes
    }

    static func write(_ command: [String], _ writer: inout ByteWriter) {
        writer.writeVarint(UInt64(command.count))
        for argument in command { writer.writeString(argument) }
    }

    static func read(_ reader: inout ByteReader, _ limits: Limits) throws(DecodingError) -> [String] {
        var command: [String] = []
        for _ in 0..<(try reader.readCount(limit: limits.jobCommandBytesMax)) { command.append(try reader.readString(limit: limits.jobCommandBytesMax)) }
        return command
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown saga version") }
        id = try reader.readVarint()
        name = try reader.readString(limit: limits.jobNameBytesMax)
        type = try reader.readString(limit: limits.jobNameBytesMax)
        maxAttempts = try reader.readCount(limit: limits.jobAttemptsMax)
        var steps: [SagaStep] = []
        for _ in 0..<(try reader.readCount(limit: limits.sagaStepsMax)) {
            let name = try reader.readString(limit: limits.jobNameBytesMax)
            let run = try Self.read(&reader, limits)
            steps.append(SagaStep(name: name, run: run, compensate: try reader.readBool() ? try Self.read(&reader, limits) : nil))
        }
        self.steps = steps
        let stateIndex = Int(try reader.readByte())
        guard stateIndex < State.allCases.count else { throw .invalid("unknown saga state \(stateIndex)") }
        state = State.allCases[stateIndex]
        guard let current = Int(exactly: try reader.readSignedVarint()), (-1...steps.count).contains(current) else {
            throw .invalid("a saga's current step out of range")
        }
        self.current = current
        var jobs: [[UInt64?]] = []
        for _ in 0..<2 {
            var list: [UInt64?] = []
            for _ in steps {
                let job = try reader.readVarint()
                list.append(job == 0 ? nil : job)
            }
            jobs.append(list)
        }
        runJobs = jobs[0]
        compensationJobs = jobs[1]
        reason = try reader.readOptionalBytes(limit: limits.jobMessageBytesMax).map { String(decoding: $0, as: UTF8.self) }
        startedAtMs = try reader.readSignedVarint()
        finishedAtMs = try reader.readBool() ? try reader.readSignedVarint() : nil
        try reader.expectEnd()
    }
}

extension JobStore {
    func sagaKey(_ id: UInt64) -> Bytes { space.pack(["s", .int(Int64(id))]) }
    /// Sagas not yet finished: the manager's pass walks these.
    func activeSagaKey(_ id: UInt64) -> Bytes { space.pack(["sa", .int(Int64(id))]) }

    /// Starts a saga; its first step's job is submitted by the next manager pass.
    public func startSaga(name: String, steps: [SagaStep], type: String = "shell", maxAttempts: Int = 3) async throws -> SagaRecord {
        let id = try await ids.take { try await self.reserveIDs(64) }
        let saga = SagaRecord(id: id, name: name, steps: steps, type: type, maxAttempts: maxAttempts, startedAtMs: nowMs())
        try saga.validate(limits: limits)
        guard saga.encoded.count <= limits.valueBytesMax else {
            throw JobError.invalid("a saga of \(saga.encoded.count) bytes exceeds valueBytesMax (\(limits.valueBytesMax)); keep big inputs in the blob store")
        }
        let outcome = try await store.transaction(
            Transaction(
                compares: [.absent(sagaKey(id))],
                success: [.put(Put(key: sagaKey(id), value: saga.encoded)), .put(Put(key: activeSagaKey(id), value: []))]))
        guard outcome.succeeded else { throw JobError.contention(attempts: 1) }
        await signals.notify()
        return saga
    }

    public func saga(_ id: UInt64) async throws -> SagaRecord {
        guard let kv = try await store.get(sagaKey(id)) else { throw JobError.invalid("no saga \(id)") }
        return try SagaRecord(decoding: kv.value, limits: limits)
    }

    /// Moves every unfinished saga on as far as its jobs allow. Each step's run and each
    /// compensation is a job with the idempotency key `saga:ID:run:N` or `saga:ID:undo:N`,
    /// created in the job's own transaction, and the saga's record changes only by conditioned
    /// writes: passes that race (an old leader's and a new one's) submit each job once, and a
    /// compensation is submitted only after the one after it succeeded (reverse order).
    func advanceSagas(now: Int64) async throws -> Int {
        let active = space.subspace(["sa"])
        let page = try await store.scan(.range(start: active.range.start, end: active.range.end), limit: Self.tickBatch, keysOnly: true, consistency: .stale)
        var moved = 0
        for kv in page.kvs {
            guard case .int(let id)? = try active.unpack(kv.key).elements.first else { continue }
            // A few steps per pass: each submitted job is met again at the next pass.
            for _ in 0..<4 {
                guard try await advance(UInt64(id), now: now) else { break }
                moved += 1
            }
        }
        return moved
    }

    /// One move of a saga; false when it waits on a job (or is finished).
    func advance(_ id: UInt64, now: Int64) async throws -> Bool {
        guard let kv = try await store.get(sagaKey(id)) else { return false }
        let saga = try SagaRecord(decoding: kv.value, limits: limits)
        var next = saga
        switch saga.state {
        case .running:
            guard saga.current < saga.steps.count else {
                next.state = .succeeded
                break
            }
            let step = saga.steps[saga.current]
            guard let job = saga.runJobs[saga.current] else {
                next.runJobs[saga.current] = try await submitStep(saga, step.run, key: "saga:\(id):run:\(saga.current)", what: "\(step.name)")
                break
            }
            let record = try await self.job(job)
            switch record.state {
            case .succeeded: next.current += 1
            case .dead, .cancelled:
                next.state = .compensating
                next.reason = "step \(step.name) (job \(job)) is \(record.state.rawValue)" + (record.lastError.map { ": \($0)" } ?? "")
                next.current -= 1
            default: return false
            }
        case .compensating:
            guard saga.current >= 0 else {
                next.state = .compensated
                break
            }
            let step = saga.steps[saga.current]
            guard let undo = step.compensate else {
                next.current -= 1
                break
            }
            guard let job = saga.compensationJobs[saga.current] else {
                next.compensationJobs[saga.current] = try await submitStep(saga, undo, key: "saga:\(id):undo:\(saga.current)", what: "undo \(step.name)")
                break
            }
            let record = try await self.job(job)
            switch record.state {
            case .succeeded: next.current -= 1
            case .dead, .cancelled:
                next.state = .failed
                next.reason = (saga.reason.map { "\($0); then " } ?? "") + "the compensation of \(step.name) (job \(job)) is \(record.state.rawValue)"
            default: return false
            }
        case .succeeded, .compensated, .failed:
            return false
        }
        var operations: [TransactionOperation] = [.put(Put(key: kv.key, value: next.encoded))]
        if next.state.isFinal {
            next.finishedAtMs = now
            operations = [.put(Put(key: kv.key, value: next.encoded)), .delete(Delete(.key(activeSagaKey(id))))]
        }
        let outcome = try await store.transaction(Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: operations))
        return outcome.succeeded
    }

    func submitStep(_ saga: SagaRecord, _ command: [String], key: String, what: String) async throws -> UInt64 {
        let spec = JobSpec(type: saga.type, command: command, maxAttempts: saga.maxAttempts, idempotencyKey: key)
        return try await submit(spec, origin: "saga:\(saga.id) \(what)").id
    }
}
