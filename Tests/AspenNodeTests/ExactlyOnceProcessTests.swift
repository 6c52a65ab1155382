import AspenClient
import AspenCoordination
import AspenCore
import AspenKV
import Foundation
import Testing

extension ClusterSuites {
    @Suite("Exactly-once writes through failures of real processes", .serialized, .timeLimit(.minutes(3)))
    struct ExactlyOnceProcessTests {
        /// What the clients saw: every acknowledged increment, every acknowledged enqueue, every delivery.
        actor Tally {
            var increments = 0
            var unknown: [String] = []
            var failures: [String] = []
            var enqueued: Set<String> = []
            var attempted: Set<String> = []
            var deliveries: [String] = []

            func incremented() { increments += 1 }
            func outcomeUnknown(_ what: String) { unknown.append(what) }
            func failed(_ what: String) { failures.append(what) }
            func attempting(_ payload: String) { attempted.insert(payload) }
            func enqueued(_ payload: String) { enqueued.insert(payload) }
            func delivered(_ payload: String) { deliveries.append(payload) }
        }

        static func wallMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

        /// Runs `body` until `deadline`, recording what each attempt's outcome was.
        static func loop(until deadline: ContinuousClock.Instant, tally: Tally, _ body: @Sendable () async throws -> Void) async {
            while ContinuousClock.now < deadline {
                do {
                    try await body()
                } catch let error as ClientError {
                    if case .outcomeUnknown = error { await tally.outcomeUnknown("\(error)") } else { await tally.failed("\(error)") }
                } catch {
                    await tally.failed("\(error)")
                }
            }
        }

        @Test("counters and a queue through leader kills and restarts: each acknowledged increment counts once, no item is delivered twice")
        func countersAndQueueThroughKills() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            _ = try await cluster.leader()
            // Two clients, each with one session that carries several writes at once.
            let clients = try (0..<2).map { _ in try cluster.client() }
            let tally = Tally()
            let deadline = ContinuousClock.now + .seconds(10)
            var workers: [Task<Void, Never>] = []
            for writer in 0..<4 {
                let counter = Counter(store: clients[writer % 2])
                workers.append(Task {
                    await Self.loop(until: deadline, tally: tally) {
                        _ = try await counter.increment("hits")
                        await tally.incremented()
                    }
                })
            }
            for producer in 0..<2 {
                let queue = WorkQueue(store: clients[producer], nowMs: Self.wallMs)
                let next = Counter(store: MemoryKeyValueStore(nowMs: Self.wallMs))
                workers.append(Task {
                    await Self.loop(until: deadline, tally: tally) {
                        let payload = "p\(producer)-\(try await next.increment("n"))"
                        await tally.attempting(payload)
                        _ = try await queue.enqueue("jobs", Array(payload.utf8))
                        await tally.enqueued(payload)
                    }
                })
            }
            let consumerQueue = WorkQueue(store: clients[0], nowMs: Self.wallMs)
            workers.append(Task {
                await Self.loop(until: deadline, tally: tally) {
                    guard let delivery = try await consumerQueue.dequeue("jobs", visibilityMs: 600_000) else {
                        try await Task.sleep(for: .milliseconds(20))
                        return
                    }
                    await tally.delivered(String(decoding: delivery.payload, as: UTF8.self))
                    try await consumerQueue.ack(delivery)
                }
            })
            // The faults: the leader killed with SIGKILL while writes are in flight, then restarted.
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(1_500))
                let leader = try await cluster.leader()
                cluster.kill9(leader)
                try await Task.sleep(for: .milliseconds(800))
                try cluster.start(leader)
            }
            for worker in workers { await worker.value }

            // Whatever is left in the queue is delivered now.
            while let delivery = try await consumerQueue.dequeue("jobs", visibilityMs: 600_000) {
                await tally.delivered(String(decoding: delivery.payload, as: UTF8.self))
                try await consumerQueue.ack(delivery)
            }
            let final = try await Counter(store: clients[0]).get("hits")
            let increments = await tally.increments
            let unknown = await tally.unknown
            let failures = await tally.failures
            let deliveries = await tally.deliveries
            let enqueued = await tally.enqueued
            let attempted = await tally.attempted
            print("exactly-once: \(increments) increments acknowledged, counter \(final); \(enqueued.count) enqueued, \(deliveries.count) delivered; \(unknown.count) unknown outcomes, \(failures.count) failures")
            #expect(increments > 50, "only \(increments) increments were acknowledged: the test checked too little")
            // Sessions make every retry safe: no outcome stays unknown, and the counter holds
            // exactly the increments that were acknowledged (failures applied nothing).
            #expect(unknown.isEmpty, "outcomes left unknown: \(unknown.prefix(5))")
            #expect(final == Int64(increments), "counter \(final) after \(increments) acknowledged increments; failures: \(failures.prefix(5))")
            let counts = Dictionary(deliveries.map { ($0, 1) }, uniquingKeysWith: +)
            let twice = counts.filter { $0.value > 1 }.keys.sorted()
            #expect(twice.isEmpty, "delivered more than once: \(twice.prefix(10))")
            #expect(enqueued.subtracting(counts.keys).isEmpty, "acknowledged but never delivered: \(enqueued.subtracting(counts.keys).sorted().prefix(10))")
            #expect(Set(counts.keys).isSubset(of: attempted), "delivered but never enqueued: \(Set(counts.keys).subtracting(attempted).sorted().prefix(10))")
            #expect(Set(counts.keys) == enqueued, "items whose enqueue failed were delivered: \(Set(counts.keys).subtracting(enqueued).sorted().prefix(10))")
            for client in clients { await client.close() }
            cluster.terminateAll()
        }
    }
}
