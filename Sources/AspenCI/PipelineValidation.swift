import AspenCore

/// The checks every pipeline passes, one small function per value, each throwing an error
/// without a place. The file parser calls them with the place of the value it read (through
/// `located(at:)`); a pipeline built in code or decoded from storage goes through `check(job:)`.
enum PipelineValidation {
    static func check(job: Job, limits: Limits) throws(PipelineError) {
        try jobName(job.name, limits: limits)
        let axes = job.matrix.map(\.name)
        try matrix(job.matrix, limits: limits)
        try run(job.run, axes: axes, limits: limits)
        try count(job.needs.count, max: limits.ciJobsPerPipelineMax, limitName: "ciJobsPerPipelineMax", what: "needs")
        for need in job.needs { try jobName(need, limits: limits) }
        try timeout(job.timeoutMs, limits: limits)
        try count(job.artifacts.count, max: limits.ciPatternsMax, limitName: "ciPatternsMax", what: "artifacts")
        for path in job.artifacts { try relativePath(path, what: "an artifact", limits: limits) }
        if let cache = job.cache { try self.cache(cache, axes: axes, limits: limits) }
        try count(job.tags.count, max: limits.ciWorkerTagsPerJobMax, limitName: "ciWorkerTagsPerJobMax", what: "tags")
        for tag in job.tags { try tagName(tag, limits: limits) }
        try unique(job.tags, what: "tag")
        if let maxParallel = job.maxParallel { try self.maxParallel(maxParallel, limits: limits) }
        if let retry = job.retry { try self.retry(retry, limits: limits) }
        try count(job.env.count, max: limits.ciEnvVarsMax, limitName: "ciEnvVarsMax", what: "env")
        for (name, value) in job.env.sorted(by: { $0.key < $1.key }) { try environment(name, value, axes: axes, limits: limits) }
        try count(job.secrets.count, max: limits.ciSecretsPerJobMax, limitName: "ciSecretsPerJobMax", what: "secrets")
        for secret in job.secrets { try environmentName(secret, what: "a secret", limits: limits) }
        try unique(job.secrets, what: "secret")
    }

    static func check(triggers: Triggers, limits: Limits) throws(PipelineError) {
        var lists: [(String, [Glob])] = []
        if let push = triggers.push {
            lists += [("push.branches", push.branches), ("push.tags", push.tags), ("push.paths", push.paths), ("push.paths_ignore", push.pathsIgnore)]
        }
        if let patch = triggers.patch {
            lists += [("patch.branches", patch.branches), ("patch.paths", patch.paths), ("patch.paths_ignore", patch.pathsIgnore)]
        }
        for (name, globs) in lists { try count(globs.count, max: limits.ciPatternsMax, limitName: "ciPatternsMax", what: name) }
    }

    static func check(concurrency: Concurrency?, limits: Limits) throws(PipelineError) {
        guard let concurrency else { return }
        try text(concurrency.group, what: "concurrency.group", max: limits.ciCacheKeyBytesMax, limitName: "ciCacheKeyBytesMax")
        try Interpolation.check(concurrency.group, axes: [], field: "concurrency.group")
    }

    // MARK: Values

    static func jobName(_ name: String, limits: Limits) throws(PipelineError) {
        guard name.utf8.count <= limits.ciJobNameBytesMax else {
            throw PipelineError(.overLimit, "job name '\(name.prefix(80))' exceeds ciJobNameBytesMax (\(limits.ciJobNameBytesMax))")
        }
        guard Names.isJobName(name) else {
            throw PipelineError(.invalidValue, "'\(name)' is not a job name: a letter or digit, then letters, digits, '_', '.' or '-'")
        }
    }

    static func run(_ run: String, axes: [String], limits: Limits) throws(PipelineError) {
        try text(run, what: "run", max: limits.ciRunBytesMax, limitName: "ciRunBytesMax")
        try Interpolation.check(run, axes: axes, field: "run")
    }

    static func timeout(_ timeoutMs: Int64, limits: Limits) throws(PipelineError) {
        guard timeoutMs > 0, timeoutMs <= limits.ciJobTimeoutMsMax else {
            throw PipelineError(.overLimit, "a timeout of \(timeoutMs) ms is not above 0 and within ciJobTimeoutMsMax (\(limits.ciJobTimeoutMsMax) ms)")
        }
    }

    static func relativePath(_ path: String, what: String, limits: Limits) throws(PipelineError) {
        guard path.utf8.count <= limits.ciPatternBytesMax else {
            throw PipelineError(.overLimit, "\(what) path of \(path.utf8.count) bytes exceeds ciPatternBytesMax (\(limits.ciPatternBytesMax))")
        }
        guard Names.isRelativePath(path) else {
            throw PipelineError(.invalidValue, "\(what) path '\(path)' must be relative to the checkout, without '..' or empty segments")
        }
    }

    static func cache(_ cache: Cache, axes: [String], limits: Limits) throws(PipelineError) {
        try text(cache.key, what: "cache.key", max: limits.ciCacheKeyBytesMax, limitName: "ciCacheKeyBytesMax")
        try Interpolation.check(cache.key, axes: axes, field: "cache.key")
        guard !cache.paths.isEmpty else { throw PipelineError(.invalidValue, "cache.paths must name at least one path") }
        try count(cache.paths.count, max: limits.ciPatternsMax, limitName: "ciPatternsMax", what: "cache.paths")
        for path in cache.paths { try relativePath(path, what: "a cache", limits: limits) }
    }

