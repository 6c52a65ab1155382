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
            try validateCount(transaction.compares.count + max(transaction.success.count, transaction.failure.count), limits: limits)
            for compare in transaction.compares {
                try validate(key: compare.key, limits: limits)
                if case .value(let value) = compare.target { try validate(value: value, limits: limits) }
            }
            try validateWrites(transaction.success, limits: limits)
            try validateWrites(transaction.failure, limits: limits)
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
        case .compact(let revision):
            guard revision > 0 else { throw .invalidCommand("compaction revision \(revision) is not positive") }
        }
    }

    /// The longest lease: one year.
    public static let leaseTTLMsMax: Int64 = 365 * 24 * 3600 * 1000

    private static func validateCount(_ count: Int, limits: Limits) throws(KVError) {
        guard count <= limits.batchKeysMax else { throw .tooManyOperations(count: count, limit: limits.batchKeysMax) }
    }

    /// Puts and deletes of one atomic command may not touch a key twice: each key gets one new
    /// version per revision.
    private static func validateWrites(_ operations: [TransactionOperation], limits: Limits) throws(KVError) {
        var written = Set<Bytes>()
        var deleted: [KeyBounds] = []
        for operation in operations {
            switch operation {
            case .put(let put):
                try validate(put, limits: limits)
                guard written.insert(put.key).inserted, !deleted.contains(where: { $0.contains(put.key) }) else {
                    throw .duplicateKey(put.key)
                }
            case .delete(let delete):
                try validate(delete.selection, limits: limits)
                let bounds = delete.selection.bounds
                if let clash = written.first(where: { bounds.contains($0) }) { throw .duplicateKey(clash) }
                deleted.append(bounds)
            case .get(let request):
                try validate(request, limits: limits)
            }
        }
    }
}
