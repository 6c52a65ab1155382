extension Raft {
    /// When the node shell compacts its log, and when it tries again after a failure. Pure and
    /// clock-free: the caller passes the time (milliseconds of a monotonic clock; virtual time
    /// in the simulator), so `RaftNode` and the simulator run the same policy.
    ///
    /// - Once `threshold` applied entries are past the last snapshot, a snapshot is held at the
    ///   applied index (a leader holds it no further than an image it is streaming, unless the
    ///   log has grown past four thresholds: compacting past it would make the transfer start
    ///   over).
    /// - A follower compacts through a held snapshot at once. A leader waits while a follower
    ///   still needs entries before it, for at most `waitMs` or until the log holds two
    ///   thresholds (then that follower will need an image).
    /// - A failed snapshot or image is retried after a backoff doubling from one second to a
    ///   minute; the log grows meanwhile.
    public struct CompactionPolicy: Sendable, Equatable {
        public var threshold: Index
        public var waitMs: Int64
        /// The snapshot waiting for followers: its index and when it was taken.
        public private(set) var held: (index: Index, sinceMs: Int64)?
        /// A compaction under way: no other starts.
        public private(set) var compacting = false
        public private(set) var retryAtMs: Int64?
        public private(set) var backoffMs: Int64 = 0
        public static let retryMsMin: Int64 = 1_000
        public static let retryMsMax: Int64 = 60_000

        public init(threshold: Index, waitMs: Int64) {
            self.threshold = threshold
            self.waitMs = waitMs
        }

        public static func == (a: Self, b: Self) -> Bool {
            a.threshold == b.threshold && a.waitMs == b.waitMs && a.held?.index == b.held?.index && a.held?.sinceMs == b.held?.sinceMs
                && a.compacting == b.compacting && a.retryAtMs == b.retryAtMs && a.backoffMs == b.backoffMs
        }

        /// What the log looks like to the policy.
        public struct View {
            public var applied: Index
            public var snapshotIndex: Index
            public var lastIndex: Index
            public var isLeader: Bool
            /// The leader's followers: how far each matches, and the image streamed to it (0: none).
            public var followers: [(matchIndex: Index, imageIndex: Index)]

            public init(applied: Index, snapshotIndex: Index, lastIndex: Index, isLeader: Bool, followers: [(matchIndex: Index, imageIndex: Index)]) {
                self.applied = applied
                self.snapshotIndex = snapshotIndex
                self.lastIndex = lastIndex
                self.isLeader = isLeader
                self.followers = followers
            }
        }

        /// What to do now.
        public enum Decision: Equatable {
            case nothing
            /// Compact through `index`; `followerBehind` when a follower still needed entries before it.
            case compact(through: Index, followerBehind: Bool)
        }

        /// Whether a snapshot or image may be attempted now (no failure is being waited out).
        public func mayAttempt(nowMs: Int64) -> Bool { retryAtMs.map { nowMs >= $0 } ?? true }

        /// Decides whether to compact now; on `.compact` the caller compacts and then reports
        /// `compacted()` or `compactionFailed(nowMs:)`.
        public mutating func decide(_ log: View, nowMs: Int64) -> Decision {
            if held == nil, !compacting, log.applied >= log.snapshotIndex + threshold, mayAttempt(nowMs: nowMs) {
                var index = log.applied
                let logLength = log.lastIndex - log.snapshotIndex
                if log.isLeader, logLength < 4 * threshold, let streaming = log.followers.map(\.imageIndex).filter({ $0 > 0 }).min() {
                    index = min(index, streaming)
                }
                if index > log.snapshotIndex { held = (index, nowMs) }
            }
            guard let held, !compacting else { return .nothing }
            var behind = false
            if log.isLeader, log.followers.contains(where: { $0.matchIndex < held.index }) {
                let logLength = log.lastIndex - log.snapshotIndex
                if nowMs - held.sinceMs < waitMs && logLength < 2 * threshold { return .nothing }
                behind = true
            }
            self.held = nil
            compacting = true
            return .compact(through: held.index, followerBehind: behind)
        }

        /// The compaction `decide` started succeeded.
        public mutating func compacted() {
            compacting = false
            succeeded()
        }

        /// The compaction `decide` started failed: the next waits. Returns how long.
        @discardableResult
        public mutating func compactionFailed(nowMs: Int64) -> Int64 {
            compacting = false
            return failed(nowMs: nowMs)
        }

        /// A snapshot, image or compaction succeeded: the backoff starts over.
        public mutating func succeeded() {
            backoffMs = 0
            retryAtMs = nil
        }

        /// A snapshot or image failed: the next attempt waits. Returns how long.
        @discardableResult
        public mutating func failed(nowMs: Int64) -> Int64 {
            backoffMs = min(Self.retryMsMax, max(Self.retryMsMin, backoffMs * 2))
            retryAtMs = nowMs + backoffMs
            return backoffMs
        }
    }
}
