import AspenCore
import AspenKV
import Foundation
import GRDB

/// The key-value state in SQLite, read and written inside whatever transaction the caller holds:
/// `kv_current` (one row per live key) serves current reads, `kv_history` (one row per version,
/// NULL value for a deletion) serves reads at past revisions, `leases` and `meta` the rest.
struct SQLiteKVBackend: KVBackend {
    let db: Database
    let file: String
    private var currentRevision: Revision = 0
    private var oldestRevision: Revision = 0
    private var lastLeaseID: LeaseID = 0
    /// Counters change in memory and reach `meta` once, in `flush()`, at the end of a batch.
    private var dirty = false

    let group: GroupID

    init(_ db: Database, file: String, group: GroupID = .root) throws {
        self.db = db
        self.file = file
        self.group = group
        // The counters live in the group's raft_state row: a commit then touches one page for
        // both the hard state and the key-value counters.
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

    // MARK: Reads

    private static let currentColumns = "key, value, create_revision, mod_revision, version, lease"
    private static let historyColumns = "key, value, create_revision, revision, version, lease"

    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue? {
        let statement: RawStatement
        if let revision {
            statement = try RawStatement(
                db, "SELECT \(Self.historyColumns) FROM kv_history WHERE key = ? AND revision <= ? ORDER BY revision DESC LIMIT 1",
                file: file)
            statement.bind(1, key)
            statement.bind(2, revision)
        } else {
            statement = try RawStatement(db, "SELECT \(Self.currentColumns) FROM kv_current WHERE key = ?", file: file)
            statement.bind(1, key)
        }
        defer { statement.finish() }
        guard try statement.step() else { return nil }
        return Self.keyValue(statement)
    }

    static func keyValue(_ statement: RawStatement) -> KeyValue? {
        guard !statement.isNull(1) else { return nil }
        return KeyValue(
            key: statement.bytes(0), value: statement.bytes(1), createRevision: statement.int64(2),
            modRevision: statement.int64(3), version: statement.int64(4), lease: statement.int64(5))
    }

    /// The WHERE clause and arguments selecting `bounds` (and keys after `after`).
    private static func filter(_ bounds: KeyBounds, after: Bytes?, column: String) -> (String, [any DatabaseValueConvertible]) {
        var clauses = ["\(column) >= ?"]
        var arguments: [any DatabaseValueConvertible] = [Data(bounds.start)]
        if let end = bounds.end {
            clauses.append("\(column) < ?")
            arguments.append(Data(end))
        }
        if let after {
            clauses.append("\(column) > ?")
            arguments.append(Data(after))
        }
        return (clauses.joined(separator: " AND "), arguments)
    }

    /// Rows of `kv_history` visible at `revision`: each key's last version at or before it.
    private static let visibleAt =
        "h.revision = (SELECT max(revision) FROM kv_history WHERE key = h.key AND revision <= ?) AND h.value IS NOT NULL"

    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) throws -> [KeyValue] {
        let sql: String
        var arguments: [any DatabaseValueConvertible]
        if let revision {
            let (clause, values) = Self.filter(bounds, after: after, column: "h.key")
            sql = "SELECT \(Self.historyColumns.split(separator: ", ").map { "h.\($0)" }.joined(separator: ", ")) FROM kv_history h WHERE \(clause) AND \(Self.visibleAt) ORDER BY h.key LIMIT ?"
            arguments = values + [revision]
        } else {
            let (clause, values) = Self.filter(bounds, after: after, column: "key")
            sql = "SELECT \(Self.currentColumns) FROM kv_current WHERE \(clause) ORDER BY key LIMIT ?"
            arguments = values
        }
        arguments.append(Int64(min(limit, Int(Int64.max))))
        let statement = try RawStatement(db, sql, file: file)
        defer { statement.finish() }
        for (offset, argument) in arguments.enumerated() {
            let position = Int32(offset + 1)
            if let data = argument as? Data { statement.bind(position, Bytes(data)) } else if let number = argument as? Int64 { statement.bind(position, number) }
        }
        var found: [KeyValue] = []
        while try statement.step() {
            if let kv = Self.keyValue(statement) { found.append(kv) }
        }
        return found
    }

    func count(_ bounds: KeyBounds, at revision: Revision?) throws -> Int {
        let sql: String
        var arguments: [any DatabaseValueConvertible]
        if let revision {
            let (clause, values) = Self.filter(bounds, after: nil, column: "h.key")
            sql = "SELECT count(*) FROM kv_history h WHERE \(clause) AND \(Self.visibleAt)"
            arguments = values + [revision]
        } else {
            let (clause, values) = Self.filter(bounds, after: nil, column: "key")
            sql = "SELECT count(*) FROM kv_current WHERE \(clause)"
            arguments = values
        }
        return try Int.fetchOne(db.cachedStatement(sql: sql), arguments: StatementArguments(arguments)) ?? 0
    }

