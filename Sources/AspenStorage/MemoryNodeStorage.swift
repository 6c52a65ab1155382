import AspenCore
import AspenKV
import AspenRaft
import Synchronization

/// The node store in memory, with `SQLiteNodeStorage`'s semantics: a `commit` is atomic (it
/// happens whole or, if it throws, not at all), and "crashing" keeps exactly the commits that
/// returned. For the simulator and fast tests.
public final class MemoryNodeStorage: NodeStorage {
    struct State: Sendable {
        var hardState = Raft.HardState()
        var snapshot = Raft.SnapshotMetadata(index: 0, term: 0, membership: Raft.Membership())
        var entries: [Raft.Entry] = []
        var applied: Raft.Index = 0
        var kv = MemoryKVBackend()
        var bootstrapped = false
    }

    private let state = Mutex(State())
    let limits: Limits

    public init(limits: Limits = .standard) { self.limits = limits }

    public func load() throws -> Raft.PersistentState? {
        state.withLock { state in
            guard state.bootstrapped else { return nil }
            guard state.snapshot.index > 0 else {
                return Raft.PersistentState(
                    hardState: state.hardState, snapshot: Raft.Snapshot(metadata: state.snapshot, data: []),
                    entries: state.entries, appliedIndex: state.applied)
            }
            // Only the state as of `applied` exists: re-snapshot there, as the SQLite store does.
            var metadata = state.snapshot
            for entry in state.entries where entry.index <= state.applied {
                metadata.term = entry.term
                if case .membership(let next) = entry.payload { metadata.membership = next }
            }
            metadata.index = state.applied
            state.entries.removeAll { $0.index <= metadata.index }
            state.snapshot = metadata
            return Raft.PersistentState(
                hardState: state.hardState, snapshot: Raft.Snapshot(metadata: metadata, data: KVSnapshotOf(state)),
                entries: state.entries, appliedIndex: state.applied)
        }
    }

    public func bootstrap(_ initial: Raft.PersistentState) throws {
        try state.withLock { state in
            // Only an untouched joining state may be replaced (a node founding a cluster).
            let untouched =
                state.hardState == Raft.HardState() && state.entries.isEmpty && state.applied == 0 && state.snapshot.index == 0
                && state.snapshot.membership.isEmpty
            guard !state.bootstrapped || untouched else { throw StorageError.invalidBatch("the store is already bootstrapped") }
            state.hardState = initial.hardState
            state.snapshot = initial.snapshot.metadata
            state.entries = initial.entries
            state.applied = initial.appliedIndex
            state.bootstrapped = true
        }
    }

    public func commitsWithoutDisk(_ batch: StorageBatch) -> Bool { batch.entries.isEmpty && batch.snapshot == nil }

    public func commit(_ batch: StorageBatch) throws -> [AppliedEntry] {
        let limits = self.limits
        return try state.withLock { state in try Self.apply(batch, to: &state, limits: limits) }
    }

    /// Every check that can fail runs before the first change, so a commit that throws changes
    /// nothing; after that, nothing can fail (the in-memory state machine never throws).
    static func apply(_ batch: StorageBatch, to state: inout State, limits: Limits) throws -> [AppliedEntry] {
        guard state.bootstrapped else { throw StorageError.invalidBatch("the store was never bootstrapped") }
        var installed: (metadata: Raft.SnapshotMetadata, kv: MemoryKVBackend)?
        if let snapshot = batch.snapshot {
            do {
                installed = (snapshot.metadata, MemoryKVBackend(snapshot: try KVSnapshot(decoding: snapshot.data, limits: limits)))
            } catch {
                throw StorageError.undecodable(file: "memory", what: "snapshot \(snapshot.metadata.index)", detail: "\(error)")
            }
        }
        let base = installed?.metadata.index ?? state.snapshot.index
        let stored = installed == nil ? state.entries.count : 0
        var keep = stored
        if let first = batch.entries.first {
            keep = Int(first.index) - Int(base) - 1
            guard keep >= 0 && keep <= stored else {
                throw StorageError.invalidBatch("entry \(first.index) does not follow the stored log")
            }
        }
        var applied = installed?.metadata.index ?? state.applied
        for entry in batch.committedEntries where entry.index > applied {
            guard entry.index == applied + 1 else {
                throw StorageError.invalidBatch("entry \(entry.index) applied after \(applied)")
            }
            applied = entry.index
        }
        // From here on nothing throws.
        if let installed {
            state.kv = installed.kv
            state.entries = []
            state.snapshot = installed.metadata
            state.applied = installed.metadata.index
        }
        if !batch.entries.isEmpty {
            state.entries.removeSubrange(keep...)
            state.entries.append(contentsOf: batch.entries)
        }
        if let hardState = batch.hardState { state.hardState = hardState }
        var results: [AppliedEntry] = []
        for entry in batch.committedEntries where entry.index > state.applied {
            results.append(try SQLiteNodeStorage.applyEntry(entry, to: &state.kv, limits: limits))
            state.applied = entry.index
        }
        return results
    }

    public func snapshotData() throws -> (index: Raft.Index, data: [UInt8]) {
        state.withLock { ($0.applied, KVSnapshotOf($0)) }
    }

    public func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        state.withLock { state in
            guard metadata.index > state.snapshot.index else { return }
            let drop = Int(metadata.index) - Int(state.snapshot.index)
            state.entries.removeFirst(max(0, min(drop, state.entries.count)))
            state.snapshot = metadata
        }
    }

    public func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    {
        try state.withLock { state in
            try KVStateMachine.changes(in: bounds, from: from, through: through, withPrevious: withPrevious, limit: limit, backend: state.kv)
        }
    }

    public func revisions() throws -> (current: Revision, compacted: Revision) {
        state.withLock { ($0.kv.revision(), $0.kv.compactedRevision()) }
    }

    public func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError> {
        let limits = self.limits
        return try state.withLock { try KVStateMachine.read(request, from: $0.kv, limits: limits) }
    }

    public func leases() throws -> [Lease] { state.withLock { $0.kv.leases() } }

    public func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])? {
        state.withLock { state in state.kv.lease(id).map { ($0, state.kv.keys(attachedTo: id)) } }
    }

    public var appliedIndex: Raft.Index { state.withLock { $0.applied } }

    /// The durable hard state, snapshot index and last log index, without a full load.
    public var durableHardState: Raft.HardState { state.withLock { $0.hardState } }
    public var snapshotIndex: Raft.Index { state.withLock { $0.snapshot.index } }
    public var lastIndex: Raft.Index { state.withLock { $0.entries.last?.index ?? $0.snapshot.index } }
}

/// The snapshot bytes of a memory store's current state (empty before anything was applied,
/// matching a fresh cluster's snapshot at index 0).
private func KVSnapshotOf(_ state: MemoryNodeStorage.State) -> [UInt8] {
    guard state.applied > 0 || state.kv.revision() > 0 else { return [] }
    return (try? KVSnapshot.capture(from: state.kv).encoded()) ?? []
}
