import AspenCore

/// Where a run stands. A run ends in one of the last five.
public enum CIRunState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case queued = 0
    case running = 1
    case success = 2
    case failure = 3
    case cancelled = 4
    /// It could not run: its pipeline file is invalid, or the commit could not be read.
    case error = 5
    /// Every job was filtered out (only ignored paths changed).
    case skipped = 6

    public var ended: Bool { self != .queued && self != .running }
    public var description: String {
        switch self {
        case .queued: "queued"
        case .running: "running"
        case .success: "success"
        case .failure: "failure"
        case .cancelled: "cancelled"
        case .error: "error"
        case .skipped: "skipped"
        }
    }
}

/// Where one planned job of a run stands.
public enum CIJobState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case pending = 0
    case running = 1
    case success = 2
    case failure = 3
    case skipped = 4
    case cancelled = 5

    public var ended: Bool { self != .pending && self != .running }
    /// The outcome the job graph's rules take, once ended.
    public var outcome: JobOutcome? {
        switch self {
        case .pending, .running: nil
        case .success: .success
        case .failure: .failure
        case .skipped: .skipped
        case .cancelled: .cancelled
        }
    }
    public var description: String {
        switch self {
        case .pending: "pending"
        case .running: "running"
        case .success: "success"
        case .failure: "failure"
        case .skipped: "skipped"
        case .cancelled: "cancelled"
        }
    }
}

/// One try of a planned job: a job of the job system (which may itself take several attempts
/// when a worker dies; each keeps its own log).
public struct CIAttempt: Sendable, Equatable {
    public var number: Int
    public var jobID: UInt64
    public var exitCode: Int32?
    public var endedMs: Int64?
    public var detail: String

    public init(number: Int, jobID: UInt64, exitCode: Int32? = nil, endedMs: Int64? = nil, detail: String = "") {
        self.number = number
        self.jobID = jobID
        self.exitCode = exitCode
        self.endedMs = endedMs
        self.detail = detail
    }
}

/// A planned job of a run (`test (config=debug)`), its state and its tries.
public struct CIRunJob: Sendable, Equatable {
    public var name: String
    public var state: CIJobState
    /// Why it was skipped, how it failed, what it was reused from.
    public var detail: String
    public var attempts: [CIAttempt]
    public var startedMs: Int64?
    public var endedMs: Int64?

    public init(name: String, state: CIJobState = .pending, detail: String = "", attempts: [CIAttempt] = [], startedMs: Int64? = nil, endedMs: Int64? = nil) {
        self.name = name
        self.state = state
        self.detail = detail
        self.attempts = attempts
        self.startedMs = startedMs
        self.endedMs = endedMs
    }
}

/// A run of a repository's pipeline for one commit: created once per event (its idempotency
/// key is repository, ref, commit and pipeline), its jobs advanced by the leader's scheduler.
public struct CIRun: Sendable, Equatable {
    public var id: UInt64
    public var repo: String
    public var ref: String
    public var sha: String
    public var event: TriggerKind
    public var pipeline: String
    /// The key of whoever pushed or asked for it, in hex.
    public var creator: String
    public var createdMs: Int64
    public var endedMs: Int64?
    public var state: CIRunState
    /// Why it is in error, was skipped or cancelled (`ci.yml:3:5: …`).
    public var message: String
    public var jobs: [CIRunJob]
    public var cancelRequested: Bool
    /// The concurrency group it holds, interpolated.
    public var group: String?
    /// The run this one runs again.
    public var rerunOf: UInt64?

    public init(
        id: UInt64, repo: String, ref: String, sha: String, event: TriggerKind, pipeline: String = CIRun.defaultPipeline, creator: String = "",
        createdMs: Int64, endedMs: Int64? = nil, state: CIRunState = .queued, message: String = "", jobs: [CIRunJob] = [], cancelRequested: Bool = false,
        group: String? = nil, rerunOf: UInt64? = nil
    ) {
        self.id = id
        self.repo = repo
        self.ref = ref
        self.sha = sha
        self.event = event
        self.pipeline = pipeline
        self.creator = creator
        self.createdMs = createdMs
        self.endedMs = endedMs
        self.state = state
        self.message = message
        self.jobs = jobs
        self.cancelRequested = cancelRequested
        self.group = group
        self.rerunOf = rerunOf
    }

