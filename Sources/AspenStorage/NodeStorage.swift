import AspenCore
import AspenKV
import AspenRaft

/// What one Raft Ready asks the store to make durable, and to apply, in one transaction.
public struct StorageBatch: Sendable {
    /// Install the image staged for this snapshot (from `snapshotChunks` of this batch and
    /// earlier ones).
    public var snapshot: Raft.SnapshotMetadata?
    /// Chunks of an image being received, in order, staged before `snapshot` is installed.
    public var snapshotChunks: [Raft.SnapshotChunk]
    public var entries: [Raft.Entry]
    public var hardState: Raft.HardState?
    public var committedEntries: [Raft.Entry]

    public init(
        snapshot: Raft.SnapshotMetadata? = nil, snapshotChunks: [Raft.SnapshotChunk] = [], entries: [Raft.Entry] = [],
        hardState: Raft.HardState? = nil, committedEntries: [Raft.Entry] = []
    ) {
        self.snapshot = snapshot
        self.snapshotChunks = snapshotChunks
        self.entries = entries
        self.hardState = hardState
        self.committedEntries = committedEntries
    }

    public init(_ ready: Raft.Ready) {
        self.init(
            snapshot: ready.snapshot, snapshotChunks: ready.snapshotChunksReceived, entries: ready.entries,
            hardState: ready.hardState, committedEntries: ready.committedEntries)
    }

    public var isEmpty: Bool {
        snapshot == nil && snapshotChunks.isEmpty && entries.isEmpty && hardState == nil && committedEntries.isEmpty
    }
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
/// state machine, changed by one `commit` per Ready. Implemented over log segment files and
/// SQLite (`SQLiteNodeStorage`) and in memory (`MemoryNodeStorage`: a crash keeps exactly the
/// commits that returned).
public protocol NodeStorage: AnyObject, Sendable {
    /// What Raft restarts from: the last compaction point, the entries after it and the applied
    /// index (which may be past the compaction point). For a brand-new store, nil.
    func load() throws -> Raft.PersistentState?

    /// Stores the founding state of a new cluster member; refused over anything but a joining
    /// state that has not heard from a cluster yet.
    func bootstrap(_ state: Raft.PersistentState) throws

    /// Stages the snapshot chunks (a chunk at offset 0 starts a new image; any other must
    /// continue the staged one exactly, or the batch is refused with `invalidBatch`); installs
    /// the staged image the snapshot describes (a damaged one is refused with `undecodable`
    /// and the state stays as it was); replaces entries from the first new index and stores the
    /// term and vote, all durably, before it returns (the commit index may be stored later: a
    /// node learns it again from the leader); applies the committed entries atomically. The
    /// applies may reach the disk after the log: after a crash the state can be behind the log,
    /// never ahead, and `load` gives the applied index to resume from. Staged chunks are not
    /// durable: a store that opens again has none, and Raft asks for the image from its start.
    /// Returns what each committed entry applied.
    func commit(_ batch: StorageBatch) throws -> [AppliedEntry]

    /// As `commit(_:)`, and hands the results of the committed entries to `known` as soon as
    /// they are computed, possibly before they are durable. Their outcome is final already: the
    /// entries are durable in a quorum's logs, and applying them again after a crash gives the
    /// same results. So a node may answer its clients without waiting for the disk.
    func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry]

    /// Whether committing `batch` would neither wait for the disk (an fsync, a checkpoint) nor
    /// behind another write: it only applies entries already durable in the log. A node may
    /// commit such a batch on its event loop.
    func commitsWithoutDisk(_ batch: StorageBatch) -> Bool

    /// Writes an image of the applied state (`KVSnapshotImage`), read consistently while
    /// writes go on, and keeps it to serve `snapshotImageBytes`; it replaces the image prepared
    /// before. Returns the applied index the image reflects and its size in bytes. A long read
    /// and write: callers run it off their actor.
    func prepareSnapshotImage() throws -> (index: Raft.Index, bytes: Int)

    /// Up to `length` bytes from `offset` of the prepared image at `index` (fewer only at its
    /// end); nil when the image prepared last is another one, or there is none.
    func snapshotImageBytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes?

    /// Records that Raft compacted through `metadata.index` and drops the log prefix: a long
    /// delete, so callers run it off their actor. It never moves the snapshot back.
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
    /// When the first lease expires (nil: no leases). The leader asks on every tick, so it must
    /// not read every lease.
    func earliestLeaseExpiry() throws -> Int64?
    func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])?
    /// The applied system records (cluster metadata outside the keyspace) whose names start
    /// with `prefix` (an empty one: every record), by name in byte order.
    func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)]

    var appliedIndex: Raft.Index { get throws }

    /// Rewrites the file without its free pages (etcd's defragment); writes wait meanwhile.
    /// Returns the file's size before and after, in bytes (nil in memory).
    func defragment() throws -> (before: Int64, after: Int64)?
}

