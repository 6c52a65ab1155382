import AspenCore
import AspenKV
import Crypto

/// Random bytes for salts, keys, nonces and identifiers: one call into BoringSSL's generator
/// (through swift-crypto), where drawing them a byte at a time from the standard library's
/// generator made one `getrandom` system call per byte — 64 per kv-v2 write, measured with
/// strace on a node under load.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> Bytes {
        guard count > 0 else { return [] }
        return SymmetricKey(size: SymmetricKeySize(bitCount: count * 8)).withUnsafeBytes { Array($0) }
    }

    /// A version 4 UUID in lower case, as Vault writes request ids (from the secure
    /// generator: a predictable sequence would tell a client how many answers others got).
    public static func uuid() -> Bytes {
        var raw = bytes(16)
        raw[6] = raw[6] & 0x0F | 0x40
        raw[8] = raw[8] & 0x3F | 0x80
        var text = Array(Hex.encode(raw).utf8)
        for offset in [20, 16, 12, 8] { text.insert(UInt8(ascii: "-"), at: offset) }
        return text
    }
}
