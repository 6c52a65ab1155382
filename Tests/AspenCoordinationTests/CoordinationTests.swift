import AspenCoordination
import AspenCore
import AspenKV
import Synchronization
import Testing

/// A clock the test moves by hand (the store's clock plays the leader's).
final class TestClock: Sendable {
    let now = Atomic<Int64>(1_000_000)
    func advance(_ ms: Int64) { now.add(ms, ordering: .relaxed) }
    var read: @Sendable () -> Int64 { { self.now.load(ordering: .relaxed) } }
}

@Suite("Locks")
struct LockTests {
    @Test("one holder at a time; a stale token can neither renew nor release; expiry hands over with a greater token")
    func fencing() async throws {
        let clock = TestClock()
        let store = MemoryKeyValueStore(nowMs: clock.read)
        let lock = DistributedLock(store: store)
        let first = try await lock.tryAcquire("jobs", holder: "a", ttlMs: 1000)
        await #expect(throws: CoordinationError.held(name: "jobs", holder: "a", token: first.token)) {
            try await lock.tryAcquire("jobs", holder: "b", ttlMs: 1000)
        }
        try await lock.renew(first)
        clock.advance(900)
        try await lock.renew(first)  // renewed at 900 ms: good until 1 900 ms
        clock.advance(900)
        #expect(try await lock.holder("jobs")?.holder == "a")
        // Not renewed: the leader's clock expires it and someone else takes over.
        clock.advance(200)
        let second = try await lock.tryAcquire("jobs", holder: "b", ttlMs: 1000)
        #expect(second.token > first.token)
        await #expect(throws: CoordinationError.self) { try await lock.renew(first) }
        await #expect(throws: CoordinationError.staleToken(name: "jobs", token: first.token, current: second.token)) {
            try await lock.release("jobs", holder: "a", token: first.token)
        }
        #expect(try await lock.holder("jobs")?.holder == "b")
        try await lock.release("jobs", holder: "b", token: second.token)
        #expect(try await lock.holder("jobs") == nil)
        let third = try await lock.tryAcquire("jobs", holder: "c", ttlMs: 1000)
        #expect(third.token > second.token)
        await #expect(throws: CoordinationError.self) { try await lock.tryAcquire("jobs", holder: "c", ttlMs: 5) }
        await #expect(throws: CoordinationError.self) { try await lock.tryAcquire("", holder: "c", ttlMs: 1000) }
    }

    @Test("many contending clients: never two holders, tokens strictly increasing")
    func contention() async throws {
        let clock = TestClock()
        let store = MemoryKeyValueStore(nowMs: clock.read)
        let lock = DistributedLock(store: store)
        final class Tally: Sendable {
            let inside = Atomic<Int>(0)
            let overlaps = Atomic<Int>(0)
            let tokens = Mutex<[Int64]>([])
        }
        let tally = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<16 {
                group.addTask {
                    for _ in 0..<10 {
                        let grant = try await lock.acquire("shared", holder: "c\(client)", ttlMs: 60_000, waitMs: 60_000) { _ in await Task.yield() }
                        if tally.inside.add(1, ordering: .relaxed).newValue > 1 { tally.overlaps.add(1, ordering: .relaxed) }
                        tally.tokens.withLock { $0.append(grant.token) }
                        await Task.yield()
                        tally.inside.subtract(1, ordering: .relaxed)
                        try await lock.release("shared", holder: grant.holder, token: grant.token)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(tally.overlaps.load(ordering: .relaxed) == 0)
        let granted = tally.tokens.withLock { $0 }
        #expect(granted.count == 160)
        #expect(granted == granted.sorted() && Set(granted).count == granted.count, "tokens strictly increase in grant order")
    }
}

@Suite("Counters and sequences")
struct CounterTests {
    @Test("a model of random operations agrees with the counter; unsigned saturates at 0; overflow is refused")
    func modelBased() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        for signed in [false, true] {
            let counter = Counter(store: store, signed: signed)
            var model: Int64 = 0
            var generator = SplitMix64(seed: signed ? 2 : 1)
            for _ in 0..<500 {
                let amount = Int64(generator.next(in: 0...20))
                switch generator.next(in: 0...4) {
                case 0: model += 1; #expect(try await counter.increment("c") == model)
                case 1: model += amount; #expect(try await counter.add("c", amount) == model)
                case 2:
                    model = signed ? model - amount : max(0, model - amount)
                    #expect(try await counter.subtract("c", amount) == model)
                case 3: model = amount; #expect(try await counter.set("c", amount) == model)
                default:
                    let matches = generator.chance(0.5)
                    let expected = matches ? model : model + 1
                    #expect(try await counter.compareAndSet("c", expected: expected, new: amount) == matches)
                    if matches { model = amount }
                }
                #expect(try await counter.get("c") == model)
            }
        }
        let counter = Counter(store: store, signed: true)
        try await counter.set("big", .max)
        await #expect(throws: CoordinationError.self) { try await counter.add("big", 1) }
    }

    @Test("concurrent increments are all counted; sequences hand out unique, increasing ids")
    func concurrency() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let counter = Counter(store: store)
        let sequence = SequenceGenerator(store: store)
        let ids = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine: [Int64] = []
                    for _ in 0..<25 {
                        try await counter.increment("hits")
                        mine.append(try await sequence.next("orders"))
                    }
                    let block = try await sequence.reserve("orders", count: 10)
                    mine += Array(block)
                    return mine
                }
            }
            return try await group.reduce(into: [Int64]()) { $0 += $1 }
        }
        #expect(try await counter.get("hits") == 200)
        #expect(Set(ids).count == ids.count)
        #expect(ids.sorted() == Array(1...Int64(ids.count)))
    }
}
