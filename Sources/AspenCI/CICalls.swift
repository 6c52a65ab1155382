import AspenCore

/// A CI request from the CLI (`aspen ci …`), answered by any node.
public enum CICall: Sendable, Equatable {
    /// The newest runs of a repository (at most `limit`).
    case list(repo: String, limit: Int)
    case show(run: UInt64)
    /// A job's log, from byte `offset` of one try (`attempt`, 1-based over every try of the
    /// job; 0: the last). With `waitMs`, waits that long for bytes past `offset` (`--follow`).
    case logs(run: UInt64, job: String, attempt: Int, offset: Int64, waitMs: Int64)
    /// A commit's statuses (every context), by its id.
    case status(repo: String, sha: String)
    case cancel(run: UInt64)
    /// Runs the same commit and pipeline again: every job, or (`failedOnly`) those that did
    /// not succeed and the jobs that need them.
    case rerun(run: UInt64, failedOnly: Bool)
    /// A manual run of `ref`'s current commit. `request` makes a retried call find its first run.
    case start(repo: String, ref: String, request: String)
    /// Sets a repository's CI secret (kept by the secrets engine, given to the trusted runs'
    /// jobs that name it, masked in their logs).
    case secretSet(repo: String, name: String, value: [UInt8])
    /// The names of a repository's CI secrets (never their values).
    case secretList(repo: String)
    case secretDelete(repo: String, name: String)
    /// The artifacts of a run's jobs (of one job, when named).
    case artifacts(run: UInt64, job: String?)
    /// A repository's caches, most recently used first.
    case caches(repo: String)
    /// Deletes a repository's cache of exactly `key` (every cache, when nil); answers with what
    /// it deleted.
    case cacheDelete(repo: String, key: String?)

    /// Most runs one list answers.
    public static let listMax = 200
    /// Longest a log request waits for new bytes.
    public static let logWaitMsMax: Int64 = 30_000

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .list(let repo, let limit):
            writer.write(UInt8(1))
            writer.writeString(repo)
            writer.writeVarint(UInt64(max(0, limit)))
        case .show(let run):
            writer.write(UInt8(2))
            writer.writeVarint(run)
        case .logs(let run, let job, let attempt, let offset, let waitMs):
            writer.write(UInt8(3))
            writer.writeVarint(run)
            writer.writeString(job)
            writer.writeVarint(UInt64(max(0, attempt)))
            writer.writeVarint(signed: offset)
            writer.writeVarint(signed: waitMs)
        case .status(let repo, let sha):
            writer.write(UInt8(4))
            writer.writeString(repo)
            writer.writeString(sha)
        case .cancel(let run):
            writer.write(UInt8(5))
            writer.writeVarint(run)
        case .rerun(let run, let failedOnly):
            writer.write(UInt8(6))
            writer.writeVarint(run)
            writer.write(failedOnly)
        case .start(let repo, let ref, let request):
            writer.write(UInt8(7))
            writer.writeString(repo)
            writer.writeString(ref)
            writer.writeString(request)
        case .secretSet(let repo, let name, let value):
            writer.write(UInt8(8))
            writer.writeString(repo)
            writer.writeString(name)
            writer.writeBytes(value)
        case .secretList(let repo):
            writer.write(UInt8(9))
            writer.writeString(repo)
        case .secretDelete(let repo, let name):
            writer.write(UInt8(10))
            writer.writeString(repo)
            writer.writeString(name)
        case .artifacts(let run, let job):
            writer.write(UInt8(11))
            writer.writeVarint(run)
            writer.writeOptionalBytes(job.map { Array($0.utf8) })
        case .caches(let repo):
            writer.write(UInt8(12))
            writer.writeString(repo)
        case .cacheDelete(let repo, let key):
            writer.write(UInt8(13))
            writer.writeString(repo)
            writer.writeOptionalBytes(key.map { Array($0.utf8) })
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 1: self = .list(repo: try reader.readString(limit: limits.forgeRepoNameBytesMax), limit: try reader.readCount(limit: Self.listMax))
        case 2: self = .show(run: try reader.readVarint())
        case 3:
            let run = try reader.readVarint()
            let job = try reader.readString(limit: CIWire.plannedNameBytesMax(limits))
            let attempt = try reader.readCount(limit: 1 << 16)
            let offset = try reader.readSignedVarint()
            let waitMs = try reader.readSignedVarint()
            guard offset >= 0, (0...Self.logWaitMsMax).contains(waitMs) else { throw .invalid("a log offset must be ≥ 0 and a wait 0 to \(Self.logWaitMsMax) ms") }
            self = .logs(run: run, job: job, attempt: attempt, offset: offset, waitMs: waitMs)
        case 4: self = .status(repo: try reader.readString(limit: limits.forgeRepoNameBytesMax), sha: try reader.readString(limit: 64))
        case 5: self = .cancel(run: try reader.readVarint())
        case 6: self = .rerun(run: try reader.readVarint(), failedOnly: try reader.readBool())
        case 7:
            self = .start(
                repo: try reader.readString(limit: limits.forgeRepoNameBytesMax), ref: try reader.readString(limit: limits.forgeRefNameBytesMax),
                request: try reader.readString(limit: 64))
        case 8:
            self = .secretSet(
                repo: try reader.readString(limit: limits.forgeRepoNameBytesMax), name: try reader.readString(limit: limits.ciNameBytesMax),
                value: try reader.readBytes(limit: limits.ciSecretBytesMax))
        case 9: self = .secretList(repo: try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 10: self = .secretDelete(repo: try reader.readString(limit: limits.forgeRepoNameBytesMax), name: try reader.readString(limit: limits.ciNameBytesMax))
        case 11:
            let run = try reader.readVarint()
            let job = try reader.readOptionalBytes(limit: CIWire.plannedNameBytesMax(limits))
            guard job.map({ String(validating: $0, as: UTF8.self) != nil }) ?? true else { throw .invalid("a job name is not UTF-8") }
            self = .artifacts(run: run, job: job.map { String(decoding: $0, as: UTF8.self) })
        case 12: self = .caches(repo: try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 13:
            let repo = try reader.readString(limit: limits.forgeRepoNameBytesMax)
            let key = try reader.readOptionalBytes(limit: limits.ciCacheKeyBytesMax)
            guard key.map({ String(validating: $0, as: UTF8.self) != nil }) ?? true else { throw .invalid("a cache key is not UTF-8") }
            self = .cacheDelete(repo: repo, key: key.map { String(decoding: $0, as: UTF8.self) })
        case let tag: throw .unknownTag(tag, context: "CI call")
        }
        try reader.expectEnd()
    }

