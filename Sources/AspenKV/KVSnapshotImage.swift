import AspenCore

/// Where a snapshot image's bytes go as they are written: a file, or memory.
public protocol KVSnapshotImageSink {
    mutating func write(_ bytes: Bytes) throws
}

/// Where a snapshot image's bytes come from: `read` returns `count` bytes, fewer only at the end.
public protocol KVSnapshotImageSource {
    mutating func read(_ count: Int) throws -> Bytes
}

/// The key-value state at one revision as a stream of checksummed frames ("AKV3"): written from
/// a cursor over the state and installed frame by frame, so neither side holds more than a
/// frame of it, whatever the state's size.
///
/// After the 4-byte magic, frames `[kind: UInt8][payload length: fixed32][payload][CRC-32C of
/// kind, length and payload: fixed32]`, in this order:
/// - one header: revision, compacted revision, lease sequence (signed varints);
/// - changes frames: a count, then changes encoded as `KVSnapshot` v2 encodes them, in strictly
///   increasing (revision, key) order across frames;
/// - leases frames: a count, then leases by strictly increasing id;
/// - sessions frames: a count, then sessions by strictly increasing id, each with its results
///   by strictly increasing sequence. A session whose results do not fit one frame continues
///   as the first entry of the next: its record again, with the rest of its results;
/// - system records frames: a count, then records (name, value) by strictly increasing name
///   in byte order;
/// - one end frame: the total numbers of changes, leases and sessions, then of system records
///   when there are any, so an image cut at a frame boundary is told from a whole one. Nothing
///   follows it.
///
/// System records came later than the other sections. An image without any is written exactly
/// as before they existed (no such frame, three totals), so every image written earlier still
/// reads (with no records), and a build that predates them still reads an image of a state that
/// has none; one that has records it refuses whole (an unknown frame kind) rather than install
/// without them. The magic did not change for it.
///
/// A frame's payload is at most `Limits.rpcMessageBytesMax` (a key-value must fit one RPC
/// anyway): a reader allocates no more than that for a frame, whatever the image claims.
public enum KVSnapshotImage {
    public static let magic: [UInt8] = Array("AKV3".utf8)
    /// Writers cut a frame once its payload would pass about this size; one entry larger than
    /// it gets a frame of its own.
    public static let frameTargetBytes = 256 * 1024

    /// Where each frame of an image starts and its kind, from the frame headers alone (no
    /// checksum is checked): for tools and tests that look inside an image.
    public static func frameOffsets(_ image: Bytes) throws(DecodingError) -> [(offset: Int, kind: UInt8)] {
        var frames: [(offset: Int, kind: UInt8)] = []
        var offset = magic.count
        while offset < image.count {
            guard image.count - offset >= 9 else { throw .invalid("snapshot image frame at byte \(offset) is cut short") }
            var reader = ByteReader(Array(image[(offset + 1)..<(offset + 5)]))
            frames.append((offset, image[offset]))
            offset += 9 + Int(try reader.readFixed32())
        }
        return frames
    }
    /// Kind, payload length and checksum.
    static let frameOverheadBytes = 9

    enum Kind: UInt8, CustomStringConvertible {
        case header = 1, changes, leases, sessions, end
        /// Came after the others, so its byte follows the end's, though its frames precede it.
        case systemRecords = 6

        /// Where the kind's frames come in an image: no frame follows one of a later kind.
        var position: Int {
            switch self {
            case .header: return 0
            case .changes: return 1
            case .leases: return 2
            case .sessions: return 3
            case .systemRecords: return 4
            case .end: return 5
            }
        }

        var description: String {
            switch self {
            case .header: return "header"
            case .changes: return "changes"
            case .leases: return "leases"
            case .sessions: return "sessions"
            case .systemRecords: return "system records"
            case .end: return "end"
            }
        }
    }

    public struct Header: Sendable, Equatable {
        public var revision: Revision
        public var compactedRevision: Revision
        public var leaseSequence: LeaseID

        public init(revision: Revision, compactedRevision: Revision, leaseSequence: LeaseID) {
            self.revision = revision
            self.compactedRevision = compactedRevision
            self.leaseSequence = leaseSequence
        }
    }