    /// The pipeline of `.aspen/ci.yml`.
    public static let defaultPipeline = "ci"
    /// Where the pipeline file lives in a repository.
    public static let pipelinePath = ".aspen/ci.yml"

    /// Whether the run may be given secrets (not a patch's: its code is anyone's).
    public var trusted: Bool { event.isTrusted }

    /// The status context of a job (`ci/ci/test (config=debug)`), or of the whole pipeline.
    public func context(job: String? = nil) -> String { "ci/\(pipeline)" + (job.map { "/" + $0 } ?? "") }

    public func job(_ name: String) -> CIRunJob? { jobs.first { $0.name == name } }

    public var encoded: [UInt8] {
        var writer = ByteWriter(capacity: 256 + jobs.count * 64)
        writer.write(Self.version)
        writer.writeVarint(id)
        for text in [repo, ref, sha, event.rawValue, pipeline, creator] { writer.writeString(text) }
        writer.writeVarint(signed: createdMs)
        CIWire.write(endedMs, to: &writer)
        writer.write(state.rawValue)
        writer.writeString(message)
        writer.writeVarint(UInt64(jobs.count))
        for job in jobs {
            writer.writeString(job.name)
            writer.write(job.state.rawValue)
            writer.writeString(job.detail)
            CIWire.write(job.startedMs, to: &writer)
            CIWire.write(job.endedMs, to: &writer)
            writer.writeVarint(UInt64(job.attempts.count))
            for attempt in job.attempts {
                writer.writeVarint(UInt64(attempt.number))
                writer.writeVarint(attempt.jobID)
                CIWire.write(attempt.exitCode.map(Int64.init), to: &writer)
                CIWire.write(attempt.endedMs, to: &writer)
                writer.writeString(attempt.detail)
            }
        }
        writer.write(cancelRequested)
        writer.writeOptionalBytes(group.map { Array($0.utf8) })
        writer.write(rerunOf != nil)
        if let rerunOf { writer.writeVarint(rerunOf) }
        return writer.bytes
    }

    static let version: UInt8 = 1

    /// Decodes a run, every count and length bounded by `limits`.
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.version else { throw .invalid("unknown CI run version") }
        id = try reader.readVarint()
        repo = try reader.readString(limit: limits.forgeRepoNameBytesMax)
        ref = try reader.readString(limit: limits.forgeRefNameBytesMax)
        sha = try reader.readString(limit: 64)
        guard let event = TriggerKind(rawValue: try reader.readString(limit: 16)) else { throw .invalid("unknown CI event") }
        self.event = event
        pipeline = try reader.readString(limit: limits.ciNameBytesMax)
        creator = try reader.readString(limit: 128)
        createdMs = try reader.readSignedVarint()
        endedMs = try CIWire.readOptionalInt(&reader)
        guard let state = CIRunState(rawValue: try reader.readByte()) else { throw .invalid("unknown CI run state") }
        self.state = state
        message = try reader.readString(limit: CIWire.messageBytesMax)
        var jobs: [CIRunJob] = []
        for _ in 0..<(try reader.readCount(limit: limits.ciJobsPerPipelineMax)) {
            let name = try reader.readString(limit: CIWire.plannedNameBytesMax(limits))
            guard let jobState = CIJobState(rawValue: try reader.readByte()) else { throw .invalid("unknown CI job state") }
            var job = CIRunJob(name: name, state: jobState, detail: try reader.readString(limit: CIWire.messageBytesMax))
            job.startedMs = try CIWire.readOptionalInt(&reader)
            job.endedMs = try CIWire.readOptionalInt(&reader)
            for _ in 0..<(try reader.readCount(limit: CIWire.attemptsMax(limits))) {
                let number = Int(try reader.readVarint() & 0xFFFF)
                let jobID = try reader.readVarint()
                let exit = try CIWire.readOptionalInt(&reader)
                let ended = try CIWire.readOptionalInt(&reader)
                let detail = try reader.readString(limit: CIWire.messageBytesMax)
                job.attempts.append(CIAttempt(number: number, jobID: jobID, exitCode: exit.map { Int32(truncatingIfNeeded: $0) }, endedMs: ended, detail: detail))
            }
            jobs.append(job)
        }
        self.jobs = jobs
        cancelRequested = try reader.readBool()
        if let bytes = try reader.readOptionalBytes(limit: limits.ciCacheKeyBytesMax) {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .invalid("a run's concurrency group is not UTF-8") }
            group = text
        } else {
            group = nil
        }
        rerunOf = try reader.readBool() ? try reader.readVarint() : nil
        try reader.expectEnd()
    }
}

