import AspenCoordination
import AspenCore
import AspenKV
import Synchronization
import Testing

@Suite("Work queue")
struct QueueTests {
    @Test("FIFO among visible items; an acked item never comes back; unacked ones return after the visibility timeout")
    func fifoAndAck() async throws {
        let clock = TestClock()
        let queue = WorkQueue(store: MemoryKeyValueStore(nowMs: clock.read), nowMs: clock.read)
        for index in 1...20 { try await queue.enqueue("jobs", [UInt8(index)]) }
        var first: [QueueDelivery] = []
        while let delivery = try await queue.dequeue("jobs", visibilityMs: 1000) { first.append(delivery) }
        #expect(first.map { $0.payload[0] } == Array(1...20))
        for delivery in first where delivery.payload[0] % 2 == 0 { try await queue.ack(delivery) }
        #expect(try await queue.dequeue("jobs", visibilityMs: 1000) == nil, "everything is in flight")
        clock.advance(1001)
        var second: [QueueDelivery] = []
        while let delivery = try await queue.dequeue("jobs", visibilityMs: 1000) { second.append(delivery) }
        #expect(second.map { $0.payload[0] } == Array(stride(from: 1, through: 19, by: 2)))
        #expect(second.allSatisfy { $0.deliveries == 2 })
        // A receipt from the first delivery is stale now.
        await #expect(throws: CoordinationError.self) { try await queue.ack(first[0]) }
        for delivery in second { try await queue.ack(delivery) }
        clock.advance(5000)
        #expect(try await queue.dequeue("jobs", visibilityMs: 1000) == nil)
        #expect(try await queue.status("jobs") == QueueStatus(visible: 0, inFlight: 0, delayed: 0, deadLetters: 0))
    }

    @Test("nack, extend, delays, deduplication, the dead-letter queue and redrive")
    func lifecycle() async throws {
        let clock = TestClock()
        let queue = WorkQueue(store: MemoryKeyValueStore(nowMs: clock.read), maxDeliveries: 2, nowMs: clock.read)
        let id = try await queue.enqueue("q", [1], dedupID: "order-7")
        #expect(try await queue.enqueue("q", [9], dedupID: "order-7") == id, "a duplicate is not enqueued again")
        try await queue.enqueue("q", [2], delayMs: 500)
        #expect(try await queue.status("q") == QueueStatus(visible: 1, inFlight: 0, delayed: 1, deadLetters: 0))
        var delivery = try #require(try await queue.dequeue("q", visibilityMs: 100))
        delivery = try await queue.extend(delivery, byMs: 1000)
        clock.advance(200)
        #expect(try await queue.peek("q") == nil, "extended: still invisible, and the delayed item is not due")
        try await queue.nack(delivery)
        let again = try #require(try await queue.dequeue("q", visibilityMs: 1000))
        #expect(again.id == id && again.deliveries == 2)
        clock.advance(400)
        #expect(try await queue.peek("q")?.payload == [2], "the delayed item is due")
        try await queue.ack(try #require(try await queue.dequeue("q", visibilityMs: 100)))
        // The first item was delivered twice already: once visible again, it goes to the dead letters.
        clock.advance(1000)
        #expect(try await queue.dequeue("q", visibilityMs: 100) == nil)
        #expect(try await queue.status("q").deadLetters == 1)
        #expect(try await queue.redrive("q") == 1)
        let redriven = try #require(try await queue.dequeue("q", visibilityMs: 100))
        #expect(redriven.payload == [1] && redriven.deliveries == 1)
        await #expect(throws: CoordinationError.self) { try await queue.enqueue("q", Array(repeating: 0, count: queue.payloadBytesMax + 1)) }
    }

    @Test("concurrent consumers: every item acked exactly once, none lost")
    func concurrentConsumers() async throws {
        let clock = TestClock()
        let queue = WorkQueue(store: MemoryKeyValueStore(nowMs: clock.read), nowMs: clock.read)
        for index in 0..<120 { try await queue.enqueue("work", Array(String(index).utf8)) }
        let acked = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    while let delivery = try await queue.dequeue("work", visibilityMs: 60_000) {
                        try await queue.ack(delivery)
                        mine.append(String(decoding: delivery.payload, as: UTF8.self))
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(acked.count == 120)
        #expect(Set(acked) == Set((0..<120).map(String.init)))
    }
}

@Suite("Elections and rate limits")
struct ElectionAndRateLimitTests {
    @Test("one leader per term, terms increase, resigning hands over at once, expiry hands over after the TTL")
    func election() async throws {
        let clock = TestClock()
        let election = LeaderElection(store: MemoryKeyValueStore(nowMs: clock.read))
        let first = try await election.campaign("scheduler", candidate: "a", ttlMs: 1000, waitMs: 0)
        await #expect(throws: CoordinationError.self) { try await election.campaign("scheduler", candidate: "b", ttlMs: 1000, waitMs: 0) }
        #expect(try await election.leader("scheduler")?.leader == "a")
        try await election.resign(first)
        let second = try await election.campaign("scheduler", candidate: "b", ttlMs: 1000, waitMs: 0)
        #expect(second.token > first.token)
        clock.advance(1500)
        let third = try await election.campaign("scheduler", candidate: "c", ttlMs: 1000, waitMs: 0)
        #expect(third.token > second.token)
        await #expect(throws: CoordinationError.self) { try await election.renew(second) }
    }

    @Test("a token bucket never lets through more than its capacity plus its refill over any window")
    func rateLimiter() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(store: MemoryKeyValueStore(nowMs: clock.read), capacity: 5, refillPerSecond: 2, nowMs: clock.read)
        var granted: [Int64] = []
        var generator = SplitMix64(seed: 3)
        let start = clock.read()
        for _ in 0..<400 {
            clock.advance(Int64(generator.next(in: 0...120)))
            if try await limiter.tryAcquire("api") { granted.append(clock.read()) }
        }
        // In every window of w ms at most 5 + 2·w/1000 requests pass.
        for (index, time) in granted.enumerated() {
            for window in [0, 500, 1000, 5000] as [Int64] {
                let inWindow = granted[index...].prefix { $0 <= time + window }.count
                #expect(Double(inWindow) <= 5 + 2 * Double(window) / 1000 + 1e-9, "window \(window) ms from \(time - start)")
            }
        }
        #expect(granted.count > 10)
        try await limiter.reset("api")
        #expect(try await limiter.available("api") == 5)
    }
}
