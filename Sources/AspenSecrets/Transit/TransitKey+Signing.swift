import AspenCore
import AspenKV
import Crypto

/// Vault's `hash_algorithm`. ECDSA and RSA keys sign the input's hash (unless `prehashed`);
/// Ed25519 signs the input itself. `unhashed` is Vault's `none`: a prehashed PKCS #1 v1.5
/// signature without a DigestInfo.
public enum TransitHashAlgorithm: String, Sendable, CaseIterable {
    case sha1 = "sha1"
    case sha224 = "sha2-224"
    case sha256 = "sha2-256"
    case sha384 = "sha2-384"
    case sha512 = "sha2-512"
    case sha3_224 = "sha3-224"
    case sha3_256 = "sha3-256"
    case sha3_384 = "sha3-384"
    case sha3_512 = "sha3-512"
    case unhashed = "none"

    public init(vaultName: String) throws(SecretsError) {
        guard let algorithm = TransitHashAlgorithm(rawValue: vaultName) else {
            throw .badRequest("invalid hash algorithm \"\(vaultName)\"")
        }
        self = algorithm
    }

    public var vaultName: String { rawValue }

    /// The digest's length; nil for `unhashed`.
    var digestByteCount: Int? {
        switch self {
        case .sha1: 20
        case .sha224, .sha3_224: 28
        case .sha256, .sha3_256: 32
        case .sha384, .sha3_384: 48
        case .sha512, .sha3_512: 64
        case .unhashed: nil
        }
    }

    /// swift-crypto has no SHA-224 or SHA3-224: those two work only with prehashed input.
    var isComputable: Bool { self != .sha224 && self != .sha3_224 && self != .unhashed }

    /// The digest length of a hash this server can compute (PSS needs it for MGF1 too).
    func requireHashFunction() throws(SecretsError) -> Int {
        guard isComputable, let count = digestByteCount else {
            throw .badRequest("hash algorithm \(vaultName) is not available on this server; send the input prehashed, or use another")
        }
        return count
    }

    func digest(_ data: Bytes) throws(SecretsError) -> Bytes {
        switch self {
        case .sha1: return Array(Insecure.SHA1.hash(data: data))
        case .sha256: return Array(SHA256.hash(data: data))
        case .sha384: return Array(SHA384.hash(data: data))
        case .sha512: return Array(SHA512.hash(data: data))
        case .sha3_256: return Array(SHA3_256.hash(data: data))
        case .sha3_384: return Array(SHA3_384.hash(data: data))
        case .sha3_512: return Array(SHA3_512.hash(data: data))
        case .sha224, .sha3_224, .unhashed:
            _ = try requireHashFunction()
            return data
        }
    }

    /// The DER DigestInfo header of PKCS #1 v1.5 (RFC 8017 §9.2, the SHA-3 OIDs from NIST).
    var digestInfoPrefix: Bytes {
        let sha2Family: Bytes = [0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02]
        switch self {
        case .sha1: return [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00, 0x04, 0x14]
        case .sha224: return [0x30, 0x2D] + sha2Family + [0x04, 0x05, 0x00, 0x04, 0x1C]
        case .sha256: return [0x30, 0x31] + sha2Family + [0x01, 0x05, 0x00, 0x04, 0x20]
        case .sha384: return [0x30, 0x41] + sha2Family + [0x02, 0x05, 0x00, 0x04, 0x30]
        case .sha512: return [0x30, 0x51] + sha2Family + [0x03, 0x05, 0x00, 0x04, 0x40]
        case .sha3_224: return [0x30, 0x2D] + sha2Family + [0x07, 0x05, 0x00, 0x04, 0x1C]
        case .sha3_256: return [0x30, 0x31] + sha2Family + [0x08, 0x05, 0x00, 0x04, 0x20]
        case .sha3_384: return [0x30, 0x41] + sha2Family + [0x09, 0x05, 0x00, 0x04, 0x30]
        case .sha3_512: return [0x30, 0x51] + sha2Family + [0x0A, 0x05, 0x00, 0x04, 0x40]
        case .unhashed: return []
        }
    }
}

/// Vault's `signature_algorithm`, consulted for RSA keys only.
public enum TransitSignatureAlgorithm: String, Sendable {
    case pss
    case pkcs1v15

    /// "" is Vault's default, PSS.
    public init(vaultName: String) throws(SecretsError) {
        if vaultName.isEmpty {
            self = .pss
            return
        }
        guard let algorithm = TransitSignatureAlgorithm(rawValue: vaultName) else {
            throw .badRequest("unsupported rsa signature algorithm \(vaultName)")
        }
        self = algorithm
    }
}

