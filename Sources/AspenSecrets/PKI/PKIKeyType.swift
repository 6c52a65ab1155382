// The PKI engine's pure core (Vault's `pki` secrets engine): the mount's CA (`PKIIssuer`), its
// roles (`PKIRole`), issuing and signing, revocation and the CRL, and the records the node stores.
// It imports AspenCore, swift-crypto, swift-certificates and SwiftASN1; it does no I/O, reads no
// clock (every operation takes `now`) and keeps no state between calls. Key material comes from
// swift-crypto's system randomness, the one thing a simulator cannot replay here.

import Crypto
import SwiftASN1
import X509
import _CryptoExtras

/// Vault's `key_type`. RSA stays RSA: a type asked for is the type generated, never another.
public enum PKIKeyType: String, Sendable, CaseIterable {
    case rsa
    case ec
    case ed25519
    /// A role that signs CSRs of any key type (Vault refuses it for `issue`).
    case any

    /// The size `key_bits = 0` means, as Vault defaults it.
    public var defaultBits: Int {
        switch self {
        case .rsa: 2048
        case .ec: 256
        case .ed25519, .any: 0
        }
    }

    /// The key size `bits` asks for (0: the type's default), refused in Vault's words when the
    /// type has no such size. Ed25519 has one size and ignores `bits`, as Vault does.
    public func resolvedBits(_ bits: Int) throws(SecretsError) -> Int {
        switch self {
        case .rsa:
            let resolved = bits == 0 ? defaultBits : bits
            guard [2048, 3072, 4096].contains(resolved) else { throw .badRequest("unsupported bit length for RSA key: \(bits)") }
            return resolved
        case .ec:
            let resolved = bits == 0 ? defaultBits : bits
            guard [256, 384, 521].contains(resolved) else { throw .badRequest("unsupported bit length for EC key: \(bits)") }
            return resolved
        case .ed25519: return 0
        case .any: return bits
        }
    }
}

/// Vault's `private_key_format`: `pem` is each type's usual PEM (PKCS#1 `RSA PRIVATE KEY`, SEC1
/// `EC PRIVATE KEY`, PKCS#8 for Ed25519); `pkcs8` is PKCS#8 `PRIVATE KEY` for every type.
public enum PKIPrivateKeyFormat: String, Sendable, CaseIterable {
    case pem
    case pkcs8
}

