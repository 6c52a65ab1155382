import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import Logging
import Synchronization
import Testing

/// A one-voter node on `storage` (bootstrapped), started and waited for until it leads; it
/// sends nothing and logs only critical errors.
func startSoloLeader(_ storage: any NodeStorage, configure: (inout NodeConfiguration) -> Void = { _ in }) async throws -> RaftNode {
    var configuration = NodeConfiguration(id: 1)
    configuration.tickMs = 10
    configuration.electionTicks = 5
    configure(&configuration)
    var logger = Logger(label: "aspen.node.test")
    logger.logLevel = .critical
    let node = RaftNode(configuration: configuration, storage: storage, state: try storage.load()!, send: { _ in }, nowMs: { 0 }, logger: logger)
    await node.start()
    for _ in 0..<500 where await node.status.role != .leader { try await Task.sleep(for: .milliseconds(10)) }
    return node
}

@Suite("Snapshot failures")
struct SnapshotFailureTests {
    @Test("a snapshot that fails is counted, logged and retried with backoff, not retried at every write; once it works the log is compacted")
    func failuresBackOff() async throws {
        let storage = FlakyLeaseStorage()
        storage.snapshotsFail.store(true, ordering: .relaxed)
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let node = try await startSoloLeader(storage) { $0.compactionThreshold = 20 }
        // Writes for half a second past the threshold: every one of them is a chance to retry.
        let clock = ContinuousClock()
        let until = clock.now + .milliseconds(500)
        var written = 0
        while clock.now < until {
            _ = try await node.write(.put(Put(key: Array("k\(written % 50)".utf8), value: [1])))
            written += 1
        }
        #expect(written > 40, "only \(written) writes: the test checked too little")
        let attempts = storage.snapshotAttempts.load(ordering: .relaxed)
        #expect(attempts >= 1 && attempts <= 2, "\(attempts) snapshot attempts in half a second of \(written) writes")
        #expect(await node.counters.snapshotFailures == attempts)
        #expect(await node.status.snapshotIndex == 0)
        // Once snapshots work again, the next attempt (after the backoff) compacts the log.
        storage.snapshotsFail.store(false, ordering: .relaxed)
        let deadline = clock.now + .seconds(5)
        while clock.now < deadline, await node.status.snapshotIndex == 0 {
            _ = try await node.write(.put(Put(key: Array("after".utf8), value: [1])))
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await node.status.snapshotIndex > 0, "the log was never compacted after snapshots recovered")
        await node.stop()
    }
}

@Suite("A stopped node")
struct StoppedNodeTests {
    @Test("a proposal made after the node stopped (a lease expiry or compaction task that ran late) fails at once instead of waiting forever")
    func proposalAfterStop() async throws {
        let storage = MemoryNodeStorage()
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let node = try await startSoloLeader(storage)
        await node.stop()
        // Not in a task group: one whose child never returns would never end.
        let outcome = Mutex<String?>(nil)
        Task {
            let text: String
            do {
                _ = try await node.proposeForTesting(.compact(1))
                text = "answered"
            } catch {
                text = "\(error)"
            }
            outcome.withLock { $0 = text }
        }
        for _ in 0..<300 where outcome.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(outcome.withLock { $0 } == "\(NodeError.stopped)", "no answer within 3 s")
    }
}
