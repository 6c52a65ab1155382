import AspenCore
import AspenKV
import Foundation
import Synchronization

/// Every key's changes since the last compaction, in key order, in memory: the revision of each
/// put or deletion and the lease it carried. The versions themselves stay in SQLite
/// (`kv_history`, keyed by revision), so a commit appends rows at the end of one B-tree and
/// touches no page per key; a read finds the revision it needs here and fetches that one row.
/// Built from `kv_history` when the store opens (as etcd rebuilds its key index from its
/// database). The latest versions written are also kept whole, up to `keptBytes` (oldest
/// first out): a put then finds the version it replaces, and a read the version it shows,
/// without a lookup in SQLite whenever the version kept is the one asked for.
///
/// The writer adds changes before its transaction commits (if it rolls back, the store reads
/// the index again from the file); a reader asks for what was visible at its own transaction's
/// revision, so it never sees a change its snapshot does not hold.
/// Compaction removes changes only after its transaction commits; a reader whose snapshot is
/// older than that is told to start over (`Stale`). Replacing the whole index (a snapshot
/// installed) is bracketed by `beginReplacement`/`endReplacement`, and a read that overlapped
/// one starts over too (`generation`).
final class KeyIndex: Sendable {
    struct Change: Sendable, Equatable {
        var revision: Revision
        var lease: LeaseID
        var deleted: Bool
    }

    struct Entry {
        var key: Bytes
        var changes: [Change]
    }

    /// A sorted run of entries, with what lets a read at a recent revision pass it without
    /// looking at each: a queue's index (a key put, then deleted, for each item) is mostly
    /// deletions until compaction, and a read of its head would otherwise step over every one.
    struct Chunk {
        var entries: [Entry]
        /// Entries whose last change is not a deletion.
        var live = 0
        /// The newest revision of any change in the chunk.
        var newest: Revision = 0

        init(_ entries: [Entry]) {
            self.entries = entries
            summarize()
        }

        mutating func summarize() {
            live = 0
            newest = 0
            for entry in entries {
                guard let last = entry.changes.last else { continue }
                if !last.deleted { live += 1 }
                newest = max(newest, last.revision)
            }
        }

        /// Every entry's visible change at `revision` is its last: (nil: not known without
        /// looking) how many keys exist there.
        func existing(at revision: Revision) -> Int? { revision >= newest ? live : nil }
    }

    /// A read whose snapshot is older than the index's compaction, or that overlapped a
    /// replacement: it must start over with a new transaction.
    struct Stale: Error {}

    fileprivate struct State {
        /// Sorted runs of at most `chunkLimit` entries; together, every key in order.
        var chunks: [Chunk] = []
        /// Changes superseded at or before this revision are gone.
        var compacted: Revision = 0
        /// Keys with a change that carried the lease (a superset: filter by the change visible).
        var leaseKeys: [LeaseID: Set<Bytes>] = [:]
        /// Odd while the index is being replaced.
        var generation: UInt64 = 0
        /// Latest versions, whole; `order` says which came in first (a key may appear twice).
        let keptLimit: Int
        var cache: [Bytes: KeyValue] = [:]
        var cached = 0
        var order: [Bytes] = []
        var orderStart = 0
    }

    static func cost(_ kv: KeyValue) -> Int { kv.key.count + kv.value.count + 96 }

    private let state: Mutex<State>
    static let chunkLimit = 128

    /// `keptBytes`: what the versions kept whole may take in memory (measured: applying puts
    /// to 10,000 keys ran at 209,000-232,000 a second with them, 127,000-165,000 without).
    init(keptBytes: Int = 64 << 20) {
        state = Mutex(State(keptLimit: keptBytes))
    }

    // MARK: Building

