extension Raft {
    /// When the leader extends and expires leases: the node shell's lease policy, kept apart
    /// from how proposals are made, so `RaftNode` and the simulator run the same rules. Pure
    /// and clock-free: the caller passes the time (milliseconds of the leader's clock) and
    /// what it sees of the log, carries out the actions, and reports how each ended.
    ///
    /// - Leases expire by the leader's clock, which may run ahead of the clock that set their
    ///   expiries. So a new leader first extends every lease to its own time plus the lease's
    ///   TTL (as etcd does): a lease can outlive its TTL by a failover, never expire early
    ///   because clocks disagree.
    /// - The extension waits until an entry of the leader's term has committed and applied, so
    ///   that it sees every lease earlier leaders granted or kept alive.
    /// - Extensions go out at most `extensionsInFlightMax` at a time, so that they share
    ///   appends and fsyncs rather than wait for one commit each. One that fails is tried again
    ///   at the next `next`; until every lease is extended, nothing expires in this term.
    /// - Once extended, leases past their time are expired by one proposal at a time.
    public struct LeasePolicy<LeaseID: Hashable & Sendable>: Sendable {
        public let extensionsInFlightMax: Int
        /// The term in which every lease has been extended by this leader's clock.
        public private(set) var refreshedTerm: Term = 0
        /// An expiry proposal is under way.
        public private(set) var expiring = false
        private var refresh: Refresh?

        struct Refresh: Sendable {
            var term: Term
            /// The leases still to extend; nil until read.
            var pending: [LeaseID]?
            var inFlight: Set<LeaseID> = []
            var failed: [LeaseID] = []
            var problem: String?
            var extended = 0
        }

        public init(extensionsInFlightMax: Int) {
            precondition(extensionsInFlightMax > 0, "at least one extension at a time")
            self.extensionsInFlightMax = extensionsInFlightMax
        }

        /// What the log looks like to the policy.
        public struct View: Sendable {
            public var isLeader: Bool
            public var term: Term
            /// The term of the entry at the commit index.
            public var commitTerm: Term
            public var commitIndex: Index
            public var appliedIndex: Index

            public init(isLeader: Bool, term: Term, commitTerm: Term, commitIndex: Index, appliedIndex: Index) {
                self.isLeader = isLeader
                self.term = term
                self.commitTerm = commitTerm
                self.commitIndex = commitIndex
                self.appliedIndex = appliedIndex
            }
        }

        public enum Action: Sendable, Equatable {
            /// Read the ids of every lease in the applied state and report them with
            /// `leasesRead(_:term:)`, or `leasesUnreadable(term:problem:)`.
            case readLeases(term: Term)
            /// Propose a keep-alive for each by the clock now, and report each with
            /// `extended(_:term:)` or `extensionFailed(_:term:problem:)` (a lease that no longer
            /// exists counts as extended).
            case extend([LeaseID], term: Term)
            /// Every lease is extended in `term` (`extended` of them by this node).
            case refreshed(term: Term, extended: Int)
            /// Some extensions failed; they are tried again. Worth a log line and a counter.
            case refreshFailed(term: Term, leases: Int, problem: String)
            /// Propose the expiry of leases past `nowMs`; report `expiryFinished()`.
            case expire(nowMs: Int64)
        }

        /// What to do now. `earliestExpiry` is asked only when expiring is allowed.
        public mutating func next(_ log: View, nowMs: Int64, earliestExpiry: () -> Int64?) -> [Action] {
            guard log.isLeader else {
                refresh = nil
                return []
            }
            var actions: [Action] = []
            if log.term > refreshedTerm {
                if refresh?.term != log.term { refresh = Refresh(term: log.term) }
                // The state must include everything committed before this term.
                guard log.commitTerm == log.term, log.appliedIndex >= log.commitIndex else { return actions }
                step(&actions)
                return actions
            }
            guard !expiring, let earliest = earliestExpiry(), earliest <= nowMs else { return actions }
            expiring = true
            actions.append(.expire(nowMs: nowMs))
            return actions
        }

        private mutating func step(_ actions: inout [Action]) {
            guard var current = refresh else { return }
            guard let pending = current.pending else {
                // Reported before the next call (the caller reads at once).
                actions.append(.readLeases(term: current.term))
                return
            }
            if current.inFlight.isEmpty, pending.isEmpty {
                if current.failed.isEmpty {
                    refreshedTerm = current.term
                    refresh = nil
                    actions.append(.refreshed(term: current.term, extended: current.extended))
                    return
                }
                actions.append(.refreshFailed(term: current.term, leases: current.failed.count, problem: current.problem ?? "unknown"))
                current.pending = current.failed
                current.failed = []
                current.problem = nil
                refresh = current
                return
            }
            let room = extensionsInFlightMax - current.inFlight.count
            guard room > 0, !pending.isEmpty else { return }
            let batch = Array(pending.prefix(room))
            current.pending = Array(pending.dropFirst(batch.count))
            current.inFlight.formUnion(batch)
            refresh = current
            actions.append(.extend(batch, term: current.term))
        }

        /// The leases of the applied state, for the refresh of `term`.
        public mutating func leasesRead(_ ids: [LeaseID], term: Term) {
            guard refresh?.term == term, refresh?.pending == nil else { return }
            refresh!.pending = ids
        }

        /// Reading the leases failed: it is tried again at the next `next`.
        public mutating func leasesUnreadable(term: Term, problem: String) -> Action? {
            guard refresh?.term == term else { return nil }
            return .refreshFailed(term: term, leases: 1, problem: problem)
        }

        public mutating func extended(_ id: LeaseID, term: Term) {
            guard refresh?.term == term, refresh!.inFlight.remove(id) != nil else { return }
            refresh!.extended += 1
        }

        public mutating func extensionFailed(_ id: LeaseID, term: Term, problem: String) {
            guard refresh?.term == term, refresh!.inFlight.remove(id) != nil else { return }
            refresh!.failed.append(id)
            if refresh!.problem == nil { refresh!.problem = problem }
        }

        /// Whether the refresh of `term` is still waiting on extensions (for tests and metrics).
        public func extending(in term: Term) -> Bool { refresh?.term == term && !(refresh!.inFlight.isEmpty) }

        public mutating func expiryFinished() { expiring = false }
    }
}
