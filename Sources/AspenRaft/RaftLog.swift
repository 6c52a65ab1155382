import AspenCore

extension Raft {
    /// The in-memory log of one instance: the entries after the last snapshot, plus the
    /// bookkeeping of what is committed, durable and handed out. The shell keeps the durable copy;
    /// this copy serves replication without any read from disk. Its size is kept down by
    /// compaction, and bounded by `Limits.raftLogEntriesMax` where entries are added.
    struct Log: Sendable {
        private(set) var snapshotIndex: Index
        private(set) var snapshotTerm: Term
        /// `entries[k].index == snapshotIndex + 1 + k`.
        private(set) var entries: [Entry]
        var committed: Index
        /// Entries through `stable` are durable.
        private(set) var stable: Index
        /// Entries through `handedOut` have been given to the shell to persist.
        var handedOut: Index

        init(snapshotIndex: Index, snapshotTerm: Term, entries: [Entry], committed: Index) {
            precondition(entries.first.map { $0.index == snapshotIndex + 1 } ?? true, "log must follow its snapshot")
            self.snapshotIndex = snapshotIndex
            self.snapshotTerm = snapshotTerm
            self.entries = entries
            let last = snapshotIndex + Index(entries.count)
            self.committed = min(max(committed, snapshotIndex), last)
            self.stable = last
            self.handedOut = last
        }

        var firstIndex: Index { snapshotIndex + 1 }
        /// Entries held in memory (bounded by `Limits.raftLogEntriesMax`).
        var count: Int { entries.count }
        var lastIndex: Index { snapshotIndex + Index(entries.count) }
        var lastTerm: Term { entries.last?.term ?? snapshotTerm }

        /// The term of the entry at `index`, or nil if it is compacted away or beyond the end.
        func term(at index: Index) -> Term? {
            if index == snapshotIndex { return snapshotTerm }
            guard index > snapshotIndex, index <= lastIndex else { return nil }
            return entries[Int(index - snapshotIndex - 1)].term
        }

        func matches(index: Index, term: Term) -> Bool { self.term(at: index) == term }

        func entry(at index: Index) -> Entry? {
            guard index > snapshotIndex, index <= lastIndex else { return nil }
            return entries[Int(index - snapshotIndex - 1)]
        }

        /// Entries from `start`, at most `countMax` of them and at most `bytesMax` bytes (at least one).
        func entries(from start: Index, through end: Index? = nil, countMax: Int, bytesMax: Int) -> [Entry] {
            let last = min(end ?? lastIndex, lastIndex)
            guard start > snapshotIndex, start <= last else { return [] }
            let low = Int(start - snapshotIndex - 1)
            let high = min(Int(last - snapshotIndex), low + min(countMax, Int(last - start) + 1))
            var bytes = 0
            var cut = low
            while cut < high {
                bytes += entries[cut].sizeBytes
                if bytes > bytesMax && cut > low { break }
                cut += 1
            }
            return Array(entries[low..<cut])
        }

        /// A candidate's log is at least as up to date as ours (Raft §5.4.1).
        func isUpToDate(lastIndex candidateIndex: Index, lastTerm candidateTerm: Term) -> Bool {
            candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
        }

        /// The largest index at or below `index` whose term is at most `term`: everything after it
        /// is known not to match a log whose entry at `index` has `term`.
        func lastIndex(atOrBelow index: Index, withTermAtMost term: Term) -> Index {
            var candidate = min(index, lastIndex)
            while candidate > snapshotIndex, let entryTerm = self.term(at: candidate), entryTerm > term {
                candidate -= 1
            }
            if candidate == snapshotIndex && snapshotTerm > term && snapshotIndex > 0 {
                // The answer lies in the compacted prefix: one below the snapshot says "unknown".
                return snapshotIndex - 1
            }
            return candidate
        }

        mutating func append(_ newEntries: [Entry]) {
            guard let first = newEntries.first else { return }
            precondition(first.index == lastIndex + 1, "append must extend the log")
            entries.append(contentsOf: newEntries)
        }

        /// Follower side of replication: keeps what matches, truncates at the first conflict and
        /// appends the rest. Returns the index of the last entry of the message.
        mutating func merge(_ incoming: [Entry]) -> Index {
            guard let last = incoming.last else { return 0 }
            for (offset, entry) in incoming.enumerated() where entry.index > snapshotIndex {
                guard let existing = term(at: entry.index) else {
                    append(Array(incoming[offset...]))
                    return last.index
                }
                if existing != entry.term {
                    precondition(entry.index > committed, "a committed entry cannot conflict (index \(entry.index))")
                    truncate(after: entry.index - 1)
                    append(Array(incoming[offset...]))
                    return last.index
                }
            }
            return last.index
        }

        private mutating func truncate(after index: Index) {
            entries.removeSubrange(Int(index - snapshotIndex)...)
            stable = min(stable, index)
            handedOut = min(handedOut, index)
        }

        mutating func markStable(upTo index: Index, term: Term) {
            guard index > stable, index <= handedOut, self.term(at: index) == term else { return }
            stable = index
        }

        /// Drops entries through `index`, which must be committed, durable and applied.
        mutating func compact(through index: Index) {
            guard index > snapshotIndex else { return }
            precondition(index <= committed && index <= stable, "only committed, durable entries can be compacted")
            let term = self.term(at: index)!
            entries.removeFirst(Int(index - snapshotIndex))
            snapshotIndex = index
            snapshotTerm = term
        }

        /// Replaces the whole log by a received snapshot.
        mutating func restore(index: Index, term: Term) {
            entries = []
            snapshotIndex = index
            snapshotTerm = term
            committed = index
            stable = index
            handedOut = index
        }
    }
}
