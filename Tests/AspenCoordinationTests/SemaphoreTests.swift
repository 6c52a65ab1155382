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

@Suite("Lock sets, service registry, buffered counters")
struct RegistryTests {
    @Test("a lock set is taken all or none")
    func lockSet() async throws {
        let lock = DistributedLock(store: MemoryKeyValueStore(nowMs: { 0 }))
        let held = try await lock.tryAcquire("b", holder: "x", ttlMs: 10_000)
        await #expect(throws: CoordinationError.held(name: "b", holder: "x", token: held.token)) {
            try await lock.acquireAll(["a", "b", "c"], holder: "y", ttlMs: 10_000)
        }
        #expect(try await lock.holder("a") == nil, "none of the set was taken")
        #expect(try await lock.holder("c") == nil)
        try await lock.release("b", holder: "x", token: held.token)
        let grants = try await lock.acquireAll(["a", "b", "c"], holder: "y", ttlMs: 10_000)
        #expect(grants.map(\.name) == ["a", "b", "c"])
        for grant in grants { #expect(try await lock.holder(grant.name)?.holder == "y") }
    }

    @Test("instances register with tags and metadata, are discovered, and vanish when they stop heartbeating")
    func registry() async throws {
        let clock = TestClock()
        let registry = ServiceRegistry(store: MemoryKeyValueStore(nowMs: clock.read))
        let web1 = try await registry.register("web", instance: "w1", address: "10.0.0.1:80", tags: ["eu", "canary"], metadata: ["v": "2"], ttlMs: 1000)
        try await registry.register("web", instance: "w2", address: "10.0.0.2:80", tags: ["eu"], ttlMs: 1000)
        #expect(try await registry.discover("web").map(\.instance) == ["w1", "w2"])
        #expect(try await registry.discover("web", tags: ["canary"]).map(\.metadata) == [["v": "2"]])
        clock.advance(800)
        try await registry.heartbeat(web1)
        clock.advance(400)
        #expect(try await registry.discover("web").map(\.instance) == ["w1"], "w2 stopped heartbeating")
        try await registry.deregister("web", instance: "w1")
        #expect(try await registry.discover("web").isEmpty)
    }

    @Test("a buffered counter writes gathered increments in one change")
    func buffered() async throws {
        let counter = Counter(store: MemoryKeyValueStore(nowMs: { 0 }))
        let buffer = BufferedCounter(counter, name: "views")
        for _ in 0..<100 { await buffer.add(1) }
        #expect(try await counter.get("views") == 0)
        #expect(try await buffer.flush() == 100)
        #expect(try await counter.get("views") == 100)
    }
}

@Suite("Read-write lock")
struct ReadWriteLockTests {
    @Test("many readers or one writer, bounded readers, a waiting writer is not starved, downgrade")
    func exclusion() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let lock = ReadWriteLock(store: store, readersMax: 4)
        final class State: Sendable {
            let readers = Atomic<Int>(0)
            let writers = Atomic<Int>(0)
            let violations = Atomic<Int>(0)
            let writes = Atomic<Int>(0)
        }
        let state = State()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for reader in 0..<8 {
                group.addTask {
                    for _ in 0..<30 {
                        guard let hold = try await lock.tryRead("doc", holder: "r\(reader)", ttlMs: 60_000) else {
                            await Task.yield()
                            continue
                        }
                        let inside = state.readers.add(1, ordering: .relaxed).newValue
                        if inside > 4 || state.writers.load(ordering: .relaxed) > 0 { state.violations.add(1, ordering: .relaxed) }
                        await Task.yield()
                        state.readers.subtract(1, ordering: .relaxed)
                        try await lock.releaseRead(hold)
                    }
                }
            }
            for writer in 0..<2 {
                group.addTask {
                    for _ in 0..<5 {
                        let hold = try await lock.write("doc", holder: "w\(writer)", ttlMs: 60_000, waitMs: 60_000)
                        if state.writers.add(1, ordering: .relaxed).newValue > 1 || state.readers.load(ordering: .relaxed) > 0 {
                            state.violations.add(1, ordering: .relaxed)
                        }
                        await Task.yield()
                        state.writers.subtract(1, ordering: .relaxed)
                        state.writes.add(1, ordering: .relaxed)
                        try await lock.releaseWrite(hold)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(state.violations.load(ordering: .relaxed) == 0)
        #expect(state.writes.load(ordering: .relaxed) == 10, "writers were not starved by readers")
        // Downgrade: the writer keeps reading, other readers may join, writers may not.
        let writeHold = try await lock.write("doc", holder: "w", ttlMs: 60_000, waitMs: 0)
        #expect(try await lock.tryRead("doc", holder: "r", ttlMs: 60_000) == nil)
        let readHold = try await lock.downgrade(writeHold)
        #expect(try await lock.tryRead("doc", holder: "r", ttlMs: 60_000) != nil)
        await #expect(throws: CoordinationError.self) { try await lock.write("doc", holder: "w2", ttlMs: 60_000, waitMs: 20) }
        try await lock.releaseRead(readHold)
    }
}
