import AspenJobs
import Foundation
import Synchronization

/// A piece of the cluster's upkeep that runs as jobs of type `maintenance`, so that each run is
/// in `aspen job list` and `aspen job history` with its summary as the result, is retried when
/// it fails and is never run twice for one interval, whichever leader scheduled it.
public struct MaintenanceTask: Sendable, Equatable {
    public var name: String
    /// One run per this long (0: never scheduled; a submitted job still runs).
    public var intervalMs: Int64
    /// One job per member, run on that member (a scrub of its own files); else one job, on any.
    public var perNode: Bool
    public var timeoutMs: Int64

    public init(name: String, intervalMs: Int64, perNode: Bool, timeoutMs: Int64) {
        self.name = name
        self.intervalMs = intervalMs
        self.perNode = perNode
        self.timeoutMs = timeoutMs
    }

    public static let jobType = "maintenance"
    /// Tags of the nodes' maintenance workers: the node's id, and that it runs maintenance.
    public static let nodeTag = "aspen.node"
    public static let workerTag = "aspen.maintenance"

    /// The jobs of interval number `tick` (the time divided by the interval), each with the
    /// idempotency key `maintenance:NAME[:node-N]:TICK`.
    func specs(tick: Int64, members: [UInt64]) -> [JobSpec] {
        let targets: [UInt64?] = perNode ? members.map { $0 } : [nil]
        return targets.map { node in
            var tags = [Self.workerTag: "yes"]
            if let node { tags[Self.nodeTag] = "\(node)" }
            return JobSpec(
                type: Self.jobType, command: [name], priority: .high, maxAttempts: 3, timeoutMs: timeoutMs,
                idempotencyKey: key(tick: tick, node: node), requiredTags: tags)
        }
    }

    func key(tick: Int64, node: UInt64?) -> String { "maintenance:\(name)\(node.map { ":node-\($0)" } ?? ""):\(tick)" }

    /// Compaction of the key-value history, when the leader's `--auto-compaction-*` policy
    /// decides it: one job per target revision (`kv-compact REVISION`), on any node.
    static let historyCompaction = "kv-compact"

    static func historyCompactionSpec(_ revision: Int64) -> JobSpec {
        JobSpec(
            type: jobType, command: [historyCompaction, "\(revision)"], priority: .high, maxAttempts: 3, timeoutMs: 600_000,
            idempotencyKey: "maintenance:\(historyCompaction):\(revision)", requiredTags: [workerTag: "yes"])
    }

    /// A transit rewrap of the ciphertexts under a key-value prefix (`transit-rewrap MOUNT KEY
    /// PREFIX`), run by a node's maintenance worker.
    static let transitRewrap = "transit-rewrap"

    static func transitRewrapSpec(mount: String, key: String, prefix: String) -> JobSpec {
        JobSpec(
            type: jobType, command: [transitRewrap, mount, key, prefix], priority: .normal, maxAttempts: 3, timeoutMs: 3_600_000,
            requiredTags: [workerTag: "yes"])
    }

    static func summary(_ fields: [String: Any]) -> [UInt8] {
        ClusterEvents.json(fields)
    }
}

/// Submits the maintenance jobs from the leader's manager: each task's jobs when its interval
/// number (wall-clock time divided by the interval) moves on. A node counts from the interval it
/// started in, so a new leader submits at the next boundary, and the idempotency key makes a
/// boundary's jobs once however many leaders cross it.
final class MaintenanceScheduler: Sendable {
    let tasks: [MaintenanceTask]
    private let last: Mutex<[String: Int64]>

    init(tasks: [MaintenanceTask], nowMs: Int64) {
        self.tasks = tasks.filter { $0.intervalMs > 0 }
        last = Mutex(Dictionary(self.tasks.map { ($0.name, nowMs / $0.intervalMs) }, uniquingKeysWith: max))
    }

    /// Submits what is due (nothing when `needed` says there is nothing to maintain); returns
    /// how many jobs were made.
    func pass(_ jobs: JobStore, nowMs: Int64, members: [UInt64], needed: () async -> Bool = { true }) async throws -> Int {
        var made = 0
        let due = tasks.filter { task in nowMs / task.intervalMs > last.withLock({ $0[task.name] ?? nowMs / task.intervalMs }) }
        guard !due.isEmpty else { return 0 }
        guard await needed() else {
            last.withLock { last in for task in due { last[task.name] = nowMs / task.intervalMs } }
            return 0
        }
        for task in due {
            let tick = nowMs / task.intervalMs
            for spec in task.specs(tick: tick, members: members) {
                // While the last interval's run has not ended (a long collection, a node that is
                // down), no other is queued behind it: runs neither overlap nor pile up.
                let node = spec.requiredTags[MaintenanceTask.nodeTag].flatMap(UInt64.init)
                if let previous = try await jobs.job(idempotencyKey: task.key(tick: tick - 1, node: node)), !previous.state.isFinal { continue }
                if try await jobs.submit(spec, origin: "maintenance").created { made += 1 }
            }
            last.withLock { $0[task.name] = tick }
        }
        return made
    }
}
