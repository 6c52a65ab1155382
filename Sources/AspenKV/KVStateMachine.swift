import AspenCore

/// The deterministic key-value state machine: `apply` decides what a committed command does, and
/// `read` serves reads, over any `KVBackend`. The same code runs in the in-memory store, inside
/// the node's SQLite transaction, and in every test.
///
/// Business outcomes (a failed compare, a missing lease) are part of the result, identical on
/// every node; only storage failures throw.
public enum KVStateMachine {
    /// Applies one committed command. Returns the command's outcome; throws only when the backend fails.
    public static func apply<Backend: KVBackend>(
        _ command: KVCommand, to backend: inout Backend, limits: Limits = .standard
    ) throws -> Result<KVResult, KVError> {
        try applyRecording(command, to: &backend, limits: limits).result
    }

    /// Applies one committed command and also returns the changes it made, for watchers (each
    /// with the version it replaced).
    public static func applyRecording<Backend: KVBackend>(
        _ command: KVCommand, to backend: inout Backend, limits: Limits = .standard
    ) throws -> (result: Result<KVResult, KVError>, events: [WatchEvent]) {
        do {
            try KVValidator.validate(command, limits: limits)
        } catch {
            return (.failure(error), [])
        }
        if case .sessioned(let stamp, let nowMs, let inner) = command {
            return try applyOnce(inner, stamp: stamp, nowMs: nowMs, to: &backend, limits: limits)
        }
        // A command applies whole or not at all: whatever it wrote before it failed is undone,
        // so its writes never show under the next command's revision.
        switch try atomically(&backend, { try run(command, on: &$0, limits: limits) }) {
        case .success(let (result, events)): return (.success(result), events)
        case .failure(let error): return (.failure(error), [])
        }
    }

    /// Runs `body` as one command: its writes are kept if it returns and undone whole if it
    /// throws. A `KVError` (the command's own failure) comes back as the outcome; any other
    /// error is a storage failure, rethrown: the caller's transaction rolls back and the node stops.
    static func atomically<Backend: KVBackend, T>(_ backend: inout Backend, _ body: (inout Backend) throws -> T) throws -> Result<T, KVError> {
        try backend.beginCommand()
        do {
            let value = try body(&backend)
            try backend.endCommand(keepingWrites: true)
            return .success(value)
        } catch let error as KVError {
            try backend.endCommand(keepingWrites: false)
            return .failure(error)
        } catch {
            try? backend.endCommand(keepingWrites: false)
            throw error
        }
    }

    /// Runs a command's writes at the next revision; throws a `KVError` when it fails.
    static func run<Backend: KVBackend>(_ command: KVCommand, on backend: inout Backend, limits: Limits) throws -> (KVResult, [WatchEvent]) {
        var writer = try Writer(backend: backend, limits: limits)
        let result = try writer.run(command, on: &backend)
        if writer.changed { try backend.setRevision(writer.next) }
        return (result, writer.events)
    }

    /// Serves a read from the backend's state.
    public static func read<Backend: KVBackend>(
        _ request: RangeRequest, from backend: Backend, limits: Limits = .standard
    ) throws -> Result<RangeResult, KVError> {
        do {
            return .success(try range(request, backend: backend, limits: limits))
        } catch let error as KVError {
            return .failure(error)
        }
    }

    static func range<Backend: KVBackend>(_ request: RangeRequest, backend: Backend, limits: Limits) throws -> RangeResult {
        try KVValidator.validate(request, limits: limits)
        let bounds = request.selection.bounds
        let current = try backend.revision()
        var revision = request.revision == 0 ? current : request.revision
        var after: Bytes?
        if let token = request.continuation {
            let position = try Continuation.decode(token, bounds: bounds)
            revision = position.revision
            after = position.lastKey
        }
        guard revision <= current else { throw KVError.futureRevision(requested: revision, current: current) }
        let compacted = try backend.compactedRevision()
        guard revision >= compacted else { throw KVError.compacted(requested: revision, oldestAvailable: compacted) }
        let at: Revision? = revision == current ? nil : revision
        if case .key = request.selection, !request.countOnly {
            // One key: its count is whether it exists; no second query.
            var kvs = try backend.scan(bounds, at: at, after: after, limit: 1)
            if request.keysOnly { kvs = kvs.map { var kv = $0; kv.value = []; return kv } }
            return RangeResult(kvs: kvs, count: kvs.count, more: false, continuation: nil, limitClamped: false, revision: revision)
        }
        let count = try backend.count(bounds, at: at)
        if request.countOnly {
            return RangeResult(kvs: [], count: count, more: false, continuation: nil, limitClamped: false, revision: revision)
        }
        let asked = request.limit ?? limits.scanPageDefault
        let limit = max(1, min(asked, limits.scanPageMax))
        var (kvs, cut) = try backend.scan(bounds, at: at, after: after, limit: limit + 1, bytesMax: limits.responseBytesMax)
        let more = kvs.count > limit || cut
        if kvs.count > limit { kvs.removeLast(kvs.count - limit) }
        if request.keysOnly {
            for position in kvs.indices { kvs[position].value = [] }
        }
        let token = more ? Continuation.encode(revision: revision, lastKey: kvs.last!.key, bounds: bounds) : nil
        return RangeResult(
            kvs: kvs, count: count, more: more, continuation: token, limitClamped: asked > limits.scanPageMax,
            revision: revision)
    }
}

