import AspenBlob
import AspenCI
import AspenClient
import AspenNode
import AspenCore
import AspenJobs
import AspenSecrets
import ArgumentParser
import Foundation

/// `aspen ci …`: pipelines defined in `.aspen/ci.yml` (docs/ci.md).
struct CICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ci", abstract: "CI pipelines defined in the repository's .aspen/ci.yml.",
        discussion: """
            A push to a repository the cluster hosts starts a run of its pipeline; aspen ci run REPO starts
            one by hand. aspen ci list, show, logs and status follow them; cancel and rerun change them.
            """,
        subcommands: [Lint.self, Run.self, List.self, Show.self, Logs.self, Status.self, Cancel.self, Rerun.self, Artifact.self, Cache.self, Secret.self])

    /// The pipeline in `file`, or an error with FILE:LINE:COLUMN.
    static func load(_ file: String, limits: Limits = .standard) throws -> Pipeline {
        let bytes = try Lint.read(file, bytesMax: limits.ciPipelineFileBytesMax)
        do throws(PipelineError) {
            return try Pipeline(yaml: bytes, limits: limits)
        } catch {
            throw CLIError.badInput(error.line > 0 ? "\(file):\(error.line):\(error.column): \(error.message)" : "\(file): \(error.message)")
        }
    }

    struct Lint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a pipeline file with the node's own parser; print its jobs in the order they run.",
            discussion: """
                Unknown and duplicate keys, wrong types, unknown `needs`, cycles and bad interpolations are
                errors with FILE:LINE:COLUMN. Exit status 0 when the file is valid, 4 when it is not.
                """)
        @Argument(help: "The pipeline file.") var file = ".aspen/ci.yml"
        @Flag(help: "Print the plan as JSON.") var json = false

        func run() async throws {
            try await runReporting {
                let pipeline = try CICommand.load(file)
                let jobs: [[String: Any]] = pipeline.plan.map { job in
                    ["name": job.name, "job": job.jobName, "needs": job.needs, "matrix": Dictionary(uniqueKeysWithValues: job.matrix.map { ($0.axis, $0.value) })]
                }
                let text = pipeline.plan.map { job in job.needs.isEmpty ? job.name : "\(job.name)\tafter \(job.needs.joined(separator: ", "))" }
                output(json, ["file": file, "jobs": jobs], text: (["\(file): \(pipeline.plan.count) jobs"] + text).joined(separator: "\n"))
            }
        }

        /// The file, refused past `bytesMax` before it is read whole.
        static func read(_ path: String, bytesMax: Int) throws -> [UInt8] {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIError.notFound("\(path): no such file") }
            defer { try? handle.close() }
            let data = try handle.read(upToCount: bytesMax + 1) ?? Data()
            guard data.count <= bytesMax else {
                throw CLIError.badInput("\(path) is larger than ciPipelineFileBytesMax (\(bytesMax) bytes)")
            }
            return Array(data)
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the pipeline: REPO's on the cluster, or with --local, the working tree's, on this machine.",
            discussion: """
                On the cluster (aspen ci run REPO [--ref BRANCH] [--wait]): a manual run of the ref's current
                commit (default refs/heads/main; main means refs/heads/main). Prints the run's id; follow it with
                aspen ci show RUN and aspen ci logs RUN JOB. With --wait, waits for the run to end and prints it as
                aspen ci show does: exit status 0 when it succeeded or was skipped, 2 otherwise.

                With --local, with the cluster's parser and executor: jobs run one at a time in the order the
                cluster would start them, in the working tree, each with `bash -eo pipefail -c`, its timeout and
                retries; a job whose needs did not succeed is skipped unless its `if` says otherwise. Secrets a
                job names are taken from this shell's environment. Exit status 0 when every job succeeded or was
                skipped, 2 when one failed or was cancelled (SIGINT stops the job under way, its whole process
                group, and cancels the rest).
                """)
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The repository to run on the cluster (not with --local).") var repo: String?
        @Flag(help: "Run here, without a cluster.") var local = false
        @Option(help: "The pipeline file (with --local; default: .aspen/ci.yml).") var file: String?
        @Option(help: "The ref the run is for: on the cluster a branch or refs/… (default: main); with --local, default the checked-out branch.")
        var ref: String?
        @Option(name: .customLong("job"), help: "Run only this job (and what it needs); may be repeated. With --local.") var jobs: [String] = []
        @Flag(help: "On the cluster: wait for the run to end; exit status 2 unless it succeeded or was skipped.") var wait = false

        func run() async throws {
            if local {
                try await runReporting {
                    guard repo == nil else { throw CLIError.badInput("--local runs the working tree's pipeline: it takes no REPO") }
                    try await runLocal(file: file ?? ".aspen/ci.yml")
                }
            } else {
                try await runCI {
                    guard let repo else { throw CLIError.badInput("aspen ci run needs REPO, or --local to run the working tree's pipeline here") }
                    guard jobs.isEmpty, file == nil else { throw CLIError.badInput("--job and --file go with --local; a cluster run runs the pipeline of the commit") }
                    try await runOnCluster(repo)
                }
            }
        }

        /// `refs/heads/main` for `main`; a name under `refs/` as it is.
        static func fullRef(_ name: String) -> String { name.hasPrefix("refs/") ? name : "refs/heads/" + name }

        /// Starts a manual run; with --wait, polls it until it ends.
        func runOnCluster(_ repo: String) async throws {
            let client = try cluster.client()
            let call = CICall.start(repo: repo, ref: Self.fullRef(ref ?? "main"), request: UUID().uuidString)
            guard case .run(var run) = try await client.ci(call) else { throw CLIError.unexpectedAnswer }
            guard wait else {
                output(cluster.json, CICommand.describe(run), text: "\(run.id)")
                return
            }
            if !cluster.json { print("\(run.id)") }
            while !run.state.ended {
                try await Task.sleep(for: .milliseconds(CICommand.pollMs))
                guard case .run(let shown) = try await client.ci(.show(run: run.id)) else { throw CLIError.unexpectedAnswer }
                run = shown
            }
            output(cluster.json, CICommand.describe(run), text: CICommand.summary(run, nowMs: CICommand.nowMs()))
            guard CommitStatusState(run.state).satisfiesRequirement else { throw CLIError.conditionFailed("run #\(run.id) ended: \(run.state)") }
        }

        func runLocal(file: String) async throws {
            let limits = Limits.standard
            let pipeline = try CICommand.load(file, limits: limits)
            let unknown = jobs.filter { name in !pipeline.plan.contains { $0.name == name || $0.jobName == name } }
            guard unknown.isEmpty else { throw CLIError.notFound("no job named \(unknown.joined(separator: ", ")) in \(file)") }
            let here = FileManager.default.currentDirectoryPath
            let root = CILocalRun.git(["rev-parse", "--show-toplevel"], in: here) ?? here
            let ref = self.ref ?? CILocalRun.git(["symbolic-ref", "-q", "HEAD"], in: root) ?? "refs/heads/local"
            let sha = CILocalRun.git(["rev-parse", "HEAD"], in: root) ?? ""
            let local = CILocalRun(pipeline: pipeline, root: root, ref: ref, sha: sha, only: Set(jobs), limits: limits, hashes: FileHashes(root: root))
            // SIGINT or SIGTERM stops the job under way (its whole process group) and cancels the rest.
            let running = Task { try await local.run() }
            let interrupt = Task {
                await waitForTerminationSignal()
                running.cancel()
            }
            let results = try await running.value
            interrupt.cancel()
            let failed = results.filter { result in
                result.outcome == .cancelled
                    || (result.outcome == .failure
                        && pipeline.plan.first { $0.name == result.name }.flatMap { pipeline.job(named: $0.jobName) }?.continueOnError != true)
            }
            let counts = Dictionary(grouping: results, by: \.outcome).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            CILocalRun.say("\(results.count) jobs: \(counts.joined(separator: ", "))")
            if !failed.isEmpty { throw CLIError.conditionFailed("failed or cancelled: \(failed.map(\.name).joined(separator: ", "))") }
        }
    }
}

