import AspenCore
import AspenKV

/// What `export/TYPE/NAME` exports.
public enum TransitExportType: String, Sendable, CaseIterable {
    case encryptionKey = "encryption-key"
    case signingKey = "signing-key"
    case hmacKey = "hmac-key"
    case publicKey = "public-key"

    public init(vaultName: String) throws(SecretsError) {
        guard let type = TransitExportType(rawValue: vaultName) else { throw .badRequest("invalid export type: \(vaultName)") }
        self = type
    }
}

/// Public keys as Vault's key read lists them, and `export/`, in Vault's exact formats:
/// Ed25519 keys as base64 of the raw bytes (the private key as seed ‖ public, 64 bytes), ECDSA
/// and RSA public keys as PEM `PUBLIC KEY` (SubjectPublicKeyInfo, which `openssl pkeyutl
/// -pubin` reads), ECDSA private keys as PEM `EC PRIVATE KEY` (SEC 1), RSA private keys as PEM
/// `RSA PRIVATE KEY` (PKCS #1), AEAD keys as base64.
extension TransitKey {
    /// Version → public key for every usable version (from `minDecryptionVersion`), as `keys/NAME`
    /// reads them; empty for the AEAD types. A derived Ed25519 key has one public key per
    /// context: without one each is "", as in Vault.
    public func publicKeys(context: Bytes? = nil) throws(SecretsError) -> [Int: String] {
        guard !type.isAEAD else { return [:] }
        var keys: [Int: String] = [:]
        for version in minDecryptionVersion...latestVersion {
            let entry = try usableVersion(version)
            switch type {
            case .ed25519 where derived:
                guard let context, !context.isEmpty else {
                    keys[version] = ""
                    continue
                }
                let key = try TransitCrypto.ed25519Key(material: entry.material, derivedWith: context)
                keys[version] = TransitBase64.encode(Array(key.publicKey.rawRepresentation))
            default:
                keys[version] = try publicKeyText(entry)
            }
        }
        return keys
    }

    /// `export/TYPE/NAME[/VERSION]`: every usable version, or the one `version` names
    /// (`latest`, `3` or `v3`).
    public func exportKey(type exportType: TransitExportType, version: String? = nil) throws(SecretsError) -> [Int: String] {
        if !exportable && exportType != .publicKey { throw .badRequest("private key material is not exportable") }
        if exportType == .encryptionKey && !type.supportsEncryption { throw .badRequest("encryption not supported for the key") }
        if exportType == .signingKey && !type.supportsSigning { throw .badRequest("signing not supported for the key") }
        guard let version, !version.isEmpty else {
            var keys: [Int: String] = [:]
            for number in minDecryptionVersion...latestVersion { keys[number] = try exported(exportType, try usableVersion(number)) }
            return keys
        }
        let number: Int
        if version == "latest" {
            number = latestVersion
        } else {
            guard let parsed = Int(version.hasPrefix("v") ? String(version.dropFirst()) : version) else {
                throw .badRequest("invalid key version")
            }
            number = parsed
        }
        if number < minDecryptionVersion { throw .badRequest("version for export is below minimum decryption version") }
        guard let entry = versions[number] else { throw .badRequest("version does not exist or cannot be found") }
        return [number: try exported(exportType, entry)]
    }

    private func exported(_ exportType: TransitExportType, _ entry: TransitKeyVersion) throws(SecretsError) -> String {
        switch (exportType, type) {
        case (.hmacKey, _):
            return TransitBase64.encode(entry.hmacKey)
        case (.encryptionKey, .aes128GCM96), (.encryptionKey, .aes256GCM96), (.encryptionKey, .chacha20Poly1305):
            return TransitBase64.encode(entry.material)
        case (.encryptionKey, .rsa2048), (.encryptionKey, .rsa3072), (.encryptionKey, .rsa4096),
            (.signingKey, .rsa2048), (.signingKey, .rsa3072), (.signingKey, .rsa4096):
            _ = try TransitRSA.signingKey(entry.material, type: type)
            return TransitPEM.encode(type: "RSA PRIVATE KEY", der: entry.material)
        case (.signingKey, .ecdsaP256), (.signingKey, .ecdsaP384), (.signingKey, .ecdsaP521):
            let der = try TransitEC.sec1PrivateKey(type, scalar: entry.material)
            return Self.trimmed(TransitPEM.encode(type: "EC PRIVATE KEY", der: der))
        case (.signingKey, .ed25519):
            return TransitBase64.encode(entry.material)
        case (.publicKey, .ecdsaP256), (.publicKey, .ecdsaP384), (.publicKey, .ecdsaP521):
            return Self.trimmed(try publicKeyText(entry))
        case (.publicKey, .ed25519), (.publicKey, .rsa2048), (.publicKey, .rsa3072), (.publicKey, .rsa4096):
            return try publicKeyText(entry)
        default:
            throw .badRequest("unknown key type \(type.vaultName) for export type \(exportType.rawValue)")
        }
    }

    /// A version's public key as Vault stores and reads it: base64 for Ed25519, PEM (ending in a
    /// newline) for ECDSA and RSA.
    func publicKeyText(_ entry: TransitKeyVersion) throws(SecretsError) -> String {
        switch type {
        case .ed25519:
            // From the seed, so the answer is the signing key's whatever the stored half says.
            let key = try TransitCrypto.ed25519Key(material: entry.material, derivedWith: nil)
            return TransitBase64.encode(Array(key.publicKey.rawRepresentation))
        case .ecdsaP256, .ecdsaP384, .ecdsaP521:
            return TransitPEM.encode(type: "PUBLIC KEY", der: try TransitEC.publicKey(type, scalar: entry.material).spki)
        case .rsa2048, .rsa3072, .rsa4096:
            return TransitPEM.encode(type: "PUBLIC KEY", der: try TransitRSA.publicKeyDER(entry.material, type: type))
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305:
            throw .badRequest("unknown key type \(type.vaultName) for export type public-key")
        }
    }

    private static func trimmed(_ text: String) -> String {
        var text = Substring(text)
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
