import AspenCore
import AspenRaft

/// Reading the segments back, and telling a torn last batch from damaged acknowledged ones.
///
/// A power loss can tear only the batch being written: it was never acknowledged, it is the
/// last thing in the last segment, and behind it lie zeros (the files are filled with zeros
/// ahead of the batches) or bytes of that same batch. So where the batches stop in a way other
/// than a header of zeros followed by zeros, the log is cut there only if it is the last
/// segment, no valid batch starts anywhere after that point, and no byte follows the end of the
/// bad batch (when its header is whole and says where that is). Anything else held
/// acknowledged entries and is refused.
extension SegmentedLog {
    struct Scan {
        var contents = Contents()
        var segments: [Segment] = []
        /// The end of the last good batch in the last segment.
        var tail = 0
        /// The last segment's size.
        var lastFileBytes = 0
        /// A last segment whose creation a crash cut short (not in `segments`).
        var unfinished: Segment?
        var cut: LogCut?
    }

    static func segmentFiles(in directory: String, files: any LogFileSystem) throws -> [(sequence: UInt64, path: String)] {
        try files.names(in: directory).compactMap { name -> (UInt64, String)? in
            guard name.hasSuffix(".seg"), name.count == 20, let sequence = UInt64(name.prefix(16), radix: 16) else { return nil }
            return (sequence, directory + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    static func scan(directory: String, group: GroupID, limits: Limits, files: any LogFileSystem) throws -> Scan {
        var scan = Scan()
        let list = try segmentFiles(in: directory, files: files)
        for (position, file) in list.enumerated() {
            let reader = SegmentReader(
                path: file.path, bytes: try files.contents(of: file.path), group: group, limits: limits, isLast: position == list.count - 1)
            try reader.read(sequence: file.sequence, into: &scan)
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
}

/// One segment file's bytes, read into a `Scan`.
struct SegmentReader {
    typealias Log = SegmentedLog

    let path: String
    let bytes: [UInt8]
    let group: GroupID
    let limits: Limits
    let isLast: Bool

    /// What lies at an offset where a batch (legacy: a record) may start.
    enum Frame {
        /// Good records in this range; the next frame starts at `end`.
        case records(Range<Int>, end: Int)
        /// A header of zeros.
        case end
        /// Why the frame is bad, and where it ends if its header is whole.
        case bad(String, extent: Int?)
    }

    func read(sequence: UInt64, into scan: inout SegmentedLog.Scan) throws {
        var segment = Log.Segment(sequence: sequence, path: path, maxIndex: 0)
        guard let isLegacy = isLegacyFormat else {
            guard isLast, isUnfinished else {
                throw StorageError.corrupted(file: path, detail: "not an Aspen log segment (its header is wrong)")
            }
            scan.unfinished = segment
            scan.cut = LogCut(
                file: path, offset: 0, bytes: bytes.count, writtenBytes: dataEnd,
                reason: "a segment whose creation a crash cut short, with no batch in it yet")
            return
        }
        segment.isLegacy = isLegacy
        var offset = Log.magic.count
        while true {
            let frame = isLegacy ? legacyFrame(at: offset) : batchFrame(at: offset)
            guard case .records(let records, let end) = frame else {
                scan.cut = try endOfBatches(at: offset, frame, isLegacy: isLegacy, lastIndex: scan.contents.lastIndex)
                break
            }
            if isLegacy {
                try apply(records, at: records.lowerBound, batch: offset, to: &scan.contents, segment: &segment)
            } else {
                try decodeBatch(records, batch: offset, to: &scan.contents, segment: &segment)
            }
            offset = end
        }
        scan.segments.append(segment)
        if isLast {
            scan.tail = offset
            scan.lastFileBytes = bytes.count
        }
    }

    /// false: the current format; true: the legacy one; nil: neither.
    var isLegacyFormat: Bool? {
        guard bytes.count >= Log.magic.count else { return nil }
        let head = Array(bytes.prefix(Log.magic.count))
        return head == Log.magic ? false : head == Log.legacyMagic ? true : nil
    }

    /// Zeros, or the first bytes of a magic and then zeros: a crash cut the segment's creation short.
    var isUnfinished: Bool {
        let written = Array(bytes.prefix(dataEnd))
        return Log.magic.starts(with: written) || Log.legacyMagic.starts(with: written)
    }

    /// The end of the last byte that is not zero.
    var dataEnd: Int { (bytes.lastIndex { $0 != 0 } ?? -1) + 1 }

    // MARK: Frames

    func batchFrame(at offset: Int) -> Frame {
        let headerEnd = offset + Log.batchHeaderBytes
        guard headerEnd <= bytes.count else {
            return dataEnd <= offset ? .end : .bad("a batch header cut short by the end of the file", extent: nil)
        }
        let length = Log.uint32(bytes, at: offset)
        let checksum = Log.uint32(bytes, at: offset + 4)
        let header = Log.uint32(bytes, at: offset + 8)
        if length == 0 && checksum == 0 && header == 0 { return .end }
        guard header == Log.headerChecksum(offset: offset, length: length, checksum: checksum) else {
            return .bad("a batch header that fails its checksum", extent: nil)
        }
        let end = headerEnd + Int(length)
        guard end <= bytes.count else { return .bad("a batch of \(length) bytes that the end of the file cuts short", extent: end) }
        guard CRC32C.checksum(bytes[headerEnd..<end]) == checksum else {
            return .bad("a batch of \(length) bytes that fails its checksum", extent: end)
        }
        return .records(headerEnd..<end, end: end)
    }

    func legacyFrame(at offset: Int) -> Frame {
        let headerEnd = offset + Log.legacyRecordHeaderBytes
        guard headerEnd <= bytes.count else {
            return dataEnd <= offset ? .end : .bad("a record header cut short by the end of the file", extent: nil)
        }
        let length = Int(Log.uint32(bytes, at: offset))
        if length == 0 { return .end }
        let end = headerEnd + length
        guard length <= limits.raftEntryBytesMax + 64, end <= bytes.count else {
            return .bad("a record whose length (\(length) bytes) runs past the end of the file", extent: nil)
        }
        let checksum = CRC32C.checksum(bytes[headerEnd..<end], seed: CRC32C.checksum([bytes[offset + 8]]))
        guard checksum == Log.uint32(bytes, at: offset + 4) else { return .bad("a record that fails its checksum", extent: end) }
        return .records(offset..<end, end: end)
    }

    /// Where a valid frame starts after `offset`, if one does.
    func firstValidFrame(after offset: Int, isLegacy: Bool) -> Int? {
        let headerBytes = isLegacy ? Log.legacyRecordHeaderBytes : Log.batchHeaderBytes
        let limit = dataEnd
        var candidate = offset + 1
        while candidate + headerBytes <= min(limit, bytes.count) {
            let length = Int(Log.uint32(bytes, at: candidate))
            // Cheap tests first: most offsets hold no plausible length.
            if length > 0, candidate + headerBytes + length <= bytes.count, isLegacy ? legacyKindFits(at: candidate, length) : true,
                case .records = isLegacy ? legacyFrame(at: candidate) : batchFrame(at: candidate)
            {
                return candidate
            }
            candidate += 1
        }
        return nil
    }

    private func legacyKindFits(at offset: Int, _ length: Int) -> Bool {
        switch Log.Kind(rawValue: bytes[offset + 8]) {
        case .entry: return length >= 16
        case .hardState: return length == 24
        case .reset: return length == 16
        case nil: return false
        }
    }

    // MARK: Where the batches stop

    /// The batches stop at `offset`: nothing to cut (zeros from there on), a torn last batch to
    /// cut, or damage to acknowledged batches, which throws.
    func endOfBatches(at offset: Int, _ frame: Frame, isLegacy: Bool, lastIndex: Raft.Index?) throws -> LogCut? {
        let dataEnd = dataEnd
        if case .end = frame, dataEnd <= offset { return nil }
        var what = "zeros where the next header belongs, with data after them"
        if case .bad(let reason, _) = frame { what = reason }
        if isLegacy { what += " (in the legacy format, ASPNLOG1)" }
        func refuse(_ why: String) -> StorageError {
            .corruptedLog(file: path, offset: offset, lastGoodIndex: lastIndex ?? 0, detail: "\(what); \(why)")
        }
        guard isLast else { throw refuse("it is not in the last segment, so it is not a torn write") }
        if case .bad(_, let extent?) = frame, extent < dataEnd {
            throw refuse("data follows its end (byte \(extent)), so it was written whole and acknowledged")
        }
        if let next = firstValidFrame(after: offset, isLegacy: isLegacy) {
            throw refuse("a valid \(isLegacy ? "record" : "batch") follows at byte \(next), so it was acknowledged")
        }
        return LogCut(
            file: path, offset: offset, bytes: bytes.count - offset, writtenBytes: max(0, dataEnd - offset),
            reason: "a torn last write, never acknowledged: \(what), and nothing valid after it")
    }

    // MARK: Records

    /// The records of one good batch.
    func decodeBatch(_ records: Range<Int>, batch: Int, to contents: inout SegmentedLog.Contents, segment: inout SegmentedLog.Segment) throws {
        var offset = records.lowerBound
        while offset < records.upperBound {
            let end = offset + Log.recordHeaderBytes + (offset + Log.recordHeaderBytes <= records.upperBound ? Int(Log.uint32(bytes, at: offset)) : 0)
            guard offset + Log.recordHeaderBytes <= records.upperBound, end <= records.upperBound else {
                throw StorageError.corruptedLog(
                    file: path, offset: batch, lastGoodIndex: contents.lastIndex ?? 0,
                    detail: "a record at byte \(offset) runs past the end of its batch, whose checksum is good")
            }
            try apply(offset..<end, at: offset, batch: batch, to: &contents, segment: &segment)
            offset = end
        }
    }

    /// One record (header included) read into `contents`.
    func apply(
        _ record: Range<Int>, at offset: Int, batch: Int, to contents: inout SegmentedLog.Contents, segment: inout SegmentedLog.Segment
    ) throws {
        let headerBytes = segment.isLegacy ? Log.legacyRecordHeaderBytes : Log.recordHeaderBytes
        let kind = bytes[record.lowerBound + headerBytes - 1]
        let body = bytes[(record.lowerBound + headerBytes)..<record.upperBound]
        func malformed(_ detail: String) -> StorageError { .corrupted(file: path, detail: "\(detail) at byte \(offset)") }
        switch Log.Kind(rawValue: kind) {
        case .entry:
            guard body.count >= 16 else { throw malformed("an entry record of \(body.count) bytes") }
            let index = Log.uint64(body, at: body.startIndex)
            let payload: Raft.Payload
            do {
                payload = try Raft.Payload(decoding: Array(body.dropFirst(16)), limits: limits)
            } catch {
                throw StorageError.undecodable(file: path, what: "log entry \(index) at byte \(offset)", detail: "\(error)")
            }
            let entry = Raft.Entry(term: Log.uint64(body, at: body.startIndex + 8), index: index, payload: payload)
            try SegmentedLog.add(entry, to: &contents, file: path, group: group)
            segment.maxIndex = max(segment.maxIndex, index)
        case .hardState:
            guard body.count == 24 else { throw malformed("a hard state record of \(body.count) bytes") }
            let vote = Log.uint64(body, at: body.startIndex + 8)
            contents.hardState = Raft.HardState(
                term: Log.uint64(body, at: body.startIndex), vote: vote == 0 ? nil : NodeID(vote),
                commit: Log.uint64(body, at: body.startIndex + 16))
        case .reset:
            guard body.count == 16 else { throw malformed("a reset record of \(body.count) bytes") }
            contents.base = Log.uint64(body, at: body.startIndex)
            contents.entries = []
        case nil:
            throw malformed("an unknown record kind \(kind)")
        }
    }
}