/// Why the store cannot serve. Each names the file and, where there is one, the log index.
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    case corrupted(file: String, detail: String)
    /// Acknowledged log batches are damaged (not a torn last write): the node must not start.
    case corruptedLog(file: String, offset: Int, lastGoodIndex: Raft.Index, detail: String)
    case checksumMismatch(file: String, group: GroupID, index: Raft.Index)
    case logGap(file: String, group: GroupID, expected: Raft.Index, found: Raft.Index)
    case undecodable(file: String, what: String, detail: String)
    case durabilityNotGuaranteed(file: String, detail: String)
    case sqlite(file: String, detail: String)
    case io(file: String, detail: String)
    case invalidBatch(String)
    /// A committed entry could not be applied for a reason of the store's, not the command's:
    /// the node must stop rather than skip it or apply it in part.
    case applyFailed(group: GroupID, index: Raft.Index, detail: String)
    /// A snapshot image received whole does not decode (damaged on the leader's disk or on the
    /// way): it was not installed, and nothing changed. The leader is asked for another.
    case imageRefused(index: Raft.Index, detail: String)
    /// The store cannot serve this now (a snapshot image is being installed): retry, or ask
    /// another member.
    case busy(file: String, detail: String)

    public var description: String {
        switch self {
        case .corrupted(let file, let detail): return "\(file) is corrupted: \(detail)"
        case .corruptedLog(let file, let offset, let lastGoodIndex, let detail):
            return "\(file) is corrupted at byte \(offset), after log entry \(lastGoodIndex): \(detail). Entries after it were "
                + "acknowledged, so the node will not start: replace this member (docs/storage.md: \"A member whose log is damaged\")"
        case .checksumMismatch(let file, let group, let index):
            return "\(file): log entry \(index) of group \(group.rawValue) fails its checksum (corrupted or torn write)"
        case .logGap(let file, let group, let expected, let found):
            return "\(file): log of group \(group.rawValue) is missing entry \(expected) (next stored entry is \(found))"
        case .undecodable(let file, let what, let detail): return "\(file): cannot decode \(what): \(detail)"
        case .durabilityNotGuaranteed(let file, let detail): return "\(file): \(detail)"
        case .sqlite(let file, let detail), .io(let file, let detail): return "\(file): \(detail)"
        case .invalidBatch(let reason): return "invalid storage batch: \(reason)"
        case .applyFailed(let group, let index, let detail):
            return "cannot apply committed entry \(index) of group \(group.rawValue); the node stops rather than skip it: \(detail)"
        case .busy(let file, let detail): return "\(file) is busy: \(detail)"
        case .imageRefused(let index, let detail):
            return "snapshot image \(index) does not decode, so it was not installed (the state is unchanged): \(detail)"
        }
    }
}

extension NodeStorage {
    public func commitsWithoutDisk(_ batch: StorageBatch) -> Bool { false }
    public func earliestLeaseExpiry() throws -> Int64? { try leases().map(\.expiresAtMs).min() }
    public func close() throws {}
    public func defragment() throws -> (before: Int64, after: Int64)? { nil }
}

extension NodeStorage {
    /// `message` as it may leave: a snapshot chunk that names a byte range gets its bytes from
    /// the prepared image. Nil when that image is no longer the one prepared, or is shorter.
    public func withImageBytes(_ message: Raft.Message) throws -> Raft.Message? {
        guard case .snapshotChunk(var chunk) = message.kind, chunk.needsData else { return message }
        guard let bytes = try snapshotImageBytes(index: chunk.metadata.index, offset: chunk.offset, length: chunk.length),
            bytes.count == chunk.length
        else { return nil }
        chunk.data = bytes
        var filled = message
        filled.kind = .snapshotChunk(chunk)
        return filled
    }
}

extension NodeStorage {
    public func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry] {
        let results = try commit(batch)
        known(results)
        return results
    }
}

/// A checksum of a store's key-value state, comparable between members.
public struct StateHash: Sendable, Equatable {
    /// CRC32C over every live key as of `revision` (key, value, revisions, version, lease, in key
    /// order), then every recorded change after `compactedRevision` through `revision` (in
    /// revision order).
    public var hash: UInt32
    public var revision: Revision
    public var compactedRevision: Revision
}

extension NodeStorage {
    /// The checksum of the state as of `revision` (0: the current one). Members that applied the
    /// same log agree on it whatever their snapshots, compaction of the Raft log or file layout;
    /// a member that diverged does not. Read in pages, each consistent at `revision`.
    public func stateHash(at revision: Revision = 0, page: Int = 1_000) throws -> Result<StateHash, KVError> {
        let (current, compacted) = try revisions()
        let at = revision == 0 ? current : revision
        guard at <= current else { return .failure(.futureRevision(requested: at, current: current)) }
        guard at >= compacted else { return .failure(.compacted(requested: at, oldestAvailable: compacted)) }
        var hash: UInt32 = 0
        func fold(_ kind: UInt8, _ kv: KeyValue) {
            var writer = ByteWriter()
            writer.write(kind)
            writer.writeBytes(kv.key)
            writer.writeBytes(kv.value)
            for number in [kv.createRevision, kv.modRevision, kv.version, kv.lease] { writer.writeFixed(UInt64(bitPattern: number)) }
            hash = CRC32C.checksum(writer.bytes, seed: hash)
        }
        var continuation: Bytes?
        repeat {
            guard at > 0 else { break }
            switch try read(RangeRequest(.range(start: [], end: nil), revision: at, limit: page, continuation: continuation)) {
            case .success(let result):
                for kv in result.kvs { fold(0, kv) }
                continuation = result.more ? result.continuation : nil
            case .failure(let error):
                return .failure(error)
            }
        } while continuation != nil
        var from = compacted + 1
        while from <= at {
            switch try changes(in: KeyBounds(start: [], end: nil), from: from, through: at, withPrevious: false, limit: page) {
            case .success(let (events, next)):
                for event in events { fold(event.kind == .put ? 1 : 2, event.keyValue) }
                from = next
            case .failure(let error):
                return .failure(error)
            }
        }
        return .success(StateHash(hash: hash, revision: at, compactedRevision: compacted))
    }
}
