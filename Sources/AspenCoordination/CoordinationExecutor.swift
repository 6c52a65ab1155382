import AspenCore
import AspenKV
import AspenLayer

/// Runs coordination calls against a store: inside a node (the store is the node itself, the
/// clock the leader's), or anywhere else a `KeyValueStore` is at hand. The same layer code
/// serves every place; this only maps a call to it.
public struct CoordinationExecutor: Sendable {
    public let store: any KeyValueStore
    let limits: CoordinationLimits
    let nowMs: @Sendable () -> Int64
    let local: LocalCoordination?

    /// `local`, shared by every call a node runs, orders same-name changes and wakes waiters.
    public init(
        store: any KeyValueStore, limits: CoordinationLimits = .standard, local: LocalCoordination? = nil,
        nowMs: @escaping @Sendable () -> Int64
    ) {
        self.store = store
        self.limits = limits
        self.local = local
        self.nowMs = nowMs
    }

    /// A backoff sleep that ends early when a call here frees `name`.
    private func sleeper(_ name: String) -> @Sendable (Int64) async throws -> Void {
        guard let wakeups = local?.wakeups else { return { try await Task.sleep(for: .milliseconds($0)) } }
        return { ms in
            await wakeups.sleep(name, upToMs: ms)
            try Task.checkCancellation()
        }
    }

    /// When others already wait for `name` here, sleeps at the back of their line (up to
    /// `upToMs`); returns how long it waited.
    private func waitYourTurn(_ name: String, upToMs: Int64) async throws -> Int64 {
        guard upToMs > 0, let wakeups = local?.wakeups, await wakeups.hasSleepers(name) else { return 0 }
        let clock = ContinuousClock()
        let started = clock.now
        await wakeups.sleep(name, upToMs: min(upToMs, 200))
        try Task.checkCancellation()
        let waited = (clock.now - started).components
        return waited.seconds * 1000 + waited.attoseconds / 1_000_000_000_000_000
    }

    /// Tells one waiter on `name` that it may be free now.
    private func freed(_ name: String) async { await local?.wakeups.wakeOne(name) }

