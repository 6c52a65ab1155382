import AspenCore
import AspenRaft
import Foundation
import Synchronization

/// The Raft log of one group, and its term and vote, in append-only segment files: a batch of
/// entries is one `pwrite` and one `fdatasync`, however many entries it holds.
///
/// In SQLite the log cost a B-tree insert and a whole 8 KiB page in the WAL per batch (copied
/// again into the database by the next checkpoint, and deleted row by row at compaction); here a
/// batch writes only its own bytes, and compaction deletes whole files.
///
/// **Format** (`SegmentedLog+Format.swift`). A segment (`<sequence as 16 hex digits>.seg`) starts
/// with an 8-byte magic, then batches: what one `append` wrote, framed by its length, the
/// CRC-32C of its records and a CRC-32C of the header itself (bound to the batch's offset). A
/// header of zeros ends the segment: files only ever grow by zeros written ahead of the batches
/// (`zeroChunkBytes` at a time), so the next batch's place reads as zeros until it is written,
/// and an `fdatasync` never waits on the file's block map.
///
/// **Records.** An entry (index, term, payload); the hard state (term, vote, commit); a reset
/// (the log now starts after index, term — written when a snapshot is installed). Entries are
/// never overwritten in place: a follower that replaces a suffix appends the new entries, and
/// reading the log back cuts it where a record's index goes back. Each segment starts with the
/// hard state, so the newest one is found even after older segments are deleted.
///
/// **Crashes and corruption** (`SegmentedLog+Reading.swift`). A power loss can tear only the
/// last batch, which was never acknowledged: it is bad and nothing valid follows it. Any other
/// bad batch — one with a valid batch after it, or in a segment before the last — held
/// acknowledged entries, and opening refuses the log (`StorageError.corruptedLog`) rather than
/// cut them. Opening read-write cuts a torn last batch and reports it (`cut`); opening read-only
/// never writes and reports what it would cut.
final class SegmentedLog: Sendable {
    let directory: String
    let group: GroupID
    let limits: Limits
    /// A segment past this size is closed and the next write starts a new one.
    let segmentBytes: Int
    /// How far ahead of the batches the last segment is filled with zeros.
    let zeroChunkBytes: Int
    let mode: Mode
    let files: any LogFileSystem
    /// What opening cut off the log (read-only: would cut), if anything.
    let cut: LogCut?
    private let state: Mutex<State>

    enum Mode: Sendable {
        /// For the node that runs on the log: cuts a torn tail and writes.
        case readWrite
        /// For inspection: reads, reports what it would cut, never writes.
        case readOnly
    }

    struct Segment: Sendable {
        var sequence: UInt64
        var path: String
        /// The highest entry index written into it (0: none).
        var maxIndex: Raft.Index
        /// Written by a version that did not frame batches (`legacyMagic`): read, never appended to.
        var isLegacy = false
    }

    struct State: Sendable {
        var segments: [Segment] = []
        /// The last segment's file, where batches are appended; nil once closed (or read-only).
        var file: LogFile?
        /// Where the next batch goes in the last segment.
        var offset = 0
        /// The last segment's size: batches, then zeros.
        var fileEnd = 0
        /// The newest hard state written, copied to the head of each new segment.
        var hardState: Raft.HardState?
        /// What opening read, kept for the first `contents()` unless something is written first.
        var opened: Contents?
    }

    /// What the files hold, read back in order.
    struct Contents: Sendable {
        /// The index before `entries.first` (nil: no entry and no reset was ever written).
        var base: Raft.Index?
        var entries: [Raft.Entry] = []
        var hardState: Raft.HardState?

        var lastIndex: Raft.Index? { base.map { $0 + Raft.Index(entries.count) } }

        func term(at index: Raft.Index) -> Raft.Term? {
            guard let base, index > base, index <= base + Raft.Index(entries.count) else { return nil }
            return entries[Int(index - base - 1)].term
        }
    }

