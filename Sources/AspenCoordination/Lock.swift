import AspenCore
import AspenKV
import AspenLayer

/// Why a coordination request failed.
public enum CoordinationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The lock is held by someone else (after waiting, if a wait was asked for).
    case held(name: String, holder: String, token: Int64)
    /// The token is not the current holder's: the lock expired and may have been taken over.
    case staleToken(name: String, token: Int64, current: Int64?)
    case notHeld(name: String)
    case invalidArgument(String)
    case contention(attempts: Int)

    public var description: String {
        switch self {
        case .held(let name, let holder, let token): return "lock \(name) is held by \(holder) (token \(token))"
        case .staleToken(let name, let token, let current):
            return "token \(token) of lock \(name) is stale" + (current.map { "; the current token is \($0)" } ?? "; the lock is free")
        case .notHeld(let name): return "lock \(name) is not held"
        case .invalidArgument(let reason): return reason
        case .contention(let attempts): return "too much contention: gave up after \(attempts) attempts (casRetriesMax)"
        }
    }
}

/// Bounds of the coordination layers (named once, like `Limits`).
public struct CoordinationLimits: Sendable {
    /// Longest a caller may wait for a lock.
    public var lockWaitMsMax: Int64 = 300_000
    /// Longest lock TTL, and shortest.
    public var lockTTLMsMax: Int64 = 3_600_000
    public var lockTTLMsMin: Int64 = 100
    /// Attempts of one compare-and-swap loop before giving up.
    public var casRetriesMax = 100
    public var nameBytesMax = 255
    /// Locks in one lock set.
    public var lockSetLocksMax = 100
    /// Permits of one semaphore (each is a slot a waiter may try).
    public var semaphorePermitsMax = 10_000
    /// Concurrent readers of one read-write lock (a writer checks every slot in one transaction).
    public var readersMax = 64
    /// Bytes of one queue item, and the longest visibility timeout or delay.
    public var queuePayloadBytesMax = 256 * 1024
    public var queueVisibilityMsMax: Int64 = 12 * 3600 * 1000
    public init() {}
    public static let standard = CoordinationLimits()
}

/// What a lock holder gets: the fencing token (strictly greater for every new holder, also after
/// an expired holder is taken over) and the lease that keeps the lock alive.
public struct LockGrant: Sendable, Equatable {
    public var name: String
    public var holder: String
    public var token: Int64
    public var lease: LeaseID
    public var ttlMs: Int64

    public init(name: String, holder: String, token: Int64, lease: LeaseID, ttlMs: Int64) {
        self.name = name
        self.holder = holder
        self.token = token
        self.lease = lease
        self.ttlMs = ttlMs
    }
}

/// A distributed lock with fencing tokens, as a layer over `KeyValueStore`. The lock is a key
/// on a lease: the leader's clock decides when an unrenewed holder's lease expires, which deletes
/// the key and frees the lock. The token is the key's create revision, so it only grows.
public struct DistributedLock: Sendable {
    public let store: any KeyValueStore
    let space: Subspace
    let limits: CoordinationLimits

    public init(store: any KeyValueStore, space: Subspace = Subspace(["aspen", "lock"]), limits: CoordinationLimits = .standard) {
        self.store = store
        self.space = space
        self.limits = limits
    }

    func key(_ name: String) throws(CoordinationError) -> [UInt8] {
        guard !name.isEmpty, name.utf8.count <= limits.nameBytesMax else {
            throw .invalidArgument("a lock name must have 1 to \(limits.nameBytesMax) bytes")
        }
        return space.pack([.string(name)])
    }

