import AspenCore
import AspenKV
import Foundation
import GRDB

/// The key-value state in SQLite, read and written inside whatever transaction the caller holds.
/// `kv_history` has one row per change (a version, or a deletion with a NULL value), keyed by
/// revision, so a commit appends to the end of one B-tree instead of touching a page per key;
/// each row names the key's previous change (`prev_revision`). Which change of a key a read
/// sees is found in memory (`KeyIndex`), and the row is fetched by its revision. `leases`, the
/// session tables, `system_records` and the counters hold the rest.
struct SQLiteKVBackend: KVBackend {
    let db: Database
    let file: String
    let index: KeyIndex
    /// The writer sees its own uncommitted changes; a reader sees what its snapshot holds.
    let writer: Bool
    var currentRevision: Revision = 0
    var oldestRevision: Revision = 0
    var lastLeaseID: LeaseID = 0
    /// Counters change in memory and reach `meta` once, in `flush()`, at the end of a batch.
    var dirty = false
    /// The revision compacted in this transaction: the index drops the changes once it commits.
    var compactedInTransaction: Revision?
    /// The running command's scope (see `SQLiteKVBackend+Commands.swift`); nil outside a command.
    var command: Command?

    let group: GroupID

    init(_ db: Database, file: String, group: GroupID = .root, index: KeyIndex, writer: Bool = false) throws {
        self.db = db
        self.file = file
        self.group = group
        self.index = index
        self.writer = writer
        // The counters live in the group's raft_state row: a commit then touches one page for
        // both the hard state and the key-value counters. Reading it starts a reader's snapshot.
        let statement = try RawStatement(
            db, "SELECT revision, compacted_revision, lease_sequence FROM raft_state WHERE grp = ?", file: file)
        statement.bind(1, Int64(group.rawValue))
        if try statement.step() {
            currentRevision = statement.int64(0)
            oldestRevision = statement.int64(1)
            lastLeaseID = statement.int64(2)
        }
        statement.finish()
    }

    /// Writes the counters changed since the last flush. Call before the transaction commits.
    mutating func flush() throws {
        guard dirty else { return }
        let statement = try RawStatement(
            db, "UPDATE raft_state SET revision = ?, compacted_revision = ?, lease_sequence = ? WHERE grp = ?", file: file)
        statement.bind(1, currentRevision)
        statement.bind(2, oldestRevision)
        statement.bind(3, lastLeaseID)
        statement.bind(4, Int64(group.rawValue))
        try statement.run()
        dirty = false
    }

    func revision() -> Revision { currentRevision }
    func compactedRevision() -> Revision { oldestRevision }

    mutating func setRevision(_ revision: Revision) {
        currentRevision = revision
        dirty = true
    }

    mutating func setCompactedRevision(_ revision: Revision) {
        oldestRevision = revision
        dirty = true
    }

    /// The revision a read of "now" sees: everything for the writer, the snapshot's for a reader.
    private func now(_ revision: Revision?) -> Revision {
        revision ?? (writer ? .max : currentRevision)
    }

    // MARK: Reads

    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue? {
        guard let (change, kept) = try index.change(key, at: now(revision)) else { return nil }
        return try kept ?? version(of: key, at: change.revision)
    }

    /// The row of the key's change at `revision`; a missing one means a damaged file.
    private func version(of key: Bytes, at revision: Revision, using statement: RawStatement? = nil) throws -> KeyValue? {
        guard let found = try row(of: key, at: revision, using: statement) else {
            throw StorageError.corrupted(file: file, detail: "the version of a key at revision \(revision) is missing from kv_history")
        }
        return found
    }

    /// Looks up one change of a key by its primary key. Prepare it once for many lookups.
    private func rowStatement() throws -> RawStatement {
        try RawStatement(
            db, "SELECT key, value, create_revision, revision, version, lease FROM kv_history WHERE revision = ? AND key = ?", file: file)
    }

    /// The key's change at `revision`: nil if there is no such row, .some(nil) for a deletion.
    private func row(of key: Bytes, at revision: Revision, using prepared: RawStatement? = nil) throws -> KeyValue?? {
        let statement = try prepared ?? rowStatement()
        defer { statement.finish() }
        statement.bind(1, revision)
        statement.bind(2, key)
        guard try statement.step() else { return nil }
        return .some(Self.keyValue(statement))
    }

