import AspenCore
import AspenKV
import AspenLayer

/// Where the secrets engines keep their state in the key-value store (DESIGN §16), all under
/// the reserved subspace `("aspen", "secrets")`, which no client's key-value request may touch:
///
/// - `("mount", PATH)`: a mount's record (`MountRecord`), in the clear (a type and options);
/// - `("m", MOUNT-ID, …)`: the mount's data, every value an envelope sealed by the data key with
///   its storage key as associated data. A mount's id is new at each enable, so disabling a
///   mount and enabling it again never finds the old data.
///   - kv-v2: `("meta", PATH)` the secret's metadata, `("ver", PATH, VERSION)` one version's data;
///   - transit: `("key", NAME)` a key ring;
///   - pki: `("issuer")`, `("role", NAME)`, `("cert", SERIAL)`, `("crl")`.
public enum SecretsKeys {
    public static let space = Subspace(["aspen", "secrets"])
    public static let mounts = space.subspace(["mount"])

    public static func mount(_ path: String) -> Bytes { mounts.pack([.string(path)]) }
    public static func data(_ mount: MountRecord) -> Subspace { space.subspace(["m", .bytes(mount.id)]) }

    /// The keys of every string element starting with `prefix` in `subspace` (a string's tuple
    /// encoding without its terminator), for listings by path prefix.
    public static func strings(in subspace: Subspace, startingWith prefix: String) -> (start: Bytes, end: Bytes) {
        var start = subspace.pack([.string(prefix)])
        start.removeLast()  // the string's 0x00 terminator
        return (start, KeyBounds.prefixEnd(start) ?? subspace.range.end)
    }
}

/// The engines a mount can hold.
public enum SecretsEngineType: String, Sendable, CaseIterable {
    case kv2 = "kv-v2"
    case transit
    case pki

    /// Vault's type name in `sys/mounts` (a kv-v2 mount is `kv` with `options.version` 2).
    public var vaultType: String { self == .kv2 ? "kv" : rawValue }
}

/// A secrets engine mounted at a path.
public struct MountRecord: Sendable, Equatable {
    public var path: String
    public var type: SecretsEngineType
    /// 16 random bytes, new at each enable: the mount's storage lives under it.
    public var id: Bytes
    public var description: String
    public var createdMs: Int64
    /// kv-v2's mount-wide defaults (Vault's `config` endpoint).
    public var kv: KV2Config

    public init(path: String, type: SecretsEngineType, id: Bytes, description: String = "", createdMs: Int64, kv: KV2Config = KV2Config()) {
        self.path = path
        self.type = type
        self.id = id
        self.description = description
        self.createdMs = createdMs
        self.kv = kv
    }

    static let codecVersion: UInt8 = 1

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.write(Self.codecVersion)
        writer.writeString(path)
        writer.writeString(type.rawValue)
        writer.writeBytes(id)
        writer.writeString(description)
        writer.writeVarint(signed: createdMs)
        kv.write(to: &writer)
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw SecretsError.internalError("a mount record of an unknown version") }
            path = try reader.readString(limit: limits.secretsMountPathBytesMax)
            guard let type = SecretsEngineType(rawValue: try reader.readString(limit: 16)) else {
                throw SecretsError.internalError("a mount record of an unknown engine type")
            }
            self.type = type
            id = try reader.readBytes(limit: 16)
            description = try reader.readString(limit: limits.secretsMountDescriptionBytesMax)
            createdMs = try reader.readSignedVarint()
            kv = try KV2Config(reading: &reader)
            try reader.expectEnd()
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .internalError("an undecodable mount record: \(error)")
        }
    }

    /// Mount paths: 1…`secretsMountPathBytesMax` bytes of letters, digits, `-`, `_`, `.` and inner
    /// `/`; never one of Vault's reserved roots (`sys`, `auth`, `identity`, `cubbyhole`).
    public static func validate(path: String, limits: Limits) throws(SecretsError) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= limits.secretsMountPathBytesMax else {
            throw .badRequest("a mount path must have 1 to \(limits.secretsMountPathBytesMax) bytes (secretsMountPathBytesMax)")
        }
        let allowed = bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x5F
                || byte == 0x2E || byte == 0x2F
        }
        guard allowed, bytes.first != 0x2F, bytes.last != 0x2F, !path.contains("//"), !path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) else {
            throw .badRequest("mount path '\(path)' may hold only letters, digits, '-', '_', '.' and inner '/'")
        }
        let root = path.split(separator: "/").first.map(String.init) ?? path
        guard !["sys", "auth", "identity", "cubbyhole"].contains(root) else {
            throw .badRequest("cannot mount under '\(root)/': it is reserved")
        }
    }
}

/// kv-v2's settings, for a mount (its `config`) or one secret (its metadata).
public struct KV2Config: Sendable, Equatable {
    /// Versions kept; 0: the mount's (or `Limits.secretVersionsDefault`).
    public var maxVersions: Int = 0
    public var casRequired = false
    /// How long after its creation a version is soft-deleted; 0: never.
    public var deleteVersionAfterMs: Int64 = 0

    public init(maxVersions: Int = 0, casRequired: Bool = false, deleteVersionAfterMs: Int64 = 0) {
        self.maxVersions = maxVersions
        self.casRequired = casRequired
        self.deleteVersionAfterMs = deleteVersionAfterMs
    }

    func write(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(maxVersions))
        writer.write(casRequired)
        writer.writeVarint(signed: deleteVersionAfterMs)
    }

    init(reading reader: inout ByteReader) throws(DecodingError) {
        maxVersions = Int(clamping: try reader.readVarint())
        casRequired = try reader.readBool()
        deleteVersionAfterMs = try reader.readSignedVarint()
    }
}
