import AspenCore
import AspenKV

/// The transit engine's key types, spelled as Vault spells them (`type` on `keys/NAME`).
///
/// The codec tag of each is Vault's own `KeyType` number, so a record reads the same way a
/// Vault policy's `type` field does.
public enum TransitKeyType: String, Sendable, CaseIterable {
    case aes128GCM96 = "aes128-gcm96"
    case aes256GCM96 = "aes256-gcm96"
    case chacha20Poly1305 = "chacha20-poly1305"
    case ed25519 = "ed25519"
    case ecdsaP256 = "ecdsa-p256"
    case ecdsaP384 = "ecdsa-p384"
    case ecdsaP521 = "ecdsa-p521"
    case rsa2048 = "rsa-2048"
    case rsa3072 = "rsa-3072"
    case rsa4096 = "rsa-4096"

    /// A type by its Vault name; anything else is Vault's "unknown key type".
    public init(vaultName: String) throws(SecretsError) {
        guard let type = TransitKeyType(rawValue: vaultName) else { throw .badRequest("unknown key type \(vaultName)") }
        self = type
    }

    public var vaultName: String { rawValue }

    /// The AEAD types: encryption with a 12-byte random nonce, associated data, derivation.
    public var isAEAD: Bool { self == .aes128GCM96 || self == .aes256GCM96 || self == .chacha20Poly1305 }
    public var isECDSA: Bool { self == .ecdsaP256 || self == .ecdsaP384 || self == .ecdsaP521 }
    public var isRSA: Bool { self == .rsa2048 || self == .rsa3072 || self == .rsa4096 }

    public var supportsEncryption: Bool { isAEAD || isRSA }
    public var supportsDecryption: Bool { isAEAD || isRSA }
    public var supportsSigning: Bool { self == .ed25519 || isECDSA || isRSA }
    public var supportsDerivation: Bool { isAEAD || self == .ed25519 }
    public var supportsAssociatedData: Bool { isAEAD }
    /// Vault hashes the input before signing for these (Ed25519 signs the input itself).
    var hashesSignatureInput: Bool { isECDSA || isRSA }

    /// The `name` Vault gives each version's public key when it reads the key.
    public var publicKeyName: String? {
        switch self {
        case .ecdsaP256: "P-256"
        case .ecdsaP384: "P-384"
        case .ecdsaP521: "P-521"
        case .ed25519: "ed25519"
        case .rsa2048, .rsa3072, .rsa4096: rawValue
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305: nil
        }
    }

    /// Bytes of an AEAD key.
    var symmetricKeyBytes: Int { self == .aes128GCM96 ? 16 : 32 }

    var rsaBits: Int {
        switch self {
        case .rsa3072: 3072
        case .rsa4096: 4096
        default: 2048
        }
    }

    /// Vault's `KeyType` number.
    var tag: UInt8 {
        switch self {
        case .aes256GCM96: 0
        case .ecdsaP256: 1
        case .ed25519: 2
        case .rsa2048: 3
        case .rsa4096: 4
        case .chacha20Poly1305: 5
        case .ecdsaP384: 6
        case .ecdsaP521: 7
        case .aes128GCM96: 8
        case .rsa3072: 9
        }
    }

    init?(tag: UInt8) {
        guard let type = TransitKeyType.allCases.first(where: { $0.tag == tag }) else { return nil }
        self = type
    }
}

/// One version of a transit key: its secret material, the HMAC key Vault gives every version,
/// and when it was made.
public struct TransitKeyVersion: Sendable, Equatable {
    /// The secret, in the form Vault keeps it: the raw key (AEAD types), seed ‖ public key
    /// (Ed25519, 64 bytes, which is also the HKDF input of a derived Ed25519 key), the private
    /// scalar (ECDSA, 32/48/66 bytes) or the PKCS #1 DER private key (RSA).
    public let material: Bytes
    /// 32 random bytes for Vault's `hmac/` endpoint and `export/hmac-key`.
    public let hmacKey: Bytes
    public let creationTimeMs: Int64

    public init(material: Bytes, hmacKey: Bytes, creationTimeMs: Int64) {
        self.material = material
        self.hmacKey = hmacKey
        self.creationTimeMs = creationTimeMs
    }
}