/// The state a commit status reports (git forges' vocabulary, with `skipped` and `cancelled`).
public enum CommitStatusState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case pending = 0
    case success = 1
    case failure = 2
    case skipped = 3
    case cancelled = 4
    case error = 5

    /// Whether a required check with this state lets a merge through: a job filtered out by
    /// paths reports `skipped`, which satisfies it.
    public var satisfiesRequirement: Bool { self == .success || self == .skipped }
    public var description: String {
        switch self {
        case .pending: "pending"
        case .success: "success"
        case .failure: "failure"
        case .skipped: "skipped"
        case .cancelled: "cancelled"
        case .error: "error"
        }
    }

    public init(_ job: CIJobState) {
        switch job {
        case .pending, .running: self = .pending
        case .success: self = .success
        case .failure: self = .failure
        case .skipped: self = .skipped
        case .cancelled: self = .cancelled
        }
    }

    public init(_ run: CIRunState) {
        switch run {
        case .queued, .running: self = .pending
        case .success: self = .success
        case .failure: self = .failure
        case .cancelled: self = .cancelled
        case .error: self = .error
        case .skipped: self = .skipped
        }
    }
}

/// A status of a commit under one context (`ci/ci/test`), set by the run that last reported it.
public struct CommitStatus: Sendable, Equatable {
    public var context: String
    public var state: CommitStatusState
    public var description: String
    public var run: UInt64
    public var updatedMs: Int64

    public init(context: String, state: CommitStatusState, description: String = "", run: UInt64, updatedMs: Int64) {
        self.context = context
        self.state = state
        self.description = description
        self.run = run
        self.updatedMs = updatedMs
    }

    public func write(to writer: inout ByteWriter) {
        writer.writeString(context)
        writer.write(state.rawValue)
        writer.writeString(description)
        writer.writeVarint(run)
        writer.writeVarint(signed: updatedMs)
    }

    public init(from reader: inout ByteReader, limits: Limits = .standard) throws(DecodingError) {
        context = try reader.readString(limit: CIWire.contextBytesMax(limits))
        guard let state = CommitStatusState(rawValue: try reader.readByte()) else { throw .invalid("unknown commit status state") }
        self.state = state
        description = try reader.readString(limit: CIWire.messageBytesMax)
        run = try reader.readVarint()
        updatedMs = try reader.readSignedVarint()
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        write(to: &writer)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        try self.init(from: &reader, limits: limits)
        try reader.expectEnd()
    }
}

extension CommitStatus {
    /// The contexts of `statuses` that let a merge through: `success`, or `skipped` when the run
    /// it belongs to did not fail (a job skipped because a job it needs failed never passes).
    public static func satisfied(_ statuses: [CommitStatus]) -> Set<String> {
        let runStates = Dictionary(
            statuses.filter { $0.context.split(separator: "/", omittingEmptySubsequences: false).count == 2 }.map { ("\($0.run) \($0.context)", $0.state) },
            uniquingKeysWith: { first, _ in first })
        var passed = Set<String>()
        for status in statuses where status.state.satisfiesRequirement {
            let parts = status.context.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
            if status.state == .skipped, parts.count == 3, runStates["\(status.run) \(parts[0])/\(parts[1])"]?.satisfiesRequirement != true { continue }
            passed.insert(status.context)
        }
        return passed
    }
}