    /// One frame's contents, as a reader yields them.
    public enum Frame: Sendable, Equatable {
        case header(Header)
        case changes([KVChange])
        case leases([Lease])
        /// A session's record may repeat at the start of the next sessions frame, carrying the
        /// rest of its results.
        case sessions([ClientSessionState])
        case systemRecords([SystemRecord])
        case end
    }

    /// An image built in memory (for `KVSnapshot.encoded()` and tests).
    public struct MemorySink: KVSnapshotImageSink, Sendable {
        public private(set) var bytes: Bytes = []
        public init() {}
        public mutating func write(_ bytes: Bytes) { self.bytes.append(contentsOf: bytes) }
    }

    /// An image read from memory.
    public struct MemorySource: KVSnapshotImageSource, Sendable {
        public let bytes: Bytes
        public private(set) var offset = 0
        public init(_ bytes: Bytes) { self.bytes = bytes }

        public mutating func read(_ count: Int) -> Bytes {
            let end = offset + min(count, bytes.count - offset)
            defer { offset = end }
            return Array(bytes[offset..<end])
        }
    }

    // MARK: Entry codecs (the session record's is also version 2's)

    package static func write(_ change: KVChange, into writer: inout ByteWriter) {
        if let kv = change.keyValue {
            writer.write(UInt8(1))
            KVWire.write(kv, into: &writer)
        } else {
            writer.write(UInt8(0))
            writer.writeBytes(change.key)
            writer.writeVarint(signed: change.revision)
        }
    }

    /// A version's value is bounded by the bytes that remain (a frame's payload is bounded).
    static func readChange(_ reader: inout ByteReader, limits: Limits) throws(DecodingError) -> KVChange {
        switch try reader.readByte() {
        case 1:
            let kv = KeyValue(
                key: try reader.readBytes(limit: limits.keyBytesMax), value: try reader.readBytes(limit: reader.remaining),
                createRevision: try reader.readSignedVarint(), modRevision: try reader.readSignedVarint(),
                version: try reader.readSignedVarint(), lease: try reader.readSignedVarint())
            return KVChange(key: kv.key, revision: kv.modRevision, keyValue: kv)
        case 0:
            return KVChange(key: try reader.readBytes(limit: limits.keyBytesMax), revision: try reader.readSignedVarint(), keyValue: nil)
        case let tag:
            throw .invalid("unknown change kind \(tag) in a key-value snapshot")
        }
    }

    static func writeRecord(_ record: ClientSessionRecord, into writer: inout ByteWriter) {
        writer.writeVarint(record.id)
        writer.writeVarint(signed: record.lastSeenMs)
        writer.writeVarint(record.acknowledgedThrough)
    }

    static func readRecord(_ reader: inout ByteReader) throws(DecodingError) -> ClientSessionRecord {
        ClientSessionRecord(id: try reader.readVarint(), lastSeenMs: try reader.readSignedVarint(), acknowledgedThrough: try reader.readVarint())
    }
}

// MARK: - Writer

extension KVSnapshotImage {
    /// Writes an image frame by frame as the state is read: `begin`, then every change, lease,
    /// session and system record in the image's order, then `finish`. It holds at most one
    /// frame. Adding things out of section order (a change after a lease, anything before
    /// `begin` or after `finish`) is a programming error; the order of entries within a section
    /// is the caller's to keep, and readers check it.
    public struct Writer<Sink: KVSnapshotImageSink> {
        public private(set) var sink: Sink
        /// Bytes handed to the sink so far.
        public private(set) var bytesWritten = 0
        private let frameTargetBytes: Int
        /// The section entries are being added to (nil before `begin`).
        private var section: Kind?
        private var pending = ByteWriter()
        private var pendingCount = 0
        private var totals: (changes: Int, leases: Int, sessions: Int, systemRecords: Int) = (0, 0, 0, 0)
        /// The session whose results are being added, with those not yet in `pending`.
        private var openSession: OpenSession?

        private struct OpenSession {
            var record: ClientSessionRecord
            var results = ByteWriter()
            var count = 0
            /// A part after the first: it starts a frame and holds at least one result.
            var isContinuation = false
        }

        public init(into sink: Sink, frameTargetBytes: Int = KVSnapshotImage.frameTargetBytes) {
            precondition(frameTargetBytes > 0)
            self.sink = sink
            self.frameTargetBytes = frameTargetBytes
        }

