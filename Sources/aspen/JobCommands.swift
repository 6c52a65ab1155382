import AspenBlob
import AspenClient
import AspenCore
import AspenJobs
import AspenWorker
import ArgumentParser
import Foundation

/// `aspen job …`: the durable job system.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "Submit, watch and manage durable jobs (retries, dead letters, dependencies, timers).",
        subcommands: [
            JobSubmitCommand.self, JobStatusCommand.self, JobResultCommand.self, JobHistoryCommand.self, JobListCommand.self,
            JobLogsCommand.self, JobCancelCommand.self, JobRetryCommand.self, JobDeadLettersCommand.self,
        ])
}

/// Runs a job command body, mapping job refusals to the CLI's errors and exit codes.
func runJob(_ body: () async throws -> Void) async throws {
    try await runReporting {
        do {
            try await body()
        } catch let error as JobError {
            switch error {
            case .invalid: throw CLIError.badInput(error.description)
            case .notFound: throw CLIError.notFound(error.description)
            case .staleAttempt, .wrongState: throw CLIError.conditionFailed(error.description)
            case .contention: throw CLIError.unavailable(error.description)
            case .cursorExpired: throw CLIError.conditionFailed(error.description)
            }
        } catch let error as JobPolicyError {
            throw CLIError.badInput(error.description)
        }
    }
}

func formatTime(_ ms: Int64) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

func describe(_ record: JobRecord) -> [String: Any] {
    var object: [String: Any] = [
        "id": record.id, "type": record.spec.type, "state": record.state.rawValue, "priority": record.spec.priority.rawValue,
        "attempts": record.attempts, "attempts_left": record.attemptsLeft, "max_attempts": record.spec.maxAttempts,
        "submitted_ms": record.submittedAtMs, "ready_ms": record.readyAtMs, "command": record.spec.command,
        "depends_on": record.spec.dependsOn, "cancel_requested": record.cancelRequested,
    ]
    if let attempt = record.attempt {
        var described: [String: Any] = [
            "number": attempt.number, "token": String(attempt.token, radix: 16), "worker": attempt.worker, "node": attempt.node,
            "started_ms": attempt.startedAtMs, "lease_expires_ms": attempt.leaseExpiresAtMs,
        ]
        if let ended = attempt.endedAtMs { described["ended_ms"] = ended }
        if let code = attempt.exitCode { described["exit_code"] = code }
        object["attempt"] = described
    }
    if let error = record.lastError { object["last_error"] = error }
    if let finished = record.finishedAtMs { object["finished_ms"] = finished }
    if let key = record.spec.idempotencyKey { object["idempotency_key"] = key }
    if !record.origin.isEmpty { object["origin"] = record.origin }
    if !record.result.isEmpty { object["result"] = String(decoding: record.result, as: UTF8.self) }
    return object
}

func summary(_ record: JobRecord) -> String {
    var lines = [
        "job \(record.id)  \(record.state.rawValue)  type \(record.spec.type)  priority \(record.spec.priority.rawValue)",
        "  attempts \(record.attempts) (\(record.attemptsLeft) left of \(record.spec.maxAttempts))  submitted \(formatTime(record.submittedAtMs))",
    ]
    if !record.spec.command.isEmpty { lines.append("  command " + record.spec.command.joined(separator: " ")) }
    if !record.spec.dependsOn.isEmpty { lines.append("  depends on " + record.spec.dependsOn.map(String.init).joined(separator: ", ")) }
    if record.state == .scheduled { lines.append("  due \(formatTime(record.readyAtMs))") }
    if let attempt = record.attempt {
        var line = "  attempt \(attempt.number) by \(attempt.worker)" + (attempt.node == 0 ? "" : " on node \(attempt.node)")
        line += record.state == .running ? ", lease until \(formatTime(attempt.leaseExpiresAtMs))" : ""
        if let code = attempt.exitCode { line += ", exit \(code)" }
        lines.append(line)
    }
    if record.cancelRequested { lines.append("  cancel requested") }
    if let error = record.lastError { lines.append("  last error: \(error)") }
    if !record.result.isEmpty { lines.append("  result: " + String(decoding: record.result.prefix(200), as: UTF8.self)) }
    return lines.joined(separator: "\n")
}

func parseJobID(_ text: String) throws -> UInt64 {
    guard let id = UInt64(text), id > 0 else { throw CLIError.badInput("'\(text)' is not a job id (a positive number)") }
    return id
}