    /// The repository a call is about, when the call names it (a run's repository is learnt
    /// from the run).
    public var repo: String? {
        switch self {
        case .list(let repo, _), .status(let repo, _), .start(let repo, _, _), .secretSet(let repo, _, _), .secretList(let repo), .secretDelete(let repo, _),
            .caches(let repo), .cacheDelete(let repo, _):
            repo
        case .show, .logs, .cancel, .rerun, .artifacts: nil
        }
    }
}

/// One try of a job as its log knows it: the job of the job system, its attempt there, and
/// whether its log is complete.
public struct CILogAttempt: Sendable, Equatable {
    public var jobID: UInt64
    public var number: Int
    public var bytes: Int64
    public var ended: Bool

    public init(jobID: UInt64, number: Int, bytes: Int64, ended: Bool) {
        self.jobID = jobID
        self.number = number
        self.bytes = bytes
        self.ended = ended
    }
}

/// A piece of a job's log.
public struct CILogPage: Sendable, Equatable {
    /// Every try of the job, in order.
    public var attempts: [CILogAttempt]
    /// Which of them this page is of (1-based).
    public var attempt: Int
    public var offset: Int64
    public var bytes: [UInt8]
    /// No byte will follow: the try ended and its whole log was read.
    public var complete: Bool

    public init(attempts: [CILogAttempt], attempt: Int, offset: Int64, bytes: [UInt8], complete: Bool) {
        self.attempts = attempts
        self.attempt = attempt
        self.offset = offset
        self.bytes = bytes
        self.complete = complete
    }

    /// Most log bytes one answer carries.
    public static let bytesMax = 4 << 20
}

/// A CI answer.
public enum CIAnswer: Sendable, Equatable {
    case runs([CIRun])
    case run(CIRun)
    case log(CILogPage)
    case statuses([CommitStatus])
    /// Names (a repository's CI secrets).
    case names([String])
    case artifacts([CIArtifact])
    case caches([CICache])