/// What the scheduler gives a worker for one try of a planned job (the job's payload): the
/// commit, the script with every reference replaced, the environment and the secrets it names.
public struct CIJobTask: Sendable, Equatable {
    public var run: UInt64
    public var repo: String
    public var ref: String
    public var sha: String
    public var event: TriggerKind
    public var job: String
    public var attempt: Int
    public var script: String
    public var env: [String: String]
    public var timeoutMs: Int64
    /// Names of the repository's CI secrets to inject (empty for an untrusted run).
    public var secrets: [String]
    /// Patterns of the files kept as artifacts when the script succeeds.
    public var artifacts: [String]
    /// The planned jobs whose artifacts are put in the checkout first (the job's `needs`).
    public var needs: [String]
    /// The cache: its key, interpolated, and the paths archived under it.
    public var cacheKey: String?
    public var cachePaths: [String]

    public init(
        run: UInt64, repo: String, ref: String, sha: String, event: TriggerKind, job: String, attempt: Int, script: String, env: [String: String] = [:],
        timeoutMs: Int64, secrets: [String] = [], artifacts: [String] = [], needs: [String] = [], cacheKey: String? = nil, cachePaths: [String] = []
    ) {
        self.artifacts = artifacts
        self.needs = needs
        self.cacheKey = cacheKey
        self.cachePaths = cachePaths
        self.run = run
        self.repo = repo
        self.ref = ref
        self.sha = sha
        self.event = event
        self.job = job
        self.attempt = attempt
        self.script = script
        self.env = env
        self.timeoutMs = timeoutMs
        self.secrets = secrets
    }

    /// The job system's type of CI jobs.
    public static let jobType = "ci"

    public var encoded: [UInt8] {
        var writer = ByteWriter(capacity: 128 + script.utf8.count)
        writer.write(UInt8(1))
        writer.writeVarint(run)
        for text in [repo, ref, sha, event.rawValue, job] { writer.writeString(text) }
        writer.writeVarint(UInt64(attempt))
        writer.writeString(script)
        writer.writeVarint(UInt64(env.count))
        for (name, value) in env.sorted(by: { $0.key < $1.key }) {
            writer.writeString(name)
            writer.writeString(value)
        }
        writer.writeVarint(signed: timeoutMs)
        writer.writeVarint(UInt64(secrets.count))
        for name in secrets { writer.writeString(name) }
        for list in [artifacts, needs, cachePaths] {
            writer.writeVarint(UInt64(list.count))
            for item in list { writer.writeString(item) }
        }
        writer.writeOptionalBytes(cacheKey.map { Array($0.utf8) })
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown CI task version") }
        run = try reader.readVarint()
        repo = try reader.readString(limit: limits.forgeRepoNameBytesMax)
        ref = try reader.readString(limit: limits.forgeRefNameBytesMax)
        sha = try reader.readString(limit: 64)
        guard let event = TriggerKind(rawValue: try reader.readString(limit: 16)) else { throw .invalid("unknown CI event") }
        self.event = event
        job = try reader.readString(limit: CIWire.plannedNameBytesMax(limits))
        attempt = try reader.readCount(limit: CIWire.attemptsMax(limits))
        script = try reader.readString(limit: limits.ciInterpolatedBytesMax)
        var env: [String: String] = [:]
        for _ in 0..<(try reader.readCount(limit: limits.ciEnvVarsMax + limits.ciMatrixAxesMax)) {
            let name = try reader.readString(limit: limits.ciNameBytesMax)
            env[name] = try reader.readString(limit: limits.ciInterpolatedBytesMax)
        }
        self.env = env
        timeoutMs = try reader.readSignedVarint()
        var secrets: [String] = []
        for _ in 0..<(try reader.readCount(limit: limits.ciSecretsPerJobMax)) { secrets.append(try reader.readString(limit: limits.ciNameBytesMax)) }
        self.secrets = secrets
        var lists: [[String]] = []
        for limit in [limits.ciPatternBytesMax, CIWire.plannedNameBytesMax(limits), limits.ciPatternBytesMax] {
            var list: [String] = []
            for _ in 0..<(try reader.readCount(limit: max(limits.ciPatternsMax, limits.ciJobsPerPipelineMax))) { list.append(try reader.readString(limit: limit)) }
            lists.append(list)
        }
        (artifacts, needs, cachePaths) = (lists[0], lists[1], lists[2])
        if let key = try reader.readOptionalBytes(limit: limits.ciInterpolatedBytesMax) {
            guard let text = String(validating: key, as: UTF8.self) else { throw .invalid("a cache key is not UTF-8") }
            cacheKey = text
        } else {
            cacheKey = nil
        }
        try reader.expectEnd()
    }
}