/// CI refusals as the CLI reports them.
func runCI(_ body: () async throws -> Void) async throws {
    try await runReporting {
        do {
            try await body()
        } catch let error as CIError {
            switch error {
            case .notFound(let text): throw CLIError.notFound(text)
            case .conflict(let text): throw CLIError.conditionFailed(text)
            case .badInput(let text): throw CLIError.badInput(text)
            case .unavailable(let text), .failed(let text): throw CLIError.unavailable(text)
            }
        }
    }
}

/// The cluster's runs: list, show, logs, statuses, cancel and rerun.
extension CICommand {
    /// How often `aspen ci run --wait` asks whether the run has ended.
    static let pollMs = 500
    /// How long `aspen ci logs --follow` asks a node to wait for new bytes.
    static let followWaitMs: Int64 = 10_000
    /// The pause after an empty page under --follow, so that a node answering at once (a job
    /// not started yet) is not asked again in a tight loop.
    static let followPauseMs = 200

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// `12` or `#12`, as `aspen ci list` shows it.
    static func runID(_ text: String) throws -> UInt64 {
        guard let id = UInt64(text.hasPrefix("#") ? String(text.dropFirst()) : text) else {
            throw CLIError.badInput("'\(text)' is not a run id (a number, as aspen ci list shows it: 12 or #12)")
        }
        return id
    }

