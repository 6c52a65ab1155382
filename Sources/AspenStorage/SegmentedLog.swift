import AspenCore
import AspenRaft
import Foundation
import Synchronization

import Glibc

/// The Raft log of one group, and its term and vote, in append-only segment files: a batch of
/// entries is one `pwrite` and one `fdatasync`, however many entries it holds.
///
/// In SQLite the log cost a B-tree insert and a whole 8 KiB page in the WAL per batch (copied
/// again into the database by the next checkpoint, and deleted row by row at compaction); here a
/// batch writes only its own bytes, and compaction deletes whole files.
///
/// **Format.** A segment (`<sequence as 16 hex digits>.seg`) starts with an 8-byte magic, then
/// records: length (4 bytes, little-endian), CRC32C of kind and body (4), kind (1), body. A
/// record of length zero ends the segment: files only ever grow by zeros written ahead of the
/// records (`zeroChunkBytes` at a time), so the next record's place reads as zeros until it is
/// written, and an `fdatasync` never waits on the file's block map.
///
/// **Records.** An entry (index, term, payload); the hard state (term, vote, commit); a reset
/// (the log now starts after index, term — written when a snapshot is installed). Entries are
/// never overwritten in place: a follower that replaces a suffix appends the new entries, and
/// reading the log back cuts it where a record's index goes back. Each segment starts with the
/// hard state, so the newest one is found even after older segments are deleted.
///
/// **Crashes.** Only the last write can be torn, and it is in the last segment: reading stops
/// at the first record there that is cut short or fails its checksum, and opening cuts the file
/// there, so nothing written before the crash can reappear behind later records. A bad record
/// in any other segment is corruption, reported by file and index.
final class SegmentedLog: Sendable {
    let directory: String
    let group: GroupID
    let limits: Limits
    /// A segment past this size is closed and the next write starts a new one.
    let segmentBytes: Int
    private let state: Mutex<State>

    static let magic: [UInt8] = Array("ASPNLOG1".utf8)
    static let headerBytes = 9
    static let zeroChunkBytes = 1 << 20

    enum Kind: UInt8 {
        case entry = 1
        case hardState = 2
        case reset = 3
    }

    struct Segment: Sendable {
        var sequence: UInt64
        var path: String
        /// The highest entry index written into it (0: none).
        var maxIndex: Raft.Index
    }

    struct State: Sendable {
        var segments: [Segment] = []
        /// The last segment's file, where records are appended; -1 once closed.
        var fd: Int32 = -1
        /// Where the next record goes in the last segment.
        var offset = 0
        /// The last segment's size: records, then zeros.
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

    /// Opens the log in `directory`, creating it if needed, and cuts a torn tail off the last
    /// segment.
    init(directory: String, group: GroupID, limits: Limits, segmentBytes: Int = 64 << 20) throws {
        self.directory = directory
        self.group = group
        self.limits = limits
        self.segmentBytes = segmentBytes
        state = Mutex(State())
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let scan = try Self.scan(directory: directory, group: group, limits: limits)
        try state.withLock { state in
            state.segments = scan.segments
            state.hardState = scan.contents.hardState
            state.opened = scan.contents
            if let last = scan.segments.last {
                state.fd = open(last.path, O_RDWR | O_CLOEXEC)
                guard state.fd >= 0 else { throw Self.failure(last.path, "cannot open: \(String(cString: strerror(errno)))") }
                // Whatever lies past the last good record goes: a torn record, or records of the
                // torn write that did reach the disk, which must never follow later ones.
                guard ftruncate(state.fd, off_t(scan.tail)) == 0, fsync(state.fd) == 0 else {
                    throw Self.failure(last.path, "cannot cut the log's tail: \(String(cString: strerror(errno)))")
                }
                state.offset = scan.tail
                state.fileEnd = scan.tail
            } else {
                try startSegment(sequence: 1, head: [], in: &state)
            }
        }
    }

    deinit {
        state.withLock { state in
            if state.fd >= 0 { _ = Glibc.close(state.fd) }
            state.fd = -1
        }
    }