extension KVStateMachine {
    /// One command's writes: all at revision `next`, which becomes current only if a key changed.
    struct Writer {
        let current: Revision
        let limits: Limits
        var next: Revision { current + 1 }
        var changed = false
        var events: [WatchEvent] = []

        init<Backend: KVBackend>(backend: Backend, limits: Limits) throws {
            current = try backend.revision()
            self.limits = limits
        }

        mutating func run<Backend: KVBackend>(_ command: KVCommand, on backend: inout Backend) throws -> KVResult {
            switch command {
            case .put(let put): return .put(try self.put(put, on: &backend))
            case .delete(let delete): return .delete(try self.delete(delete, on: &backend))
            case .transaction(let transaction): return .transaction(try self.transaction(transaction, on: &backend))
            case .batch(let operations):
                try Self.requireLeases(of: operations.compactMap { if case .put(let put) = $0 { put } else { nil } }, in: backend)
                for operation in operations {
                    switch operation {
                    case .put(let put): _ = try self.put(put, on: &backend)
                    case .delete(let delete): _ = try self.delete(delete, on: &backend)
                    }
                }
                return .batch(revision: changed ? next : current)
            case .leaseGrant(let grant): return .leaseGranted(try self.grant(grant, on: &backend))
            case .leaseRevoke(let id):
                let deleted = try revoke(id, on: &backend)
                return .leaseRevoked(id: id, deletedKeys: deleted, revision: changed ? next : current)
            case .leaseKeepAlive(let id, let nowMs):
                guard var lease = try backend.lease(id) else { throw KVError.leaseNotFound(id) }
                lease.expiresAtMs = nowMs + lease.ttlMs
                try backend.saveLease(lease)
                return .leaseKeptAlive(lease)
            case .expireLeases(let nowMs):
                let expired = try backend.expiredLeases(atMs: nowMs)
                for id in expired { _ = try revoke(id, on: &backend) }
                return .leasesExpired(expired, revision: changed ? next : current)
            case .compact(let revision):
                guard revision <= current else { throw KVError.futureRevision(requested: revision, current: current) }
                let compacted = try backend.compactedRevision()
                guard revision > compacted else { throw KVError.compacted(requested: revision, oldestAvailable: compacted) }
                try backend.compactHistory(before: revision)
                try backend.setCompactedRevision(revision)
                return .compacted(revision)
            case .sessioned:
                // `applyRecording` unwraps it; the validator refuses one nested in another.
                throw KVError.invalidCommand("a session stamp wraps one client command")
            case .system(let write):
                // Outside the keyspace: no key changes, so no revision and no watch event.
                return .systemWritten(changed: try KVStateMachine.apply(write, on: &backend, limits: limits))
            }
        }

        mutating func put<Backend: KVBackend>(_ put: Put, on backend: inout Backend) throws -> PutResult {
            if !put.ignoreLease, put.lease != 0, try backend.lease(put.lease) == nil { throw KVError.leaseNotFound(put.lease) }
            let previous = try backend.get(put.key, at: nil)
            if put.ignoreValue || put.ignoreLease, previous == nil { throw KVError.keyNotFound(put.key) }
            let keyValue = KeyValue(
                key: put.key, value: put.ignoreValue ? previous!.value : put.value, createRevision: previous?.createRevision ?? next,
                modRevision: next, version: (previous?.version ?? 0) + 1, lease: put.ignoreLease ? previous!.lease : put.lease)
            try backend.write(keyValue)
            changed = true
            events.append(WatchEvent(kind: .put, keyValue: keyValue, previous: previous))
            return PutResult(revision: next, previous: put.returnPrevious ? previous : nil)
        }

