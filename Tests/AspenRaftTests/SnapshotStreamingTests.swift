import AspenCore
import AspenRaft
import AspenTesting
import Testing

@Suite("Streaming snapshot images")
struct SnapshotStreamingTests {
    /// Three voters with 16-byte chunks; node 3 is cut off while 40 writes commit and node 1
    /// compacts its log past them, so node 3 can only catch up from an image.
    func clusterWithFollowerBehind() throws -> (LockstepCluster, Raft.SnapshotMetadata) {
        let cluster = LockstepCluster(voters: 3, seed: 11) { config in
            config.limits.raftSnapshotChunkBytes = 16
        }
        cluster.elect(1)
        cluster.partition([3])
        for value in UInt64(1)...40 { try cluster.put(UInt8(value % 8), value, via: 1) }
        let compacted = try #require(cluster.compact(1))
        return (cluster, compacted)
    }

    func chunk(_ message: Raft.Message) -> Raft.SnapshotChunk? {
        if case .snapshotChunk(let chunk) = message.kind { return chunk }
        return nil
    }

    func expectCaughtUp(_ cluster: LockstepCluster, through index: Raft.Index) {
        #expect(cluster.node(3).snapshotIndex >= index, "node 3 installed no image through \(index)")
        for key in UInt8(0)..<8 { #expect(cluster.value(key, on: 3) == cluster.value(key, on: 1)) }
        #expect(cluster.invariants.ok)
    }

    @Test("several chunks are in flight at once; a lost one is sent again from the last confirmed byte")
    func windowAndLoss() throws {
        let (cluster, compacted) = try clusterWithFollowerBehind()
        var events: [String] = []
        var sentAt: [Int: Int] = [:]
        var droppedOnce = false
        cluster.filter = { message in
            if let chunk = self.chunk(message), message.to == 3 {
                sentAt[chunk.offset, default: 0] += 1
                if chunk.offset == 32 && !droppedOnce {
                    droppedOnce = true
                    return false
                }
                events.append("chunk")
            } else if case .snapshotResponse = message.kind {
                events.append("answer")
            }
            return true
        }
        #expect(cluster.run { cluster.node(3).snapshotIndex >= compacted.index && cluster.raft(3).commitIndex == cluster.raft(1).commitIndex })
        // The first chunks leave together, before any answer: the window, not one at a time.
        let window = Raft.Config(id: 1).limits.raftSnapshotChunksInFlightMax
        #expect(Array(events.prefix(window - 1)) == Array(repeating: "chunk", count: window - 1), "\(events.prefix(8))")
        #expect(droppedOnce && sentAt[32] == 2, "the lost chunk was sent \(sentAt[32] ?? 0) times")
        #expect((sentAt[0] ?? 0) == 1, "the transfer started over instead of resending the lost chunk")
        expectCaughtUp(cluster, through: compacted.index)
    }

    @Test("a follower that restarts part-way through loses what it staged, and the leader starts over from byte 0")
    func followerRestartsMidTransfer() throws {
        let (cluster, compacted) = try clusterWithFollowerBehind()
        var delivered = 0
        var down = false
        var offsetsAfterRestart: [Int] = []
        var restarted = false
        cluster.filter = { message in
            guard message.to == 3, let chunk = self.chunk(message) else { return !(down && message.from == 3) }
            if restarted { offsetsAfterRestart.append(chunk.offset) }
            if down { return false }
            delivered += 1
            if delivered == 20 { down = true }
            return !down
        }
        cluster.tickAll()
        #expect(down, "the transfer ended before the restart: the test checked nothing")
        cluster.crash(3)
        cluster.restart(3)
        down = false
        restarted = true
        #expect(cluster.run { cluster.node(3).snapshotIndex >= compacted.index })
        #expect(offsetsAfterRestart.contains(0), "the leader never went back to byte 0: \(offsetsAfterRestart.prefix(10))")
        expectCaughtUp(cluster, through: compacted.index)
    }

    @Test("an image the log has been compacted past is replaced by a new one, and the transfer restarts with it")
    func imageReplacedAfterCompaction() throws {
        let (cluster, first) = try clusterWithFollowerBehind()
        var stalled = true
        var imageIndexes = Set<Raft.Index>()
        cluster.filter = { message in
            if let chunk = self.chunk(message), message.to == 3 {
                imageIndexes.insert(chunk.metadata.index)
                return !stalled || chunk.offset < 64
            }
            return true
        }
        cluster.tickAll(times: 2)
        #expect(imageIndexes == [first.index])
        // More writes, and a second compaction past the image being sent.
        for value in UInt64(41)...80 { try cluster.put(UInt8(value % 8), value, via: 1) }
        let second = try #require(cluster.compact(1))
        #expect(second.index > first.index)
        stalled = false
        #expect(cluster.run { cluster.node(3).snapshotIndex >= second.index && cluster.raft(3).commitIndex == cluster.raft(1).commitIndex })
        #expect(imageIndexes.contains { $0 >= second.index }, "no image at or after the second compaction was sent: \(imageIndexes)")
        expectCaughtUp(cluster, through: second.index)
    }

    @Test("an image damaged on its way is refused by the follower, which keeps serving; the leader gives it up and streams a new one")
    func damagedImage() throws {
        let (cluster, compacted) = try clusterWithFollowerBehind()
        cluster.heal()
        var damaged = false
        cluster.alter = { message in
            guard !damaged, message.to == 3, case .snapshotChunk(var chunk) = message.kind, chunk.offset == 0, !chunk.data.isEmpty else { return }
            damaged = true
            chunk.data[0] ^= 0xFF
            message.kind = .snapshotChunk(chunk)
        }
        #expect(cluster.run { cluster.node(3).snapshotIndex >= compacted.index && cluster.raft(3).commitIndex == cluster.raft(1).commitIndex })
        #expect(damaged)
        #expect(cluster.node(3).imagesRefused == 1)
        #expect(cluster.raft(1).imagesRefused == 1)
        expectCaughtUp(cluster, through: compacted.index)
    }

    @Test("an image the shell can no longer read (replaced under Raft) is given up, and a new one is asked for")
    func imageUnreadable() throws {
        let (cluster, first) = try clusterWithFollowerBehind()
        var stalled = true
        cluster.filter = { message in
            if let chunk = self.chunk(message), message.to == 3 { return !stalled || chunk.offset < 64 }
            return true
        }
        cluster.tickAll(times: 2)
        #expect(cluster.raft(1).snapshotImage?.metadata.index == first.index)
        for value in UInt64(41)...45 { try cluster.put(UInt8(value % 8), value, via: 1) }
        // The store now serves another image than the one Raft streams.
        let replaced = try cluster.node(1).storage.prepareSnapshotImage()
        #expect(replaced.index > first.index)
        stalled = false
        #expect(cluster.run { cluster.node(3).snapshotIndex > 0 && cluster.raft(3).commitIndex == cluster.raft(1).commitIndex })
        expectCaughtUp(cluster, through: first.index)
    }
}

@Suite("Streaming snapshot images: one follower's inputs")
struct SnapshotFollowerInputTests {
    @Test("a chunk of a newer image that arrives while an installed image waits for the shell is not staged with it")
    func chunkAfterCompletedImage() throws {
        let membership = Raft.Membership(voters: [1, 2])
        var follower = Raft.Instance(config: Raft.Config(id: 2), state: .bootstrap(membership))
        func chunk(index: Raft.Index, total: Int, offset: Int, _ data: [UInt8]) -> Raft.Message {
            let metadata = Raft.SnapshotMetadata(index: index, term: 1, membership: membership)
            return Raft.Message(
                group: .root, from: 1, to: 2, term: 1,
                kind: .snapshotChunk(Raft.SnapshotChunk(metadata: metadata, totalBytes: total, offset: offset, data: data)))
        }
        // The whole of image 10, then (before the shell collects a Ready) the first chunk of image 20.
        follower.step(chunk(index: 10, total: 4, offset: 0, [1, 2, 3, 4]))
        follower.step(chunk(index: 20, total: 8, offset: 0, [5, 6, 7, 8]))
        let ready = follower.ready()
        #expect(ready.snapshot?.index == 10)
        // A store installs the image the staged chunks complete: a chunk of another image after
        // it would make the batch refused, and the node stop.
        #expect(ready.snapshotChunksReceived.map(\.metadata.index) == [10])
        // The leader hears of it once the shell has installed it.
        #expect(!ready.messagesAfterPersist.contains { if case .snapshotResponse = $0.kind { true } else { false } })
        follower.snapshotInstalled(try #require(ready.snapshot))
        #expect(follower.commitIndex == 10)
        #expect(follower.ready().messagesAfterPersist.contains { if case .snapshotResponse(let r) = $0.kind { r.matchIndex == 10 } else { false } })
    }

    @Test("while an image waits for the shell, appends wait and no election starts; a refused image changes nothing, and the leader is told")
    func refusedImage() throws {
        let membership = Raft.Membership(voters: [1, 2])
        var follower = Raft.Instance(config: Raft.Config(id: 2, electionTicks: 10, heartbeatTicks: 1), state: .bootstrap(membership))
        let metadata = Raft.SnapshotMetadata(index: 10, term: 1, membership: membership)
        func append(prev: Raft.Index) -> Raft.Message {
            Raft.Message(
                group: .root, from: 1, to: 2, term: 1,
                kind: .append(Raft.Append(prevIndex: prev, prevTerm: prev == 0 ? 0 : 1, entries: [Raft.Entry(term: 1, index: prev + 1, payload: .noop)], commit: 0)))
        }
        follower.step(
            Raft.Message(
                group: .root, from: 1, to: 2, term: 1,
                kind: .snapshotChunk(Raft.SnapshotChunk(metadata: metadata, totalBytes: 4, offset: 0, data: [1, 2, 3, 4]))))
        let ready = follower.ready()
        #expect(ready.snapshot == metadata)
        // Until the shell says how the install went: an append is not taken (nor answered)...
        follower.step(append(prev: 0))
        let waiting = follower.ready()
        #expect(waiting.entries.isEmpty && waiting.messages.isEmpty && waiting.messagesAfterPersist.isEmpty)
        #expect(follower.lastIndex == 0)
        // ...and no election starts, however long the leader is silent.
        for _ in 0..<50 { follower.tick() }
        #expect(follower.role == .follower)
        #expect(!follower.hasReady)
        follower.snapshotRefused(metadata)
        #expect(follower.lastIndex == 0 && follower.commitIndex == 0)
        let refused = follower.ready().messagesAfterPersist
        #expect(refused.contains { if case .snapshotResponse(let r) = $0.kind { r.refused && r.snapshotIndex == 10 } else { false } })
        // It goes on from its own log.
        follower.step(append(prev: 0))
        #expect(follower.lastIndex == 1)
    }
}