        public mutating func begin(revision: Revision, compactedRevision: Revision, leaseSequence: LeaseID) throws {
            precondition(section == nil, "a snapshot image has one header")
            try sink.write(KVSnapshotImage.magic)
            bytesWritten += KVSnapshotImage.magic.count
            var payload = ByteWriter()
            payload.writeVarint(signed: revision)
            payload.writeVarint(signed: compactedRevision)
            payload.writeVarint(signed: leaseSequence)
            try emit(.header, count: nil, payload.bytes)
            section = .header
        }

        public mutating func add(_ change: KVChange) throws {
            var entry = ByteWriter()
            KVSnapshotImage.write(change, into: &entry)
            try append(entry.bytes, to: .changes)
            totals.changes += 1
        }

        public mutating func add(_ lease: Lease) throws {
            var entry = ByteWriter()
            KVWire.write(lease, into: &entry)
            try append(entry.bytes, to: .leases)
            totals.leases += 1
        }

        /// A session and its results (by increasing sequence).
        public mutating func add(_ session: ClientSessionState) throws {
            try beginSession(session.record)
            for (sequence, result) in session.results { try addResult(sequence: sequence, result) }
        }

        /// Starts a session whose results follow (`addResult`), so a store can stream them
        /// rather than hold them all.
        public mutating func beginSession(_ record: ClientSessionRecord) throws {
            try enter(.sessions)
            try closeSession()
            openSession = OpenSession(record: record)
            totals.sessions += 1
        }

        /// A result of the session begun last. One that would take the frame past its target
        /// ends the session's part there: the rest continue at the start of the next frame.
        public mutating func addResult(sequence: UInt64, _ result: Bytes) throws {
            guard var session = openSession else { preconditionFailure("a session result outside a session") }
            var one = ByteWriter(capacity: result.count + 16)
            one.writeVarint(sequence)
            one.writeBytes(result)
            if session.count > 0 && pending.bytes.count + session.results.bytes.count + one.bytes.count + 32 > frameTargetBytes {
                try appendPart(of: session)
                try flush()
                session = OpenSession(record: session.record, isContinuation: true)
            }
            session.results.writeRaw(one.bytes)
            session.count += 1
            openSession = session
        }

        /// A system record; records come by strictly increasing name.
        public mutating func add(_ record: SystemRecord) throws {
            var entry = ByteWriter(capacity: record.name.count + record.value.count + 8)
            entry.writeBytes(record.name)
            entry.writeBytes(record.value)
            try append(entry.bytes, to: .systemRecords)
            totals.systemRecords += 1
        }

        /// Adds the open session's last part (a session without results has one, empty).
        private mutating func closeSession() throws {
            guard let session = openSession else { return }
            openSession = nil
            if session.count > 0 || !session.isContinuation { try appendPart(of: session) }
        }

        private mutating func appendPart(of session: OpenSession) throws {
            var entry = ByteWriter(capacity: session.results.bytes.count + 32)
            KVSnapshotImage.writeRecord(session.record, into: &entry)
            entry.writeVarint(UInt64(session.count))
            entry.writeRaw(session.results.bytes)
            try append(entry.bytes, to: .sessions)
        }

        /// Writes the last frames; the image is whole once this returns.
        public mutating func finish() throws {
            try enter(.end)
            var payload = ByteWriter()
            payload.writeVarint(UInt64(totals.changes))
            payload.writeVarint(UInt64(totals.leases))
            payload.writeVarint(UInt64(totals.sessions))
            // Counted only when there are any: an image without them is one of the older format.
            if totals.systemRecords > 0 { payload.writeVarint(UInt64(totals.systemRecords)) }
            try emit(.end, count: nil, payload.bytes)
        }

        private mutating func enter(_ kind: Kind) throws {
            guard let current = section else { preconditionFailure("a snapshot image's \(kind) before its header") }
            precondition(current != .end, "a snapshot image's \(kind) after its end")
            precondition(current.position <= kind.position, "a snapshot image's \(kind) after its \(current)")
            if current != kind {
                try closeSession()
                try flush()
                section = kind
            }
        }

        private mutating func append(_ entry: Bytes, to kind: Kind) throws {
            try enter(kind)
            if pendingCount > 0 && pending.bytes.count + entry.count > frameTargetBytes { try flush() }
            pending.writeRaw(entry)
            pendingCount += 1
        }

