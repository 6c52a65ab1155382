import AspenCore

/// How fresh a read must be.
public enum ReadConsistency: String, Sendable {
    /// Reflects every write acknowledged before the read began (ReadIndex through the leader).
    case linearizable
    /// The local state, possibly behind the leader; never blocks on the network.
    case stale
}

/// A write as a client asks for it. The store turns it into a `KVCommand`, stamping the
/// leader's clock where time matters (lease grants and keep-alives).
public enum KVWriteRequest: Sendable, Equatable {
    case put(Put)
    case delete(Delete)
    case transaction(Transaction)
    case batch([WriteOperation])
    case leaseGrant(id: LeaseID, ttlMs: Int64)
    case leaseRevoke(LeaseID)
    case leaseKeepAlive(LeaseID)
    case compact(Revision)

    /// Whether the command carries no time of its own. Only such writes may be stamped and
    /// proposed on a follower; lease grants and keep-alives take the leader's clock.
    public var isTimeless: Bool {
        switch self {
        case .leaseGrant, .leaseKeepAlive: return false
        default: return true
        }
    }

    /// The command to propose, with the leader's time.
    public func command(nowMs: Int64) -> KVCommand {
        switch self {
        case .put(let put): return .put(put)
        case .delete(let delete): return .delete(delete)
        case .transaction(let transaction): return .transaction(transaction)
        case .batch(let operations): return .batch(operations)
        case .leaseGrant(let id, let ttlMs): return .leaseGrant(LeaseGrant(id: id, ttlMs: ttlMs, nowMs: nowMs))
        case .leaseRevoke(let id): return .leaseRevoke(id)
        case .leaseKeepAlive(let id): return .leaseKeepAlive(id, nowMs: nowMs)
        case .compact(let revision): return .compact(revision)
        }
    }
}

/// A lease and how long it has left, by the answering node's clock.
public struct LeaseStatus: Sendable, Equatable {
    public var lease: Lease
    public var remainingMs: Int64
    public var keys: [Bytes]

    public init(lease: Lease, remainingMs: Int64, keys: [Bytes]) {
        self.lease = lease
        self.remainingMs = remainingMs
        self.keys = keys
    }
}

/// Aspen's ordered, versioned key-value store, as every layer and client sees it: the same
/// protocol is implemented in memory (`MemoryKeyValueStore`), by a node over Raft, and by the
/// client over the network. Failures are `KVError`s.
public protocol KeyValueStore: Sendable {
    func write(_ request: KVWriteRequest) async throws -> KVResult
    func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult
    func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus
    func leases() async throws -> [Lease]
}

/// What a compare-and-swap or compare-and-delete found.
public struct ConditionalResult: Sendable, Equatable {
    public var succeeded: Bool
    public var revision: Revision
    /// The key's value when the condition failed (nil if absent).
    public var current: KeyValue?
}

extension KeyValueStore {
    @discardableResult
    public func put(_ key: Bytes, _ value: Bytes, lease: LeaseID = 0, returnPrevious: Bool = false) async throws -> PutResult {
        guard case .put(let result) = try await write(.put(Put(key: key, value: value, lease: lease, returnPrevious: returnPrevious))) else {
            throw KVError.invalidCommand("unexpected result for put")
        }
        return result
    }

    public func get(_ key: Bytes, revision: Revision = 0, consistency: ReadConsistency = .linearizable) async throws -> KeyValue? {
        try await read(RangeRequest(.key(key), revision: revision, limit: 1), consistency: consistency).kvs.first
    }

    @discardableResult
    public func delete(_ selection: KeySelection, returnPrevious: Bool = false) async throws -> DeleteResult {
        guard case .delete(let result) = try await write(.delete(Delete(selection, returnPrevious: returnPrevious))) else {
            throw KVError.invalidCommand("unexpected result for delete")
        }
        return result
    }

    @discardableResult
    public func delete(_ key: Bytes) async throws -> DeleteResult { try await delete(.key(key)) }