/// `--run-at`: `+DURATION` from now, an ISO 8601 time, or milliseconds since the epoch.
func parseRunAt(_ text: String) throws -> Int64 {
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    if text.hasPrefix("+") { return now + (try JobDuration.parseMs(String(text.dropFirst()))) }
    if let ms = Int64(text) { return ms }
    let formatter = ISO8601DateFormatter()
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
        formatter.formatOptions = options
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
    }
    throw CLIError.badInput("'\(text)' is not a time: +DURATION (+30s), an ISO 8601 time (2026-12-24T18:00:00Z) or epoch milliseconds")
}

/// `k=v,k2=v2` (repeatable).
func parseTags(_ texts: [String]) throws -> [String: String] {
    var tags: [String: String] = [:]
    for text in texts {
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else { throw CLIError.badInput("'\(pair)' is not a tag: NAME=VALUE") }
            tags[String(parts[0])] = String(parts[1])
        }
    }
    return tags
}

struct JobSubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit", abstract: "Submit a job; prints its id.",
        discussion: """
            aspen job submit --type shell --priority high --max-attempts 5 --backoff exp:1s,x2,max:5m \\
                --timeout 10m --idempotency-key build-42 -- ./build.sh --release
            aspen job submit --depends-on 7,8 --on-dependency-failure cancel -- ./deploy.sh
            aspen job submit --run-at +30s -- echo later
            """)
    @OptionGroup var cluster: ClusterOptions
    @Option(help: "The job type: shell, or a type a worker registered.") var type: String = "shell"
    @Option(help: "critical, high, normal or low.") var priority: String = "normal"
    @Option(help: "Attempts before the dead letters.") var maxAttempts: Int = 3
    @Option(help: "Wait between attempts: none, fixed:DURATION, exp:DURATION[,xFACTOR][,max:DURATION].") var backoff: String = "exp:1s,x2,max:1h"
    @Option(help: "Stop an attempt running longer (250ms, 30s, 10m, 2h).") var timeout: String?
    @Option(help: "Submits with the same key return the first job.") var idempotencyKey: String?
    @Option(help: "Job ids that must succeed first (comma-separated).") var dependsOn: String?
    @Option(help: "When a dependency fails for good: cancel, or continue.") var onDependencyFailure: String = "cancel"
    @Option(help: "Not before: +DURATION, an ISO 8601 time or epoch milliseconds.") var runAt: String?
    @Option(name: .customLong("tags"), help: "Worker tags required (NAME=VALUE,…; repeatable).") var tags: [String] = []
    @Option(help: "Prefer workers on this node.") var preferNode: UInt64?
    @Option(help: "Never run on this node.") var avoidNode: UInt64?
    @Option(help: "Prefer workers on nodes holding this blob.") var nearBlob: String?
    @Option(help: "Input for the job's worker (other types than shell).") var payload: String?
    @Flag(help: "Run the shell job without the host's network, only its own loopback: it waits for a worker that can (root; tag aspen.network=none).")
    var noNetwork = false
    @Option(help: "Make this a recurring job on a cron schedule ('*/5 * * * *', six fields with seconds first, or @hourly…); needs --name.")
    var cron: String?
    @Option(help: "The schedule's name (with --cron).") var name: String?
    @Option(help: "The schedule's time zone (with --cron; an IANA name).") var tz: String = "UTC"
    @Option(help: "Ticks missed during an outage (with --cron): skip (all but the last minute's), latest, or all.") var catchUp: String = "skip"
    @Option(help: "A tick while the last tick's job still runs (with --cron): allow, skip, or queue.") var overlap: String = "allow"
    @Flag(help: "With --cron: replace the schedule of that name.") var replace = false
    @Argument(parsing: .postTerminator, help: "The command of a shell job, after --.") var command: [String] = []

    func run() async throws {
        try await runJob {
            var spec = JobSpec(
                type: type, command: command, payload: Array((payload ?? "").utf8), priority: try JobPriority(parsing: priority),
                maxAttempts: maxAttempts, backoff: try JobBackoff(parsing: backoff), timeoutMs: try timeout.map(JobDuration.parseMs) ?? 0,
                idempotencyKey: idempotencyKey, runAtMs: try runAt.map(parseRunAt), requiredTags: try parseTags(tags),
                preferNode: preferNode, avoidNode: avoidNode, nearBlob: try nearBlob.map { try parseHash($0).bytes })
            if noNetwork {
                guard type == "shell" else { throw CLIError.badInput("--no-network is for shell jobs: a \(type) job's worker decides its own network") }
                spec.requiredTags[ShellNetwork.isolationTag.name] = ShellNetwork.isolationTag.value
            }
            spec.dependsOn = try (dependsOn ?? "").split(separator: ",").map { try parseJobID(String($0)) }
            guard let policy = JobSpec.DependencyFailure(rawValue: onDependencyFailure) else {
                throw CLIError.badInput("--on-dependency-failure takes cancel or continue, not \(onDependencyFailure)")
            }
            spec.onDependencyFailure = policy
            // Checked here first, with the node's own words, before anything is sent.
            try spec.validate()
            if let cron {
                guard let name else { throw CLIError.badInput("--cron needs --name: the schedule's name") }
                guard let catchUp = CronRecord.CatchUp(rawValue: catchUp) else { throw CLIError.badInput("--catch-up takes skip, latest or all") }
                guard let overlap = CronRecord.Overlap(rawValue: overlap) else { throw CLIError.badInput("--overlap takes allow, skip or queue") }
                let record = CronRecord(name: name, expression: cron, timeZone: tz, spec: spec, catchUp: catchUp, overlap: overlap)
                _ = try record.schedule()
                guard case .schedules(let made) = try await cluster.client().job(.scheduleCreate(record, replace: replace)), let schedule = made.first else {
                    throw CLIError.unexpectedAnswer
                }
                output(cluster.json, describe(schedule), text: "schedule \(schedule.name): \(schedule.expression) (\(schedule.timeZone))")
                return
            }
            let (id, created) = try await cluster.client().submitJob(spec)
            output(cluster.json, ["id": id, "created": created], text: "\(id)")
        }
    }
}