        private mutating func flush() throws {
            guard pendingCount > 0, let section else { return }
            try emit(section, count: pendingCount, pending.bytes)
            pending = ByteWriter(capacity: min(frameTargetBytes, 64 * 1024))
            pendingCount = 0
        }

        /// One frame: its entries' count (if it has one) and `body` make the payload.
        private mutating func emit(_ kind: Kind, count: Int?, _ body: Bytes) throws {
            var prefix = ByteWriter(capacity: 10)
            if let count { prefix.writeVarint(UInt64(count)) }
            let payloadBytes = prefix.bytes.count + body.count
            var frame = ByteWriter(capacity: payloadBytes + KVSnapshotImage.frameOverheadBytes)
            frame.write(kind.rawValue)
            frame.writeFixed(UInt32(payloadBytes))
            frame.writeRaw(prefix.bytes)
            frame.writeRaw(body)
            frame.writeFixed(CRC32C.checksum(frame.bytes))
            try sink.write(frame.bytes)
            bytesWritten += frame.bytes.count
        }
    }
}

// MARK: - Reader

extension KVSnapshotImage {
    /// Reads an image one frame at a time, checking as it goes everything a whole image
    /// promises: the magic, each frame's checksum and bound, the order of frames and of the
    /// entries across them, every count against its limit, the totals of the end frame, and
    /// that nothing follows it. What is wrong is a `DecodingError` that names the frame's byte
    /// offset; the source's own errors (I/O) pass through as they are.
    public struct Reader<Source: KVSnapshotImageSource> {
        public private(set) var source: Source
        let limits: Limits
        /// Bytes consumed so far: where the next frame starts.
        public private(set) var offset = 0
        /// The last section read (nil: no header yet).
        private var section: Kind?
        private var header: Header?
        private var lastChange: (revision: Revision, key: Bytes)?
        private var lastLease: LeaseID?
        /// The last session read, the last sequence it kept, and how many results it has.
        private var lastSession: (record: ClientSessionRecord, sequence: UInt64?, results: Int)?
        private var lastSystemRecord: Bytes?
        private var totals: (changes: Int, leases: Int, sessions: Int, systemRecords: Int) = (0, 0, 0, 0)

        public init(from source: Source, limits: Limits = .standard) {
            self.source = source
            self.limits = limits
        }

        /// The next frame. After `.end` (which is returned only once nothing follows it) there
        /// is nothing more to read.
        public mutating func next() throws -> Frame {
            precondition(section != .end, "read past a snapshot image's end frame")
            if offset == 0 { try readMagic() }
            let at = offset
            let (kind, payload) = try readFrame()
            let frame: Frame
            do {
                frame = try decode(kind, payload)
            } catch .invalid(let reason) {
                throw Self.failure(at, "\(kind) frame: \(reason)")
            } catch {
                throw Self.failure(at, "\(kind) frame: \(error)")
            }
            if kind == .end {
                guard try source.read(1).isEmpty else { throw Self.failure(offset, "bytes follow the end frame") }
            }
            return frame
        }

        static func failure(_ at: Int, _ what: String) -> DecodingError {
            .invalid("snapshot image frame at byte \(at): \(what)")
        }

        private mutating func readMagic() throws {
            let magic = try source.read(KVSnapshotImage.magic.count)
            guard magic == KVSnapshotImage.magic else {
                throw DecodingError.invalid("not a snapshot image: it does not start with \"AKV3\"")
            }
            offset = magic.count
        }

        /// One frame's kind and payload, checked against its bound and checksum.
        private mutating func readFrame() throws -> (Kind, Bytes) {
            let at = offset
            let head = try source.read(5)
            guard !head.isEmpty else { throw Self.failure(at, "the image ends without its end frame") }
            guard head.count == 5 else { throw Self.failure(at, "truncated (\(head.count) of 5 header bytes)") }
            guard let kind = Kind(rawValue: head[0]) else { throw Self.failure(at, "unknown frame kind \(head[0])") }
            let length = Int(UInt32(head[1]) | UInt32(head[2]) << 8 | UInt32(head[3]) << 16 | UInt32(head[4]) << 24)
            guard length <= limits.rpcMessageBytesMax else {
                throw Self.failure(at, "payload of \(length) bytes exceeds rpcMessageBytesMax (\(limits.rpcMessageBytesMax))")
            }
            let rest = try source.read(length + 4)
            guard rest.count == length + 4 else {
                throw Self.failure(at, "truncated (\(rest.count) of \(length + 4) payload and checksum bytes)")
            }
            var stored = ByteReader(Array(rest.suffix(4)))
            let payload = Array(rest.prefix(length))
            guard try stored.readFixed32() == CRC32C.checksum(payload, seed: CRC32C.checksum(head)) else {
                throw Self.failure(at, "checksum mismatch")
            }
            offset += 5 + length + 4
            return (kind, payload)
        }

