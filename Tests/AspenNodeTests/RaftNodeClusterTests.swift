import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import AspenTransport
import Foundation
import NIOPosix
import Logging
import Testing

/// Three real nodes in one process: SQLite stores on disk, TLS connections on loopback.
final class InProcessCluster: @unchecked Sendable {
    // @unchecked: the arrays are filled once in `start` and only read afterwards.
    struct Member {
        let id: NodeID
        let node: RaftNode
        let server: TransportServer
        let network: PeerNetwork
        let storage: SQLiteNodeStorage
        let key: NodeKey
        /// The node's own event loop, as `NodeRuntime` gives each node.
        let loops: MultiThreadedEventLoopGroup
    }

    let directory: URL
    var members: [Member] = []

    init() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-node-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    static func start(
        nodes count: Int, compactionThreshold: Raft.Index? = nil, inboxMessagesMax: Int? = nil, autoCompaction: AutoCompaction? = nil
    ) async throws -> InProcessCluster {
        let cluster = InProcessCluster()
        let ids = (1...UInt64(count)).map { NodeID($0) }
        let membership = Raft.Membership(voters: ids)
        var logger = Logger(label: "aspen.node.test")
        logger.logLevel = .warning
        var addresses: [NodeID: PeerAddress] = [:]
        for id in ids {
            let identity = NodeIdentity()
            let tls = try TLSMaterial(identity: identity)
            let storage = try SQLiteNodeStorage(path: cluster.directory.appendingPathComponent("n\(id.rawValue).db").path)
            try storage.bootstrap(.bootstrap(membership))
            let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let network = PeerNetwork(tls: tls, peers: [:], logger: logger, group: loops)
            var configuration = NodeConfiguration(id: id)
            configuration.tickMs = 20
            // 0.5-1 s: a loaded two-core machine can hold an actor up for a few hundred ms.
            configuration.electionTicks = 25
            if let compactionThreshold { configuration.compactionThreshold = compactionThreshold }
            if let inboxMessagesMax { configuration.limits.raftInboxMessagesMax = inboxMessagesMax }
            configuration.autoCompaction = autoCompaction
            let node = RaftNode(
                configuration: configuration, storage: storage, state: try storage.load()!, send: { network.send($0) },
                nowMs: { Int64(Date().timeIntervalSince1970 * 1000) }, logger: logger,
                membershipChanged: { network.update(membership: $0) }, loop: loops.next())
            let server = try await TransportServer.start(
                host: "127.0.0.1", port: 0, tls: tls,
                routes: [
                    AspenProtocol.raft: network.route(to: node),
                    AspenProtocol.logs: WatchService(hub: node.watches, logger: logger).route(),
                    AspenProtocol.client: ClientService(node: node, logger: logger).route,
                ], logger: logger, group: loops)
            addresses[id] = PeerAddress(host: "127.0.0.1", port: server.port, key: identity.key)
            cluster.members.append(
                Member(id: id, node: node, server: server, network: network, storage: storage, key: identity.key, loops: loops))
        }
        for member in cluster.members {
            for (id, address) in addresses where id != member.id { member.network.addGiven([id: address]) }
            await member.node.start()
        }
        return cluster
    }

    func member(_ id: NodeID) -> Member { members.first { $0.id == id }! }

    /// Every node as a client endpoint, pinned by key.
    var endpoints: [Endpoint] {
        members.map { Endpoint(id: $0.id, host: "127.0.0.1", port: $0.server.port, key: $0.key) }
    }

