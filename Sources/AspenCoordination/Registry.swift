import AspenCore
import AspenKV
import AspenLayer

extension DistributedLock {
    /// Takes several locks at once, all or none, on one lease (one TTL for the set); the grants
    /// share the lease and each lock's token.
    public func acquireAll(_ names: [String], holder: String, ttlMs: Int64) async throws -> [LockGrant] {
        let unique = Array(Set(names)).sorted()
        guard !unique.isEmpty, unique.count <= limits.lockSetLocksMax else {
            throw CoordinationError.invalidArgument("a lock set has 1 to \(limits.lockSetLocksMax) locks (lockSetLocksMax), not \(unique.count)")
        }
        guard (limits.lockTTLMsMin...limits.lockTTLMsMax).contains(ttlMs) else {
            throw CoordinationError.invalidArgument("a lock TTL must be \(limits.lockTTLMsMin) to \(limits.lockTTLMsMax) ms, not \(ttlMs)")
        }
        let keys = try unique.map { try key($0) }
        let lease = try await store.grantLease(ttlMs: ttlMs)
        let outcome = try await store.transaction(
            Transaction(
                compares: keys.map { .absent($0) }, success: keys.map { .put(Put(key: $0, value: Array(holder.utf8), lease: lease.id)) },
                failure: keys.map { .get(RangeRequest(.key($0))) }))
        guard outcome.succeeded else {
            _ = try? await store.revokeLease(lease.id)
            for (name, result) in zip(unique, outcome.results) {
                if case .get(let range) = result, let current = range.kvs.first {
                    throw CoordinationError.held(name: name, holder: String(decoding: current.value, as: UTF8.self), token: current.createRevision)
                }
            }
            throw CoordinationError.contention(attempts: 1)
        }
        return unique.map { LockGrant(name: $0, holder: holder, token: outcome.revision, lease: lease.id, ttlMs: ttlMs) }
    }

    /// Frees a lock set taken by `acquireAll`, all or none: if any of the locks is no longer
    /// held with `token` by `holder` (it expired, or was taken over), nothing changes.
    public func releaseAll(_ names: [String], holder: String, token: Int64) async throws {
        let unique = Array(Set(names)).sorted()
        guard !unique.isEmpty, unique.count <= limits.lockSetLocksMax else {
            throw CoordinationError.invalidArgument("a lock set has 1 to \(limits.lockSetLocksMax) locks (lockSetLocksMax), not \(unique.count)")
        }
        let keys = try unique.map { try key($0) }
        let outcome = try await store.transaction(
            Transaction(
                compares: keys.flatMap { [Compare(key: $0, .createRevision(token)), Compare(key: $0, .value(Array(holder.utf8)))] },
                success: keys.map { .get(RangeRequest(.key($0))) } + keys.map { .delete(Delete(.key($0))) },
                failure: keys.map { .get(RangeRequest(.key($0))) }))
        let found = outcome.results.prefix(keys.count).map { result -> KeyValue? in
            if case .get(let range) = result { range.kvs.first } else { nil }
        }
        guard outcome.succeeded else {
            let stale = zip(unique, found).first { $0.1?.createRevision != token || $0.1?.value != Array(holder.utf8) }
            throw CoordinationError.staleToken(name: stale?.0 ?? unique[0], token: token, current: stale?.1?.createRevision)
        }
        for lease in Set(found.compactMap { $0?.lease }) where lease != 0 { _ = try? await store.revokeLease(lease) }
    }
}

/// A service instance as registered.
public struct ServiceInstance: Sendable, Equatable {
    public var service: String
    public var instance: String
    public var address: String
    public var tags: [String]
    public var metadata: [String: String]
    public var lease: LeaseID

    public init(service: String, instance: String, address: String, tags: [String] = [], metadata: [String: String] = [:], lease: LeaseID = 0) {
        self.service = service
        self.instance = instance
        self.address = address
        self.tags = tags
        self.metadata = metadata
        self.lease = lease
    }
}

