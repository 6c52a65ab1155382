/// What a job's processes see, the same on the cluster and in `aspen ci run --local`: a few
/// variables of the process that runs it (PATH, HOME, …, nothing else of its environment), the
/// job's own `env` and matrix values, the secrets it was given, and the run's description.
public enum JobEnvironment {
    /// The variables a job keeps from the process that starts it.
    public static let inherited = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "SHELL"]

    /// The description of the run: `CI=true`, `ASPEN_CI_*`.
    public struct Run: Sendable {
        public var mode: String
        public var repo: String
        public var run: UInt64?
        public var ref: String
        public var sha: String
        public var event: TriggerKind
        public var job: String
        public var attempt: Int

        public init(mode: String, repo: String, run: UInt64?, ref: String, sha: String, event: TriggerKind, job: String, attempt: Int) {
            self.mode = mode
            self.repo = repo
            self.run = run
            self.ref = ref
            self.sha = sha
            self.event = event
            self.job = job
            self.attempt = attempt
        }
    }

    /// The whole environment of one try: `own` (the job's `env` and matrix variables, already
    /// interpolated) over the inherited variables, the secrets over those, the run's
    /// description last (a job cannot pretend to be another run).
    public static func make(from process: [String: String], own: [String: String], secrets: [String: String], run: Run) -> [String: String] {
        var environment: [String: String] = [:]
        for name in inherited { environment[name] = process[name] }
        environment.merge(own) { $1 }
        environment.merge(secrets) { $1 }
        environment["CI"] = "true"
        environment["ASPEN_CI"] = run.mode
        environment["ASPEN_CI_REPO"] = run.repo
        if let id = run.run { environment["ASPEN_CI_RUN"] = String(id) }
        environment["ASPEN_CI_REF"] = run.ref
        environment["ASPEN_CI_SHA"] = run.sha
        environment["ASPEN_CI_EVENT"] = run.event.rawValue
        environment["ASPEN_CI_JOB"] = run.job
        environment["ASPEN_CI_ATTEMPT"] = String(run.attempt)
        return environment
    }
}