/// A named transit key ring with Vault's semantics (`sdk/helper/keysutil/policy.go`): versions
/// from 1, rotation, the minimum decryption / encryption / available versions, derivation by
/// HKDF-SHA256 with the request's context as info. A pure value: the node stores it as one
/// record (`encoded()`), sealed at rest by the data key, and calls the operations in
/// `TransitKey+Encryption.swift` and `TransitKey+Signing.swift`. No I/O; the clock is `nowMs`.
public struct TransitKey: Sendable, Equatable {
    public let name: String
    public let type: TransitKeyType
    /// Every operation needs a context, from which each request's key is derived (Vault's
    /// `hkdf_sha256` KDF); the stored key is never used directly.
    public let derived: Bool
    /// Derived AEAD keys whose nonce is an HMAC of the plaintext (Vault's convergent version 3):
    /// the same context and plaintext give the same ciphertext.
    public let convergentEncryption: Bool
    /// Every version still held, from `max(1, minAvailableVersion)` to `latestVersion`. Versions
    /// below `minDecryptionVersion` are kept (Vault's archive) so the floor can be lowered again,
    /// but no operation uses them.
    public internal(set) var versions: [Int: TransitKeyVersion]
    public internal(set) var latestVersion: Int
    public internal(set) var minDecryptionVersion: Int
    /// 0: any version from `minDecryptionVersion` may encrypt or sign.
    public internal(set) var minEncryptionVersion: Int
    /// Versions below it are gone for good (`trim`); 0 until the first trim.
    public internal(set) var minAvailableVersion: Int
    public internal(set) var deletionAllowed: Bool
    /// Once set, never unset (Vault).
    public internal(set) var exportable: Bool
    public internal(set) var allowPlaintextBackup: Bool
    /// 0: no automatic rotation; otherwise at least an hour.
    public internal(set) var autoRotatePeriodMs: Int64

    /// The shortest automatic rotation period Vault accepts.
    public static let autoRotatePeriodMinMs: Int64 = 3_600_000

    /// The versions operations may use and a key read lists (Vault's policy holds no others).
    public var listedVersions: ClosedRange<Int> { minDecryptionVersion...latestVersion }

    /// Vault's name for the derivation function, when the key is derived.
    public var kdf: String? { derived ? "hkdf_sha256" : nil }

    /// What a key read reports as `convergent_encryption_version`: Vault keeps the version (3)
    /// in each key version and sets the policy's own field to -1, which is what it reads back.
    public var convergentEncryptionVersion: Int? { convergentEncryption ? -1 : nil }

    init(
        name: String, type: TransitKeyType, derived: Bool, convergentEncryption: Bool, versions: [Int: TransitKeyVersion],
        latestVersion: Int, minDecryptionVersion: Int, minEncryptionVersion: Int, minAvailableVersion: Int, deletionAllowed: Bool,
        exportable: Bool, allowPlaintextBackup: Bool, autoRotatePeriodMs: Int64
    ) {
        self.name = name
        self.type = type
        self.derived = derived
        self.convergentEncryption = convergentEncryption
        self.versions = versions
        self.latestVersion = latestVersion
        self.minDecryptionVersion = minDecryptionVersion
        self.minEncryptionVersion = minEncryptionVersion
        self.minAvailableVersion = minAvailableVersion
        self.deletionAllowed = deletionAllowed
        self.exportable = exportable
        self.allowPlaintextBackup = allowPlaintextBackup
        self.autoRotatePeriodMs = autoRotatePeriodMs
    }

    /// A new key ring with version 1, refused with Vault's messages where Vault refuses it.
    public static func create(
        name: String, type: TransitKeyType = .aes256GCM96, derived: Bool = false, convergentEncryption: Bool = false,
        exportable: Bool = false, allowPlaintextBackup: Bool = false, autoRotatePeriodMs: Int64 = 0, nowMs: Int64,
        limits: Limits = .standard
    ) throws(SecretsError) -> TransitKey {
        try checkName(name, limits: limits)
        try checkAutoRotatePeriod(autoRotatePeriodMs)
        if !derived && convergentEncryption { throw .badRequest("convergent encryption requires derivation to be enabled") }
        if type.isECDSA || type.isRSA, derived || convergentEncryption {
            throw .badRequest("key derivation and convergent encryption not supported for keys of type \(type.vaultName)")
        }
        if type == .ed25519 && convergentEncryption {
            throw .badRequest("convergent encryption not supported for keys of type \(type.vaultName)")
        }
        var key = TransitKey(
            name: name, type: type, derived: derived, convergentEncryption: convergentEncryption, versions: [:], latestVersion: 0,
            minDecryptionVersion: 1, minEncryptionVersion: 0, minAvailableVersion: 0, deletionAllowed: false, exportable: exportable,
            allowPlaintextBackup: allowPlaintextBackup, autoRotatePeriodMs: autoRotatePeriodMs)
        try key.rotate(nowMs: nowMs, limits: limits)
        return key
    }

    /// Adds a new latest version. Refused (naming the bound) once the ring holds
    /// `transitKeyVersionsMax` versions: trim old ones first.
    public mutating func rotate(nowMs: Int64, limits: Limits = .standard) throws(SecretsError) {
        guard versions.count < limits.transitKeyVersionsMax else {
            throw .tooLarge(
                "transit key \(name) holds \(versions.count) versions, the most transitKeyVersionsMax (\(limits.transitKeyVersionsMax)) "
                    + "allows; raise min_encryption_version and min_decryption_version and trim old versions before rotating")
        }
        guard latestVersion < Self.versionNumberMax else {
            throw .badRequest("transit key \(name) cannot be rotated past version \(latestVersion)")
        }
        let material = try TransitCrypto.generateMaterial(for: type)
        latestVersion += 1
        versions[latestVersion] = TransitKeyVersion(material: material, hmacKey: TransitCrypto.randomBytes(32), creationTimeMs: nowMs)
    }