    /// Opens the log in `directory`. Read-write, it creates the directory if needed and cuts a
    /// torn last batch off the last segment; either way it refuses a log whose acknowledged
    /// entries are damaged.
    init(
        directory: String, group: GroupID, limits: Limits, segmentBytes: Int = 64 << 20, mode: Mode = .readWrite,
        files: any LogFileSystem = POSIXLogFileSystem(), zeroChunkBytes: Int = 1 << 20
    ) throws {
        precondition(zeroChunkBytes > 0 && segmentBytes > 0)
        self.directory = directory
        self.group = group
        self.limits = limits
        self.segmentBytes = segmentBytes
        self.zeroChunkBytes = zeroChunkBytes
        self.mode = mode
        self.files = files
        if mode == .readWrite { try files.createDirectory(directory) }
        let scan = try Self.scan(directory: directory, group: group, limits: limits, files: files)
        cut = scan.cut
        state = Mutex(State(segments: scan.segments, hardState: scan.contents.hardState, opened: scan.contents))
        guard mode == .readWrite else { return }
        try state.withLock { state in try openForAppending(scan, in: &state) }
    }

    /// Makes the last segment the one written to, cut after its last good batch; or starts a
    /// new one when there is none, when its creation was cut short (under the same name), or
    /// when it is in the legacy format.
    private func openForAppending(_ scan: Scan, in state: inout State) throws {
        guard let last = scan.segments.last, !last.isLegacy, scan.unfinished == nil else {
            let sequence = scan.unfinished?.sequence ?? (scan.segments.last.map { $0.sequence + 1 } ?? 1)
            try startSegment(sequence: sequence, head: [], in: &state)
            return
        }
        let file = try files.open(last.path, create: false)
        if scan.cut != nil {
            // Bytes of the torn batch that did reach the disk must never lie behind later ones.
            do { try files.truncate(file, to: scan.tail) } catch {
                files.close(file)
                throw error
            }
        }
        state.file = file
        state.offset = scan.tail
        state.fileEnd = scan.cut == nil ? scan.lastFileBytes : scan.tail
    }

    deinit { close() }

    /// The whole log as the files hold it (the first time after opening, without reading them
    /// again).
    func contents() throws -> Contents {
        if let opened = state.withLock({ state in defer { state.opened = nil }; return state.opened }) { return opened }
        return try Self.scan(directory: directory, group: group, limits: limits, files: files).contents
    }

    /// Whether no entry, term or vote was ever written.
    var isEmpty: Bool {
        state.withLock { state in
            (state.hardState.map { $0.term == 0 && $0.vote == nil } ?? true) && state.segments.allSatisfy { $0.maxIndex == 0 }
        }
    }

    /// Appends `entries` (each after the one before; the first may go back to replace a suffix)
    /// and the hard state as one batch, and makes it durable before returning.
    func append(_ entries: [Raft.Entry], hardState: Raft.HardState?) throws {
        var batch = BatchEncoder(capacity: entries.reduce(64) { $0 + $1.sizeBytes + 32 })
        for entry in entries { batch.appendEntry(entry) }
        if let hardState { batch.append(.hardState, Self.encode(hardState)) }
        guard !batch.isEmpty else { return }
        try state.withLock { state in
            try checkWritable(state)
            state.opened = nil
            if state.offset >= segmentBytes {
                try startSegment(sequence: state.segments[state.segments.count - 1].sequence + 1, head: [], in: &state)
            }
            try write(batch.framed(at: state.offset), in: &state)
            let last = state.segments.count - 1
            if let index = entries.last?.index { state.segments[last].maxIndex = max(state.segments[last].maxIndex, index) }
            if let hardState { state.hardState = hardState }
        }
    }

    /// Starts the log over after `index` (a snapshot was installed there): a new segment opens
    /// with the reset, and every older one is deleted.
    func reset(after index: Raft.Index, term: Raft.Term, hardState: Raft.HardState?) throws {
        var body = ByteWriter(capacity: 16)
        body.writeFixed(index)
        body.writeFixed(term)
        let dropped: [Segment] = try state.withLock { state in
            try checkWritable(state)
            state.opened = nil
            if let hardState { state.hardState = hardState }
            let older = state.segments
            try startSegment(sequence: (older.last?.sequence ?? 0) + 1, head: [(.reset, body.bytes)], in: &state)
            state.segments.removeFirst(older.count)
            return older
        }
        try remove(dropped)
    }