    /// How long ago `ms` was, in its largest whole unit (`45s`, `12m`, `3h`, `2d`).
    static func age(_ ms: Int64, nowMs: Int64) -> String {
        let elapsed = max(0, nowMs - ms)
        guard let scale = [Int64(86_400_000), 3_600_000, 60_000, 1000].first(where: { elapsed >= $0 }) else { return "0s" }
        return JobDuration.format(ms: elapsed / scale * scale)
    }

    /// A run's or a job's length, to the second (`1m23s`).
    static func duration(_ ms: Int64) -> String { GoDuration.format(ms: max(0, ms) / 1000 * 1000) }

    static func describe(_ run: CIRun) -> [String: Any] {
        var object: [String: Any] = [
            "id": run.id, "repo": run.repo, "ref": run.ref, "sha": run.sha, "event": run.event.rawValue, "pipeline": run.pipeline,
            "creator": run.creator, "created_ms": run.createdMs, "state": run.state.description, "message": run.message,
            "cancel_requested": run.cancelRequested, "jobs": run.jobs.map(describe),
        ]
        if let ended = run.endedMs { object["ended_ms"] = ended }
        if let group = run.group { object["group"] = group }
        if let rerunOf = run.rerunOf { object["rerun_of"] = rerunOf }
        return object
    }

    static func describe(_ job: CIRunJob) -> [String: Any] {
        var object: [String: Any] = [
            "name": job.name, "state": job.state.description, "detail": job.detail,
            "attempts": job.attempts.map { attempt -> [String: Any] in
                var described: [String: Any] = ["number": attempt.number, "job": attempt.jobID, "detail": attempt.detail]
                if let code = attempt.exitCode { described["exit_code"] = code }
                if let ended = attempt.endedMs { described["ended_ms"] = ended }
                return described
            },
        ]
        if let started = job.startedMs { object["started_ms"] = started }
        if let ended = job.endedMs { object["ended_ms"] = ended }
        return object
    }

    static func describe(_ status: CommitStatus) -> [String: Any] {
        ["context": status.context, "state": status.state.description, "description": status.description, "run": status.run, "updated_ms": status.updatedMs]
    }

