import AspenClient
import AspenCore
import AspenJobs
import ArgumentParser
import Foundation

/// `aspen hook …`: subject patterns whose messages each run a job.
struct HookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook", abstract: "Run a job for every message on a subject pattern (reliable: retries, dead letters).",
        subcommands: [Create.self, List.self, Metrics.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a hook; each new message on the pattern runs the job, the event as JSON in ASPEN_EVENT.",
            discussion: "aspen hook create on-order --on 'orders.*.created' --run-job shell -- ./notify.sh")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The hook's name.") var name: String
        @Option(help: "The subject pattern ('*' one token, '>' one or more).") var on: String
        @Option(name: .customLong("run-job"), help: "The job type to run (shell: the command after --).") var jobType: String = "shell"
        @Option(help: "Attempts of each event's job.") var maxAttempts: Int = 3
        @Argument(parsing: .postTerminator, help: "A shell job's command, after --.") var command: [String] = []

        func run() async throws {
            try await runJob {
                let spec = JobSpec(type: jobType, command: command, maxAttempts: maxAttempts)
                try spec.validate()
                guard case .hooks(let made) = try await cluster.client().job(.hookCreate(HookRecord(name: name, pattern: on, job: spec))) else {
                    throw CLIError.unexpectedAnswer
                }
                output(cluster.json, ["hooks": made.map(describe)], text: "hook \(name): \(on) runs \(jobType)")
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
                    : "\(hook.name)\t\(hook.pattern)\t\(job)"
            }
            output(cluster.json, ["hooks": hooks.map(describe)], text: lines.joined(separator: "\n"))
        }
    }
}

func describe(_ status: HookStatus) -> [String: Any] {
    [
        "name": status.hook.name, "on": status.hook.pattern, "type": status.hook.job.type, "command": status.hook.job.command,
        "next": status.next, "pending": status.pending, "dead": status.dead,
    ]
}
