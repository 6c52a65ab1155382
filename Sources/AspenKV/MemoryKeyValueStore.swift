import AspenCore

/// The key-value store in memory, with exactly the semantics of a cluster: the same state
/// machine, the same validation, leases expired by the store's clock before each request.
/// For tests, and for layers run without a cluster.
public actor MemoryKeyValueStore: KeyValueStore {
    private var backend = MemoryKVBackend()
    private let limits: Limits
    private let nowMs: @Sendable () -> Int64

    /// `nowMs` is the store's clock in milliseconds (inject a test clock to control leases).
    public init(limits: Limits = .standard, nowMs: @escaping @Sendable () -> Int64) {
        self.limits = limits
        self.nowMs = nowMs
    }

    public func write(_ request: KVWriteRequest) throws -> KVResult {
        let now = nowMs()
        try expireLeases(now: now)
        return try apply(request.command(nowMs: now))
    }

    public func read(_ request: RangeRequest, consistency: ReadConsistency) throws -> RangeResult {
        try expireLeases(now: nowMs())
        return try KVStateMachine.read(request, from: backend, limits: limits).get()
    }

    public func leaseStatus(_ id: LeaseID, withKeys: Bool) throws -> LeaseStatus {
        let now = nowMs()
        try expireLeases(now: now)
        guard let lease = backend.lease(id) else { throw KVError.leaseNotFound(id) }
        return LeaseStatus(
            lease: lease, remainingMs: max(0, lease.expiresAtMs - now), keys: withKeys ? backend.keys(attachedTo: id) : [])
    }

    public func leases() throws -> [Lease] {
        try expireLeases(now: nowMs())
        return backend.leases()
    }

    /// The current revision.
    public var revision: Revision { backend.revision() }

    private func apply(_ command: KVCommand) throws -> KVResult {
        try KVStateMachine.apply(command, to: &backend, limits: limits).get()
    }

    private func expireLeases(now: Int64) throws {
        guard !backend.expiredLeases(atMs: now).isEmpty else { return }
        _ = try apply(.expireLeases(nowMs: now))
    }
}

extension MemoryKeyValueStore: ChangeHistory {
    public func revisions() throws -> (current: Revision, compacted: Revision) {
        (try backend.revision(), try backend.compactedRevision())
    }

    public func changes(from: Revision, through: Revision, limit: Int) throws -> Result<(events: [WatchEvent], nextRevision: Revision), KVError> {
        try KVStateMachine.changes(in: KeyBounds(start: [], end: nil), from: from, through: through, withPrevious: true, limit: limit, backend: backend)
    }
}
