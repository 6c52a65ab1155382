import AspenCore

/// The whole key-value state at one revision, as bytes: what a Raft snapshot carries. It holds
/// the history too, back to the compacted revision (as etcd's snapshots do), so a member that
/// catches up from it answers past-revision reads, watches from a past revision and state hashes
/// exactly like the members that applied the log.
public struct KVSnapshot: Sendable, Equatable {
    public var revision: Revision
    /// Reads below this revision were compacted away, on every member alike.
    public var compactedRevision: Revision
    public var leaseSequence: LeaseID
    /// Every change the state keeps — the version each key had at the compacted revision, then
    /// every version and deletion after it — by revision, then key.
    public var changes: [KVChange]
    public var leases: [Lease]
    /// Client sessions and the results they keep, so a retry is answered the same after a
    /// snapshot as before it.
    public var sessions: [ClientSessionState]

    public init(
        revision: Revision, compactedRevision: Revision, leaseSequence: LeaseID, changes: [KVChange], leases: [Lease],
        sessions: [ClientSessionState] = []
    ) {
        self.revision = revision
        self.compactedRevision = compactedRevision
        self.leaseSequence = leaseSequence
        self.changes = changes
        self.leases = leases
        self.sessions = sessions
    }

    /// Version 1 carried only the current keys (no history); version 2 adds the history.
    static let magicV1: [UInt8] = Array("AKV1".utf8)
    static let magic: [UInt8] = Array("AKV2".utf8)

    /// Reads every kept change and lease from a backend.
    public static func capture<Backend: KVBackend>(from backend: Backend) throws -> KVSnapshot {
        let revision = try backend.revision()
        return KVSnapshot(
            revision: revision, compactedRevision: try backend.compactedRevision(), leaseSequence: try backend.leaseSequence(),
            changes: try backend.history(in: KeyBounds(start: [], end: nil), from: 0, through: revision, limit: .max).map {
                KVChange(key: $0.key, revision: $0.revision, keyValue: $0.keyValue)
            },
            leases: try backend.leases(), sessions: try backend.clientSessionStates())
    }

