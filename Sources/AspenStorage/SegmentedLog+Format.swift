import AspenCore
import AspenRaft

/// The bytes of a segment.
///
/// Current format (`ASPNLOG2`): the magic, then batches. A batch is a 12-byte header — length of
/// the records (4 bytes, little-endian), CRC-32C of the records (4), CRC-32C of the batch's
/// offset in the file (8) and the two fields before (4) — then its records: length of the body
/// (4), kind (1), body. The header's own checksum tells a header that was written whole (its
/// batch's extent is known) from torn or damaged bytes, and binds it to its place, so bytes
/// that look like a batch inside another batch's payload are not taken for one.
///
/// Legacy format (`ASPNLOG1`), still read: the magic, then records, each length (4), CRC-32C of
/// kind and body (4), kind (1), body, with nothing marking where one write ended.
extension SegmentedLog {
    static let magic: [UInt8] = Array("ASPNLOG2".utf8)
    static let legacyMagic: [UInt8] = Array("ASPNLOG1".utf8)
    static let batchHeaderBytes = 12
    static let recordHeaderBytes = 5
    static let legacyRecordHeaderBytes = 9

    enum Kind: UInt8 {
        case entry = 1
        case hardState = 2
        case reset = 3
    }

    /// The records of one batch, behind room for its header.
    struct BatchEncoder {
        private(set) var bytes: [UInt8]

        init(capacity: Int) {
            bytes = [UInt8](repeating: 0, count: SegmentedLog.batchHeaderBytes)
            bytes.reserveCapacity(capacity + SegmentedLog.batchHeaderBytes)
        }

        var isEmpty: Bool { bytes.count == SegmentedLog.batchHeaderBytes }

        mutating func append(_ kind: Kind, _ body: [UInt8]) {
            appendHeader(kind, bodyBytes: body.count)
            bytes.append(contentsOf: body)
        }

        mutating func appendEntry(_ entry: Raft.Entry) {
            let payload = entry.payload.encoded()
            appendHeader(.entry, bodyBytes: 16 + payload.count)
            append(entry.index)
            append(entry.term)
            bytes.append(contentsOf: payload)
        }

        private mutating func appendHeader(_ kind: Kind, bodyBytes: Int) {
            precondition(bodyBytes <= Int(UInt32.max), "a log record of \(bodyBytes) bytes")
            append(UInt32(bodyBytes))
            bytes.append(kind.rawValue)
        }

        private mutating func append(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        private mutating func append(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

        /// The batch with its header, to be written at `offset` (its header filled in place,
        /// so the records are not copied).
        mutating func framed(at offset: Int) -> [UInt8] {
            let length = UInt32(bytes.count - SegmentedLog.batchHeaderBytes)
            let checksum = CRC32C.checksum(bytes[SegmentedLog.batchHeaderBytes...])
            let header = SegmentedLog.headerChecksum(offset: offset, length: length, checksum: checksum)
            for (position, value) in [length, checksum, header].enumerated() {
                withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange((position * 4)..<(position * 4 + 4), with: $0) }
            }
            return bytes
        }
    }

    static func headerChecksum(offset: Int, length: UInt32, checksum: UInt32) -> UInt32 {
        withUnsafeBytes(of: (UInt64(offset).littleEndian, length.littleEndian, checksum.littleEndian)) { CRC32C.checksum($0) }
    }

    static func encode(_ hardState: Raft.HardState) -> [UInt8] {
        var body = ByteWriter(capacity: 24)
        body.writeFixed(hardState.term)
        body.writeFixed(hardState.vote?.rawValue ?? 0)
        body.writeFixed(hardState.commit)
        return body.bytes
    }

    static func uint32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }

    static func uint64(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
    }
}
