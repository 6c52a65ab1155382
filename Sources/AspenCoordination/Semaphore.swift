import AspenCore
import AspenKV
import AspenLayer

/// A counting semaphore: at most `capacity` holders at once, each on a lease (so a holder that
/// dies frees its permit when the lease expires by the leader's clock). Permits are slots
/// claimed by transaction, so two clients can never take the same one.
public struct DistributedSemaphore: Sendable {
    let lock: DistributedLock
    public let capacity: Int

    public init(store: any KeyValueStore, capacity: Int, limits: CoordinationLimits = .standard) {
        lock = DistributedLock(store: store, space: Subspace(["aspen", "semaphore"]), limits: limits)
        self.capacity = capacity
    }

    func check() throws(CoordinationError) {
        let most = lock.limits.semaphorePermitsMax
        guard (1...most).contains(capacity) else { throw .invalidArgument("a semaphore holds 1 to \(most) permits (semaphorePermitsMax), not \(capacity)") }
    }

    func slot(_ name: String, _ index: Int) -> String { "\(name)\u{0}\(index)" }

    /// Takes a permit if one is free; nil if all `capacity` are held.
    public func tryAcquire(_ name: String, holder: String, ttlMs: Int64) async throws -> LockGrant? {
        try check()
        for index in 0..<capacity {
            do {
                return try await lock.tryAcquire(slot(name, index), holder: holder, ttlMs: ttlMs)
            } catch CoordinationError.held {
                continue
            }
        }
        return nil
    }

    /// Takes a permit, waiting up to `waitMs` for one to be released or to expire.
    public func acquire(
        _ name: String, holder: String, ttlMs: Int64, waitMs: Int64,
        sleep: @escaping @Sendable (Int64) async throws -> Void = { try await Task.sleep(for: .milliseconds($0)) }
    ) async throws -> LockGrant {
        var backoff = Backoff(budgetMs: waitMs, firstMs: 5, capMs: 200, sleep: sleep)
        while true {
            if let grant = try await tryAcquire(name, holder: holder, ttlMs: ttlMs) { return grant }
            guard try await backoff.pause() else { throw CoordinationError.held(name: name, holder: "\(capacity) holders", token: 0) }
        }
    }

    public func renew(_ permit: LockGrant) async throws { try await lock.renew(permit) }
    public func release(_ permit: LockGrant) async throws { try await lock.release(permit.name, holder: permit.holder, token: permit.token) }

    /// The current holders.
    public func holders(_ name: String) async throws -> [String] {
        try check()
        var found: [String] = []
        for index in 0..<capacity { if let current = try await lock.holder(slot(name, index)) { found.append(current.holder) } }
        return found
    }
}

/// A barrier: participants enter, and once `count` have entered it is released for everyone,
/// for good (a participant leaving afterwards does not close it again).
public struct DistributedBarrier: Sendable {
    public let store: any KeyValueStore
    let space: Subspace

    public init(store: any KeyValueStore) {
        self.store = store
        self.space = Subspace(["aspen", "barrier"])
    }

    public struct Status: Sendable, Equatable {
        public var entered: Int
        public var released: Bool

        public init(entered: Int, released: Bool) {
            self.entered = entered
            self.released = released
        }
    }

    func participants(_ name: String) -> Subspace { space.subspace([.string(name), "in"]) }
    func releasedKey(_ name: String) -> [UInt8] { space.pack([.string(name), "released"]) }

    /// Enters; releases the barrier if this makes `count`. Returns the status after entering.
    @discardableResult
    public func enter(_ name: String, participant: String, count: Int) async throws -> Status {
        guard count > 0 else { throw CoordinationError.invalidArgument("a barrier needs a positive count") }
        _ = try await store.put(participants(name).pack([.string(participant)]), [])
        var current = try await status(name)
        if !current.released && current.entered >= count {
            _ = try await store.put(releasedKey(name), [])
            current.released = true
        }
        return current
    }

    public func leave(_ name: String, participant: String) async throws {
        _ = try await store.delete(participants(name).pack([.string(participant)]))
    }

    public func status(_ name: String) async throws -> Status {
        let range = participants(name).range
        let entered = try await store.count(.range(start: range.start, end: range.end))
        return Status(entered: entered, released: try await store.get(releasedKey(name)) != nil)
    }

    /// Waits (polling, up to `waitMs`) until the barrier is released; returns whether it was.
    public func wait(_ name: String, waitMs: Int64) async throws -> Bool {
        var waited: Int64 = 0
        while true {
            if try await status(name).released { return true }
            guard waited < waitMs else { return false }
            try await Task.sleep(for: .milliseconds(20))
            waited += 20
        }
    }
}
