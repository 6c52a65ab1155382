import AspenCore

/// Checks requests against `Limits` before anything is proposed; the state machine checks again
/// when it applies, so a command that slipped past a client is refused identically everywhere.
public enum KVValidator {
    public static func validate(key: Bytes, limits: Limits) throws(KVError) {
        guard !key.isEmpty else { throw .emptyKey }
        guard key.count <= limits.keyBytesMax else { throw .keyTooLarge(bytes: key.count, limit: limits.keyBytesMax) }
    }

    public static func validate(value: Bytes, limits: Limits) throws(KVError) {
        guard value.count <= limits.valueBytesMax else {
            throw .valueTooLarge(bytes: value.count, limit: limits.valueBytesMax)
        }
    }

    public static func validate(_ selection: KeySelection, limits: Limits) throws(KVError) {
        switch selection {
        case .key(let key):
            try validate(key: key, limits: limits)
        case .prefix(let prefix):
            guard prefix.count <= limits.keyBytesMax else {
                throw .keyTooLarge(bytes: prefix.count, limit: limits.keyBytesMax)
            }
        case .range(let start, let end):
            guard start.count <= limits.keyBytesMax else { throw .keyTooLarge(bytes: start.count, limit: limits.keyBytesMax) }
            if let end {
                guard end.count <= limits.keyBytesMax else { throw .keyTooLarge(bytes: end.count, limit: limits.keyBytesMax) }
                guard start.lexicographicallyPrecedes(end) else {
                    throw .invalidRange("the start \(start.displayString) is not before the end \(end.displayString)")
                }
            }
        }
    }

    public static func validate(_ put: Put, limits: Limits) throws(KVError) {
        try validate(key: put.key, limits: limits)
        try validate(value: put.value, limits: limits)
        guard put.lease >= 0 else { throw .invalidCommand("lease id \(put.lease) is negative") }
    }

    public static func validate(_ request: RangeRequest, limits: Limits) throws(KVError) {
        try validate(request.selection, limits: limits)
        guard request.revision >= 0 else { throw .invalidCommand("revision \(request.revision) is negative") }
        if let limit = request.limit, limit <= 0 { throw .invalidCommand("a page limit must be positive, not \(limit)") }
    }

    public static func validate(_ command: KVCommand, limits: Limits) throws(KVError) {
        switch command {
        case .put(let put):
            try validate(put, limits: limits)
        case .delete(let delete):
            try validate(delete.selection, limits: limits)
        case .batch(let operations):
            try validateCount(operations.count, limits: limits)
            try validateWrites(operations.map { operation in
                switch operation {
                case .put(let put): return .put(put)
                case .delete(let delete): return .delete(delete)
                }
            }, limits: limits)
        case .transaction(let transaction):
            try validateCount(operationCount(transaction), limits: limits)
            _ = try validate(transaction, depth: 1, limits: limits)
        case .leaseGrant(let grant):
            guard grant.ttlMs > 0 else { throw .invalidTTL(ms: grant.ttlMs, reason: "it must be positive") }
            guard grant.ttlMs <= leaseTTLMsMax else {
                throw .invalidTTL(ms: grant.ttlMs, reason: "it exceeds the maximum of \(leaseTTLMsMax) ms")
            }
            guard grant.id >= 0 else { throw .invalidCommand("lease id \(grant.id) is negative") }
        case .leaseRevoke(let id), .leaseKeepAlive(let id, _):
            guard id > 0 else { throw .invalidCommand("lease id \(id) is not positive") }
        case .expireLeases:
            break
        case .sessioned(let stamp, _, let inner):
            guard stamp.session != 0, stamp.sequence > 0, stamp.acknowledgedThrough < stamp.sequence else {
                throw .invalidCommand(
                    "a session stamp needs a session id, a sequence from 1 and an acknowledged sequence below it, not \(stamp)")
            }
            switch inner {
            case .sessioned, .expireLeases, .system: throw .invalidCommand("a session stamp wraps one client command")
            default: try validate(inner, limits: limits)
            }
        case .compact(let revision):
            guard revision > 0 else { throw .invalidCommand("compaction revision \(revision) is not positive") }
        case .system(let write):
            try validate(write, limits: limits)
        }
    }

