import AspenCore

/// The state a key-value state machine reads and writes: current values, history (MVCC),
/// leases, counters, client sessions and the system records. `MemoryKVBackend` keeps it in memory; the node store keeps it in SQLite,
/// inside the same transaction as the Raft log. The logic that decides what to write lives once,
/// in `KVStateMachine`, and runs unchanged over either.
///
/// Errors thrown by a backend are storage failures (I/O, corruption), never business outcomes.
public protocol KVBackend {
    func revision() throws -> Revision
    /// Reads below this revision fail with `compacted`.
    func compactedRevision() throws -> Revision
    mutating func setRevision(_ revision: Revision) throws
    mutating func setCompactedRevision(_ revision: Revision) throws

    /// The key as of `revision` (nil: the current revision); nil if it did not exist then.
    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue?
    /// Keys in `bounds` as of `revision`, in order, strictly after `after` when given, at most `limit`.
    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) throws -> [KeyValue]
    /// As `scan`, stopping before the entry that would take the keys' and values' bytes past
    /// `bytesMax` (never before the first entry); `cut` says it stopped there.
    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int, bytesMax: Int) throws -> (found: [KeyValue], cut: Bool)
    func count(_ bounds: KeyBounds, at revision: Revision?) throws -> Int

    /// The versions (and deletions) of keys in `bounds` recorded at revisions `from...through`,
    /// ordered by revision then key, at most `limit`.
    func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) throws -> [KVChange]
    /// The version `change` replaced; nil if the key did not exist just before it.
    func previous(of change: KVChange) throws -> KeyValue?

    /// Records a new version of `keyValue.key` at `keyValue.modRevision`.
    mutating func write(_ keyValue: KeyValue) throws
    /// Records that `key` stopped existing at `revision`.
    mutating func remove(_ key: Bytes, at revision: Revision) throws
    /// Drops history that no read at or after `revision` can see.
    mutating func compactHistory(before revision: Revision) throws

    func lease(_ id: LeaseID) throws -> Lease?
    func leases() throws -> [Lease]
    mutating func saveLease(_ lease: Lease) throws
    mutating func deleteLease(_ id: LeaseID) throws
    /// Current keys attached to the lease, in order.
    func keys(attachedTo id: LeaseID) throws -> [Bytes]
    /// Leases whose expiry is at or before `nowMs`, by id.
    func expiredLeases(atMs nowMs: Int64) throws -> [LeaseID]
    /// The largest lease id ever granted (ids are never reused).
    func leaseSequence() throws -> LeaseID
    mutating func setLeaseSequence(_ id: LeaseID) throws

    // MARK: Client sessions (exactly-once writes)

    func clientSession(_ id: UInt64) throws -> ClientSessionRecord?
    /// Saves the session; `previous` is the record it replaces (nil: a new one), so a store can
    /// write only what changed.
    mutating func saveClientSession(_ session: ClientSessionRecord, previous: ClientSessionRecord?) throws
    /// Forgets the session and every result it kept.
    mutating func removeClientSession(_ id: UInt64) throws
    func clientSessionCount() throws -> Int
    /// Sessions last seen before `ms`, least recently seen first (then by id), at most `limit`.
    func clientSessions(lastSeenBeforeMs ms: Int64, limit: Int) throws -> [UInt64]
    func sessionResult(_ id: UInt64, sequence: UInt64) throws -> Bytes?
    mutating func saveSessionResult(_ id: UInt64, sequence: UInt64, _ result: Bytes) throws
    /// Forgets the session's results at or below `sequence`.
    mutating func dropSessionResults(_ id: UInt64, through sequence: UInt64) throws
    /// Every session with the results it keeps, by id, then sequence (for snapshots).
    func clientSessionStates() throws -> [ClientSessionState]

    // MARK: System records (cluster metadata outside the keyspace)

    func systemRecord(_ name: Bytes) throws -> Bytes?
    /// The records whose names start with `prefix` (an empty one: every record), by name in
    /// byte order.
    func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)]
    mutating func setSystemRecord(_ name: Bytes, to value: Bytes) throws
    mutating func removeSystemRecord(_ name: Bytes) throws
    func systemRecordCount() throws -> Int

    /// Starts one command's writes: until `endCommand`, all of them can be undone together, so
    /// a command that fails part-way leaves no trace (a SAVEPOINT in SQLite, an undo journal in
    /// memory). Commands do not nest.
    mutating func beginCommand() throws
    /// Ends the command begun last: keeps its writes, or undoes every one of them (the counters
    /// included) and leaves the state exactly as `beginCommand` found it.
    mutating func endCommand(keepingWrites: Bool) throws
}

extension KVBackend {
    public func previous(of change: KVChange) throws -> KeyValue? {
        try get(change.key, at: change.revision - 1)
    }
}