    public func encoded() -> Bytes {
        var writer = ByteWriter(capacity: 64 + changes.count * 48)
        writer.writeRaw(Self.magic)
        writer.writeVarint(signed: revision)
        writer.writeVarint(signed: compactedRevision)
        writer.writeVarint(signed: leaseSequence)
        writer.writeVarint(UInt64(changes.count))
        for change in changes {
            if let kv = change.keyValue {
                writer.write(UInt8(1))
                KVWire.write(kv, into: &writer)
            } else {
                writer.write(UInt8(0))
                writer.writeBytes(change.key)
                writer.writeVarint(signed: change.revision)
            }
        }
        writer.writeVarint(UInt64(leases.count))
        for lease in leases { KVWire.write(lease, into: &writer) }
        writer.writeVarint(UInt64(sessions.count))
        for session in sessions {
            writer.writeVarint(session.record.id)
            writer.writeVarint(signed: session.record.lastSeenMs)
            writer.writeVarint(session.record.acknowledgedThrough)
            writer.writeVarint(UInt64(session.results.count))
            for (sequence, result) in session.results {
                writer.writeVarint(sequence)
                writer.writeBytes(result)
            }
        }
        writer.writeFixed(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits = .standard) throws(DecodingError) {
        guard bytes.count >= Self.magic.count + 4 else { throw .invalid("not a key-value snapshot") }
        let magic = Array(bytes.prefix(4))
        guard magic == Self.magic || magic == Self.magicV1 else { throw .invalid("not a key-value snapshot") }
        var tail = ByteReader(Array(bytes.suffix(4)))
        guard try tail.readFixed32() == CRC32C.checksum(bytes.dropLast(4)) else {
            throw .invalid("key-value snapshot checksum mismatch")
        }
        var reader = ByteReader(Array(bytes[4..<(bytes.count - 4)]))
        revision = try reader.readSignedVarint()
        if magic == Self.magicV1 {
            compactedRevision = revision
            leaseSequence = try reader.readSignedVarint()
            changes = try KVWire.readKeyValues(&reader).map { KVChange(key: $0.key, revision: $0.modRevision, keyValue: $0) }
        } else {
            compactedRevision = try reader.readSignedVarint()
            leaseSequence = try reader.readSignedVarint()
            changes = try Self.readChanges(&reader, limits: limits)
        }
        let leaseCount = try reader.readCount(limit: reader.remaining)
        leases = []
        for _ in 0..<leaseCount { leases.append(try KVWire.readLease(&reader)) }
        sessions = magic == Self.magicV1 ? [] : try Self.readSessions(&reader, limits: limits)
        try reader.expectEnd()
        guard compactedRevision >= 0, compactedRevision <= revision else {
            throw .invalid("compacted revision \(compactedRevision) is outside 0...\(revision)")
        }
    }

    private static func readSessions(_ reader: inout ByteReader, limits: Limits) throws(DecodingError) -> [ClientSessionState] {
        let count = try reader.readCount(limit: min(limits.clientSessionsMax, reader.remaining / 4))
        var sessions: [ClientSessionState] = []
        for _ in 0..<count {
            let record = ClientSessionRecord(
                id: try reader.readVarint(), lastSeenMs: try reader.readSignedVarint(), acknowledgedThrough: try reader.readVarint())
            let resultCount = try reader.readCount(limit: min(limits.clientSessionResultsMax, reader.remaining / 2))
            var results: [(sequence: UInt64, result: Bytes)] = []
            for _ in 0..<resultCount { results.append((try reader.readVarint(), try reader.readBytes(limit: limits.rpcMessageBytesMax))) }
            sessions.append(ClientSessionState(record: record, results: results))
        }
        return sessions
    }

    private static func readChanges(_ reader: inout ByteReader, limits: Limits) throws(DecodingError) -> [KVChange] {
        // Each change takes at least three bytes: the count cannot promise more than that.
        let count = try reader.readCount(limit: reader.remaining / 3)
        var changes: [KVChange] = []
        changes.reserveCapacity(count)
        var last: (revision: Revision, key: Bytes)?
        for _ in 0..<count {
            let change: KVChange
            switch try reader.readByte() {
            case 1:
                let kv = try KVWire.readKeyValue(&reader)
                change = KVChange(key: kv.key, revision: kv.modRevision, keyValue: kv)
            case 0:
                change = KVChange(key: try reader.readBytes(limit: limits.keyBytesMax), revision: try reader.readSignedVarint(), keyValue: nil)
            case let tag:
                throw .invalid("unknown change kind \(tag) in a key-value snapshot")
            }
            if let last, last.revision > change.revision || (last.revision == change.revision && !last.key.lexicographicallyPrecedes(change.key)) {
                throw .invalid("the snapshot's changes are not in revision and key order")
            }
            last = (change.revision, change.key)
            changes.append(change)
        }
        return changes
    }
}

extension MemoryKVBackend {
    /// The state a snapshot describes, its history included.
    public init(snapshot: KVSnapshot) {
        self.init()
        for change in snapshot.changes {
            history[change.key, default: []].append(Version(revision: change.revision, keyValue: change.keyValue))
        }
        sortedKeys = history.keys.sorted { $0.lexicographicallyPrecedes($1) }
        for (key, versions) in history {
            if let lease = versions.last?.keyValue?.lease, lease != 0 { leaseKeys[lease, default: []].insert(key) }
        }
        for lease in snapshot.leases { leaseTable[lease.id] = lease }
        for session in snapshot.sessions {
            sessions[session.record.id] = session.record
            sessionResults[session.record.id] = Dictionary(session.results.map { ($0.sequence, $0.result) }, uniquingKeysWith: { $1 })
        }
        currentRevision = snapshot.revision
        oldestRevision = snapshot.compactedRevision
        lastLeaseID = snapshot.leaseSequence
    }
}
