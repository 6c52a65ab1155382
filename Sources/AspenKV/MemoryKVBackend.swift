import AspenCore

/// The key-value state in memory: every key's versions (MVCC), a sorted key index for ranges,
/// leases, client sessions, system records. A value type, so a copy is a consistent snapshot.
public struct MemoryKVBackend: KVBackend, Sendable {
    struct Version: Sendable {
        var revision: Revision
        /// nil marks a deletion.
        var keyValue: KeyValue?
    }

    var history: [Bytes: [Version]] = [:]
    /// Every key with history, in byte order.
    var sortedKeys: [Bytes] = []
    var currentRevision: Revision = 0
    var oldestRevision: Revision = 0
    var leaseTable: [LeaseID: Lease] = [:]
    var leaseKeys: [LeaseID: Set<Bytes>] = [:]
    var lastLeaseID: LeaseID = 0
    /// What the running command changed, to undo it; nil outside a command.
    var journal: Journal?
    /// Client sessions and the results they keep.
    var sessions: [UInt64: ClientSessionRecord] = [:]
    var sessionResults: [UInt64: [UInt64: Bytes]] = [:]
    /// The system records, by name (outside the keyspace: no key index, no history).
    var systemTable: [Bytes: Bytes] = [:]

    public init() {}

    public func revision() -> Revision { currentRevision }
    public func compactedRevision() -> Revision { oldestRevision }
    public mutating func setRevision(_ revision: Revision) { currentRevision = revision }
    public mutating func setCompactedRevision(_ revision: Revision) { oldestRevision = revision }

