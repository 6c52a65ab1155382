import AspenCore
import AspenKV
import AspenRaft

// Leases: time decided by the leader. The rules (the new leader's refresh first, then expiry by
// its clock) are `Raft.LeasePolicy`'s, which the simulator runs too; this carries them out.
extension RaftNode {
    /// Runs the lease policy: on every tick and whenever the node's role or term changes.
    func runLeasePolicy() {
        guard !stopped else { return }
        var readAgain = true
        while readAgain {
            readAgain = false
            let view = Raft.LeasePolicy<LeaseID>.View(
                isLeader: raft.isLeader, term: raft.term, commitTerm: raft.term(at: raft.commitIndex) ?? 0,
                commitIndex: raft.commitIndex, appliedIndex: appliedIndex)
            let actions = leasePolicy.next(view, nowMs: nowMs()) { try? self.storage.earliestLeaseExpiry() }
            for action in actions {
                switch action {
                case .readLeases(let term):
                    do {
                        leasePolicy.leasesRead(try storage.leases().map(\.id), term: term)
                        readAgain = true  // Start extending now rather than a tick later.
                    } catch {
                        leaseRefreshFailed(count: 1, term: term, problem: "reading the leases failed: \(error)")
                    }
                case .extend(let ids, let term):
                    for id in ids { extendLease(id, term: term) }
                case .refreshed(let term, let extended):
                    if extended > 0 { logger.info("leases extended by the new leader's clock", metadata: ["leases": "\(extended)", "term": "\(term)"]) }
                case .refreshFailed(let term, let count, let problem):
                    leaseRefreshFailed(count: count, term: term, problem: problem)
                case .expire(let now):
                    leaseTasks += 1
                    Task {
                        _ = try? await self.propose(.expireLeases(nowMs: now))
                        self.leasePolicy.expiryFinished()
                        self.leaseTasks -= 1
                    }
                }
            }
        }
    }

    /// Keeps `id` alive by this leader's clock, as part of the refresh of `term`. A lease gone
    /// meanwhile (revoked) needs nothing.
    private func extendLease(_ id: LeaseID, term: Raft.Term) {
        leaseTasks += 1
        Task {
            defer { self.leaseTasks -= 1 }
            do {
                switch try await self.propose(.leaseKeepAlive(id, nowMs: self.nowMs())) {
                case .success, .failure(.leaseNotFound): self.leasePolicy.extended(id, term: term)
                case .failure(let error): self.leasePolicy.extensionFailed(id, term: term, problem: "\(error)")
                }
            } catch {
                self.leasePolicy.extensionFailed(id, term: term, problem: "\(error)")
            }
        }
    }

    func leaseRefreshFailed(count: Int, term: Raft.Term, problem: String) {
        counters.leaseRefreshFailures += count
        logger.error(
            "extending the leases as the new leader failed; retrying, and expiring none until it succeeds",
            metadata: ["leases": "\(count)", "term": "\(term)", "error": "\(problem)"])
    }
}
