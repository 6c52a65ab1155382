import AspenCore
import AspenKV
import AspenRaft

// Leases: time decided by the leader. Expiry by its clock, and the refresh a new leader does first.
extension RaftNode {
    /// The leader proposes the expiry of leases past their time by its clock; every node applies
    /// the same command with the same timestamp.
    func expireLeasesIfDue() {
        // A node that just won an election may tick before its Ready loop has noticed (and
        // before it has applied what earlier leaders committed): judging leases then would
        // expire ones a failover kept from being renewed. Only after this term's refresh.
        guard raft.isLeader, leasesRefreshedInTerm == raft.term, !expiryInFlight else { return }
        let now = nowMs()
        guard let earliest = try? storage.earliestLeaseExpiry(), earliest <= now else { return }
        expiryInFlight = true
        Task {
            _ = try? await self.propose(.expireLeases(nowMs: now))
            self.expiryDone()
        }
    }

    func expiryDone() { expiryInFlight = false }

    func leasesRefreshed(in term: Raft.Term) { leasesRefreshedInTerm = max(leasesRefreshedInTerm, term) }

    /// A new leader judges lease expiry by its own clock, which may run ahead of the clock that
    /// set the expiries. So before expiring anything it extends every lease to its time plus
    /// the lease's TTL (as etcd does): a lease can outlive its TTL by a failover, never expire
    /// early because clocks disagree. What fails (reading the leases, a keep-alive that does
    /// not apply) is logged, counted and retried a tick later; until every lease is extended
    /// this term expires nothing.
    func refreshLeasesAsNewLeader() {
        expiryInFlight = true
        let term = raft.term
        leaseRefreshGeneration += 1
        let generation = leaseRefreshGeneration
        leaseRefreshTask = Task {
            // The state must include everything committed before this term: wait until an entry
            // of this term (the leader's no-op) has committed and applied.
            while self.leads(term), self.raft.term(at: self.raft.commitIndex) != term || self.appliedIndex < self.raft.commitIndex {
                try? await Task.sleep(for: .milliseconds(self.configuration.tickMs))
            }
            var pending: [LeaseID]?
            var extended = 0
            while self.leads(term) {
                if pending == nil {
                    do {
                        pending = try self.storage.leases().map(\.id)
                    } catch {
                        self.leaseRefreshFailed(count: 1, term: term, problem: "reading the leases failed: \(error)")
                    }
                }
                if let ids = pending {
                    let (failed, problem) = await self.extendLeases(ids, term: term)
                    extended += ids.count - failed.count
                    pending = failed
                    if failed.isEmpty {
                        if extended > 0 { self.logger.info("leases extended by the new leader's clock", metadata: ["leases": "\(extended)", "term": "\(term)"]) }
                        self.leasesRefreshed(in: term)
                        break
                    }
                    self.leaseRefreshFailed(count: failed.count, term: term, problem: problem ?? "unknown")
                }
                try? await Task.sleep(for: .milliseconds(self.configuration.tickMs))
            }
            self.expiryDone()
            if self.leaseRefreshGeneration == generation { self.leaseRefreshTask = nil }
        }
    }

    func leads(_ term: Raft.Term) -> Bool { !stopped && raft.isLeader && raft.term == term }

    func leaseRefreshFailed(count: Int, term: Raft.Term, problem: String) {
        counters.leaseRefreshFailures += count
        logger.error(
            "extending the leases as the new leader failed; retrying, and expiring none until it succeeds",
            metadata: ["leases": "\(count)", "term": "\(term)", "error": "\(problem)"])
    }

    /// Keeps `ids` alive by this leader's clock, many at a time, so that they share appends and
    /// fsyncs rather than wait for one commit each (at a millisecond or so a commit, a hundred
    /// thousand leases one by one would take minutes). Returns the leases not extended, and why
    /// the first of them was not. A lease gone meanwhile (revoked) needs nothing.
    func extendLeases(_ ids: [LeaseID], term: Raft.Term) async -> (failed: [LeaseID], problem: String?) {
        var failed: [LeaseID] = []
        var problem: String?
        let chunkSize = configuration.limits.leaseRefreshesInFlightMax
        for start in stride(from: 0, to: ids.count, by: chunkSize) {
            let chunk = ids[start..<min(start + chunkSize, ids.count)]
            guard leads(term) else { return (failed + chunk, problem ?? "leadership lost") }
            let outcomes = await withTaskGroup(of: (LeaseID, String?).self) { group in
                for id in chunk {
                    group.addTask {
                        do {
                            switch try await self.propose(.leaseKeepAlive(id, nowMs: self.nowMs())) {
                            case .success, .failure(.leaseNotFound): return (id, nil)
                            case .failure(let error): return (id, "\(error)")
                            }
                        } catch {
                            return (id, "\(error)")
                        }
                    }
                }
                var outcomes: [(LeaseID, String?)] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            for case (let id, let why?) in outcomes {
                failed.append(id)
                problem = problem ?? why
            }
        }
        return (failed, problem)
    }
}
