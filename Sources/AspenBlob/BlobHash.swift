import AspenCore

/// A blob's name: the BLAKE3 hash of its bytes (the same 32 bytes `b3sum` prints as hex).
public struct BlobHash: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let byteCount = 32

    /// The 32 bytes.
    public let bytes: [UInt8]

    /// Nil unless exactly `byteCount` bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == BlobHash.byteCount else { return nil }
        self.bytes = Array(bytes)
    }

    /// Nil unless exactly 64 hexadecimal digits.
    public init?(hex: String) {
        guard hex.utf8.count == 2 * BlobHash.byteCount, let bytes = Hex.decode(hex) else { return nil }
        self.bytes = bytes
    }

    /// Parses a hash a person typed, with an error that says what is wrong with it.
    public static func parse(_ text: String) throws(BlobError) -> BlobHash {
        let trimmed = text.trimmingSpaces
        guard trimmed.utf8.count == 2 * byteCount else {
            throw .malformedHash("a blob hash is \(2 * byteCount) hexadecimal digits, got \(trimmed.utf8.count) characters")
        }
        guard let hash = BlobHash(hex: trimmed) else {
            throw .malformedHash("a blob hash is \(2 * byteCount) hexadecimal digits (0-9, a-f); \"\(trimmed)\" has others")
        }
        return hash
    }

    /// The hash of `bytes`.
    public static func of(_ bytes: some Collection<UInt8>) -> BlobHash {
        BlobHash(bytes: BLAKE3.hash(Array(bytes)))!
    }

    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    public static func < (lhs: BlobHash, rhs: BlobHash) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}

/// What can go wrong with a blob, each case naming the problem (and the limit, where one applies).
public enum BlobError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A hash given by a person or a peer is not 32 bytes of hexadecimal.
    case malformedHash(String)
    /// Bytes (a chunk group or a parent pair) do not hash to what the tree says they must.
    case verificationFailed(String)
    /// A transfer or a file broke the format: wrong sizes, items out of order, truncation.
    case malformed(String)
    /// A size or count above a limit, named in the message.
    case tooLarge(String)

    public var description: String {
        switch self {
        case .malformedHash(let message), .verificationFailed(let message), .malformed(let message),
            .tooLarge(let message):
            message
        }
    }
}
