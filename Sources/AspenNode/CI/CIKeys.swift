import AspenBlob
import AspenCI
import AspenCore
import AspenLayer

/// Where CI keeps its runs in the key-value store (DESIGN §15), under `("aspen", "ci")`:
///
/// - `("seq")`: the last run id given;
/// - `("run", ID)`: a run (`CIRun`), rewritten by the leader's scheduler as its jobs move;
/// - `("pipe", ID)`: the run's pipeline, normalized (`Pipeline.encoded()`), so that a rerun
///   runs exactly what the first run ran;
/// - `("active", ID)` → REPO: a run not yet ended (what the scheduler looks at);
/// - `("repo", REPO, MAX - ID)`: a repository's runs, newest first;
/// - `("idem", REPO, REF, SHA, PIPELINE)` → ID: the run of one pushed commit (a push starts one);
/// - `("request", REPO, ID)` → ID: a manual run's request id (a retried call finds its run);
/// - `("status", REPO, SHA, CONTEXT)`: a commit's statuses (`CommitStatus`);
/// - `("group", REPO, GROUP)` → ID: the run holding a concurrency group;
/// - `("try", RUN, JOB, JOBID, ATTEMPT)`: one try of a job (`CILogTry`), and under
///   `("log", RUN, JOB, JOBID, ATTEMPT, SEQ)` its log's chunks (`CILogChunk`): a `BlobReference`
///   to the bytes in the blob store (which keeps them from collection), or the bytes themselves
///   when there are at most `CILogChunk.inlineBytesMax` of them.
enum CIKeys {
    static let space = Subspace(["aspen", "ci"])
    static let sequence = space.pack(["seq"])
    static let runs = space.subspace(["run"])
    static let repos = space.subspace(["repo"])
    static func run(_ id: UInt64) -> [UInt8] { runs.pack([.int(Int64(id))]) }
    static func pipeline(_ id: UInt64) -> [UInt8] { space.pack(["pipe", .int(Int64(id))]) }
    static let active = space.subspace(["active"])
    static func active(_ id: UInt64) -> [UInt8] { active.pack([.int(Int64(id))]) }
    static func repoRuns(_ repo: String) -> Subspace { space.subspace(["repo", .string(repo)]) }
    static func repoRun(_ repo: String, _ id: UInt64) -> [UInt8] { repoRuns(repo).pack([.int(Int64.max - Int64(id))]) }
    static func idempotency(_ repo: String, ref: String, sha: String, pipeline: String) -> [UInt8] {
        space.pack(["idem", .string(repo), .string(ref), .string(sha), .string(pipeline)])
    }
    static func request(_ repo: String, _ request: String) -> [UInt8] { space.pack(["request", .string(repo), .string(request)]) }
    static func statuses(_ repo: String, _ sha: String) -> Subspace { space.subspace(["status", .string(repo), .string(sha)]) }
    static func status(_ repo: String, _ sha: String, _ context: String) -> [UInt8] { statuses(repo, sha).pack([.string(context)]) }
    static func group(_ repo: String, _ group: String) -> [UInt8] { space.pack(["group", .string(repo), .string(group)]) }
    static func tries(_ run: UInt64) -> Subspace { space.subspace(["try", .int(Int64(run))]) }
    static func tries(_ run: UInt64, _ job: String) -> Subspace { tries(run).subspace([.string(job)]) }
    static func logs(_ run: UInt64) -> Subspace { space.subspace(["log", .int(Int64(run))]) }
    static func tryKey(_ run: UInt64, _ job: String, jobID: UInt64, attempt: Int) -> [UInt8] {
        tries(run, job).pack([.int(Int64(jobID)), .int(Int64(attempt))])
    }
    static func chunks(_ run: UInt64, _ job: String, jobID: UInt64, attempt: Int) -> Subspace {
        logs(run).subspace([.string(job), .int(Int64(jobID)), .int(Int64(attempt))])
    }
    static func chunk(_ run: UInt64, _ job: String, jobID: UInt64, attempt: Int, seq: Int) -> [UInt8] {
        chunks(run, job, jobID: jobID, attempt: attempt).pack([.int(Int64(seq))])
    }

    /// `("artifact", RUN, JOB, PATH)` → `BlobReference`: a file a job kept.
    static func artifacts(_ run: UInt64) -> Subspace { space.subspace(["artifact", .int(Int64(run))]) }
    static func artifacts(_ run: UInt64, _ job: String) -> Subspace { artifacts(run).subspace([.string(job)]) }
    static func artifact(_ run: UInt64, _ job: String, _ path: String) -> [UInt8] { artifacts(run, job).pack([.string(path)]) }
    /// `("cache", REPO, KEY)` → `BlobReference`: a cache's archive (a tar of its paths).
    static func caches(_ repo: String) -> Subspace { space.subspace(["cache", .string(repo)]) }
    /// Every repository's caches.
    static var allCaches: Subspace { space.subspace(["cache"]) }
    static func cache(_ repo: String, _ key: String) -> [UInt8] { caches(repo).pack([.string(key)]) }

    /// The integers that end a key of `subspace`.
    static func integers(in subspace: Subspace, _ key: [UInt8]) -> [Int64]? {
        guard let tuple = try? subspace.unpack(key) else { return nil }
        var found: [Int64] = []
        for element in tuple.elements {
            guard case .int(let value) = element else { return nil }
            found.append(value)
        }
        return found
    }
}

/// One try of a job as its worker records it: started, and (once ended) its log's length.
struct CILogTry: Sendable, Equatable {
    var node: UInt64
    var ended: Bool
    var bytes: Int64

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeVarint(node)
        writer.write(ended)
        writer.writeVarint(signed: bytes)
        return writer.bytes
    }

    init(node: UInt64, ended: Bool, bytes: Int64) {
        self.node = node
        self.ended = ended
        self.bytes = bytes
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown CI try version") }
        node = try reader.readVarint()
        ended = try reader.readBool()
        self.bytes = try reader.readSignedVarint()
        try reader.expectEnd()
    }
}

/// One stored piece of a try's log. A chunk of at most `inlineBytesMax` bytes (a trivial job's
/// whole log, a quiet job's flush) is kept in its key-value record: one write instead of a blob
/// add (two copies, two fsyncs, a write of its own) and then the reference. Only the first
/// `inlineBytesPerTryMax` bytes of a try go so; the rest, and larger chunks, go to the blob
/// store, so that a job printing slowly for hours does not put its whole log through Raft.
enum CILogChunk: Equatable {
    case blob(BlobReference)
    case inline([UInt8])

    static let inlineBytesMax = 4096
    static let inlineBytesPerTryMax = 64 * 1024
    /// NUL, "aspen-log", NUL: no blob reference starts so.
    static let inlineMarker: [UInt8] = [0] + Array("aspen-log".utf8) + [0]

    var size: UInt64 {
        switch self {
        case .blob(let reference): reference.size
        case .inline(let bytes): UInt64(bytes.count)
        }
    }

    var encoded: [UInt8] {
        switch self {
        case .blob(let reference): reference.encoded
        case .inline(let bytes): Self.inlineMarker + bytes
        }
    }

    /// Nil unless `value` is a reference, or the marker and at most `inlineBytesMax` bytes.
    init?(decoding value: [UInt8]) {
        if let reference = BlobReference(decoding: value) {
            self = .blob(reference)
        } else if value.starts(with: Self.inlineMarker), value.count - Self.inlineMarker.count <= Self.inlineBytesMax {
            self = .inline(Array(value[Self.inlineMarker.count...]))
        } else {
            return nil
        }
    }
}
