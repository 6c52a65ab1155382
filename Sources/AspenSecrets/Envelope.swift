import AspenCore
import AspenKV
import Crypto

/// The key everything secret is stored under, and the envelope format (docs/secrets.md):
///
///     0x01 | salt (32 random bytes) | AES-256-GCM ciphertext | tag (16)
///
/// Each envelope has its own key and nonce, HKDF-SHA256(data key, salt) — so no nonce repeats
/// however many envelopes are sealed, across any number of restarts, with no counter to keep.
/// The storage key the envelope is written under is its associated data: an envelope copied
/// under another key, or altered by one bit, does not open. There is no plaintext fallback: a
/// value that is not an envelope is an error.
public struct DataKey: Sendable {
    public static let envelopeVersion: UInt8 = 1
    public static let saltBytes = 32
    public static let overheadBytes = 1 + saltBytes + 16
    static let info = Array("aspen-secrets-envelope-v1".utf8)
    static let context = Array("aspen-secrets-v1\u{0}".utf8)

    let key: SymmetricKey

    public init(_ key: SymmetricKey) { self.key = key }

    /// The data key of a cluster secret (the value the seal's shares recover).
    public init(clusterSecret: Bytes) {
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: clusterSecret), info: Array("aspen-secrets-data-key-v1".utf8), outputByteCount: 32)
    }

    /// A fresh random key (tests, single-purpose keys).
    public static func random() -> DataKey { DataKey(SymmetricKey(size: .bits256)) }

    public func seal(_ plaintext: Bytes, storageKey: Bytes) -> Bytes {
        let salt = SecureRandom.bytes(Self.saltBytes)
        let (subkey, nonce) = derive(salt)
        // Sealing with a 12-byte nonce and a 32-byte key cannot fail.
        let box = try! AES.GCM.seal(plaintext, using: subkey, nonce: nonce, authenticating: Self.context + storageKey)
        return [Self.envelopeVersion] + salt + Array(box.ciphertext) + Array(box.tag)
    }

    public func open(_ envelope: Bytes, storageKey: Bytes) throws(SecretsError) -> Bytes {
        guard envelope.count >= Self.overheadBytes, envelope[0] == Self.envelopeVersion else {
            throw .internalError("a stored secret is not an envelope this node can open (\(envelope.count) bytes); nothing is read as plaintext")
        }
        let salt = Array(envelope[1...Self.saltBytes])
        let (subkey, nonce) = derive(salt)
        do {
            let box = try AES.GCM.SealedBox(
                nonce: nonce, ciphertext: envelope[(1 + Self.saltBytes)..<(envelope.count - 16)], tag: envelope[(envelope.count - 16)...])
            return Array(try AES.GCM.open(box, using: subkey, authenticating: Self.context + storageKey))
        } catch {
            throw .internalError("a stored secret failed its integrity check (altered, or moved from another key); it is not served")
        }
    }

    /// HKDF-SHA256 (RFC 5869) of the data key with the salt, 44 bytes: the subkey and the
    /// nonce. Written out as its three HMACs, with the expand key's HMAC state set up once:
    /// swift-crypto's generic `HKDF` cost twice as much, 7% of a leader's CPU under a kv-v2
    /// write load (perf). `EnvelopeTests` checks it against `HKDF` itself.
    func derive(_ salt: Bytes) -> (SymmetricKey, AES.GCM.Nonce) {
        let pseudoRandomKey = key.withUnsafeBytes { HMAC<SHA256>.authenticationCode(for: $0, using: SymmetricKey(data: salt)) }
        let expand = HMAC<SHA256>(key: SymmetricKey(data: pseudoRandomKey))
        var block = expand
        block.update(data: Self.info)
        block.update(data: [1])
        let first = block.finalize()
        block = expand
        first.withUnsafeBytes { block.update(data: $0) }
        block.update(data: Self.info)
        block.update(data: [2])
        let second = block.finalize()
        var material = Bytes()
        material.reserveCapacity(64)
        first.withUnsafeBytes { material.append(contentsOf: $0) }
        second.withUnsafeBytes { material.append(contentsOf: $0) }
        // A 12-byte nonce cannot be refused.
        return (SymmetricKey(data: material[0..<32]), try! AES.GCM.Nonce(data: material[32..<44]))
    }

    /// The same 44 bytes through swift-crypto's `HKDF` (tests compare the two).
    func derivedWithHKDF(_ salt: Bytes) -> Bytes {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: salt, info: Self.info, outputByteCount: 44).withUnsafeBytes { Array($0) }
    }
}
