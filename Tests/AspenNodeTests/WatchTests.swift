import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import Foundation
import Testing

extension ClusterSuites {
    @Suite("Watch", .serialized, .timeLimit(.minutes(3)))
    struct WatchTests {
        func bytes(_ text: String) -> Bytes { Array(text.utf8) }

        /// Collects events from a watch until `count` have arrived (or the stream ends).
        func collect(_ stream: AsyncThrowingStream<WatchMessage, any Error>, events count: Int) async throws -> ([WatchEvent], WatchEnd?) {
            var events: [WatchEvent] = []
            for try await message in stream {
                switch message {
                case .events(let batch):
                    events += batch
                    if events.count >= count { return (events, nil) }
                case .ended(let end): return (events, end)
                case .created, .progress: break
                }
            }
            return (events, nil)
        }

        @Test("a watch replays history from a revision, then follows live changes without gap or duplicate, with previous values")
        func replayThenLive() async throws {
            let cluster = try await InProcessCluster.start(nodes: 3)
            _ = try await cluster.leader()
            let client = try AspenClient(endpoints: cluster.endpoints)
            let first = try await client.put(bytes("app/a"), bytes("1"))
            try await client.put(bytes("app/b"), bytes("2"))
            try await client.put(bytes("elsewhere"), bytes("x"))
            // Watch from the first revision, at a follower: history first, then live.
            let leader = try await cluster.leader()
            let follower = try #require(cluster.members.first { $0.id != leader })
            let watcher = try AspenClient(endpoints: [cluster.endpoints.first { $0.id == follower.id }!])
            let stream = try await watcher.watch(
                WatchRequest(bounds: KeySelection.prefix(bytes("app/")).bounds, startRevision: first.revision, withPrevious: true))
            // Live writes race with the replay on purpose.
            try await client.put(bytes("app/a"), bytes("3"))
            try await client.delete(bytes("app/b"))
            try await client.put(bytes("elsewhere"), bytes("y"))
            try await client.put(bytes("app/c"), bytes("4"))
            let (events, end) = try await collect(stream, events: 5)
            #expect(end == nil)
            #expect(events.map(\.kind) == [WatchEvent.Kind.put, .put, .put, .delete, .put])
            #expect(events.map { String(decoding: $0.keyValue.key, as: UTF8.self) } == ["app/a", "app/b", "app/a", "app/b", "app/c"])
            let revisions = events.map(\.revision)
            #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count, "\(revisions)")
            #expect(events[2].previous?.value == bytes("1"))
            #expect(events[3].previous?.value == bytes("2"))
            #expect(events[0].previous == nil)

            // A start revision that compaction removed ends the watch with the oldest one left.
            let current = revisions.last!
            try await client.compact(current)
            let compacted = try await watcher.watch(WatchRequest(bounds: KeySelection.prefix(bytes("app/")).bounds, startRevision: 1))
            let (_, reason) = try await collect(compacted, events: 1)
            #expect(reason == .compacted(oldestAvailable: current + 1))

            // Stopping the node ends its watches with `shutdown`.
            let live = try await watcher.watch(WatchRequest(bounds: KeySelection.prefix(bytes("app/")).bounds))
            try await Task.sleep(for: .milliseconds(100))
            await follower.node.stop()
            let (_, stopped) = try await collect(live, events: 1)
            #expect(stopped == .shutdown)
            await watcher.close()
            await client.close()
            await cluster.stop()
        }

        @Test("a watcher that does not read is cut off as lagged; the hub never blocks the publisher")
        func slowWatcherIsCutOff() async throws {
            var limits = Limits.standard
            limits.watchQueueMessagesMax = 8
            let storage = MemoryNodeStorage()
            try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
            let hub = WatchHub(storage: storage, limits: limits)
            let subscription = try hub.subscribe(WatchRequest(bounds: KeySelection.prefix([]).bounds))
            // Let it go live, then publish far more than its queue holds without reading.
            try await Task.sleep(for: .milliseconds(50))
            for revision in Int64(1)...100 {
                hub.publish([WatchEvent(kind: .put, keyValue: KeyValue(key: [1], value: [2], createRevision: 1, modRevision: revision, version: revision, lease: 0))])
            }
            #expect(hub.watcherCount == 0)
            var received: [WatchMessage] = []
            for await message in subscription.messages { received.append(message) }
            #expect(received.last == .ended(.lagged))
            #expect(received.count <= 8 + 2)
            // Too many watchers are refused with the limit's name.
            limits.watchersMax = 1
            let small = WatchHub(storage: storage, limits: limits)
            _ = try small.subscribe(WatchRequest(bounds: KeySelection.prefix([]).bounds))
            #expect(throws: WatchEnd.self) { _ = try small.subscribe(WatchRequest(bounds: KeySelection.prefix([]).bounds)) }
        }
    }
}