struct JobStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a job's state, attempts and last error.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String

    func run() async throws {
        try await runJob {
            let record = try await cluster.client().jobRecord(.job(try parseJobID(id)))
            output(cluster.json, describe(record), text: summary(record))
        }
    }
}

struct JobResultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result",
        abstract: "Print a finished job's result; with --wait, wait for it to finish. Exits 2 if the job did not succeed.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String
    @Option(help: "Wait this long for the job to finish (30s, 10m).") var wait: String?

    func run() async throws {
        try await runJob {
            let client = try cluster.client()
            let id = try parseJobID(id)
            let deadline = Date().addingTimeInterval(Double(try wait.map(JobDuration.parseMs) ?? 0) / 1000)
            var record = try await client.jobRecord(.job(id))
            var pauseMs = 20
            while !record.state.isFinal, Date() < deadline {
                try await Task.sleep(for: .milliseconds(pauseMs))
                pauseMs = min(pauseMs * 2, 500)
                record = try await client.jobRecord(.job(id))
            }
            guard record.state.isFinal else {
                throw CLIError.unavailable("job \(id) is still \(record.state.rawValue)" + (wait == nil ? " (--wait DURATION waits for it)" : " after \(wait!)"))
            }
            guard record.state == .succeeded else {
                throw CLIError.conditionFailed("job \(id) is \(record.state.rawValue)" + (record.lastError.map { ": \($0)" } ?? ""))
            }
            if cluster.json {
                output(true, describe(record), text: "")
            } else {
                FileHandle.standardOutput.write(Data(record.result))
            }
        }
    }
}

struct JobHistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Every transition of a job: time, state, attempt, token, worker, node, exit code.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String

    func run() async throws {
        try await runJob {
            guard case .history(let entries) = try await cluster.client().job(.history(try parseJobID(id))) else { throw CLIError.unexpectedAnswer }
            let described: [[String: Any]] = entries.map { entry in
                var object: [String: Any] = ["at_ms": entry.atMs, "state": entry.state.rawValue, "message": entry.message]
                if entry.attempt > 0 {
                    object["attempt"] = entry.attempt
                    object["token"] = String(entry.token, radix: 16)
                    object["worker"] = entry.worker
                    object["node"] = entry.node
                }
                if let code = entry.exitCode { object["exit_code"] = code }
                return object
            }
            let lines = entries.map { entry in
                var line = "\(formatTime(entry.atMs))  \(entry.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0))"
                if entry.attempt > 0 {
                    line += "  attempt \(entry.attempt) token \(String(entry.token, radix: 16)) \(entry.worker)"
                    if entry.node != 0 { line += "@node\(entry.node)" }
                }
                if let code = entry.exitCode { line += "  exit \(code)" }
                return line + (entry.message.isEmpty ? "" : "  \(entry.message)")
            }
            output(cluster.json, ["history": described], text: lines.joined(separator: "\n"))
        }
    }
}