    /// The whole log as the files hold it (the first time after opening, without reading them
    /// again).
    func contents() throws -> Contents {
        if let opened = state.withLock({ state in defer { state.opened = nil }; return state.opened }) { return opened }
        return try Self.scan(directory: directory, group: group, limits: limits).contents
    }

    /// Whether no entry, term or vote was ever written.
    var isEmpty: Bool {
        state.withLock { state in
            (state.hardState.map { $0.term == 0 && $0.vote == nil } ?? true) && state.segments.allSatisfy { $0.maxIndex == 0 }
        }
    }

    /// Appends `entries` (each after the one before; the first may go back to replace a suffix)
    /// and the hard state, and makes them durable before returning.
    func append(_ entries: [Raft.Entry], hardState: Raft.HardState?) throws {
        var records = ByteWriter(capacity: entries.reduce(64) { $0 + $1.sizeBytes + 40 })
        for entry in entries { Self.writeEntryRecord(entry, to: &records) }
        if let hardState { Self.writeRecord(.hardState, Self.encode(hardState), to: &records) }
        guard !records.bytes.isEmpty else { return }
        try state.withLock { state in
            guard state.fd >= 0 else { throw Self.failure(directory, "the log is closed") }
            state.opened = nil
            if state.offset >= segmentBytes {
                try startSegment(sequence: state.segments[state.segments.count - 1].sequence + 1, head: [], in: &state)
            }
            try write(records.bytes, in: &state)
            if let last = entries.last { state.segments[state.segments.count - 1].maxIndex = max(state.segments[state.segments.count - 1].maxIndex, last.index) }
            if let hardState { state.hardState = hardState }
        }
    }

    /// Starts the log over after `index` (a snapshot was installed there): a new segment opens
    /// with the reset, and every older one is deleted.
    func reset(after index: Raft.Index, term: Raft.Term, hardState: Raft.HardState?) throws {
        var body = ByteWriter(capacity: 16)
        body.writeFixed(index)
        body.writeFixed(term)
        var head = ByteWriter()
        Self.writeRecord(.reset, body.bytes, to: &head)
        let dropped: [Segment] = try state.withLock { state in
            guard state.fd >= 0 else { throw Self.failure(directory, "the log is closed") }
            state.opened = nil
            if let hardState { state.hardState = hardState }
            let older = state.segments
            try startSegment(sequence: (older.last?.sequence ?? 0) + 1, head: head.bytes, in: &state)
            state.segments.removeFirst(older.count)
            return older
        }
        try remove(dropped)
    }

