/// Aspen's compact binary encoding: little-endian fixed integers, LEB128 varints and
/// length-prefixed byte strings. Every decoder checks lengths against the bytes that remain (and
/// against a caller's bound) before it allocates, so hostile input costs nothing.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ byte: UInt8) { bytes.append(byte) }

    /// Bytes as they are, without a length prefix.
    public mutating func writeRaw(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }

    /// Bytes as they are, from a buffer.
    public mutating func writeRaw(_ raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }

    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func writeFixed(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func writeFixed(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func writeVarint(_ value: UInt64) {
        var remaining = value
        while remaining >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: remaining) | 0x80)
            remaining >>= 7
        }
        bytes.append(UInt8(remaining))
    }

    /// Signed values use zig-zag so that small negative numbers stay small.
    public mutating func writeVarint(signed value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeBytes(_ value: [UInt8]) {
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func writeBytes(_ value: ArraySlice<UInt8>) {
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func writeOptionalBytes(_ value: [UInt8]?) {
        write(value != nil)
        if let value { writeBytes(value) }
    }

    public mutating func writeString(_ value: String) { writeBytes(Array(value.utf8)) }
}

/// Why a byte string could not be decoded.
public enum DecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(needed: Int, remaining: Int)
    case varintOverflow
    case lengthTooLarge(length: UInt64, limit: Int)
    case unknownTag(UInt8, context: String)
    case invalid(String)
    case trailingBytes(Int)

    public var description: String {
        switch self {
        case .truncated(let needed, let remaining): return "truncated input: needed \(needed) bytes, \(remaining) remain"
        case .varintOverflow: return "malformed varint (more than 64 bits)"
        case .lengthTooLarge(let length, let limit): return "length \(length) exceeds the limit of \(limit) bytes"
        case .unknownTag(let tag, let context): return "unknown \(context) tag \(tag)"
        case .invalid(let reason): return "invalid input: \(reason)"
        case .trailingBytes(let count): return "\(count) unexpected bytes after the end of the value"
        }
    }
}

public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    private func require(_ count: Int) throws(DecodingError) {
        guard count <= remaining else { throw .truncated(needed: count, remaining: remaining) }
    }

    public mutating func readByte() throws(DecodingError) -> UInt8 {
        try require(1)
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readBool() throws(DecodingError) -> Bool {
        switch try readByte() {
        case 0: return false
        case 1: return true
        case let other: throw .invalid("boolean byte \(other)")
        }
    }

    public mutating func readFixed64() throws(DecodingError) -> UInt64 {
        try require(8)
        var value: UInt64 = 0
        for shift in 0..<8 { value |= UInt64(bytes[offset + shift]) << (8 * UInt64(shift)) }
        offset += 8
        return value
    }

    public mutating func readFixed32() throws(DecodingError) -> UInt32 {
        try require(4)
        var value: UInt32 = 0
        for shift in 0..<4 { value |= UInt32(bytes[offset + shift]) << (8 * UInt32(shift)) }
        offset += 4
        return value
    }

    public mutating func readVarint() throws(DecodingError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readByte()
            if shift == 63 && byte > 1 { throw .varintOverflow }
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
            if shift > 63 { throw .varintOverflow }
        }
    }

    public mutating func readSignedVarint() throws(DecodingError) -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// A varint that must fit in `Int` and not exceed `limit`.
    public mutating func readCount(limit: Int) throws(DecodingError) -> Int {
        let value = try readVarint()
        guard value <= UInt64(limit) else { throw .lengthTooLarge(length: value, limit: limit) }
        return Int(value)
    }

    /// Exactly `count` bytes, with no length before them.
    public mutating func readRaw(_ count: Int) throws(DecodingError) -> [UInt8] {
        try require(count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func readBytes(limit: Int) throws(DecodingError) -> [UInt8] {
        let count = try readCount(limit: limit)
        try require(count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func readOptionalBytes(limit: Int) throws(DecodingError) -> [UInt8]? {
        try readBool() ? try readBytes(limit: limit) : nil
    }

    public mutating func readString(limit: Int) throws(DecodingError) -> String {
        let raw = try readBytes(limit: limit)
        guard let text = String(validating: raw, as: UTF8.self) else { throw .invalid("string is not UTF-8") }
        return text
    }

    /// Everything not read yet (for a nested encoding that runs to the end).
    public mutating func readRemaining() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }

    public func expectEnd() throws(DecodingError) {
        guard isAtEnd else { throw .trailingBytes(remaining) }
    }
}
