import AspenCore

// AspenCI: the CI pipeline definition, `.aspen/ci.yml` version 1, read strictly into a normalized
// `Pipeline` value, stored in a compact binary form, planned into a graph of jobs, and matched
// against pushes, patches and manual runs. It may import AspenCore and Yams (with the libyaml
// that Yams vendors); it never reads a file, a clock or global randomness: the node's CI service
// hands it bytes, refs and hashes, and carries out what it decides.

/// A pipeline as the file defines it, normalized: defaults filled in, trigger patterns parsed,
/// conditions parsed, jobs in file order. Every value of this type passed the same checks as a
/// file does (its initializer runs them), so a stored pipeline is as trustworthy as a parsed one.
public struct Pipeline: Sendable, Equatable {
    /// The only file version this module reads.
    public static let fileVersion = 1

    public let triggers: Triggers
    public let concurrency: Concurrency?
    /// Jobs in the order the file lists them.
    public let jobs: [Job]
    /// Jobs with their matrices expanded, each after the jobs it needs; ties keep file order.
    public let plan: [PlannedJob]

    /// A pipeline from its parts, checked as a file would be (names, bounds, conditions,
    /// interpolations, the graph of `needs`); errors carry no line.
    public init(triggers: Triggers = .default, concurrency: Concurrency? = nil, jobs: [Job], limits: Limits = .standard)
        throws(PipelineError)
    {
        try PipelineValidation.check(concurrency: concurrency, limits: limits)
        try PipelineValidation.check(triggers: triggers, limits: limits)
        for job in jobs { try PipelineValidation.check(job: job, limits: limits) }
        try self.init(checkedTriggers: triggers, concurrency: concurrency, jobs: jobs, limits: limits, locator: nil)
    }

    /// Builds the plan; the fields were checked already, by the caller.
    init(checkedTriggers triggers: Triggers, concurrency: Concurrency?, jobs: [Job], limits: Limits, locator: GraphLocator?)
        throws(PipelineError)
    {
        self.triggers = triggers
        self.concurrency = concurrency
        self.jobs = jobs
        self.plan = try JobGraph.plan(jobs: jobs, limits: limits, locator: locator)
    }

    /// The job the file defines under `name`, if any.
    public func job(named name: String) -> Job? { jobs.first { $0.name == name } }
}

/// What starts a run. A file without `triggers` runs on a push to any branch and on demand.
public struct Triggers: Sendable, Equatable {
    public var push: PushTrigger?
    /// Pushes to `refs/for/<branch>`: proposed changes from anyone, run untrusted (no secrets).
    public var patch: PatchTrigger?
    public var manual: Bool

    public init(push: PushTrigger? = nil, patch: PatchTrigger? = nil, manual: Bool = false) {
        self.push = push
        self.patch = patch
        self.manual = manual
    }

    /// The triggers of a file that names none.
    public static let `default` = Triggers(push: PushTrigger(tags: []), manual: true)
}

/// Which pushes start a run. Branch and tag patterns match the name after `refs/heads/` or
/// `refs/tags/`; a trigger that names neither matches every branch and every tag, one that names
/// only one kind matches none of the other.
public struct PushTrigger: Sendable, Equatable {
    public var branches: [Glob]
    public var tags: [Glob]
    /// A push to a branch runs its jobs only if it changes a path that matches one of these (an
    /// empty list: any path) and is not ignored; otherwise every job is reported skipped.
    public var paths: [Glob]
    public var pathsIgnore: [Glob]

    public init(branches: [Glob] = [.everything], tags: [Glob] = [.everything], paths: [Glob] = [], pathsIgnore: [Glob] = []) {
        self.branches = branches
        self.tags = tags
        self.paths = paths
        self.pathsIgnore = pathsIgnore
    }
}

/// Which patches start a run: `branches` match the target branch of `refs/for/<branch>`.
public struct PatchTrigger: Sendable, Equatable {
    public var branches: [Glob]
    public var paths: [Glob]
    public var pathsIgnore: [Glob]

    public init(branches: [Glob] = [.everything], paths: [Glob] = [], pathsIgnore: [Glob] = []) {
        self.branches = branches
        self.paths = paths
        self.pathsIgnore = pathsIgnore
    }
}

/// Runs that share a group (after interpolation) run one at a time; a new one cancels the
/// one in progress if `cancelInProgress`, else waits for it.
public struct Concurrency: Sendable, Equatable {
    public var group: String
    public var cancelInProgress: Bool