        private mutating func decode(_ kind: Kind, _ payload: Bytes) throws(DecodingError) -> Frame {
            var reader = ByteReader(payload)
            let frame: Frame
            switch kind {
            case .header: frame = .header(try readHeader(&reader))
            case .changes: frame = .changes(try readChanges(&reader))
            case .leases: frame = .leases(try readLeases(&reader))
            case .sessions: frame = .sessions(try readSessions(&reader))
            case .systemRecords: frame = .systemRecords(try readSystemRecords(&reader))
            case .end:
                try readEnd(&reader)
                frame = .end
            }
            try reader.expectEnd()
            return frame
        }

        /// Moves to `kind`'s section, which may not come before the current one.
        private mutating func enter(_ kind: Kind) throws(DecodingError) {
            guard let current = section else { throw .invalid("the image does not start with its header") }
            guard current.position <= kind.position, kind != .header else { throw .invalid("out of order after the \(current) frames") }
            section = kind
        }

        private mutating func readHeader(_ reader: inout ByteReader) throws(DecodingError) -> Header {
            guard section == nil else { throw .invalid("a second header") }
            let header = Header(
                revision: try reader.readSignedVarint(), compactedRevision: try reader.readSignedVarint(),
                leaseSequence: try reader.readSignedVarint())
            guard header.compactedRevision >= 0, header.compactedRevision <= header.revision else {
                throw .invalid("compacted revision \(header.compactedRevision) is outside 0...\(header.revision)")
            }
            section = .header
            self.header = header
            return header
        }

        private mutating func readChanges(_ reader: inout ByteReader) throws(DecodingError) -> [KVChange] {
            try enter(.changes)
            let revision = header?.revision ?? 0
            // Each change takes at least three bytes: the count cannot promise more than that.
            let count = try reader.readCount(limit: reader.remaining / 3)
            guard count > 0 else { throw .invalid("no changes") }
            var changes: [KVChange] = []
            changes.reserveCapacity(min(count, 4096))  // A hostile count reserves little.
            for _ in 0..<count {
                let change = try KVSnapshotImage.readChange(&reader, limits: limits)
                guard change.revision > 0, change.revision <= revision else {
                    throw .invalid("a change at revision \(change.revision), outside 1...\(revision)")
                }
                if let last = lastChange,
                    last.revision > change.revision || (last.revision == change.revision && !last.key.lexicographicallyPrecedes(change.key))
                {
                    throw .invalid("the changes are not in revision and key order (revision \(change.revision) after \(last.revision))")
                }
                lastChange = (change.revision, change.key)
                changes.append(change)
            }
            totals.changes += count
            return changes
        }

        private mutating func readLeases(_ reader: inout ByteReader) throws(DecodingError) -> [Lease] {
            try enter(.leases)
            let count = try reader.readCount(limit: reader.remaining / 3)
            guard count > 0 else { throw .invalid("no leases") }
            var leases: [Lease] = []
            leases.reserveCapacity(min(count, 4096))
            for _ in 0..<count {
                let lease = try KVWire.readLease(&reader)
                if let last = lastLease, last >= lease.id { throw .invalid("lease \(lease.id) after lease \(last)") }
                lastLease = lease.id
                leases.append(lease)
            }
            totals.leases += count
            return leases
        }