    /// Deletes the segments that hold only entries through `index` (never the one being
    /// written). The caller has made the state through `index` durable first.
    func compact(through index: Raft.Index) throws {
        let dropped: [Segment] = try state.withLock { state in
            try checkWritable(state)
            state.opened = nil
            var count = 0
            while count < state.segments.count - 1, state.segments[count].maxIndex <= index { count += 1 }
            let dropped = Array(state.segments.prefix(count))
            state.segments.removeFirst(count)
            return dropped
        }
        try remove(dropped)
    }

    func close() {
        state.withLock { state in
            if let file = state.file { files.close(file) }
            state.file = nil
        }
    }

    /// The bytes of every segment in `directory` (0 if there is none).
    static func bytes(in directory: String) -> Int64 {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".seg") }.compactMap {
            (try? FileManager.default.attributesOfItem(atPath: directory + "/" + $0))?[.size] as? Int64
        }.reduce(0, +)
    }

    // MARK: Writing

    private func checkWritable(_ state: State) throws {
        guard mode == .readWrite else { throw StorageError.io(file: directory, detail: "the log was opened read-only") }
        guard state.file != nil else { throw StorageError.io(file: directory, detail: "the log is closed") }
    }

    /// Deletes `segments` oldest first, each durably before the next, so that a crash leaves
    /// the newer ones without a gap among them.
    private func remove(_ segments: [Segment]) throws {
        for segment in segments {
            try files.remove(segment.path)
            try files.synchronizeDirectory(directory)
        }
    }

    /// Creates the next segment with the magic and a first batch of the hard state and `head`,
    /// durably (file and directory), and makes it the one written to.
    private func startSegment(sequence: UInt64, head: [(Kind, [UInt8])], in state: inout State) throws {
        let path = directory + "/" + Self.name(sequence)
        let file = try files.open(path, create: true)
        var batch = BatchEncoder(capacity: 64)
        if let hardState = state.hardState { batch.append(.hardState, Self.encode(hardState)) }
        for (kind, body) in head { batch.append(kind, body) }
        var fresh = State(segments: state.segments, file: file, offset: 0, fileEnd: 0, hardState: state.hardState)
        do {
            try write(Self.magic + (batch.isEmpty ? [] : batch.framed(at: Self.magic.count)), in: &fresh)
            try files.synchronizeDirectory(directory)
        } catch {
            files.close(file)
            throw error
        }
        if let old = state.file { files.close(old) }
        state = fresh
        state.segments.append(Segment(sequence: sequence, path: path, maxIndex: 0))
    }

    /// Writes `bytes` at the end of the batches (zeros first, if they reach past the file's
    /// end) and waits for the disk.
    private func write(_ bytes: [UInt8], in state: inout State) throws {
        guard let file = state.file else { throw StorageError.io(file: directory, detail: "the log is closed") }
        let end = state.offset + bytes.count
        if end > state.fileEnd {
            let zeroedEnd = (end + zeroChunkBytes - 1) / zeroChunkBytes * zeroChunkBytes
            // A page per write: one large write would put the range in one large folio of the
            // page cache, and every later batch would dirty (and account) all of it.
            try Self.zeros.withUnsafeBytes { zeros in
                var at = state.fileEnd
                while at < zeroedEnd {
                    let count = min(zeros.count, zeroedEnd - at)
                    try files.write(UnsafeRawBufferPointer(rebasing: zeros[0..<count]), to: file, at: at)
                    at += count
                }
            }
            state.fileEnd = zeroedEnd
        }
        try bytes.withUnsafeBytes { try files.write($0, to: file, at: state.offset) }
        try files.synchronize(file)
        state.offset = end
    }

    private static let zeros = [UInt8](repeating: 0, count: 4096)

    static func name(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".seg"
    }
}

/// What opening a log cut off its last segment (or, opened read-only, would cut): the bytes of
/// a batch that a crash tore before it was acknowledged, or a segment whose creation it cut short.
public struct LogCut: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// Where the cut starts: the end of the last good batch.
    public var offset: Int
    /// The bytes removed from the file (its zeros ahead of the batches included).
    public var bytes: Int
    /// Of those, the bytes from `offset` through the last byte that is not zero.
    public var writtenBytes: Int
    public var reason: String

    public var description: String {
        "cut \(bytes) bytes (\(writtenBytes) written) from \(file) at byte \(offset): \(reason)"
    }
}
