import AspenCore
import AspenKV
import Foundation
import GRDB

/// The key-value state in SQLite, read and written inside whatever transaction the caller holds.
/// `kv_current` has one row per key: its current version, or (NULL value) the deletion that
/// ended it, kept until compaction. `kv_history` has one row per change, keyed by revision, so a
/// commit appends to the end of one B-tree instead of touching a page per key; each row names
/// the key's previous change (`prev_revision`) and an older one to jump to (`jump_revision`, see
/// `Link`), and a read at a past revision walks that chain back from the current row in
/// O(log n) steps. `leases` and the counters hold the rest.
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

    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue? {
        let statement = try RawStatement(db, "SELECT \(Self.currentColumns) FROM kv_current WHERE key = ?", file: file)
        statement.bind(1, key)
        defer { statement.finish() }
        guard try statement.step() else { return nil }
        return try visible(statement, at: revision)
    }

    /// The version of the key in the current row `statement` points at that a read at
    /// `revision` sees (nil: the current one).
    private func visible(_ statement: RawStatement, at revision: Revision?) throws -> KeyValue? {
        let modified = statement.int64(3)
        guard let revision, modified > revision else { return Self.keyValue(statement) }
        return try version(of: statement.bytes(0), changedAt: modified, at: revision)
    }

    static func keyValue(_ statement: RawStatement) -> KeyValue? {
        guard !statement.isNull(1) else { return nil }
        return KeyValue(
            key: statement.bytes(0), value: statement.bytes(1), createRevision: statement.int64(2),
            modRevision: statement.int64(3), version: statement.int64(4), lease: statement.int64(5))
    }

    /// Walks the key's versions back from the one recorded at `changed` to the last at or
    /// before `revision`, taking a row's jump whenever it does not pass that revision, so the
    /// walk takes O(log n) steps over n versions. A missing row at or below the compacted
    /// revision was a deletion that compaction removed (the key did not exist then); above it,
    /// the file is damaged. (Jumps are only taken to revisions above the one read, and
    /// compaction removes nothing above the compacted revision.)
    private func version(of key: Bytes, changedAt changed: Revision, at revision: Revision) throws -> KeyValue? {
        let statement = try RawStatement(
            db,
            "SELECT key, value, create_revision, revision, version, lease, prev_revision, jump_revision FROM kv_history WHERE revision = ? AND key = ?",
            file: file)
        defer { statement.finish() }
        var at = changed
        while at > 0 {
            statement.finish()
            statement.bind(1, at)
            statement.bind(2, key)
            guard try statement.step() else {
                guard at <= oldestRevision else {
                    throw StorageError.corrupted(file: file, detail: "the version of a key at revision \(at) is missing from kv_history")
                }
                return nil
            }
            if at <= revision { return Self.keyValue(statement) }
            let jump = statement.int64(7)
            at = jump > revision ? jump : statement.int64(6)
        }
        return nil
    }

    /// The WHERE clause selecting `bounds` (and keys after `after`), and the bytes to bind.
    private static func filter(_ bounds: KeyBounds, after: Bytes?) -> (String, [Bytes]) {
        var clauses = ["key >= ?"]
        var arguments = [bounds.start]
        if let end = bounds.end {
            clauses.append("key < ?")
            arguments.append(end)
        }
        if let after {
            clauses.append("key > ?")
            arguments.append(after)
        }
        return (clauses.joined(separator: " AND "), arguments)
    }

    /// A statement over `kv_current` with the key filter bound from position 1.
    private func currentRows(_ bounds: KeyBounds, after: Bytes?, select: String, suffix: String) throws -> (RawStatement, Int32) {
        let (clause, keys) = Self.filter(bounds, after: after)
        let statement = try RawStatement(db, "SELECT \(select) FROM kv_current WHERE \(clause) \(suffix)", file: file)
        for (offset, key) in keys.enumerated() { statement.bind(Int32(offset + 1), key) }
        return (statement, Int32(keys.count + 1))
    }

    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) throws -> [KeyValue] {
        let limit = Int64(min(limit, Int(Int64.max)))
        // Deleted keys keep a row (NULL value) until compaction, so a read at a past revision
        // finds every key that existed then among the current rows.
        let (statement, next) = try currentRows(
            bounds, after: after, select: Self.currentColumns,
            suffix: revision == nil ? "AND value IS NOT NULL ORDER BY key LIMIT ?" : "ORDER BY key")
        defer { statement.finish() }
        if revision == nil { statement.bind(next, limit) }
        var found: [KeyValue] = []
        while found.count < limit, try statement.step() {
            if let kv = try visible(statement, at: revision) { found.append(kv) }
        }
        return found
    }

    func count(_ bounds: KeyBounds, at revision: Revision?) throws -> Int {
        // Keys unchanged since `revision` count in SQL; the others are looked up one by one.
        let (counted, next) = try currentRows(
            bounds, after: nil, select: "count(*)", suffix: "AND value IS NOT NULL AND mod_revision <= ?")
        counted.bind(next, revision ?? .max)
        _ = try counted.step()
        var total = Int(counted.int64(0))
        counted.finish()
        guard let revision else { return total }
        let (changed, position) = try currentRows(
            bounds, after: nil, select: Self.currentColumns, suffix: "AND mod_revision > ?")
        defer { changed.finish() }
        changed.bind(position, revision)
        while try changed.step() {
            if try visible(changed, at: revision) != nil { total += 1 }
        }
        return total
    }

    func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) throws -> [KVChange] {
        let (clause, keys) = Self.filter(bounds, after: nil)
        let statement = try RawStatement(
            db,
            """
            SELECT key, value, create_revision, revision, version, lease, prev_revision FROM kv_history
            WHERE revision >= ? AND revision <= ? AND \(clause) ORDER BY revision, key LIMIT ?
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

    /// One lookup by the change's own pointer, not a walk back from the current version: a
    /// watch replaying a hot key's history with previous values stays linear.
    func previous(of change: KVChange) throws -> KeyValue? {
        guard let before = change.previousRevision else { return try get(change.key, at: change.revision - 1) }
        guard before > 0 else { return nil }
        return try version(of: change.key, changedAt: before, at: before)
    }

    // MARK: Writes

    /// A version's place in its key's chain: its depth, the older version it jumps to (with that
    /// one's depth), and where that one jumps (with its depth). The jumps follow Myers'
    /// skew-binary scheme: a version jumps as far as its parent's jump and that one's together
    /// when those two were of equal length, else to its parent, so any earlier version is
    /// O(log n) steps away. The current row carries its version's place, so placing the next
    /// version reads at most one history row.
    struct Link {
        var depth: Int64 = 0
        var jump: Revision = 0
        var jumpDepth: Int64 = 0
        var jump2: Revision = 0
        var jump2Depth: Int64 = 0

        static let columns = "chain_depth, jump_revision, jump_depth, jump2_revision, jump2_depth"
    }

    /// The key's last recorded change (its current row, a deletion included), its place, and
    /// whether the key exists now; revision 0 if it has no row.
    private func lastChange(of key: Bytes) throws -> (revision: Revision, link: Link, live: Bool) {
        let statement = try RawStatement(
            db, "SELECT mod_revision, \(Link.columns), value IS NOT NULL FROM kv_current WHERE key = ?", file: file)
        defer { statement.finish() }
        statement.bind(1, key)
        guard try statement.step() else { return (0, Link(), false) }
        return (
            statement.int64(0),
            Link(depth: statement.int64(1), jump: statement.int64(2), jumpDepth: statement.int64(3), jump2: statement.int64(4), jump2Depth: statement.int64(5)),
            statement.int64(6) != 0
        )
    }

    /// The place of a version recorded after `parent` (whose place is `above`).
    private func link(after parent: Revision, _ above: Link, of key: Bytes) throws -> Link {
        guard parent > 0 else { return Link(depth: 1) }
        guard above.jump > 0, above.jump2 > 0, above.depth - above.jumpDepth == above.jumpDepth - above.jump2Depth else {
            return Link(depth: above.depth + 1, jump: parent, jumpDepth: above.depth, jump2: above.jump, jump2Depth: above.jumpDepth)
        }
        let statement = try RawStatement(db, "SELECT jump_revision, jump_depth FROM kv_history WHERE revision = ? AND key = ?", file: file)
        defer { statement.finish() }
        statement.bind(1, above.jump2)
        statement.bind(2, key)
        let (further, furtherDepth) = try statement.step() ? (statement.int64(0), statement.int64(1)) : (0, 0)
        return Link(depth: above.depth + 1, jump: above.jump2, jumpDepth: above.jump2Depth, jump2: further, jump2Depth: furtherDepth)
    }

    private func bind(_ link: Link, to statement: RawStatement, from position: Int32) {
        statement.bind(position, link.depth)
        statement.bind(position + 1, link.jump)
        statement.bind(position + 2, link.jumpDepth)
        statement.bind(position + 3, link.jump2)
        statement.bind(position + 4, link.jump2Depth)
    }

    private func record(_ key: Bytes, at revision: Revision, _ kv: KeyValue?, previous: Revision, link: Link) throws {
        let history = try RawStatement(
            db,
            """
            INSERT INTO kv_history(revision, key, value, create_revision, version, lease, prev_revision, jump_revision, jump_depth)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            file: file)
        history.bind(1, revision)
        history.bind(2, key)
        if let kv { history.bind(3, kv.value) } else { history.bindNull(3) }
        history.bind(4, kv?.createRevision ?? 0)
        history.bind(5, kv?.version ?? 0)
        history.bind(6, kv?.lease ?? 0)
        history.bind(7, previous)
        history.bind(8, link.jump)
        history.bind(9, link.jumpDepth)
        try history.run()
    }

    mutating func write(_ kv: KeyValue) throws {
        let (previous, above, _) = try lastChange(of: kv.key)
        let link = try link(after: previous, above, of: kv.key)
        let current = try RawStatement(
            db,
            """
            INSERT INTO kv_current(key, value, create_revision, mod_revision, version, lease, \(Link.columns))
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_revision = excluded.create_revision,
            mod_revision = excluded.mod_revision, version = excluded.version, lease = excluded.lease,
            chain_depth = excluded.chain_depth, jump_revision = excluded.jump_revision, jump_depth = excluded.jump_depth,
            jump2_revision = excluded.jump2_revision, jump2_depth = excluded.jump2_depth
            """, file: file)
        current.bind(1, kv.key)
        current.bind(2, kv.value)
        current.bind(3, kv.createRevision)
        current.bind(4, kv.modRevision)
        current.bind(5, kv.version)
        current.bind(6, kv.lease)
        bind(link, to: current, from: 7)
        try current.run()
        try record(kv.key, at: kv.modRevision, kv, previous: previous, link: link)
    }

    mutating func remove(_ key: Bytes, at revision: Revision) throws {
        let (previous, above, live) = try lastChange(of: key)
        guard live else { return }
        let link = try link(after: previous, above, of: key)
        // The row stays, marked deleted, so reads at earlier revisions still find the key.
        let delete = try RawStatement(
            db,
            """
            UPDATE kv_current SET value = NULL, create_revision = 0, mod_revision = ?, version = 0, lease = 0,
            chain_depth = ?, jump_revision = ?, jump_depth = ?, jump2_revision = ?, jump2_depth = ?
            WHERE key = ?
            """,
            file: file)
        delete.bind(1, revision)
        bind(link, to: delete, from: 2)
        delete.bind(7, key)
        try delete.run()
        try record(key, at: revision, nil, previous: previous, link: link)
    }

    mutating func compactHistory(before revision: Revision) throws {
        // A version is superseded at `revision` when a later one at or before it points back to
        // it, and a deletion at or before it is what reads there see: both go, with the current
        // rows that mark such deletions. Changes at or before the last compaction were dealt
        // with then, so only the revisions since are read, in the history's own order.
        let since = "revision > ? AND revision <= ?"
        let bounds: StatementArguments = [oldestRevision, revision]
        try db.execute(
            sql: "DELETE FROM kv_history WHERE (revision, key) IN (SELECT prev_revision, key FROM kv_history WHERE \(since) AND prev_revision > 0)",
            arguments: bounds)
        try db.execute(
            sql: """
                DELETE FROM kv_current WHERE value IS NULL AND mod_revision <= ?
                AND key IN (SELECT key FROM kv_history WHERE \(since) AND value IS NULL)
                """,
            arguments: [revision, oldestRevision, revision])
        try db.execute(sql: "DELETE FROM kv_history WHERE \(since) AND value IS NULL", arguments: bounds)
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
