import AspenCore
import AspenKV
import AspenRaft

/// What one Raft Ready asks the store to make durable, and to apply, in one transaction.
public struct StorageBatch: Sendable {
    public var snapshot: Raft.Snapshot?
    public var entries: [Raft.Entry]
    public var hardState: Raft.HardState?
    public var committedEntries: [Raft.Entry]

    public init(
        snapshot: Raft.Snapshot? = nil, entries: [Raft.Entry] = [], hardState: Raft.HardState? = nil,
        committedEntries: [Raft.Entry] = []
    ) {
        self.snapshot = snapshot
        self.entries = entries
        self.hardState = hardState
        self.committedEntries = committedEntries
    }

    public init(_ ready: Raft.Ready) {
        self.init(
            snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState,
            committedEntries: ready.committedEntries)
    }

    public var isEmpty: Bool { snapshot == nil && entries.isEmpty && hardState == nil && committedEntries.isEmpty }
}

/// A committed entry after the state machine applied it.
public struct AppliedEntry: Sendable, Equatable {
    public var index: Raft.Index
    public var term: Raft.Term
    /// The command's outcome; nil for entries that carry no command (no-ops, membership).
    public var result: Result<KVResult, KVError>?
    /// The changes the command made, in order, each with the version it replaced (for watchers).
    public var events: [WatchEvent] = []
}

/// A node's durable state: the Raft log, hard state and snapshot metadata, and the key-value
/// state machine, changed together by one atomic `commit` per Ready. Implemented over SQLite
/// (`SQLiteNodeStorage`) and in memory (`MemoryNodeStorage`, same semantics: a crash keeps
/// exactly the commits that returned).
public protocol NodeStorage: AnyObject, Sendable {
    /// What Raft restarts from. For a brand-new store, nil.
    func load() throws -> Raft.PersistentState?

    /// Stores the founding state of a new cluster member; refused over anything but a joining
    /// state that has not heard from a cluster yet.
    func bootstrap(_ state: Raft.PersistentState) throws

    /// One atomic, durable transaction: install the snapshot, replace entries from the first new
    /// index, store the hard state, apply the committed entries. Returns what each applied.
    func commit(_ batch: StorageBatch) throws -> [AppliedEntry]

    /// As `commit(_:)`, and hands the results of the committed entries to `known` as soon as
    /// they are computed, possibly before the transaction is durable. Their outcome is final
    /// already: the entries are durable in a quorum's logs, and applying them again after a crash
    /// gives the same results. So a node may answer its clients without waiting for this
    /// transaction's fsync (which is for the new entries and hard state in the same batch).
    func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry]

    /// The applied state as snapshot bytes, with the index it reflects, read consistently while
    /// writes go on.
    func snapshotData() throws -> (index: Raft.Index, data: [UInt8])

    /// Records that Raft compacted through `metadata.index` and drops the log prefix.
    func compacted(_ metadata: Raft.SnapshotMetadata) throws

    /// Serves a read from the applied state.
    func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError>
    /// Recorded changes to keys in `bounds` from revision `from` through `through` (see
    /// `KVStateMachine.changes`); `compacted` when `from` is no longer in history.
    func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    /// The current and compacted revisions of the applied state.
    func revisions() throws -> (current: Revision, compacted: Revision)
    /// Checkpoints and closes the store; nothing may use it afterwards.
    func close() throws
    func leases() throws -> [Lease]
    func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])?

    var appliedIndex: Raft.Index { get throws }
}

/// Why the store cannot serve. Each names the file and, where there is one, the log index.
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    case corrupted(file: String, detail: String)
    case checksumMismatch(file: String, group: GroupID, index: Raft.Index)
    case logGap(file: String, group: GroupID, expected: Raft.Index, found: Raft.Index)
    case undecodable(file: String, what: String, detail: String)
    case durabilityNotGuaranteed(file: String, detail: String)
    case sqlite(file: String, detail: String)
    case invalidBatch(String)

    public var description: String {
        switch self {
        case .corrupted(let file, let detail): return "\(file) is corrupted: \(detail)"
        case .checksumMismatch(let file, let group, let index):
            return "\(file): log entry \(index) of group \(group.rawValue) fails its checksum (corrupted or torn write)"
        case .logGap(let file, let group, let expected, let found):
            return "\(file): log of group \(group.rawValue) is missing entry \(expected) (next stored entry is \(found))"
        case .undecodable(let file, let what, let detail): return "\(file): cannot decode \(what): \(detail)"
        case .durabilityNotGuaranteed(let file, let detail): return "\(file): \(detail)"
        case .sqlite(let file, let detail): return "\(file): \(detail)"
        case .invalidBatch(let reason): return "invalid storage batch: \(reason)"
        }
    }
}

extension NodeStorage {
    public func close() throws {}
}

extension NodeStorage {
    public func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry] {
        let results = try commit(batch)
        known(results)
        return results
    }
}