    /// Takes the lock if it is free; otherwise fails with `held`, naming the holder.
    public func tryAcquire(_ name: String, holder: String, ttlMs: Int64) async throws -> LockGrant {
        let key = try key(name)
        guard (limits.lockTTLMsMin...limits.lockTTLMsMax).contains(ttlMs) else {
            throw CoordinationError.invalidArgument("a lock TTL must be \(limits.lockTTLMsMin) to \(limits.lockTTLMsMax) ms, not \(ttlMs)")
        }
        guard !holder.isEmpty else { throw CoordinationError.invalidArgument("a lock holder must be named") }
        let lease = try await store.grantLease(ttlMs: ttlMs)
        let outcome = try await store.transaction(
            Transaction(
                compares: [.absent(key)], success: [.put(Put(key: key, value: Array(holder.utf8), lease: lease.id))],
                failure: [.get(RangeRequest(.key(key)))]))
        if outcome.succeeded {
            return LockGrant(name: name, holder: holder, token: outcome.revision, lease: lease.id, ttlMs: ttlMs)
        }
        _ = try? await store.revokeLease(lease.id)
        if case .get(let range)? = outcome.results.first, let current = range.kvs.first {
            throw CoordinationError.held(name: name, holder: String(decoding: current.value, as: UTF8.self), token: current.createRevision)
        }
        throw CoordinationError.contention(attempts: 1)
    }

    /// Takes the lock, waiting up to `waitMs` (bounded by `lockWaitMsMax`) for it to be free.
    public func acquire(
        _ name: String, holder: String, ttlMs: Int64, waitMs: Int64,
        sleep: @escaping @Sendable (Int64) async throws -> Void = { try await Task.sleep(for: .milliseconds($0)) }
    ) async throws -> LockGrant {
        guard (0...limits.lockWaitMsMax).contains(waitMs) else {
            throw CoordinationError.invalidArgument("a lock wait must be 0 to \(limits.lockWaitMsMax) ms, not \(waitMs)")
        }
        var backoff = Backoff(budgetMs: waitMs, firstMs: 5, capMs: 200, sleep: sleep)
        while true {
            do {
                return try await tryAcquire(name, holder: holder, ttlMs: ttlMs)
            } catch CoordinationError.held(let name, let current, let token) {
                // Wait until it looks free (a read, no write), then try again: a failed try
                // costs a lease grant, a transaction and a revoke in the log.
                repeat {
                    guard try await backoff.pause() else { throw CoordinationError.held(name: name, holder: current, token: token) }
                } while try await self.holder(name) != nil
            }
        }
    }

    /// The current holder, if any.
    public func holder(_ name: String) async throws -> (holder: String, token: Int64)? {
        guard let kv = try await store.get(try key(name)) else { return nil }
        return (String(decoding: kv.value, as: UTF8.self), kv.createRevision)
    }

    /// Extends the holder's lease; a stale token is refused.
    public func renew(_ grant: LockGrant) async throws {
        try await requireCurrent(grant)
        do {
            _ = try await store.keepAlive(grant.lease)
        } catch KVError.leaseNotFound {
            throw CoordinationError.staleToken(name: grant.name, token: grant.token, current: try await holder(grant.name)?.token)
        }
    }

    /// Extends the lock's lease by its token alone (for callers that kept only the token).
    public func renew(_ name: String, holder: String, token: Int64) async throws -> LockGrant {
        guard let kv = try await store.get(try key(name)), kv.createRevision == token, kv.value == Array(holder.utf8) else {
            throw CoordinationError.staleToken(name: name, token: token, current: try await self.holder(name)?.token)
        }
        let grant = LockGrant(name: name, holder: holder, token: token, lease: kv.lease, ttlMs: 0)
        try await renew(grant)
        return grant
    }

    /// Frees the lock if `token` is still the current one; a stale token changes nothing.
    public func release(_ name: String, holder: String, token: Int64) async throws {
        let key = try key(name)
        let outcome = try await store.transaction(
            Transaction(
                compares: [Compare(key: key, .createRevision(token)), Compare(key: key, .value(Array(holder.utf8)))],
                success: [.get(RangeRequest(.key(key))), .delete(Delete(.key(key)))], failure: [.get(RangeRequest(.key(key)))]))
        guard case .get(let range)? = outcome.results.first else { return }
        guard outcome.succeeded, let released = range.kvs.first else {
            throw CoordinationError.staleToken(name: name, token: token, current: range.kvs.first?.createRevision)
        }
        if released.lease != 0 { _ = try? await store.revokeLease(released.lease) }
    }

    func requireCurrent(_ grant: LockGrant) async throws {
        let current = try await holder(grant.name)
        guard let current, current.token == grant.token, current.holder == grant.holder else {
            throw CoordinationError.staleToken(name: grant.name, token: grant.token, current: current?.token)
        }
    }
}
