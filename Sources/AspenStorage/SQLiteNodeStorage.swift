import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

/// A node's durable state: the Raft log with its term and vote in append-only segment files
/// (`SegmentedLog`, in the directory `<path>-log`), and in one SQLite file (WAL mode) the
/// key-value state machine, the applied index, snapshot metadata and membership. Which version
/// of each key a read sees is found in memory (`KeyIndex`, rebuilt from the file on opening).
///
/// A `commit` appends the batch's entries and hard state to the log and waits for the disk
/// once; then it applies the committed entries in one SQLite transaction that does not wait for
/// the disk (`synchronous=NORMAL`). After a power loss the state machine may be behind the log
/// and catches up from it on restart, so the log keeps every entry after the last state that is
/// surely on disk: before compaction deletes log files, a `synchronous=FULL` commit makes the
/// state durable. Installing a snapshot commits with `FULL` too, before the log starts over.
public final class SQLiteNodeStorage: NodeStorage {
    public let path: String
    public let group: GroupID
    let pool: DatabasePool
    let checkpointer: Checkpointer
    let log: SegmentedLog
    /// Images prepared to send and the one being received (`<path>-snapshots`).
    let snapshots: SnapshotFiles
    let index = KeyIndex()
    let limits: Limits
    /// The term and vote last made durable (nil until known).
    private let lastDurable = Mutex<Raft.HardState?>(nil)

    /// Where the log of `group` lives beside the database at `path`.
    public static func logDirectory(_ path: String, group: GroupID = .root) -> String {
        group == .root ? path + "-log" : path + "-log-\(group.rawValue)"
    }

    /// Where the snapshot images of `group` live beside the database at `path`.
    public static func snapshotDirectory(_ path: String, group: GroupID = .root) -> String {
        group == .root ? path + "-snapshots" : path + "-snapshots-\(group.rawValue)"
    }