        mutating func delete<Backend: KVBackend>(_ delete: Delete, on backend: inout Backend) throws -> DeleteResult {
            let victims = try backend.scan(delete.selection.bounds, at: nil, after: nil, limit: .max)
            for victim in victims {
                try backend.remove(victim.key, at: next)
                events.append(.deletion(of: victim.key, at: next, previous: victim))
            }
            if !victims.isEmpty { changed = true }
            return DeleteResult(
                revision: changed ? next : current, deleted: victims.count,
                previous: delete.returnPrevious ? victims : [])
        }

        mutating func transaction<Backend: KVBackend>(
            _ transaction: Transaction, on backend: inout Backend
        ) throws -> TransactionResult {
            // Every branch on the way, nested ones included, is chosen before anything is
            // written (as etcd does), so the leases of all the puts that will run can be
            // checked first and the command fails whole or not at all.
            let path = try Self.path(of: transaction, backend: backend)
            try Self.requireLeases(of: Self.puts(along: path, of: transaction), in: backend)
            return try run(transaction, along: path, on: &backend)
        }

        /// Which branch a transaction takes, and the paths of the transactions nested in it.
        struct Path {
            var succeeded: Bool
            var nested: [Path]
        }

        static func path<Backend: KVBackend>(of transaction: Transaction, backend: Backend) throws -> Path {
            var succeeded = true
            for compare in transaction.compares where try !holds(compare, backend: backend) {
                succeeded = false
                break
            }
            var nested: [Path] = []
            for operation in succeeded ? transaction.success : transaction.failure {
                if case .transaction(let inner) = operation { nested.append(try path(of: inner, backend: backend)) }
            }
            return Path(succeeded: succeeded, nested: nested)
        }

        static func puts(along path: Path, of transaction: Transaction) -> [Put] {
            var puts: [Put] = []
            var inner = path.nested.makeIterator()
            for operation in path.succeeded ? transaction.success : transaction.failure {
                switch operation {
                case .put(let put): puts.append(put)
                case .transaction(let nested): if let next = inner.next() { puts += Self.puts(along: next, of: nested) }
                case .delete, .get: break
                }
            }
            return puts
        }

        mutating func run<Backend: KVBackend>(
            _ transaction: Transaction, along path: Path, on backend: inout Backend
        ) throws -> TransactionResult {
            var results: [TransactionOperationResult] = []
            var inner = path.nested.makeIterator()
            for operation in path.succeeded ? transaction.success : transaction.failure {
                switch operation {
                case .put(let put): results.append(.put(try self.put(put, on: &backend)))
                case .delete(let delete): results.append(.delete(try self.delete(delete, on: &backend)))
                case .get(let request):
                    // A read inside a transaction sees its earlier writes; one that names a past
                    // revision reads that revision, as etcd's do.
                    results.append(.get(try KVStateMachine.range(request, backend: backend, limits: .standard)))
                case .transaction(let nested):
                    guard let next = inner.next() else { preconditionFailure("a nested transaction without its path") }
                    results.append(.transaction(try run(nested, along: next, on: &backend)))
                }
            }
            return TransactionResult(succeeded: path.succeeded, revision: changed ? next : current, results: results)
        }

        /// Checked before the first write, so that a command fails whole or not at all.
        /// The leases the puts attach exist, and the keys whose value or lease they keep do.
        static func requireLeases<Backend: KVBackend>(of puts: [Put], in backend: Backend) throws {
            for put in puts {
                if !put.ignoreLease, put.lease != 0, try backend.lease(put.lease) == nil { throw KVError.leaseNotFound(put.lease) }
                if put.ignoreValue || put.ignoreLease, try backend.get(put.key, at: nil) == nil { throw KVError.keyNotFound(put.key) }
            }
        }