    static func padded(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0) }

    /// `#ID  STATE  REF  SHA  EVENT  AGE/DURATION  (message)`.
    static func line(_ run: CIRun, nowMs: Int64) -> String {
        let took = run.endedMs.map { "/" + duration($0 - run.createdMs) } ?? ""
        let message = run.message.split(separator: "\n", maxSplits: 1).first.map { "  (\($0))" } ?? ""
        return "#\(run.id)  \(padded(run.state.description, 9))  \(run.ref)  \(run.sha.prefix(12))  \(padded(run.event.rawValue, 6))  "
            + "\(age(run.createdMs, nowMs: nowMs)) ago\(took)" + message
    }

    /// A run's header, then a line per job: name, state, detail and its tries.
    static func summary(_ run: CIRun, nowMs: Int64) -> String {
        var lines = [
            "run #\(run.id)" + (run.rerunOf.map { " (rerun of #\($0))" } ?? ""),
            "  repo     \(run.repo)",
            "  ref      \(run.ref)",
            "  sha      \(run.sha)",
            "  event    \(run.event.rawValue)",
            "  state    \(run.state)" + (run.cancelRequested && !run.state.ended ? " (cancel requested)" : ""),
        ]
        if !run.message.isEmpty { lines.append("  message  \(run.message)") }
        lines.append("  created  \(formatTime(run.createdMs)) (\(age(run.createdMs, nowMs: nowMs)) ago)")
        if let ended = run.endedMs { lines.append("  ended    \(formatTime(ended)) (took \(duration(ended - run.createdMs)))") }
        let width = run.jobs.map(\.name.count).max() ?? 0
        for job in run.jobs {
            let tries = job.attempts.map { attempt in
                let end = attempt.exitCode.map { "exit \($0)" } ?? (attempt.endedMs == nil ? "running" : "no exit code")
                return "#\(attempt.number) job \(attempt.jobID) \(end)" + (attempt.detail.isEmpty ? "" : " (\(attempt.detail))")
            }
            let detail = job.detail.isEmpty ? "" : "  \(job.detail)"
            lines.append("  \(padded(job.name, width))  \(padded(job.state.description, 9))\(detail)" + (tries.isEmpty ? "" : "  [\(tries.joined(separator: ", "))]"))
        }
        return lines.joined(separator: "\n")
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A repository's runs, newest first: id, state, ref, commit, event, age/duration.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The repository.") var repo: String
        @Option(help: "At most this many runs (up to \(CICall.listMax)).") var limit: Int = 20

        func run() async throws {
            try await runCI {
                guard (1...CICall.listMax).contains(limit) else { throw CLIError.badInput("--limit takes 1 to \(CICall.listMax)") }
                guard case .runs(let runs) = try await cluster.client().ci(.list(repo: repo, limit: limit)) else { throw CLIError.unexpectedAnswer }
                let newest = runs.sorted { $0.id > $1.id }
                let nowMs = CICommand.nowMs()
                output(cluster.json, ["runs": newest.map(CICommand.describe)], text: newest.map { CICommand.line($0, nowMs: nowMs) }.joined(separator: "\n"))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A run: its commit, state and message, and each job's state and tries.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String

        func run() async throws {
            try await runCI {
                let run = try CICommand.runID(id)
                guard case .run(let shown) = try await cluster.client().ci(.show(run: run)) else { throw CLIError.unexpectedAnswer }
                output(cluster.json, CICommand.describe(shown), text: CICommand.summary(shown, nowMs: CICommand.nowMs()))
            }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A job's log, as its script wrote it; --follow while it runs.",
            discussion: """
                JOB is a planned job's name as aspen ci show prints it, with its matrix values: "test (config=debug)".
                """)
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String
        @Argument(help: "The job's name.") var job: String
        @Option(help: "Which try of the job, from 1 (default: the last).") var attempt: Int = 0
        @Flag(name: .shortAndLong, help: "Keep printing the log as it comes until the try ends.") var follow = false

        func run() async throws {
            try await runCI {
                guard attempt >= 0 else { throw CLIError.badInput("--attempt takes 1 or more (0: the last try)") }
                let run = try CICommand.runID(id)
                let client = try cluster.client()
                var number = attempt
                var offset: Int64 = 0
                while true {
                    let call = CICall.logs(run: run, job: job, attempt: number, offset: offset, waitMs: follow ? CICommand.followWaitMs : 0)
                    guard case .log(let page) = try await client.ci(call) else { throw CLIError.unexpectedAnswer }
                    // Follow one try: the one the first page is of, even once another starts.
                    if page.attempt > 0 { number = page.attempt }
                    // A reader that stopped (`| head`, `| grep -q`) ends the command quietly.
                    do {
                        try page.bytes.withUnsafeBytes { try writeAll(1, $0) }
                    } catch {
                        if errno == EPIPE { return }
                        throw error
                    }
                    offset += Int64(page.bytes.count)
                    if page.complete || (!follow && page.bytes.isEmpty) { return }
                    if page.bytes.isEmpty { try await Task.sleep(for: .milliseconds(CICommand.followPauseMs)) }
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A commit's statuses: the pipeline's and each job's. Exit status 0 when every one succeeded or was skipped.",
            discussion: "Exit status 2 when one is pending or did not pass, or when the commit has none.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The repository.") var repo: String
        @Argument(help: "The commit's full id.") var commit: String

        func run() async throws {
            try await runCI {
                guard case .statuses(let statuses) = try await cluster.client().ci(.status(repo: repo, sha: commit)) else { throw CLIError.unexpectedAnswer }
                guard !statuses.isEmpty else { throw CLIError.conditionFailed("commit \(commit) of \(repo) has no status") }
                let lines = statuses.map { status in
                    "\(CICommand.padded(status.state.description, 9))  \(status.context)"
                        + (status.description.isEmpty ? "" : "  \(status.description)") + "  (run #\(status.run))"
                }
                output(cluster.json, ["statuses": statuses.map(CICommand.describe)], text: lines.joined(separator: "\n"))
                let failing = statuses.filter { !$0.state.satisfiesRequirement }
                guard failing.isEmpty else {
                    throw CLIError.conditionFailed("\(failing.count) of \(statuses.count) statuses did not pass: \(failing.map(\.context).joined(separator: ", "))")
                }
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a run: its jobs not started never start, those running are stopped.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String

        func run() async throws {
            try await runCI {
                let run = try CICommand.runID(id)
                guard case .run(let cancelled) = try await cluster.client().ci(.cancel(run: run)) else { throw CLIError.unexpectedAnswer }
                output(cluster.json, CICommand.describe(cancelled), text: "run #\(cancelled.id): " + (cancelled.state.ended ? "\(cancelled.state)" : "cancel requested"))
            }
        }
    }

    struct Rerun: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a run's commit and pipeline again; prints the new run's id.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String
        @Flag(help: "Only the jobs that did not succeed, and the jobs that need them.") var failed = false

        func run() async throws {
            try await runCI {
                let call = CICall.rerun(run: try CICommand.runID(id), failedOnly: failed)
                guard case .run(let started) = try await cluster.client().ci(call) else { throw CLIError.unexpectedAnswer }
                output(cluster.json, CICommand.describe(started), text: "\(started.id)")
            }
        }
    }

    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A repository's CI secrets: kept sealed by the secrets engine, given to the jobs that name them, masked in logs.",
            discussion: """
                Runs of refs/for/* pushes (patches) never get secrets. Values are never shown again; `list` prints names.
                Needs full ci access to the repository.
                """,
            subcommands: [Set.self, List.self, Delete.self])

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Set a secret from standard input (one trailing newline dropped).")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: "The repository.") var repo: String
            @Argument(help: "The secret's name, as the job's environment variable.") var name: String

            func run() async throws {
                try await runCI {
                    var value = Array(FileHandle.standardInput.readDataToEndOfFile())
                    if value.last == UInt8(ascii: "\n") { value.removeLast() }
                    guard case .names(let names) = try await cluster.client().ci(.secretSet(repo: repo, name: name, value: value)) else {
                        throw CLIError.unexpectedAnswer
                    }
                    output(cluster.json, ["secrets": names], text: "\(name) set for \(repo) (\(names.count) secrets)")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "The names of a repository's secrets.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: "The repository.") var repo: String

            func run() async throws {
                try await runCI {
                    guard case .names(let names) = try await cluster.client().ci(.secretList(repo: repo)) else { throw CLIError.unexpectedAnswer }
                    output(cluster.json, ["secrets": names], text: names.joined(separator: "\n"))
                }
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a secret and every version of it.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: "The repository.") var repo: String
            @Argument(help: "The secret's name.") var name: String

            func run() async throws {
                try await runCI {
                    guard case .names(let names) = try await cluster.client().ci(.secretDelete(repo: repo, name: name)) else { throw CLIError.unexpectedAnswer }
                    output(cluster.json, ["secrets": names], text: "\(name) deleted from \(repo)")
                }
            }
        }
    }

    struct Cache: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A repository's caches (a job's `cache`: key → archived paths, in the blob store).",
            discussion: """
                The least recently used go by themselves past ci-caches-kept or ci-cache-repo-max; delete
                one to make the next run start without it.
                """,
            subcommands: [List.self, Delete.self])

        static func describe(_ caches: [CICache]) -> [[String: Any]] {
            caches.map { ["key": $0.key, "size": $0.size, "blake3": Hex.encode($0.hash), "revision": $0.revision] as [String: Any] }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "A repository's caches, most recently used first: key, size and BLAKE3 hash.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: "The repository.") var repo: String

            func run() async throws {
                try await runCI {
                    guard case .caches(let caches) = try await cluster.client().ci(.caches(repo: repo)) else { throw CLIError.unexpectedAnswer }
                    let total = caches.reduce(UInt64(0)) { $0 + $1.size }
                    output(
                        cluster.json, ["caches": Cache.describe(caches), "bytes": total],
                        text: caches.map { "\($0.key)\t\($0.size)\t\(Hex.encode($0.hash))" }.joined(separator: "\n"))
                }
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a cache by its exact key, or every cache of the repository.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: "The repository.") var repo: String
            @Argument(help: "The cache's key.") var key: String?
            @Flag(help: "Delete every cache of the repository.") var all = false

            func validate() throws {
                guard (key == nil) == all else { throw ValidationError("name one cache's key, or --all, not both") }
            }

            func run() async throws {
                try await runCI {
                    guard case .caches(let deleted) = try await cluster.client().ci(.cacheDelete(repo: repo, key: key)) else { throw CLIError.unexpectedAnswer }
                    output(cluster.json, ["deleted": Cache.describe(deleted)], text: "\(deleted.count) cache\(deleted.count == 1 ? "" : "s") of \(repo) deleted")
                }
            }
        }
    }

    struct Artifact: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Files a run's jobs kept (their `artifacts`), stored in the blob store.", subcommands: [List.self, Get.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "A run's artifacts: job, path, size and BLAKE3 hash.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String
            @Argument(help: "Only this job's.") var job: String?

            func run() async throws {
                try await runCI {
                    guard case .artifacts(let found) = try await cluster.client().ci(.artifacts(run: try CICommand.runID(id), job: job)) else {
                        throw CLIError.unexpectedAnswer
                    }
                    let described = found.map { ["job": $0.job, "path": $0.path, "size": $0.size, "blake3": Hex.encode($0.hash)] as [String: Any] }
                    output(cluster.json, ["artifacts": described], text: found.map { "\($0.job)\t\($0.path)\t\($0.size)\t\(Hex.encode($0.hash))" }.joined(separator: "\n"))
                }
            }
        }

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Write one artifact to a file or standard output, verified as it arrives.")
            @OptionGroup var cluster: ClusterOptions
            @Argument(help: ArgumentHelp("The run's id.", valueName: "run")) var id: String
            @Argument(help: "The job that kept it.") var job: String
            @Argument(help: "Its path in the job's checkout.") var path: String
            @Option(name: [.short, .customLong("output")], help: "Write here instead of standard output.") var output: String?

            func run() async throws {
                try await runCI {
                    let client = try cluster.client()
                    guard case .artifacts(let found) = try await client.ci(.artifacts(run: try CICommand.runID(id), job: job)) else { throw CLIError.unexpectedAnswer }
                    guard let artifact = found.first(where: { $0.path == path }), let hash = BlobHash(bytes: artifact.hash) else {
                        throw CLIError.notFound("job '\(job)' of run \(id) kept no \(path)" + (found.isEmpty ? "" : " (it kept \(found.map(\.path).prefix(10).joined(separator: ", ")))"))
                    }
                    guard case .stat(let stat) = try await client.blobRequest(.stat(hash: hash), tryOthers: true) else { throw CLIError.unexpectedAnswer }
                    try await BlobGetCommand.download(hash, stat: stat, to: output, client: client)
                }
            }
        }
    }
}