    /// Replaces the contents with `entries` (each key's changes in revision order).
    func replace(with entries: [Bytes: [Change]], compacted: Revision) {
        let sorted = entries.sorted { Self.compare($0.key, $1.key) < 0 }
        var chunks: [Chunk] = []
        chunks.reserveCapacity(sorted.count / (Self.chunkLimit / 2) + 1)
        var leaseKeys: [LeaseID: Set<Bytes>] = [:]
        var run: [Entry] = []
        run.reserveCapacity(Self.chunkLimit / 2)
        for (key, changes) in sorted {
            for change in changes where change.lease != 0 { leaseKeys[change.lease, default: []].insert(key) }
            run.append(Entry(key: key, changes: changes))
            if run.count == Self.chunkLimit / 2 {
                chunks.append(Chunk(run))
                run.removeAll(keepingCapacity: true)
            }
        }
        if !run.isEmpty { chunks.append(Chunk(run)) }
        state.withLock {
            $0.chunks = chunks
            $0.compacted = compacted
            $0.leaseKeys = leaseKeys
            $0.forgetAll()
        }
    }

    var generation: UInt64 { state.withLock { $0.generation } }

    func beginReplacement() { state.withLock { $0.generation += 1 } }
    func endReplacement() { state.withLock { $0.generation += 1 } }

    // MARK: Reads

    /// The change to `key` visible at `revision`: the last at or before it (nil: none), with
    /// its version if it is kept whole.
    func change(_ key: Bytes, at revision: Revision) throws -> (change: Change, version: KeyValue?)? {
        try state.withLock { state in
            try state.check(revision)
            guard let (chunk, position) = state.find(key),
                let change = Self.visible(state.chunks[chunk].entries[position].changes, at: revision)
            else { return nil }
            return (change, state.kept(key, change))
        }
    }

    /// The keys in `bounds` (strictly after `after`) that exist at `revision`, in order, with
    /// the change each shows there (and its version if it is kept whole); at most `limit`.
    func live(in bounds: KeyBounds, after: Bytes?, at revision: Revision, limit: Int) throws
        -> [(key: Bytes, change: Change, version: KeyValue?)]
    {
        var found: [(key: Bytes, change: Change, version: KeyValue?)] = []
        try each(in: bounds, after: after, at: revision) { state, key, change in
            found.append((key, change, state.kept(key, change)))
            return found.count < limit
        }
        return found
    }

    /// How many keys in `bounds` exist at `revision`.
    func count(in bounds: KeyBounds, at revision: Revision) throws -> Int {
        var total = 0
        try each(in: bounds, after: nil, at: revision, whole: { total += $0 }) { _, _, _ in
            total += 1
            return true
        }
        return total
    }

    /// Keys attached to `lease` at `revision`, in order.
    func keys(attachedTo lease: LeaseID, at revision: Revision) throws -> [Bytes] {
        try state.withLock { state in
            try state.check(revision)
            guard let candidates = state.leaseKeys[lease] else { return [] }
            return candidates.filter { key in
                guard let (chunk, position) = state.find(key),
                    let change = Self.visible(state.chunks[chunk].entries[position].changes, at: revision)
                else { return false }
                return change.lease == lease
            }.sorted { Self.compare($0, $1) < 0 }
        }
    }

    /// Calls `body` with each key in `bounds` (after `after`) that exists at `revision`, in
    /// order, until it returns false. A chunk with no such key is passed over whole; given
    /// `whole`, so is a chunk wholly in bounds whose keys are known from its summary, `whole`
    /// getting their number instead. Holds the lock throughout: `body` must not block.
    private func each(
        in bounds: KeyBounds, after: Bytes?, at revision: Revision, whole: ((Int) -> Void)? = nil, _ body: (State, Bytes, Change) -> Bool
    ) throws {
        try state.withLock { state in
            try state.check(revision)
            guard !state.chunks.isEmpty else { return }
            var start = bounds.start
            var skipEqual = false
            if let after, Self.compare(after, start) >= 0 {
                start = after
                skipEqual = true
            }
            var chunk = state.chunkIndex(start)
            var position = Self.lowerBound(state.chunks[chunk].entries, start)
            while chunk < state.chunks.count {
                let entries = state.chunks[chunk].entries
                if let existing = state.chunks[chunk].existing(at: revision) {
                    if existing == 0 {
                        // Nothing there to see.
                        if let end = bounds.end, Self.compare(entries[0].key, end) >= 0 { return }
                        chunk += 1
                        position = 0
                        skipEqual = false
                        continue
                    }
                    if let whole, position == 0, !skipEqual, bounds.end.map({ Self.compare(entries[entries.count - 1].key, $0) < 0 }) ?? true {
                        whole(existing)
                        chunk += 1
                        continue
                    }
                }
                while position < entries.count {
                    let entry = entries[position]
                    position += 1
                    if let end = bounds.end, Self.compare(entry.key, end) >= 0 { return }
                    if skipEqual {
                        skipEqual = false
                        if Self.compare(entry.key, start) == 0 { continue }
                    }
                    guard let change = Self.visible(entry.changes, at: revision), !change.deleted else { continue }
                    guard body(state, entry.key, change) else { return }
                }
                chunk += 1
                position = 0
            }
        }
    }

