import AspenCore

extension Raft {
    /// Everything an instance asks its shell to do, collected since the last `ready()`.
    ///
    /// The shell handles one Ready at a time, in order, and each one in this order:
    ///
    /// 1. **Persist**: stage `snapshotChunksReceived` in order and install the staged image
    ///    `snapshot` describes (if any), then write `entries` (replacing any stored entries at
    ///    the same or higher indexes) and `hardState`, in one durable write. Chunks in `messages`
    ///    whose `needsData` is set get their bytes from the shell's image before they leave.
    ///    `messages` may be sent while this write is in flight (see
    ///    `Message.maySendBeforePersist`): the leader's own replication traffic, which is safe to
    ///    send before the leader's copy is durable (the leader counts itself toward a quorum only
    ///    for entries it has persisted), forwarded reads and commands, and heartbeat answers.
    /// 2. **Send** `messagesAfterPersist` once the write is durable: votes, vote requests and
    ///    acknowledgements, which promise durable state to their receiver.
    /// 3. **Apply** `committedEntries` to the state machine in order (they may be applied in the same
    ///    durable transaction as step 1), and serve `readStates` once the state machine has applied
    ///    their index. Fail the reads in `droppedReads`.
    /// 4. **Advance**: report `persisted(upTo:term:)` for the last entry written and
    ///    `snapshotInstalled(_:)` for an installed snapshot. When `wantsSnapshotImage` is set,
    ///    write an image of the applied state (off the loop) and report it with
    ///    `snapshotImagePrepared(index:bytes:)`.
    public struct Ready: Sendable {
        public var hardState: HardState?
        /// Install the image staged from `snapshotChunksReceived` (of this and earlier Readies).
        public var snapshot: SnapshotMetadata?
        /// Chunks of an image being received, in order, to stage.
        public var snapshotChunksReceived: [SnapshotChunk] = []
        /// A leader needs an image of the applied state for a follower the log no longer reaches.
        public var wantsSnapshotImage = false
        public var entries: [Entry] = []
        public var messages: [Message] = []
        public var messagesAfterPersist: [Message] = []
        public var committedEntries: [Entry] = []
        public var readStates: [ReadState] = []
        /// Reads that can never be served here (leadership lost, or the leader refused them).
        public var droppedReads: [ReadContext] = []
        /// What became of commands given to `forward(_:context:)`: where they were appended (the
        /// shell answers their writers when that index applies), or that they were refused, or
        /// that no answer came.
        public var forwardedProposals: [ForwardedOutcome] = []

        public init() {}

        /// True when something must be written before `messagesAfterPersist` may leave.
        public var needsPersist: Bool { hardState != nil || snapshot != nil || !snapshotChunksReceived.isEmpty || !entries.isEmpty }

        public var isEmpty: Bool {
            !needsPersist && messages.isEmpty && messagesAfterPersist.isEmpty && committedEntries.isEmpty
                && readStates.isEmpty && droppedReads.isEmpty && forwardedProposals.isEmpty && !wantsSnapshotImage
        }
    }

    /// The fate of one forwarded command.
    public struct ForwardedOutcome: Sendable, Equatable {
        public var context: ProposalContext
        public var result: Result

        public init(context: ProposalContext, result: Result) {
            self.context = context
            self.result = result
        }

        public enum Result: Sendable, Equatable {
            /// The leader appended it at `index` in `term`: it applies there, unless an entry of
            /// another term takes that index (then it never applies).
            case appended(term: Term, index: Index)
            /// It was appended nowhere: safe to retry.
            case refused
            /// No answer came (the leader changed, or the request or its answer was lost): it
            /// may or may not apply.
            case unknown
        }
    }
}
