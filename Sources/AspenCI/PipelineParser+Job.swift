import AspenCore
import Yams

/// Runs a check that throws an error without a place, and gives it `location`.
func placed(_ location: SourceLocation?, _ check: () throws(PipelineError) -> Void) throws(PipelineError) {
    do {
        try check()
    } catch {
        throw error.located(at: location)
    }
}

extension PipelineParser {
    static let jobKeys = [
        "run", "needs", "if", "timeout", "artifacts", "cache", "tags", "matrix", "fail_fast", "max_parallel", "retry", "env", "secrets",
        "continue_on_error",
    ]

    mutating func parseJobs(_ node: Node, owner: SourceLocation?) throws(PipelineError) -> [Job] {
        let mapping = try StrictMapping(node, context: "jobs", allowed: nil, owner: owner)
        guard !mapping.entries.isEmpty else {
            throw PipelineError(.missingKey, "jobs must define at least one job", at: YAMLRead.location(node) ?? owner)
        }
        guard mapping.entries.count <= limits.ciJobsPerPipelineMax else {
            throw PipelineError(
                .overLimit, "\(mapping.entries.count) jobs exceed ciJobsPerPipelineMax (\(limits.ciJobsPerPipelineMax))", at: owner)
        }
        var jobs: [Job] = []
        for entry in mapping.entries {
            try placed(entry.keyLocation) { () throws(PipelineError) in try PipelineValidation.jobName(entry.key, limits: limits) }
            locator.jobs[entry.key] = entry.keyLocation
            jobs.append(try parseJob(entry.key, entry.value, owner: entry.keyLocation))
        }
        return jobs
    }

    mutating func parseJob(_ name: String, _ node: Node, owner: SourceLocation?) throws(PipelineError) -> Job {
        let context = "job '\(name)'"
        let fields = try StrictMapping(node, context: context, allowed: Self.jobKeys, owner: owner)
        let matrix = try parseMatrix(fields, context: context)
        let axes = matrix.map(\.name)
        let runNode = try fields.require("run")
        let run = try YAMLRead.text(runNode, what: "run in \(context)")
        try placed(YAMLRead.location(runNode)) { () throws(PipelineError) in try PipelineValidation.run(run, axes: axes, limits: limits) }
        var job = Job(name: name, run: run, timeoutMs: limits.ciJobTimeoutMsDefault, matrix: matrix)
        job.needs = try parseNeeds(fields, job: name)
        if let node = fields.value("if") { job.condition = try parseCondition(node, context: context) }
        if let node = fields.value("timeout") { job.timeoutMs = try parseTimeout(node, context: context) }
        if let node = fields.value("artifacts") { job.artifacts = try parsePaths(node, what: "artifacts in \(context)", kind: "an artifact") }
        if let node = fields.value("cache") { job.cache = try parseCache(node, owner: fields.keyLocation("cache"), context: context, axes: axes) }
        if let node = fields.value("tags") { job.tags = try parseTags(node, context: context) }
        if let node = fields.value("fail_fast") { job.failFast = try YAMLRead.bool(node, what: "fail_fast in \(context)") }
        if let node = fields.value("max_parallel") {
            job.maxParallel = try YAMLRead.int(node, what: "max_parallel in \(context)", range: 1...limits.ciJobsPerPipelineMax)
        }
        if let node = fields.value("retry") { job.retry = try parseRetry(node, owner: fields.keyLocation("retry"), context: context) }
        if let node = fields.value("env") { job.env = try parseEnv(node, owner: fields.keyLocation("env"), context: context, axes: axes) }
        if let node = fields.value("secrets") { job.secrets = try parseSecrets(node, context: context) }
        if let node = fields.value("continue_on_error") { job.continueOnError = try YAMLRead.bool(node, what: "continue_on_error in \(context)") }
        return job
    }

