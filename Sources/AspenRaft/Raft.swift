import AspenCore

/// The namespace of Aspen's consensus core.
///
/// `Raft.Instance` is a pure value: inputs go in through `mutating` methods, effects come out as one
/// `Raft.Ready`. It performs no I/O, reads no clock (time is `tick()`), draws randomness only from a
/// generator seeded by its `Config`, and is never `async`. A shell (the node's `RaftNode` actor, or the
/// simulator) carries the effects out.
public enum Raft {
    public typealias Index = UInt64
    public typealias Term = UInt64
    /// An opaque value the shell attaches to a linearizable read, returned with its `ReadState`.
    public typealias ReadContext = UInt64
    /// A follower's name for a command it forwarded to the leader.
    public typealias ProposalContext = UInt64
}

extension Raft {
    /// What an entry carries.
    public enum Payload: Sendable, Equatable {
        /// An application command, opaque to Raft.
        case command([UInt8])
        /// The empty entry a new leader appends so that it can commit in its own term.
        case noop
        /// A membership change. The entry carries the whole configuration to adopt when it commits.
        case membership(Membership)

        public var byteCount: Int {
            switch self {
            case .command(let bytes): return bytes.count
            case .noop: return 0
            case .membership(let membership): return 16 * membership.allMembers.count
            }
        }
    }

    public struct Entry: Sendable, Equatable {
        public var term: Term
        public var index: Index
        public var payload: Payload

        public init(term: Term, index: Index, payload: Payload) {
            self.term = term
            self.index = index
            self.payload = payload
        }

        /// Size used against the byte bounds of messages and proposals (payload plus fixed framing).
        public var sizeBytes: Int { payload.byteCount + 24 }
    }

    /// The state that must be durable before any message that depends on it leaves the node.
    public struct HardState: Sendable, Equatable {
        public var term: Term
        public var vote: NodeID?
        public var commit: Index

        public init(term: Term = 0, vote: NodeID? = nil, commit: Index = 0) {
            self.term = term
            self.vote = vote
            self.commit = commit
        }
    }

    public enum Role: String, Sendable, Equatable {
        case follower, preCandidate, candidate, leader
    }

    /// Where a snapshot stands in the log, and the membership in force at that point.
    public struct SnapshotMetadata: Sendable, Equatable {
        public var index: Index
        public var term: Term
        public var membership: Membership

        public init(index: Index, term: Term, membership: Membership) {
            self.index = index
            self.term = term
            self.membership = membership
        }
    }

    /// An image of the state machine at `metadata.index` that the shell has written and can
    /// read back in byte ranges: what a leader streams to a follower whose next entry was
    /// compacted away. Raft never holds its bytes, only their count.
    public struct SnapshotImage: Sendable, Equatable {
        public var metadata: SnapshotMetadata
        public var bytes: Int

        public init(metadata: SnapshotMetadata, bytes: Int) {
            self.metadata = metadata
            self.bytes = bytes
        }
    }

    /// A linearizable read that may be served once the local state machine has applied `index`.
    public struct ReadState: Sendable, Equatable {
        public var index: Index
        public var context: ReadContext

        public init(index: Index, context: ReadContext) {
            self.index = index
            self.context = context
        }
    }

    /// Where a proposal landed. The proposal succeeded iff the entry applied at each index carries
    /// `term`; an entry of another term at one of these indexes means it was overwritten and lost.
    public struct ProposalReceipt: Sendable, Equatable {
        public var term: Term
        public var indexes: ClosedRange<Index>
    }

    /// The durable state a node restarts from (what the shell persisted from earlier Readies).
    public struct PersistentState: Sendable {
        public var hardState: HardState
        /// Where the log was last compacted: the log holds the entries after it.
        public var snapshot: SnapshotMetadata
        /// Entries after `snapshot.index`, contiguous.
        public var entries: [Entry]
        /// The last index the state machine has applied (at least the snapshot's index).
        public var appliedIndex: Index

        public init(hardState: HardState, snapshot: SnapshotMetadata, entries: [Entry], appliedIndex: Index) {
            self.hardState = hardState
            self.snapshot = snapshot
            self.entries = entries
            self.appliedIndex = appliedIndex
        }

        /// A founding member of a new cluster: an empty log and the initial membership.
        public static func bootstrap(_ membership: Membership) -> PersistentState {
            PersistentState(
                hardState: HardState(),
                snapshot: SnapshotMetadata(index: 0, term: 0, membership: membership),
                entries: [], appliedIndex: 0)
        }

        /// A node that will join an existing cluster: it knows nothing until the leader reaches it.
        public static let joining = bootstrap(Membership())
    }
}
