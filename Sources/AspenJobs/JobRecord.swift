import AspenCore

/// Where a job is in its life. `succeeded`, `dead` and `cancelled` are final (until a retry or
/// a redrive starts it again).
public enum JobState: String, Sendable, CaseIterable {
    /// Waits for its dependencies.
    case waiting
    /// Waits for a time: `--run-at`, or the backoff after a failed attempt.
    case scheduled
    /// Ready: the next free worker of its type takes it.
    case pending
    /// A worker holds it under a lease.
    case running
    case succeeded
    /// Out of attempts: in the dead letters, with its last error.
    case dead
    case cancelled

    public var isFinal: Bool { self == .succeeded || self == .dead || self == .cancelled }

    public init(parsing text: String) throws(JobError) {
        guard let state = JobState(rawValue: text) else {
            throw .invalid("'\(text)' is not a job state: \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = state
    }
}

/// One attempt at a job: who holds it, and the token that fences it. Only the holder of the
/// current attempt's token may renew, finish or write for the job; a token of an earlier
/// attempt is refused for good.
public struct JobAttempt: Sendable, Equatable {
    /// 1 for the first attempt.
    public var number: Int
    public var token: UInt64
    public var worker: String
    /// The node the worker runs on (0: a worker outside the cluster).
    public var node: UInt64
    public var startedAtMs: Int64
    public var leaseExpiresAtMs: Int64
    /// Set when the attempt ended: by its worker (`finished`), or by the cluster (lease expiry).
    public var endedAtMs: Int64?
    /// The worker itself reported the end (so a replay of its report is answered, not refused).
    public var finished: Bool
    public var exitCode: Int32?
    /// The claim request that took it (0: none named): a claim repeated after its answer was
    /// lost finds its jobs by it instead of taking others.
    public var claim: UInt64 = 0

    public init(number: Int, token: UInt64, worker: String, node: UInt64, startedAtMs: Int64, leaseExpiresAtMs: Int64) {
        self.number = number
        self.token = token
        self.worker = worker
        self.node = node
        self.startedAtMs = startedAtMs
        self.leaseExpiresAtMs = leaseExpiresAtMs
        self.finished = false
    }
}

/// A job as the store keeps it: what was asked (`spec`) and what happened so far.
public struct JobRecord: Sendable, Equatable {
    public var id: UInt64
    public var spec: JobSpec
    public var state: JobState
    public var submittedAtMs: Int64
    /// Pending: since when it is ready (priority aging counts from here). Scheduled: when it is due.
    public var readyAtMs: Int64
    /// Attempts started so far.
    public var attempts: Int
    /// Attempts counted against `maxAttempts` start after this many (a retry or redrive resets it).
    public var attemptsBase: Int
    /// The current attempt while running; afterwards the last one.
    public var attempt: JobAttempt?
    /// A cancel arrived while it ran: the worker stops at its next renewal.
    public var cancelRequested: Bool
    public var lastError: String?
    /// What the last successful attempt returned (bounded by `Limits.jobResultBytesMax`).
    public var result: [UInt8]
    public var finishedAtMs: Int64?
    /// History entries written (the next one's number).
    public var transitions: Int
    /// Who made it: empty for a submit, `cron:NAME` for a schedule's tick.
    public var origin: String

    public init(id: UInt64, spec: JobSpec, state: JobState, submittedAtMs: Int64, readyAtMs: Int64, origin: String = "") {
        self.id = id
        self.spec = spec
        self.state = state
        self.submittedAtMs = submittedAtMs
        self.readyAtMs = readyAtMs
        self.attempts = 0
        self.attemptsBase = 0
        self.cancelRequested = false
        self.result = []
        self.transitions = 0
        self.origin = origin
    }

    /// Attempts left before the dead letters.
    public var attemptsLeft: Int { max(0, spec.maxAttempts - (attempts - attemptsBase)) }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.writeVarint(id)
        writer.writeBytes(spec.encoded)
        writer.write(UInt8(JobState.allCases.firstIndex(of: state)!))
        writer.writeVarint(signed: submittedAtMs)
        writer.writeVarint(signed: readyAtMs)
        writer.writeVarint(UInt64(attempts))
        writer.writeVarint(UInt64(attemptsBase))
        writer.write(attempt != nil)
        if let attempt {
            writer.writeVarint(UInt64(attempt.number))
            writer.writeFixed(attempt.token)
            writer.writeString(attempt.worker)
            writer.writeVarint(attempt.node)
            writer.writeVarint(signed: attempt.startedAtMs)
            writer.writeVarint(signed: attempt.leaseExpiresAtMs)
            writer.write(attempt.endedAtMs != nil)
            if let ended = attempt.endedAtMs { writer.writeVarint(signed: ended) }
            writer.write(attempt.finished)
            writer.write(attempt.exitCode != nil)
            if let code = attempt.exitCode { writer.writeVarint(signed: Int64(code)) }
        }
        writer.write(cancelRequested)
        writer.writeOptionalBytes(lastError.map { Array($0.utf8) })
        writer.writeBytes(result)
        writer.write(finishedAtMs != nil)
        if let finishedAtMs { writer.writeVarint(signed: finishedAtMs) }
        writer.writeVarint(UInt64(transitions))
        writer.writeString(origin)
        // Trailing, so that records written before it read the same.
        if let claim = attempt?.claim, claim != 0 { writer.writeFixed(claim) }
        return writer.bytes
    }

    static let version: UInt8 = 1

    /// Decodes a record, every length bounded by `limits` before it is allocated.
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.version else { throw .invalid("unknown job record version") }
        id = try reader.readVarint()
        spec = try JobSpec(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits)), limits: limits)
        let stateIndex = Int(try reader.readByte())
        guard stateIndex < JobState.allCases.count else { throw .invalid("unknown job state \(stateIndex)") }
        state = JobState.allCases[stateIndex]
        submittedAtMs = try reader.readSignedVarint()
        readyAtMs = try reader.readSignedVarint()
        attempts = try reader.readCount(limit: Int(Int32.max))
        attemptsBase = try reader.readCount(limit: Int(Int32.max))
        if try reader.readBool() {
            var attempt = JobAttempt(
                number: try reader.readCount(limit: Int(Int32.max)), token: try reader.readFixed64(),
                worker: try reader.readString(limit: limits.jobNameBytesMax), node: try reader.readVarint(),
                startedAtMs: try reader.readSignedVarint(), leaseExpiresAtMs: try reader.readSignedVarint())
            attempt.endedAtMs = try reader.readBool() ? try reader.readSignedVarint() : nil
            attempt.finished = try reader.readBool()
            if try reader.readBool() {
                guard let code = Int32(exactly: try reader.readSignedVarint()) else { throw .invalid("an exit code out of range") }
                attempt.exitCode = code
            }
            self.attempt = attempt
        }
        cancelRequested = try reader.readBool()
        lastError = try reader.readOptionalBytes(limit: limits.jobMessageBytesMax).map { String(decoding: $0, as: UTF8.self) }
        result = try reader.readBytes(limit: limits.jobResultBytesMax)
        finishedAtMs = try reader.readBool() ? try reader.readSignedVarint() : nil
        transitions = try reader.readCount(limit: Int(Int32.max))
        origin = try reader.readString(limit: limits.jobNameBytesMax)
        if !reader.isAtEnd {
            guard attempt != nil else { throw .invalid("a claim id without an attempt") }
            attempt!.claim = try reader.readFixed64()
        }
        try reader.expectEnd()
    }
}