    /// The last change at or before `revision`, nil if there is none or it is a deletion.
    static func visible(_ changes: [Change], at revision: Revision) -> Change? {
        if let last = changes.last, last.revision <= revision { return last.deleted ? nil : last }
        var low = 0
        var high = changes.count
        while low < high {
            let middle = (low + high) / 2
            if changes[middle].revision <= revision { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        let change = changes[low - 1]
        return change.deleted ? nil : change
    }

    // MARK: Writes

    /// The key's last change, a deletion included (the writer's view: uncommitted changes too).
    func last(_ key: Bytes) -> Change? {
        state.withLock { state in
            guard let (chunk, position) = state.find(key) else { return nil }
            return state.chunks[chunk].entries[position].changes.last
        }
    }

    /// Records a change to `key` (newer than any it has): `version` is the new version, nil for
    /// a deletion. Returns the key's change before it (nil: none).
    @discardableResult
    func record(_ key: Bytes, _ change: Change, version: KeyValue?) -> Change? {
        state.withLock { state in
            if let version { state.keep(version) } else { state.forget(key) }
            if change.lease != 0 { state.leaseKeys[change.lease, default: []].insert(key) }
            if state.chunks.isEmpty {
                state.chunks = [Chunk([Entry(key: key, changes: [change])])]
                return nil
            }
            let (chunk, position, found) = state.position(of: key)
            state.chunks[chunk].newest = max(state.chunks[chunk].newest, change.revision)
            if !change.deleted { state.chunks[chunk].live += 1 }
            if found {
                let previous = state.chunks[chunk].entries[position].changes.last
                if let previous, !previous.deleted { state.chunks[chunk].live -= 1 }
                state.chunks[chunk].entries[position].changes.append(change)
                return previous
            }
            state.chunks[chunk].entries.insert(Entry(key: key, changes: [change]), at: position)
            if state.chunks[chunk].entries.count > Self.chunkLimit {
                let upper = Array(state.chunks[chunk].entries[(Self.chunkLimit / 2)...])
                state.chunks[chunk].entries.removeLast(upper.count)
                state.chunks[chunk].summarize()
                state.chunks.insert(Chunk(upper), at: chunk + 1)
            }
            return nil
        }
    }

    /// Takes back the last change recorded for `key`, at `revision`: a command that failed
    /// part-way undoes its changes, newest first, before its transaction goes on.
    func unrecord(_ key: Bytes, at revision: Revision) {
        state.withLock { state in
            state.forget(key)
            guard let (chunk, position) = state.find(key), state.chunks[chunk].entries[position].changes.last?.revision == revision else {
                preconditionFailure("the change to take back is not the key's last")
            }
            state.chunks[chunk].entries[position].changes.removeLast()
            if state.chunks[chunk].entries[position].changes.isEmpty { state.chunks[chunk].entries.remove(at: position) }
            if state.chunks[chunk].entries.isEmpty {
                state.chunks.remove(at: chunk)
            } else {
                state.chunks[chunk].summarize()
            }
        }
    }

    /// Drops what no read at or after `revision` can see: every change superseded at or before
    /// it, and a deletion at or before it (with its key, if nothing follows). Mirrors the rows
    /// `SQLiteKVBackend.compactHistory` deletes; call once that deletion has committed.
    func compact(through revision: Revision) {
        state.withLock { state in
            guard revision > state.compacted else { return }
            state.compacted = revision
            var leaseKeys: [LeaseID: Set<Bytes>] = [:]
            var chunks: [Chunk] = []
            chunks.reserveCapacity(state.chunks.count)
            for run in state.chunks.map(\.entries) {
                var kept: [Entry] = []
                kept.reserveCapacity(run.count)
                for var entry in run {
                    // The first change to keep: the last at or before `revision` unless it is a
                    // deletion, then everything after it.
                    let after = entry.changes.firstIndex { $0.revision > revision } ?? entry.changes.count
                    var first = after
                    if after > 0, !entry.changes[after - 1].deleted { first = after - 1 }
                    if first > 0 { entry.changes.removeFirst(first) }
                    guard !entry.changes.isEmpty else { continue }
                    for change in entry.changes where change.lease != 0 { leaseKeys[change.lease, default: []].insert(entry.key) }
                    kept.append(entry)
                }
                if !kept.isEmpty { chunks.append(Chunk(kept)) }
            }
            state.chunks = chunks
            state.leaseKeys = leaseKeys
        }
    }

    // MARK: Order

    /// memcmp order, shorter first on a common prefix: the order of SQLite's BLOB keys.
    static func compare(_ a: Bytes, _ b: Bytes) -> Int {
        let common = min(a.count, b.count)
        let order = a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in common == 0 ? 0 : memcmp(x.baseAddress!, y.baseAddress!, common) }
        }
        if order != 0 { return Int(order) }
        return a.count - b.count
    }

