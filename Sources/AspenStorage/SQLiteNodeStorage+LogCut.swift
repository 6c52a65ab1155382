import AspenCore
import AspenRaft

extension SQLiteNodeStorage {
    /// What opening cut off the end of the log: a batch that a crash tore before it was
    /// acknowledged (nil: nothing). The node logs it; it is never silent.
    public var logCut: LogCut? { log.cut }

    /// Reads the log beside the database at `path` without writing anything (not even the cut
    /// of a torn tail, which it reports): for inspecting a member's files, running or not.
    /// Throws what opening the store would throw for a damaged log.
    public static func inspectLog(path: String, group: GroupID = .root, limits: Limits = .standard) throws -> LogInspection {
        let log = try SegmentedLog(directory: logDirectory(path, group: group), group: group, limits: limits, mode: .readOnly)
        let contents = try log.contents()
        return LogInspection(
            segments: try SegmentedLog.segmentFiles(in: log.directory, files: log.files).count,
            firstIndex: contents.entries.first?.index, lastIndex: contents.lastIndex, hardState: contents.hardState, cut: log.cut)
    }
}

/// What a read-only look at a log found.
public struct LogInspection: Sendable, CustomStringConvertible {
    public var segments: Int
    public var firstIndex: Raft.Index?
    public var lastIndex: Raft.Index?
    public var hardState: Raft.HardState?
    /// What opening the store read-write would cut.
    public var cut: LogCut?

    public var description: String {
        let entries = firstIndex.map { "entries \($0)...\(lastIndex ?? $0)" } ?? "no entries (last index \(lastIndex.map(String.init) ?? "none"))"
        let state = hardState.map { "term \($0.term), vote \($0.vote.map { "\($0)" } ?? "none"), commit \($0.commit)" } ?? "no term or vote"
        return "\(segments) segments, \(entries), \(state); " + (cut.map { "opening would \($0)" } ?? "nothing to cut")
    }
}
