import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import Foundation
import Testing

extension ClusterSuites {
    @Suite("AspenClient against three nodes", .serialized, .timeLimit(.minutes(3)))
    struct ClientTests {
        @Test("every kind of key-value operation works through the client, with the store's own errors")
        func operations() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            _ = try await cluster.leader()
            // Start at a follower on purpose: the client must follow the hint.
            let follower = cluster.members.count - 1
            var endpoints = cluster.endpoints
            endpoints.swapAt(0, follower)
            let client = try AspenClient(endpoints: endpoints)
            let store: any KeyValueStore = client

            let first = try await store.put(Array("user/1".utf8), Array("ada".utf8))
            #expect(try await store.get(Array("user/1".utf8))?.value == Array("ada".utf8))
            #expect(try await store.get(Array("user/1".utf8), revision: first.revision)?.version == 1)
            #expect(try await store.compareAndSwap(Array("user/1".utf8), expected: Array("ada".utf8), new: Array("grace".utf8)).succeeded)
            #expect(!(try await store.compareAndSwap(Array("user/2".utf8), expected: Array("x".utf8), new: Array("y".utf8)).succeeded))
            try await store.batch((0..<30).map { .put(Put(key: Array("item/\(100 + $0)".utf8), value: [UInt8($0)])) })
            let page = try await store.scan(.prefix(Array("item/".utf8)), limit: 10)
            #expect(page.kvs.count == 10)
            #expect(page.count == 30)
            #expect(page.more)
            let next = try await store.scan(.prefix(Array("item/".utf8)), limit: 10, continuation: page.continuation)
            #expect(next.kvs.first?.key == Array("item/110".utf8))
            let transaction = try await store.transaction(
                Transaction(
                    compares: [Compare(key: Array("user/1".utf8), .value(Array("grace".utf8)))],
                    success: [.delete(Delete(.prefix(Array("item/".utf8)))), .get(RangeRequest(.prefix(Array("user/".utf8))))]))
            #expect(transaction.succeeded)
            guard case .delete(let deleted) = transaction.results.first else {
                Issue.record("expected a delete result")
                return
            }
            #expect(deleted.deleted == 30)

            let lease = try await store.grantLease(ttlMs: 60_000)
            try await store.put(Array("session".utf8), [1], lease: lease.id)
            let status = try await store.leaseStatus(lease.id, withKeys: true)
            #expect(status.keys == [Array("session".utf8)])
            #expect(try await store.leases().map(\.id) == [lease.id])
            #expect(try await store.revokeLease(lease.id) == 1)
            #expect(try await store.get(Array("session".utf8)) == nil)

            // Errors arrive typed, exactly as a local store would throw them.
            await #expect(throws: KVError.keyTooLarge(bytes: 1025, limit: 1024)) {
                try await store.put(Bytes(repeating: 7, count: 1025), [])
            }
            await #expect(throws: KVError.leaseNotFound(4242)) { try await store.keepAlive(4242) }
            await #expect(throws: KVError.self) { try await store.get(Array("user/1".utf8), revision: 10_000) }
            await client.close()
            await cluster.stop()
        }

        @Test("writes keep flowing through a leader failure; every acknowledged write survives")
        func failover() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            let firstLeader = try await cluster.leader()
            let client = try AspenClient(endpoints: cluster.endpoints)
            let acknowledged = AcknowledgedKeys()
            let writers = (0..<4).map { writer in
                Task {
                    for number in 0..<60 {
                        let key = Array("w\(writer)/\(number)".utf8)
                        do {
                            _ = try await client.put(key, [1])
                            await acknowledged.add(key)
                        } catch {
                            // Unknown outcome during the failover: not counted as acknowledged.
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(150))
            await cluster.member(firstLeader).node.stop()
            try? await cluster.member(firstLeader).server.close()
            for writer in writers { await writer.value }
            let survivors = cluster.members.map(\.id).filter { $0 != firstLeader }
            _ = try await cluster.leader(among: survivors)
            let keys = await acknowledged.keys
            #expect(keys.count > 100, "most writes should have been acknowledged, got \(keys.count)")
            for key in keys {
                #expect(try await client.get(key) != nil, "acknowledged write \(String(decoding: key, as: UTF8.self)) lost")
            }
            await client.close()
            await cluster.stop()
        }
    }
}

actor AcknowledgedKeys {
    var keys: [Bytes] = []
    func add(_ key: Bytes) { keys.append(key) }
}