/// Vault's `salt_length` for RSA-PSS: `auto` (Go's default: sign with the longest salt the key
/// allows, verify whatever length the signature carries), `hash` (the hash's length), or a count.
public enum TransitSaltLength: Sendable, Equatable {
    case auto
    case hash
    case bytes(Int)

    public init(vaultValue: String) throws(SecretsError) {
        switch vaultValue.lowercased() {
        case "auto": self = .auto
        case "hash": self = .hash
        case let text:
            guard let count = Int(text) else { throw .badRequest("salt length neither 'auto', 'hash', nor an int: \(vaultValue)") }
            guard count >= -1 else { throw .badRequest("salt length is invalid: \(count)") }
            // Go's constants: 0 is PSSSaltLengthAuto, -1 PSSSaltLengthEqualsHash.
            self = TransitSaltLength.bytes(count).normalized
        }
    }

    /// Go's meaning of the two special counts: 0 is `auto`, -1 is `hash`.
    var normalized: TransitSaltLength {
        switch self {
        case .bytes(0): .auto
        case .bytes(-1): .hash
        default: self
        }
    }
}

/// Vault's `marshaling_algorithm`: `asn1` (DER ECDSA signatures, standard base64) or `jws`
/// (r ‖ s for ECDSA, URL-safe base64 without padding for every key type).
public enum TransitMarshaling: String, Sendable {
    case asn1
    case jws

    public init(vaultName: String) throws(SecretsError) {
        guard let marshaling = TransitMarshaling(rawValue: vaultName) else { throw .badRequest("invalid marshaling type \"\(vaultName)\"") }
        self = marshaling
    }
}

/// A `sign/` answer.
public struct TransitSignature: Sendable, Equatable {
    /// `vault:v<N>:` + the signature in base64 (standard, or URL-safe for `jws`).
    public let signature: String
    public let keyVersion: Int
    /// The derived public key (raw, 32 bytes) when a derived Ed25519 key signed; Vault returns it.
    public let publicKey: Bytes?
}

/// Vault's `sign/` and `verify/` for Ed25519, ECDSA and RSA keys, one item each.
extension TransitKey {
    public func sign(
        input: Bytes, context: Bytes? = nil, keyVersion: Int? = nil, hashAlgorithm: TransitHashAlgorithm = .sha256,
        signatureAlgorithm: TransitSignatureAlgorithm = .pss, saltLength: TransitSaltLength = .auto, prehashed: Bool = false,
        marshaling: TransitMarshaling = .asn1
    ) throws(SecretsError) -> TransitSignature {
        guard type.supportsSigning else { throw .badRequest("key type \(type.vaultName) does not support signing") }
        try checkUnhashed(hashAlgorithm, prehashed: prehashed, signatureAlgorithm: signatureAlgorithm)
        let message = try signatureInput(input, hashAlgorithm: hashAlgorithm, prehashed: prehashed)
        let version = try signingVersion(keyVersion)
        let entry = try usableVersion(version)
        var publicKey: Bytes? = nil
        let signature: Bytes
        switch type {
        case .ecdsaP256, .ecdsaP384, .ecdsaP521:
            let signed = try TransitEC.sign(type, scalar: entry.material, digest: message)
            signature = marshaling == .asn1 ? signed.der : signed.raw
        case .ed25519:
            let key = try ed25519Key(entry, context: context)
            try checkEd25519(hashAlgorithm)
            do {
                signature = Array(try key.signature(for: message))
            } catch {
                throw .internalError("ed25519 signing failed: \(error)")
            }
            if derived { publicKey = Array(key.publicKey.rawRepresentation) }
        case .rsa2048, .rsa3072, .rsa4096:
            signature = try TransitRSA.sign(
                entry.material, type: type, hashed: message, hash: hashAlgorithm, algorithm: signatureAlgorithm, saltLength: saltLength)
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305:
            throw .badRequest("key type \(type.vaultName) does not support signing")
        }
        let encoded = marshaling == .asn1 ? TransitBase64.encode(signature) : TransitBase64.encodeRawURL(signature)
        return TransitSignature(signature: Self.versionPrefix(version) + encoded, keyVersion: version, publicKey: publicKey)
    }

