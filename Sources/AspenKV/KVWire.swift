import AspenCore

/// The wire forms of what a client sends and receives in the `kv` domain: write requests (as the
/// commands they become, minus anything only a leader may propose), reads, results and errors.
public enum KVWire {
    // MARK: Requests

    public static func encode(_ request: KVWriteRequest) -> Bytes { request.command(nowMs: 0).encoded() }

    /// A write carried by a client session: applied once however often it is sent.
    public static func encode(_ request: KVWriteRequest, stamp: ClientStamp) -> Bytes {
        KVCommand.sessioned(stamp, nowMs: 0, request.command(nowMs: 0)).encoded()
    }

    /// Decodes a client's write and the session stamp it carries, if any.
    public static func decodeClientWrite(_ bytes: Bytes, limits: Limits = .standard) throws(DecodingError)
        -> (request: KVWriteRequest, stamp: ClientStamp?)
    {
        let command = try KVCommand(decoding: bytes, limits: limits)
        guard case .sessioned(let stamp, _, let inner) = command else { return (try request(of: command), nil) }
        return (try request(of: inner), stamp)
    }

    /// Decodes a client's write. Commands only the node proposes (lease expiry, system writes)
    /// are refused.
    public static func decodeWrite(_ bytes: Bytes, limits: Limits = .standard) throws(DecodingError) -> KVWriteRequest {
        try request(of: try KVCommand(decoding: bytes, limits: limits))
    }

    static func request(of command: KVCommand) throws(DecodingError) -> KVWriteRequest {
        switch command {
        case .put(let put): return .put(put)
        case .delete(let delete): return .delete(delete)
        case .transaction(let transaction): return .transaction(transaction)
        case .batch(let operations): return .batch(operations)
        case .leaseGrant(let grant): return .leaseGrant(id: grant.id, ttlMs: grant.ttlMs)
        case .leaseRevoke(let id): return .leaseRevoke(id)
        case .leaseKeepAlive(let id, _): return .leaseKeepAlive(id)
        case .compact(let revision): return .compact(revision)
        case .expireLeases: throw .invalid("lease expiry is proposed by the leader, not by clients")
        case .system: throw .invalid("system records are written by the node, not by clients")
        case .sessioned: throw .invalid("a session stamp wraps one command, not another stamped one")
        }
    }

    public static func encode(_ request: RangeRequest, consistency: ReadConsistency) -> Bytes {
        var writer = ByteWriter()
        writer.write(consistency == .linearizable ? 0 : 1)
        KVCodec.write(TransactionOperation.get(request), into: &writer)
        return writer.bytes
    }

    public static func decodeRead(_ bytes: Bytes, limits: Limits = .standard) throws(DecodingError) -> (RangeRequest, ReadConsistency) {
        var reader = ByteReader(bytes)
        let consistency: ReadConsistency = try reader.readByte() == 0 ? .linearizable : .stale
        guard case .get(let request) = try KVCodec(limits: limits).readOperation(&reader) else {
            throw .invalid("a read must carry a range request")
        }
        try reader.expectEnd()
        return (request, consistency)
    }

    // MARK: Results

    static func write(_ kv: KeyValue, into writer: inout ByteWriter) {
        writer.writeBytes(kv.key)
        writer.writeBytes(kv.value)
        writer.writeVarint(signed: kv.createRevision)
        writer.writeVarint(signed: kv.modRevision)
        writer.writeVarint(signed: kv.version)
        writer.writeVarint(signed: kv.lease)
    }

    static func readKeyValue(_ reader: inout ByteReader) throws(DecodingError) -> KeyValue {
        KeyValue(
            key: try reader.readBytes(limit: Limits.standard.keyBytesMax), value: try reader.readBytes(limit: Limits.standard.valueBytesMax),
            createRevision: try reader.readSignedVarint(), modRevision: try reader.readSignedVarint(),
            version: try reader.readSignedVarint(), lease: try reader.readSignedVarint())
    }

    static func write(_ kvs: [KeyValue], into writer: inout ByteWriter) {
        writer.writeVarint(UInt64(kvs.count))
        for kv in kvs { write(kv, into: &writer) }
    }

    static func readKeyValues(_ reader: inout ByteReader) throws(DecodingError) -> [KeyValue] {
        let count = try reader.readCount(limit: reader.remaining)
        var kvs: [KeyValue] = []
        for _ in 0..<count { kvs.append(try readKeyValue(&reader)) }
        return kvs
    }

