import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import Logging
import Synchronization
import Testing

/// A node store whose next `leases()` reads throw and whose next lease keep-alives fail to apply
/// (the lease is then left as it was), as a store that hits a transient error would; and whose
/// compactions and snapshot images fail while `snapshotsFail` is set (every attempt counted).
final class FlakyLeaseStorage: NodeStorage {
    let inner = MemoryNodeStorage()
    let leaseReadsToFail = Mutex(0)
    let keepAlivesToFail = Mutex(0)
    let snapshotsFail = Atomic<Bool>(false)
    let snapshotAttempts = Atomic<Int>(0)

    static func take(_ counter: borrowing Mutex<Int>) -> Bool {
        counter.withLock { remaining in
            guard remaining > 0 else { return false }
            remaining -= 1
            return true
        }
    }

    func load() throws -> Raft.PersistentState? { try inner.load() }
    func bootstrap(_ state: Raft.PersistentState) throws { try inner.bootstrap(state) }

    func commit(_ batch: StorageBatch) throws -> [AppliedEntry] {
        var batch = batch
        var failed = Set<Raft.Index>()
        for position in batch.committedEntries.indices {
            guard case .command(let bytes) = batch.committedEntries[position].payload,
                case .leaseKeepAlive? = try? KVCommand(decoding: bytes), Self.take(keepAlivesToFail)
            else { continue }
            batch.committedEntries[position].payload = .noop
            failed.insert(batch.committedEntries[position].index)
        }
        var results = try inner.commit(batch)
        for position in results.indices where failed.contains(results[position].index) {
            results[position].result = .failure(.storage("injected: the keep-alive could not be applied"))
        }
        return results
    }

    func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        try failIfSnapshotsFail()
        try inner.compacted(metadata)
    }
    func prepareSnapshotImage() throws -> (index: Raft.Index, bytes: Int) {
        try failIfSnapshotsFail()
        return try inner.prepareSnapshotImage()
    }
    func snapshotImageBytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes? {
        try inner.snapshotImageBytes(index: index, offset: offset, length: length)
    }
    private func failIfSnapshotsFail() throws {
        snapshotAttempts.add(1, ordering: .relaxed)
        if snapshotsFail.load(ordering: .relaxed) { throw StorageError.io(file: "snapshot", detail: "injected: no space left on device") }
    }
    func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError> { try inner.read(request) }
    func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    {
        try inner.changes(in: bounds, from: from, through: through, withPrevious: withPrevious, limit: limit)
    }
    func revisions() throws -> (current: Revision, compacted: Revision) { try inner.revisions() }
    func leases() throws -> [Lease] {
        if Self.take(leaseReadsToFail) { throw StorageError.io(file: "leases", detail: "injected read failure") }
        return try inner.leases()
    }
    func earliestLeaseExpiry() throws -> Int64? { try inner.earliestLeaseExpiry() }
    func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])? { try inner.lease(id) }
    func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] { try inner.systemRecords(prefix: prefix) }
    var appliedIndex: Raft.Index { get throws { try inner.appliedIndex } }
}

/// A single-node cluster on a store that outlives its nodes, with a clock the test sets.
final class LeaseFailover: Sendable {
    let storage = FlakyLeaseStorage()
    let clockMs = Atomic<Int64>(1_000_000)

    init() throws { try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1]))) }

    func startNode() async throws -> RaftNode {
        var configuration = NodeConfiguration(id: 1)
        configuration.tickMs = 10
        configuration.electionTicks = 5
        var logger = Logger(label: "aspen.lease.test")
        logger.logLevel = .critical
        let node = RaftNode(
            configuration: configuration, storage: storage, state: try storage.load()!, send: { _ in },
            nowMs: { [self] in self.clockMs.load(ordering: .relaxed) }, logger: logger)
        await node.start()
        return node
    }

    /// Polls `condition` for up to five seconds.
    func eventually(_ condition: () throws -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if try condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try condition()
    }

    /// Grants a 10 s lease on a first leader, stops it, and starts a second one 9 s later by the
    /// clock, with `prepare` run on the store first. Returns the new node and the lease.
    func failover(prepare: (FlakyLeaseStorage) -> Void) async throws -> (RaftNode, LeaseID) {
        let first = try await startNode()
        for _ in 0..<500 where await first.status.role != .leader { try await Task.sleep(for: .milliseconds(10)) }
        guard case .leaseGranted(let lease) = try await first.write(.leaseGrant(id: 0, ttlMs: 10_000)) else {
            Issue.record("no lease granted")
            throw NodeError.stopped
        }
        await first.stop()
        await first.waitUntilIdle()
        prepare(storage)
        clockMs.store(1_009_000, ordering: .relaxed)
        return (try await startNode(), lease.id)
    }
}

@Suite("Lease refresh by a new leader")
struct LeaseRefreshTests {
    @Test("a lease read that fails is retried: the new leader extends the lease, then expires it when due, and counts the failure")
    func leaseReadFailure() async throws {
        let failover = try LeaseFailover()
        let (node, lease) = try await failover.failover { $0.leaseReadsToFail.withLock { $0 = 1 } }
        let extended = try await failover.eventually { (try failover.storage.inner.lease(lease)?.lease.expiresAtMs ?? 0) >= 1_019_000 }
        let expiresAtMs = try failover.storage.inner.lease(lease)?.lease.expiresAtMs
        #expect(extended, "the new leader did not extend the lease: it expires at \(String(describing: expiresAtMs))")
        #expect(await node.counters.leaseRefreshFailures >= 1)
        // Past its extended time, the lease expires: the leader judges leases again.
        failover.clockMs.store(1_030_000, ordering: .relaxed)
        #expect(try await failover.eventually { try failover.storage.inner.lease(lease) == nil }, "the lease never expired")
        await node.stop()
    }

    @Test("a keep-alive that fails is retried, never taken as done: the lease does not expire early by the new leader's clock")
    func keepAliveFailure() async throws {
        let failover = try LeaseFailover()
        let (node, lease) = try await failover.failover { $0.keepAlivesToFail.withLock { $0 = 1 } }
        let extended = try await failover.eventually { (try failover.storage.inner.lease(lease)?.lease.expiresAtMs ?? 0) >= 1_019_000 }
        // Granted at 1 000 000 for 10 s; by the new leader's clock it has 9 s left, so after its
        // refresh it must outlive 1 012 000.
        failover.clockMs.store(1_012_000, ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(200))
        let current = try failover.storage.inner.lease(lease)
        #expect(extended && current != nil, "lease after the failover: \(String(describing: current?.lease))")
        #expect(await node.counters.leaseRefreshFailures >= 1)
        await node.stop()
    }
}
