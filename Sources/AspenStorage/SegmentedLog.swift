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
    }

    /// What the files hold, read back in order.
    struct Contents: Sendable {
        /// The index before `entries.first` (nil: no entry and no reset was ever written).
        var base: Raft.Index?
        var entries: [Raft.Entry] = []
        var hardState: Raft.HardState?
        /// Bytes cut from the end of the last segment (a torn write).
        var tornBytes = 0

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

    /// The whole log as the files hold it.
    func contents() throws -> Contents { try Self.scan(directory: directory, group: group, limits: limits).contents }

    /// Whether no entry, term or vote was ever written.
    var isEmpty: Bool {
        state.withLock { state in
            (state.hardState.map { $0.term == 0 && $0.vote == nil } ?? true) && state.segments.allSatisfy { $0.maxIndex == 0 }
        }
    }

    /// Appends `entries` (each after the one before; the first may go back to replace a suffix)
    /// and the hard state, and makes them durable before returning.
    func append(_ entries: [Raft.Entry], hardState: Raft.HardState?) throws {
        var records: [UInt8] = []
        records.reserveCapacity(entries.reduce(64) { $0 + $1.sizeBytes + 40 })
        for entry in entries { Self.appendEntryRecord(entry, to: &records) }
        if let hardState { Self.appendRecord(.hardState, Self.encode(hardState), to: &records) }
        guard !records.isEmpty else { return }
        try state.withLock { state in
            guard state.fd >= 0 else { throw Self.failure(directory, "the log is closed") }
            if state.offset >= segmentBytes {
                try startSegment(sequence: state.segments[state.segments.count - 1].sequence + 1, head: [], in: &state)
            }
            try write(records, in: &state)
            if let last = entries.last { state.segments[state.segments.count - 1].maxIndex = max(state.segments[state.segments.count - 1].maxIndex, last.index) }
            if let hardState { state.hardState = hardState }
        }
    }

    /// Starts the log over after `index` (a snapshot was installed there): a new segment opens
    /// with the reset, and every older one is deleted.
    func reset(after index: Raft.Index, term: Raft.Term, hardState: Raft.HardState?) throws {
        var head: [UInt8] = []
        var body: [UInt8] = []
        Self.appendFixed(index, to: &body)
        Self.appendFixed(term, to: &body)
        Self.appendRecord(.reset, body, to: &head)
        let dropped: [Segment] = try state.withLock { state in
            guard state.fd >= 0 else { throw Self.failure(directory, "the log is closed") }
            if let hardState { state.hardState = hardState }
            let older = state.segments
            try startSegment(sequence: (older.last?.sequence ?? 0) + 1, head: head, in: &state)
            state.segments.removeFirst(older.count)
            return older
        }
        try remove(dropped)
    }

    /// Deletes the segments that hold only entries through `index` (never the one being
    /// written). The caller has made the state through `index` durable first.
    func compact(through index: Raft.Index) throws {
        let dropped: [Segment] = state.withLock { state in
            var count = 0
            while count < state.segments.count - 1, state.segments[count].maxIndex <= index { count += 1 }
            let dropped = Array(state.segments.prefix(count))
            state.segments.removeFirst(count)
            return dropped
        }
        try remove(dropped)
    }

    /// Segment files and their bytes.
    var segmentCount: Int { state.withLock { $0.segments.count } }

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
        var bytes = Self.magic
        if let hardState = state.hardState { Self.appendRecord(.hardState, Self.encode(hardState), to: &bytes) }
        bytes += head
        var fresh = State(segments: state.segments, fd: fd, offset: 0, fileEnd: 0, hardState: state.hardState)
        do {
            try write(bytes, in: &fresh)
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

    static func appendFixed(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    static func appendFixed32(_ value: UInt32, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Length, checksum, kind, body.
    static func appendRecord(_ kind: Kind, _ body: [UInt8], to bytes: inout [UInt8]) {
        appendFixed32(UInt32(body.count), to: &bytes)
        appendFixed32(CRC32C.checksum(body, seed: CRC32C.checksum([kind.rawValue])), to: &bytes)
        bytes.append(kind.rawValue)
        bytes += body
    }

    static func appendEntryRecord(_ entry: Raft.Entry, to bytes: inout [UInt8]) {
        var body: [UInt8] = []
        body.reserveCapacity(entry.sizeBytes + 24)
        appendFixed(entry.index, to: &body)
        appendFixed(entry.term, to: &body)
        body += entry.payload.encoded()
        appendRecord(.entry, body, to: &bytes)
    }

    static func encode(_ hardState: Raft.HardState) -> [UInt8] {
        var body: [UInt8] = []
        appendFixed(hardState.term, to: &body)
        appendFixed(hardState.vote?.rawValue ?? 0, to: &body)
        appendFixed(hardState.commit, to: &body)
        return body
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
                let length = Int(readFixed32(bytes, at: offset))
                if length == 0 { break }
                let end = offset + headerBytes + length
                let kindByte = bytes[min(offset + 8, bytes.count - 1)]
                let intact = length <= limits.raftEntryBytesMax + 64 && end <= bytes.count
                    && readFixed32(bytes, at: offset + 4) == CRC32C.checksum(bytes[(offset + 9)..<end], seed: CRC32C.checksum([kindByte]))
                guard intact else {
                    if isLast {
                        scan.contents.tornBytes = bytes.count - offset
                        break
                    }
                    throw StorageError.checksumMismatch(file: file.path, group: group, index: (scan.contents.lastIndex ?? 0) + 1)
                }
                let body = Array(bytes[(offset + 9)..<end])
                switch Kind(rawValue: kindByte) {
                case .entry:
                    guard body.count >= 16 else { throw StorageError.corrupted(file: file.path, detail: "an entry record at offset \(offset) is too short") }
                    let index = readFixed(body, at: 0)
                    let term = readFixed(body, at: 8)
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
                    let vote = readFixed(body, at: 8)
                    scan.contents.hardState = Raft.HardState(
                        term: readFixed(body, at: 0), vote: vote == 0 ? nil : NodeID(vote), commit: readFixed(body, at: 16))
                case .reset:
                    guard body.count == 16 else { throw StorageError.corrupted(file: file.path, detail: "a reset record at offset \(offset) has \(body.count) bytes") }
                    scan.contents.base = readFixed(body, at: 0)
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

    static func readFixed(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for k in 0..<8 { value |= UInt64(bytes[offset + k]) << (8 * UInt64(k)) }
        return value
    }

    static func readFixed32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for k in 0..<4 { value |= UInt32(bytes[offset + k]) << (8 * UInt32(k)) }
        return value
    }
}
