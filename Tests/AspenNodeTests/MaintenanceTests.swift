import AspenCore
import AspenJobs
import AspenKV
import Synchronization
import Testing

@testable import AspenNode

@Suite("Maintenance jobs")
struct MaintenanceTests {
    @Test("each interval's jobs are submitted once, however many leaders' schedulers cross its boundary; none at start")
    func oncePerInterval() async throws {
        let now = Mutex<Int64>(1_000_000_000_300)
        let memory = MemoryKeyValueStore(nowMs: { now.withLock { $0 } })
        let jobs = JobStore(store: memory, nowMs: { now.withLock { $0 } })
        let tasks = [
            MaintenanceTask(name: "blob-gc", intervalMs: 1000, perNode: false, timeoutMs: 60_000),
            MaintenanceTask(name: "blob-scrub", intervalMs: 5000, perNode: true, timeoutMs: 0),
            MaintenanceTask(name: "off", intervalMs: 0, perNode: false, timeoutMs: 0),
        ]
        let schedulers = (0..<3).map { _ in MaintenanceScheduler(tasks: tasks, nowMs: now.withLock { $0 }) }
        for scheduler in schedulers { #expect(try await scheduler.pass(jobs, nowMs: now.withLock { $0 }, members: [1, 2, 3]) == 0) }
        var made = 0
        for _ in 0..<10 {
            let at = now.withLock { now in
                now += 700
                return now
            }
            try await withThrowingTaskGroup(of: Int.self) { group in
                for scheduler in schedulers { group.addTask { try await scheduler.pass(jobs, nowMs: at, members: [1, 2, 3]) } }
                for try await count in group { made += count }
            }
            try await runAll(jobs)
        }
        let all = try await jobs.list(limit: 1000)
        // 7 s: 7 collection boundaries crossed, and one scrub boundary (for each of 3 members).
        #expect(all.filter { $0.spec.command == ["blob-gc"] }.count == 7)
        let scrubs = all.filter { $0.spec.command == ["blob-scrub"] }
        #expect(scrubs.compactMap { $0.spec.requiredTags[MaintenanceTask.nodeTag] }.sorted() == ["1", "2", "3"])
        #expect(made == all.count && all.allSatisfy { $0.origin == "maintenance" && $0.spec.type == "maintenance" })

        // A run still pending (its node is down) holds back the next interval's: none pile up.
        let later = now.withLock { now in
            now += 1000
            return now
        }
        #expect(try await schedulers[0].pass(jobs, nowMs: later, members: [1, 2, 3]) == 1)
        let after = now.withLock { now in
            now += 1000
            return now
        }
        #expect(try await schedulers[0].pass(jobs, nowMs: after, members: [1, 2, 3]) == 0, "a second collection queued behind a pending one")
        // Nothing to maintain (no blob ever held): no jobs, and the interval counts as done.
        let idle = now.withLock { now in
            now += 5000
            return now
        }
        try await runAll(jobs)
        #expect(try await schedulers[1].pass(jobs, nowMs: idle, members: [1, 2, 3], needed: { false }) == 0)
        #expect(try await schedulers[1].pass(jobs, nowMs: idle, members: [1, 2, 3]) == 0)
    }

    /// Runs every maintenance job there is, as the nodes' workers would.
    func runAll(_ jobs: JobStore) async throws {
        for node in 1...3 {
            let worker = WorkerInfo(
                name: "m\(node)", node: UInt64(node), types: [MaintenanceTask.jobType],
                tags: [MaintenanceTask.workerTag: "yes", MaintenanceTask.nodeTag: "\(node)"])
            while let job = try await jobs.claim(worker, leaseMs: 30_000) {
                _ = try await jobs.finish(job.id, token: job.attempt!.token, outcome: .succeeded(result: []))
            }
        }
    }
}
