import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

// The file's schema generations: creating and upgrading the tables, and moving a log kept in the
// database (schema 2 and earlier) into the segment files.
extension SQLiteNodeStorage {
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
        // Tables added since schema 4 are created on opening, as the session tables were: a
        // file without them had none of their rows.
        try SQLiteKVBackend.createSessionTables(db)
        try SQLiteKVBackend.createSystemRecordTable(db)
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

    /// Moves the log of a database written before the log had files of its own (schema 2 and
    /// earlier) into the log files, with its term and vote; then empties `raft_log`. A crash
    /// part-way leaves the rows, and the move runs again.
    func moveLogOutOfDatabase(previousSchema: Int?, logExisted: Bool) throws {
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
}
