import AspenCoordination
import AspenCore
import AspenKV
import Synchronization
import Testing

@Suite("Semaphores and barriers")
struct SemaphoreTests {
    @Test("never more than capacity holders, under contention and across expiry")
    func boundedHolders() async throws {
        let clock = TestClock()
        let store = MemoryKeyValueStore(nowMs: clock.read)
        let semaphore = DistributedSemaphore(store: store, capacity: 3)
        final class Peak: Sendable {
            let now = Atomic<Int>(0)
            let max = Atomic<Int>(0)
        }
        let peak = Peak()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<10 {
                group.addTask {
                    for _ in 0..<5 {
                        guard let permit = try await semaphore.tryAcquire("pool", holder: "w\(worker)", ttlMs: 60_000) else {
                            await Task.yield()
                            continue
                        }
                        let inside = peak.now.add(1, ordering: .relaxed).newValue
                        peak.max.max(inside, ordering: .relaxed)
                        await Task.yield()
                        peak.now.subtract(1, ordering: .relaxed)
                        try await semaphore.release(permit)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(peak.max.load(ordering: .relaxed) <= 3)
        // Holders that stop renewing free their permits when their leases expire.
        for index in 0..<3 { #expect(try await semaphore.tryAcquire("held", holder: "h\(index)", ttlMs: 1000) != nil) }
        #expect(try await semaphore.tryAcquire("held", holder: "late", ttlMs: 1000) == nil)
        clock.advance(1500)
        #expect(try await semaphore.tryAcquire("held", holder: "late", ttlMs: 1000) != nil)
        #expect(try await semaphore.holders("held") == ["late"])
    }

    @Test("a barrier releases everyone once the count is reached, and stays released")
    func barrier() async throws {
        let barrier = DistributedBarrier(store: MemoryKeyValueStore(nowMs: { 0 }))
        #expect(try await barrier.enter("start", participant: "a", count: 3) == .init(entered: 1, released: false))
        #expect(try await barrier.enter("start", participant: "b", count: 3).released == false)
        #expect(!(try await barrier.wait("start", waitMs: 40)))
        #expect(try await barrier.enter("start", participant: "c", count: 3).released)
        #expect(try await barrier.wait("start", waitMs: 0))
        try await barrier.leave("start", participant: "a")
        #expect(try await barrier.status("start") == .init(entered: 2, released: true))
    }
}