func printJobs(_ records: [JobRecord], json: Bool) {
    let lines = records.map { record in
        let state = record.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
        let what = record.spec.command.isEmpty ? record.spec.type : record.spec.command.joined(separator: " ")
        return "\(record.id)\t\(state)\t\(record.spec.priority.rawValue)\t\(record.attempts)/\(record.spec.maxAttempts)\t\(what)"
            + (record.lastError.map { "\t\($0)" } ?? "")
    }
    output(json, ["jobs": records.map(describe)], text: lines.joined(separator: "\n"))
}

struct JobLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "A job's output (standard output here, standard error to standard error); --follow while it runs.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String
    @Option(help: "Which attempt (default: the latest).") var attempt: Int?
    @Flag(name: .shortAndLong, help: "Keep printing output as it comes until the attempt ends.") var follow = false

    func run() async throws {
        try await runJob {
            let client = try cluster.client()
            let id = try parseJobID(id)
            var offset: Int64 = 0
            var number = attempt
            var pauseMs = 50
            while true {
                guard case .output(let shown, let chunks) = try await client.job(.output(id, attempt: number, from: offset)) else {
                    throw CLIError.unexpectedAnswer
                }
                // Follow one attempt: the one shown first.
                if number == nil, shown > 0 { number = shown }
                for chunk in chunks where chunk.offset >= offset {
                    (chunk.isError ? FileHandle.standardError : FileHandle.standardOutput).write(Data(chunk.bytes))
                    offset = chunk.offset + Int64(chunk.bytes.count)
                }
                guard follow else { return }
                if chunks.isEmpty {
                    let record = try await client.jobRecord(.job(id))
                    // Its output is all stored before an attempt ends: once it has, nothing more comes.
                    let ended = number.map { $0 < record.attempts || record.state != .running } ?? record.state.isFinal
                    if ended {
                        if case .output(_, let last) = try await client.job(.output(id, attempt: number, from: offset)), !last.isEmpty { continue }
                        return
                    }
                    try await Task.sleep(for: .milliseconds(pauseMs))
                    pauseMs = min(pauseMs * 2, 500)
                } else {
                    pauseMs = 50
                }
            }
        }
    }
}

struct JobListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List jobs: id, state, priority, attempts, command.")
    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Only jobs in this state: waiting, scheduled, pending, running, succeeded, dead, cancelled.") var state: String?
    @Option(help: "Only jobs of this type.") var type: String?
    @Option(help: "Start after this job id.") var after: UInt64 = 0
    @Option(help: "At most this many jobs (up to 1000).") var limit: Int = 100

    func run() async throws {
        try await runJob {
            guard (1...JobCall.listLimitMax).contains(limit) else { throw CLIError.badInput("--limit takes 1 to \(JobCall.listLimitMax)") }
            let answer = try await cluster.client().job(.list(state: try state.map(JobState.init(parsing:)), type: type, after: after, limit: limit))
            guard case .jobs(let records) = answer else { throw CLIError.unexpectedAnswer }
            printJobs(records, json: cluster.json)
        }
    }
}

struct JobCancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a job; a running one is stopped by its worker at its next renewal.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String

    func run() async throws {
        try await runJob {
            let record = try await cluster.client().jobRecord(.cancel(try parseJobID(id)))
            output(cluster.json, describe(record), text: record.state == .running ? "job \(record.id): cancel requested" : "job \(record.id): cancelled")
        }
    }
}

struct JobRetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Run a dead or cancelled job again, with a fresh budget of attempts.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The job id.") var id: String

    func run() async throws {
        try await runJob {
            let record = try await cluster.client().jobRecord(.retry(try parseJobID(id), deadOnly: false))
            output(cluster.json, describe(record), text: "job \(record.id): \(record.state.rawValue)")
        }
    }
}