    /// Whether `signature` is this key's signature of `input`. A signature that simply does not
    /// match is `false`; one that cannot be read (prefix, version, base64, DER) throws Vault's error.
    public func verify(
        input: Bytes, signature: String, context: Bytes? = nil, hashAlgorithm: TransitHashAlgorithm = .sha256,
        signatureAlgorithm: TransitSignatureAlgorithm = .pss, saltLength: TransitSaltLength = .auto, prehashed: Bool = false,
        marshaling: TransitMarshaling = .asn1
    ) throws(SecretsError) -> Bool {
        guard type.supportsSigning else { throw .badRequest("key type \(type.vaultName) does not support verification") }
        try checkUnhashed(hashAlgorithm, prehashed: prehashed, signatureAlgorithm: signatureAlgorithm)
        let message = try signatureInput(input, hashAlgorithm: hashAlgorithm, prehashed: prehashed)
        let (version, payload) = try Self.splitVersioned(signature, noun: "signature")
        if version > latestVersion { throw .badRequest("invalid signature: version is too new") }
        if version < minDecryptionVersion { throw .badRequest(Self.tooOldMessage) }
        let decoded = marshaling == .asn1 ? TransitBase64.decode(String(payload)) : TransitBase64.decodeRawURL(String(payload))
        guard let decoded else { throw .badRequest("invalid base64 signature value") }
        let entry = try usableVersion(version)
        switch type {
        case .ecdsaP256, .ecdsaP384, .ecdsaP521:
            guard let raw = try ecdsaFixedWidth(decoded, marshaling: marshaling) else { return false }
            return try TransitEC.verify(type, scalar: entry.material, digest: message, raw: raw)
        case .ed25519:
            let key = try ed25519Key(entry, context: context)
            try checkEd25519(hashAlgorithm)
            return key.publicKey.isValidSignature(decoded, for: message)
        case .rsa2048, .rsa3072, .rsa4096:
            return try TransitRSA.verify(
                entry.material, type: type, hashed: message, signature: decoded, hash: hashAlgorithm, algorithm: signatureAlgorithm,
                saltLength: saltLength)
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305:
            throw .badRequest("key type \(type.vaultName) does not support verification")
        }
    }

    func signingVersion(_ requested: Int?) throws(SecretsError) -> Int {
        guard let requested, requested != 0 else { return latestVersion }
        if requested < 0 { throw .badRequest("requested version for signing is negative") }
        if requested > latestVersion { throw .badRequest("requested version for signing is higher than the latest key version") }
        if minEncryptionVersion > 0 && requested < minEncryptionVersion {
            throw .badRequest("requested version for signing is less than the minimum encryption key version")
        }
        return requested
    }

    private func checkUnhashed(_ hash: TransitHashAlgorithm, prehashed: Bool, signatureAlgorithm: TransitSignatureAlgorithm)
        throws(SecretsError)
    {
        if hash == .unhashed && !(prehashed && signatureAlgorithm == .pkcs1v15) {
            throw .badRequest("hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15")
        }
    }

    /// What is signed: the input's hash for ECDSA and RSA (unless prehashed or `none`), the
    /// input itself for Ed25519.
    private func signatureInput(_ input: Bytes, hashAlgorithm: TransitHashAlgorithm, prehashed: Bool) throws(SecretsError) -> Bytes {
        guard type.hashesSignatureInput, !prehashed, hashAlgorithm != .unhashed else { return input }
        return try hashAlgorithm.digest(input)
    }

    /// Vault (community edition) signs pure Ed25519 only: SHA2-512 would ask for Ed25519ph.
    private func checkEd25519(_ hash: TransitHashAlgorithm) throws(SecretsError) {
        if hash == .sha512 {
            throw .badRequest("error generating Ed25519 options: hash algorithm of SHA2 512 is not supported feature")
        }
    }

    private func ed25519Key(_ entry: TransitKeyVersion, context: Bytes?) throws(SecretsError) -> Curve25519.Signing.PrivateKey {
        guard derived else { return try TransitCrypto.ed25519Key(material: entry.material, derivedWith: nil) }
        guard let context, !context.isEmpty else { throw .badRequest("error deriving key: \(Self.missingContextMessage)") }
        return try TransitCrypto.ed25519Key(material: entry.material, derivedWith: context)
    }

    /// A received ECDSA signature as fixed-width r ‖ s; nil when it cannot be a valid one
    /// (Vault's verification then answers false, not an error).
    private func ecdsaFixedWidth(_ decoded: Bytes, marshaling: TransitMarshaling) throws(SecretsError) -> Bytes? {
        switch marshaling {
        case .asn1:
            switch TransitDER.parseECDSASignature(decoded) {
            case .invalid: throw .badRequest("supplied signature is invalid")
            case .extraData: throw .badRequest("supplied signature contains extra data")
            case .integers(let r, let s): return TransitEC.fixedWidth(type, r: r, s: s, signed: true)
            }
        case .jws:
            // Go splits the bytes in half, each an unsigned big-endian integer.
            let half = decoded.count / 2
            return TransitEC.fixedWidth(type, r: decoded[..<half], s: decoded[half...], signed: false)
        }
    }
}
