import AspenCore
import AspenKV
import Foundation

/// One version of a kv-v2 secret, as its metadata lists it.
public struct KV2Version: Sendable, Equatable {
    public var createdMs: Int64
    /// When it is (or will be) soft-deleted; 0: not deleted. A time in the future is
    /// `delete_version_after` at work: the version reads normally until then.
    public var deletionMs: Int64
    public var destroyed: Bool

    public init(createdMs: Int64, deletionMs: Int64 = 0, destroyed: Bool = false) {
        self.createdMs = createdMs
        self.deletionMs = deletionMs
        self.destroyed = destroyed
    }

    public func isDeleted(nowMs: Int64) -> Bool { deletionMs != 0 && deletionMs <= nowMs }
}

/// A kv-v2 secret's metadata: its settings and every version it keeps. One record, compared
/// by its revision in every transaction that changes the secret: that makes check-and-set exact.
public struct KV2Metadata: Sendable, Equatable {
    public var createdMs: Int64
    public var updatedMs: Int64
    public var currentVersion: Int64 = 0
    public var oldestVersion: Int64 = 0
    public var config = KV2Config()
    public var customMetadata: [String: String] = [:]
    public var versions: [Int64: KV2Version] = [:]

    public init(createdMs: Int64) {
        self.createdMs = createdMs
        self.updatedMs = createdMs
    }

    static let codecVersion: UInt8 = 1

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.write(Self.codecVersion)
        writer.writeVarint(signed: createdMs)
        writer.writeVarint(signed: updatedMs)
        writer.writeVarint(signed: currentVersion)
        writer.writeVarint(signed: oldestVersion)
        config.write(to: &writer)
        writer.writeVarint(UInt64(customMetadata.count))
        for (key, value) in customMetadata.sorted(by: { $0.key < $1.key }) {
            writer.writeString(key)
            writer.writeString(value)
        }
        writer.writeVarint(UInt64(versions.count))
        for (number, version) in versions.sorted(by: { $0.key < $1.key }) {
            writer.writeVarint(signed: number)
            writer.writeVarint(signed: version.createdMs)
            writer.writeVarint(signed: version.deletionMs)
            writer.write(version.destroyed)
        }
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw SecretsError.internalError("secret metadata of an unknown version") }
            createdMs = try reader.readSignedVarint()
            updatedMs = try reader.readSignedVarint()
            currentVersion = try reader.readSignedVarint()
            oldestVersion = try reader.readSignedVarint()
            config = try KV2Config(reading: &reader)
            let entries = try reader.readCount(limit: limits.secretCustomMetadataMax)
            for _ in 0..<entries {
                let key = try reader.readString(limit: limits.secretCustomMetadataKeyBytesMax)
                customMetadata[key] = try reader.readString(limit: limits.secretCustomMetadataValueBytesMax)
            }
            let count = try reader.readCount(limit: limits.secretVersionsMax + 1)
            for _ in 0..<count {
                let number = try reader.readSignedVarint()
                versions[number] = KV2Version(
                    createdMs: try reader.readSignedVarint(), deletionMs: try reader.readSignedVarint(), destroyed: try reader.readBool())
            }
            try reader.expectEnd()
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .internalError("undecodable secret metadata: \(error)")
        }
    }

    /// Versions kept: the secret's setting, else the mount's, else the default.
    public func versionsKept(mount: KV2Config, limits: Limits) -> Int {
        let chosen = config.maxVersions > 0 ? config.maxVersions : mount.maxVersions > 0 ? mount.maxVersions : limits.secretVersionsDefault
        return min(chosen, limits.secretVersionsMax)
    }

    /// Vault's metadata object.
    public func json(nowMs: Int64) -> [String: Any] {
        var listed: [String: Any] = [:]
        for (number, version) in versions {
            listed[String(number)] = [
                "created_time": VaultTime.format(ms: version.createdMs),
                "deletion_time": version.deletionMs == 0 ? "" : VaultTime.format(ms: version.deletionMs),
                "destroyed": version.destroyed,
            ] as [String: Any]
        }
        return [
            "cas_required": config.casRequired,
            "created_time": VaultTime.format(ms: createdMs),
            "current_version": currentVersion,
            "custom_metadata": customMetadata.isEmpty ? NSNull() : customMetadata,
            "delete_version_after": GoDuration.format(ms: config.deleteVersionAfterMs),
            "max_versions": config.maxVersions,
            "oldest_version": oldestVersion,
            "updated_time": VaultTime.format(ms: updatedMs),
            "versions": listed,
        ]
    }

    /// Vault's per-version metadata (a write's answer, beside a read's data).
    public func versionJSON(_ number: Int64) -> [String: Any] {
        let version = versions[number] ?? KV2Version(createdMs: 0)
        return [
            "created_time": VaultTime.format(ms: version.createdMs),
            "custom_metadata": customMetadata.isEmpty ? NSNull() : customMetadata,
            "deletion_time": version.deletionMs == 0 ? "" : VaultTime.format(ms: version.deletionMs),
            "destroyed": version.destroyed,
            "version": number,
        ]
    }
}