    func parseMatrix(_ fields: StrictMapping, context: String) throws(PipelineError) -> [MatrixAxis] {
        guard let node = fields.value("matrix") else { return [] }
        let mapping = try StrictMapping(node, context: "matrix in \(context)", allowed: nil, owner: fields.keyLocation("matrix"))
        guard !mapping.entries.isEmpty else { throw PipelineError(.invalidValue, "matrix in \(context) has no axes", at: mapping.location) }
        guard mapping.entries.count <= limits.ciMatrixAxesMax else {
            throw PipelineError(
                .overLimit, "matrix in \(context) has \(mapping.entries.count) axes, over ciMatrixAxesMax (\(limits.ciMatrixAxesMax))",
                at: mapping.location)
        }
        var axes: [MatrixAxis] = []
        var variables: [String: String] = [:]
        for entry in mapping.entries {
            try placed(entry.keyLocation) { () throws(PipelineError) in try PipelineValidation.axisName(entry.key, limits: limits) }
            let variable = MatrixAxis.environmentName(entry.key)
            if let other = variables.updateValue(entry.key, forKey: variable) {
                throw PipelineError(.invalidValue, "matrix axes '\(other)' and '\(entry.key)' in \(context) would share \(variable)", at: entry.keyLocation)
            }
            let what = "matrix axis '\(entry.key)' in \(context)"
            let values = try YAMLRead.texts(entry.value, what: what, max: limits.ciMatrixValuesMax, limitName: "ciMatrixValuesMax")
            guard !values.isEmpty else { throw PipelineError(.invalidValue, "\(what) has no values", at: YAMLRead.location(entry.value)) }
            for (value, location) in values {
                try placed(location) { () throws(PipelineError) in try PipelineValidation.matrixValue(value, limits: limits) }
            }
            try unique(values, what: "\(what): value")
            axes.append(MatrixAxis(name: entry.key, values: values.map(\.0)))
        }
        return axes
    }

    mutating func parseNeeds(_ fields: StrictMapping, job: String) throws(PipelineError) -> [String] {
        guard let node = fields.value("needs") else { return [] }
        let entries = try YAMLRead.texts(
            node, what: "needs in job '\(job)'", max: limits.ciJobsPerPipelineMax, limitName: "ciJobsPerPipelineMax")
        for (need, location) in entries {
            try placed(location) { () throws(PipelineError) in try PipelineValidation.jobName(need, limits: limits) }
        }
        locator.needs[job] = entries.map(\.1)
        return entries.map(\.0)
    }

    func parseCondition(_ node: Node, context: String) throws(PipelineError) -> Condition {
        let text = try YAMLRead.text(node, what: "if in \(context)")
        do {
            return try Condition(parsing: text, limits: limits)
        } catch {
            throw error.located(at: YAMLRead.location(node))
        }
    }

    func parseTimeout(_ node: Node, context: String) throws(PipelineError) -> Int64 {
        let text = try YAMLRead.text(node, what: "timeout in \(context)")
        guard let timeoutMs = CIDuration.parseMs(text) else {
            throw PipelineError(
                .invalidValue, "timeout in \(context) must be a duration such as 30s, 20m, 2h or 1h30m, not '\(text)'", at: YAMLRead.location(node))
        }
        try placed(YAMLRead.location(node)) { () throws(PipelineError) in try PipelineValidation.timeout(timeoutMs, limits: limits) }
        return timeoutMs
    }

    /// Relative paths; one trailing `/` (`.build/`) is dropped.
    func parsePaths(_ node: Node, what: String, kind: String) throws(PipelineError) -> [String] {
        var paths: [String] = []
        for (written, location) in try YAMLRead.texts(node, what: what, max: limits.ciPatternsMax, limitName: "ciPatternsMax") {
            let path = written.count > 1 && written.hasSuffix("/") ? String(written.dropLast()) : written
            try placed(location) { () throws(PipelineError) in try PipelineValidation.relativePath(path, what: kind, limits: limits) }
            paths.append(path)
        }
        return paths
    }

    func parseCache(_ node: Node, owner: SourceLocation?, context: String, axes: [String]) throws(PipelineError) -> Cache {
        let fields = try StrictMapping(node, context: "cache in \(context)", allowed: ["key", "paths"], owner: owner)
        let keyNode = try fields.require("key")
        let pathsNode = try fields.require("paths")
        let cache = Cache(
            key: try YAMLRead.text(keyNode, what: "cache.key in \(context)"),
            paths: try parsePaths(pathsNode, what: "cache.paths in \(context)", kind: "a cache"))
        try placed(YAMLRead.location(keyNode)) { () throws(PipelineError) in
            try PipelineValidation.text(cache.key, what: "cache.key", max: limits.ciCacheKeyBytesMax, limitName: "ciCacheKeyBytesMax")
            try Interpolation.check(cache.key, axes: axes, field: "cache.key")
        }
        try placed(YAMLRead.location(pathsNode)) { () throws(PipelineError) in try PipelineValidation.cache(cache, axes: axes, limits: limits) }
        return cache
    }

