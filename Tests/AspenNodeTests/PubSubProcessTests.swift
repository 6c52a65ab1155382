import AspenClient
import AspenCore
import AspenJobs
import Foundation
import Testing

extension ClusterSuites {
    /// The durable message stream against real node processes, through the CLI.
    @Suite("Pub/sub on a real cluster", .serialized, .timeLimit(.minutes(5)))
    struct PubSubProcessTests {
        @Test("3 publishers' messages come back in cursor order, with no gap or duplicate, from any cursor; live subscribers see only their subjects")
        func orderedAndLive() async throws {
            let total = Int(ProcessInfo.processInfo.environment["ASPEN_PUBSUB_MESSAGES"] ?? "") ?? 3000
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()

            // A live subscriber, started before anything is published.
            let live = Process()
            live.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            // Bounded: it ends after two messages, or 30 s without one.
            live.arguments = ["sub", "orders.*.created", "--count", "2", "--idle", "30s", "--endpoints", cluster.endpointsText]
            let pipe = Pipe()
            live.standardOutput = pipe
            try live.run()
            try await Task.sleep(for: .seconds(1))

            let clients = try (0..<3).map { _ in try cluster.client() }
            defer { for client in clients { Task { await client.close() } } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, client) in clients.enumerated() {
                    group.addTask {
                        for number in stride(from: index, to: total, by: 3) {
                            _ = try await client.job(.publish([TopicMessage(subject: "load.p\(index)", payload: Array("\(number)".utf8))]))
                        }
                    }
                }
                try await group.waitForAll()
            }
            for subject in ["orders.eu.created", "orders.created", "orders.us.shipped", "orders.us.created"] {
                let (status, said) = try await cluster.aspen(["pub", subject, "{\"at\": \"\(subject)\"}"], withErrors: true)
                #expect(status == 0, "\(said)")
            }
            let delivered = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            live.waitUntilExit()
            let subjects = delivered.split(separator: "\n").map { $0.split(separator: " ")[1] }
            #expect(subjects == ["orders.eu.created", "orders.us.created"], "\(delivered)")

            let (status, text) = try await cluster.aspen(["sub", ">", "--from-cursor", "0", "--count", "\(total + 4)", "--idle", "10s", "--json"], withErrors: true)
            #expect(status == 0)
            let messages = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(messages.compactMap { $0["cursor"] as? Int } == Array(1...(total + 4)), "\(messages.count) messages")
            for publisher in 0..<3 {
                let numbers = messages.filter { $0["subject"] as? String == "load.p\(publisher)" }.compactMap { Int($0["data"] as? String ?? "") }
                #expect(numbers == Array(stride(from: publisher, to: total, by: 3)), "publisher \(publisher): \(numbers.count) in order: \(numbers == numbers.sorted())")
            }
            // Resumed from a cursor: exactly what follows it.
            let (_, resumed) = try await cluster.aspen(["sub", "load.p1", "--from-cursor", "\(total / 2)", "--count", "3", "--idle", "10s"])
            let cursors = resumed.split(separator: "\n").compactMap { Int($0.split(separator: " ")[0]) }
            #expect(cursors.count == 3 && cursors.allSatisfy { $0 >= total / 2 } && cursors == cursors.sorted(), "\(resumed)")
        }

        @Test("bad input is refused with the reason; retention removes old messages and an expired cursor names the oldest; a message id publishes once")
        func refusalsAndRetention() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let (wild, whyWild) = try await cluster.aspen(["pub", "orders.*", "x"], withErrors: true)
            #expect(wild == 4 && whyWild.contains("wildcard"), "\(whyWild)")
            let (empty, whyEmpty) = try await cluster.aspen(["pub", "orders..x", "x"], withErrors: true)
            #expect(empty == 4 && whyEmpty.contains("empty token"), "\(whyEmpty)")
            let big = cluster.directory.appendingPathComponent("big").path
            try Data(repeating: 1, count: Limits.standard.topicPayloadBytesMax + 1).write(to: URL(fileURLWithPath: big))
            let (huge, whyHuge) = try await cluster.aspen(["pub", "big", "-"], stdin: String(repeating: "x", count: Limits.standard.topicPayloadBytesMax + 1), withErrors: true)
            #expect(huge == 4 && whyHuge.contains("topicPayloadBytesMax"), "\(whyHuge)")
            let (first, one) = try await cluster.aspen(["pub", "orders.created", "7", "--msg-id", "order-7"])
            let (again, two) = try await cluster.aspen(["pub", "orders.created", "7", "--msg-id", "order-7"])
            #expect(first == 0 && again == 0 && one == two, "\(one) \(two)")

            let (set, _) = try await cluster.aspen(["topic", "retention", ">", "--max-msgs", "5"])
            #expect(set == 0)
            for number in 0..<12 { _ = try await cluster.aspen(["pub", "logs.app", "\(number)"]) }
            try await eventually("retention removed the old logs", seconds: 20) {
                let (_, info) = try await cluster.aspen(["topic", "info", "--json"])
                let object = try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any]
                return (object?["oldest"] as? Int ?? 0) > 2
            }
            let (_, info) = try await cluster.aspen(["topic", "info", "--json"])
            let oldest = (try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any])?["oldest"] as? Int ?? 0
            let (expired, why) = try await cluster.aspen(["sub", ">", "--from-cursor", "2", "--count", "1", "--idle", "10s"], withErrors: true)
            #expect(expired == 2 && why.contains("cursor 2 expired, oldest is \(oldest)"), "\(why)")
        }
    }
}

extension ClusterSuites.PubSubProcessTests {
    @Test("a consumer group: a consumer dies holding 100 messages; two others get them all after the ack wait, each acknowledged once")
    func groupRedelivery() async throws {
        let cluster = try ProcessCluster(nodes: 3)
        try cluster.startAll()
        defer { cluster.terminateAll() }
        _ = try await cluster.leader()
        let client = try cluster.client()
        defer { Task { await client.close() } }
        _ = try await client.job(.groupCreate(ConsumerGroup(name: "g", pattern: "work.>", ackWaitMs: 2000, maxPending: 100), from: nil))
        _ = try await client.job(.publish((0..<100).map { TopicMessage(subject: "work.item", payload: Array("\($0)".utf8)) }))
        guard case .deliveries(let held) = try await client.job(.fetch(group: "g", consumer: "doomed", max: 100, waitMs: 1000)) else {
            throw JobError.invalid("not deliveries")
        }
        #expect(held.count == 100)
        // It never acknowledges: as if killed. Two consumers take over.
        let done = cluster.directory.appendingPathComponent("done").path
        let consumers = try (0..<2).map { index in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = [
                "sub", "work.>", "--group", "g", "--consumer", "c\(index)", "--exec", "echo $ASPEN_MSG_CURSOR >> \(done)", "--idle", "6s",
                "--endpoints", cluster.endpointsText,
            ]
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            return process
        }
        for process in consumers { process.waitUntilExit() }
        let cursors = ((try? String(contentsOfFile: done, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { UInt64($0) }
        #expect(cursors.count == 100 && Set(cursors) == Set(held.map(\.message.cursor)), "\(cursors.count) acknowledged, \(Set(cursors).count) distinct")
        let (_, status) = try await cluster.aspen(["topic", "group", "g", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
        #expect(object?["pending"] as? Int == 0, "\(status)")
        // The doomed consumer's receipts are dead.
        await #expect(throws: JobError.self) {
            _ = try await client.job(.settle(group: "g", cursor: held[0].message.cursor, receipt: held[0].receipt, action: .ack))
        }
    }
}