    func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) throws -> [KVChange] {
        let (clause, values) = Self.filter(bounds, after: nil, column: "key")
        let statement = try RawStatement(
            db,
            "SELECT \(Self.historyColumns) FROM kv_history WHERE \(clause) AND revision >= ? AND revision <= ? ORDER BY revision, key LIMIT ?",
            file: file)
        defer { statement.finish() }
        var position: Int32 = 1
        for value in values {
            statement.bind(position, Bytes(value as! Data))
            position += 1
        }
        statement.bind(position, from)
        statement.bind(position + 1, through)
        statement.bind(position + 2, Int64(min(limit, Int(Int64.max))))
        var found: [KVChange] = []
        while try statement.step() {
            found.append(KVChange(key: statement.bytes(0), revision: statement.int64(3), keyValue: Self.keyValue(statement)))
        }
        return found
    }

    // MARK: Writes

    mutating func write(_ kv: KeyValue) throws {
        let current = try RawStatement(
            db,
            """
            INSERT INTO kv_current(key, value, create_revision, mod_revision, version, lease) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_revision = excluded.create_revision,
            mod_revision = excluded.mod_revision, version = excluded.version, lease = excluded.lease
            """, file: file)
        current.bind(1, kv.key)
        current.bind(2, kv.value)
        current.bind(3, kv.createRevision)
        current.bind(4, kv.modRevision)
        current.bind(5, kv.version)
        current.bind(6, kv.lease)
        try current.run()
        let history = try RawStatement(
            db, "INSERT INTO kv_history(key, revision, value, create_revision, version, lease) VALUES (?, ?, ?, ?, ?, ?)",
            file: file)
        history.bind(1, kv.key)
        history.bind(2, kv.modRevision)
        history.bind(3, kv.value)
        history.bind(4, kv.createRevision)
        history.bind(5, kv.version)
        history.bind(6, kv.lease)
        try history.run()
    }

    mutating func remove(_ key: Bytes, at revision: Revision) throws {
        let delete = try RawStatement(db, "DELETE FROM kv_current WHERE key = ?", file: file)
        delete.bind(1, key)
        try delete.run()
        guard db.changesCount > 0 else { return }
        let history = try RawStatement(
            db, "INSERT INTO kv_history(key, revision, value, create_revision, version, lease) VALUES (?, ?, NULL, 0, 0, 0)",
            file: file)
        history.bind(1, key)
        history.bind(2, revision)
        try history.run()
    }

    mutating func compactHistory(before revision: Revision) throws {
        // Versions older than the one visible at `revision` go; then visible deletions go too.
        try db.execute(
            sql: """
                DELETE FROM kv_history AS h WHERE h.revision <
                (SELECT max(revision) FROM kv_history WHERE key = h.key AND revision <= ?)
                """, arguments: [revision])
        try db.execute(sql: "DELETE FROM kv_history WHERE value IS NULL AND revision <= ?", arguments: [revision])
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
        try db.cachedStatement(
            sql: """
                INSERT INTO leases(id, ttl_ms, expires_at_ms) VALUES (?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET ttl_ms = excluded.ttl_ms, expires_at_ms = excluded.expires_at_ms
                """
        ).execute(arguments: [lease.id, lease.ttlMs, lease.expiresAtMs])
    }

    mutating func deleteLease(_ id: LeaseID) throws {
        try db.cachedStatement(sql: "DELETE FROM leases WHERE id = ?").execute(arguments: [id])
    }

    func keys(attachedTo id: LeaseID) throws -> [Bytes] {
        try Data.fetchAll(db.cachedStatement(sql: "SELECT key FROM kv_current WHERE lease = ? ORDER BY key"), arguments: [id])
            .map { Bytes($0) }
    }

    func expiredLeases(atMs nowMs: Int64) throws -> [LeaseID] {
        try Int64.fetchAll(db.cachedStatement(sql: "SELECT id FROM leases WHERE expires_at_ms <= ? ORDER BY id"), arguments: [nowMs])
    }

    func leaseSequence() -> LeaseID { lastLeaseID }

    mutating func setLeaseSequence(_ id: LeaseID) {
        lastLeaseID = id
        dirty = true
    }

    /// Replaces the whole state by a snapshot's; its revision becomes the oldest readable one.
    static func install(_ snapshot: KVSnapshot, into db: Database, file: String, group: GroupID) throws {
        try db.execute(sql: "DELETE FROM kv_current; DELETE FROM kv_history; DELETE FROM leases;")
        var backend = try SQLiteKVBackend(db, file: file, group: group)
        for kv in snapshot.keyValues { try backend.write(kv) }
        for lease in snapshot.leases { try backend.saveLease(lease) }
        backend.setRevision(snapshot.revision)
        backend.setCompactedRevision(snapshot.revision)
        backend.setLeaseSequence(snapshot.leaseSequence)
        try backend.flush()
    }
}
