import AspenCore
import Foundation

/// One element of a tuple. Encoded tuples sort like the tuples: by element, in the type order
/// nil < bytes < string < nested tuple < integer < double < boolean < UUID, then by value
/// (bytes and strings bytewise, integers and doubles numerically, false before true).
public enum TupleElement: Sendable, Hashable, Comparable, CustomStringConvertible {
    case null
    case bytes([UInt8])
    case string(String)
    case tuple([TupleElement])
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case uuid(UUID)

    var typeRank: Int {
        switch self {
        case .null: return 0
        case .bytes: return 1
        case .string: return 2
        case .tuple: return 3
        case .int: return 4
        case .double: return 5
        case .bool: return 6
        case .uuid: return 7
        }
    }

    /// The order the encoding gives, stated directly (doubles by their total order, -0 < +0).
    public static func < (lhs: TupleElement, rhs: TupleElement) -> Bool {
        guard lhs.typeRank == rhs.typeRank else { return lhs.typeRank < rhs.typeRank }
        switch (lhs, rhs) {
        case (.bytes(let a), .bytes(let b)): return a.lexicographicallyPrecedes(b)
        case (.string(let a), .string(let b)): return Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
        case (.tuple(let a), .tuple(let b)): return a.lexicographicallyPrecedes(b)
        case (.int(let a), .int(let b)): return a < b
        case (.double(let a), .double(let b)): return a.isTotallyOrdered(belowOrEqualTo: b) && a.bitPattern != b.bitPattern
        case (.bool(let a), .bool(let b)): return !a && b
        case (.uuid(let a), .uuid(let b)): return Tuple.bytes(of: a).lexicographicallyPrecedes(Tuple.bytes(of: b))
        default: return false
        }
    }

    public static func == (lhs: TupleElement, rhs: TupleElement) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bytes(let a), .bytes(let b)): return a == b
        case (.string(let a), .string(let b)): return Array(a.utf8) == Array(b.utf8)
        case (.tuple(let a), .tuple(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.double(let a), .double(let b)): return a.bitPattern == b.bitPattern
        case (.bool(let a), .bool(let b)): return a == b
        case (.uuid(let a), .uuid(let b)): return a == b
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(typeRank)
        switch self {
        case .null: break
        case .bytes(let value): hasher.combine(value)
        case .string(let value): hasher.combine(Array(value.utf8))
        case .tuple(let value): hasher.combine(value)
        case .int(let value): hasher.combine(value)
        case .double(let value): hasher.combine(value.bitPattern)
        case .bool(let value): hasher.combine(value)
        case .uuid(let value): hasher.combine(value)
        }
    }

    public var description: String {
        switch self {
        case .null: return "nil"
        case .bytes(let value): return "b'\(value.map { String($0, radix: 16) }.joined(separator: " "))'"
        case .string(let value): return "\"\(value)\""
        case .tuple(let value): return "(\(value.map(\.description).joined(separator: ", ")))"
        case .int(let value): return "\(value)"
        case .double(let value): return "\(value)"
        case .bool(let value): return "\(value)"
        case .uuid(let value): return value.uuidString
        }
    }
}

/// Why bytes are not an encoded tuple.
public enum TupleError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknownType(code: UInt8, offset: Int)
    case truncated(what: String, offset: Int)
    case invalidUTF8(offset: Int)
    case notInSubspace
    case tooDeep(limit: Int, offset: Int)
    /// An integer in more bytes than it needs: two keys would decode to the same tuple.
    case nonCanonical(offset: Int)

    public var description: String {
        switch self {
        case .unknownType(let code, let offset): return "unknown tuple type code 0x\(String(code, radix: 16)) at byte \(offset)"
        case .truncated(let what, let offset): return "truncated tuple: \(what) starting at byte \(offset) is cut off"
        case .invalidUTF8(let offset): return "the string at byte \(offset) is not valid UTF-8"
        case .notInSubspace: return "the key does not start with the subspace's prefix"
        case .nonCanonical(let offset):
            return "the integer at byte \(offset) is not in its shortest form (a key must have one encoding)"
        case .tooDeep(let limit, let offset):
            return "the tuple at byte \(offset) nests deeper than \(limit) levels (Limits.tupleDepthMax)"
        }
    }
}