    static func write(_ lease: Lease, into writer: inout ByteWriter) {
        writer.writeVarint(signed: lease.id)
        writer.writeVarint(signed: lease.ttlMs)
        writer.writeVarint(signed: lease.expiresAtMs)
    }

    static func readLease(_ reader: inout ByteReader) throws(DecodingError) -> Lease {
        Lease(id: try reader.readSignedVarint(), ttlMs: try reader.readSignedVarint(), expiresAtMs: try reader.readSignedVarint())
    }

    public static func encode(_ result: RangeResult) -> Bytes {
        var writer = ByteWriter()
        write(result, into: &writer)
        return writer.bytes
    }

    public static func decodeRange(_ bytes: Bytes) throws(DecodingError) -> RangeResult {
        var reader = ByteReader(bytes)
        let result = try readRange(&reader)
        try reader.expectEnd()
        return result
    }

    static func write(_ result: RangeResult, into writer: inout ByteWriter) {
        write(result.kvs, into: &writer)
        writer.writeVarint(UInt64(result.count))
        writer.write(result.more)
        writer.writeOptionalBytes(result.continuation)
        writer.write(result.limitClamped)
        writer.writeVarint(signed: result.revision)
    }

    static func readRange(_ reader: inout ByteReader) throws(DecodingError) -> RangeResult {
        RangeResult(
            kvs: try readKeyValues(&reader), count: try reader.readCount(limit: Int.max), more: try reader.readBool(),
            continuation: try reader.readOptionalBytes(limit: 4096), limitClamped: try reader.readBool(),
            revision: try reader.readSignedVarint())
    }

    static func write(_ result: PutResult, into writer: inout ByteWriter) {
        writer.writeVarint(signed: result.revision)
        writer.write(result.previous != nil)
        if let previous = result.previous { write(previous, into: &writer) }
    }

    static func readPut(_ reader: inout ByteReader) throws(DecodingError) -> PutResult {
        let revision = try reader.readSignedVarint()
        return PutResult(revision: revision, previous: try reader.readBool() ? try readKeyValue(&reader) : nil)
    }

    static func write(_ result: DeleteResult, into writer: inout ByteWriter) {
        writer.writeVarint(signed: result.revision)
        writer.writeVarint(UInt64(result.deleted))
        write(result.previous, into: &writer)
    }

    static func readDelete(_ reader: inout ByteReader) throws(DecodingError) -> DeleteResult {
        DeleteResult(revision: try reader.readSignedVarint(), deleted: try reader.readCount(limit: Int.max), previous: try readKeyValues(&reader))
    }

    static func write(_ result: TransactionResult, into writer: inout ByteWriter) {
        writer.write(result.succeeded)
        writer.writeVarint(signed: result.revision)
        writer.writeVarint(UInt64(result.results.count))
        for operation in result.results {
            switch operation {
            case .put(let put):
                writer.write(0)
                write(put, into: &writer)
            case .delete(let delete):
                writer.write(1)
                write(delete, into: &writer)
            case .get(let range):
                writer.write(2)
                write(range, into: &writer)
            case .transaction(let nested):
                writer.write(3)
                write(nested, into: &writer)
            }
        }
    }

    /// A transaction's result at nesting `depth`, refused deeper than the standard limit.
    static func readTransaction(_ reader: inout ByteReader, depth: Int) throws(DecodingError) -> TransactionResult {
        guard depth <= Limits.standard.transactionDepthMax else { throw .invalid("transaction results nested too deep") }
        let succeeded = try reader.readBool()
        let revision = try reader.readSignedVarint()
        let count = try reader.readCount(limit: Limits.standard.batchKeysMax * 2)
        var results: [TransactionOperationResult] = []
        for _ in 0..<count {
            switch try reader.readByte() {
            case 0: results.append(.put(try readPut(&reader)))
            case 1: results.append(.delete(try readDelete(&reader)))
            case 2: results.append(.get(try readRange(&reader)))
            case 3: results.append(.transaction(try readTransaction(&reader, depth: depth + 1)))
            case let tag: throw .unknownTag(tag, context: "transaction result")
            }
        }
        return TransactionResult(succeeded: succeeded, revision: revision, results: results)
    }

