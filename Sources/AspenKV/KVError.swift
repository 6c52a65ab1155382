import AspenCore

/// Every way a key-value request can fail. Each case names the bound or the problem; `code` is
/// stable for clients and scripts, `description` is safe to show to a user.
public enum KVError: Error, Sendable, Equatable, CustomStringConvertible {
    case emptyKey
    case keyTooLarge(bytes: Int, limit: Int)
    case valueTooLarge(bytes: Int, limit: Int)
    case tooManyOperations(count: Int, limit: Int)
    case invalidRange(String)
    case duplicateKey(Bytes)
    case compacted(requested: Revision, oldestAvailable: Revision)
    case futureRevision(requested: Revision, current: Revision)
    case leaseNotFound(LeaseID)
    case leaseExists(LeaseID)
    /// A put that keeps the key's value or lease (`ignoreValue`, `ignoreLease`) on a key that does not exist.
    case keyNotFound(Bytes)
    case invalidTTL(ms: Int64, reason: String)
    case invalidContinuation(String)
    case invalidCommand(String)
    /// The storage below failed; the request may be retried.
    case storage(String)
    /// The client's session was forgotten (idle too long, or evicted): what its earlier
    /// attempts did cannot be known. The client starts a new session.
    case sessionExpired(session: UInt64)
    /// A request the client had already acknowledged an answer to came again: its result is gone.
    case sessionResultDiscarded(session: UInt64, sequence: UInt64)
    /// Too many requests of one session await acknowledgement.
    case sessionWindowExceeded(sequence: UInt64, acknowledgedThrough: UInt64, limit: Int)
    /// A system write would leave more system records than `systemRecordsMax`; nothing of it
    /// was applied.
    case systemRecordsExceeded(count: Int, limit: Int)
    /// A condition of a system write did not hold where it applied; nothing of it was applied.
    case systemConditionFailed(String)

    public var code: String {
        switch self {
        case .emptyKey: return "empty_key"
        case .keyTooLarge: return "key_too_large"
        case .valueTooLarge: return "value_too_large"
        case .tooManyOperations: return "too_many_operations"
        case .invalidRange: return "invalid_range"
        case .duplicateKey: return "duplicate_key"
        case .compacted: return "compacted"
        case .futureRevision: return "future_revision"
        case .leaseNotFound: return "lease_not_found"
        case .leaseExists: return "lease_exists"
        case .keyNotFound: return "key_not_found"
        case .invalidTTL: return "invalid_ttl"
        case .invalidContinuation: return "invalid_continuation"
        case .invalidCommand: return "invalid_command"
        case .storage: return "storage"
        case .sessionExpired: return "session_expired"
        case .sessionResultDiscarded: return "session_result_discarded"
        case .sessionWindowExceeded: return "session_window_exceeded"
        case .systemRecordsExceeded: return "system_records_exceeded"
        case .systemConditionFailed: return "system_condition_failed"
        }
    }

    public var description: String {
        switch self {
        case .emptyKey: return "a key must not be empty"
        case .keyTooLarge(let bytes, let limit): return "key of \(bytes) bytes exceeds keyBytesMax (\(limit))"
        case .valueTooLarge(let bytes, let limit): return "value of \(bytes) bytes exceeds valueBytesMax (\(limit))"
        case .tooManyOperations(let count, let limit):
            return "\(count) operations exceed batchKeysMax (\(limit)) for one batch or transaction"
        case .invalidRange(let reason): return "invalid range: \(reason)"
        case .duplicateKey(let key): return "key \(key.displayString) is written twice in one transaction"
        case .compacted(let requested, let oldest):
            return "revision \(requested) has been compacted; the oldest readable revision is \(oldest)"
        case .futureRevision(let requested, let current):
            return "revision \(requested) is in the future (the current revision is \(current))"
        case .leaseNotFound(let id): return "lease \(id) does not exist (expired or revoked)"
        case .leaseExists(let id): return "lease \(id) already exists"
        case .keyNotFound(let key): return "key \(key.displayString) does not exist, so its value or lease cannot be kept"
        case .invalidTTL(let ms, let reason): return "invalid lease TTL of \(ms) ms: \(reason)"
        case .invalidContinuation(let reason): return "invalid continuation token: \(reason)"
        case .invalidCommand(let reason): return "invalid command: \(reason)"
        case .storage(let reason): return "storage failure: \(reason)"
        case .sessionExpired(let session):
            return "client session \(String(session, radix: 16)) expired (idle past clientSessionIdleMsMax, or evicted past clientSessionsMax); the outcome of its unanswered requests cannot be known"
        case .sessionResultDiscarded(let session, let sequence):
            return "request \(sequence) of client session \(String(session, radix: 16)) was already answered and acknowledged; its result is gone"
        case .sessionWindowExceeded(let sequence, let acknowledged, let limit):
            return "request \(sequence) is more than clientSessionResultsMax (\(limit)) past the last acknowledged one (\(acknowledged))"
        case .systemRecordsExceeded(let count, let limit):
            return "the system write would leave \(count) system records, more than systemRecordsMax (\(limit)); nothing of it was applied"
        case .systemConditionFailed(let reason): return "a condition of the system write failed (\(reason)); nothing of it was applied"
        }
    }
}
