import Foundation
import X509

/// A certificate's serial number, written as Vault writes it: lowercase hex bytes joined by
/// colons (`serial_number`), or by hyphens in storage paths (`certs/<serial>`).
public struct PKISerialNumber: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The big-endian magnitude without leading zero bytes (Go's `big.Int.Bytes()`), never empty.
    public let bytes: [UInt8]

    /// Most bytes a serial may have: RFC 5280's 20, plus the sign byte some CAs add.
    public static let bytesMax = 21

    /// A serial from its big-endian bytes (leading zeros dropped); nil when empty or too long.
    public init?(bytes: [UInt8]) {
        let trimmed = Array(bytes.drop { $0 == 0 })
        let magnitude = trimmed.isEmpty ? [0] : trimmed
        guard !bytes.isEmpty, magnitude.count <= Self.bytesMax else { return nil }
        self.bytes = magnitude
    }

    /// A serial as a user writes it: hex bytes separated by `:` or `-` (Vault accepts both),
    /// in either case. Nil for anything else.
    public init?(parsing text: String) {
        let groups = text.split(omittingEmptySubsequences: false) { $0 == ":" || $0 == "-" }
        guard !groups.isEmpty, groups.count <= Self.bytesMax + 1 else { return nil }
        var bytes: [UInt8] = []
        for group in groups {
            guard (1...2).contains(group.count), let byte = UInt8(group, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(bytes: bytes)
    }

    /// A fresh serial of 20 random bytes, positive (top bit clear) and exactly 20 bytes long so
    /// that its DER INTEGER stays within RFC 5280's 20 octets.
    static func random() -> PKISerialNumber {
        var bytes = SecureRandom.bytes(20)
        bytes[0] = (bytes[0] & 0x7F) | 0x01
        return PKISerialNumber(bytes: bytes)!
    }

    init(_ serial: Certificate.SerialNumber) throws(SecretsError) {
        guard let serial = PKISerialNumber(bytes: Array(serial.bytes)) else {
            throw .badRequest("the certificate's serial number is longer than \(Self.bytesMax) bytes")
        }
        self = serial
    }

    var certificateSerial: Certificate.SerialNumber { Certificate.SerialNumber(bytes: bytes) }

    /// Vault's `serial_number`: `1d:4f:…`.
    public var colonHex: String { bytes.map(Self.hexByte).joined(separator: ":") }

    /// Vault's storage form: `1d-4f-…`.
    public var hyphenHex: String { bytes.map(Self.hexByte).joined(separator: "-") }

    public var description: String { colonHex }

    public static func < (lhs: PKISerialNumber, rhs: PKISerialNumber) -> Bool {
        lhs.bytes.count != rhs.bytes.count ? lhs.bytes.count < rhs.bytes.count : lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    static func hexByte(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
    }
}