    static func tagName(_ tag: String, limits: Limits) throws(PipelineError) {
        try name(tag, what: "worker tag", limits: limits)
        guard Names.isTagName(tag) else {
            throw PipelineError(.invalidValue, "'\(tag)' is not a worker tag: a letter or digit, then letters, digits or '_ . : = / -'")
        }
    }

    static func matrix(_ axes: [MatrixAxis], limits: Limits) throws(PipelineError) {
        try count(axes.count, max: limits.ciMatrixAxesMax, limitName: "ciMatrixAxesMax", what: "matrix axes")
        for axis in axes {
            try axisName(axis.name, limits: limits)
            guard !axis.values.isEmpty else { throw PipelineError(.invalidValue, "matrix axis '\(axis.name)' has no values") }
            try count(axis.values.count, max: limits.ciMatrixValuesMax, limitName: "ciMatrixValuesMax", what: "values of matrix axis '\(axis.name)'")
            for value in axis.values { try matrixValue(value, limits: limits) }
            try unique(axis.values, what: "value of matrix axis '\(axis.name)'")
        }
        try unique(axes.map(\.name), what: "matrix axis")
        try unique(axes.map { MatrixAxis.environmentName($0.name) }, what: "matrix axis variable")
    }

    static func axisName(_ axis: String, limits: Limits) throws(PipelineError) {
        try name(axis, what: "matrix axis", limits: limits)
        guard Names.isAxisName(axis) else {
            throw PipelineError(.invalidValue, "'\(axis)' is not a matrix axis name: a letter or '_', then letters, digits, '_' or '-'")
        }
    }

    static func matrixValue(_ value: String, limits: Limits) throws(PipelineError) {
        try name(value, what: "matrix value", limits: limits)
        guard Names.isMatrixValue(value) else {
            throw PipelineError(.invalidValue, "matrix value '\(value)' may hold only letters, digits and '_ . + : / @ -' (it reaches shell scripts)")
        }
    }

    static func maxParallel(_ value: Int, limits: Limits) throws(PipelineError) {
        guard (1...limits.ciJobsPerPipelineMax).contains(value) else {
            throw PipelineError(.invalidValue, "max_parallel must be 1 to ciJobsPerPipelineMax (\(limits.ciJobsPerPipelineMax)), not \(value)")
        }
    }

    static func retry(_ retry: RetryPolicy, limits: Limits) throws(PipelineError) {
        try retriesMax(retry.retriesMax, limits: limits)
        try count(retry.onExitCodes.count, max: limits.ciRetryExitCodesMax, limitName: "ciRetryExitCodesMax", what: "retry.on_exit")
        for code in retry.onExitCodes { try exitCode(code) }
        try unique(retry.onExitCodes.map(String.init), what: "retry exit code")
    }

    static func retriesMax(_ value: Int, limits: Limits) throws(PipelineError) {
        guard (1...limits.ciJobRetriesMax).contains(value) else {
            throw PipelineError(.invalidValue, "retry.max must be 1 to ciJobRetriesMax (\(limits.ciJobRetriesMax)), not \(value)")
        }
    }

    static func exitCode(_ code: Int) throws(PipelineError) {
        guard (1...255).contains(code) else { throw PipelineError(.invalidValue, "an exit code to retry on must be 1 to 255, not \(code)") }
    }

    static func environment(_ name: String, _ value: String, axes: [String], limits: Limits) throws(PipelineError) {
        try environmentName(name, what: "an environment variable", limits: limits)
        guard value.utf8.count <= limits.ciEnvValueBytesMax else {
            throw PipelineError(.overLimit, "env value of \(name) (\(value.utf8.count) bytes) exceeds ciEnvValueBytesMax (\(limits.ciEnvValueBytesMax))")
        }
        try Interpolation.check(value, axes: axes, field: "env \(name)")
    }

    static func environmentName(_ name: String, what: String, limits: Limits) throws(PipelineError) {
        try self.name(name, what: what, limits: limits)
        guard Names.isEnvironmentName(name) else {
            throw PipelineError(.invalidValue, "'\(name)' is not the name of \(what): a letter or '_', then letters, digits or '_'")
        }
    }

    // MARK: Shared

    static func name(_ name: String, what: String, limits: Limits) throws(PipelineError) {
        guard name.utf8.count <= limits.ciNameBytesMax else {
            throw PipelineError(.overLimit, "\(what) '\(name.prefix(80))…' exceeds ciNameBytesMax (\(limits.ciNameBytesMax))")
        }
    }

    static func text(_ text: String, what: String, max: Int, limitName: String) throws(PipelineError) {
        guard !text.isEmpty else { throw PipelineError(.invalidValue, "\(what) must not be empty") }
        guard text.utf8.count <= max else {
            throw PipelineError(.overLimit, "\(what) of \(text.utf8.count) bytes exceeds \(limitName) (\(max))")
        }
    }

    static func count(_ count: Int, max: Int, limitName: String, what: String) throws(PipelineError) {
        guard count <= max else { throw PipelineError(.overLimit, "\(count) \(what) exceed \(limitName) (\(max))") }
    }

    static func unique(_ items: [String], what: String) throws(PipelineError) {
        var seen = Set<String>()
        for item in items where !seen.insert(item).inserted {
            throw PipelineError(.invalidValue, "\(what) '\(item)' is listed twice")
        }
    }
}

extension PipelineError {
    /// The error placed at `location`, unless it already has a place.
    func located(at location: SourceLocation?) -> PipelineError {
        guard line == 0, let location else { return self }
        var placed = self
        placed.line = location.line
        placed.column = location.column
        return placed
    }
}