    func visible(_ versions: [Version], at revision: Revision?) -> KeyValue? {
        guard let revision else { return versions.last?.keyValue }
        // Versions ascend; find the last at or before `revision`.
        var low = 0
        var high = versions.count
        while low < high {
            let middle = (low + high) / 2
            if versions[middle].revision <= revision { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : versions[low - 1].keyValue
    }

    public func get(_ key: Bytes, at revision: Revision?) -> KeyValue? {
        history[key].flatMap { visible($0, at: revision) }
    }

    /// The position of the first key not before `key`.
    func lowerBound(_ key: Bytes) -> Int {
        var low = 0
        var high = sortedKeys.count
        while low < high {
            let middle = (low + high) / 2
            if sortedKeys[middle].lexicographicallyPrecedes(key) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    public func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) -> [KeyValue] {
        scan(bounds, at: revision, after: after, limit: limit, bytesMax: .max).found
    }

    public func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int, bytesMax: Int) -> (found: [KeyValue], cut: Bool) {
        var position = lowerBound(bounds.start)
        if let after {
            position = max(position, lowerBound(after))
            if position < sortedKeys.count && sortedKeys[position] == after { position += 1 }
        }
        var found: [KeyValue] = []
        var bytes = 0
        while position < sortedKeys.count && found.count < limit {
            let key = sortedKeys[position]
            if let end = bounds.end, !key.lexicographicallyPrecedes(end) { break }
            if let keyValue = get(key, at: revision) {
                bytes += keyValue.key.count + keyValue.value.count
                if bytes > bytesMax && !found.isEmpty { return (found, true) }
                found.append(keyValue)
            }
            position += 1
        }
        return (found, false)
    }

    public func count(_ bounds: KeyBounds, at revision: Revision?) -> Int {
        scan(bounds, at: revision, after: nil, limit: .max).count
    }

    public func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) -> [KVChange] {
        var found: [KVChange] = []
        var position = lowerBound(bounds.start)
        while position < sortedKeys.count {
            let key = sortedKeys[position]
            if let end = bounds.end, !key.lexicographicallyPrecedes(end) { break }
            for version in history[key] ?? [] where version.revision >= from && version.revision <= through {
                found.append(KVChange(key: key, revision: version.revision, keyValue: version.keyValue))
            }
            position += 1
        }
        found.sort { $0.revision != $1.revision ? $0.revision < $1.revision : $0.key.lexicographicallyPrecedes($1.key) }
        return Array(found.prefix(limit))
    }

    public mutating func write(_ keyValue: KeyValue) {
        let previousLease = get(keyValue.key, at: nil)?.lease ?? 0
        if previousLease != 0 && previousLease != keyValue.lease { detach(keyValue.key, from: previousLease) }
        if keyValue.lease != 0 { attach(keyValue.key, to: keyValue.lease) }
        append(Version(revision: keyValue.modRevision, keyValue: keyValue), to: keyValue.key)
    }

    public mutating func remove(_ key: Bytes, at revision: Revision) {
        guard let current = get(key, at: nil) else { return }
        if current.lease != 0 { detach(key, from: current.lease) }
        append(Version(revision: revision, keyValue: nil), to: key)
    }

    private mutating func append(_ version: Version, to key: Bytes) {
        let isNew = history[key] == nil
        if isNew { sortedKeys.insert(key, at: lowerBound(key)) }
        history[key, default: []].append(version)
        journal?.steps.append(.appended(key, isNew: isNew))
    }

    private mutating func attach(_ key: Bytes, to lease: LeaseID) {
        if leaseKeys[lease, default: []].insert(key).inserted { journal?.steps.append(.attached(key, lease)) }
    }

    private mutating func detach(_ key: Bytes, from lease: LeaseID) {
        if leaseKeys[lease]?.remove(key) != nil { journal?.steps.append(.detached(key, lease)) }
    }

    public mutating func compactHistory(before revision: Revision) {
        journal?.steps.append(.history(history, sortedKeys))
        var emptied: Set<Bytes> = []
        for (key, versions) in history {
            // Keep the version visible at `revision` (if it is a value) and everything after.
            guard let keep = versions.lastIndex(where: { $0.revision <= revision }) else { continue }
            var kept = Array(versions[keep...])
            if kept.first?.keyValue == nil { kept.removeFirst() }
            if kept.isEmpty {
                emptied.insert(key)
                history[key] = nil
            } else {
                history[key] = kept
            }
        }
        if !emptied.isEmpty { sortedKeys.removeAll { emptied.contains($0) } }
    }

    public func lease(_ id: LeaseID) -> Lease? { leaseTable[id] }
    public func leases() -> [Lease] { leaseTable.values.sorted { $0.id < $1.id } }
    public mutating func saveLease(_ lease: Lease) {
        journal?.steps.append(.lease(lease.id, leaseTable[lease.id], leaseKeys[lease.id]))
        leaseTable[lease.id] = lease
    }

    public mutating func deleteLease(_ id: LeaseID) {
        journal?.steps.append(.lease(id, leaseTable[id], leaseKeys[id]))
        leaseTable[id] = nil
        leaseKeys[id] = nil
    }

    public func keys(attachedTo id: LeaseID) -> [Bytes] {
        (leaseKeys[id] ?? []).sorted { $0.lexicographicallyPrecedes($1) }
    }

    public func expiredLeases(atMs nowMs: Int64) -> [LeaseID] {
        leaseTable.values.filter { $0.expiresAtMs <= nowMs }.map(\.id).sorted()
    }

    public func leaseSequence() -> LeaseID { lastLeaseID }
    public mutating func setLeaseSequence(_ id: LeaseID) { lastLeaseID = id }
}

extension MemoryKVBackend {
    /// One command's changes, each with what undoes it, and the counters before it began.
    struct Journal: Sendable {
        enum Step: Sendable {
            /// A version appended to a key's history; `isNew`: the key had none before.
            case appended(Bytes, isNew: Bool)
            case attached(Bytes, LeaseID)
            case detached(Bytes, LeaseID)
            /// The lease and its keys as they were.
            case lease(LeaseID, Lease?, Set<Bytes>?)
            /// The whole history before a compaction (compaction touches every key anyway).
            case history([Bytes: [Version]], [Bytes])
            /// A client session and its results as they were.
            case session(UInt64, ClientSessionRecord?, [UInt64: Bytes]?)
            /// A system record's value as it was (nil: it did not exist).
            case systemRecord(Bytes, Bytes?)
        }

        var steps: [Step] = []
        let revision: Revision
        let compacted: Revision
        let leaseSequence: LeaseID
    }

