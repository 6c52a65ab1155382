extension Raft {
    /// Who waits for which log entry: the node shell's bookkeeping of writers, kept apart from
    /// how a writer is woken. `RaftNode` keeps continuations in it and the simulator keeps its
    /// clients' operation ids, so the simulator's swarms run the rules the node runs:
    ///
    /// - a proposal waits at the index Raft gave it, and is answered by the entry that applies
    ///   there only if that entry has its term (index and term identify an entry); another
    ///   term's entry at that index means it never applies;
    /// - a command forwarded to the leader waits by its context until the leader says where
    ///   it went; an index already handed out to apply, a refusal or silence each end it;
    /// - a snapshot that jumps over waiting indexes ends them with an unknown outcome (the
    ///   entries applied elsewhere, and their results are not known here).
    ///
    /// Pure: no clock, no I/O, no concurrency.
    public struct WriterBook<Waiter> {
        public struct Pending {
            public var waiter: Waiter
            public var term: Term

            public init(waiter: Waiter, term: Term) {
                self.waiter = waiter
                self.term = term
            }
        }

        private var atIndex: [Index: Pending] = [:]
        private var forwarded: [ProposalContext: Waiter] = [:]

        public init() {}

        /// Writers waiting at an index, and forwarded ones not yet placed.
        public var count: Int { atIndex.count + forwarded.count }
        public var isEmpty: Bool { atIndex.isEmpty && forwarded.isEmpty }

        /// A proposal Raft accepted at `index` in `term`. Returns the writer it displaces: one
        /// that waited there for an entry of another term, which the new one replaces, so it
        /// never applies (a forward placed by a leader that died before this node got the
        /// entry, say).
        public mutating func wait(_ waiter: Waiter, term: Term, at index: Index) -> Waiter? {
            atIndex.updateValue(Pending(waiter: waiter, term: term), forKey: index)?.waiter
        }

        /// A command forwarded to the leader under `context`.
        public mutating func forwarded(_ waiter: Waiter, context: ProposalContext) {
            forwarded[context] = waiter
        }

        /// What became of a forwarded command, once the leader answered.
        public enum Placement {
            /// Waiting at its index now; `displaced` as for `wait`.
            case waiting(displaced: Waiter?)
            /// Refused by the leader: it will not apply.
            case refused(Waiter)
            /// Its fate cannot be told: the leader did not say, or it was appended at an index
            /// already handed out to apply (applied before the answer came, its result gone).
            case unknown(Waiter)
            /// No writer waits for this context (it ended already).
            case none
        }

        /// Places a forwarded command. `handedOut` is the highest index already handed out to
        /// apply: a command appended at or below it has applied (or is applying) without its
        /// writer listening.
        public mutating func place(_ outcome: ForwardedOutcome, handedOut: Index) -> Placement {
            guard let waiter = forwarded.removeValue(forKey: outcome.context) else { return .none }
            switch outcome.result {
            case .appended(let term, let index) where index > handedOut:
                return .waiting(displaced: wait(waiter, term: term, at: index))
            case .appended, .unknown:
                return .unknown(waiter)
            case .refused:
                return .refused(waiter)
            }
        }

        /// The writer waiting at `index`, taken out of the book.
        public mutating func take(at index: Index) -> Pending? {
            atIndex.removeValue(forKey: index)
        }

        /// Puts back a writer taken with `take(at:)` and not answered.
        public mutating func putBack(_ pending: Pending, at index: Index) {
            atIndex[index] = pending
        }

        /// Answers the writer of the entry that applied at `index` in `term`: `applied` is true
        /// when that entry is the writer's own.
        public mutating func applied(at index: Index, term: Term) -> (waiter: Waiter, isItsEntry: Bool)? {
            guard let pending = atIndex.removeValue(forKey: index) else { return nil }
            return (pending.waiter, pending.term == term)
        }

        /// Writers at or below `index`, which a snapshot installed over: their outcome is unknown.
        public mutating func takeThrough(_ index: Index) -> [Waiter] {
            let covered = atIndex.keys.filter { $0 <= index }.sorted()
            return covered.compactMap { atIndex.removeValue(forKey: $0)?.waiter }
        }

        /// Every writer, the book emptied (the node stops or crashes).
        public mutating func takeAll() -> (waiting: [Waiter], forwarded: [Waiter]) {
            defer {
                atIndex = [:]
                forwarded = [:]
            }
            return (atIndex.sorted { $0.key < $1.key }.map(\.value.waiter), Array(forwarded.values))
        }
    }
}

extension Raft.WriterBook.Pending: Sendable where Waiter: Sendable {}
extension Raft.WriterBook: Sendable where Waiter: Sendable {}
