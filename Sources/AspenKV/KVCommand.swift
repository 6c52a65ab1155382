import AspenCore

/// A write put through the Raft log. Applying one is a pure function of the state and the
/// command: every node that applies it reaches the same state and the same result. Time, where a
/// command needs it, is the leader's clock stamped into the command (`nowMs`).
public enum KVCommand: Sendable, Equatable {
    case put(Put)
    case delete(Delete)
    case transaction(Transaction)
    /// Puts and deletes applied atomically, at one revision.
    case batch([WriteOperation])
    case leaseGrant(LeaseGrant)
    case leaseRevoke(LeaseID)
    case leaseKeepAlive(LeaseID, nowMs: Int64)
    /// Proposed by the leader: revoke every lease whose expiry is at or before `nowMs`.
    case expireLeases(nowMs: Int64)
    /// Drop history before `revision`; reads at earlier revisions then fail with `compacted`.
    case compact(Revision)
    /// A client's command, applied at most once per (session, sequence); `nowMs` is the
    /// leader's clock, by which idle sessions are forgotten.
    indirect case sessioned(ClientStamp, nowMs: Int64, KVCommand)
    /// Proposed by the node, never by a client: changes to the system records, the cluster's
    /// own metadata, kept outside the keyspace (see `SystemWrite`).
    case system(SystemWrite)
}

public struct Put: Sendable, Equatable {
    public var key: Bytes
    public var value: Bytes
    public var lease: LeaseID
    /// Return the key's previous value in the result.
    public var returnPrevious: Bool
    /// Keep the key's current value (etcd's `ignore_value`); the key must exist.
    public var ignoreValue: Bool
    /// Keep the key's current lease (etcd's `ignore_lease`); the key must exist.
    public var ignoreLease: Bool

    public init(
        key: Bytes, value: Bytes, lease: LeaseID = 0, returnPrevious: Bool = false, ignoreValue: Bool = false, ignoreLease: Bool = false
    ) {
        self.key = key
        self.value = value
        self.lease = lease
        self.returnPrevious = returnPrevious
        self.ignoreValue = ignoreValue
        self.ignoreLease = ignoreLease
    }
}

public struct Delete: Sendable, Equatable {
    public var selection: KeySelection
    public var returnPrevious: Bool

    public init(_ selection: KeySelection, returnPrevious: Bool = false) {
        self.selection = selection
        self.returnPrevious = returnPrevious
    }
}

public enum WriteOperation: Sendable, Equatable {
    case put(Put)
    case delete(Delete)
}

/// `if compares then success else failure`, atomically, at one revision.
public struct Transaction: Sendable, Equatable {
    public var compares: [Compare]
    public var success: [TransactionOperation]
    public var failure: [TransactionOperation]

    public init(compares: [Compare], success: [TransactionOperation], failure: [TransactionOperation] = []) {
        self.compares = compares
        self.success = success
        self.failure = failure
    }
}

public enum TransactionOperation: Sendable, Equatable {
    case put(Put)
    case delete(Delete)
    case get(RangeRequest)
    /// A transaction inside a transaction (etcd's nested Txn): its compares are decided, with
    /// the outer ones, against the state before the command writes anything.
    case transaction(Transaction)
}

public struct Compare: Sendable, Equatable {
    public enum Target: Sendable, Equatable {
        case value(Bytes)
        case version(Int64)
        case createRevision(Revision)
        case modRevision(Revision)
        case lease(LeaseID)
    }

    public enum Operator: String, Sendable, Equatable {
        case equal = "="
        case notEqual = "!="
        case less = "<"
        case greater = ">"
    }

    /// What the compare looks at: the one key, or every current key of a range that starts at
    /// `key` (etcd's `range_end`; an end of nil runs to the last key). A range holds when every
    /// key in it passes; an empty one is judged as one missing key.
    public enum Extent: Sendable, Equatable {
        case key
        case range(end: Bytes?)
    }

    public var key: Bytes
    public var target: Target
    public var op: Operator
    public var extent: Extent

    public init(key: Bytes, _ target: Target, _ op: Operator = .equal, extent: Extent = .key) {
        self.key = key
        self.target = target
        self.op = op
        self.extent = extent
    }

    /// "The key does not exist" (its version is 0).
    public static func absent(_ key: Bytes) -> Compare { Compare(key: key, .version(0)) }
}

public struct LeaseGrant: Sendable, Equatable {
    /// 0 lets the state machine choose the id.
    public var id: LeaseID
    public var ttlMs: Int64
    public var nowMs: Int64

    public init(id: LeaseID = 0, ttlMs: Int64, nowMs: Int64) {
        self.id = id
        self.ttlMs = ttlMs
        self.nowMs = nowMs
    }
}

/// A read: one key, a prefix or a range, at the current or a past revision, one page at a time.
public struct RangeRequest: Sendable, Equatable {
    public var selection: KeySelection
    /// 0 reads the current revision.
    public var revision: Revision
    /// Keys per page; nil is `scanPageDefault`, above `scanPageMax` is clamped.
    public var limit: Int?
    public var keysOnly: Bool
    public var countOnly: Bool
    /// From a previous page's result; continues at the same revision.
    public var continuation: Bytes?

    public init(
        _ selection: KeySelection, revision: Revision = 0, limit: Int? = nil, keysOnly: Bool = false,
        countOnly: Bool = false, continuation: Bytes? = nil
    ) {
        self.selection = selection
        self.revision = revision
        self.limit = limit
        self.keysOnly = keysOnly
        self.countOnly = countOnly
        self.continuation = continuation
    }
}

// MARK: Results

public enum KVResult: Sendable, Equatable {
    case put(PutResult)
    case delete(DeleteResult)
    case transaction(TransactionResult)
    case batch(revision: Revision)
    case leaseGranted(Lease)
    case leaseRevoked(id: LeaseID, deletedKeys: Int, revision: Revision)
    case leaseKeptAlive(Lease)
    case leasesExpired([LeaseID], revision: Revision)
    case compacted(Revision)
    /// How many system records a system write created, changed or removed.
    case systemWritten(changed: Int)
}

public struct PutResult: Sendable, Equatable {
    public var revision: Revision
    public var previous: KeyValue?
}

public struct DeleteResult: Sendable, Equatable {
    public var revision: Revision
    public var deleted: Int
    public var previous: [KeyValue]
}

public struct TransactionResult: Sendable, Equatable {
    public var succeeded: Bool
    public var revision: Revision
    public var results: [TransactionOperationResult]
}

public enum TransactionOperationResult: Sendable, Equatable {
    case put(PutResult)
    case delete(DeleteResult)
    case get(RangeResult)
    case transaction(TransactionResult)
}

public struct RangeResult: Sendable, Equatable {
    public var kvs: [KeyValue]
    /// Keys matching the whole selection at `revision` (not only this page).
    public var count: Int
    /// More keys follow this page; pass `continuation` to get them.
    public var more: Bool
    public var continuation: Bytes?
    /// The page asked for was larger than `scanPageMax` and was cut to it.
    public var limitClamped: Bool
    /// The revision this result reflects.
    public var revision: Revision
}
