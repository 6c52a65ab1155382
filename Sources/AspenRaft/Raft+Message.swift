import AspenCore

extension Raft {
    /// One message between members of a Raft group. Every message names its group, so one
    /// connection per peer carries all groups.
    public struct Message: Sendable, Equatable {
        public var group: GroupID
        public var from: NodeID
        public var to: NodeID
        public var term: Term
        public var kind: Kind

        public init(group: GroupID, from: NodeID, to: NodeID, term: Term, kind: Kind) {
            self.group = group
            self.from = from
            self.to = to
            self.term = term
            self.kind = kind
        }

        public enum Kind: Sendable, Equatable {
            /// "Would you vote for me in `term`?" Changes nobody's term.
            case preVote(lastIndex: Index, lastTerm: Term)
            case preVoteResponse(granted: Bool)
            /// `transfer` is set when the leader asked for this election; it overrides leader leases.
            case vote(lastIndex: Index, lastTerm: Term, transfer: Bool)
            case voteResponse(granted: Bool)
            case append(Append)
            case appendResponse(AppendResponse)
            /// `readRound` lets one heartbeat round confirm leadership for every pending read.
            case heartbeat(commit: Index, readRound: UInt64)
            case heartbeatResponse(readRound: UInt64)
            case snapshotChunk(SnapshotChunk)
            case snapshotResponse(SnapshotResponse)
            /// "Campaign now": the last step of a leadership transfer. Carries the leader's commit
            /// index, which the target (whose log matches the leader's) adopts first, so that it
            /// campaigns under the newest committed membership.
            case timeoutNow(commit: Index)
            /// A follower forwards a linearizable read to the leader.
            case readIndex(context: ReadContext)
            /// The leader's answer; `index` is nil when the read could not be served.
            case readIndexResponse(context: ReadContext, index: Index?)
            /// A follower forwards commands to the leader (etcd's MsgProp), each under the
            /// follower's own context, so the follower can answer its writers once it applies them.
            case propose(ForwardedProposals)
            /// The leader's answer to a `propose`: where it appended the commands (the i-th context
            /// at `firstIndex + i`, in `term`), or nil when it appended none of them.
            case proposeResponse(contexts: [ProposalContext], placement: ProposalPlacement?)
        }

        /// Whether the message may leave before the sender's pending writes are durable: the
        /// leader's own replication traffic, forwarded reads and commands and their answers, and
        /// heartbeat answers (which promise nothing about the log; holding them behind a long
        /// write, such as applying a delete of many keys, would make the leader think it had lost
        /// its quorum). Votes, vote requests and append acknowledgements depend on state that
        /// must survive a crash, and wait.
        public var maySendBeforePersist: Bool {
            switch kind {
            case .append, .heartbeat, .heartbeatResponse, .snapshotChunk, .timeoutNow(_), .readIndex, .readIndexResponse, .propose,
                .proposeResponse:
                return true
            default: return false
            }
        }
    }

    /// Commands a follower asks the leader to append, each with the follower's context.
    public struct ForwardedProposals: Sendable, Equatable {
        public var contexts: [ProposalContext]
        public var commands: [[UInt8]]

        public init(contexts: [ProposalContext], commands: [[UInt8]]) {
            precondition(contexts.count == commands.count, "one context per forwarded command")
            self.contexts = contexts
            self.commands = commands
        }
    }

    /// Where a leader appended forwarded commands: consecutive indexes from `firstIndex`, in `term`.
    public struct ProposalPlacement: Sendable, Equatable {
        public var term: Term
        public var firstIndex: Index

        public init(term: Term, firstIndex: Index) {
            self.term = term
            self.firstIndex = firstIndex
        }
    }

    public struct Append: Sendable, Equatable {
        public var prevIndex: Index
        public var prevTerm: Term
        public var entries: [Entry]
        public var commit: Index
        /// False for a commit notice: no entries, sent to a follower known to match through
        /// `prevIndex`, only to move its commit index. A follower whose log matches answers
        /// nothing (the answer would tell the leader nothing it does not know); one whose log
        /// does not, rejects it as any append.
        public var wantsAnswer: Bool

        public init(prevIndex: Index, prevTerm: Term, entries: [Entry], commit: Index, wantsAnswer: Bool = true) {
            precondition(wantsAnswer || entries.isEmpty, "an append that carries entries is always answered")
            self.prevIndex = prevIndex
            self.prevTerm = prevTerm
            self.entries = entries
            self.commit = commit
            self.wantsAnswer = wantsAnswer
        }
    }

    public struct AppendResponse: Sendable, Equatable {
        /// On success the follower's log matches the leader's through `index`. On rejection,
        /// `index` is the `prevIndex` that did not match.
        public var index: Index
        public var rejected: Bool
        /// On rejection: the last index of the follower's log that might match, and its term, so
        /// the leader can skip a whole term of mismatching entries at once.
        public var hintIndex: Index
        public var hintTerm: Term

        public init(index: Index, rejected: Bool = false, hintIndex: Index = 0, hintTerm: Term = 0) {
            self.index = index
            self.rejected = rejected
            self.hintIndex = hintIndex
            self.hintTerm = hintTerm
        }
    }

    /// Bytes `offset ..< offset + length` of the image `metadata` describes. The leader's
    /// instance leaves `data` empty and asks for `length` bytes: its shell reads them from the
    /// image before the message leaves (`Ready.messages`). A received chunk carries its data.
    public struct SnapshotChunk: Sendable, Equatable {
        public var metadata: SnapshotMetadata
        public var totalBytes: Int
        public var offset: Int
        public var length: Int
        public var data: [UInt8]
        public var isLast: Bool { offset + length == totalBytes }
        /// The shell has yet to read this chunk's bytes from its image.
        public var needsData: Bool { data.count != length }

        public init(metadata: SnapshotMetadata, totalBytes: Int, offset: Int, data: [UInt8]) {
            self.init(metadata: metadata, totalBytes: totalBytes, offset: offset, length: data.count, data: data)
        }

        public init(metadata: SnapshotMetadata, totalBytes: Int, offset: Int, length: Int, data: [UInt8] = []) {
            self.metadata = metadata
            self.totalBytes = totalBytes
            self.offset = offset
            self.length = length
            self.data = data
        }
    }

    public struct SnapshotResponse: Sendable, Equatable {
        public var snapshotIndex: Index
        /// The next byte offset the follower expects.
        public var nextOffset: Int
        /// Set once the whole snapshot has been received; `matchIndex` is then where the follower's
        /// log now matches the leader's.
        public var matchIndex: Index?
        /// The image arrived whole but could not be installed: the leader should send another.
        public var refused: Bool

        public init(snapshotIndex: Index, nextOffset: Int, matchIndex: Index? = nil, refused: Bool = false) {
            self.snapshotIndex = snapshotIndex
            self.nextOffset = nextOffset
            self.matchIndex = matchIndex
            self.refused = refused
        }
    }
}