    /// Waits for a leader that the given members agree on.
    func leader(among ids: [NodeID]? = nil, timeoutSeconds: Double = 30) async throws -> NodeID {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        let candidates = ids ?? members.map(\.id)
        while Date() < deadline {
            for id in candidates {
                let status = await member(id).node.status
                if status.role == .leader { return id }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw NodeError.refused("no leader within \(timeoutSeconds) s")
    }

    func stop() async {
        for member in members {
            await member.node.stop()
            try? await member.server.close()
        }
    }
}

extension ClusterSuites {
    @Suite("Raft nodes over TLS", .serialized, .timeLimit(.minutes(3)))
    struct RaftNodeClusterTests {
        @Test("three nodes elect a leader, commit writes, and serve linearizable and stale reads")
        func writesAndReads() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let leader = try await cluster.leader()
            let node = cluster.member(leader).node
            let put = try await node.write(.put(Put(key: Array("hello".utf8), value: Array("world".utf8))))
            guard case .put(let result) = put else {
                Issue.record("unexpected \(put)")
                return
            }
            #expect(result.revision == 1)
            let read = try await node.read(RangeRequest(.key(Array("hello".utf8))), consistency: .linearizable)
            #expect(read.kvs.first?.value == Array("world".utf8))
            // A follower answers a linearizable read through the leader's ReadIndex.
            let follower = cluster.members.first { $0.id != leader }!.node
            let viaFollower = try await follower.read(RangeRequest(.key(Array("hello".utf8))), consistency: .linearizable)
            #expect(viaFollower.kvs.first?.value == Array("world".utf8))
            // A follower refuses writes and names the leader.
            await #expect(throws: NodeError.notLeader(leaderHint: leader)) {
                try await follower.write(.put(Put(key: Array("x".utf8), value: [])))
            }
            // Bad input is refused before it reaches the log, naming the limit.
            await #expect(throws: KVError.keyTooLarge(bytes: 2000, limit: 1024)) {
                try await node.write(.put(Put(key: Bytes(repeating: 1, count: 2000), value: [])))
            }
            await cluster.stop()
        }