/// A private key the engine generated or stored, kept as swift-crypto's own type so it can be
/// written in each type's usual encoding (swift-certificates' `Certificate.PrivateKey` hides it).
enum PKIPrivateKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)
    case p384(P384.Signing.PrivateKey)
    case p521(P521.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    /// A fresh key of `type` and `bits` (already resolved); `.any` is refused as Vault refuses it.
    static func generate(_ type: PKIKeyType, bits: Int) throws(SecretsError) -> PKIPrivateKey {
        switch (type, bits) {
        case (.rsa, _):
            do {
                return .rsa(try _RSA.Signing.PrivateKey(keySize: _RSA.Signing.KeySize(bitCount: bits)))
            } catch {
                throw .internalError("could not generate an RSA-\(bits) key: \(error)")
            }
        case (.ec, 256): return .p256(P256.Signing.PrivateKey())
        case (.ec, 384): return .p384(P384.Signing.PrivateKey())
        case (.ec, 521): return .p521(P521.Signing.PrivateKey())
        case (.ec, _): throw .badRequest("unsupported bit length for EC key: \(bits)")
        case (.ed25519, _): return .ed25519(Curve25519.Signing.PrivateKey())
        case (.any, _): throw .badRequest("key type \"any\" is only valid for a role that signs CSRs; choose rsa, ec or ed25519")
        }
    }

    var keyType: PKIKeyType {
        switch self {
        case .rsa: .rsa
        case .p256, .p384, .p521: .ec
        case .ed25519: .ed25519
        }
    }

    var bits: Int {
        switch self {
        case .rsa(let key): key.keySizeInBits
        case .p256: 256
        case .p384: 384
        case .p521: 521
        case .ed25519: 0
        }
    }

    var certificateKey: Certificate.PrivateKey {
        switch self {
        case .rsa(let key): Certificate.PrivateKey(key)
        case .p256(let key): Certificate.PrivateKey(key)
        case .p384(let key): Certificate.PrivateKey(key)
        case .p521(let key): Certificate.PrivateKey(key)
        case .ed25519(let key): Certificate.PrivateKey(key)
        }
    }

    var publicKey: Certificate.PublicKey { certificateKey.publicKey }

    /// The algorithm a CA with this key signs with: Vault's defaults (SHA-256 for RSA, the
    /// curve's own hash for ECDSA, pure Ed25519).
    var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch self {
        case .rsa: .sha256WithRSAEncryption
        case .p256: .ecdsaWithSHA256
        case .p384: .ecdsaWithSHA384
        case .p521: .ecdsaWithSHA512
        case .ed25519: .ed25519
        }
    }

    /// The key as Vault's `private_key` returns it.
    func pem(_ format: PKIPrivateKeyFormat) -> String {
        switch (self, format) {
        case (.rsa(let key), .pem): key.pemRepresentation
        case (.rsa(let key), .pkcs8): key.pkcs8PEMRepresentation
        case (.p256(let key), .pkcs8): key.pemRepresentation
        case (.p384(let key), .pkcs8): key.pemRepresentation
        case (.p521(let key), .pkcs8): key.pemRepresentation
        case (.p256(let key), .pem): Self.sec1PEM(Array(key.rawRepresentation), Array(key.publicKey.x963Representation), PKIOID.p256)
        case (.p384(let key), .pem): Self.sec1PEM(Array(key.rawRepresentation), Array(key.publicKey.x963Representation), PKIOID.p384)
        case (.p521(let key), .pem): Self.sec1PEM(Array(key.rawRepresentation), Array(key.publicKey.x963Representation), PKIOID.p521)
        case (.ed25519(let key), _): key.pemRepresentation
        }
    }

    /// SEC1 `ECPrivateKey` with its curve and public key (what Go's `MarshalECPrivateKey`, and so
    /// Vault, writes); swift-crypto writes only PKCS#8.
    static func sec1PEM(_ scalar: [UInt8], _ publicPoint: [UInt8], _ curve: ASN1ObjectIdentifier) -> String {
        var coder = DER.Serializer()
        // Serializing integers, octet strings, OIDs and bit strings into a fresh buffer cannot fail.
        try! coder.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)
            try coder.serialize(ASN1OctetString(contentBytes: scalar[...]))
            try coder.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { try $0.serialize(curve) }
            try coder.serialize(explicitlyTaggedWithTagNumber: 1, tagClass: .contextSpecific) {
                try $0.serialize(ASN1BitString(bytes: publicPoint[...]))
            }
        }
        return PEMDocument(type: "EC PRIVATE KEY", derBytes: coder.serializedBytes).pemString
    }

    // MARK: Stored form: a tag, then the key's own encoding (PKCS#1 DER for RSA, the raw scalar or seed otherwise).

    var storedBytes: [UInt8] {
        switch self {
        case .rsa(let key): [1] + Array(key.derRepresentation)
        case .p256(let key): [2] + Array(key.rawRepresentation)
        case .p384(let key): [3] + Array(key.rawRepresentation)
        case .p521(let key): [4] + Array(key.rawRepresentation)
        case .ed25519(let key): [5] + Array(key.rawRepresentation)
        }
    }

    init(stored bytes: [UInt8]) throws(SecretsError) {
        guard let tag = bytes.first else { throw .internalError("a stored PKI private key is empty") }
        let material = bytes.dropFirst()
        do {
            switch tag {
            case 1:
                let key = try _RSA.Signing.PrivateKey(derRepresentation: material)
                guard [2048, 3072, 4096].contains(key.keySizeInBits) else { throw SecretsError.internalError("RSA-\(key.keySizeInBits)") }
                self = .rsa(key)
            case 2: self = .p256(try P256.Signing.PrivateKey(rawRepresentation: material))
            case 3: self = .p384(try P384.Signing.PrivateKey(rawRepresentation: material))
            case 4: self = .p521(try P521.Signing.PrivateKey(rawRepresentation: material))
            case 5: self = .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: material))
            default: throw SecretsError.internalError("unknown key tag \(tag)")
            }
        } catch {
            throw .internalError("a stored PKI private key does not decode: \(error)")
        }
    }
}

extension PKIPrivateKey: Equatable {
    static func == (lhs: PKIPrivateKey, rhs: PKIPrivateKey) -> Bool { lhs.storedBytes == rhs.storedBytes }
}

/// The key type and size of a public key (a CSR's, a certificate's), or nil for a key the engine
/// does not handle.
enum PKIPublicKeyKind {
    static func of(_ key: Certificate.PublicKey) -> (type: PKIKeyType, bits: Int)? {
        if let rsa = _RSA.Signing.PublicKey(key) { return (.rsa, rsa.keySizeInBits) }
        if P256.Signing.PublicKey(key) != nil { return (.ec, 256) }
        if P384.Signing.PublicKey(key) != nil { return (.ec, 384) }
        if P521.Signing.PublicKey(key) != nil { return (.ec, 521) }
        if Curve25519.Signing.PublicKey(key) != nil { return (.ed25519, 0) }
        return nil
    }
}

/// Object identifiers the engine writes by hand (the CRL and SEC1 keys).
enum PKIOID {
    static let p256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 3, 1, 7]
    static let p384: ASN1ObjectIdentifier = [1, 3, 132, 0, 34]
    static let p521: ASN1ObjectIdentifier = [1, 3, 132, 0, 35]
    static let sha256WithRSA: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 1, 11]
    static let ecdsaWithSHA256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 2]
    static let ecdsaWithSHA384: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 3]
    static let ecdsaWithSHA512: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 4]
    static let ed25519: ASN1ObjectIdentifier = [1, 3, 101, 112]
    static let crlNumber: ASN1ObjectIdentifier = [2, 5, 29, 20]
}
