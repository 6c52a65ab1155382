/// FNV-1a, 64 bit: a tiny non-cryptographic hash for trace fingerprints and test identities.
/// Not for anything an adversary controls.
public struct FNV1a64: Sendable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    public mutating func combine(_ byte: UInt8) {
        value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }

    public mutating func combine(_ bytes: [UInt8]) {
        for byte in bytes { combine(byte) }
    }

    public mutating func combine(_ bytes: String.UTF8View) {
        for byte in bytes { combine(byte) }
    }

    public mutating func combine(_ word: UInt64) {
        var remaining = word
        for _ in 0..<8 {
            combine(UInt8(truncatingIfNeeded: remaining))
            remaining >>= 8
        }
    }

    public mutating func combine(_ string: String) { combine(string.utf8) }

    public static func hash(_ bytes: [UInt8]) -> UInt64 {
        var hasher = FNV1a64()
        hasher.combine(bytes)
        return hasher.value
    }
}