    /// The longest lease: one year.
    public static let leaseTTLMsMax: Int64 = 365 * 24 * 3600 * 1000

    private static func validateCount(_ count: Int, limits: Limits) throws(KVError) {
        guard count <= limits.batchKeysMax else { throw .tooManyOperations(count: count, limit: limits.batchKeysMax) }
    }

    /// What a transaction counts against `batchKeysMax`: its compares and the larger of its
    /// branches, nested transactions included.
    public static func operationCount(_ transaction: Transaction) -> Int {
        func count(_ branch: [TransactionOperation]) -> Int {
            branch.reduce(0) { total, operation in
                if case .transaction(let nested) = operation { return total + 1 + operationCount(nested) }
                return total + 1
            }
        }
        return transaction.compares.count + max(count(transaction.success), count(transaction.failure))
    }

    /// The keys a command's writes may touch: each at most once per revision.
    struct Writes {
        var keys = Set<Bytes>()
        var deleted: [KeyBounds] = []

        mutating func put(_ key: Bytes) throws(KVError) {
            guard keys.insert(key).inserted, !deleted.contains(where: { $0.contains(key) }) else { throw .duplicateKey(key) }
        }

        mutating func delete(_ bounds: KeyBounds) throws(KVError) {
            if let clash = keys.first(where: { bounds.contains($0) }) { throw .duplicateKey(clash) }
            deleted.append(bounds)
        }

        /// Adds writes that may happen along with these (a nested transaction's).
        mutating func add(_ other: Writes) throws(KVError) {
            for key in other.keys { try put(key) }
            for bounds in other.deleted { try delete(bounds) }
        }

        /// Writes of which only one set happens (a transaction's two branches).
        func either(_ other: Writes) -> Writes {
            Writes(keys: keys.union(other.keys), deleted: deleted + other.deleted)
        }
    }

    /// A transaction at nesting `depth`; returns the writes either of its branches may make.
    private static func validate(_ transaction: Transaction, depth: Int, limits: Limits) throws(KVError) -> Writes {
        guard depth <= limits.transactionDepthMax else {
            throw .invalidCommand("transactions are nested deeper than transactionDepthMax (\(limits.transactionDepthMax))")
        }
        for compare in transaction.compares {
            try validate(key: compare.key, limits: limits)
            if case .value(let value) = compare.target { try validate(value: value, limits: limits) }
            if case .range(let end?) = compare.extent, end.count > limits.keyBytesMax {
                throw KVError.keyTooLarge(bytes: end.count, limit: limits.keyBytesMax)
            }
        }
        let success = try validateWrites(transaction.success, depth: depth, limits: limits)
        let failure = try validateWrites(transaction.failure, depth: depth, limits: limits)
        return success.either(failure)
    }

    /// Puts and deletes of one atomic command may not touch a key twice: each key gets one new
    /// version per revision. A nested transaction counts with everything either of its branches
    /// may write (as etcd checks).
    @discardableResult
    private static func validateWrites(_ operations: [TransactionOperation], depth: Int = 1, limits: Limits) throws(KVError) -> Writes {
        var writes = Writes()
        for operation in operations {
            switch operation {
            case .put(let put):
                try validate(put, limits: limits)
                try writes.put(put.key)
            case .delete(let delete):
                try validate(delete.selection, limits: limits)
                try writes.delete(delete.selection.bounds)
            case .get(let request):
                try validate(request, limits: limits)
                // A page token names a revision and a position of its own; inside a transaction
                // a read sees the transaction's state, so a token there has no meaning.
                guard request.continuation == nil else {
                    throw .invalidCommand("a read inside a transaction takes no continuation token; page with a scan outside it")
                }
            case .transaction(let nested):
                try writes.add(try validate(nested, depth: depth + 1, limits: limits))
            }
        }
        return writes
    }
}
