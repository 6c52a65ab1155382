import AspenCore
import AspenKV
import Crypto
import Foundation

/// The transit engine's use of swift-crypto: key generation, derivation, the AEADs, Ed25519
/// and ECDSA. Every failure is a `SecretsError`; nothing here reads a clock or storage.
enum TransitCrypto {
    static func randomBytes(_ count: Int) -> Bytes { SecureRandom.bytes(count) }

    static func generateMaterial(for type: TransitKeyType) throws(SecretsError) -> Bytes {
        switch type {
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305:
            return randomBytes(type.symmetricKeyBytes)
        case .ed25519:
            let key = Curve25519.Signing.PrivateKey()
            return Array(key.rawRepresentation) + Array(key.publicKey.rawRepresentation)
        case .ecdsaP256, .ecdsaP384, .ecdsaP521:
            return TransitEC.generate(type)
        case .rsa2048, .rsa3072, .rsa4096:
            return try TransitRSA.generate(bits: type.rsaBits)
        }
    }

    /// The cheap check a record's material gets when it is read (sizes, DER framing); the key
    /// itself is built, and fully checked, only when an operation uses it.
    static func materialHasValidShape(_ material: Bytes, for type: TransitKeyType) -> Bool {
        switch type {
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305: material.count == type.symmetricKeyBytes
        case .ed25519: material.count == ed25519MaterialBytes
        case .ecdsaP256, .ecdsaP384, .ecdsaP521: material.count == TransitEC.coordinateBytes(type)
        case .rsa2048, .rsa3072, .rsa4096: TransitDER.isSingleElement(material, tag: TransitDER.sequenceTag)
        }
    }

    static let ed25519MaterialBytes = 64

    /// Vault's `hkdf_sha256` derivation: HKDF-SHA256 with the stored key as input key material,
    /// no salt, and the request's context as info.
    static func derive(_ material: Bytes, context: Bytes, count: Int) -> Bytes {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: material), info: context, outputByteCount: count)
            .withUnsafeBytes { Array($0) }
    }

    static func hmacSHA256(key: Bytes, data: Bytes) -> Bytes {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    // MARK: AEAD

    static let nonceBytes = 12
    static let tagBytes = 16

    /// The ciphertext and its tag, as Go's `aead.Seal` returns them.
    static func seal(_ type: TransitKeyType, key: Bytes, nonce: Bytes, plaintext: Bytes, associatedData: Bytes) throws(SecretsError)
        -> Bytes
    {
        do {
            switch type {
            case .chacha20Poly1305:
                let box = try ChaChaPoly.seal(
                    plaintext, using: SymmetricKey(data: key), nonce: try ChaChaPoly.Nonce(data: nonce), authenticating: associatedData)
                return Array(box.ciphertext) + Array(box.tag)
            default:
                let box = try AES.GCM.seal(
                    plaintext, using: SymmetricKey(data: key), nonce: try AES.GCM.Nonce(data: nonce), authenticating: associatedData)
                return Array(box.ciphertext) + Array(box.tag)
            }
        } catch {
            throw .internalError("\(type.vaultName) encryption failed: \(error)")
        }
    }

    /// Opens ciphertext ‖ tag; any failure is Go's own message for a ciphertext that does not authenticate.
    static func open(
        _ type: TransitKeyType, key: Bytes, nonce: Bytes, sealed: ArraySlice<UInt8>, associatedData: Bytes
    ) throws(SecretsError) -> Bytes {
        let failure: SecretsError =
            type == .chacha20Poly1305
            ? .badRequest("chacha20poly1305: message authentication failed") : .badRequest("cipher: message authentication failed")
        guard sealed.count >= tagBytes else { throw failure }
        let ciphertext = sealed.prefix(sealed.count - tagBytes)
        let tag = sealed.suffix(tagBytes)
        do {
            switch type {
            case .chacha20Poly1305:
                let box = try ChaChaPoly.SealedBox(nonce: try ChaChaPoly.Nonce(data: nonce), ciphertext: ciphertext, tag: tag)
                return Array(try ChaChaPoly.open(box, using: SymmetricKey(data: key), authenticating: associatedData))
            default:
                let box = try AES.GCM.SealedBox(nonce: try AES.GCM.Nonce(data: nonce), ciphertext: ciphertext, tag: tag)
                return Array(try AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: associatedData))
            }
        } catch {
            throw failure
        }
    }

    // MARK: Ed25519

    /// The signing key of a version: its own seed, or (derived keys) a seed derived from the
    /// whole 64-byte material with the context, as Vault feeds HKDF output to `ed25519.GenerateKey`.
    static func ed25519Key(material: Bytes, derivedWith context: Bytes?) throws(SecretsError) -> Curve25519.Signing.PrivateKey {
        let seed = context.map { derive(material, context: $0, count: 32) } ?? Array(material.prefix(32))
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        } catch {
            throw .internalError("an ed25519 key version does not load: \(error)")
        }
    }
}

/// ECDSA over P-256, P-384 and P-521 with swift-crypto, the digest given as bytes (Go's
/// `ecdsa.Sign` takes the hash as bytes too, and both truncate it to the curve's order).
enum TransitEC {
    static func coordinateBytes(_ type: TransitKeyType) -> Int {
        switch type {
        case .ecdsaP384: 48
        case .ecdsaP521: 66
        default: 32
        }
    }

    static func generate(_ type: TransitKeyType) -> Bytes {
        switch type {
        case .ecdsaP384: Array(P384.Signing.PrivateKey(compactRepresentable: false).rawRepresentation)
        case .ecdsaP521: Array(P521.Signing.PrivateKey(compactRepresentable: false).rawRepresentation)
        default: Array(P256.Signing.PrivateKey(compactRepresentable: false).rawRepresentation)
        }
    }