    /// Runs `body` in `name`'s turn (when shared), so changes to one counter do not race.
    private func inTurn<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        guard let turns = local?.turns else { return try await body() }
        return try await turns.inTurn(name, body)
    }

    public func run(_ call: CoordinationCall) async throws -> CoordinationAnswer {
        guard call.waitMs <= limits.lockWaitMsMax else {
            throw CoordinationError.invalidArgument("a wait must be 0 to \(limits.lockWaitMsMax) ms, not \(call.waitMs)")
        }
        let lock = DistributedLock(store: store, limits: limits)
        switch call {
        case .lockAcquire(let name, let holder, let ttl, let wait):
            // First come, first served among this node's waiters: a newcomer (often the last
            // holder, coming straight back) queues behind them instead of barging in.
            let queued = try await waitYourTurn("lock/" + name, upToMs: wait)
            return .grant(
                try await lock.acquire(name, holder: holder, ttlMs: ttl, waitMs: max(0, wait - queued), sleep: sleeper("lock/" + name)))
        case .lockRenew(let name, let holder, let token): return .grant(try await lock.renew(name, holder: holder, token: token))
        case .lockRelease(let name, let holder, let token):
            try await lock.release(name, holder: holder, token: token)
            await freed("lock/" + name)
            return .done
        case .lockHolder(let name): return .holder(try await lock.holder(name).map { ($0.holder, $0.token) })
        case .lockSetAcquire(let names, let holder, let ttl, let wait):
            var backoff = Backoff(budgetMs: wait, firstMs: 5, capMs: 200)
            while true {
                do {
                    return .grants(try await lock.acquireAll(names, holder: holder, ttlMs: ttl))
                } catch let error as CoordinationError {
                    guard case .held = error, try await backoff.pause() else { throw error }
                }
            }
        case .lockSetRelease(let names, let holder, let token):
            try await lock.releaseAll(names, holder: holder, token: token)
            for name in names { await freed("lock/" + name) }
            return .done
        case .campaign(let name, let candidate, let ttl, let wait):
            let election = LeaderElection(store: store, limits: limits)
            return .grant(try await election.lock.acquire(name, holder: candidate, ttlMs: ttl, waitMs: wait, sleep: sleeper("election/" + name)))
        case .electionLeader(let name):
            return .holder(try await LeaderElection(store: store, limits: limits).leader(name).map { ($0.leader, $0.term) })
        case .electionRenew(let name, let candidate, let term):
            return .grant(try await LeaderElection(store: store, limits: limits).lock.renew(name, holder: candidate, token: term))
        case .resign(let name, let candidate, let term):
            try await LeaderElection(store: store, limits: limits).resign(LockGrant(name: name, holder: candidate, token: term, lease: 0, ttlMs: 0))
            await freed("election/" + name)
            return .done
        case .counter(let name, let signed, let operation):
            let counter = Counter(store: store, signed: signed, limits: limits)
            if case .get = operation { return .value(try await counter.get(name)) }
            return try await inTurn((signed ? "signed/" : "counter/") + name) {
                switch operation {
                case .get: return .value(try await counter.get(name))
                case .add(let amount): return .value(try await counter.add(name, amount))
                case .subtract(let amount): return .value(try await counter.subtract(name, amount))
                case .set(let value): return .value(try await counter.set(name, value))
                case .compareAndSet(let expected, let new): return .flag(try await counter.compareAndSet(name, expected: expected, new: new))
                }
            }
        case .sequenceReserve(let name, let count):
            let sequence = SequenceGenerator(store: store, limits: limits)
            return .range(try await inTurn("sequence/" + name) { try await sequence.reserve(name, count: count) })
        case .rateAcquire(let name, let capacity, let rate, let count, let wait):
            let limiter = RateLimiter(store: store, capacity: capacity, refillPerSecond: rate, limits: limits, nowMs: nowMs)
            let acquired = try await limiter.acquire(name, count: count, waitMs: wait)
            return .rate(acquired: acquired, available: try await limiter.available(name))
        case .rateReset(let name, let capacity, let rate):
            try await RateLimiter(store: store, capacity: capacity, refillPerSecond: rate, limits: limits, nowMs: nowMs).reset(name)
            return .done
        case .enqueue(let queue, let payloads, let dedup, let delay):
            let work = WorkQueue(store: store, limits: limits, nowMs: nowMs)
            if payloads.count == 1 { return .ids([try await work.enqueue(queue, payloads[0], dedupID: dedup, delayMs: delay)]) }
            guard dedup == nil, delay == 0 else {
                throw CoordinationError.invalidArgument("a batch enqueue takes neither a deduplication id nor a delay")
            }
            return .ids(try await work.enqueueBatch(queue, payloads))
        case .dequeue(let queue, let visibility, let deliveries):
            guard deliveries > 0 else { throw CoordinationError.invalidArgument("max deliveries must be positive, not \(deliveries)") }
            return .delivery(try await WorkQueue(store: store, maxDeliveries: deliveries, limits: limits, nowMs: nowMs).dequeue(queue, visibilityMs: visibility))
        case .peek(let queue): return .peeked(try await workQueue().peek(queue))
        case .ack(let delivery):
            try await workQueue().ack(delivery)
            return .done
        case .nack(let delivery, let delay):
            try await workQueue().nack(delivery, delayMs: delay)
            return .done
        case .extend(let delivery, let by): return .delivery(try await workQueue().extend(delivery, byMs: by))
        case .queueStatus(let queue): return .queueStatus(try await workQueue().status(queue))
        case .redrive(let queue): return .value(Int64(try await workQueue().redrive(queue)))
        case .semaphoreAcquire(let name, let capacity, let holder, let ttl, let wait):
            let semaphore = DistributedSemaphore(store: store, capacity: Int(clamping: capacity), limits: limits)
            return .grant(try await semaphore.acquire(name, holder: holder, ttlMs: ttl, waitMs: wait, sleep: sleeper("semaphore/" + name)))
        case .semaphoreRelease(let permit, let holder, let token):
            try await DistributedSemaphore(store: store, capacity: 1, limits: limits).lock.release(permit, holder: holder, token: token)
            // The permit is NAME\0SLOT; its waiters wait on NAME.
            await freed("semaphore/" + String(permit.split(separator: "\u{0}", omittingEmptySubsequences: false).first ?? ""))
            return .done
        case .semaphoreHolders(let name, let capacity):
            return .holders(try await DistributedSemaphore(store: store, capacity: Int(clamping: capacity), limits: limits).holders(name))
        case .barrierEnter(let name, let participant, let count, let wait):
            let barrier = DistributedBarrier(store: store)
            var status = try await barrier.enter(name, participant: participant, count: Int(clamping: count))
            if !status.released && wait > 0 {
                _ = try await barrier.wait(name, waitMs: wait)
                status = try await barrier.status(name)
            }
            return .barrier(status)
        case .barrierLeave(let name, let participant):
            try await DistributedBarrier(store: store).leave(name, participant: participant)
            return .done
        case .barrierStatus(let name): return .barrier(try await DistributedBarrier(store: store).status(name))
        case .readLock(let name, let holder, let ttl, let wait):
            let rwlock = ReadWriteLock(store: store, limits: limits)
            var backoff = Backoff(budgetMs: wait, firstMs: 5, capMs: 200)
            while true {
                if let grant = try await rwlock.tryRead(name, holder: holder, ttlMs: ttl) { return .grant(grant) }
                guard try await backoff.pause() else { throw CoordinationError.held(name: name, holder: "a writer", token: 0) }
            }
        case .writeLock(let name, let holder, let ttl, let wait):
            return .grant(try await ReadWriteLock(store: store, limits: limits).write(name, holder: holder, ttlMs: ttl, waitMs: wait))
        case .readUnlock(let grant):
            try await ReadWriteLock(store: store, limits: limits).releaseRead(grant)
            return .done
        case .writeUnlock(let grant):
            try await ReadWriteLock(store: store, limits: limits).releaseWrite(grant)
            return .done
        case .downgrade(let grant): return .grant(try await ReadWriteLock(store: store, limits: limits).downgrade(grant))
        case .register(let instance, let ttl):
            return .instance(
                try await ServiceRegistry(store: store).register(
                    instance.service, instance: instance.instance, address: instance.address, tags: instance.tags, metadata: instance.metadata,
                    ttlMs: ttl))
        case .heartbeat(let lease):
            _ = try await store.keepAlive(lease)
            return .done
        case .deregister(let service, let instance):
            try await ServiceRegistry(store: store).deregister(service, instance: instance)
            return .done
        case .discover(let service, let tags): return .instances(try await ServiceRegistry(store: store).discover(service, tags: tags))
        }
    }

    private func workQueue() -> WorkQueue { WorkQueue(store: store, limits: limits, nowMs: nowMs) }
}
