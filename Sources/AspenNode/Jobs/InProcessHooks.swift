import AspenCore
import AspenJobs
import AspenWorker
import Foundation
import Logging
import Synchronization

/// Runs in-process hooks' commands on this node (the leader, whose manager drains the hooks),
/// unless it was started with `job-workers` 0:
/// each hook at most its concurrency at once, an event arriving when all are busy dropped and
/// counted, each command stopped after its timeout as a shell job is (its process group, then
/// whatever escaped it). Best effort: nothing is retried, and a command running when the node
/// dies is not run again (the node kills what it left when it restarts).
final class InProcessHooks: Sendable {
    struct Counts {
        var running = 0
        var runs: UInt64 = 0
        var failures: UInt64 = 0
        var timeouts: UInt64 = 0
        var dropped: UInt64 = 0
    }

    let markerPrefix: String
    let environment: [String: String]
    let logger: Logger
    private let runner = ShellRunner()
    private let state = Mutex<(counts: [String: Counts], tasks: [Int: Task<Void, Never>], next: Int, stopped: Bool)>(([:], [:], 0, false))
    /// Output kept per command, for the log line of a failure.
    static let outputBytesMax = 4096
    /// An event larger than this does not fit an environment variable: `ASPEN_EVENT` is left out.
    static let eventBytesMax = 64 * 1024

    /// False on a node started with `job-workers` 0: it runs no shell commands, so its
    /// in-process hooks drop their events (counted, logged) while it leads.
    let enabled: Bool

    init(markerPrefix: String, environment: [String: String], enabled: Bool, logger: Logger) {
        self.markerPrefix = markerPrefix
        self.environment = environment
        self.enabled = enabled
        self.logger = logger
    }

    /// Starts the hook's command for `event`; false (and counted as dropped) when the hook is
    /// already running its concurrency's worth.
    func run(_ hook: HookRecord, _ event: [UInt8]) -> Bool {
        guard let settings = hook.inProcess else { return false }
        let id: Int? = state.withLock { state in
            var counts = state.counts[hook.name, default: Counts()]
            defer { state.counts[hook.name] = counts }
            guard enabled, !state.stopped, counts.running < settings.concurrency else {
                counts.dropped += 1
                return nil
            }
            counts.running += 1
            state.next += 1
            return state.next
        }
        guard let id else {
            logger.warning(
                enabled ? "in-process hook at its concurrency: event dropped" : "in-process hook event dropped: this node runs no shell commands (job-workers 0)",
                metadata: ["hook": "\(hook.name)", "concurrency": "\(settings.concurrency)"])
            return false
        }
        var environment = self.environment
        environment["ASPEN_HOOK"] = hook.name
        if event.count <= Self.eventBytesMax { environment["ASPEN_EVENT"] = String(decoding: event, as: UTF8.self) }
        let command = ShellCommand(
            arguments: hook.job.command, environment: environment, timeoutMs: settings.timeoutMs, outputBytesMax: Self.outputBytesMax)
        let marker = "\(markerPrefix)hook/\(hook.name)/\(id)"
        state.withLock { state in
            // Made under the lock, so the task's own removal (which takes it) comes after.
            state.tasks[id] = Task { [self] in
                let output = OutputTail()
                let outcome = try? await runner.run(command, marker: marker) { chunk in output.bytes.withLock { $0 += chunk.bytes } }
                let failed = outcome?.succeeded != true
                self.state.withLock { state in
                    state.tasks[id] = nil
                    state.counts[hook.name, default: Counts()].running -= 1
                    state.counts[hook.name, default: Counts()].runs += 1
                    if failed { state.counts[hook.name, default: Counts()].failures += 1 }
                    if outcome?.timedOut == true { state.counts[hook.name, default: Counts()].timeouts += 1 }
                }
                if failed {
                    logger.notice(
                        "in-process hook command failed (not retried)",
                        metadata: [
                            "hook": "\(hook.name)", "ended": "\(outcome.map { $0.timedOut ? "timed out" : "\($0.termination)" } ?? "did not start")",
                            "output": "\(String(decoding: output.bytes.withLock { $0 }, as: UTF8.self))",
                        ])
                }
            }
        }
        return true
    }

    /// Stops the commands under way (as a cancelled job is stopped) and runs no more.
    func stop() async {
        let tasks = state.withLock { state in
            state.stopped = true
            defer { state.tasks = [:] }
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// Counters for `/metrics`.
    var exposition: [String] {
        let counts = state.withLock { $0.counts }
        guard !counts.isEmpty else { return [] }
        var text = MetricsText()
        let series: [(String, MetricsText.Kind, String, (Counts) -> String)] = [
            ("aspen_hook_inprocess_runs_total", .counter, "In-process hook commands that ran to their end.", { "\($0.runs)" }),
            ("aspen_hook_inprocess_failures_total", .counter, "In-process hook commands that failed or timed out (not retried).", { "\($0.failures)" }),
            ("aspen_hook_inprocess_timeouts_total", .counter, "In-process hook commands stopped at their timeout.", { "\($0.timeouts)" }),
            ("aspen_hook_inprocess_dropped_total", .counter, "Events an in-process hook dropped at its concurrency.", { "\($0.dropped)" }),
            ("aspen_hook_inprocess_running", .gauge, "In-process hook commands running now.", { "\($0.running)" }),
        ]
        for (name, kind, help, value) in series {
            text.add(name, kind, help, label: "hook", counts.keys.sorted().map { ($0, value(counts[$0]!)) })
        }
        return text.lines
    }
}

/// A command's output, as far as it is kept.
private final class OutputTail: Sendable {
    let bytes = Mutex<[UInt8]>([])
}
