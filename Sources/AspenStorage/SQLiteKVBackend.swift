import AspenCore
import AspenKV
import Foundation
import GRDB

/// The key-value state in SQLite, read and written inside whatever transaction the caller holds:
/// `kv_current` (one row per live key) serves current reads, `kv_history` (one row per version,
/// NULL value for a deletion) serves reads at past revisions, `leases` and `meta` the rest.
struct SQLiteKVBackend: KVBackend {
    let db: Database
    private var currentRevision: Revision
    private var oldestRevision: Revision
    private var lastLeaseID: LeaseID

    init(_ db: Database) throws {
        self.db = db
        currentRevision = try Self.meta(db, "revision")
        oldestRevision = try Self.meta(db, "compacted_revision")
        lastLeaseID = try Self.meta(db, "lease_sequence")
    }

    static func meta(_ db: Database, _ name: String) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM meta WHERE name = ?"), arguments: [name]) ?? 0
    }

    static func setMeta(_ db: Database, _ name: String, _ value: Int64) throws {
        try db.cachedStatement(
            sql: "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"
        ).execute(arguments: [name, value])
    }

    func revision() -> Revision { currentRevision }
    func compactedRevision() -> Revision { oldestRevision }

    mutating func setRevision(_ revision: Revision) throws {
        try Self.setMeta(db, "revision", revision)
        currentRevision = revision
    }

    mutating func setCompactedRevision(_ revision: Revision) throws {
        try Self.setMeta(db, "compacted_revision", revision)
        oldestRevision = revision
    }

    // MARK: Reads

    private static let currentColumns = "key, value, create_revision, mod_revision, version, lease"
    private static let historyColumns = "key, value, create_revision, revision, version, lease"

    static func keyValue(_ row: Row) -> KeyValue? {
        guard let value = row[1] as Data? else { return nil }
        return KeyValue(
            key: Bytes(row[0] as Data), value: Bytes(value), createRevision: row[2], modRevision: row[3], version: row[4],
            lease: row[5])
    }

    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue? {
        let row: Row?
        if let revision {
            row = try Row.fetchOne(
                db.cachedStatement(
                    sql: "SELECT \(Self.historyColumns) FROM kv_history WHERE key = ? AND revision <= ? ORDER BY revision DESC LIMIT 1"),
                arguments: [Data(key), revision])
        } else {
            row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT \(Self.currentColumns) FROM kv_current WHERE key = ?"), arguments: [Data(key)])
        }
        return row.flatMap(Self.keyValue)
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
        let cursor = try Row.fetchCursor(db.cachedStatement(sql: sql), arguments: StatementArguments(arguments))
        var found: [KeyValue] = []
        while let row = try cursor.next() {
            if let kv = Self.keyValue(row) { found.append(kv) }
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

    // MARK: Writes

    mutating func write(_ kv: KeyValue) throws {
        let key = Data(kv.key)
        let value = Data(kv.value)
        try db.cachedStatement(
            sql: """
                INSERT INTO kv_current(key, value, create_revision, mod_revision, version, lease) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_revision = excluded.create_revision,
                mod_revision = excluded.mod_revision, version = excluded.version, lease = excluded.lease
                """
        ).execute(arguments: [key, value, kv.createRevision, kv.modRevision, kv.version, kv.lease])
        try db.cachedStatement(
            sql: "INSERT INTO kv_history(key, revision, value, create_revision, version, lease) VALUES (?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [key, kv.modRevision, value, kv.createRevision, kv.version, kv.lease])
    }

    mutating func remove(_ key: Bytes, at revision: Revision) throws {
        let data = Data(key)
        try db.cachedStatement(sql: "DELETE FROM kv_current WHERE key = ?").execute(arguments: [data])
        guard db.changesCount > 0 else { return }
        try db.cachedStatement(
            sql: "INSERT INTO kv_history(key, revision, value, create_revision, version, lease) VALUES (?, ?, NULL, 0, 0, 0)"
        ).execute(arguments: [data, revision])
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

    mutating func setLeaseSequence(_ id: LeaseID) throws {
        try Self.setMeta(db, "lease_sequence", id)
        lastLeaseID = id
    }

    /// Replaces the whole state by a snapshot's; its revision becomes the oldest readable one.
    static func install(_ snapshot: KVSnapshot, into db: Database) throws {
        try db.execute(sql: "DELETE FROM kv_current; DELETE FROM kv_history; DELETE FROM leases;")
        var backend = try SQLiteKVBackend(db)
        for kv in snapshot.keyValues { try backend.write(kv) }
        for lease in snapshot.leases { try backend.saveLease(lease) }
        try backend.setRevision(snapshot.revision)
        try backend.setCompactedRevision(snapshot.revision)
        try backend.setLeaseSequence(snapshot.leaseSequence)
    }
}
