import AspenCore

/// A pipeline as a run stores it: AspenCore's byte codec, a format version first, fields in a
/// fixed order, lists in the pipeline's order and environment variables sorted, so that equal
/// pipelines encode to equal bytes. A condition is stored as its normal form's text.
extension Pipeline {
    static let formatVersion: UInt8 = 1

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 1024)
        writer.write(Self.formatVersion)
        Self.write(triggers, to: &writer)
        writer.write(concurrency != nil)
        if let concurrency {
            writer.writeString(concurrency.group)
            writer.write(concurrency.cancelInProgress)
        }
        writer.writeVarint(UInt64(jobs.count))
        for job in jobs { Self.write(job, to: &writer) }
        return writer.bytes
    }

    /// Decodes a stored pipeline: every count and length is checked against `limits` before
    /// anything is allocated, and the result passes the checks a file does.
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(PipelineError) {
        guard bytes.count <= limits.ciPipelineEncodedBytesMax else {
            throw PipelineError(
                .overLimit, "a stored pipeline of \(bytes.count) bytes exceeds ciPipelineEncodedBytesMax (\(limits.ciPipelineEncodedBytesMax))")
        }
        var decoder = PipelineDecoder(reader: ByteReader(bytes), limits: limits)
        guard try decoder.byte() == Self.formatVersion else { throw PipelineError(.encoding, "a stored pipeline has an unknown format version") }
        let triggers = try decoder.triggers()
        var concurrency: Concurrency?
        if try decoder.bool() {
            concurrency = Concurrency(group: try decoder.string(limit: limits.ciCacheKeyBytesMax), cancelInProgress: try decoder.bool())
        }
        var jobs: [Job] = []
        for _ in 0..<(try decoder.count(limit: limits.ciJobsPerPipelineMax)) { jobs.append(try decoder.job()) }
        try decoder.end()
        try self.init(triggers: triggers, concurrency: concurrency, jobs: jobs, limits: limits)
    }

    static func write(_ triggers: Triggers, to writer: inout ByteWriter) {
        writer.write(UInt8(triggers.push != nil ? 1 : 0) | (triggers.patch != nil ? 2 : 0) | (triggers.manual ? 4 : 0))
        if let push = triggers.push {
            for globs in [push.branches, push.tags, push.paths, push.pathsIgnore] { writeStrings(globs.map(\.pattern), to: &writer) }
        }
        if let patch = triggers.patch {
            for globs in [patch.branches, patch.paths, patch.pathsIgnore] { writeStrings(globs.map(\.pattern), to: &writer) }
        }
    }

    static func write(_ job: Job, to writer: inout ByteWriter) {
        writer.writeString(job.name)
        writer.writeString(job.run)
        writeStrings(job.needs, to: &writer)
        writer.writeOptionalBytes(job.condition.map { Array($0.description.utf8) })
        writer.writeVarint(UInt64(max(0, job.timeoutMs)))
        writeStrings(job.artifacts, to: &writer)
        writer.write(job.cache != nil)
        if let cache = job.cache {
            writer.writeString(cache.key)
            writeStrings(cache.paths, to: &writer)
        }
        writeStrings(job.tags, to: &writer)
        writer.writeVarint(UInt64(job.matrix.count))
        for axis in job.matrix {
            writer.writeString(axis.name)
            writeStrings(axis.values, to: &writer)
        }
        writer.write(job.failFast)
        writer.write(job.maxParallel != nil)
        if let maxParallel = job.maxParallel { writer.writeVarint(UInt64(max(0, maxParallel))) }
        writer.write(job.retry != nil)
        if let retry = job.retry {
            writer.writeVarint(UInt64(max(0, retry.retriesMax)))
            writer.writeVarint(UInt64(retry.onExitCodes.count))
            for code in retry.onExitCodes { writer.writeVarint(UInt64(max(0, code))) }
        }
        writer.writeVarint(UInt64(job.env.count))
        for (name, value) in job.env.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            writer.writeString(name)
            writer.writeString(value)
        }
        writeStrings(job.secrets, to: &writer)
        writer.write(job.continueOnError)
    }

    static func writeStrings(_ strings: [String], to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(strings.count))
        for string in strings { writer.writeString(string) }
    }
}

/// The reading side of the codec: each read bounded, each failure a `PipelineError`.
struct PipelineDecoder {
    var reader: ByteReader
    let limits: Limits

    static func failure(_ error: DecodingError) -> PipelineError {
        PipelineError(.encoding, "a stored pipeline does not decode: \(error)")
    }