    public static func encode(_ result: KVResult) -> Bytes {
        var writer = ByteWriter()
        switch result {
        case .put(let put):
            writer.write(1)
            write(put, into: &writer)
        case .delete(let delete):
            writer.write(2)
            write(delete, into: &writer)
        case .transaction(let transaction):
            writer.write(3)
            write(transaction, into: &writer)
        case .batch(let revision):
            writer.write(4)
            writer.writeVarint(signed: revision)
        case .leaseGranted(let lease):
            writer.write(5)
            write(lease, into: &writer)
        case .leaseRevoked(let id, let deleted, let revision):
            writer.write(6)
            writer.writeVarint(signed: id)
            writer.writeVarint(UInt64(deleted))
            writer.writeVarint(signed: revision)
        case .leaseKeptAlive(let lease):
            writer.write(7)
            write(lease, into: &writer)
        case .leasesExpired(let ids, let revision):
            writer.write(8)
            writer.writeVarint(UInt64(ids.count))
            for id in ids { writer.writeVarint(signed: id) }
            writer.writeVarint(signed: revision)
        case .compacted(let revision):
            writer.write(9)
            writer.writeVarint(signed: revision)
        case .systemWritten(let changed):
            writer.write(10)
            writer.writeVarint(UInt64(changed))
        }
        return writer.bytes
    }

    public static func decodeResult(_ bytes: Bytes) throws(DecodingError) -> KVResult {
        var reader = ByteReader(bytes)
        let result: KVResult
        switch try reader.readByte() {
        case 1: result = .put(try readPut(&reader))
        case 2: result = .delete(try readDelete(&reader))
        case 3: result = .transaction(try readTransaction(&reader, depth: 1))
        case 4: result = .batch(revision: try reader.readSignedVarint())
        case 5: result = .leaseGranted(try readLease(&reader))
        case 6: result = .leaseRevoked(id: try reader.readSignedVarint(), deletedKeys: try reader.readCount(limit: Int.max), revision: try reader.readSignedVarint())
        case 7: result = .leaseKeptAlive(try readLease(&reader))
        case 8:
            let count = try reader.readCount(limit: reader.remaining)
            var ids: [LeaseID] = []
            for _ in 0..<count { ids.append(try reader.readSignedVarint()) }
            result = .leasesExpired(ids, revision: try reader.readSignedVarint())
        case 9: result = .compacted(try reader.readSignedVarint())
        case 10: result = .systemWritten(changed: try reader.readCount(limit: Int.max))
        case let tag: throw .unknownTag(tag, context: "key-value result")
        }
        try reader.expectEnd()
        return result
    }

    public static func encode(_ status: LeaseStatus) -> Bytes {
        var writer = ByteWriter()
        write(status.lease, into: &writer)
        writer.writeVarint(signed: status.remainingMs)
        writer.writeVarint(UInt64(status.keys.count))
        for key in status.keys { writer.writeBytes(key) }
        return writer.bytes
    }

    public static func decodeLeaseStatus(_ bytes: Bytes) throws(DecodingError) -> LeaseStatus {
        var reader = ByteReader(bytes)
        let lease = try readLease(&reader)
        let remaining = try reader.readSignedVarint()
        let count = try reader.readCount(limit: reader.remaining)
        var keys: [Bytes] = []
        for _ in 0..<count { keys.append(try reader.readBytes(limit: Limits.standard.keyBytesMax)) }
        try reader.expectEnd()
        return LeaseStatus(lease: lease, remainingMs: remaining, keys: keys)
    }

    public static func encode(_ leases: [Lease]) -> Bytes {
        var writer = ByteWriter()
        writer.writeVarint(UInt64(leases.count))
        for lease in leases { write(lease, into: &writer) }
        return writer.bytes
    }

    public static func decodeLeases(_ bytes: Bytes) throws(DecodingError) -> [Lease] {
        var reader = ByteReader(bytes)
        let count = try reader.readCount(limit: reader.remaining)
        var leases: [Lease] = []
        for _ in 0..<count { leases.append(try readLease(&reader)) }
        try reader.expectEnd()
        return leases
    }

    // MARK: Errors