        static func holds<Backend: KVBackend>(_ compare: Compare, backend: Backend) throws -> Bool {
            guard case .range(let end) = compare.extent else { return try holds(compare, for: try backend.get(compare.key, at: nil)) }
            // Every key of the range, a page at a time, until one fails.
            let bounds = KeyBounds(start: compare.key, end: end)
            var after: Bytes?
            var seen = false
            while true {
                let page = try backend.scan(bounds, at: nil, after: after, limit: 1_000)
                for kv in page where try !holds(compare, for: kv) { return false }
                seen = seen || !page.isEmpty
                guard page.count == 1_000, let last = page.last else { break }
                after = last.key
            }
            if seen { return true }
            return try holds(compare, for: nil)
        }

        /// The compare's test on one key's current version (nil: the key does not exist).
        static func holds(_ compare: Compare, for kv: KeyValue?) throws -> Bool {
            func test<T: Comparable>(_ actual: T, _ expected: T) -> Bool {
                switch compare.op {
                case .equal: return actual == expected
                case .notEqual: return actual != expected
                case .less: return actual < expected
                case .greater: return actual > expected
                }
            }
            switch compare.target {
            case .value(let expected):
                // A missing key has no value: a value compare on it is false, whatever the operator.
                guard let kv else { return false }
                return test(ByteOrder(kv.value), ByteOrder(expected))
            case .version(let expected): return test(kv?.version ?? 0, expected)
            case .createRevision(let expected): return test(kv?.createRevision ?? 0, expected)
            case .modRevision(let expected): return test(kv?.modRevision ?? 0, expected)
            case .lease(let expected): return test(kv?.lease ?? 0, expected)
            }
        }

        mutating func grant<Backend: KVBackend>(_ grant: LeaseGrant, on backend: inout Backend) throws -> Lease {
            let sequence = try backend.leaseSequence()
            let id = grant.id == 0 ? sequence + 1 : grant.id
            if try backend.lease(id) != nil { throw KVError.leaseExists(id) }
            let lease = Lease(id: id, ttlMs: grant.ttlMs, expiresAtMs: grant.nowMs + grant.ttlMs)
            try backend.saveLease(lease)
            if id > sequence { try backend.setLeaseSequence(id) }
            return lease
        }

        mutating func revoke<Backend: KVBackend>(_ id: LeaseID, on backend: inout Backend) throws -> Int {
            guard try backend.lease(id) != nil else { throw KVError.leaseNotFound(id) }
            let keys = try backend.keys(attachedTo: id)
            for key in keys {
                let previous = try backend.get(key, at: nil)
                try backend.remove(key, at: next)
                events.append(.deletion(of: key, at: next, previous: previous))
            }
            if !keys.isEmpty { changed = true }
            try backend.deleteLease(id)
            return keys.count
        }
    }
}

/// Bytes compared in key order.
struct ByteOrder: Comparable {
    var bytes: Bytes
    init(_ bytes: Bytes) { self.bytes = bytes }
    static func < (lhs: ByteOrder, rhs: ByteOrder) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}

/// The opaque token that resumes a scan: the revision it reads and the last key returned, tied to
/// the selection so that it cannot be replayed against another range.
enum Continuation {
    static let version: UInt8 = 1

    static func encode(revision: Revision, lastKey: Bytes, bounds: KeyBounds) -> Bytes {
        var writer = ByteWriter()
        writer.write(version)
        writer.writeVarint(signed: revision)
        writer.writeBytes(lastKey)
        writer.writeFixed(fingerprint(bounds))
        return writer.bytes
    }

    static func decode(_ token: Bytes, bounds: KeyBounds) throws(KVError) -> (revision: Revision, lastKey: Bytes) {
        var reader = ByteReader(token)
        do {
            guard try reader.readByte() == version else { throw KVError.invalidContinuation("unknown token version") }
            let revision = try reader.readSignedVarint()
            let lastKey = try reader.readBytes(limit: Limits.standard.keyBytesMax)
            let check = try reader.readFixed32()
            try reader.expectEnd()
            guard check == fingerprint(bounds) else {
                throw KVError.invalidContinuation("the token belongs to another range")
            }
            guard revision > 0 else { throw KVError.invalidContinuation("bad revision") }
            return (revision, lastKey)
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError.invalidContinuation("\(error)")
        }
    }

    static func fingerprint(_ bounds: KeyBounds) -> UInt32 {
        var writer = ByteWriter()
        writer.writeBytes(bounds.start)
        writer.writeOptionalBytes(bounds.end)
        return CRC32C.checksum(writer.bytes)
    }
}
