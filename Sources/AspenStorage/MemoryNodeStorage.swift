import AspenCore
import AspenKV
import AspenRaft
import Synchronization

/// The node store in memory, with `SQLiteNodeStorage`'s semantics: a `commit` is atomic (it
/// happens whole or, if it throws, not at all), and "crashing" keeps exactly the commits that
/// returned. Snapshot images are whole byte arrays here (the SQLite store streams them from
/// files); as there, they do not outlive a restart (`load`). For the simulator and fast tests.
///
/// In log mode (`init(limits:log:)`, `MemoryNodeStorage+Log.swift`) the Raft log and hard state
/// are also written to a `SegmentedLog` on a given disk, as `SQLiteNodeStorage` writes them, and
/// a restart reads them back from there; the rest stays in memory, standing for a database
/// whose every commit is durable.
public final class MemoryNodeStorage: NodeStorage {
    struct State: Sendable {
        var hardState = Raft.HardState()
        var snapshot = Raft.SnapshotMetadata(index: 0, term: 0, membership: Raft.Membership())
        var entries: [Raft.Entry] = []
        var applied: Raft.Index = 0
        var kv = MemoryKVBackend()
        var bootstrapped = false
        /// The image being received, and its bytes so far.
        var staged: (image: StagedImage, data: Bytes)?
        /// The image prepared last, for `snapshotImageBytes`.
        var prepared: (index: Raft.Index, data: Bytes)?
        /// Log mode: the log as opened last (nil in memory only).
        var log: SegmentedLog?
        /// Log mode: the term and vote last written to the log.
        var logged: Raft.HardState?
        /// Log mode: what the last opening of the log cut off its end.
        var logCut: LogCut?
    }

    let state = Mutex(State())
    let limits: Limits
    /// Where the log lives in log mode; nil: in memory only.
    let logSetup: LogSetup?

    public convenience init(limits: Limits = .standard) {
        self.init(limits: limits, logSetup: nil)
    }

    init(limits: Limits, logSetup: LogSetup?) {
        self.limits = limits
        self.logSetup = logSetup
    }

    /// A load is a restart: the images staged or prepared before it are gone, as the SQLite
    /// store's files are when it opens.
    public func load() throws -> Raft.PersistentState? {
        let (setup, limits) = (logSetup, self.limits)
        return try state.withLock { state in
            state.staged = nil
            state.prepared = nil
            guard state.bootstrapped else { return nil }
            if let setup { try Self.reopenLog(setup, limits: limits, in: &state) }
            return Raft.PersistentState(
                hardState: state.hardState, snapshot: state.snapshot, entries: state.entries, appliedIndex: state.applied)
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
            state.snapshot = initial.snapshot
            state.entries = initial.entries
            state.applied = initial.appliedIndex
            state.bootstrapped = true
            try state.log?.append(initial.entries, hardState: initial.hardState)
            state.logged = initial.hardState
        }
    }

    public func commitsWithoutDisk(_ batch: StorageBatch) -> Bool {
        guard batch.entries.isEmpty && batch.snapshot == nil && batch.snapshotChunks.isEmpty else { return false }
        // In log mode a new term or vote waits for the log's fsync.
        guard logSetup != nil, let hardState = batch.hardState else { return true }
        return !state.withLock { Self.changesTermOrVote(hardState, since: $0.logged) }
    }

    public func commit(_ batch: StorageBatch) throws -> [AppliedEntry] {
        let limits = self.limits
        return try state.withLock { state in try Self.apply(batch, to: &state, limits: limits) }
    }

    /// Every check that can fail runs before the first change, so a commit that throws changes
    /// nothing; after that, nothing can fail (the in-memory state machine never throws) but the
    /// log's writes in log mode, where a power loss may stop a commit part-way, as it may stop
    /// `SQLiteNodeStorage`'s.
    static func apply(_ batch: StorageBatch, to state: inout State, limits: Limits) throws -> [AppliedEntry] {
        guard state.bootstrapped else { throw StorageError.invalidBatch("the store was never bootstrapped") }
        var staged = state.staged
        if !batch.snapshotChunks.isEmpty {
            let image = try StagedImage.after(batch.snapshotChunks, from: staged?.image)
            var data = staged?.data ?? []
            for chunk in batch.snapshotChunks {
                if chunk.offset == 0 { data = [] }
                data += chunk.data
            }
            staged = image.map { ($0, data) }
        }
        var installed: (metadata: Raft.SnapshotMetadata, kv: MemoryKVBackend)?
        if let snapshot = batch.snapshot {
            try StagedImage.requireComplete(staged?.image, for: snapshot)
            do {
                installed = (snapshot, MemoryKVBackend(snapshot: try KVSnapshot(decoding: staged?.data ?? [], limits: limits)))
            } catch {
                throw StorageError.imageRefused(index: snapshot.index, detail: "\(error)")
            }
            staged = nil
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
        // From here on only the log can throw (in log mode), and it is written between the changes
        // in the order `SQLiteNodeStorage` makes them durable: the snapshot installed, the log
        // started over, the entries and the term and vote appended, the entries applied.
        state.staged = staged
        if let installed {
            state.kv = installed.kv
            state.entries = []
            state.snapshot = installed.metadata
            state.applied = installed.metadata.index
            try logReset(after: installed.metadata, hardState: batch.hardState, in: &state)
        }
        try logAppend(batch.entries, hardState: batch.hardState, in: &state)
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

    public func prepareSnapshotImage() throws -> (index: Raft.Index, bytes: Int) {
        state.withLock { state in
            let image = Self.image(of: state)
            state.prepared = image
            return (image.index, image.data.count)
        }
    }

    public func snapshotImageBytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes? {
        guard offset >= 0, length >= 0 else {
            throw StorageError.invalidBatch("cannot read \(length) bytes of a snapshot image at byte \(offset)")
        }
        return state.withLock { state in
            guard let prepared = state.prepared, prepared.index == index else { return nil }
            let start = min(offset, prepared.data.count)
            return Array(prepared.data[start..<min(prepared.data.count, start + length)])
        }
    }

    /// The image of the applied state, with the index it reflects: what the simulator hashes to
    /// compare members.
    public func stateImage() -> (index: Raft.Index, data: Bytes) {
        state.withLock { Self.image(of: $0) }
    }

    private static func image(of state: State) -> (index: Raft.Index, data: Bytes) {
        (state.applied, KVSnapshot(of: state.kv).encoded())
    }

    /// In log mode the snapshot is recorded first (the database's durable commit), then the log
    /// files that hold only entries through it are deleted.
    public func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        try state.withLock { state in
            guard metadata.index > state.snapshot.index else { return }
            let drop = Int(metadata.index) - Int(state.snapshot.index)
            state.entries.removeFirst(max(0, min(drop, state.entries.count)))
            state.snapshot = metadata
            try state.log?.compact(through: metadata.index)
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

    public func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] {
        state.withLock { $0.kv.systemRecords(prefix: prefix) }
    }

    public var appliedIndex: Raft.Index { state.withLock { $0.applied } }

    /// The durable hard state, snapshot index and last log index, without a full load.
    public var durableHardState: Raft.HardState { state.withLock { $0.hardState } }
    public var snapshotIndex: Raft.Index { state.withLock { $0.snapshot.index } }
    public var lastIndex: Raft.Index { state.withLock { $0.entries.last?.index ?? $0.snapshot.index } }
}