        @Test("with automatic compaction the leader compacts history by itself, on every member, keeping the last N revisions")
        func automaticCompaction() async throws {
            let cluster = try await InProcessCluster.start(
                nodes: 3, autoCompaction: AutoCompaction(mode: .revision(revisions: 10), revisionCheckMs: 100))
            let leader = try await cluster.leader()
            let node = cluster.member(leader).node
            for number in 1...50 {
                _ = try await node.write(.put(Put(key: Array("key".utf8), value: Array("\(number)".utf8))))
            }
            let deadline = ContinuousClock.now + .seconds(20)
            var compacted: [Revision] = []
            repeat {
                try await Task.sleep(for: .milliseconds(50))
                compacted = try cluster.members.map { try $0.storage.revisions().compacted }
            } while compacted.contains(where: { $0 < 40 }) && ContinuousClock.now < deadline
            #expect(compacted.allSatisfy { $0 == 40 }, "compacted revisions \(compacted)")
            // What was compacted is gone; the last ten revisions are still there.
            await #expect(throws: KVError.compacted(requested: 39, oldestAvailable: 40)) {
                try await node.read(RangeRequest(.key(Array("key".utf8)), revision: 39), consistency: .linearizable)
            }
            let kept = try await node.read(RangeRequest(.key(Array("key".utf8)), revision: 40), consistency: .linearizable)
            #expect(kept.kvs.first?.value == Array("40".utf8))
            await cluster.stop()
        }

        @Test("forwarded writes are never dropped with other messages when a node's inbox is full: every one applies and is answered")
        func forwardedWritesSurviveAFullInbox() async throws {
            // Two waiting messages at most: under load, appends and their answers are dropped
            // (and retried by Raft); forwarded commands and their answers must not be, or their
            // writers would wait ten election timeouts for an unknown outcome.
            let cluster = try await InProcessCluster.start(nodes: 3, inboxMessagesMax: 2)
            let leader = try await cluster.leader()
            let follower = cluster.members.first { $0.id != leader }!.node
            while await follower.status.leader != leader { try await Task.sleep(for: .milliseconds(20)) }
            let clock = ContinuousClock()
            let started = clock.now
            let revisions = try await withThrowingTaskGroup(of: Revision.self) { group in
                for number in 0..<300 {
                    group.addTask {
                        let result = try await follower.write(.put(Put(key: Array("g\(number)".utf8), value: Array(repeating: 7, count: 512))), forwarding: true)
                        guard case .put(let put) = result else { throw NodeError.refused("unexpected \(result)") }
                        return put.revision
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(revisions).count == 300)
            #expect(await follower.counters.proposalsForwardedUnknown == 0)
            // Well inside the ten election timeouts (5-10 s) a lost forward would cost.
            #expect(clock.now - started < .seconds(5), "forwarded writes waited as if lost")
            await cluster.stop()
        }

        @Test("a follower forwards writes to the leader inside Raft's traffic and answers each with its own result")
        func forwardedWrites() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let leader = try await cluster.leader()
            let follower = cluster.members.first { $0.id != leader }!.node
            // The follower must know the leader before it can forward.
            while await follower.status.leader != leader { try await Task.sleep(for: .milliseconds(20)) }
            let revisions = try await withThrowingTaskGroup(of: Revision.self) { group in
                for number in 0..<100 {
                    group.addTask {
                        let result = try await follower.write(.put(Put(key: Array("f\(number)".utf8), value: Array("\(number)".utf8))), forwarding: true)
                        guard case .put(let put) = result else { throw NodeError.refused("unexpected \(result)") }
                        return put.revision
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Each writer got its own entry's result: 100 distinct revisions.
            #expect(Set(revisions).count == 100)
            let read = try await cluster.member(leader).node.read(RangeRequest(.prefix(Array("f".utf8))), consistency: .linearizable)
            #expect(read.kvs.count == 100)
            #expect(await follower.counters.proposalsForwarded == 100)
            // A lease grant takes the leader's clock: never forwarded.
            await #expect(throws: NodeError.notLeader(leaderHint: leader)) {
                try await follower.write(.leaseGrant(id: 0, ttlMs: 10_000), forwarding: true)
            }
            await cluster.stop()
        }

        @Test("concurrent writes are all acknowledged and applied everywhere (group commit)")
        func concurrentWrites() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let leader = try await cluster.leader()
            let node = cluster.member(leader).node
            try await withThrowingTaskGroup(of: Void.self) { group in
                for number in 0..<200 {
                    group.addTask {
                        _ = try await node.write(.put(Put(key: Array("k\(number)".utf8), value: Array("\(number)".utf8))))
                    }
                }
                try await group.waitForAll()
            }
            let count = try await node.read(RangeRequest(.prefix(Array("k".utf8)), countOnly: true), consistency: .linearizable).count
            #expect(count == 200)
            // Every node applies the same 200 writes.
            let deadline = Date().addingTimeInterval(5)
            for member in cluster.members {
                while try member.storage.read(RangeRequest(.prefix(Array("k".utf8)), countOnly: true)).get().count < 200 && Date() < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(try member.storage.read(RangeRequest(.prefix(Array("k".utf8)), countOnly: true)).get().count == 200)
            }
            await cluster.stop()
        }

        @Test("the leader compacts its log while followers keep up, and none of them needs a snapshot")
        func compactionLeavesFollowersTheLog() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3, compactionThreshold: 100)
            let leader = try await cluster.leader()
            let node = cluster.member(leader).node
            for round in 0..<16 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for number in 0..<25 {
                        group.addTask { _ = try await node.write(.put(Put(key: Array("k\(number)".utf8), value: Array("\(round)".utf8)))) }
                    }
                    try await group.waitForAll()
                }
            }
            #expect(await node.status.snapshotIndex > 0, "the leader compacted its log")
            for member in cluster.members where member.id != leader {
                #expect(await member.node.counters.snapshotsInstalled == 0, "follower \(member.id) caught up from the log")
                #expect(await member.node.status.snapshotIndex > 0, "follower \(member.id) compacted its own log")
            }
            #expect(await node.counters.compactionsWithFollowerBehind == 0)
            await cluster.stop()
        }

        @Test("when the leader stops, the others elect a new one and keep every acknowledged write")
        func leaderFailover() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let first = try await cluster.leader()
            for number in 0..<20 {
                _ = try await cluster.member(first).node.write(.put(Put(key: Array("a\(number)".utf8), value: [1])))
            }
            await cluster.member(first).node.stop()
            try? await cluster.member(first).server.close()
            let others = cluster.members.map(\.id).filter { $0 != first }
            let second = try await cluster.leader(among: others)
            #expect(second != first)
            _ = try await cluster.member(second).node.write(.put(Put(key: Array("after".utf8), value: [2])))
            let page = try await cluster.member(second).node.read(RangeRequest(.prefix(Array("a".utf8))), consistency: .linearizable)
            #expect(page.count == 21)
            await cluster.stop()
        }
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension ClusterSuites {
    @Suite("Admin HTTP", .serialized, .timeLimit(.minutes(3)))
    struct AdminServerTests {
        static func get(_ url: String) async throws -> (Int, String) {
            let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }

        @Test("/health is ok once a leader is known, /metrics exposes Raft and storage figures")
        func healthAndMetrics() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let leader = try await cluster.leader()
            let node = cluster.member(leader).node
            _ = try await node.write(.put(Put(key: Array("m".utf8), value: [1])))
            let admin = try await AdminServer.start(host: "127.0.0.1", port: 0, node: node)
            let (healthCode, healthBody) = try await Self.get("http://127.0.0.1:\(admin.port)/health")
            #expect(healthCode == 200)
            #expect(healthBody == "ok\n")
            let (metricsCode, metrics) = try await Self.get("http://127.0.0.1:\(admin.port)/metrics")
            #expect(metricsCode == 200)
            #expect(metrics.contains("aspen_raft_is_leader 1"))
            #expect(metrics.contains("# TYPE aspen_storage_commits_total counter"))
            #expect(metrics.contains("aspen_raft_leader_id \(leader.rawValue)"))
            // A node whose event loop is held up for half a second ticks late, and says so.
            func figure(_ name: String, in text: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
            }
            let lateBefore = try #require(figure("aspen_raft_ticks_late_total", in: metrics))
            node.loop.execute { usleep(500_000) }
            var late = metrics
            let lateDeadline = Date().addingTimeInterval(5)
            repeat {
                try await Task.sleep(for: .milliseconds(50))
                late = try await Self.get("http://127.0.0.1:\(admin.port)/metrics").1
            } while figure("aspen_raft_ticks_late_total", in: late) == lateBefore && Date() < lateDeadline
            #expect(figure("aspen_raft_ticks_late_total", in: late).map { $0 > lateBefore } == true)
            #expect(figure("aspen_raft_tick_delay_seconds_max", in: late).map { $0 >= 0.4 && $0 < 5 } == true)
            let (missingCode, _) = try await Self.get("http://127.0.0.1:\(admin.port)/nope")
            #expect(missingCode == 404)
            // A node that knows no leader is unhealthy.
            await cluster.stop()
            let lonely = try await InProcessCluster.start(nodes: 3)
            let first = lonely.members[0].node
            await lonely.members[1].node.stop()
            await lonely.members[2].node.stop()
            let lonelyAdmin = try await AdminServer.start(host: "127.0.0.1", port: 0, node: first)
            // Whatever it was, within a few election timeouts it knows no leader.
            var (lonelyCode, lonelyBody) = try await Self.get("http://127.0.0.1:\(lonelyAdmin.port)/health")
            let deadline = Date().addingTimeInterval(5)
            while lonelyCode != 503 && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                (lonelyCode, lonelyBody) = try await Self.get("http://127.0.0.1:\(lonelyAdmin.port)/health")
            }
            #expect(lonelyCode == 503, "\(lonelyBody)")
            #expect(lonelyBody.contains("no leader"))
            try await admin.close()
            try await lonelyAdmin.close()
            await lonely.stop()
        }
    }
}