    /// The public key as SubjectPublicKeyInfo DER, and as an uncompressed point.
    static func publicKey(_ type: TransitKeyType, scalar: Bytes) throws(SecretsError) -> (spki: Bytes, x963: Bytes) {
        do {
            switch type {
            case .ecdsaP384:
                let key = try P384.Signing.PrivateKey(rawRepresentation: scalar).publicKey
                return (Array(key.derRepresentation), Array(key.x963Representation))
            case .ecdsaP521:
                let key = try P521.Signing.PrivateKey(rawRepresentation: scalar).publicKey
                return (Array(key.derRepresentation), Array(key.x963Representation))
            default:
                let key = try P256.Signing.PrivateKey(rawRepresentation: scalar).publicKey
                return (Array(key.derRepresentation), Array(key.x963Representation))
            }
        } catch {
            throw unloadable(type, error)
        }
    }

    /// The signature as DER and as fixed-width r ‖ s.
    static func sign(_ type: TransitKeyType, scalar: Bytes, digest: Bytes) throws(SecretsError) -> (der: Bytes, raw: Bytes) {
        let digest = TransitRawDigest(bytes: digest)
        do {
            switch type {
            case .ecdsaP384:
                let signature = try P384.Signing.PrivateKey(rawRepresentation: scalar).signature(for: digest)
                return (Array(signature.derRepresentation), Array(signature.rawRepresentation))
            case .ecdsaP521:
                let signature = try P521.Signing.PrivateKey(rawRepresentation: scalar).signature(for: digest)
                return (Array(signature.derRepresentation), Array(signature.rawRepresentation))
            default:
                let signature = try P256.Signing.PrivateKey(rawRepresentation: scalar).signature(for: digest)
                return (Array(signature.derRepresentation), Array(signature.rawRepresentation))
            }
        } catch {
            throw unloadable(type, error)
        }
    }

    /// Checks fixed-width r ‖ s (the caller has already turned whatever it was given into that).
    static func verify(_ type: TransitKeyType, scalar: Bytes, digest: Bytes, raw: Bytes) throws(SecretsError) -> Bool {
        let digest = TransitRawDigest(bytes: digest)
        let publicKey = try publicKey(type, scalar: scalar)
        do {
            switch type {
            case .ecdsaP384:
                let key = try P384.Signing.PublicKey(x963Representation: publicKey.x963)
                guard let signature = try? P384.Signing.ECDSASignature(rawRepresentation: raw) else { return false }
                return key.isValidSignature(signature, for: digest)
            case .ecdsaP521:
                let key = try P521.Signing.PublicKey(x963Representation: publicKey.x963)
                guard let signature = try? P521.Signing.ECDSASignature(rawRepresentation: raw) else { return false }
                return key.isValidSignature(signature, for: digest)
            default:
                let key = try P256.Signing.PublicKey(x963Representation: publicKey.x963)
                guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: raw) else { return false }
                return key.isValidSignature(signature, for: digest)
            }
        } catch {
            throw unloadable(type, error)
        }
    }

    /// SEC 1 `ECPrivateKey` DER (Vault's "EC PRIVATE KEY" export, as Go's `x509.MarshalECPrivateKey`
    /// writes it: version 1, the scalar at full width, the curve's OID, the public point).
    static func sec1PrivateKey(_ type: TransitKeyType, scalar: Bytes) throws(SecretsError) -> Bytes {
        let point = try publicKey(type, scalar: scalar).x963
        let curve: Bytes =
            switch type {
            case .ecdsaP384: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22]
            case .ecdsaP521: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23]
            default: [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
            }
        return TransitDER.element(
            TransitDER.sequenceTag,
            [0x02, 0x01, 0x01] + TransitDER.element(0x04, scalar) + TransitDER.element(0xA0, curve)
                + TransitDER.element(0xA1, TransitDER.element(0x03, [0x00] + point)))
    }

    /// r and s (DER INTEGER contents, two's complement, or JWS halves, unsigned) as fixed-width
    /// r ‖ s; nil when either is negative or wider than the curve, which no valid signature is.
    static func fixedWidth(_ type: TransitKeyType, r: ArraySlice<UInt8>, s: ArraySlice<UInt8>, signed: Bool) -> Bytes? {
        let width = coordinateBytes(type)
        func pad(_ value: ArraySlice<UInt8>) -> Bytes? {
            if signed, let first = value.first, first & 0x80 != 0 { return nil }
            let trimmed = value.drop(while: { $0 == 0 })
            guard trimmed.count <= width else { return nil }
            return Bytes(repeating: 0, count: width - trimmed.count) + trimmed
        }
        guard let r = pad(r), let s = pad(s) else { return nil }
        return r + s
    }

    private static func unloadable(_ type: TransitKeyType, _ error: any Error) -> SecretsError {
        .internalError("a \(type.vaultName) key version does not load: \(error)")
    }
}

/// A digest handed to swift-crypto's ECDSA as the bytes it is: the input already hashed by
/// the algorithm the request named, or the caller's own prehashed input. swift-crypto's ECDSA
/// reads only the bytes (`ECDSA_do_sign`), never the type, so any length is signed as Go would.
struct TransitRawDigest: Digest {
    /// Unused by ECDSA; the length is the bytes' own.
    static let byteCount = 0
    let bytes: Bytes

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try bytes.withUnsafeBytes(body) }
    func makeIterator() -> IndexingIterator<Bytes> { bytes.makeIterator() }
    var description: String { "digest of \(bytes.count) bytes" }
}
