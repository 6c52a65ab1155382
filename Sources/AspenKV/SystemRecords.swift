import AspenCore

/// A named value of the cluster's own metadata (trusted root keys, token revocations, the auth
/// mode). It is replicated like any command, through the log, in snapshots and on disk, but kept
/// in a table of its own outside the keyspace: no key, range, prefix, transaction, watch or scan
/// of a client can name it, so no client request reads or changes it. Its changes raise no
/// revision and make no watch event.
public struct SystemRecord: Sendable, Equatable, Hashable {
    public var name: Bytes
    public var value: Bytes

    public init(name: Bytes, value: Bytes) {
        self.name = name
        self.value = value
    }
}

/// One change of a system write.
public enum SystemRecordChange: Sendable, Equatable {
    /// Creates the record, or replaces its value.
    case set(name: Bytes, value: Bytes)
    /// Removes the record if it exists.
    case remove(name: Bytes)
    /// Removes every record whose name starts with the prefix (an empty prefix: every record).
    case removePrefix(Bytes)
    /// A condition: the record holds exactly `value` (nil: it does not exist). When it does not,
    /// the whole write fails with `KVError.systemConditionFailed` and nothing of it is applied.
    case expect(name: Bytes, value: Bytes?)
    /// A condition: no record's name starts with the prefix.
    case expectNone(prefix: Bytes)
}

/// Changes to the system records, applied in order and atomically: all of them, or (when a
/// condition does not hold at that point, or the write would leave more than
/// `Limits.systemRecordsMax` records) none. Conditions make a read-check-write of the records
/// safe against every other write: they are checked where the write applies in the log. Only the node proposes
/// one: a client's write that carries it is refused (`KVWire`), a session stamp may not wrap it,
/// and a transaction or batch has no way to hold it.
public struct SystemWrite: Sendable, Equatable {
    public var changes: [SystemRecordChange]

    public init(changes: [SystemRecordChange]) {
        self.changes = changes
    }
}

extension KVValidator {
    /// Checks a system write's size, and each name and value, against their limits.
    public static func validate(_ write: SystemWrite, limits: Limits) throws(KVError) {
        guard write.changes.count <= limits.systemRecordChangesMax else {
            throw .invalidCommand(
                "\(write.changes.count) changes exceed systemRecordChangesMax (\(limits.systemRecordChangesMax)) for one system write")
        }
        for change in write.changes {
            switch change {
            case .set(let name, let value):
                try validate(systemRecordName: name, limits: limits)
                guard value.count <= limits.systemRecordValueBytesMax else {
                    throw .invalidCommand(
                        "a system record value of \(value.count) bytes exceeds systemRecordValueBytesMax (\(limits.systemRecordValueBytesMax))")
                }
            case .remove(let name):
                try validate(systemRecordName: name, limits: limits)
            case .expect(let name, let value):
                try validate(systemRecordName: name, limits: limits)
                guard (value?.count ?? 0) <= limits.systemRecordValueBytesMax else {
                    throw .invalidCommand(
                        "an expected system record value of \(value?.count ?? 0) bytes exceeds systemRecordValueBytesMax (\(limits.systemRecordValueBytesMax))")
                }
            case .removePrefix(let prefix), .expectNone(let prefix):
                guard prefix.count <= limits.systemRecordNameBytesMax else {
                    throw .invalidCommand(
                        "a system record prefix of \(prefix.count) bytes exceeds systemRecordNameBytesMax (\(limits.systemRecordNameBytesMax))")
                }
            }
        }
    }

    static func validate(systemRecordName name: Bytes, limits: Limits) throws(KVError) {
        guard !name.isEmpty else { throw .invalidCommand("a system record name must not be empty") }
        guard name.count <= limits.systemRecordNameBytesMax else {
            throw .invalidCommand(
                "a system record name of \(name.count) bytes exceeds systemRecordNameBytesMax (\(limits.systemRecordNameBytesMax))")
        }
    }
}

extension KVStateMachine {
    /// Applies a system write's changes in order and returns how many records they created,
    /// changed or removed. A condition that does not hold fails the write, as does one that would leave more than `systemRecordsMax` records fails
    /// (the caller's command scope undoes what it wrote), unless it leaves no more than it found:
    /// removals still go through when the limit has been lowered below the records held.
    static func apply<Backend: KVBackend>(_ write: SystemWrite, on backend: inout Backend, limits: Limits) throws -> Int {
        let before = try backend.systemRecordCount()
        var count = before
        var changed = 0
        for change in write.changes {
            switch change {
            case .set(let name, let value):
                let previous = try backend.systemRecord(name)
                guard previous != value else { continue }
                try backend.setSystemRecord(name, to: value)
                if previous == nil { count += 1 }
                changed += 1
            case .remove(let name):
                guard try backend.systemRecord(name) != nil else { continue }
                try backend.removeSystemRecord(name)
                count -= 1
                changed += 1
            case .removePrefix(let prefix):
                for record in try backend.systemRecords(prefix: prefix) {
                    try backend.removeSystemRecord(record.name)
                    count -= 1
                    changed += 1
                }
            case .expect(let name, let value):
                let actual = try backend.systemRecord(name)
                guard actual == value else {
                    throw KVError.systemConditionFailed(
                        "system record \(name.displayString) \(actual == nil ? "does not exist" : value == nil ? "exists" : "holds another value")")
                }
            case .expectNone(let prefix):
                if let first = try backend.systemRecords(prefix: prefix).first {
                    throw KVError.systemConditionFailed("system record \(first.name.displayString) exists")
                }
            }
        }
        guard count <= limits.systemRecordsMax || count <= before else {
            throw KVError.systemRecordsExceeded(count: count, limit: limits.systemRecordsMax)
        }
        return changed
    }
}
