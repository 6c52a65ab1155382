import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

/// A node's whole durable state in one SQLite file (WAL mode, `synchronous=FULL`): the Raft log
/// with a checksum per entry, the hard state, snapshot metadata and membership, and the
/// key-value state machine. One `commit` is one write transaction and so one fsync, however many
/// entries it holds.
public final class SQLiteNodeStorage: NodeStorage {
    public let path: String
    public let group: GroupID
    let pool: DatabasePool
    let checkpointer: Checkpointer
    let limits: Limits
    /// The term and vote of the last fsynced commit (nil until the first).
    private let lastDurable = Mutex<Raft.HardState?>(nil)

    /// Opens (creating if needed) the database at `path`. Refuses a file that is not a usable
    /// Aspen database, one that fails SQLite's integrity check, or a connection that would not
    /// fsync on commit.
    public init(path: String, group: GroupID = .root, limits: Limits = .standard, verify: Bool = true) throws {
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
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.writeWithoutTransaction { db in
                // GRDB leaves WAL connections at synchronous=NORMAL, which does not fsync on commit.
                try db.execute(sql: "PRAGMA synchronous = FULL")
                let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
                guard level == 2 else {
                    throw StorageError.durabilityNotGuaranteed(
                        file: path, detail: "SQLite synchronous is \(level ?? -1), not FULL (2); refusing to run")
                }
                if verify {
                    let verdict = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
                    guard verdict == "ok" else { throw StorageError.corrupted(file: path, detail: verdict) }
                }
                try db.inTransaction {
                    try Self.migrate(db, file: path)
                    return .commit
                }
            }
            checkpointer = try Checkpointer(path: path, frames: Int32(Self.checkpointPages))
            pool.writeWithoutTransaction { db in checkpointer.install(on: db) }
        } catch let error as StorageError {
            throw error
        } catch let error as DatabaseError {
            throw Self.translate(error, file: path)
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

    static let schemaVersion = 2

    static func migrate(_ db: Database, file: String) throws {
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
        let hasKeyValues = try db.tableExists("kv_current")
        if version == 1 && hasKeyValues {
            try migrateHistoryToRevisionOrder(db)
        } else if !hasKeyValues {
            try createKeyValueTables(db)
        }
        try db.execute(sql: "INSERT INTO meta(name, value) VALUES ('schema_version', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", arguments: [schemaVersion])
    }

    /// Schema 2: deleted keys keep a current row until compaction, and history is keyed by
    /// revision with a pointer to the key's previous change (see `SQLiteKVBackend`).
    static func createKeyValueTables(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE kv_current (
                    key BLOB PRIMARY KEY, value BLOB, create_revision INTEGER NOT NULL,
                    mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,
                    chain_depth INTEGER NOT NULL, jump_revision INTEGER NOT NULL, jump_depth INTEGER NOT NULL,
                    jump2_revision INTEGER NOT NULL, jump2_depth INTEGER NOT NULL) WITHOUT ROWID;
                CREATE INDEX kv_current_lease ON kv_current(lease) WHERE lease != 0;
                CREATE TABLE kv_history (
                    revision INTEGER NOT NULL, key BLOB NOT NULL, value BLOB, create_revision INTEGER NOT NULL,
                    version INTEGER NOT NULL, lease INTEGER NOT NULL, prev_revision INTEGER NOT NULL,
                    jump_revision INTEGER NOT NULL, jump_depth INTEGER NOT NULL,
                    PRIMARY KEY (revision, key)) WITHOUT ROWID;
                """)
    }

    /// Schema 1 kept history keyed by (key, revision) and dropped a deleted key's current row.
    /// Rewrites both tables into schema 2 inside the opening transaction.
    static func migrateHistoryToRevisionOrder(_ db: Database) throws {
        try db.execute(
            sql: """
                DROP INDEX IF EXISTS kv_current_lease;
                ALTER TABLE kv_current RENAME TO kv_current_v1;
                ALTER TABLE kv_history RENAME TO kv_history_v1;
                """)
        try createKeyValueTables(db)
        try db.execute(
            sql: """
                CREATE TEMP TABLE numbered AS
                SELECT *, coalesce(lag(revision, 1) OVER w, 0) AS p1, coalesce(lag(revision, 2) OVER w, 0) AS p2,
                    row_number() OVER w AS depth, lead(revision) OVER w IS NULL AS last
                FROM kv_history_v1 WINDOW w AS (PARTITION BY key ORDER BY revision);
                INSERT INTO kv_history(revision, key, value, create_revision, version, lease, prev_revision, jump_revision, jump_depth)
                SELECT revision, key, value, create_revision, version, lease, p1, p1, (depth - 1) * (p1 > 0) FROM numbered;
                -- Each key's last change is its current row: its live version (schema 1 kept it
                -- in history as well), or the deletion that ended it.
                INSERT INTO kv_current(key, value, create_revision, mod_revision, version, lease, chain_depth, jump_revision,
                    jump_depth, jump2_revision, jump2_depth)
                SELECT key, value, create_revision, revision, version, lease, depth, p1, (depth - 1) * (p1 > 0), p2, (depth - 2) * (p2 > 0)
                FROM numbered WHERE last;
                DROP TABLE numbered;
                DROP TABLE kv_current_v1;
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
            let hardState = Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2])
            let applied: Raft.Index = row[3]
            var metadata = Raft.SnapshotMetadata(index: row[4], term: row[5], membership: membership)
            var entries = try readEntries(after: metadata.index)
            var data: [UInt8] = []
            if metadata.index > 0 {
                // Only the state as of `applied` exists: re-snapshot there so the snapshot Raft
                // may send is the true state at its index.
                let fresh = try resnapshot(applied: applied, metadata: metadata, entries: entries)
                metadata = fresh.metadata
                data = fresh.data
                entries.removeAll { $0.index <= metadata.index }
            }
            return Raft.PersistentState(
                hardState: hardState, snapshot: Raft.Snapshot(metadata: metadata, data: data), entries: entries,
                appliedIndex: applied)
        }
    }

    /// Reads the log after `index`, verifying every checksum and that no entry is missing.
    func readEntries(after index: Raft.Index) throws -> [Raft.Entry] {
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

    private func resnapshot(applied: Raft.Index, metadata: Raft.SnapshotMetadata, entries: [Raft.Entry]) throws
        -> Raft.Snapshot
    {
        var membership = metadata.membership
        var term = metadata.term
        for entry in entries where entry.index <= applied {
            term = entry.term
            if case .membership(let next) = entry.payload { membership = next }
        }
        let (index, data) = try snapshotData()
        guard index == applied else {
            throw StorageError.corrupted(file: path, detail: "applied index changed while loading")
        }
        let fresh = Raft.SnapshotMetadata(index: applied, term: term, membership: membership)
        if applied > metadata.index { try compacted(fresh) }
        return Raft.Snapshot(metadata: fresh, data: data)
    }

    public func bootstrap(_ state: Raft.PersistentState) throws {
        try guarded {
            try pool.write { db in
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
                    let logged = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM raft_log WHERE grp = ?", arguments: [group.rawValue]) ?? 0
                    let counters: [Int64] = [term, applied, snapshotIndex, Int64(logged)]
                    let untouched = vote == nil && counters.allSatisfy { $0 == 0 } && membership?.isEmpty == true
                    guard untouched else {
                        throw StorageError.invalidBatch("\(path) already holds group \(group.rawValue); refusing to bootstrap over it")
                    }
                }
                try writeState(
                    db, hardState: state.hardState, applied: state.appliedIndex, snapshot: state.snapshot.metadata)
                try appendEntries(db, state.entries)
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
            if !appliesOnly(batch) {
                let results = try pool.write { db in try apply(batch, in: db, known: known) }
                if let state = batch.hardState { lastDurable.withLock { $0 = state } }
                return results
            }
            return try pool.writeWithoutTransaction { db in
                try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
                var results: [AppliedEntry] = []
                let outcome = Result {
                    try db.inTransaction {
                        results = try apply(batch, in: db, known: known)
                        return .commit
                    }
                }
                // Back to FULL before anything else commits; if that fails, the store stops.
                try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
                try outcome.get()
                return results
            }
        }
    }

    /// A batch that only applies committed entries (and moves the commit index) needs no fsync
    /// of its own: the entries are already durable in the log, so after a power loss they are
    /// applied again. The next batch that writes entries, a term or a vote fsyncs the WAL, and
    /// with it every commit before it, so nothing after a durable commit can be lost. Everything
    /// else is committed with synchronous=FULL.
    private func appliesOnly(_ batch: StorageBatch) -> Bool {
        guard batch.entries.isEmpty, batch.snapshot == nil else { return false }
        guard let state = batch.hardState else { return true }
        guard let durable = lastDurable.withLock({ $0 }) else { return false }
        return state.term == durable.term && state.vote == durable.vote
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

    private func apply(_ batch: StorageBatch, in db: Database, known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry] {
        // Statements run on every commit are prepared once per connection (cached): preparing
        // costs more than running them.
        guard let row = try Row.fetchOne(
            db.cachedStatement(
                sql: "SELECT term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership FROM raft_state WHERE grp = ?"),
            arguments: [group.rawValue])
        else { throw StorageError.invalidBatch("group \(group.rawValue) was never bootstrapped in \(path)") }
        var hardState = Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2])
        var applied: Raft.Index = row[3]
        var snapshot = Raft.SnapshotMetadata(
            index: row[4], term: row[5], membership: (try? Raft.decodeMembership(Bytes(row[6] as Data))) ?? Raft.Membership())
        if let installed = batch.snapshot {
            let state: KVSnapshot
            do {
                state = try KVSnapshot(decoding: installed.data, limits: limits)
            } catch {
                throw StorageError.undecodable(file: path, what: "snapshot \(installed.metadata.index)", detail: "\(error)")
            }
            try SQLiteKVBackend.install(state, into: db, file: path, group: group)
            try db.execute(sql: "DELETE FROM raft_log WHERE grp = ?", arguments: [group.rawValue])
            snapshot = installed.metadata
            applied = installed.metadata.index
        }
        if let first = batch.entries.first {
            try db.cachedStatement(sql: "DELETE FROM raft_log WHERE grp = ? AND idx >= ?").execute(arguments: [group.rawValue, first.index])
            try appendEntries(db, batch.entries)
        }
        if let state = batch.hardState { hardState = state }
        var results: [AppliedEntry] = []
        if !batch.committedEntries.isEmpty {
            var backend = try SQLiteKVBackend(db, file: path, group: group)
            for entry in batch.committedEntries where entry.index > applied {
                guard entry.index == applied + 1 else {
                    throw StorageError.invalidBatch("entry \(entry.index) applied after \(applied)")
                }
                results.append(try Self.applyEntry(entry, to: &backend, limits: limits))
                applied = entry.index
            }
            try backend.flush()
        }
        known(results)
        try writeState(db, hardState: hardState, applied: applied, snapshot: snapshot)
        return results
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

    private func appendEntries(_ db: Database, _ entries: [Raft.Entry]) throws {
        for entry in entries {
            let statement = try RawStatement(
                db, "INSERT INTO raft_log(grp, idx, term, payload, checksum) VALUES (?, ?, ?, ?, ?)", file: path)
            let payload = entry.payload.encoded()
            statement.bind(1, Int64(group.rawValue))
            statement.bind(2, Int64(entry.index))
            statement.bind(3, Int64(entry.term))
            statement.bind(4, payload)
            statement.bind(5, Int64(Raft.Entry.checksum(index: entry.index, term: entry.term, payload: payload)))
            try statement.run()
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

    public func snapshotData() throws -> (index: Raft.Index, data: [UInt8]) {
        try guarded {
            try pool.read { db in
                let applied = try Raft.Index.fetchOne(
                    db, sql: "SELECT applied_index FROM raft_state WHERE grp = ?", arguments: [group.rawValue]) ?? 0
                return (applied, try KVSnapshot.capture(from: SQLiteKVBackend(db, file: path, group: group)).encoded())
            }
        }
    }

    /// The snapshot's metadata is recorded first; the log prefix then goes in transactions of
    /// at most `compactionRowsPerTransaction` rows, so that the writes committing meanwhile
    /// wait for one short delete at a time, never for the whole prefix. Rows left by a crash
    /// part-way lie below the snapshot, where nothing reads them, and go with the next
    /// compaction. A snapshot recorded since (an installed one) is never moved back.
    public func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        try otherWrite {
            try pool.write { db in
                try db.execute(
                    sql: "UPDATE raft_state SET snapshot_index = ?, snapshot_term = ?, snapshot_membership = ? WHERE grp = ? AND snapshot_index < ?",
                    arguments: [metadata.index, metadata.term, Data(Raft.encode(metadata.membership)), group.rawValue, metadata.index])
            }
            var deleted = 0
            repeat {
                deleted = try pool.write { db in
                    try db.execute(
                        sql: """
                            DELETE FROM raft_log WHERE grp = ? AND idx <= ?
                            AND idx < (SELECT MIN(idx) FROM raft_log WHERE grp = ?) + ?
                            """,
                        arguments: [group.rawValue, metadata.index, group.rawValue, Self.compactionRowsPerTransaction])
                    return db.changesCount
                }
            } while deleted > 0
        }
    }

    static let compactionRowsPerTransaction = 4096

    public func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    {
        try guarded {
            try pool.read { db in
                try KVStateMachine.changes(
                    in: bounds, from: from, through: through, withPrevious: withPrevious, limit: limit,
                    backend: SQLiteKVBackend(db, file: path, group: group))
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

    /// The database file and its write-ahead log, in bytes.
    public func fileBytes() -> Int64 { Self.fileBytes(at: path) }

    /// The database at `path` and its write-ahead log, in bytes (0 for what does not exist).
    public static func fileBytes(at path: String) -> Int64 {
        ["", "-wal"].compactMap { (try? FileManager.default.attributesOfItem(atPath: path + $0))?[.size] as? Int64 }.reduce(0, +)
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
        }
    }

    public func revisions() throws -> (current: Revision, compacted: Revision) {
        try guarded {
            try pool.read { db in
                let backend = try SQLiteKVBackend(db, file: path, group: group)
                return (backend.revision(), backend.compactedRevision())
            }
        }
    }

    public func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError> {
        try guarded {
            try pool.read { db in try KVStateMachine.read(request, from: SQLiteKVBackend(db, file: path, group: group), limits: limits) }
        }
    }

    public func leases() throws -> [Lease] {
        try guarded { try pool.read { db in try SQLiteKVBackend(db, file: path, group: group).leases() } }
    }

    public func earliestLeaseExpiry() throws -> Int64? {
        try guarded { try pool.read { db in try Int64.fetchOne(db.cachedStatement(sql: "SELECT MIN(expires_at_ms) FROM leases")) } }
    }

    public func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])? {
        try guarded {
            try pool.read { db in
                let backend = try SQLiteKVBackend(db, file: path, group: group)
                return try backend.lease(id).map { ($0, try backend.keys(attachedTo: id)) }
            }
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