/// A file a job kept: its path in the checkout and its bytes in the blob store.
public struct CIArtifact: Sendable, Equatable {
    public var job: String
    public var path: String
    public var hash: [UInt8]
    public var size: UInt64

    public init(job: String, path: String, hash: [UInt8], size: UInt64) {
        self.job = job
        self.path = path
        self.hash = hash
        self.size = size
    }
}

/// A repository's cache: its key, its archive in the blob store, and the revision of its last
/// save or restore (a restore rewrites the entry, so it counts as use).
public struct CICache: Sendable, Equatable {
    public var key: String
    public var hash: [UInt8]
    public var size: UInt64
    public var revision: UInt64

    public init(key: String, hash: [UInt8], size: UInt64, revision: UInt64) {
        self.key = key
        self.hash = hash
        self.size = size
        self.revision = revision
    }
}

/// How a try of a job ended, as the worker reports it (the job system's result).
public struct CIJobResult: Sendable, Equatable {
    /// The script's exit code; nil when a signal ended it or it never started.
    public var exitCode: Int32?
    public var timedOut: Bool
    public var cancelled: Bool
    public var outputBytes: Int64
    public var runMs: Int64
    /// What went wrong beside the script (the checkout failed, a secret is missing).
    public var detail: String

    public init(exitCode: Int32?, timedOut: Bool = false, cancelled: Bool = false, outputBytes: Int64 = 0, runMs: Int64 = 0, detail: String = "") {
        self.exitCode = exitCode
        self.timedOut = timedOut
        self.cancelled = cancelled
        self.outputBytes = outputBytes
        self.runMs = runMs
        self.detail = detail
    }

    public var succeeded: Bool { exitCode == 0 && !timedOut && !cancelled }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        CIWire.write(exitCode.map(Int64.init), to: &writer)
        writer.write(timedOut)
        writer.write(cancelled)
        writer.writeVarint(signed: outputBytes)
        writer.writeVarint(signed: runMs)
        writer.writeString(detail)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown CI result version") }
        exitCode = try CIWire.readOptionalInt(&reader).map { Int32(truncatingIfNeeded: $0) }
        timedOut = try reader.readBool()
        cancelled = try reader.readBool()
        outputBytes = try reader.readSignedVarint()
        runMs = try reader.readSignedVarint()
        detail = try reader.readString(limit: CIWire.messageBytesMax)
        try reader.expectEnd()
    }
}

/// Shared pieces of the CI records' encoding.
public enum CIWire {
    /// Longest message a record keeps (a longer one is cut).
    public static let messageBytesMax = 4096
    /// A planned job's name: the job's name and its matrix values.
    public static func plannedNameBytesMax(_ limits: Limits) -> Int { limits.ciJobNameBytesMax + limits.ciMatrixAxesMax * (2 * limits.ciNameBytesMax + 4) + 4 }
    public static func contextBytesMax(_ limits: Limits) -> Int { plannedNameBytesMax(limits) + limits.ciNameBytesMax + 8 }
    /// Artifacts one answer lists.
    public static func artifactsListedMax(_ limits: Limits) -> Int { 4 * limits.ciArtifactsPerJobMax }
    /// Caches one answer lists (most recently used first).
    public static let cachesListedMax = 1000
    /// Tries of one planned job: its retries, and as many again for reruns of a stuck worker.
    public static func attemptsMax(_ limits: Limits) -> Int { 2 * (limits.ciJobRetriesMax + 1) }

    /// `text` cut to at most `messageBytesMax` bytes, on a character boundary.
    public static func message(_ text: String) -> String {
        guard text.utf8.count > messageBytesMax else { return text }
        var cut = ""
        for character in text {
            if cut.utf8.count + character.utf8.count > messageBytesMax - 3 { break }
            cut.append(character)
        }
        return cut + "…"
    }

    public static func write(_ value: Int64?, to writer: inout ByteWriter) {
        writer.write(value != nil)
        if let value { writer.writeVarint(signed: value) }
    }

    public static func readOptionalInt(_ reader: inout ByteReader) throws(DecodingError) -> Int64? {
        try reader.readBool() ? try reader.readSignedVarint() : nil
    }
}