    /// Deletes the segments that hold only entries through `index` (never the one being
    /// written). The caller has made the state through `index` durable first.
    func compact(through index: Raft.Index) throws {
        let dropped: [Segment] = state.withLock { state in
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
            if state.fd >= 0 { _ = Glibc.close(state.fd) }
            state.fd = -1
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

    private func remove(_ segments: [Segment]) throws {
        guard !segments.isEmpty else { return }
        for segment in segments where unlink(segment.path) != 0 && errno != ENOENT {
            throw Self.failure(segment.path, "cannot delete: \(String(cString: strerror(errno)))")
        }
        try syncDirectory()
    }

    /// Creates the next segment with the magic, the hard state and `head`, durably (file and
    /// directory), and makes it the one written to.
    private func startSegment(sequence: UInt64, head: [UInt8], in state: inout State) throws {
        let path = directory + "/" + Self.name(sequence)
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.failure(path, "cannot create: \(String(cString: strerror(errno)))") }
        var bytes = ByteWriter()
        bytes.writeRaw(Self.magic)
        if let hardState = state.hardState { Self.writeRecord(.hardState, Self.encode(hardState), to: &bytes) }
        bytes.writeRaw(head)
        var fresh = State(segments: state.segments, fd: fd, offset: 0, fileEnd: 0, hardState: state.hardState)
        do {
            try write(bytes.bytes, in: &fresh)
            try syncDirectory()
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        if state.fd >= 0 { _ = Glibc.close(state.fd) }
        state = fresh
        state.segments.append(Segment(sequence: sequence, path: path, maxIndex: 0))
    }

    /// Writes `bytes` at the end of the records (zeros first, if they reach past the file's
    /// end) and waits for the disk.
    private func write(_ bytes: [UInt8], in state: inout State) throws {
        let end = state.offset + bytes.count
        if end > state.fileEnd {
            let zeroedEnd = (end + Self.zeroChunkBytes - 1) / Self.zeroChunkBytes * Self.zeroChunkBytes
            // A page per write: one large write would put the range in one large folio of the
            // page cache, and every later record would dirty (and account) all of it.
            try Self.zeros.withUnsafeBytes { zeros in
                var at = state.fileEnd
                while at < zeroedEnd {
                    let count = min(zeros.count, zeroedEnd - at)
                    try pwriteAll(state.fd, UnsafeRawBufferPointer(rebasing: zeros[0..<count]), at: at)
                    at += count
                }
            }
            state.fileEnd = zeroedEnd
        }
        try bytes.withUnsafeBytes { try pwriteAll(state.fd, $0, at: state.offset) }
        guard fdatasync(state.fd) == 0 else { throw Self.failure(directory, "fdatasync failed: \(String(cString: strerror(errno)))") }
        state.offset = end
    }

    private static let zeros = [UInt8](repeating: 0, count: 4096)

    private func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let written = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw Self.failure(directory, "write failed: \(String(cString: strerror(errno)))") }
            done += written
        }
    }

    private func syncDirectory() throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.failure(directory, "cannot open: \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw Self.failure(directory, "fsync failed: \(String(cString: strerror(errno)))") }
    }

    static func failure(_ file: String, _ detail: String) -> StorageError { .io(file: file, detail: detail) }

    static func name(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".seg"
    }

    // MARK: Encoding

    /// Length, checksum, kind, body.
    static func writeRecord(_ kind: Kind, _ body: [UInt8], to writer: inout ByteWriter) {
        writer.writeFixed(UInt32(body.count))
        writer.writeFixed(CRC32C.checksum(body, seed: CRC32C.checksum([kind.rawValue])))
        writer.write(kind.rawValue)
        writer.writeRaw(body)
    }

    static func writeEntryRecord(_ entry: Raft.Entry, to writer: inout ByteWriter) {
        var body = ByteWriter(capacity: entry.sizeBytes + 24)
        body.writeFixed(entry.index)
        body.writeFixed(entry.term)
        body.writeRaw(entry.payload.encoded())
        writeRecord(.entry, body.bytes, to: &writer)
    }

    static func encode(_ hardState: Raft.HardState) -> [UInt8] {
        var body = ByteWriter(capacity: 24)
        body.writeFixed(hardState.term)
        body.writeFixed(hardState.vote?.rawValue ?? 0)
        body.writeFixed(hardState.commit)
        return body.bytes
    }

    // MARK: Reading

    struct Scan {
        var contents = Contents()
        var segments: [Segment] = []
        /// The end of the last good record in the last segment.
        var tail = 0
    }

