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
        }
        let all = try await jobs.list(limit: 1000)
        // 7 s: 7 collection boundaries crossed, and one scrub boundary (for each of 3 members).
        #expect(all.filter { $0.spec.command == ["blob-gc"] }.count == 7)
        let scrubs = all.filter { $0.spec.command == ["blob-scrub"] }
        #expect(scrubs.compactMap { $0.spec.requiredTags[MaintenanceTask.nodeTag] }.sorted() == ["1", "2", "3"])
        #expect(made == all.count && all.allSatisfy { $0.origin == "maintenance" && $0.spec.type == "maintenance" })
    }
}
