import AspenCore

extension Raft {
    /// The leader's view of one follower.
    struct Progress: Sendable {
        enum State: Sendable, Equatable {
            /// Finding where the logs match: one append at a time.
            case probe
            /// Logs match through `match`: appends stream within the in-flight window.
            case replicate
            /// The follower needs entries that were compacted; a snapshot is being sent.
            case snapshot
        }

        var match: Index = 0
        var next: Index
        var state: State = .probe
        /// Probe state: an append is out and unanswered.
        var probeSent = false
        /// Replicate state: the last index of each append in flight, oldest first, with its send tick.
        var inflight: [(index: Index, tick: UInt64)] = []
        /// Heard from since the last CheckQuorum round.
        var recentActive = false
        var readRoundAcked: UInt64 = 0
        // Snapshot state: the image being sent (0 while the shell prepares one), the next byte
        // to send, the bytes the follower has confirmed, and when the transfer last moved.
        var snapshotIndex: Index = 0
        var snapshotOffset = 0
        var snapshotAcked = 0
        var snapshotProgressTick: UInt64 = 0

        init(next: Index) { self.next = next }

        func isPaused(inflightMax: Int) -> Bool {
            switch state {
            case .probe: return probeSent
            case .replicate: return inflight.count >= inflightMax
            case .snapshot: return true
            }
        }

        mutating func becomeProbe() {
            if state == .snapshot {
                next = max(match + 1, snapshotIndex + 1)
            } else {
                next = match + 1
            }
            state = .probe
            probeSent = false
            inflight.removeAll(keepingCapacity: true)
        }

        mutating func becomeReplicate() {
            state = .replicate
            next = match + 1
            probeSent = false
            inflight.removeAll(keepingCapacity: true)
        }

        /// Starts sending the image at `index` from its first byte (index 0: none is ready yet).
        mutating func becomeSnapshot(index: Index, tick: UInt64) {
            state = .snapshot
            snapshotIndex = index
            snapshotOffset = 0
            snapshotAcked = 0
            snapshotProgressTick = tick
            inflight.removeAll(keepingCapacity: true)
        }

        /// Records an acknowledgement. Returns false if it was stale.
        mutating func acknowledge(_ index: Index) -> Bool {
            guard index > match else { return false }
            match = index
            next = max(next, index + 1)
            probeSent = false
            var dropped = 0
            while dropped < inflight.count && inflight[dropped].index <= index { dropped += 1 }
            if dropped > 0 { inflight.removeFirst(dropped) }
            return true
        }
    }
}