    /// The first position in `entries` whose key is not below `key`.
    static func lowerBound(_ entries: [Entry], _ key: Bytes) -> Int {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if compare(entries[middle].key, key) < 0 { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

extension KeyIndex.State {
    func check(_ revision: Revision) throws {
        if generation % 2 == 1 || revision < compacted { throw KeyIndex.Stale() }
    }

    /// The chunk that holds `key` or would: the last whose first key is not above it (or the first).
    func chunkIndex(_ key: Bytes) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if KeyIndex.compare(chunks[middle].entries[0].key, key) <= 0 { low = middle + 1 } else { high = middle }
        }
        return max(0, low - 1)
    }

    /// The version of `key` at `change`, if it is the one kept whole.
    func kept(_ key: Bytes, _ change: KeyIndex.Change) -> KeyValue? {
        guard let version = cache[key], version.modRevision == change.revision else { return nil }
        return version
    }

    mutating func keep(_ version: KeyValue) {
        let cost = KeyIndex.cost(version)
        guard cost <= keptLimit / 64 else { return forget(version.key) }
        if let old = cache.updateValue(version, forKey: version.key) {
            cached -= KeyIndex.cost(old)
        } else {
            order.append(version.key)
        }
        cached += cost
        while cached > keptLimit, orderStart < order.count {
            let oldest = order[orderStart]
            orderStart += 1
            if let old = cache.removeValue(forKey: oldest) { cached -= KeyIndex.cost(old) }
        }
        if orderStart > 4096, orderStart * 2 > order.count {
            order.removeFirst(orderStart)
            orderStart = 0
        }
    }

    mutating func forget(_ key: Bytes) {
        if let old = cache.removeValue(forKey: key) { cached -= KeyIndex.cost(old) }
    }

    mutating func forgetAll() {
        cache = [:]
        cached = 0
        order = []
        orderStart = 0
    }

    /// Where `key` is, or would go, in a non-empty index.
    func position(of key: Bytes) -> (chunk: Int, position: Int, found: Bool) {
        let chunk = chunkIndex(key)
        let position = KeyIndex.lowerBound(chunks[chunk].entries, key)
        let entries = chunks[chunk].entries
        return (chunk, position, position < entries.count && KeyIndex.compare(entries[position].key, key) == 0)
    }

    func find(_ key: Bytes) -> (Int, Int)? {
        guard !chunks.isEmpty else { return nil }
        let (chunk, position, found) = position(of: key)
        return found ? (chunk, position) : nil
    }
}