/// Service discovery: instances register under a service name with an address, tags and
/// metadata, on a lease they keep alive by heartbeats; an instance that stops heartbeating
/// disappears when its lease expires (by the leader's clock).
public struct ServiceRegistry: Sendable {
    public let store: any KeyValueStore
    let space: Subspace

    public init(store: any KeyValueStore) {
        self.store = store
        self.space = Subspace(["aspen", "service"])
    }

    func key(_ service: String, _ instance: String) -> [UInt8] { space.pack([.string(service), .string(instance)]) }

    static func encode(_ instance: ServiceInstance) -> [UInt8] {
        Tuple(
            [
                .string(instance.address), .tuple(instance.tags.map { .string($0) }),
                .tuple(instance.metadata.keys.sorted().flatMap { [.string($0), .string(instance.metadata[$0]!)] }),
            ]
        ).encoded
    }

    static func decode(_ kv: KeyValue, service: String, instance: String) -> ServiceInstance? {
        guard let tuple = try? Tuple(decoding: kv.value), tuple.elements.count == 3, case .string(let address) = tuple.elements[0],
            case .tuple(let tags) = tuple.elements[1], case .tuple(let pairs) = tuple.elements[2]
        else { return nil }
        var metadata: [String: String] = [:]
        for index in stride(from: 0, to: pairs.count - 1, by: 2) {
            if case .string(let name) = pairs[index], case .string(let value) = pairs[index + 1] { metadata[name] = value }
        }
        return ServiceInstance(
            service: service, instance: instance, address: address, tags: tags.compactMap { if case .string(let tag) = $0 { tag } else { nil } },
            metadata: metadata, lease: kv.lease)
    }

    /// Registers (or re-registers) an instance for `ttlMs`; heartbeat within the TTL to stay listed.
    @discardableResult
    public func register(
        _ service: String, instance: String, address: String, tags: [String] = [], metadata: [String: String] = [:], ttlMs: Int64
    ) async throws -> ServiceInstance {
        guard !service.isEmpty, !instance.isEmpty else { throw CoordinationError.invalidArgument("service and instance must be named") }
        let lease = try await store.grantLease(ttlMs: ttlMs)
        let entry = ServiceInstance(service: service, instance: instance, address: address, tags: tags, metadata: metadata, lease: lease.id)
        let previous = try await store.put(key(service, instance), Self.encode(entry), lease: lease.id, returnPrevious: true).previous
        if let old = previous?.lease, old != 0 { _ = try? await store.revokeLease(old) }
        return entry
    }

    public func heartbeat(_ instance: ServiceInstance) async throws { _ = try await store.keepAlive(instance.lease) }

    public func deregister(_ service: String, instance: String) async throws {
        let removed = try await store.delete(.key(key(service, instance)), returnPrevious: true)
        if let lease = removed.previous.first?.lease, lease != 0 { _ = try? await store.revokeLease(lease) }
    }

    /// The live instances of a service, optionally only those carrying every one of `tags`.
    public func discover(_ service: String, tags: [String] = []) async throws -> [ServiceInstance] {
        let range = space.subspace([.string(service)]).range
        let page = try await store.read(RangeRequest(.range(start: range.start, end: range.end), limit: 10_000), consistency: .linearizable)
        return page.kvs.compactMap { kv -> ServiceInstance? in
            guard case .string(let instance)? = (try? space.subspace([.string(service)]).unpack(kv.key))?.elements.first else { return nil }
            return Self.decode(kv, service: service, instance: instance)
        }.filter { instance in tags.allSatisfy { instance.tags.contains($0) } }
    }
}

/// A counter that gathers increments locally and writes them in one change per flush.
public actor BufferedCounter {
    let counter: Counter
    let name: String
    var pending: Int64 = 0

    public init(_ counter: Counter, name: String) {
        self.counter = counter
        self.name = name
    }

    public func add(_ amount: Int64) { pending += amount }

    /// Writes what has gathered; returns the counter's value after it.
    @discardableResult
    public func flush() async throws -> Int64 {
        let amount = pending
        pending = 0
        do {
            return amount == 0 ? try await counter.get(name) : try await counter.add(name, amount)
        } catch {
            pending += amount
            throw error
        }
    }
}