    public mutating func beginCommand() {
        precondition(journal == nil, "commands do not nest")
        journal = Journal(revision: currentRevision, compacted: oldestRevision, leaseSequence: lastLeaseID)
    }

    public mutating func endCommand(keepingWrites: Bool) {
        guard let journal else { preconditionFailure("no command to end") }
        self.journal = nil
        guard !keepingWrites else { return }
        for step in journal.steps.reversed() { undo(step) }
        currentRevision = journal.revision
        oldestRevision = journal.compacted
        lastLeaseID = journal.leaseSequence
    }

    private mutating func undo(_ step: Journal.Step) {
        switch step {
        case .appended(let key, let isNew):
            history[key]?.removeLast()
            if isNew {
                history[key] = nil
                sortedKeys.remove(at: lowerBound(key))
            }
        case .attached(let key, let lease):
            leaseKeys[lease]?.remove(key)
            if leaseKeys[lease]?.isEmpty == true { leaseKeys[lease] = nil }
        case .detached(let key, let lease):
            leaseKeys[lease, default: []].insert(key)
        case .lease(let id, let lease, let keys):
            leaseTable[id] = lease
            leaseKeys[id] = keys
        case .history(let history, let sortedKeys):
            self.history = history
            self.sortedKeys = sortedKeys
        case .session(let id, let record, let results):
            sessions[id] = record
            sessionResults[id] = results
        case .systemRecord(let name, let value):
            systemTable[name] = value
        }
    }
}

extension MemoryKVBackend {
    public func clientSession(_ id: UInt64) -> ClientSessionRecord? { sessions[id] }
    /// Journals the session's state before a change, inside a command.
    private mutating func changingSession(_ id: UInt64) {
        journal?.steps.append(.session(id, sessions[id], sessionResults[id]))
    }

    public mutating func saveClientSession(_ session: ClientSessionRecord, previous: ClientSessionRecord?) {
        changingSession(session.id)
        sessions[session.id] = session
    }

    public mutating func removeClientSession(_ id: UInt64) {
        changingSession(id)
        sessions[id] = nil
        sessionResults[id] = nil
    }

    public func clientSessionCount() -> Int { sessions.count }

    public func clientSessions(lastSeenBeforeMs ms: Int64, limit: Int) -> [UInt64] {
        // Ids compare as SQLite stores them (signed), so both backends pick the same sessions.
        Array(
            sessions.values.filter { $0.lastSeenMs < ms }
                .sorted { ($0.lastSeenMs, Int64(bitPattern: $0.id)) < ($1.lastSeenMs, Int64(bitPattern: $1.id)) }
                .prefix(limit).map(\.id))
    }

    public func sessionResult(_ id: UInt64, sequence: UInt64) -> Bytes? { sessionResults[id]?[sequence] }
    public mutating func saveSessionResult(_ id: UInt64, sequence: UInt64, _ result: Bytes) {
        changingSession(id)
        sessionResults[id, default: [:]][sequence] = result
    }

    public mutating func dropSessionResults(_ id: UInt64, through sequence: UInt64) {
        changingSession(id)
        sessionResults[id] = sessionResults[id]?.filter { $0.key > sequence }
    }

    public func clientSessionStates() -> [ClientSessionState] {
        sessions.values.sorted { $0.id < $1.id }.map { record in
            ClientSessionState(
                record: record, results: (sessionResults[record.id] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
    }
}

extension MemoryKVBackend {
    public func systemRecord(_ name: Bytes) -> Bytes? { systemTable[name] }

    public func systemRecords(prefix: Bytes) -> [(name: Bytes, value: Bytes)] {
        systemTable.filter { $0.key.starts(with: prefix) }.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.key, $0.value) }
    }

    public mutating func setSystemRecord(_ name: Bytes, to value: Bytes) {
        journal?.steps.append(.systemRecord(name, systemTable[name]))
        systemTable[name] = value
    }

    public mutating func removeSystemRecord(_ name: Bytes) {
        guard let previous = systemTable.removeValue(forKey: name) else { return }
        journal?.steps.append(.systemRecord(name, previous))
    }

    public func systemRecordCount() -> Int { systemTable.count }
}