    /// Whether automatic rotation is due (Vault rotates once the latest version is older than the period).
    public func isDueForAutoRotation(nowMs: Int64) -> Bool {
        guard autoRotatePeriodMs > 0, let latest = versions[latestVersion] else { return false }
        return nowMs - latest.creationTimeMs > autoRotatePeriodMs
    }

    /// `keys/NAME/config`: each argument left nil is left as it is. All or nothing: a refused
    /// change changes nothing. Returns Vault's warnings.
    @discardableResult
    public mutating func configure(
        minDecryptionVersion newMinDecryption: Int? = nil, minEncryptionVersion newMinEncryption: Int? = nil,
        deletionAllowed newDeletionAllowed: Bool? = nil, exportable newExportable: Bool? = nil,
        allowPlaintextBackup newAllowPlaintextBackup: Bool? = nil, autoRotatePeriodMs newAutoRotatePeriodMs: Int64? = nil
    ) throws(SecretsError) -> [String] {
        var next = self
        var warnings: [String] = []
        var changed = false
        if var version = newMinDecryption {
            if version < 0 { throw .badRequest("min decryption version cannot be negative") }
            if version == 0 {
                version = 1
                warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
            }
            if version != next.minDecryptionVersion {
                if version > latestVersion {
                    throw .badRequest("cannot set min decryption version of \(version), latest key version is \(latestVersion)")
                }
                next.minDecryptionVersion = version
                changed = true
            }
        }
        if let version = newMinEncryption {
            if version < 0 { throw .badRequest("min encryption version cannot be negative") }
            if version != next.minEncryptionVersion {
                if version > latestVersion {
                    throw .badRequest("cannot set min encryption version of \(version), latest key version is \(latestVersion)")
                }
                next.minEncryptionVersion = version
                changed = true
            }
        }
        if next.minEncryptionVersion > 0 && next.minEncryptionVersion < next.minDecryptionVersion {
            throw .badRequest(
                "cannot set min encryption/decryption values; min encryption version of \(next.minEncryptionVersion) must be greater "
                    + "than or equal to min decryption version of \(next.minDecryptionVersion)")
        }
        if let allowed = newDeletionAllowed, allowed != next.deletionAllowed {
            next.deletionAllowed = allowed
            changed = true
        }
        if newExportable == true && !next.exportable {
            next.exportable = true
            changed = true
        }
        if newAllowPlaintextBackup == true && !next.allowPlaintextBackup {
            next.allowPlaintextBackup = true
            changed = true
        }
        if let period = newAutoRotatePeriodMs {
            try Self.checkAutoRotatePeriod(period)
            if period != next.autoRotatePeriodMs {
                next.autoRotatePeriodMs = period
                changed = true
            }
        }
        if changed {
            if next.minAvailableVersion > next.minEncryptionVersion {
                throw .badRequest("min encryption version should not be less than min available version")
            }
            if next.minAvailableVersion > next.minDecryptionVersion {
                throw .badRequest("min decryption version should not be less then min available version")
            }
        }
        self = next
        return warnings
    }

    /// `keys/NAME/trim`: deletes every version below `minAvailableVersion` for good.
    public mutating func trim(minAvailableVersion floor: Int) throws(SecretsError) {
        if floor < minAvailableVersion { throw .badRequest("minimum available version cannot be decremented") }
        if minEncryptionVersion == 0 {
            throw .badRequest("minimum available version cannot be set when minimum encryption version is not set")
        }
        if floor > minEncryptionVersion { throw .badRequest("minimum available version cannot be greater than minmum encryption version") }
        if floor > minDecryptionVersion {
            throw .badRequest("minimum available version cannot be greater than minimum decryption version")
        }
        if floor < 0 { throw .badRequest("minimum available version cannot be negative") }
        if floor == 0 { throw .badRequest("minimum available version should be positive") }
        minAvailableVersion = floor
        versions = versions.filter { $0.key >= floor }
    }

    /// The version a request names: nil or 0 is the latest.
    func resolvedVersion(_ requested: Int?) -> Int {
        guard let requested, requested != 0 else { return latestVersion }
        return requested
    }

    /// A version an operation may use: Vault keeps only versions from `min_decryption_version`
    /// in the policy proper (older ones live in its archive), so anything else is "no such key version".
    func usableVersion(_ version: Int) throws(SecretsError) -> TransitKeyVersion {
        guard version >= minDecryptionVersion, let entry = versions[version] else { throw .badRequest("no such key version") }
        return entry
    }

    static func checkName(_ name: String, limits: Limits) throws(SecretsError) {
        if name.isEmpty { throw .badRequest("missing key name") }
        if name.utf8.count > limits.secretPathBytesMax {
            throw .tooLarge("transit key name is \(name.utf8.count) bytes, more than secretPathBytesMax (\(limits.secretPathBytesMax))")
        }
    }

    static func checkAutoRotatePeriod(_ periodMs: Int64) throws(SecretsError) {
        if periodMs != 0 && periodMs < autoRotatePeriodMinMs {
            throw .badRequest("auto rotate period must be 0 to disable or at least an hour")
        }
    }
}
