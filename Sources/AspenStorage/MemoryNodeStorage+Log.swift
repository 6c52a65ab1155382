import AspenCore
import AspenRaft

/// Log mode: the Raft log and hard state in a `SegmentedLog` on a given disk, written as
/// `SQLiteNodeStorage` writes them (entries and a changed term or vote appended, and waited
/// for, before the commit applies anything; the log started over when a snapshot is installed;
/// files deleted when the store compacts), and read back from the disk when the store loads.
/// The simulator puts each node's log on a `PowerLossDisk`, so a crash can tear the write in
/// flight and the restart must recover from what reached the disk.
extension MemoryNodeStorage {
    /// Where a store in log mode keeps its log.
    package struct LogSetup: Sendable {
        package var files: any LogFileSystem
        package var directory: String
        /// Small segments make rollover and compaction across files frequent.
        package var segmentBytes: Int
        package var zeroChunkBytes: Int

        package init(files: any LogFileSystem, directory: String, segmentBytes: Int = 64 << 20, zeroChunkBytes: Int = 1 << 20) {
            self.files = files
            self.directory = directory
            self.segmentBytes = segmentBytes
            self.zeroChunkBytes = zeroChunkBytes
        }
    }

    /// A store in log mode: opens (creating if needed) the log in `setup.directory`. The in-memory part
    /// starts empty, so the log must be new too: this object is the node's disk, and `load` is
    /// its restart.
    package convenience init(limits: Limits = .standard, log setup: LogSetup) throws {
        self.init(limits: limits, logSetup: setup)
        try state.withLock { state in try Self.reopenLog(setup, limits: limits, in: &state) }
    }

    /// What the last opening of the log cut off its end: a torn write that was never
    /// acknowledged (nil: nothing, or not in log mode).
    package var logCut: LogCut? { state.withLock { $0.logCut } }

    public func close() throws {
        state.withLock { state in
            state.log?.close()
            state.log = nil
        }
    }

    /// Opens the log again, as a restarting node does, and takes the entries after the snapshot
    /// and the newest term and vote from what the disk holds. The log object opened before is
    /// dropped unused: its process is gone.
    static func reopenLog(_ setup: LogSetup, limits: Limits, in state: inout State) throws {
        state.log?.close()
        state.log = nil
        let log = try SegmentedLog(
            directory: setup.directory, group: .root, limits: limits, segmentBytes: setup.segmentBytes, files: setup.files,
            zeroChunkBytes: setup.zeroChunkBytes)
        let contents = try log.contents()
        // The log is written before the rest, so its term and vote are the newer ones.
        if let logged = contents.hardState, logged.term >= state.hardState.term {
            state.hardState = Raft.HardState(term: logged.term, vote: logged.vote, commit: max(logged.commit, state.hardState.commit))
        }
        state.entries = try log.entries(after: state.snapshot, in: contents)
        state.logged = state.hardState
        state.logCut = log.cut
        state.log = log
    }

    /// Log mode: starts the log over after the installed snapshot.
    static func logReset(after snapshot: Raft.SnapshotMetadata, hardState: Raft.HardState?, in state: inout State) throws {
        guard let log = state.log else { return }
        try log.reset(after: snapshot.index, term: snapshot.term, hardState: hardState)
        if let hardState { state.logged = hardState }
    }

    /// Log mode: appends the entries, with the hard state, when there are entries or the term or
    /// vote changed (the commit index alone is learned again from the leader), and waits for the disk.
    static func logAppend(_ entries: [Raft.Entry], hardState: Raft.HardState?, in state: inout State) throws {
        guard let log = state.log else { return }
        guard !entries.isEmpty || hardState.map({ changesTermOrVote($0, since: state.logged) }) == true else { return }
        try log.append(entries, hardState: hardState)
        if let hardState { state.logged = hardState }
    }

    static func changesTermOrVote(_ hardState: Raft.HardState, since logged: Raft.HardState?) -> Bool {
        hardState.term != logged?.term || hardState.vote != logged?.vote
    }
}