    public init(group: String, cancelInProgress: Bool = false) {
        self.group = group
        self.cancelInProgress = cancelInProgress
    }
}

/// One job as the file defines it (before its matrix is expanded).
public struct Job: Sendable, Equatable {
    public var name: String
    /// The shell script, before interpolation.
    public var run: String
    /// Jobs that must succeed first; a matrix job stands for all of its expansions.
    public var needs: [String]
    public var condition: Condition?
    public var timeoutMs: Int64
    /// Paths (relative to the checkout) kept after the job.
    public var artifacts: [String]
    public var cache: Cache?
    /// Worker tags a worker must carry to run the job.
    public var tags: [String]
    /// Axes in file order; empty for a job without a matrix.
    public var matrix: [MatrixAxis]
    /// A failed expansion cancels its siblings still running or waiting.
    public var failFast: Bool
    /// Most expansions running at once; nil for no bound but the cluster's.
    public var maxParallel: Int?
    public var retry: RetryPolicy?
    /// Environment values, before interpolation.
    public var env: [String: String]
    /// Secrets the job reads (never given to runs of untrusted patches).
    public var secrets: [String]
    /// A failure does not fail the run, nor stop the jobs that need this one.
    public var continueOnError: Bool

    public init(
        name: String, run: String, needs: [String] = [], condition: Condition? = nil,
        timeoutMs: Int64 = Limits.standard.ciJobTimeoutMsDefault, artifacts: [String] = [], cache: Cache? = nil,
        tags: [String] = [], matrix: [MatrixAxis] = [], failFast: Bool = true, maxParallel: Int? = nil,
        retry: RetryPolicy? = nil, env: [String: String] = [:], secrets: [String] = [], continueOnError: Bool = false
    ) {
        self.name = name
        self.run = run
        self.needs = needs
        self.condition = condition
        self.timeoutMs = timeoutMs
        self.artifacts = artifacts
        self.cache = cache
        self.tags = tags
        self.matrix = matrix
        self.failFast = failFast
        self.maxParallel = maxParallel
        self.retry = retry
        self.env = env
        self.secrets = secrets
        self.continueOnError = continueOnError
    }
}

/// A cache restored before a job and saved after it, under a key that usually names a hash of
/// the lock file (`spm-${hash:Package.resolved}`), so that a change of dependencies misses it.
public struct Cache: Sendable, Equatable {
    public var key: String
    public var paths: [String]

    public init(key: String, paths: [String]) {
        self.key = key
        self.paths = paths
    }
}

/// How often a failed job is tried again, and for which exit codes (empty: any failure).
public struct RetryPolicy: Sendable, Equatable {
    public var retriesMax: Int
    public var onExitCodes: [Int]

    public init(retriesMax: Int, onExitCodes: [Int] = []) {
        self.retriesMax = retriesMax
        self.onExitCodes = onExitCodes
    }
}

/// One axis of a job's matrix: its name (`${matrix.NAME}`) and its values in file order.
public struct MatrixAxis: Sendable, Equatable {
    public var name: String
    public var values: [String]

    public init(name: String, values: [String]) {
        self.name = name
        self.values = values
    }
}

extension MatrixAxis {
    /// The variable a job's processes find the axis's value in: `ASPEN_CI_MATRIX_` and the
    /// name in upper case with `-` as `_`. Two axes of a job may not share one.
    public static func environmentName(_ axis: String) -> String {
        "ASPEN_CI_MATRIX_" + axis.uppercased().replacingOccurrences(of: "-", with: "_")
    }
}

/// One axis's value in one expansion of a matrix job.
public struct MatrixBinding: Sendable, Equatable {
    public var axis: String
    public var value: String

    public init(axis: String, value: String) {
        self.axis = axis
        self.value = value
    }
}

/// A job of the plan: a job without a matrix, or one combination of a matrix job's values.
public struct PlannedJob: Sendable, Equatable {
    /// `build`, or `test (config=debug)` for an expansion (its values in axis order).
    public var name: String
    /// The job of the file it came from.
    public var jobName: String
    public var matrix: [MatrixBinding]
    /// Planned jobs that must finish first, in plan order.
    public var needs: [String]

    public init(name: String, jobName: String, matrix: [MatrixBinding] = [], needs: [String] = []) {
        self.name = name
        self.jobName = jobName
        self.matrix = matrix
        self.needs = needs
    }
}
