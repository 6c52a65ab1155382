import AspenCore
import AspenKV
import GRDB

/// The key-value state as a snapshot image (`KVSnapshotImage`), written from and installed into
/// the tables a row at a time: SQLite's page cache holds the pages, the writer and the reader
/// one frame, whatever the state's size.
extension SQLiteKVBackend {
    /// Writes the state the caller's read transaction sees: the counters, every row of
    /// `kv_history` in (revision, key) order, the leases, the client sessions with their
    /// results, then the system records, each stepped from a statement.
    static func writeImage<Sink>(in db: Database, file: String, group: GroupID, into writer: inout KVSnapshotImage.Writer<Sink>)
        throws
    {
        let counters = try RawStatement(
            db, "SELECT revision, compacted_revision, lease_sequence FROM raft_state WHERE grp = ?", file: file)
        counters.bind(1, Int64(group.rawValue))
        let found = try counters.step()
        let (revision, compacted, leaseSequence) = found ? (counters.int64(0), counters.int64(1), counters.int64(2)) : (0, 0, 0)
        counters.finish()
        try writer.begin(revision: revision, compactedRevision: compacted, leaseSequence: leaseSequence)
        let history = try RawStatement(
            db, "SELECT key, value, create_revision, revision, version, lease FROM kv_history ORDER BY revision, key", file: file)
        defer { history.finish() }
        while try history.step() {
            try writer.add(KVChange(key: history.bytes(0), revision: history.int64(3), keyValue: keyValue(history)))
        }
        let leases = try RawStatement(db, "SELECT id, ttl_ms, expires_at_ms FROM leases ORDER BY id", file: file)
        defer { leases.finish() }
        while try leases.step() {
            try writer.add(Lease(id: leases.int64(0), ttlMs: leases.int64(1), expiresAtMs: leases.int64(2)))
        }
        try writeSessions(in: db, file: file, into: &writer)
        let records = try RawStatement(db, "SELECT name, value FROM system_records ORDER BY name", file: file)
        defer { records.finish() }
        while try records.step() { try writer.add(SystemRecord(name: records.bytes(0), value: records.bytes(1))) }
        try writer.finish()
    }

    /// Sessions by id and their results by sequence, both unsigned: SQLite orders them as signed
    /// integers, so the ids (and sequences) below 2^63, stored as non-negative, come first.
    private static func writeSessions<Sink>(in db: Database, file: String, into writer: inout KVSnapshotImage.Writer<Sink>) throws {
        let halves = ["id >= 0", "id < 0"]
        for half in halves {
            let sessions = try RawStatement(
                db, "SELECT id, last_seen_ms, acknowledged_through FROM client_sessions WHERE \(half) ORDER BY id", file: file)
            defer { sessions.finish() }
            while try sessions.step() {
                let id = sessions.int64(0)
                try writer.beginSession(
                    ClientSessionRecord(
                        id: UInt64(bitPattern: id), lastSeenMs: sessions.int64(1), acknowledgedThrough: UInt64(bitPattern: sessions.int64(2))))
                for resultHalf in ["sequence >= 0", "sequence < 0"] {
                    let results = try RawStatement(
                        db, "SELECT sequence, result FROM client_results WHERE session = ? AND \(resultHalf) ORDER BY sequence", file: file)
                    defer { results.finish() }
                    results.bind(1, id)
                    while try results.step() { try writer.addResult(sequence: UInt64(bitPattern: results.int64(0)), results.bytes(1)) }
                }
            }
        }
    }

    /// Replaces the whole state by the image `reader` reads, history and compacted revision
    /// included, in the caller's transaction (which a damaged image makes throw, and so roll
    /// back). The index must be empty (or rebuilt after this commits). Returns the image's
    /// compacted revision.
    static func install<Source>(
        from reader: inout KVSnapshotImage.Reader<Source>, into db: Database, file: String, group: GroupID, index: KeyIndex
    ) throws -> Revision {
        try db.execute(
            sql: "DELETE FROM kv_history; DELETE FROM leases; DELETE FROM client_sessions; DELETE FROM client_results; DELETE FROM system_records;")
        var backend = try SQLiteKVBackend(db, file: file, group: group, index: index, writer: true)
        while true {
            switch try reader.next() {
            case .header(let header):
                backend.setRevision(header.revision)
                backend.setCompactedRevision(header.compactedRevision)
                backend.setLeaseSequence(header.leaseSequence)
            case .changes(let changes):
                for change in changes {
                    if let kv = change.keyValue { try backend.write(kv) } else { try backend.remove(change.key, at: change.revision) }
                }
            case .leases(let leases):
                for lease in leases { try backend.saveLease(lease) }
            case .sessions(let sessions):
                // A session continued from the previous frame is saved again, unchanged.
                for session in sessions {
                    try backend.saveClientSession(session.record, previous: nil)
                    for (sequence, result) in session.results { try backend.saveSessionResult(session.record.id, sequence: sequence, result) }
                }
            case .systemRecords(let records):
                for record in records { try backend.setSystemRecord(record.name, to: record.value) }
            case .end:
                try backend.flush()
                return backend.oldestRevision
            }
        }
    }
}