    /// A `KVError` with its fields, so the client rethrows exactly what the server found.
    public static func encode(_ error: KVError) -> Bytes {
        var writer = ByteWriter()
        writer.writeString(error.code)
        switch error {
        case .emptyKey: break
        case .keyTooLarge(let bytes, let limit), .valueTooLarge(let bytes, let limit):
            writer.writeVarint(UInt64(bytes))
            writer.writeVarint(UInt64(limit))
        case .tooManyOperations(let count, let limit):
            writer.writeVarint(UInt64(count))
            writer.writeVarint(UInt64(limit))
        case .invalidRange(let text), .invalidContinuation(let text), .invalidCommand(let text), .storage(let text), .systemConditionFailed(let text):
            writer.writeString(text)
        case .duplicateKey(let key), .keyNotFound(let key): writer.writeBytes(key)
        case .compacted(let requested, let oldest):
            writer.writeVarint(signed: requested)
            writer.writeVarint(signed: oldest)
        case .futureRevision(let requested, let current):
            writer.writeVarint(signed: requested)
            writer.writeVarint(signed: current)
        case .leaseNotFound(let id), .leaseExists(let id): writer.writeVarint(signed: id)
        case .invalidTTL(let ms, let reason):
            writer.writeVarint(signed: ms)
            writer.writeString(reason)
        case .sessionExpired(let session): writer.writeVarint(session)
        case .sessionResultDiscarded(let session, let sequence):
            writer.writeVarint(session)
            writer.writeVarint(sequence)
        case .sessionWindowExceeded(let sequence, let acknowledged, let limit):
            writer.writeVarint(sequence)
            writer.writeVarint(acknowledged)
            writer.writeVarint(UInt64(limit))
        case .systemRecordsExceeded(let count, let limit):
            writer.writeVarint(UInt64(count))
            writer.writeVarint(UInt64(limit))
        }
        return writer.bytes
    }

    public static func decodeError(_ bytes: Bytes) throws(DecodingError) -> KVError {
        var reader = ByteReader(bytes)
        let code = try reader.readString(limit: 64)
        let error: KVError
        switch code {
        case "empty_key": error = .emptyKey
        case "key_too_large": error = .keyTooLarge(bytes: try reader.readCount(limit: Int.max), limit: try reader.readCount(limit: Int.max))
        case "value_too_large": error = .valueTooLarge(bytes: try reader.readCount(limit: Int.max), limit: try reader.readCount(limit: Int.max))
        case "too_many_operations": error = .tooManyOperations(count: try reader.readCount(limit: Int.max), limit: try reader.readCount(limit: Int.max))
        case "invalid_range": error = .invalidRange(try reader.readString(limit: 4096))
        case "invalid_continuation": error = .invalidContinuation(try reader.readString(limit: 4096))
        case "invalid_command": error = .invalidCommand(try reader.readString(limit: 4096))
        case "storage": error = .storage(try reader.readString(limit: 4096))
        case "duplicate_key": error = .duplicateKey(try reader.readBytes(limit: Limits.standard.keyBytesMax))
        case "compacted": error = .compacted(requested: try reader.readSignedVarint(), oldestAvailable: try reader.readSignedVarint())
        case "future_revision": error = .futureRevision(requested: try reader.readSignedVarint(), current: try reader.readSignedVarint())
        case "lease_not_found": error = .leaseNotFound(try reader.readSignedVarint())
        case "lease_exists": error = .leaseExists(try reader.readSignedVarint())
        case "key_not_found": error = .keyNotFound(try reader.readBytes(limit: Limits.standard.keyBytesMax))
        case "invalid_ttl": error = .invalidTTL(ms: try reader.readSignedVarint(), reason: try reader.readString(limit: 4096))
        case "session_expired": error = .sessionExpired(session: try reader.readVarint())
        case "session_result_discarded": error = .sessionResultDiscarded(session: try reader.readVarint(), sequence: try reader.readVarint())
        case "session_window_exceeded":
            error = .sessionWindowExceeded(
                sequence: try reader.readVarint(), acknowledgedThrough: try reader.readVarint(), limit: try reader.readCount(limit: Int.max))
        case "system_records_exceeded":
            error = .systemRecordsExceeded(count: try reader.readCount(limit: Int.max), limit: try reader.readCount(limit: Int.max))
        case "system_condition_failed": error = .systemConditionFailed(try reader.readString(limit: 4096))
        default: throw .invalid("unknown error code \(code)")
        }
        try reader.expectEnd()
        return error
    }
}