    mutating func byte() throws(PipelineError) -> UInt8 {
        do { return try reader.readByte() } catch { throw Self.failure(error) }
    }

    mutating func bool() throws(PipelineError) -> Bool {
        do { return try reader.readBool() } catch { throw Self.failure(error) }
    }

    mutating func count(limit: Int) throws(PipelineError) -> Int {
        do { return try reader.readCount(limit: limit) } catch { throw Self.failure(error) }
    }

    mutating func string(limit: Int) throws(PipelineError) -> String {
        do { return try reader.readString(limit: limit) } catch { throw Self.failure(error) }
    }

    mutating func strings(count countLimit: Int, bytes bytesLimit: Int) throws(PipelineError) -> [String] {
        var strings: [String] = []
        for _ in 0..<(try count(limit: countLimit)) { strings.append(try string(limit: bytesLimit)) }
        return strings
    }

    mutating func end() throws(PipelineError) {
        do { try reader.expectEnd() } catch { throw Self.failure(error) }
    }

    mutating func globs() throws(PipelineError) -> [Glob] {
        var globs: [Glob] = []
        for pattern in try strings(count: limits.ciPatternsMax, bytes: limits.ciPatternBytesMax) { globs.append(try Glob(pattern, limits: limits)) }
        return globs
    }

    mutating func triggers() throws(PipelineError) -> Triggers {
        let flags = try byte()
        guard flags & ~7 == 0 else { throw PipelineError(.encoding, "a stored pipeline has unknown trigger flags \(flags)") }
        var triggers = Triggers(manual: flags & 4 != 0)
        if flags & 1 != 0 {
            triggers.push = PushTrigger(branches: try globs(), tags: try globs(), paths: try globs(), pathsIgnore: try globs())
        }
        if flags & 2 != 0 { triggers.patch = PatchTrigger(branches: try globs(), paths: try globs(), pathsIgnore: try globs()) }
        return triggers
    }

    mutating func job() throws(PipelineError) -> Job {
        var job = Job(name: try string(limit: limits.ciJobNameBytesMax), run: try string(limit: limits.ciRunBytesMax))
        job.needs = try strings(count: limits.ciJobsPerPipelineMax, bytes: limits.ciJobNameBytesMax)
        if try bool() { job.condition = try Condition(parsing: try string(limit: limits.ciConditionBytesMax), limits: limits) }
        job.timeoutMs = Int64(try count(limit: Int(limits.ciJobTimeoutMsMax)))
        job.artifacts = try strings(count: limits.ciPatternsMax, bytes: limits.ciPatternBytesMax)
        if try bool() {
            job.cache = Cache(key: try string(limit: limits.ciCacheKeyBytesMax), paths: try strings(count: limits.ciPatternsMax, bytes: limits.ciPatternBytesMax))
        }
        job.tags = try strings(count: limits.ciWorkerTagsPerJobMax, bytes: limits.ciNameBytesMax)
        for _ in 0..<(try count(limit: limits.ciMatrixAxesMax)) {
            job.matrix.append(
                MatrixAxis(name: try string(limit: limits.ciNameBytesMax), values: try strings(count: limits.ciMatrixValuesMax, bytes: limits.ciNameBytesMax)))
        }
        job.failFast = try bool()
        if try bool() { job.maxParallel = try count(limit: limits.ciJobsPerPipelineMax) }
        if try bool() { job.retry = try retry() }
        job.env = try environment()
        job.secrets = try strings(count: limits.ciSecretsPerJobMax, bytes: limits.ciNameBytesMax)
        job.continueOnError = try bool()
        return job
    }

    mutating func retry() throws(PipelineError) -> RetryPolicy {
        var retry = RetryPolicy(retriesMax: try count(limit: limits.ciJobRetriesMax))
        for _ in 0..<(try count(limit: limits.ciRetryExitCodesMax)) { retry.onExitCodes.append(try count(limit: 255)) }
        return retry
    }

    /// Names strictly ascending, as the encoder writes them: no name twice, one encoding per value.
    mutating func environment() throws(PipelineError) -> [String: String] {
        var env: [String: String] = [:]
        var previous: String?
        for _ in 0..<(try count(limit: limits.ciEnvVarsMax)) {
            let name = try string(limit: limits.ciNameBytesMax)
            if let previous, !previous.utf8.lexicographicallyPrecedes(name.utf8) {
                throw PipelineError(.encoding, "a stored pipeline's environment names are out of order")
            }
            env[name] = try string(limit: limits.ciEnvValueBytesMax)
            previous = name
        }
        return env
    }
}
