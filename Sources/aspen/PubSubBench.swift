import AspenClient
import AspenCore
import AspenJobs
import AspenKV
import Foundation
import Synchronization

/// `aspen bench pub` and `aspen bench pub-latency`: the durable message stream on a running
/// cluster, each against the key-value operation it is built on, measured in the same run.
enum PubSubBench {
    /// Durable publishes per second: `clients` closed-loop publishers, one message per call.
    static func throughput(client: AspenClient, clients: Int, seconds: Double, valueSize: Int, json: Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        let samples = JobBench.Samples()
        let begin = clock.now
        let payload = [UInt8](repeating: 0xAB, count: valueSize)
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<clients {
                group.addTask {
                    while clock.now < deadline {
                        let before = clock.now
                        do {
                            _ = try await client.job(.publish([TopicMessage(subject: "bench.p\(worker)", payload: payload)]))
                            let elapsed = (clock.now - before).components
                            samples.values.withLock { $0.append(Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12) }
                        } catch {
                            samples.errors.withLock { $0["\(error)".prefix(60).description, default: 0] += 1 }
                        }
                    }
                }
            }
        }
        let wall = Double((clock.now - begin).components.seconds) + Double((clock.now - begin).components.attoseconds) / 1e18
        let sorted = samples.values.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let object: [String: Any] = [
            "workload": "pub", "clients": clients, "seconds": wall, "operations": sorted.count, "opsPerSecond": Double(sorted.count) / wall,
            "p50Us": percentile(0.5), "p99Us": percentile(0.99), "errors": samples.errors.withLock { $0 },
        ]
        let text = String(
            format: "pub clients=%d publishes=%d publishes/s=%.0f p50=%.0fµs p99=%.0fµs errors=%@", clients, sorted.count,
            Double(sorted.count) / wall, percentile(0.5), percentile(0.99), "\(samples.errors.withLock { $0 })")
        output(json, object, text: text)
    }

    /// Publish-to-delivery against put-to-watch-event, alternating one of each at a time: how
    /// long from the call's start until a watcher of the stream (of the key) has the message.
    static func latency(client: AspenClient, seconds: Double, json: Bool) async throws {
        let clock = ContinuousClock()
        let keyPrefix = Array("bench/watch-latency/".utf8)
        let stream = try await client.watch(WatchRequest(bounds: KeySelection.prefix(TopicLog.messagesPrefix).bounds, progressIntervalMs: 0))
        let keys = try await client.watch(WatchRequest(bounds: KeySelection.prefix(keyPrefix).bounds, progressIntervalMs: 0))
        var streamEvents = stream.makeAsyncIterator()
        var keyEvents = keys.makeAsyncIterator()
        func next(_ iterator: inout AsyncThrowingStream<WatchMessage, any Error>.Iterator) async throws {
            while let message = try await iterator.next() {
                if case .events(let events) = message, events.contains(where: { $0.kind == .put }) { return }
            }
            throw CLIError.unavailable("the watch ended")
        }
        var published: [Double] = []
        var put: [Double] = []
        var grouped: [Double] = []
        // A consumer group of its own, on a subject of its own, with a fetch waiting.
        let tag = UInt32.random(in: 0...UInt32.max)
        let group = "bench-latency-\(tag)"
        _ = try await client.job(.groupCreate(ConsumerGroup(name: group, pattern: "bench.group.\(tag)", ackWaitMs: 30_000), from: nil))
        func micros(_ since: ContinuousClock.Instant) -> Double {
            let elapsed = (clock.now - since).components
            return Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12
        }
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        var round = 0
        while clock.now < deadline {
            round += 1
            var before = clock.now
            _ = try await client.job(.publish([TopicMessage(subject: "bench.latency", payload: Array("\(round)".utf8))]))
            try await next(&streamEvents)
            published.append(micros(before))
            before = clock.now
            _ = try await client.put(keyPrefix + Array("\(round % 100)".utf8), Array("\(round)".utf8))
            try await next(&keyEvents)
            put.append(micros(before))
            let fetching = Task { try await client.job(.fetch(group: group, consumer: "bench", max: 1, waitMs: 5000)) }
            // The fetch is waiting on the leader before the message is published.
            try await Task.sleep(for: .milliseconds(5))
            before = clock.now
            _ = try await client.job(.publish([TopicMessage(subject: "bench.group.\(tag)", payload: Array("\(round)".utf8))]))
            guard case .deliveries(let deliveries) = try await fetching.value, let delivery = deliveries.first else {
                throw CLIError.unavailable("the group's fetch answered no message")
            }
            grouped.append(micros(before))
            _ = try await client.job(.settle(group: group, cursor: delivery.message.cursor, receipt: delivery.receipt, action: .ack))
        }
        grouped.sort()
        published.sort()
        put.sort()
        func percentile(_ values: [Double], _ p: Double) -> Double { values.isEmpty ? 0 : values[min(values.count - 1, Int(Double(values.count) * p))] }
        let object: [String: Any] = [
            "workload": "pub-latency", "rounds": round, "deliveryP50Us": percentile(published, 0.5), "deliveryP99Us": percentile(published, 0.99),
            "watchP50Us": percentile(put, 0.5), "watchP99Us": percentile(put, 0.99),
            "groupP50Us": percentile(grouped, 0.5), "groupP99Us": percentile(grouped, 0.99),
        ]
        let text = String(
            format:
                "pub-latency rounds=%d publish-to-delivery p50=%.0fµs p99=%.0fµs; to a waiting group fetch p50=%.0fµs p99=%.0fµs; put-to-watch-event p50=%.0fµs p99=%.0fµs",
            round, percentile(published, 0.5), percentile(published, 0.99), percentile(grouped, 0.5), percentile(grouped, 0.99), percentile(put, 0.5),
            percentile(put, 0.99))
        output(json, object, text: text)
    }
}