    static func keyValue(_ statement: RawStatement) -> KeyValue? {
        guard !statement.isNull(1) else { return nil }
        return KeyValue(
            key: statement.bytes(0), value: statement.bytes(1), createRevision: statement.int64(2),
            modRevision: statement.int64(3), version: statement.int64(4), lease: statement.int64(5))
    }

    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) throws -> [KeyValue] {
        try scan(bounds, at: revision, after: after, limit: limit, bytesMax: .max).found
    }

    /// The keys come from the index; each value is read only while the page has room for it.
    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int, bytesMax: Int) throws -> (found: [KeyValue], cut: Bool) {
        let live = try index.live(in: bounds, after: after, at: now(revision), limit: limit)
        let statement = try rowStatement()
        var found: [KeyValue] = []
        var bytes = 0
        for (key, change, kept) in live {
            guard let keyValue = try kept ?? version(of: key, at: change.revision, using: statement) else { continue }
            bytes += keyValue.key.count + keyValue.value.count
            if bytes > bytesMax && !found.isEmpty { return (found, true) }
            found.append(keyValue)
        }
        return (found, false)
    }

    func count(_ bounds: KeyBounds, at revision: Revision?) throws -> Int {
        try index.count(in: bounds, at: now(revision))
    }

    func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) throws -> [KVChange] {
        var clauses = ["key >= ?"]
        var keys = [bounds.start]
        if let end = bounds.end {
            clauses.append("key < ?")
            keys.append(end)
        }
        let statement = try RawStatement(
            db,
            """
            SELECT key, value, create_revision, revision, version, lease, prev_revision FROM kv_history
            WHERE revision >= ? AND revision <= ? AND \(clauses.joined(separator: " AND ")) ORDER BY revision, key LIMIT ?
            """,
            file: file)
        defer { statement.finish() }
        statement.bind(1, from)
        statement.bind(2, through)
        for (offset, key) in keys.enumerated() { statement.bind(Int32(offset + 3), key) }
        statement.bind(Int32(keys.count + 3), Int64(min(limit, Int(Int64.max))))
        var found: [KVChange] = []
        while try statement.step() {
            found.append(
                KVChange(
                    key: statement.bytes(0), revision: statement.int64(3), keyValue: Self.keyValue(statement),
                    previousRevision: statement.int64(6)))
        }
        return found
    }

    /// One lookup by the change's own pointer: a watch replaying a hot key's history with
    /// previous values stays linear. A missing row at or below the compacted revision was a
    /// deletion that compaction removed (the key did not exist then).
    func previous(of change: KVChange) throws -> KeyValue? {
        guard let before = change.previousRevision else { return try get(change.key, at: change.revision - 1) }
        guard before > 0 else { return nil }
        if let found = try row(of: change.key, at: before) { return found }
        guard before <= oldestRevision else { return try version(of: change.key, at: before) }
        return nil
    }

    // MARK: Writes

    /// Adds the change to the index and its row to `kv_history`. Should the insert fail, the
    /// transaction rolls back and the store reads the index again from the file.
    private mutating func record(_ key: Bytes, at revision: Revision, _ kv: KeyValue?) throws {
        let change = KeyIndex.Change(revision: revision, lease: kv?.lease ?? 0, deleted: kv == nil)
        let previous = index.record(key, change, version: kv)?.revision ?? 0
        noteUndo(.recorded(key: key, revision: revision))
        let history = try RawStatement(
            db,
            """
            INSERT INTO kv_history(revision, key, value, create_revision, version, lease, prev_revision, jump_revision, jump_depth)
            VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)
            """,
            file: file)
        history.bind(1, revision)
        history.bind(2, key)
        if let kv { history.bind(3, kv.value) } else { history.bindNull(3) }
        history.bind(4, kv?.createRevision ?? 0)
        history.bind(5, kv?.version ?? 0)
        history.bind(6, kv?.lease ?? 0)
        history.bind(7, previous)
        try history.run()
    }

    mutating func write(_ kv: KeyValue) throws {
        try record(kv.key, at: kv.modRevision, kv)
    }

    mutating func remove(_ key: Bytes, at revision: Revision) throws {
        guard let last = index.last(key), !last.deleted else { return }
        try record(key, at: revision, nil)
    }

    mutating func compactHistory(before revision: Revision) throws {
        try openSavepointIfNeeded()
        // A version is superseded at `revision` when a later one at or before it points back to
        // it, and a deletion at or before it is what reads there see: both go. Changes at or
        // before the last compaction were dealt with then, so only the revisions since are
        // read, in the history's own order. The index follows once this commits.
        let since = "revision > ? AND revision <= ?"
        let bounds: StatementArguments = [oldestRevision, revision]
        try db.execute(
            sql: "DELETE FROM kv_history WHERE (revision, key) IN (SELECT prev_revision, key FROM kv_history WHERE \(since) AND prev_revision > 0)",
            arguments: bounds)
        try db.execute(sql: "DELETE FROM kv_history WHERE \(since) AND value IS NULL", arguments: bounds)
        compactedInTransaction = revision
    }

    /// Every key's changes as `kv_history` holds them, for `KeyIndex`.
    static func changes(in db: Database, file: String) throws -> [Bytes: [KeyIndex.Change]] {
        let statement = try RawStatement(db, "SELECT key, revision, lease, value IS NULL FROM kv_history ORDER BY revision, key", file: file)
        defer { statement.finish() }
        var changes: [Bytes: [KeyIndex.Change]] = [:]
        while try statement.step() {
            changes[statement.bytes(0), default: []].append(
                KeyIndex.Change(revision: statement.int64(1), lease: statement.int64(2), deleted: statement.int64(3) != 0))
        }
        return changes
    }

    // MARK: Client sessions

    func clientSession(_ id: UInt64) throws -> ClientSessionRecord? {
        let statement = try RawStatement(db, "SELECT last_seen_ms, acknowledged_through FROM client_sessions WHERE id = ?", file: file)
        defer { statement.finish() }
        statement.bind(1, Int64(bitPattern: id))
        guard try statement.step() else { return nil }
        return ClientSessionRecord(id: id, lastSeenMs: statement.int64(0), acknowledgedThrough: UInt64(bitPattern: statement.int64(1)))
    }

    mutating func saveClientSession(_ session: ClientSessionRecord, previous: ClientSessionRecord?) throws {
        noteUndo(.session(id: session.id, previous: previous))
        if let previous, previous.lastSeenMs == session.lastSeenMs {
            // Most writes move only the acknowledged sequence: the expiry index stays untouched.
            let statement = try RawStatement(db, "UPDATE client_sessions SET acknowledged_through = ? WHERE id = ?", file: file)
            statement.bind(1, Int64(bitPattern: session.acknowledgedThrough))
            statement.bind(2, Int64(bitPattern: session.id))
            return try statement.run()
        }
        let statement = try RawStatement(
            db,
            """
            INSERT INTO client_sessions(id, last_seen_ms, acknowledged_through) VALUES (?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, acknowledged_through = excluded.acknowledged_through
            """,
            file: file)
        statement.bind(1, Int64(bitPattern: session.id))
        statement.bind(2, session.lastSeenMs)
        statement.bind(3, Int64(bitPattern: session.acknowledgedThrough))
        try statement.run()
    }

    mutating func removeClientSession(_ id: UInt64) throws {
        try openSavepointIfNeeded()
        try db.execute(sql: "DELETE FROM client_sessions WHERE id = ?", arguments: [Int64(bitPattern: id)])
        try db.execute(sql: "DELETE FROM client_results WHERE session = ?", arguments: [Int64(bitPattern: id)])
    }

    func clientSessionCount() throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM client_sessions")) ?? 0
    }

    func clientSessions(lastSeenBeforeMs ms: Int64, limit: Int) throws -> [UInt64] {
        try Int64.fetchAll(
            db.cachedStatement(sql: "SELECT id FROM client_sessions WHERE last_seen_ms < ? ORDER BY last_seen_ms, id LIMIT ?"),
            arguments: [ms, Int64(limit)]
        ).map { UInt64(bitPattern: $0) }
    }

    func sessionResult(_ id: UInt64, sequence: UInt64) throws -> Bytes? {
        let statement = try RawStatement(db, "SELECT result FROM client_results WHERE session = ? AND sequence = ?", file: file)
        defer { statement.finish() }
        statement.bind(1, Int64(bitPattern: id))
        statement.bind(2, Int64(bitPattern: sequence))
        return try statement.step() ? statement.bytes(0) : nil
    }

    mutating func saveSessionResult(_ id: UInt64, sequence: UInt64, _ result: Bytes) throws {
        noteUndo(.result(session: id, sequence: sequence))
        let statement = try RawStatement(db, "INSERT INTO client_results(session, sequence, result) VALUES (?, ?, ?)", file: file)
        statement.bind(1, Int64(bitPattern: id))
        statement.bind(2, Int64(bitPattern: sequence))
        statement.bind(3, result)
        try statement.run()
    }

    mutating func dropSessionResults(_ id: UInt64, through sequence: UInt64) throws {
        if needsUndo {
            // Usually the one result the client has just acknowledged: kept to put back.
            let dropped = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT sequence, result FROM client_results WHERE session = ? AND sequence <= ?"),
                arguments: [Int64(bitPattern: id), Int64(bitPattern: sequence)]
            ).map { (sequence: UInt64(bitPattern: $0[0] as Int64), result: Bytes($0[1] as Data)) }
            noteUndo(.dropped(session: id, results: dropped))
        }
        let statement = try RawStatement(db, "DELETE FROM client_results WHERE session = ? AND sequence <= ?", file: file)
        statement.bind(1, Int64(bitPattern: id))
        statement.bind(2, Int64(bitPattern: sequence))
        try statement.run()
    }

    func clientSessionStates() throws -> [ClientSessionState] {
        var results: [UInt64: [(sequence: UInt64, result: Bytes)]] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT session, sequence, result FROM client_results") {
            results[UInt64(bitPattern: row[0]), default: []].append((UInt64(bitPattern: row[1]), Bytes(row[2] as Data)))
        }
        return try Row.fetchAll(db, sql: "SELECT id, last_seen_ms, acknowledged_through FROM client_sessions").map { row in
            let id = UInt64(bitPattern: row[0])
            return ClientSessionState(
                record: ClientSessionRecord(id: id, lastSeenMs: row[1], acknowledgedThrough: UInt64(bitPattern: row[2])),
                results: (results[id] ?? []).sorted { $0.sequence < $1.sequence })
        }.sorted { $0.record.id < $1.record.id }
    }

    /// The session tables: one row per client session, one per result it keeps.
    static func createSessionTables(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE IF NOT EXISTS client_sessions (
                    id INTEGER PRIMARY KEY, last_seen_ms INTEGER NOT NULL, acknowledged_through INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS client_sessions_seen ON client_sessions(last_seen_ms, id);
                CREATE TABLE IF NOT EXISTS client_results (
                    session INTEGER NOT NULL, sequence INTEGER NOT NULL, result BLOB NOT NULL,
                    PRIMARY KEY (session, sequence)) WITHOUT ROWID;
                """)
    }

    // MARK: Leases

    func lease(_ id: LeaseID) throws -> Lease? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT id, ttl_ms, expires_at_ms FROM leases WHERE id = ?"), arguments: [id])
            .map { Lease(id: $0[0], ttlMs: $0[1], expiresAtMs: $0[2]) }
    }

    func leases() throws -> [Lease] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT id, ttl_ms, expires_at_ms FROM leases ORDER BY id"))
            .map { Lease(id: $0[0], ttlMs: $0[1], expiresAtMs: $0[2]) }
    }

    mutating func saveLease(_ lease: Lease) throws {
        try openSavepointIfNeeded()
        try db.cachedStatement(
            sql: """
                INSERT INTO leases(id, ttl_ms, expires_at_ms) VALUES (?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET ttl_ms = excluded.ttl_ms, expires_at_ms = excluded.expires_at_ms
                """
        ).execute(arguments: [lease.id, lease.ttlMs, lease.expiresAtMs])
    }

    mutating func deleteLease(_ id: LeaseID) throws {
        try openSavepointIfNeeded()
        try db.cachedStatement(sql: "DELETE FROM leases WHERE id = ?").execute(arguments: [id])
    }

    func keys(attachedTo id: LeaseID) throws -> [Bytes] {
        try index.keys(attachedTo: id, at: now(nil))
    }

    func expiredLeases(atMs nowMs: Int64) throws -> [LeaseID] {
        try Int64.fetchAll(db.cachedStatement(sql: "SELECT id FROM leases WHERE expires_at_ms <= ? ORDER BY id"), arguments: [nowMs])
    }

    func leaseSequence() -> LeaseID { lastLeaseID }

    mutating func setLeaseSequence(_ id: LeaseID) {
        lastLeaseID = id
        dirty = true
    }
}

// MARK: System records

extension SQLiteKVBackend {
    /// One row per system record, outside `kv_history` and the key index: nothing that reads
    /// or writes keys reaches it. Names compare as SQLite compares blobs (byte order, then
    /// length), which is the keys' order.
    static func createSystemRecordTable(_ db: Database) throws {
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS system_records (name BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    }

    func systemRecord(_ name: Bytes) throws -> Bytes? {
        let statement = try RawStatement(db, "SELECT value FROM system_records WHERE name = ?", file: file)
        defer { statement.finish() }
        statement.bind(1, name)
        return try statement.step() ? statement.bytes(0) : nil
    }

    func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] {
        let end = KeyBounds.prefixEnd(prefix)
        let statement = try RawStatement(
            db, "SELECT name, value FROM system_records WHERE name >= ?\(end == nil ? "" : " AND name < ?") ORDER BY name", file: file)
        defer { statement.finish() }
        statement.bind(1, prefix)
        if let end { statement.bind(2, end) }
        var found: [(name: Bytes, value: Bytes)] = []
        while try statement.step() { found.append((statement.bytes(0), statement.bytes(1))) }
        return found
    }

    /// System writes are rare: the SAVEPOINT undoes them rather than a list of inverses.
    mutating func setSystemRecord(_ name: Bytes, to value: Bytes) throws {
        try openSavepointIfNeeded()
        let statement = try RawStatement(
            db, "INSERT INTO system_records(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", file: file)
        statement.bind(1, name)
        statement.bind(2, value)
        try statement.run()
    }

    mutating func removeSystemRecord(_ name: Bytes) throws {
        try openSavepointIfNeeded()
        let statement = try RawStatement(db, "DELETE FROM system_records WHERE name = ?", file: file)
        statement.bind(1, name)
        try statement.run()
    }

    func systemRecordCount() throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM system_records")) ?? 0
    }
}
