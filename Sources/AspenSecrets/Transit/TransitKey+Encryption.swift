import AspenCore
import AspenKV

/// A data key from `datakey/plaintext|wrapped/NAME`: fresh random bytes, sealed by the named key.
public struct TransitDataKey: Sendable, Equatable {
    /// The key itself, only when the caller asked for `plaintext`.
    public let plaintext: Bytes?
    public let ciphertext: String
    public let keyVersion: Int
}

/// Vault's `encrypt/`, `decrypt/`, `rewrap/` and `datakey/`, one item each (the HTTP layer runs
/// batches item by item and passes `batchIndex` so the messages that name an item name it as
/// Vault does). Ciphertexts are `vault:v<N>:` + base64, of nonce ‖ ciphertext ‖ tag for the
/// AEAD types and of the RSA-OAEP (SHA-256) block for RSA keys. An empty context or associated
/// data counts as none, as in Vault.
extension TransitKey {
    /// Vault's error when a derived key is used without a context.
    public static let missingContextMessage =
        "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
        + "per-request information must be included in order to perform operations with the key"
    /// Vault's error for a ciphertext or signature below `min_decryption_version`.
    public static let tooOldMessage = "ciphertext or signature version is disallowed by policy (too old)"

    public func encrypt(
        plaintext: Bytes, context: Bytes? = nil, associatedData: Bytes? = nil, keyVersion: Int? = nil, paddingScheme: String? = nil,
        batchIndex: Int = 0
    ) throws(SecretsError) -> String {
        let pkcs1v15 = try usesPKCS1v15Padding(paddingScheme, batchIndex: batchIndex)
        try checkAssociatedData(associatedData, batchIndex: batchIndex)
        guard type.supportsEncryption else { throw .badRequest("message encryption not supported for key type \(type.vaultName)") }
        let version = try encryptionVersion(keyVersion)
        let payload: Bytes
        if type.isAEAD {
            payload = try sealAEAD(plaintext, version: version, context: context, associatedData: associatedData ?? [])
        } else {
            payload = try TransitRSA.encrypt(usableVersion(version).material, type: type, plaintext: plaintext, pkcs1v15: pkcs1v15)
        }
        return Self.versionPrefix(version) + TransitBase64.encode(payload)
    }

    public func decrypt(
        ciphertext: String, context: Bytes? = nil, associatedData: Bytes? = nil, paddingScheme: String? = nil, batchIndex: Int = 0
    ) throws(SecretsError) -> Bytes {
        let pkcs1v15 = try usesPKCS1v15Padding(paddingScheme, batchIndex: batchIndex)
        try checkAssociatedData(associatedData, batchIndex: batchIndex)
        guard type.supportsDecryption else { throw .badRequest("message decryption not supported for key type \(type.vaultName)") }
        var (version, payload) = try Self.splitVersioned(ciphertext, noun: "ciphertext")
        if version == 0 { version = 1 }  // Vault's first keys were numbered from 0
        if version > latestVersion { throw .badRequest("invalid ciphertext: version is too new") }
        if version < minDecryptionVersion { throw .badRequest(Self.tooOldMessage) }
        guard let decoded = TransitBase64.decode(String(payload)) else { throw .badRequest("invalid ciphertext: could not decode base64") }
        guard type.isAEAD else {
            return try TransitRSA.decrypt(usableVersion(version).material, type: type, ciphertext: decoded, pkcs1v15: pkcs1v15)
        }
        let key = try aeadKey(version: version, context: context, byteCount: type.symmetricKeyBytes)
        guard decoded.count >= TransitCrypto.nonceBytes else { throw .badRequest("invalid ciphertext length") }
        return try TransitCrypto.open(
            type, key: key, nonce: Array(decoded.prefix(TransitCrypto.nonceBytes)), sealed: decoded[TransitCrypto.nonceBytes...],
            associatedData: associatedData ?? [])
    }

    /// Decrypts and encrypts again with `keyVersion` (the latest by default); the plaintext never leaves.
    public func rewrap(ciphertext: String, context: Bytes? = nil, associatedData: Bytes? = nil, keyVersion: Int? = nil, batchIndex: Int = 0)
        throws(SecretsError) -> String
    {
        let plaintext = try decrypt(ciphertext: ciphertext, context: context, associatedData: associatedData, batchIndex: batchIndex)
        return try encrypt(
            plaintext: plaintext, context: context, associatedData: associatedData, keyVersion: keyVersion, batchIndex: batchIndex)
    }

