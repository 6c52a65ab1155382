import AspenCore
import AspenKV
import AspenRaft
import AspenStorage

// Writes: proposals through the log, commands forwarded to the leader, and answering their writers.
extension RaftNode {
    /// Applies a write through the log; returns its result once it has applied here. A follower
    /// answers `notLeader`.
    public func write(_ request: KVWriteRequest) async throws -> KVResult {
        try await write(request, forwarding: false)
    }

    /// Applies a write through the log; returns its result once it has applied here.
    ///
    /// A follower answers `notLeader`, unless `forwarding` is set: then it forwards the command
    /// to the leader inside Raft's own traffic (batched with the others that arrive meanwhile)
    /// and answers once it has applied the command itself. Commands that carry time (lease
    /// grants and keep-alives) are never forwarded: the leader's clock stamps those.
    public func write(_ request: KVWriteRequest, forwarding: Bool) async throws -> KVResult {
        guard !stopped else { throw NodeError.stopped }
        let command = request.command(nowMs: nowMs())
        try KVValidator.validate(command, limits: configuration.limits)
        let result = forwarding && request.isTimeless && !raft.isLeader ? try await forward(command) : try await propose(command)
        return try result.get()
    }

    /// Applies a client's write once, however often the client sends it: the command carries
    /// the client's session stamp and the leader's clock (by which idle sessions are forgotten).
    public func write(_ request: KVWriteRequest, stamp: ClientStamp) async throws -> KVResult {
        guard !stopped else { throw NodeError.stopped }
        let now = nowMs()
        let command = KVCommand.sessioned(stamp, nowMs: now, request.command(nowMs: now))
        try KVValidator.validate(command, limits: configuration.limits)
        return try await propose(command).get()
    }

    /// Changes the system records (the cluster's own metadata, outside the keyspace) through
    /// the log; returns once the change has applied here. Only the leader takes it.
    public func writeSystem(_ write: SystemWrite) async throws {
        try await writeSystem(write, forwarding: false)
    }

    /// As `writeSystem(_:)`; with `forwarding`, a follower forwards the change to the leader
    /// (for changes any member makes, such as the holders of a blob it stored).
    public func writeSystem(_ write: SystemWrite, forwarding: Bool) async throws {
        guard !stopped else { throw NodeError.stopped }
        let command = KVCommand.system(write)
        try KVValidator.validate(command, limits: configuration.limits)
        _ = try await (forwarding && !raft.isLeader ? forward(command) : propose(command)).get()
    }

    /// The keys attached to lease `id` in the applied state (none if it does not exist): what
    /// revoking it would delete.
    public nonisolated func keysAttached(toLease id: LeaseID) throws -> [Bytes] {
        try storage.lease(id)?.keys ?? []
    }

    /// The applied system records whose names start with `prefix`.
    public func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] {
        try storage.systemRecords(prefix: prefix)
    }

    static func nodeError(_ error: Raft.ProposalError) -> NodeError {
        switch error {
        case .notLeader(let hint): return .notLeader(leaderHint: hint)
        case .leaderBeingRemoved, .leadershipTransferInProgress: return .notLeader(leaderHint: nil)
        default: return .refused(error.description)
        }
    }

    /// Proposes `command` as the node's own tasks do (lease expiry and refresh, automatic
    /// compaction); for tests of what happens when they run late.
    public func proposeForTesting(_ command: KVCommand) async throws -> Result<KVResult, KVError> {
        try await propose(command)
    }

    func propose(_ command: KVCommand) async throws -> Result<KVResult, KVError> {
        // A task of the node's own that runs after it stopped: nothing would ever answer it.
        guard !stopped else { throw NodeError.stopped }
        counters.proposals += 1
        let entry = command.encoded()
        // Proposed in the continuation's body, with the writer registered at once: a drain that
        // ran between a proposal and its registration (the actor can run one there) would
        // apply the entry with nobody to answer.
        return try await withCheckedThrowingContinuation { continuation in
            let receipt: Raft.ProposalReceipt
            do throws(Raft.ProposalError) {
                receipt = try raft.propose(entry)
            } catch {
                return continuation.resume(throwing: Self.nodeError(error))
            }
            wait(continuation, term: receipt.term, at: receipt.indexes.lowerBound)
            pump()
        }
    }

    /// Waits for the entry at `index` to apply. A writer already waiting there (a forward placed
    /// by a leader that died before this node got the entry, say) waited for an entry of another
    /// term, which the new one replaces: it never applies, and is told so rather than forgotten.
    func wait(_ writer: Writer, term: Raft.Term, at index: Raft.Index) {
        writers.wait(writer, term: term, at: index)?.resume(throwing: NodeError.proposalLost)
    }

    func forward(_ command: KVCommand) async throws -> Result<KVResult, KVError> {
        guard !stopped else { throw NodeError.stopped }
        let context = nextProposalContext
        nextProposalContext += 1
        counters.proposalsForwarded += 1
        let entry = command.encoded()
        // Forwarded and registered in one step, as `propose` does.
        return try await withCheckedThrowingContinuation { continuation in
            do throws(Raft.ProposalError) {
                try raft.forward(entry, context: context)
            } catch {
                return continuation.resume(throwing: Self.nodeError(error))
            }
            writers.forwarded(continuation, context: context)
            pump()
        }
    }

    /// The leader placed (or refused, or never answered about) a forwarded command. Called before
    /// the Ready that carried the answer applies anything, so an index it applies is waited for.
    func place(_ outcome: Raft.ForwardedOutcome) {
        switch writers.place(outcome, handedOut: appliedIndex) {
        case .waiting(let displaced):
            displaced?.resume(throwing: NodeError.proposalLost)
        case .unknown(let writer):
            // Applied before the answer came (its result is gone), or the leader could not
            // say: rare, and not a loss.
            counters.proposalsForwardedUnknown += 1
            writer.resume(throwing: NodeError.outcomeUnknown)
        case .refused(let writer):
            counters.proposalsForwardedRefused += 1
            writer.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
        case .none:
            break
        }
    }

    func resolve(_ entry: AppliedEntry) {
        guard let pending = writers.take(at: entry.index) else { return }
        Self.answer(pending, with: entry)
    }

    /// Answers a writer with what its index applied: its result, or `proposalLost` when
    /// another term's entry took the index.
    nonisolated static func answer(_ pending: Raft.WriterBook<Writer>.Pending, with entry: AppliedEntry) {
        guard pending.term == entry.term, let result = entry.result else {
            pending.waiter.resume(throwing: NodeError.proposalLost)
            return
        }
        pending.waiter.resume(returning: result)
    }

    func failProposals(through index: Raft.Index, with error: NodeError) {
        for writer in writers.takeThrough(index) { writer.resume(throwing: error) }
    }
}
