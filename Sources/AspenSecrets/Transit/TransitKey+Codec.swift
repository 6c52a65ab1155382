import AspenCore
import AspenKV

/// The stored record of a transit key ring:
///
///     format (1) | name | type (Vault's KeyType number) | flags | latest | min decryption
///     | min encryption | min available | auto-rotate period ms | count
///     | count × (version | creation ms | material | hmac key)
///
/// Decoding checks every length against a bound before it allocates, and every invariant the
/// operations rely on (versions contiguous up to the latest, floors in order, material of the
/// type's size), so no record, however made, can make an operation misbehave. Key material is
/// checked for shape here and turned into a key only by the operation that uses it, so reading
/// a ring of a thousand RSA versions costs no RSA parsing.
extension TransitKey {
    static let recordFormat: UInt8 = 1
    /// An RSA-4096 private key is about 2,350 bytes of PKCS #1 DER.
    static let materialBytesMax = 4096
    static let hmacKeyBytes = 32
    /// No version number, in a record or a request, is taken seriously beyond this.
    static let versionNumberMax = Int(Int32.max)

    private enum Flag {
        static let derived: UInt8 = 1 << 0
        static let convergent: UInt8 = 1 << 1
        static let exportable: UInt8 = 1 << 2
        static let deletionAllowed: UInt8 = 1 << 3
        static let allowPlaintextBackup: UInt8 = 1 << 4
        static let all: UInt8 = 0b1_1111
    }

    public func encoded() -> Bytes {
        var writer = ByteWriter(capacity: 64 + versions.count * 80)
        writer.write(Self.recordFormat)
        writer.writeString(name)
        writer.write(type.tag)
        var flags: UInt8 = 0
        if derived { flags |= Flag.derived }
        if convergentEncryption { flags |= Flag.convergent }
        if exportable { flags |= Flag.exportable }
        if deletionAllowed { flags |= Flag.deletionAllowed }
        if allowPlaintextBackup { flags |= Flag.allowPlaintextBackup }
        writer.write(flags)
        writer.writeVarint(UInt64(latestVersion))
        writer.writeVarint(UInt64(minDecryptionVersion))
        writer.writeVarint(UInt64(minEncryptionVersion))
        writer.writeVarint(UInt64(minAvailableVersion))
        writer.writeVarint(signed: autoRotatePeriodMs)
        writer.writeVarint(UInt64(versions.count))
        for (number, version) in versions.sorted(by: { $0.key < $1.key }) {
            writer.writeVarint(UInt64(number))
            writer.writeVarint(signed: version.creationTimeMs)
            writer.writeBytes(version.material)
            writer.writeBytes(version.hmacKey)
        }
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits) throws(SecretsError) {
        do {
            self = try Self.read(bytes, limits: limits)
        } catch let error as SecretsError {
            throw error
        } catch {
            throw Self.malformed("\(error)")
        }
        try validate()
    }

    private static func read(_ bytes: Bytes, limits: Limits) throws -> TransitKey {
        var reader = ByteReader(bytes)
        let format = try reader.readByte()
        guard format == recordFormat else { throw malformed("format \(format) is not one this node reads") }
        let name = try reader.readString(limit: limits.secretPathBytesMax)
        let tag = try reader.readByte()
        guard let type = TransitKeyType(tag: tag) else { throw malformed("unknown key type \(tag)") }
        let flags = try reader.readByte()
        guard flags & ~Flag.all == 0 else { throw malformed("unknown flags \(flags)") }
        let latest = try readVersionNumber(&reader)
        let minDecryption = try readVersionNumber(&reader)
        let minEncryption = try readVersionNumber(&reader)
        let minAvailable = try readVersionNumber(&reader)
        let autoRotatePeriodMs = try reader.readSignedVarint()
        var key = TransitKey(
            name: name, type: type, derived: flags & Flag.derived != 0, convergentEncryption: flags & Flag.convergent != 0, versions: [:],
            latestVersion: latest, minDecryptionVersion: minDecryption, minEncryptionVersion: minEncryption,
            minAvailableVersion: minAvailable, deletionAllowed: flags & Flag.deletionAllowed != 0, exportable: flags & Flag.exportable != 0,
            allowPlaintextBackup: flags & Flag.allowPlaintextBackup != 0, autoRotatePeriodMs: autoRotatePeriodMs)
        let count = try reader.readCount(limit: limits.transitKeyVersionsMax)
        for _ in 0..<count {
            let number = try readVersionNumber(&reader)
            let creationTimeMs = try reader.readSignedVarint()
            let material = try reader.readBytes(limit: materialBytesMax)
            let hmacKey = try reader.readBytes(limit: hmacKeyBytes)
            guard key.versions[number] == nil else { throw malformed("version \(number) appears twice") }
            key.versions[number] = TransitKeyVersion(material: material, hmacKey: hmacKey, creationTimeMs: creationTimeMs)
        }
        try reader.expectEnd()
        return key
    }

    /// Everything the operations assume of a ring, checked once where a record is read.
    func validate() throws(SecretsError) {
        guard !name.isEmpty else { throw Self.malformed("the name is empty") }
        guard latestVersion >= 1 else { throw Self.malformed("latest version \(latestVersion) is below 1") }
        guard minDecryptionVersion >= 1 && minDecryptionVersion <= latestVersion else {
            throw Self.malformed("min decryption version \(minDecryptionVersion) is outside 1...\(latestVersion)")
        }
        guard minEncryptionVersion == 0 || (minEncryptionVersion >= minDecryptionVersion && minEncryptionVersion <= latestVersion) else {
            throw Self.malformed("min encryption version \(minEncryptionVersion) is outside \(minDecryptionVersion)...\(latestVersion)")
        }
        let availableFloorFits = minAvailableVersion <= minDecryptionVersion && minAvailableVersion <= minEncryptionVersion
        guard minAvailableVersion == 0 || availableFloorFits else {
            throw Self.malformed("min available version \(minAvailableVersion) is above a min encryption or decryption version")
        }
        guard autoRotatePeriodMs == 0 || autoRotatePeriodMs >= Self.autoRotatePeriodMinMs else {
            throw Self.malformed("auto-rotate period \(autoRotatePeriodMs) ms")
        }
        guard !derived || type.supportsDerivation else { throw Self.malformed("a \(type.vaultName) key cannot be derived") }
        guard !convergentEncryption || (derived && type.isAEAD) else {
            throw Self.malformed("convergent encryption on a \(type.vaultName) key")
        }
        let first = max(1, minAvailableVersion)
        guard versions.count == latestVersion - first + 1 else {
            throw Self.malformed("\(versions.count) versions held where \(first)...\(latestVersion) should be")
        }
        for number in first...latestVersion {
            guard let version = versions[number] else { throw Self.malformed("version \(number) is missing") }
            guard version.hmacKey.count == Self.hmacKeyBytes else { throw Self.malformed("version \(number)'s HMAC key is not 32 bytes") }
            guard TransitCrypto.materialHasValidShape(version.material, for: type) else {
                throw Self.malformed("version \(number)'s key material is not a \(type.vaultName) key")
            }
        }
    }

    private static func readVersionNumber(_ reader: inout ByteReader) throws(DecodingError) -> Int {
        try reader.readCount(limit: versionNumberMax)
    }

    private static func malformed(_ reason: String) -> SecretsError {
        .internalError("a stored transit key record is malformed (\(reason)); it is not used")
    }
}