    /// A new random key of `bits` (128, 256 or 512), sealed by this key.
    public func dataKey(
        plaintext includePlaintext: Bool, bits: Int = 256, context: Bytes? = nil, associatedData: Bytes? = nil, keyVersion: Int? = nil
    ) throws(SecretsError) -> TransitDataKey {
        guard bits == 128 || bits == 256 || bits == 512 else { throw .badRequest("invalid bit length") }
        let key = TransitCrypto.randomBytes(bits / 8)
        let ciphertext = try encrypt(plaintext: key, context: context, associatedData: associatedData, keyVersion: keyVersion)
        return TransitDataKey(plaintext: includePlaintext ? key : nil, ciphertext: ciphertext, keyVersion: resolvedVersion(keyVersion))
    }

    /// The key version a stored ciphertext (or signature) names, as decryption reads it
    /// (`vault:v0:` is version 1); nil when it does not start with a version prefix.
    public static func versionOf(ciphertext: String) -> Int? {
        guard let (version, _) = try? splitVersioned(ciphertext, noun: "ciphertext") else { return nil }
        return version == 0 ? 1 : version
    }

    static func versionPrefix(_ version: Int) -> String { "vault:v\(version):" }

    /// `vault:v<N>:<payload>` read as Vault reads it (Go's `strconv.Atoi` for N), with its errors.
    static func splitVersioned(_ value: String, noun: String) throws(SecretsError) -> (version: Int, payload: Substring) {
        let prefix = "vault:v"
        guard value.hasPrefix(prefix) else { throw .badRequest("invalid \(noun): no prefix") }
        let rest = value.dropFirst(prefix.count)
        guard let separator = rest.firstIndex(of: ":") else { throw .badRequest("invalid \(noun): wrong number of fields") }
        guard let version = Int(rest[..<separator]) else { throw .badRequest("invalid \(noun): version number could not be decoded") }
        return (version, rest[rest.index(after: separator)...])
    }

    func encryptionVersion(_ requested: Int?) throws(SecretsError) -> Int {
        guard let requested, requested != 0 else { return latestVersion }
        if requested < 0 { throw .badRequest("requested version for encryption is negative") }
        if requested > latestVersion { throw .badRequest("requested version for encryption is higher than the latest key version") }
        if requested < minEncryptionVersion {
            throw .badRequest("requested version for encryption is less than the minimum encryption key version")
        }
        return requested
    }

    /// The AEAD key of a version: the stored one, or for a derived ring HKDF-SHA256 of it with
    /// the context as info (`byteCount` more than the cipher's key when convergent encryption
    /// needs an HMAC key too; HKDF's output is a stream, so the cipher's part is the same either way).
    func aeadKey(version: Int, context: Bytes?, byteCount: Int) throws(SecretsError) -> Bytes {
        guard derived else { return try usableVersion(version).material }
        guard let context, !context.isEmpty else { throw .badRequest(Self.missingContextMessage) }
        return TransitCrypto.derive(try usableVersion(version).material, context: context, count: byteCount)
    }

    /// nonce ‖ ciphertext ‖ tag. The nonce is random, or for convergent encryption (Vault's
    /// version 3) the first 12 bytes of HMAC-SHA256(derived HMAC key, plaintext).
    private func sealAEAD(_ plaintext: Bytes, version: Int, context: Bytes?, associatedData: Bytes) throws(SecretsError) -> Bytes {
        let keyBytes = type.symmetricKeyBytes
        let material = try aeadKey(version: version, context: context, byteCount: keyBytes + (convergentEncryption ? 32 : 0))
        let nonce =
            convergentEncryption
            ? Array(TransitCrypto.hmacSHA256(key: Array(material[keyBytes...]), data: plaintext).prefix(TransitCrypto.nonceBytes))
            : TransitCrypto.randomBytes(TransitCrypto.nonceBytes)
        let sealed = try TransitCrypto.seal(
            type, key: Array(material.prefix(keyBytes)), nonce: nonce, plaintext: plaintext, associatedData: associatedData)
        return nonce + sealed
    }

    /// `padding_scheme`: RSA only, `oaep` (the default) or `pkcs1v15`.
    private func usesPKCS1v15Padding(_ scheme: String?, batchIndex: Int) throws(SecretsError) -> Bool {
        guard let scheme, !scheme.isEmpty else { return false }
        let invalid = "'[\(batchIndex)].padding_scheme' invalid: "
        guard scheme == "oaep" || scheme == "pkcs1v15" else { throw .badRequest(invalid + "unknown padding scheme: \(scheme)") }
        guard type.isRSA else { throw .badRequest(invalid + "unsupported key type \(type.vaultName) for padding scheme") }
        return scheme == "pkcs1v15"
    }

    private func checkAssociatedData(_ associatedData: Bytes?, batchIndex: Int) throws(SecretsError) {
        if let associatedData, !associatedData.isEmpty, !type.supportsAssociatedData {
            throw .badRequest("'[\(batchIndex)].associated_data' provided for non-AEAD cipher suite \(type.vaultName)")
        }
    }
}