    /// The runs of a `.runs` answer (nil for another answer).
    public var runs: [CIRun]? {
        if case .runs(let runs) = self { return runs }
        return nil
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .runs(let runs):
            writer.write(UInt8(1))
            writer.writeVarint(UInt64(runs.count))
            for run in runs { writer.writeBytes(run.encoded) }
        case .run(let run):
            writer.write(UInt8(2))
            writer.writeBytes(run.encoded)
        case .log(let page):
            writer.write(UInt8(3))
            writer.writeVarint(UInt64(page.attempts.count))
            for attempt in page.attempts {
                writer.writeVarint(attempt.jobID)
                writer.writeVarint(UInt64(attempt.number))
                writer.writeVarint(signed: attempt.bytes)
                writer.write(attempt.ended)
            }
            writer.writeVarint(UInt64(page.attempt))
            writer.writeVarint(signed: page.offset)
            writer.writeBytes(page.bytes)
            writer.write(page.complete)
        case .statuses(let statuses):
            writer.write(UInt8(4))
            writer.writeVarint(UInt64(statuses.count))
            for status in statuses { status.write(to: &writer) }
        case .names(let names):
            writer.write(UInt8(5))
            writer.writeVarint(UInt64(names.count))
            for name in names { writer.writeString(name) }
        case .artifacts(let artifacts):
            writer.write(UInt8(6))
            writer.writeVarint(UInt64(artifacts.count))
            for artifact in artifacts {
                writer.writeString(artifact.job)
                writer.writeString(artifact.path)
                writer.writeBytes(artifact.hash)
                writer.writeVarint(artifact.size)
            }
        case .caches(let caches):
            writer.write(UInt8(7))
            writer.writeVarint(UInt64(caches.count))
            for cache in caches {
                writer.writeString(cache.key)
                writer.writeBytes(cache.hash)
                writer.writeVarint(cache.size)
                writer.writeVarint(cache.revision)
            }
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let runBytesMax = 1 << 20
        switch try reader.readByte() {
        case 1:
            var runs: [CIRun] = []
            for _ in 0..<(try reader.readCount(limit: CICall.listMax)) { runs.append(try CIRun(decoding: try reader.readBytes(limit: runBytesMax), limits: limits)) }
            self = .runs(runs)
        case 2: self = .run(try CIRun(decoding: try reader.readBytes(limit: runBytesMax), limits: limits))
        case 3:
            var attempts: [CILogAttempt] = []
            for _ in 0..<(try reader.readCount(limit: 4 * CIWire.attemptsMax(limits))) {
                attempts.append(
                    CILogAttempt(jobID: try reader.readVarint(), number: try reader.readCount(limit: 1 << 16), bytes: try reader.readSignedVarint(), ended: try reader.readBool()))
            }
            let attempt = try reader.readCount(limit: attempts.count)
            let offset = try reader.readSignedVarint()
            let bytes = try reader.readBytes(limit: CILogPage.bytesMax)
            self = .log(CILogPage(attempts: attempts, attempt: attempt, offset: offset, bytes: bytes, complete: try reader.readBool()))
        case 4:
            var statuses: [CommitStatus] = []
            for _ in 0..<(try reader.readCount(limit: 4 * limits.ciJobsPerPipelineMax)) { statuses.append(try CommitStatus(from: &reader, limits: limits)) }
            self = .statuses(statuses)
        case 5:
            var names: [String] = []
            for _ in 0..<(try reader.readCount(limit: limits.ciSecretsPerRepoMax)) { names.append(try reader.readString(limit: limits.ciNameBytesMax)) }
            self = .names(names)
        case 6:
            var artifacts: [CIArtifact] = []
            for _ in 0..<(try reader.readCount(limit: CIWire.artifactsListedMax(limits))) {
                artifacts.append(
                    CIArtifact(
                        job: try reader.readString(limit: CIWire.plannedNameBytesMax(limits)), path: try reader.readString(limit: limits.ciArtifactPathBytesMax),
                        hash: try reader.readBytes(limit: 32), size: try reader.readVarint()))
            }
            self = .artifacts(artifacts)
        case 7:
            var caches: [CICache] = []
            for _ in 0..<(try reader.readCount(limit: CIWire.cachesListedMax)) {
                caches.append(
                    CICache(
                        key: try reader.readString(limit: limits.ciCacheKeyBytesMax), hash: try reader.readBytes(limit: 32), size: try reader.readVarint(),
                        revision: try reader.readVarint()))
            }
            self = .caches(caches)
        case let tag: throw .unknownTag(tag, context: "CI answer")
        }
        try reader.expectEnd()
    }
}
