import AspenClient
import AspenCore
import AspenJobs
import ArgumentParser
import Foundation

/// `aspen hook …`: subject patterns whose messages each run a job.
struct HookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook", abstract: "Run a job (reliable) or a command on the leader (best effort) for every message on a subject pattern.",
        subcommands: [Create.self, List.self, Metrics.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a hook; each new message on the pattern runs the job, the event as JSON in ASPEN_EVENT.",
            discussion: """
                aspen hook create on-order --on 'orders.*.created' --run-job shell -- ./notify.sh
                    each event runs a job: at least once, with retries and dead letters
                aspen hook create on-config --on 'hooks.kv.put.config.>' --in-process --timeout 10s --concurrency 2 -- ./reload.sh
                    each event runs the command on the leader: best effort, no retry; an event
                    arriving while --concurrency commands run is dropped (counted in /metrics)
                The cluster's own events are on hooks.… subjects (docs/jobs.md): key writes, job
                state changes, leader and membership changes.
                """)
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The hook's name.") var name: String
        @Option(help: "The subject pattern ('*' one token, '>' one or more).") var on: String
        @Option(name: .customLong("run-job"), help: "The job type to run (shell: the command after --).") var jobType: String = "shell"
        @Option(help: "Attempts of each event's job.") var maxAttempts: Int = 3
        @Flag(help: "Run the command on the leader for each event instead of as a job (best effort).") var inProcess = false
        @Option(help: "With --in-process: stop a command after this long.") var timeout: String = "30s"
        @Option(help: "With --in-process: commands running at once; more events are dropped.") var concurrency: Int = 4
        @Argument(parsing: .postTerminator, help: "A shell job's command, after --.") var command: [String] = []

        func run() async throws {
            try await runJob {
                let spec = JobSpec(type: jobType, command: command, maxAttempts: maxAttempts)
                try spec.validate()
                let handler = inProcess ? InProcessHook(timeoutMs: try JobDuration.parseMs(timeout), concurrency: concurrency) : nil
                try handler?.validate()
                let hook = HookRecord(name: name, pattern: on, job: spec, inProcess: handler)
                guard case .hooks(let made) = try await cluster.client().job(.hookCreate(hook)) else {
                    throw CLIError.unexpectedAnswer
                }
                output(cluster.json, ["hooks": made.map(describe)], text: "hook \(name): \(on) runs \(inProcess ? "in process" : jobType)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Hooks, their patterns and jobs.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws { try await HookCommand.show(cluster, metrics: false) }
    }

    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "metrics", abstract: "Each hook's place in the stream, events waiting to become jobs, events given up on.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws { try await HookCommand.show(cluster, metrics: true) }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a hook (the jobs it made stay).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The hook's name.") var name: String

        func run() async throws {
            try await runJob {
                _ = try await cluster.client().job(.hookRemove(name))
                output(cluster.json, ["name": name, "removed": true], text: "hook \(name): removed")
            }
        }
    }

    static func show(_ cluster: ClusterOptions, metrics: Bool) async throws {
        try await runJob {
            guard case .hooks(let hooks) = try await cluster.client().job(.hooks) else { throw CLIError.unexpectedAnswer }
            let lines = hooks.map { status in
                let hook = status.hook
                let job = hook.job.command.isEmpty ? hook.job.type : hook.job.command.joined(separator: " ")
                return metrics
                    ? "\(hook.name)\tnext cursor \(status.next)\t\(status.pending) pending\t\(status.dead) dead"
                    : "\(hook.name)\t\(hook.pattern)\t\(hook.inProcess == nil ? "" : "in process: ")\(job)"
            }
            output(cluster.json, ["hooks": hooks.map(describe)], text: lines.joined(separator: "\n"))
        }
    }
}

func describe(_ status: HookStatus) -> [String: Any] {
    [
        "name": status.hook.name, "on": status.hook.pattern, "type": status.hook.job.type, "command": status.hook.job.command,
        "next": status.next, "pending": status.pending, "dead": status.dead,
        "in_process": status.hook.inProcess.map { ["timeout_ms": $0.timeoutMs, "concurrency": $0.concurrency] as [String: Any] } as Any? ?? false,
    ]
}
