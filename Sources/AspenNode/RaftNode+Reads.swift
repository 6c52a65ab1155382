import AspenCore
import AspenKV
import AspenRaft
import AspenStorage

// Reads: linearizable (ReadIndex) and stale, served off the actor; waiting for the applied index.
extension RaftNode {
    /// Reads the applied state: after a ReadIndex round with a quorum (linearizable), or as it is
    /// here (stale). Only the wait for the index to read at is the actor's; the read itself runs
    /// on the caller's thread when it is the only one under way (usually the node's event loop:
    /// no hand-over), and on the concurrency pool when others are, so that many reads use
    /// every core rather than the loop's one (the store serves reads concurrently, each in its
    /// own transaction).
    /// A stale read whose node has applied every write it answered needs nothing of the
    /// actor: it is served without waiting its turn there (a kv-v2 write makes one).
    public nonisolated func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult {
        try await read(request, consistency: consistency, onCallingThread: false)
    }

    /// `onCallingThread`: the caller is not an event loop; the read runs on its thread even
    /// with others under way.
    public nonisolated func read(_ request: RangeRequest, consistency: ReadConsistency, onCallingThread: Bool) async throws -> RangeResult {
        if consistency == .stale, !stoppedFlag.load(ordering: .relaxed),
            answeredThrough.load(ordering: .relaxed) <= appliedMirror.load(ordering: .acquiring)
        {
            try KVValidator.validate(request, limits: configuration.limits)
            readsServed.wrappingAdd(1, ordering: .relaxed)
        } else {
            try await readable(request, consistency: consistency)
        }
        let alone = readsInFlight.wrappingAdd(1, ordering: .relaxed).newValue == 1
        defer { readsInFlight.wrappingSubtract(1, ordering: .relaxed) }
        let store = self.storage
        if alone || onCallingThread { return try Self.serving { try store.read(request).get() } }
        return try await Task.detached { try Self.serving { try store.read(request).get() } }.value
    }

    /// A store busy installing a snapshot image makes the node unavailable for the request.
    nonisolated static func serving<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch StorageError.busy(_, let detail) {
            throw NodeError.unavailable("this node cannot serve reads now: \(detail)")
        }
    }

    /// The checksum of this node's applied key-value state as of `revision` (0: the current
    /// one), read off the actor; see `NodeStorage.stateHash(at:page:)`.
    public nonisolated func stateHash(at revision: Revision) async throws -> StateHash {
        let storage = self.storage
        return try await Task.detached { try storage.stateHash(at: revision) }.value.get()
    }

    /// Rewrites this node's database without its free pages; see `NodeStorage.defragment()`.
    public nonisolated func defragment() async throws -> (before: Int64, after: Int64)? {
        let storage = self.storage
        return try await Task.detached { try storage.defragment() }.value
    }

    /// Returns once this node has applied everything committed when it was called (a ReadIndex
    /// round through the leader): what it then reads of its state is linearizable.
    public func linearizableBarrier() async throws {
        try await readable(RangeRequest(.key([0])), consistency: .linearizable)
    }

    /// Returns once the applied state may serve `request` at `consistency`.
    func readable(_ request: RangeRequest, consistency: ReadConsistency) async throws {
        guard !stopped else { throw NodeError.stopped }
        try KVValidator.validate(request, limits: configuration.limits)
        readsServed.wrappingAdd(1, ordering: .relaxed)
        if consistency == .linearizable {
            let context = nextReadContext
            nextReadContext += 1
            let index: Raft.Index = try await withCheckedThrowingContinuation { continuation in
                do {
                    try raft.readIndex(context: context)
                    readIndexWaiters[context] = continuation
                    pump()
                } catch {
                    continuation.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
                }
            }
            await waitUntilApplied(index)
        } else {
            await waitUntilApplied(answeredThrough.load(ordering: .relaxed))
        }
    }

    func advanceApplied(to index: Raft.Index) {
        guard index > appliedIndex else { return }
        appliedIndex = index
        appliedMirror.store(index, ordering: .releasing)
        let ready = applyWaiters.filter { $0.index <= index }
        applyWaiters.removeAll { $0.index <= index }
        for waiter in ready { waiter.continuation.resume() }
    }

    func waitUntilApplied(_ index: Raft.Index) async {
        guard index > appliedIndex else { return }
        await withCheckedContinuation { continuation in
            // Checked again here: the index may have been applied between the check above and
            // this body (the node was seen to run a drain in that gap), and a waiter added
            // after its index was applied would wait for the next write, on a quiet cluster
            // for ever.
            guard index > appliedIndex else { return continuation.resume() }
            applyWaiters.append((index, continuation))
        }
    }
}

extension RaftNode: ChangeHistory {
    /// This node's applied state's revisions (no round with a quorum).
    public nonisolated func revisions() throws -> (current: Revision, compacted: Revision) {
        try Self.serving { try storage.revisions() }
    }

    /// This node's applied history (no round with a quorum).
    public nonisolated func changes(from: Revision, through: Revision, limit: Int) throws -> Result<(events: [WatchEvent], nextRevision: Revision), KVError> {
        try Self.serving {
            try storage.changes(in: KeyBounds(start: [], end: nil), from: from, through: through, withPrevious: true, limit: limit)
        }
    }
}