    func parseTags(_ node: Node, context: String) throws(PipelineError) -> [String] {
        let entries = try YAMLRead.texts(node, what: "tags in \(context)", max: limits.ciWorkerTagsPerJobMax, limitName: "ciWorkerTagsPerJobMax")
        for (tag, location) in entries { try placed(location) { () throws(PipelineError) in try PipelineValidation.tagName(tag, limits: limits) } }
        try unique(entries, what: "tags in \(context): tag")
        return entries.map(\.0)
    }

    func parseRetry(_ node: Node, owner: SourceLocation?, context: String) throws(PipelineError) -> RetryPolicy {
        let fields = try StrictMapping(node, context: "retry in \(context)", allowed: ["max", "on_exit"], owner: owner)
        var retry = RetryPolicy(retriesMax: try YAMLRead.int(try fields.require("max"), what: "retry.max in \(context)", range: 1...limits.ciJobRetriesMax))
        guard let codesNode = fields.value("on_exit") else { return retry }
        let items = try YAMLRead.sequence(codesNode, what: "retry.on_exit in \(context)")
        guard items.count <= limits.ciRetryExitCodesMax else {
            throw PipelineError(
                .overLimit, "retry.on_exit lists \(items.count) codes, over ciRetryExitCodesMax (\(limits.ciRetryExitCodesMax))",
                at: YAMLRead.location(codesNode))
        }
        var entries: [(String, SourceLocation?)] = []
        for item in items {
            let code = try YAMLRead.int(item, what: "an exit code in retry.on_exit", range: 1...255)
            retry.onExitCodes.append(code)
            entries.append((String(code), YAMLRead.location(item)))
        }
        try unique(entries, what: "retry.on_exit in \(context): exit code")
        return retry
    }

    func parseEnv(_ node: Node, owner: SourceLocation?, context: String, axes: [String]) throws(PipelineError) -> [String: String] {
        let fields = try StrictMapping(node, context: "env in \(context)", allowed: nil, owner: owner)
        guard fields.entries.count <= limits.ciEnvVarsMax else {
            throw PipelineError(
                .overLimit, "env in \(context) sets \(fields.entries.count) variables, over ciEnvVarsMax (\(limits.ciEnvVarsMax))",
                at: fields.location)
        }
        var env: [String: String] = [:]
        for entry in fields.entries {
            try placed(entry.keyLocation) { () throws(PipelineError) in
                try PipelineValidation.environmentName(entry.key, what: "an environment variable", limits: limits)
            }
            let value = try YAMLRead.text(entry.value, what: "env \(entry.key) in \(context)")
            try placed(YAMLRead.location(entry.value)) { () throws(PipelineError) in
                try PipelineValidation.environment(entry.key, value, axes: axes, limits: limits)
            }
            env[entry.key] = value
        }
        return env
    }

    func parseSecrets(_ node: Node, context: String) throws(PipelineError) -> [String] {
        let entries = try YAMLRead.texts(node, what: "secrets in \(context)", max: limits.ciSecretsPerJobMax, limitName: "ciSecretsPerJobMax")
        for (secret, location) in entries {
            try placed(location) { () throws(PipelineError) in try PipelineValidation.environmentName(secret, what: "a secret", limits: limits) }
        }
        try unique(entries, what: "secrets in \(context): secret")
        return entries.map(\.0)
    }

    /// Refuses an entry listed before, at its second place.
    func unique(_ entries: [(String, SourceLocation?)], what: String) throws(PipelineError) {
        var seen = Set<String>()
        for (value, location) in entries where !seen.insert(value).inserted {
            throw PipelineError(.invalidValue, "\(what) '\(value)' is listed twice", at: location)
        }
    }
}