    static func segmentFiles(in directory: String) throws -> [(sequence: UInt64, path: String)] {
        try FileManager.default.contentsOfDirectory(atPath: directory).compactMap { name -> (UInt64, String)? in
            guard name.hasSuffix(".seg"), name.count == 20, let sequence = UInt64(name.prefix(16), radix: 16) else { return nil }
            return (sequence, directory + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    static func scan(directory: String, group: GroupID, limits: Limits) throws -> Scan {
        var scan = Scan()
        let files = try segmentFiles(in: directory)
        for (position, file) in files.enumerated() {
            let isLast = position == files.count - 1
            guard let data = FileManager.default.contents(atPath: file.path) else {
                throw failure(file.path, "cannot read the log segment")
            }
            let bytes = [UInt8](data)
            var segment = Segment(sequence: file.sequence, path: file.path, maxIndex: 0)
            guard bytes.count >= magic.count, Array(bytes.prefix(magic.count)) == magic else {
                // A segment whose creation a crash cut short is empty or partly written; it
                // holds no record yet, and is started over.
                let unfinished = bytes.allSatisfy { $0 == 0 } || magic.starts(with: bytes)
                if isLast && unfinished {
                    scan.segments.append(segment)
                    try rewriteHeader(file.path)
                    scan.tail = magic.count
                    continue
                }
                throw StorageError.corrupted(file: file.path, detail: "not an Aspen log segment (its header is wrong)")
            }
            var offset = magic.count
            while offset + headerBytes <= bytes.count {
                var header = ByteReader(Array(bytes[offset..<(offset + headerBytes)]))
                let length = Int(try header.readFixed32())
                if length == 0 { break }
                let checksum = try header.readFixed32()
                let kindByte = try header.readByte()
                let end = offset + headerBytes + length
                let intact = length <= limits.raftEntryBytesMax + 64 && end <= bytes.count
                    && checksum == CRC32C.checksum(bytes[(offset + headerBytes)..<end], seed: CRC32C.checksum([kindByte]))
                guard intact else {
                    if isLast { break }
                    throw StorageError.checksumMismatch(file: file.path, group: group, index: (scan.contents.lastIndex ?? 0) + 1)
                }
                let body = Array(bytes[(offset + headerBytes)..<end])
                var reader = ByteReader(body)
                switch Kind(rawValue: kindByte) {
                case .entry:
                    guard body.count >= 16 else { throw StorageError.corrupted(file: file.path, detail: "an entry record at offset \(offset) is too short") }
                    let index = try reader.readFixed64()
                    let term = try reader.readFixed64()
                    let payload: Raft.Payload
                    do {
                        payload = try Raft.Payload(decoding: Array(body[16...]), limits: limits)
                    } catch {
                        throw StorageError.undecodable(file: file.path, what: "log entry \(index)", detail: "\(error)")
                    }
                    try add(Raft.Entry(term: term, index: index, payload: payload), to: &scan.contents, file: file.path, group: group)
                    segment.maxIndex = max(segment.maxIndex, index)
                case .hardState:
                    guard body.count == 24 else { throw StorageError.corrupted(file: file.path, detail: "a hard state record at offset \(offset) has \(body.count) bytes") }
                    let term = try reader.readFixed64()
                    let vote = try reader.readFixed64()
                    scan.contents.hardState = Raft.HardState(term: term, vote: vote == 0 ? nil : NodeID(vote), commit: try reader.readFixed64())
                case .reset:
                    guard body.count == 16 else { throw StorageError.corrupted(file: file.path, detail: "a reset record at offset \(offset) has \(body.count) bytes") }
                    scan.contents.base = try reader.readFixed64()
                    scan.contents.entries = []
                case nil:
                    throw StorageError.corrupted(file: file.path, detail: "unknown record kind \(kindByte) at offset \(offset)")
                }
                offset = end
            }
            scan.segments.append(segment)
            if isLast { scan.tail = offset }
        }
        return scan
    }

    /// Adds an entry read back: the next one, or one that goes back and replaces the suffix from
    /// its index.
    static func add(_ entry: Raft.Entry, to contents: inout Contents, file: String, group: GroupID) throws {
        guard let base = contents.base, entry.index > base else {
            contents.base = entry.index - 1
            contents.entries = [entry]
            return
        }
        let last = base + Raft.Index(contents.entries.count)
        guard entry.index <= last + 1 else { throw StorageError.logGap(file: file, group: group, expected: last + 1, found: entry.index) }
        contents.entries.removeLast(Int(last + 1 - entry.index))
        contents.entries.append(entry)
    }

    private static func rewriteHeader(_ path: String) throws {
        let fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw failure(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(fd) }
        let written = magic.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        guard written == magic.count, fsync(fd) == 0 else { throw failure(path, "cannot write: \(String(cString: strerror(errno)))") }
    }
}
