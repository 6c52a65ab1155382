import AspenCore

extension Raft {
    public struct Config: Sendable {
        public var id: NodeID
        public var group: GroupID
        /// The base election timeout in ticks; each node draws its timeout from
        /// `electionTicks ..< 2 * electionTicks` with its seeded generator.
        public var electionTicks: Int
        /// The longest randomized election timeout in ticks (default `2 * electionTicks - 1`).
        public var electionTicksMax: Int?
        /// A leader sends heartbeats every `heartbeatTicks`.
        public var heartbeatTicks: Int
        /// Campaign in two phases so a node that was cut off cannot raise the term and depose a
        /// healthy leader when it returns.
        public var preVote: Bool
        /// A leader that has not heard from a quorum for an election timeout steps down, and
        /// followers that hear from a leader ignore vote requests until the timeout passes.
        public var checkQuorum: Bool
        /// Serve linearizable reads from the leader's lease, without a quorum round. Relies on
        /// bounded clock drift, so it is off unless asked for (and needs `checkQuorum`).
        public var leaseRead: Bool
        /// A replicate-state append that has had no answer for this many ticks is presumed lost and
        /// the follower is probed again.
        public var appendRetryTicks: Int
        /// Seeds the randomized election timeout. Different per node.
        public var seed: UInt64
        public var limits: Limits

        public init(
            id: NodeID, group: GroupID = .root, electionTicks: Int = 10, heartbeatTicks: Int = 1,
            preVote: Bool = true, checkQuorum: Bool = true, leaseRead: Bool = false,
            appendRetryTicks: Int? = nil, seed: UInt64? = nil, limits: Limits = .standard
        ) {
            self.id = id
            self.group = group
            self.electionTicks = electionTicks
            self.heartbeatTicks = heartbeatTicks
            self.preVote = preVote
            self.checkQuorum = checkQuorum
            self.leaseRead = leaseRead
            self.appendRetryTicks = appendRetryTicks ?? max(2, 2 * heartbeatTicks)
            self.seed = seed ?? id.rawValue
            self.limits = limits
        }

        func validate() {
            precondition(electionTicks > heartbeatTicks, "electionTicks must exceed heartbeatTicks")
            precondition(heartbeatTicks > 0, "heartbeatTicks must be positive")
            precondition((electionTicksMax ?? electionTicks) >= electionTicks, "electionTicksMax must not be below electionTicks")
            precondition(!leaseRead || checkQuorum, "leaseRead requires checkQuorum")
            precondition(limits.raftReadyEntriesMax > 0 && limits.raftReadyBytesMax > 0, "a Ready must carry at least one entry")
            precondition(limits.raftLogEntriesMax > 0, "raftLogEntriesMax must be positive")
            precondition(
                limits.raftSnapshotChunkBytes > 0 && limits.raftSnapshotChunksInFlightMax > 0,
                "raftSnapshotChunkBytes and raftSnapshotChunksInFlightMax must be positive")
        }
    }
}