/// An ordered tuple of elements with an order-preserving binary encoding (the FoundationDB tuple
/// layer's): sorting encoded tuples bytewise sorts the tuples.
public struct Tuple: Sendable, Hashable, Comparable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public var elements: [TupleElement]

    public init(_ elements: [TupleElement]) { self.elements = elements }
    public init(arrayLiteral elements: TupleElement...) { self.elements = elements }

    public static func < (lhs: Tuple, rhs: Tuple) -> Bool { lhs.elements.lexicographicallyPrecedes(rhs.elements) }
    public var description: String { "(\(elements.map(\.description).joined(separator: ", ")))" }

    // MARK: Encoding

    enum Code {
        static let null: UInt8 = 0x00
        static let bytes: UInt8 = 0x01
        static let string: UInt8 = 0x02
        static let nested: UInt8 = 0x05
        static let intZero: UInt8 = 0x14
        static let double: UInt8 = 0x21
        static let falseValue: UInt8 = 0x26
        static let trueValue: UInt8 = 0x27
        static let uuid: UInt8 = 0x30
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        for element in elements { Self.encode(element, into: &out, nested: false) }
        return out
    }

    static func encode(_ element: TupleElement, into out: inout [UInt8], nested: Bool) {
        switch element {
        case .null:
            out.append(Code.null)
            if nested { out.append(0xFF) }
        case .bytes(let value):
            out.append(Code.bytes)
            appendEscaped(value, into: &out)
        case .string(let value):
            out.append(Code.string)
            appendEscaped(Array(value.utf8), into: &out)
        case .tuple(let value):
            out.append(Code.nested)
            for inner in value { encode(inner, into: &out, nested: true) }
            out.append(0x00)
        case .int(let value):
            encode(value, into: &out)
        case .double(let value):
            out.append(Code.double)
            var bits = value.bitPattern
            bits = bits & (1 << 63) != 0 ? ~bits : bits | (1 << 63)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        case .bool(let value):
            out.append(value ? Code.trueValue : Code.falseValue)
        case .uuid(let value):
            out.append(Code.uuid)
            out += bytes(of: value)
        }
    }

    static func appendEscaped(_ bytes: [UInt8], into out: inout [UInt8]) {
        for byte in bytes {
            out.append(byte)
            if byte == 0x00 { out.append(0xFF) }
        }
        out.append(0x00)
    }

    /// Integers take 0x14 ± n and n big-endian bytes (negative ones as one's complement), so
    /// more bytes sort further from zero.
    static func encode(_ value: Int64, into out: inout [UInt8]) {
        if value == 0 {
            out.append(Code.intZero)
            return
        }
        let magnitude = value.magnitude
        let length = (UInt64.bitWidth - magnitude.leadingZeroBitCount + 7) / 8
        let body = value > 0 ? magnitude : ~magnitude
        out.append(value > 0 ? Code.intZero + UInt8(length) : Code.intZero - UInt8(length))
        for index in stride(from: length - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: body >> UInt64(index * 8))) }
    }

    static func bytes(of uuid: UUID) -> [UInt8] {
        withUnsafeBytes(of: uuid.uuid) { Array($0) }
    }

    // MARK: Decoding

    /// Decodes a tuple nested at most `depthMax` levels deep (the tuple itself is level 1).
    public init(decoding bytes: [UInt8], depthMax: Int = Limits.standard.tupleDepthMax) throws(TupleError) {
        var offset = 0
        var elements: [TupleElement] = []
        while offset < bytes.count { elements.append(try Self.decode(bytes, &offset, depth: 1, depthMax: depthMax)) }
        self.elements = elements
    }

    /// One element of a tuple at nesting level `depth`.
    static func decode(_ bytes: [UInt8], _ offset: inout Int, depth: Int, depthMax: Int) throws(TupleError) -> TupleElement {
        let nested = depth > 1
        let start = offset
        let code = bytes[offset]
        offset += 1
        switch code {
        case Code.null:
            if nested {
                guard offset < bytes.count, bytes[offset] == 0xFF else { throw .truncated(what: "a nil inside a nested tuple", offset: start) }
                offset += 1
            }
            return .null
        case Code.bytes:
            return .bytes(try unescape(bytes, &offset, start: start))
        case Code.string:
            let raw = try unescape(bytes, &offset, start: start)
            guard let text = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(offset: start) }
            return .string(text)
        case Code.nested:
            guard depth < depthMax else { throw .tooDeep(limit: depthMax, offset: start) }
            var inner: [TupleElement] = []
            while true {
                guard offset < bytes.count else { throw .truncated(what: "a nested tuple", offset: start) }
                if bytes[offset] == 0x00 && !(offset + 1 < bytes.count && bytes[offset + 1] == 0xFF) {
                    offset += 1
                    return .tuple(inner)
                }
                inner.append(try decode(bytes, &offset, depth: depth + 1, depthMax: depthMax))
            }
        case Code.intZero - 8...Code.intZero + 8:
            let positive = code >= Code.intZero
            let length = Int(positive ? code - Code.intZero : Code.intZero - code)
            guard offset + length <= bytes.count else { throw .truncated(what: "an integer", offset: start) }
            // The shortest form only: a first byte that adds nothing (0x00, or 0xFF when negative)
            // would give one integer two keys.
            if length > 0, bytes[offset] == (positive ? 0x00 : 0xFF) { throw .nonCanonical(offset: start) }
            var body: UInt64 = 0
            for byte in bytes[offset..<offset + length] { body = body << 8 | UInt64(byte) }
            offset += length
            if length == 0 { return .int(0) }
            if positive {
                guard body <= UInt64(Int64.max) else { throw .unknownType(code: code, offset: start) }
                return .int(Int64(body))
            }
            let magnitude = length == 8 ? ~body : ~body & ((1 << UInt64(length * 8)) - 1)
            guard magnitude <= UInt64(Int64.max) + 1 else { throw .unknownType(code: code, offset: start) }
            return .int(magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude))
        case Code.double:
            guard offset + 8 <= bytes.count else { throw .truncated(what: "a double", offset: start) }
            var bits: UInt64 = 0
            for byte in bytes[offset..<offset + 8] { bits = bits << 8 | UInt64(byte) }
            offset += 8
            bits = bits & (1 << 63) != 0 ? bits & ~(1 << 63) : ~bits
            return .double(Double(bitPattern: bits))
        case Code.falseValue: return .bool(false)
        case Code.trueValue: return .bool(true)
        case Code.uuid:
            guard offset + 16 <= bytes.count else { throw .truncated(what: "a UUID", offset: start) }
            let raw = Array(bytes[offset..<offset + 16])
            offset += 16
            let uuid = raw.withUnsafeBytes { $0.loadUnaligned(as: uuid_t.self) }
            return .uuid(UUID(uuid: uuid))
        default:
            throw .unknownType(code: code, offset: start)
        }
    }

    static func unescape(_ bytes: [UInt8], _ offset: inout Int, start: Int) throws(TupleError) -> [UInt8] {
        var out: [UInt8] = []
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            if byte == 0x00 {
                if offset < bytes.count && bytes[offset] == 0xFF {
                    out.append(0x00)
                    offset += 1
                } else {
                    return out
                }
            } else {
                out.append(byte)
            }
        }
        throw .truncated(what: "a byte string", offset: start)
    }
}

/// A key prefix plus tuple packing: the keys of one layer or one user, kept apart from the rest.
public struct Subspace: Sendable, Hashable {
    public let prefix: [UInt8]

    public init(prefix: [UInt8] = []) { self.prefix = prefix }
    public init(_ tuple: Tuple, prefix: [UInt8] = []) { self.prefix = prefix + tuple.encoded }

    public func pack(_ tuple: Tuple) -> [UInt8] { prefix + tuple.encoded }

    public func unpack(_ key: [UInt8]) throws(TupleError) -> Tuple {
        guard contains(key) else { throw .notInSubspace }
        return try Tuple(decoding: Array(key[prefix.count...]))
    }

    public func contains(_ key: [UInt8]) -> Bool { key.starts(with: prefix) }

    public func subspace(_ tuple: Tuple) -> Subspace { Subspace(prefix: pack(tuple)) }

    /// Every key packed in this subspace: `[prefix + 0x00, prefix + 0xFF)`.
    public var range: (start: [UInt8], end: [UInt8]) { (prefix + [0x00], prefix + [0xFF]) }
}

extension TupleElement: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}
