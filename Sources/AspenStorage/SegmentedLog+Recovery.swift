import AspenCore
import AspenRaft

extension SegmentedLog {
    /// The entries of `contents` after `snapshot`, for a store whose state is at `snapshot` to
    /// hand to Raft; when the log does not go on from the snapshot, it starts over after it
    /// first (read-write), so that the entries appended next follow it.
    ///
    /// A log that ends before the snapshot's index, or holds that index with another term, is
    /// the log from before a snapshot was installed, when a crash came before the log started
    /// over: as Raft's rule for installing a snapshot says, none of it follows the snapshot. Left
    /// as it is, the next entry (after the snapshot) would be appended behind it, and the log
    /// would read back with a gap, or cut back to the old entries at the snapshot's index.
    func entries(after snapshot: Raft.SnapshotMetadata, in contents: Contents) throws -> [Raft.Entry] {
        if Self.isBehind(contents, snapshot) {
            if mode == .readWrite { try reset(after: snapshot.index, term: snapshot.term, hardState: nil) }
            return []
        }
        let entries = contents.entries.drop { $0.index <= snapshot.index }
        if let first = entries.first, first.index != snapshot.index + 1 {
            throw StorageError.logGap(file: directory, group: group, expected: snapshot.index + 1, found: first.index)
        }
        return Array(entries)
    }

    /// Whether the log holds entries or a reset that `snapshot` replaced: it ends before the
    /// snapshot's index, or holds that index with another term.
    static func isBehind(_ contents: Contents, _ snapshot: Raft.SnapshotMetadata) -> Bool {
        guard let last = contents.lastIndex else { return false }
        if last < snapshot.index { return true }
        if let term = contents.term(at: snapshot.index), term != snapshot.term { return true }
        return false
    }
}