extension JobSpec {
    /// The most bytes a valid spec encodes to (a bound for decoders).
    static func encodedBytesMax(_ limits: Limits) -> Int {
        2 * limits.jobCommandBytesMax + limits.jobPayloadBytesMax + 16 * limits.jobDependenciesMax
            + 2 * (limits.jobTagsMax + 2) * (limits.jobNameBytesMax + 4) + 256
    }
}

/// One line of a job's history: a change of state, with the attempt it concerns.
public struct JobHistoryEntry: Sendable, Equatable {
    public var atMs: Int64
    public var state: JobState
    /// The attempt's number, token, worker and node (0 and empty when none).
    public var attempt: Int
    public var token: UInt64
    public var worker: String
    public var node: UInt64
    public var exitCode: Int32?
    public var message: String

    public init(
        atMs: Int64, state: JobState, attempt: Int = 0, token: UInt64 = 0, worker: String = "", node: UInt64 = 0, exitCode: Int32? = nil,
        message: String = ""
    ) {
        self.atMs = atMs
        self.state = state
        self.attempt = attempt
        self.token = token
        self.worker = worker
        self.node = node
        self.exitCode = exitCode
        self.message = message
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(signed: atMs)
        writer.write(UInt8(JobState.allCases.firstIndex(of: state)!))
        writer.writeVarint(UInt64(attempt))
        writer.writeFixed(token)
        writer.writeString(worker)
        writer.writeVarint(node)
        writer.write(exitCode != nil)
        if let exitCode { writer.writeVarint(signed: Int64(exitCode)) }
        writer.writeString(message)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        atMs = try reader.readSignedVarint()
        let stateIndex = Int(try reader.readByte())
        guard stateIndex < JobState.allCases.count else { throw .invalid("unknown job state \(stateIndex)") }
        state = JobState.allCases[stateIndex]
        attempt = try reader.readCount(limit: Int(Int32.max))
        token = try reader.readFixed64()
        worker = try reader.readString(limit: limits.jobNameBytesMax)
        node = try reader.readVarint()
        if try reader.readBool() {
            guard let code = Int32(exactly: try reader.readSignedVarint()) else { throw .invalid("an exit code out of range") }
            exitCode = code
        }
        message = try reader.readString(limit: limits.jobMessageBytesMax)
        try reader.expectEnd()
    }
}

