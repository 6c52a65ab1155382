import AspenCore
import AspenKV
import AspenRaft
import Synchronization

/// A `KeyValueStore` over a `NodeStorage` without consensus: each write becomes one log entry,
/// committed and applied in one durable transaction. It runs the exact code path a cluster node
/// uses to persist and apply, minus Raft; for a single process that wants Aspen's data model on
/// disk, for the behaviour suite over SQLite, and for the storage benchmarks.
public final class LocalKeyValueStore: KeyValueStore {
    public let storage: any NodeStorage
    private let nowMs: @Sendable () -> Int64
    private let limits: Limits
    private let position = Mutex<(term: Raft.Term, index: Raft.Index)>((1, 0))

    public init(storage: any NodeStorage, limits: Limits = .standard, nowMs: @escaping @Sendable () -> Int64) throws {
        self.storage = storage
        self.limits = limits
        self.nowMs = nowMs
        if let state = try storage.load() {
            let last = state.entries.last.map { ($0.term, $0.index) } ?? (state.snapshot.term, state.snapshot.index)
            position.withLock { $0 = (max(1, last.0), last.1) }
        } else {
            try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        }
    }

    /// Applies commands in one transaction (one fsync), as a group commit would.
    @discardableResult
    public func apply(_ commands: [KVCommand]) throws -> [Result<KVResult, KVError>] {
        try position.withLock { position in
            let entries = commands.enumerated().map { offset, command in
                Raft.Entry(term: position.term, index: position.index + 1 + Raft.Index(offset), payload: .command(command.encoded()))
            }
            guard let last = entries.last else { return [] }
            let applied = try storage.commit(
                StorageBatch(
                    entries: entries, hardState: Raft.HardState(term: position.term, vote: 1, commit: last.index),
                    committedEntries: entries))
            position.index = last.index
            return applied.compactMap(\.result)
        }
    }

    public func write(_ request: KVWriteRequest) throws -> KVResult {
        let now = nowMs()
        let command = request.command(nowMs: now)
        // Refused before it reaches the log, with the error that names the limit.
        try KVValidator.validate(command, limits: limits)
        try expireLeases(now: now)
        guard let result = try apply([command]).first else {
            throw KVError.storage("the write produced no result")
        }
        return try result.get()
    }

    public func read(_ request: RangeRequest, consistency: ReadConsistency) throws -> RangeResult {
        try KVValidator.validate(request, limits: limits)
        try expireLeases(now: nowMs())
        return try storage.read(request).get()
    }

    public func leaseStatus(_ id: LeaseID, withKeys: Bool) throws -> LeaseStatus {
        let now = nowMs()
        try expireLeases(now: now)
        guard let (lease, keys) = try storage.lease(id) else { throw KVError.leaseNotFound(id) }
        return LeaseStatus(lease: lease, remainingMs: max(0, lease.expiresAtMs - now), keys: withKeys ? keys : [])
    }

    public func leases() throws -> [Lease] {
        try expireLeases(now: nowMs())
        return try storage.leases()
    }

    private func expireLeases(now: Int64) throws {
        guard try storage.leases().contains(where: { $0.expiresAtMs <= now }) else { return }
        _ = try apply([.expireLeases(nowMs: now)])
    }
}