    /// Opens (creating if needed) the database at `path` and its log. Refuses a file that is not
    /// a usable Aspen database, one that fails SQLite's integrity check, a connection that could
    /// not fsync on commit, or a log that is corrupted before its last segment.
    public init(
        path: String, group: GroupID = .root, limits: Limits = .standard, verify: Bool = true, logSegmentBytes: Int = 64 << 20
    ) throws {
        self.path = path
        self.group = group
        self.limits = limits
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // Pages stay in memory between commits (64 MiB of cache per connection) and reads of the
            // main file go through a memory map instead of one pread per page.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            try db.execute(sql: "PRAGMA mmap_size = 1073741824")
            // A new database gets 8 KiB pages (an existing one keeps its size). The log and the
            // history are WITHOUT ROWID tables, whose rows stay inside a page only up to about
            // a quarter of it: with 4 KiB pages every entry or version over ~1 KB spilled into
            // an overflow page of its own, mostly empty, and each 1 KiB write cost ~9 KB of
            // pages (measured: 925 MB of database after `etcdctl check perf --load=m`, 373 MB
            // with 8 KiB pages, and the slowest request 0.34 → 0.16 s).
            try db.execute(sql: "PRAGMA page_size = \(Self.pageBytes)")
            // The WAL is copied into the main file every 4,096 pages (32 MiB) rather than SQLite's
            // 1,000: a put rewrites two B-tree leaves (current value and history), so hot pages
            // appear in the WAL many times over and a longer interval copies each once. Measured
            // here with 3 nodes on one disk: disk writes per second fell from ~12,000 to ~3,500
            // and puts rose 5-27 % (c=64 through the etcd API, c=256 native, alternating runs);
            // 8,192 was no faster and its longer checkpoints showed in the p99. The checkpoints
            // run on a connection of their own (`Checkpointer`), not inside a commit.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        var previousSchema: Int?
        let logDirectory = Self.logDirectory(path, group: group)
        let logExisted = FileManager.default.fileExists(atPath: logDirectory)
        // The data directory (0700) and the database file (0600; SQLite gives its WAL the same
        // mode) are created durably: their names reach the disk before anything is acknowledged.
        let dataDirectory = (path as NSString).deletingLastPathComponent
        try DurableFiles.createDirectory(dataDirectory.isEmpty ? "." : dataDirectory)
        try DurableFiles.createFile(path)
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.writeWithoutTransaction { db in
                // Commits that must be durable switch to FULL (`durableWrite`); check that it takes.
                try db.execute(sql: "PRAGMA synchronous = FULL")
                let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
                guard level == 2 else {
                    throw StorageError.durabilityNotGuaranteed(
                        file: path, detail: "SQLite synchronous is \(level ?? -1), not FULL (2); refusing to run")
                }
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
                if verify {
                    let verdict = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
                    guard verdict == "ok" else { throw StorageError.corrupted(file: path, detail: verdict) }
                }
                try db.inTransaction {
                    previousSchema = try Self.migrate(db, file: path)
                    return .commit
                }
            }
            let checkpointer = try Checkpointer(path: path, frames: Int32(Self.checkpointPages))
            pool.writeWithoutTransaction { db in checkpointer.install(on: db) }
            self.checkpointer = checkpointer
            log = try SegmentedLog(directory: logDirectory, group: group, limits: limits, segmentBytes: logSegmentBytes)
            snapshots = try SnapshotFiles(directory: Self.snapshotDirectory(path, group: group))
        } catch let error as StorageError {
            throw error
        } catch let error as DatabaseError {
            throw Self.translate(error, file: path)
        }
        try guarded {
            try moveLogOutOfDatabase(previousSchema: previousSchema, logExisted: logExisted)
            try rebuildIndex()
        }
    }

    /// Fills the key index from `kv_history`.
    private func rebuildIndex() throws {
        let (changes, compacted) = try pool.read { db in
            (
                try SQLiteKVBackend.changes(in: db, file: path),
                try Revision.fetchOne(db, sql: "SELECT compacted_revision FROM raft_state WHERE grp = ?", arguments: [group.rawValue]) ?? 0
            )
        }
        index.replace(with: changes, compacted: compacted)
    }

    /// Runs `body` in a read transaction, with a backend over its snapshot. A read that the
    /// index could not serve as of that snapshot (a compaction or a snapshot install overlapped
    /// it) starts over.
    /// Runs a read against a consistent pair of file and key index. While a snapshot image is
    /// being installed (the index is being replaced) the read does not wait: it may run on the
    /// node's event loop, and an install can take minutes. It fails at once with `busy`.
    private func reading<T>(_ body: (Database, SQLiteKVBackend) throws -> T) throws -> T {
        try guarded {
            for _ in 0..<3 {
                let generation = index.generation
                guard generation % 2 == 0 else { break }
                do {
                    let result = try pool.read { db in try body(db, SQLiteKVBackend(db, file: path, group: group, index: index)) }
                    if index.generation == generation { return result }
                } catch is KeyIndex.Stale {}
            }
            throw StorageError.busy(file: path, detail: "a snapshot image is being installed; retry, or read from another member")
        }
    }

    static let pageBytes = 8192
    static let checkpointPages = 4096

    static func translate(_ error: DatabaseError, file: String) -> StorageError {
        switch error.resultCode {
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return .corrupted(file: file, detail: error.message ?? "\(error.resultCode)")
        default:
            return .sqlite(file: file, detail: error.message ?? "\(error.resultCode)")
        }
    }

    /// Runs `body`, turning SQLite's errors into `StorageError`s that name the file.
    func guarded<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError {
            throw Self.translate(error, file: path)
        }
    }

    /// 3: the log lives in segment files, no longer in `raft_log` (which is emptied on opening).
    /// 4: no `kv_current` table; the key index lives in memory (`KeyIndex`).
    static let schemaVersion = 4

    /// Creates or upgrades the tables; returns the schema version the file had (nil: new). A file
    /// below 3 is marked current only once the log has left the database (`moveLogOutOfDatabase`).
    @discardableResult
    static func migrate(_ db: Database, file: String) throws -> Int? {
        try db.execute(
            sql: """
                CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS raft_log (
                    grp INTEGER NOT NULL, idx INTEGER NOT NULL, term INTEGER NOT NULL,
                    payload BLOB NOT NULL, checksum INTEGER NOT NULL,
                    PRIMARY KEY (grp, idx)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS raft_state (
                    grp INTEGER PRIMARY KEY, term INTEGER NOT NULL, vote INTEGER, commit_index INTEGER NOT NULL,
                    applied_index INTEGER NOT NULL, snapshot_index INTEGER NOT NULL, snapshot_term INTEGER NOT NULL,
                    snapshot_membership BLOB NOT NULL, revision INTEGER NOT NULL DEFAULT 0,
                    compacted_revision INTEGER NOT NULL DEFAULT 0, lease_sequence INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS leases_expiry ON leases(expires_at_ms);
                """)
        let version = try Int.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'schema_version'")
        if let version, version > schemaVersion {
            throw StorageError.undecodable(
                file: file, what: "the schema", detail: "version \(version) is newer than this build reads (\(schemaVersion))")
        }
        try SQLiteKVBackend.createSessionTables(db)
        let hasKeyValues = try db.tableExists("kv_history")
        if version == 1 && hasKeyValues {
            try migrateHistoryToRevisionOrder(db)
        } else if !hasKeyValues {
            try createKeyValueTables(db)
        }
        // Up to schema 3, each key's last change was also a row of `kv_current`.
        try db.execute(sql: "DROP INDEX IF EXISTS kv_current_lease; DROP TABLE IF EXISTS kv_current;")
        try db.execute(
            sql: "INSERT INTO meta(name, value) VALUES ('schema_version', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            arguments: [(version ?? 0) >= 3 ? schemaVersion : max(version ?? 2, 2)])
        return version
    }

    /// History keyed by revision, each change pointing to the key's previous one (see
    /// `SQLiteKVBackend`). The jump columns are no longer written (0): they served walks back
    /// through a key's versions, which the key index replaced.
    static func createKeyValueTables(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE kv_history (
                    revision INTEGER NOT NULL, key BLOB NOT NULL, value BLOB, create_revision INTEGER NOT NULL,
                    version INTEGER NOT NULL, lease INTEGER NOT NULL, prev_revision INTEGER NOT NULL,
                    jump_revision INTEGER NOT NULL, jump_depth INTEGER NOT NULL,
                    PRIMARY KEY (revision, key)) WITHOUT ROWID;
                """)
    }

    /// Schema 1 kept history keyed by (key, revision). Rewrites it keyed by revision inside the
    /// opening transaction.
    static func migrateHistoryToRevisionOrder(_ db: Database) throws {
        try db.execute(
            sql: """
                ALTER TABLE kv_history RENAME TO kv_history_v1;
                """)
        try createKeyValueTables(db)
        try db.execute(
            sql: """
                INSERT INTO kv_history(revision, key, value, create_revision, version, lease, prev_revision, jump_revision, jump_depth)
                SELECT revision, key, value, create_revision, version, lease,
                    coalesce(lag(revision) OVER (PARTITION BY key ORDER BY revision), 0), 0, 0
                FROM kv_history_v1;
                DROP TABLE kv_history_v1;
                """)
    }

    // MARK: Load

    public func load() throws -> Raft.PersistentState? {
        try guarded {
            guard let row = try pool.read({ db in
                try Row.fetchOne(db, sql: "SELECT term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership FROM raft_state WHERE grp = ?", arguments: [group.rawValue])
            }) else { return nil }
            let membership: Raft.Membership
            do {
                membership = try Raft.decodeMembership(Bytes(row[6] as Data))
            } catch {
                throw StorageError.undecodable(file: path, what: "the snapshot membership", detail: "\(error)")
            }
            var hardState = Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2])
            let applied: Raft.Index = row[3]
            let metadata = Raft.SnapshotMetadata(index: row[4], term: row[5], membership: membership)
            let contents = try log.contents()
            // The log is written before the database, so its term and vote are the newer ones.
            if let logged = contents.hardState, logged.term >= hardState.term {
                hardState = Raft.HardState(term: logged.term, vote: logged.vote, commit: max(logged.commit, hardState.commit))
            }
            lastDurable.withLock { $0 = hardState }
            // Raft may start with its compaction point below the applied index: an image is
            // written when one is needed, at the applied index of that moment.
            return Raft.PersistentState(
                hardState: hardState, snapshot: metadata, entries: try log.entries(after: metadata, in: contents), appliedIndex: applied)
        }
    }

    /// Moves the log of a database written before the log had files of its own (schema 2 and
    /// earlier) into the log files, with its term and vote; then empties `raft_log`. A crash
    /// part-way leaves the rows, and the move runs again.
    private func moveLogOutOfDatabase(previousSchema: Int?, logExisted: Bool) throws {
        if let previousSchema, previousSchema >= 3 {
            let applied = try pool.read { db in
                try Int64.fetchOne(db, sql: "SELECT applied_index FROM raft_state WHERE grp = ?", arguments: [group.rawValue])
            }
            if let applied, !logExisted {
                throw StorageError.corrupted(
                    file: log.directory,
                    detail: "the log directory is missing, but \(path) holds this member's state (applied through \(applied)); restore the directory, or remove the member's data and add it to the cluster again")
            }
            return
        }
        let (rows, state) = try pool.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM raft_log WHERE grp = ?", arguments: [group.rawValue]) ?? 0,
                try Row.fetchOne(db, sql: "SELECT term, vote, commit_index, snapshot_index FROM raft_state WHERE grp = ?", arguments: [group.rawValue])
            )
        }
        if let state, log.isEmpty {
            let hardState = Raft.HardState(term: state[0], vote: (state[1] as Int64?).map { NodeID(UInt64($0)) }, commit: state[2])
            if rows > 0 || hardState.term > 0 || hardState.vote != nil {
                try log.append(try legacyEntries(after: state[3]), hardState: hardState)
            }
        }
        try durableWrite { db in
            try db.execute(sql: "DELETE FROM raft_log WHERE grp = ?", arguments: [group.rawValue])
            try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'schema_version'", arguments: [Self.schemaVersion])
        }
    }

    /// Reads the log that schema 2 kept in `raft_log` after `index`, verifying every checksum and
    /// that no entry is missing.
    func legacyEntries(after index: Raft.Index) throws -> [Raft.Entry] {
        try pool.read { db in
            let cursor = try Row.fetchCursor(
                db, sql: "SELECT idx, term, payload, checksum FROM raft_log WHERE grp = ? AND idx > ? ORDER BY idx",
                arguments: [group.rawValue, index])
            var entries: [Raft.Entry] = []
            var expected = index + 1
            while let row = try cursor.next() {
                let entryIndex: Raft.Index = row[0]
                guard entryIndex == expected else {
                    throw StorageError.logGap(file: path, group: group, expected: expected, found: entryIndex)
                }
                let term: Raft.Term = row[1]
                let payload = Bytes(row[2] as Data)
                let stored: Int64 = row[3]
                guard UInt32(truncatingIfNeeded: stored) == Raft.Entry.checksum(index: entryIndex, term: term, payload: payload) else {
                    throw StorageError.checksumMismatch(file: path, group: group, index: entryIndex)
                }
                do {
                    entries.append(Raft.Entry(term: term, index: entryIndex, payload: try Raft.Payload(decoding: payload, limits: limits)))
                } catch {
                    throw StorageError.undecodable(file: path, what: "log entry \(entryIndex)", detail: "\(error)")
                }
                expected += 1
            }
            return entries
        }
    }

    public func bootstrap(_ state: Raft.PersistentState) throws {
        try guarded {
            try durableWrite { db in
                // Only an untouched joining state may be replaced (a node founding a cluster).
                if let row = try Row.fetchOne(
                    db, sql: "SELECT term, vote, applied_index, snapshot_index, snapshot_membership FROM raft_state WHERE grp = ?",
                    arguments: [group.rawValue])
                {
                    let term: Int64 = row[0]
                    let vote: Int64? = row[1]
                    let applied: Int64 = row[2]
                    let snapshotIndex: Int64 = row[3]
                    let membership = try? Raft.decodeMembership(Bytes(row[4] as Data))
                    let counters: [Int64] = [term, applied, snapshotIndex]
                    let untouched = vote == nil && counters.allSatisfy { $0 == 0 } && membership?.isEmpty == true && log.isEmpty
                    guard untouched else {
                        throw StorageError.invalidBatch("\(path) already holds group \(group.rawValue); refusing to bootstrap over it")
                    }
                }
                try writeState(
                    db, hardState: state.hardState, applied: state.appliedIndex, snapshot: state.snapshot)
            }
            try log.append(state.entries, hardState: state.hardState)
            lastDurable.withLock { $0 = state.hardState }
        }
    }

    /// A write transaction that is on disk when it returns (`synchronous=FULL`), and with it
    /// every commit before it.
    private func durableWrite<T>(_ body: (Database) throws -> T) throws -> T {
        try guarded {
            try pool.writeWithoutTransaction { db in
                try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
                var result: T?
                let outcome = Result {
                    try db.inTransaction {
                        result = try body(db)
                        return .commit
                    }
                }
                // Back to NORMAL before anything else commits.
                try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
                try outcome.get()
                return result!
            }
        }
    }

    // MARK: Commit

    public func commit(_ batch: StorageBatch) throws -> [AppliedEntry] {
        try commit(batch, resultsKnown: { _ in })
    }

    public func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry] {
        guard !batch.isEmpty else {
            known([])
            return []
        }
        return try guarded {
            try snapshots.stage(batch.snapshotChunks, installing: batch.snapshot)
            if let snapshot = batch.snapshot { try install(snapshot, hardState: batch.hardState) }
            if !batch.entries.isEmpty || needsDurableState(batch.hardState) {
                try log.append(batch.entries, hardState: batch.hardState)
                if let state = batch.hardState { lastDurable.withLock { $0 = state } }
            }
            guard !batch.committedEntries.isEmpty else {
                known([])
                return []
            }
            let (results, compacted) = try indexed {
                try pool.write { db in try apply(batch.committedEntries, hardState: batch.hardState, in: db, known: known) }
            }
            if let compacted { index.compact(through: compacted) }
            return results
        }
    }

    /// Runs a write that changes the key index; if it fails (and its transaction rolled back),
    /// the index is read again from the file.
    private func indexed<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            try? rebuildIndex()
            throw error
        }
    }

    /// Whether `state` changes the term or the vote, which must be on disk before the node
    /// acts on them. The commit index alone need not be: it is learned again from the leader.
    private func needsDurableState(_ state: Raft.HardState?) -> Bool {
        guard let state else { return false }
        guard let durable = lastDurable.withLock({ $0 }) else { return true }
        return state.term != durable.term || state.vote != durable.vote
    }

    /// A batch that only applies committed entries (and moves the commit index) writes nothing to
    /// the log, and its SQLite commit does not wait for the disk: the entries are durable in
    /// the log already, and are applied again after a power loss.
    private func appliesOnly(_ batch: StorageBatch) -> Bool {
        batch.entries.isEmpty && batch.snapshot == nil && batch.snapshotChunks.isEmpty && !needsDurableState(batch.hardState)
    }

    public func commitsWithoutDisk(_ batch: StorageBatch) -> Bool {
        appliesOnly(batch) && otherWrites.load(ordering: .relaxed) == 0 && !checkpointer.writerMayCheckpoint
    }

    /// Writes under way besides commits (compaction's deletes, defragmentation), which a commit
    /// would wait behind.
    private let otherWrites = Atomic<Int>(0)

    private func otherWrite<T>(_ body: () throws -> T) throws -> T {
        otherWrites.add(1, ordering: .relaxed)
        defer { otherWrites.subtract(1, ordering: .relaxed) }
        return try guarded(body)
    }

    private func storedState(_ db: Database) throws -> (hardState: Raft.HardState, applied: Raft.Index, snapshot: Raft.SnapshotMetadata) {
        // Statements run on every commit are prepared once per connection (cached): preparing
        // costs more than running them.
        guard let row = try Row.fetchOne(
            db.cachedStatement(
                sql: "SELECT term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership FROM raft_state WHERE grp = ?"),
            arguments: [group.rawValue])
        else { throw StorageError.invalidBatch("group \(group.rawValue) was never bootstrapped in \(path)") }
        return (
            Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2]), row[3],
            Raft.SnapshotMetadata(
                index: row[4], term: row[5], membership: try decodeMembership(row[6] as Data))
        )
    }

    /// The snapshot's membership as stored; one that does not decode stops the store rather than
    /// be replaced by an empty one at the next commit.
    private func decodeMembership(_ data: Data) throws -> Raft.Membership {
        do {
            return try Raft.decodeMembership(Bytes(data))
        } catch {
            throw StorageError.undecodable(file: path, what: "the snapshot's membership", detail: "\(error)")
        }
    }

    /// Replaces the state machine with the staged image of `metadata`, durably, reading it a
    /// frame at a time inside one transaction; then the log starts over after it and the
    /// staging goes. A damaged image rolls the transaction back: the state stays as it was.
    private func install(_ metadata: Raft.SnapshotMetadata, hardState: Raft.HardState?) throws {
        // Reads wait while the index and the file disagree.
        index.beginReplacement()
        defer { index.endReplacement() }
        let compacted = try discardingRefused {
            try snapshots.withStagedImage(metadata) { source in
                index.replace(with: [:], compacted: 0)
                return try indexed {
                    try durableWrite { db in
                        let stored = try storedState(db)
                        var reader = KVSnapshotImage.Reader(from: source, limits: limits)
                        let compacted: Revision
                        do {
                            compacted = try SQLiteKVBackend.install(from: &reader, into: db, file: path, group: group, index: index)
                        } catch let error as DecodingError {
                            throw StorageError.imageRefused(index: metadata.index, detail: "\(source.path): \(error)")
                        }
                        try writeState(db, hardState: hardState ?? stored.hardState, applied: metadata.index, snapshot: metadata)
                        return compacted
                    }
                }
            }
        }
        index.compact(through: compacted)
        try log.reset(after: metadata.index, term: metadata.term, hardState: hardState)
        if let hardState { lastDurable.withLock { $0 = hardState } }
        snapshots.discardStaging()
    }

    /// A refused image is of no further use: its staging goes, and the next image starts afresh.
    private func discardingRefused<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StorageError {
            if case .imageRefused = error { snapshots.discardStaging() }
            throw error
        }
    }

    /// Applies the entries in the caller's transaction; returns their results and the revision
    /// compacted, if one was (the index drops the changes once the transaction commits).
    private func apply(_ committed: [Raft.Entry], hardState: Raft.HardState?, in db: Database, known: ([AppliedEntry]) -> Void) throws
        -> (results: [AppliedEntry], compacted: Revision?)
    {
        let stored = try storedState(db)
        var applied = stored.applied
        var results: [AppliedEntry] = []
        var backend = try SQLiteKVBackend(db, file: path, group: group, index: index, writer: true)
        for entry in committed where entry.index > applied {
            guard entry.index == applied + 1 else {
                throw StorageError.invalidBatch("entry \(entry.index) applied after \(applied)")
            }
            do {
                results.append(try Self.applyEntry(entry, to: &backend, limits: limits))
            } catch {
                throw StorageError.applyFailed(group: group, index: entry.index, detail: "\(error)")
            }
            applied = entry.index
        }
        try backend.flush()
        known(results)
        try writeState(db, hardState: hardState ?? stored.hardState, applied: applied, snapshot: stored.snapshot)
        return (results, backend.compactedInTransaction)
    }

    static func applyEntry<Backend: KVBackend>(_ entry: Raft.Entry, to backend: inout Backend, limits: Limits) throws -> AppliedEntry {
        guard case .command(let bytes) = entry.payload else {
            return AppliedEntry(index: entry.index, term: entry.term, result: nil)
        }
        do {
            let command = try KVCommand(decoding: bytes, limits: limits)
            let (result, events) = try KVStateMachine.applyRecording(command, to: &backend, limits: limits)
            return AppliedEntry(index: entry.index, term: entry.term, result: result, events: events)
        } catch let error as DecodingError {
            // Every node fails the same undecodable command the same way.
            return AppliedEntry(index: entry.index, term: entry.term, result: .failure(.invalidCommand("undecodable command: \(error)")))
        }
    }

    private func writeState(_ db: Database, hardState: Raft.HardState, applied: Raft.Index, snapshot: Raft.SnapshotMetadata) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO raft_state(grp, term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(grp) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit_index = excluded.commit_index,
                applied_index = excluded.applied_index, snapshot_index = excluded.snapshot_index,
                snapshot_term = excluded.snapshot_term, snapshot_membership = excluded.snapshot_membership
                """
        ).execute(arguments: [
            group.rawValue, hardState.term, hardState.vote.map { Int64($0.rawValue) }, hardState.commit, applied,
            snapshot.index, snapshot.term, Data(Raft.encode(snapshot.membership)),
        ])
    }

    // MARK: Snapshots and reads

    /// Writes the image from one read transaction, row by row, while commits go on.
    public func prepareSnapshotImage() throws -> (index: Raft.Index, bytes: Int) {
        try guarded {
            try snapshots.prepare { sink in
                try pool.read { db in
                    let applied = try Raft.Index.fetchOne(
                        db, sql: "SELECT applied_index FROM raft_state WHERE grp = ?", arguments: [group.rawValue]) ?? 0
                    var writer = KVSnapshotImage.Writer(into: sink)
                    try SQLiteKVBackend.writeImage(in: db, file: path, group: group, into: &writer)
                    sink = writer.sink
                    return applied
                }
            }
        }
    }

    public func snapshotImageBytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes? {
        try snapshots.bytes(index: index, offset: offset, length: length)
    }

    /// Records the snapshot's metadata in a commit that waits for the disk, and so makes the
    /// applied state through it durable (it is older than this commit); then deletes the log
    /// files that hold only entries through the snapshot. A snapshot recorded since (an
    /// installed one) is never moved back.
    public func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        try otherWrite {
            try durableWrite { db in
                try db.execute(
                    sql: "UPDATE raft_state SET snapshot_index = ?, snapshot_term = ?, snapshot_membership = ? WHERE grp = ? AND snapshot_index < ?",
                    arguments: [metadata.index, metadata.term, Data(Raft.encode(metadata.membership)), group.rawValue, metadata.index])
            }
            try log.compact(through: metadata.index)
        }
    }

    public func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    {
        try guarded {
            try reading { _, backend in
                try KVStateMachine.changes(
                    in: bounds, from: from, through: through, withPrevious: withPrevious, limit: limit, backend: backend)
            }
        }
    }

    public func defragment() throws -> (before: Int64, after: Int64)? {
        try otherWrite {
            let before = fileBytes()
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "VACUUM")
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            }
            return (before, fileBytes())
        }
    }

    /// The database file, its write-ahead log and the log's segments, in bytes.
    public func fileBytes() -> Int64 { Self.fileBytes(at: path) }

    /// The database at `path`, its write-ahead log and the root group's log segments, in bytes
    /// (0 for what does not exist).
    public static func fileBytes(at path: String) -> Int64 {
        ["", "-wal"].compactMap { (try? FileManager.default.attributesOfItem(atPath: path + $0))?[.size] as? Int64 }.reduce(0, +)
            + SegmentedLog.bytes(in: logDirectory(path))
    }

    /// Checkpoints made so far: in the background, finished by the writer (the last few frames
    /// of a background one), and made whole by the writer because the WAL had grown too long
    /// (see `Checkpointer`).
    public var checkpoints: (background: Int, finishedByWriter: Int, wholeByWriter: Int) {
        (
            checkpointer.background.load(ordering: .relaxed), checkpointer.finished.load(ordering: .relaxed),
            checkpointer.fallback.load(ordering: .relaxed)
        )
    }

    public func close() throws {
        try guarded {
            try checkpointer.close()
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
            try pool.close()
            log.close()
            snapshots.close()
        }
    }

    public func revisions() throws -> (current: Revision, compacted: Revision) {
        try guarded {
            try reading { _, backend in (backend.revision(), backend.compactedRevision()) }
        }
    }

    public func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError> {
        try guarded {
            try reading { _, backend in try KVStateMachine.read(request, from: backend, limits: limits) }
        }
    }

    public func leases() throws -> [Lease] {
        try reading { _, backend in try backend.leases() }
    }

    public func earliestLeaseExpiry() throws -> Int64? {
        try guarded { try pool.read { db in try Int64.fetchOne(db.cachedStatement(sql: "SELECT MIN(expires_at_ms) FROM leases")) } }
    }

    public func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])? {
        try guarded {
            try reading { _, backend in try backend.lease(id).map { ($0, try backend.keys(attachedTo: id)) } }
        }
    }

    public var appliedIndex: Raft.Index {
        get throws {
            try guarded {
                try pool.read { db in
                    try Raft.Index.fetchOne(
                        db.cachedStatement(sql: "SELECT applied_index FROM raft_state WHERE grp = ?"), arguments: [group.rawValue]) ?? 0
                }
            }
        }
    }
}