/// Why a job operation was refused.
public enum JobError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A malformed or out-of-bounds request, with the reason.
    case invalid(String)
    case notFound(UInt64)
    /// The token names an attempt that is no longer the job's current one: its worker's
    /// renewal, completion or output is refused (fencing).
    case staleAttempt(job: UInt64, token: UInt64, reason: String)
    /// The job's state does not allow the operation (cancel a finished job, redrive a live one).
    case wrongState(job: UInt64, state: JobState, wanted: String)
    /// Other writers kept changing the job.
    case contention(attempts: Int)
    /// A stream read from a cursor older than the oldest message kept.
    case cursorExpired(cursor: UInt64, oldest: UInt64)

    public var description: String {
        switch self {
        case .invalid(let reason): reason
        case .notFound(let id): "no job \(id)"
        case .staleAttempt(let job, let token, let reason): "attempt token \(String(token, radix: 16)) of job \(job) is stale: \(reason)"
        case .wrongState(let job, let state, let wanted): "job \(job) is \(state.rawValue): \(wanted)"
        case .contention(let attempts): "the job kept changing under \(attempts) attempts; try again"
        case .cursorExpired(let cursor, let oldest): "cursor \(cursor) expired, oldest is \(oldest)"
        }
    }

    public static let rpcCode = "job"

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .invalid(let reason):
            writer.write(0)
            writer.writeString(reason)
        case .notFound(let id):
            writer.write(1)
            writer.writeVarint(id)
        case .staleAttempt(let job, let token, let reason):
            writer.write(2)
            writer.writeVarint(job)
            writer.writeFixed(token)
            writer.writeString(reason)
        case .wrongState(let job, let state, let wanted):
            writer.write(3)
            writer.writeVarint(job)
            writer.writeString(state.rawValue)
            writer.writeString(wanted)
        case .contention(let attempts):
            writer.write(4)
            writer.writeVarint(UInt64(attempts))
        case .cursorExpired(let cursor, let oldest):
            writer.write(5)
            writer.writeVarint(cursor)
            writer.writeVarint(oldest)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 0: self = .invalid(try reader.readString(limit: 4096))
        case 1: self = .notFound(try reader.readVarint())
        case 2: self = .staleAttempt(job: try reader.readVarint(), token: try reader.readFixed64(), reason: try reader.readString(limit: 4096))
        case 3:
            let job = try reader.readVarint()
            guard let state = JobState(rawValue: try reader.readString(limit: 32)) else { throw .invalid("unknown job state") }
            self = .wrongState(job: job, state: state, wanted: try reader.readString(limit: 4096))
        case 4: self = .contention(attempts: try reader.readCount(limit: 1_000_000))
        case 5: self = .cursorExpired(cursor: try reader.readVarint(), oldest: try reader.readVarint())
        default: throw .invalid("unknown job error")
        }
        try reader.expectEnd()
    }
}
