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
    /// The system records (cluster metadata outside the keyspace), by name in byte order.
    public var systemRecords: [SystemRecord]

    public init(
        revision: Revision, compactedRevision: Revision, leaseSequence: LeaseID, changes: [KVChange], leases: [Lease],
        sessions: [ClientSessionState] = [], systemRecords: [SystemRecord] = []
    ) {
        self.revision = revision
        self.compactedRevision = compactedRevision
        self.leaseSequence = leaseSequence
        self.changes = changes
        self.leases = leases
        self.sessions = sessions
        self.systemRecords = systemRecords
    }

    /// Version 1 carried only the current keys (no history); version 2 adds the history; version
    /// 3 (`KVSnapshotImage`, written now) frames it so that it can be streamed.
    static let magicV1: [UInt8] = Array("AKV1".utf8)
    static let magicV2: [UInt8] = Array("AKV2".utf8)

    /// Reads every kept change, lease, session and system record from a backend. It holds the
    /// whole state: for memory backends and tests; a store streams its image instead
    /// (`KVSnapshotImage.Writer`).
    public static func capture<Backend: KVBackend>(from backend: Backend) throws -> KVSnapshot {
        let revision = try backend.revision()
        return KVSnapshot(
            revision: revision, compactedRevision: try backend.compactedRevision(), leaseSequence: try backend.leaseSequence(),
            changes: try backend.history(in: KeyBounds(start: [], end: nil), from: 0, through: revision, limit: .max).map {
                KVChange(key: $0.key, revision: $0.revision, keyValue: $0.keyValue)
            },
            leases: try backend.leases(), sessions: try backend.clientSessionStates(),
            systemRecords: try backend.systemRecords(prefix: []).map { SystemRecord(name: $0.name, value: $0.value) })
    }

    /// The state as an image (`KVSnapshotImage`), in memory.
    public func encoded() -> Bytes {
        var writer = KVSnapshotImage.Writer(into: KVSnapshotImage.MemorySink())
        // Writing to memory cannot fail.
        do {
            try writer.begin(revision: revision, compactedRevision: compactedRevision, leaseSequence: leaseSequence)
            for change in changes { try writer.add(change) }
            for lease in leases { try writer.add(lease) }
            for session in sessions { try writer.add(session) }
            for record in systemRecords { try writer.add(record) }
            try writer.finish()
        } catch {
            preconditionFailure("writing a snapshot image to memory failed: \(error)")
        }
        return writer.sink.bytes
    }

    /// Reads an image (version 3), or a whole snapshot of version 1 or 2.
    public init(decoding bytes: Bytes, limits: Limits = .standard) throws(DecodingError) {
        if bytes.starts(with: KVSnapshotImage.magic) {
            self = try Self.decodeImage(bytes, limits: limits)
            return
        }
        guard bytes.count >= Self.magicV2.count + 4 else { throw .invalid("not a key-value snapshot") }
        let magic = Array(bytes.prefix(4))
        guard magic == Self.magicV2 || magic == Self.magicV1 else { throw .invalid("not a key-value snapshot") }
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
        // Versions 1 and 2 predate the system records.
        systemRecords = []
        try reader.expectEnd()
        guard compactedRevision >= 0, compactedRevision <= revision else {
            throw .invalid("compacted revision \(compactedRevision) is outside 0...\(revision)")
        }
        try checkImageRules()
    }

    /// What an image's reader checks as it reads (`KVSnapshotImage.Reader`), checked on a whole
    /// older snapshot: a state that breaks it could be installed but never sent on as an image.
    private func checkImageRules() throws(DecodingError) {
        var last: (revision: Revision, key: Bytes)?
        for change in changes {
            guard change.revision > 0, change.revision <= revision else {
                throw .invalid("a change at revision \(change.revision), outside 1...\(revision)")
            }
            if let last, last.revision > change.revision || (last.revision == change.revision && !last.key.lexicographicallyPrecedes(change.key)) {
                throw .invalid("the snapshot's changes are not in revision and key order")
            }
            last = (change.revision, change.key)
        }
        for (earlier, later) in zip(leases, leases.dropFirst()) where earlier.id >= later.id {
            throw .invalid("lease \(later.id) after lease \(earlier.id)")
        }
        for (earlier, later) in zip(sessions, sessions.dropFirst()) where earlier.record.id >= later.record.id {
            throw .invalid("session \(later.record.id) after session \(earlier.record.id)")
        }
        for session in sessions {
            for (earlier, later) in zip(session.results, session.results.dropFirst()) where earlier.sequence >= later.sequence {
                throw .invalid("session \(session.record.id) keeps result \(later.sequence) after result \(earlier.sequence)")
            }
        }
    }

    private static func decodeImage(_ bytes: Bytes, limits: Limits) throws(DecodingError) -> KVSnapshot {
        var reader = KVSnapshotImage.Reader(from: KVSnapshotImage.MemorySource(bytes), limits: limits)
        var snapshot = KVSnapshot(revision: 0, compactedRevision: 0, leaseSequence: 0, changes: [], leases: [])
        do {
            while true {
                switch try reader.next() {
                case .header(let header):
                    snapshot.revision = header.revision
                    snapshot.compactedRevision = header.compactedRevision
                    snapshot.leaseSequence = header.leaseSequence
                case .changes(let changes): snapshot.changes += changes
                case .leases(let leases): snapshot.leases += leases
                case .sessions(let sessions):
                    for session in sessions {
                        if snapshot.sessions.last?.record.id == session.record.id {
                            snapshot.sessions[snapshot.sessions.count - 1].results += session.results
                        } else {
                            snapshot.sessions.append(session)
                        }
                    }
                case .systemRecords(let records): snapshot.systemRecords += records
                case .end: return snapshot
                }
            }
        } catch let error as DecodingError {
            throw error
        } catch {
            // A memory source never fails; anything else is still the image's fault.
            throw .invalid("\(error)")
        }
    }

    private static func readSessions(_ reader: inout ByteReader, limits: Limits) throws(DecodingError) -> [ClientSessionState] {
        let count = try reader.readCount(limit: min(limits.clientSessionsMax, reader.remaining / 4))
        var sessions: [ClientSessionState] = []
        for _ in 0..<count {
            let record = try KVSnapshotImage.readRecord(&reader)
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
        changes.reserveCapacity(min(count, 4096))  // A hostile count reserves little.
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
        for record in snapshot.systemRecords { systemTable[record.name] = record.value }
        for session in snapshot.sessions {
            sessions[session.record.id] = session.record
            sessionResults[session.record.id] = Dictionary(session.results.map { ($0.sequence, $0.result) }, uniquingKeysWith: { $1 })
        }
        currentRevision = snapshot.revision
        oldestRevision = snapshot.compactedRevision
        lastLeaseID = snapshot.leaseSequence
    }
}

extension KVSnapshot {
    /// The state of a memory backend, history included (as `capture`, which cannot fail here).
    public init(of backend: MemoryKVBackend) {
        let revision = backend.revision()
        self.init(
            revision: revision, compactedRevision: backend.compactedRevision(), leaseSequence: backend.leaseSequence(),
            changes: backend.history(in: KeyBounds(start: [], end: nil), from: 0, through: revision, limit: .max).map {
                KVChange(key: $0.key, revision: $0.revision, keyValue: $0.keyValue)
            },
            leases: backend.leases(), sessions: backend.clientSessionStates(),
            systemRecords: backend.systemRecords(prefix: []).map { SystemRecord(name: $0.name, value: $0.value) })
    }
}