    public func transaction(_ transaction: Transaction) async throws -> TransactionResult {
        guard case .transaction(let result) = try await write(.transaction(transaction)) else {
            throw KVError.invalidCommand("unexpected result for transaction")
        }
        return result
    }

    /// Sets `key` to `new` only if its value is `expected` (nil: only if it does not exist).
    public func compareAndSwap(_ key: Bytes, expected: Bytes?, new: Bytes, lease: LeaseID = 0) async throws -> ConditionalResult {
        let compare = expected.map { Compare(key: key, .value($0)) } ?? .absent(key)
        return try await conditional(compare, then: .put(Put(key: key, value: new, lease: lease)), key: key)
    }

    /// Deletes `key` only if its value is `expected`.
    public func compareAndDelete(_ key: Bytes, expected: Bytes) async throws -> ConditionalResult {
        try await conditional(Compare(key: key, .value(expected)), then: .delete(Delete(.key(key))), key: key)
    }

    private func conditional(_ compare: Compare, then operation: TransactionOperation, key: Bytes) async throws -> ConditionalResult {
        let result = try await transaction(
            Transaction(compares: [compare], success: [operation], failure: [.get(RangeRequest(.key(key)))]))
        var current: KeyValue?
        if !result.succeeded, case .get(let range)? = result.results.first { current = range.kvs.first }
        return ConditionalResult(succeeded: result.succeeded, revision: result.revision, current: current)
    }

    /// Writes all operations atomically, at one revision.
    @discardableResult
    public func batch(_ operations: [WriteOperation]) async throws -> Revision {
        guard case .batch(let revision) = try await write(.batch(operations)) else {
            throw KVError.invalidCommand("unexpected result for batch")
        }
        return revision
    }

    /// Reads several keys at one revision.
    public func getMany(_ keys: [Bytes], consistency: ReadConsistency = .linearizable) async throws -> [KeyValue?] {
        guard let first = keys.first else { return [] }
        let head = try await read(RangeRequest(.key(first), limit: 1), consistency: consistency)
        var values: [KeyValue?] = [head.kvs.first]
        for key in keys.dropFirst() {
            let page = try await read(RangeRequest(.key(key), revision: head.revision, limit: 1), consistency: .stale)
            values.append(page.kvs.first)
        }
        return values
    }

    /// One page of a scan.
    public func scan(
        _ selection: KeySelection, limit: Int? = nil, continuation: Bytes? = nil, keysOnly: Bool = false,
        revision: Revision = 0, consistency: ReadConsistency = .linearizable
    ) async throws -> RangeResult {
        try await read(
            RangeRequest(selection, revision: revision, limit: limit, keysOnly: keysOnly, continuation: continuation),
            consistency: consistency)
    }

    public func count(_ selection: KeySelection, consistency: ReadConsistency = .linearizable) async throws -> Int {
        try await read(RangeRequest(selection, countOnly: true), consistency: consistency).count
    }

    public func grantLease(ttlMs: Int64, id: LeaseID = 0) async throws -> Lease {
        guard case .leaseGranted(let lease) = try await write(.leaseGrant(id: id, ttlMs: ttlMs)) else {
            throw KVError.invalidCommand("unexpected result for lease grant")
        }
        return lease
    }

    @discardableResult
    public func keepAlive(_ id: LeaseID) async throws -> Lease {
        guard case .leaseKeptAlive(let lease) = try await write(.leaseKeepAlive(id)) else {
            throw KVError.invalidCommand("unexpected result for lease keep-alive")
        }
        return lease
    }

    /// Revokes the lease and deletes its keys; returns how many keys went.
    @discardableResult
    public func revokeLease(_ id: LeaseID) async throws -> Int {
        guard case .leaseRevoked(_, let deleted, _) = try await write(.leaseRevoke(id)) else {
            throw KVError.invalidCommand("unexpected result for lease revoke")
        }
        return deleted
    }

    public func compact(_ revision: Revision) async throws {
        _ = try await write(.compact(revision))
    }
}