struct JobDeadLettersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "The dead letters: jobs out of attempts.", subcommands: [List.self, Redrive.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Dead jobs, with their last error.")
        @OptionGroup var cluster: ClusterOptions
        @Option(help: "Start after this job id.") var after: UInt64 = 0
        @Option(help: "At most this many jobs (up to 1000).") var limit: Int = 100

        func run() async throws {
            try await runJob {
                guard (1...JobCall.listLimitMax).contains(limit) else { throw CLIError.badInput("--limit takes 1 to \(JobCall.listLimitMax)") }
                guard case .jobs(let records) = try await cluster.client().job(.list(state: .dead, type: nil, after: after, limit: limit)) else {
                    throw CLIError.unexpectedAnswer
                }
                printJobs(records, json: cluster.json)
            }
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "redrive", abstract: "Send a dead job back to run, with a fresh budget.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The job id.") var id: String

        func run() async throws {
            try await runJob {
                let record = try await cluster.client().jobRecord(.retry(try parseJobID(id), deadOnly: true))
                output(cluster.json, describe(record), text: "job \(record.id): \(record.state.rawValue)")
            }
        }
    }
}

func describe(_ schedule: CronRecord) -> [String: Any] {
    var object: [String: Any] = [
        "name": schedule.name, "cron": schedule.expression, "time_zone": schedule.timeZone, "type": schedule.spec.type,
        "command": schedule.spec.command, "catch_up": schedule.catchUp.rawValue, "overlap": schedule.overlap.rawValue,
        "paused": schedule.paused, "last_tick_ms": schedule.lastTickMs,
    ]
    if let next = try? schedule.schedule().nextFire(after: Date(timeIntervalSince1970: Double(schedule.lastTickMs) / 1000)) {
        object["next_tick_ms"] = Int64(next.timeIntervalSince1970 * 1000)
    }
    if let job = schedule.lastJob { object["last_job"] = job }
    return object
}

/// `aspen cron …`: recurring jobs (made with `aspen job submit --cron`).
struct CronCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cron", abstract: "List, pause, resume and inspect recurring jobs (aspen job submit --cron … makes them).",
        subcommands: [List.self, Pause.self, Resume.self, History.self, Remove.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Schedules, with their next tick.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runJob {
                guard case .schedules(let schedules) = try await cluster.client().job(.schedules) else { throw CLIError.unexpectedAnswer }
                let lines = schedules.map { schedule in
                    let next = (describe(schedule)["next_tick_ms"] as? Int64).map(formatTime) ?? "never"
                    return "\(schedule.name)\t\(schedule.expression) (\(schedule.timeZone))\t\(schedule.paused ? "paused" : "next \(next)")\t"
                        + schedule.spec.command.joined(separator: " ")
                }
                output(cluster.json, ["schedules": schedules.map(describe)], text: lines.joined(separator: "\n"))
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "pause", abstract: "Stop a schedule's ticks until resumed.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The schedule's name.") var name: String

        func run() async throws { try await CronCommand.setPaused(cluster, name, true) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resume", abstract: "Resume a schedule at its next tick (ticks while paused are not caught up).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The schedule's name.") var name: String

        func run() async throws { try await CronCommand.setPaused(cluster, name, false) }
    }

    static func setPaused(_ cluster: ClusterOptions, _ name: String, _ paused: Bool) async throws {
        try await runJob {
            _ = try await cluster.client().job(.schedulePause(name, paused: paused))
            output(cluster.json, ["name": name, "paused": paused], text: "schedule \(name): \(paused ? "paused" : "resumed")")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "history", abstract: "A schedule's latest ticks: the job each made, or why it made none.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The schedule's name.") var name: String
        @Option(help: "At most this many ticks, the newest (up to 1000).") var limit: Int = 50

        func run() async throws {
            try await runJob {
                guard (1...JobCall.listLimitMax).contains(limit) else { throw CLIError.badInput("--limit takes 1 to \(JobCall.listLimitMax)") }
                guard case .ticks(let ticks) = try await cluster.client().job(.scheduleHistory(name, limit: limit)) else { throw CLIError.unexpectedAnswer }
                let described: [[String: Any]] = ticks.map { tick in
                    var object: [String: Any] = ["tick_ms": tick.tickMs, "message": tick.message]
                    if let job = tick.job { object["job"] = job }
                    return object
                }
                let lines = ticks.map { "\(formatTime($0.tickMs))  \($0.job.map { "job \($0)" } ?? "-")  \($0.message)" }
                output(cluster.json, ["ticks": described], text: lines.joined(separator: "\n"))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a schedule (the jobs it made stay).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The schedule's name.") var name: String

        func run() async throws {
            try await runJob {
                _ = try await cluster.client().job(.scheduleRemove(name))
                output(cluster.json, ["name": name, "removed": true], text: "schedule \(name): removed")
            }
        }
    }
}