        private mutating func readSessions(_ reader: inout ByteReader) throws(DecodingError) -> [ClientSessionState] {
            try enter(.sessions)
            // A session takes at least four bytes, a result two.
            let count = try reader.readCount(limit: reader.remaining / 4)
            guard count > 0 else { throw .invalid("no sessions") }
            guard count <= limits.clientSessionsMax else {
                throw .invalid("\(count) sessions in one frame exceed clientSessionsMax (\(limits.clientSessionsMax))")
            }
            var sessions: [ClientSessionState] = []
            for position in 0..<count {
                let record = try KVSnapshotImage.readRecord(&reader)
                let resultCount = try reader.readCount(limit: reader.remaining / 2)
                guard resultCount <= limits.clientSessionResultsMax else {
                    throw .invalid("session \(record.id) keeps more than clientSessionResultsMax (\(limits.clientSessionResultsMax)) results")
                }
                try startSession(record, results: resultCount, continuing: position == 0)
                var results: [(sequence: UInt64, result: Bytes)] = []
                results.reserveCapacity(min(resultCount, 4096))
                for _ in 0..<resultCount {
                    let sequence = try reader.readVarint()
                    if let last = lastSession?.sequence, last >= sequence {
                        throw .invalid("session \(record.id) keeps result \(sequence) after result \(last)")
                    }
                    lastSession?.sequence = sequence
                    results.append((sequence, try reader.readBytes(limit: limits.rpcMessageBytesMax)))
                }
                sessions.append(ClientSessionState(record: record, results: results))
            }
            return sessions
        }

        /// Checks a session's place in the order: a new one after the last, or (first in its
        /// frame) the last one again with more of its results.
        private mutating func startSession(_ record: ClientSessionRecord, results: Int, continuing: Bool) throws(DecodingError) {
            if let last = lastSession, last.record.id == record.id {
                guard continuing, last.record == record, results > 0 else { throw .invalid("session \(record.id) appears twice") }
                guard last.results + results <= limits.clientSessionResultsMax else {
                    throw .invalid("session \(record.id) keeps more than clientSessionResultsMax (\(limits.clientSessionResultsMax)) results")
                }
                lastSession?.results += results
                return
            }
            if let last = lastSession, last.record.id > record.id { throw .invalid("session \(record.id) after session \(last.record.id)") }
            totals.sessions += 1
            guard totals.sessions <= limits.clientSessionsMax else {
                throw .invalid("more than clientSessionsMax (\(limits.clientSessionsMax)) sessions")
            }
            lastSession = (record, nil, results)
        }

        private mutating func readSystemRecords(_ reader: inout ByteReader) throws(DecodingError) -> [SystemRecord] {
            try enter(.systemRecords)
            // A record takes at least two bytes (its name's and its value's lengths).
            let count = try reader.readCount(limit: reader.remaining / 2)
            guard count > 0 else { throw .invalid("no system records") }
            guard totals.systemRecords + count <= limits.systemRecordsMax else {
                throw .invalid("more than systemRecordsMax (\(limits.systemRecordsMax)) system records")
            }
            var records: [SystemRecord] = []
            records.reserveCapacity(min(count, 4096))
            for _ in 0..<count {
                let name = try reader.readBytes(limit: limits.systemRecordNameBytesMax)
                guard !name.isEmpty else { throw .invalid("a system record without a name") }
                if let last = lastSystemRecord, !last.lexicographicallyPrecedes(name) {
                    throw .invalid("system record \(name.displayString) after system record \(last.displayString)")
                }
                lastSystemRecord = name
                records.append(SystemRecord(name: name, value: try reader.readBytes(limit: limits.systemRecordValueBytesMax)))
            }
            totals.systemRecords += count
            return records
        }

        private mutating func readEnd(_ reader: inout ByteReader) throws(DecodingError) {
            try enter(.end)
            let claimed = (try reader.readVarint(), try reader.readVarint(), try reader.readVarint())
            // An image without system records does not count them (images written before they
            // existed end here); one that counts them has some.
            var claimedRecords: UInt64 = 0
            if reader.remaining > 0 {
                claimedRecords = try reader.readVarint()
                guard claimedRecords > 0 else { throw .invalid("it counts 0 system records; an image without any does not count them") }
            }
            guard claimed == (UInt64(totals.changes), UInt64(totals.leases), UInt64(totals.sessions)),
                claimedRecords == UInt64(totals.systemRecords)
            else {
                throw .invalid(
                    "it counts \(claimed.0) changes, \(claimed.1) leases, \(claimed.2) sessions and \(claimedRecords) system records; "
                        + "the image holds \(totals.changes), \(totals.leases), \(totals.sessions) and \(totals.systemRecords)")
            }
        }
    }
}
