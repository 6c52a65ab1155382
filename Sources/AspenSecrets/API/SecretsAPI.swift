import AspenCore
import AspenKV
import Foundation

/// Runs the Vault API's operations against a `KeyValueStore`: the mount table and the engines.
/// The node supplies the data key (unsealing on demand) and answers the sys calls that are
/// about itself (health, seal status, the caller's token).
public struct SecretsAPI: Sendable {
    public let store: any KeyValueStore
    public let limits: Limits
    public let nowMs: @Sendable () -> Int64
    /// The data key; throws `SecretsError.unavailable` while the node cannot unseal.
    public let dataKey: @Sendable () async throws -> DataKey

    public init(
        store: any KeyValueStore, limits: Limits, nowMs: @escaping @Sendable () -> Int64, dataKey: @escaping @Sendable () async throws -> DataKey
    ) {
        self.store = store
        self.limits = limits
        self.nowMs = nowMs
        self.dataKey = dataKey
    }

    /// Every mount, read linearizably. A record that does not decode is left out (its path
    /// answers 404) rather than failing every request.
    public func mounts() async throws -> [MountRecord] { try await mountTable().mounts }

    /// The mounts and the revision they were read at.
    func mountTable(_ consistency: ReadConsistency = .linearizable) async throws -> (mounts: [MountRecord], revision: Revision) {
        let page = try await store.read(
            RangeRequest(.prefix(SecretsKeys.mounts.prefix), limit: limits.secretsMountsMax + 1), consistency: consistency)
        return (page.kvs.compactMap { try? MountRecord(decoding: $0.value, limits: limits) }, page.revision)
    }

    public func router(_ consistency: ReadConsistency = .linearizable) async throws -> SecretsRouter {
        SecretsRouter(mounts: try await mountTable(consistency).mounts, limits: limits)
    }

    func kv(_ mount: MountRecord) async throws -> KV2Engine {
        KV2Engine(store: store, mount: mount, key: try await dataKey(), limits: limits, nowMs: nowMs)
    }

    /// Runs an engine or mount operation. The sys calls about the node itself are the node's.
    public func run(_ operation: SecretsOperation) async throws -> VaultResponse {
        switch operation {
        case .health, .sealStatus, .lookupSelf:
            throw SecretsError.internalError("the node answers \(operation) itself")
        case .mounts:
            var table: [String: Any] = [:]
            for mount in try await mounts() { table[mount.path + "/"] = Self.json(mount) }
            var response = VaultResponse.data(table)
            // Vault also lists the mounts at the top level of the answer (older clients read them there).
            if var object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] {
                for (path, mount) in table { object[path] = mount }
                response.body = SecretsJSON.encode(object)
            }
            return response
        case .mountRead(let path):
            guard let mount = try await mounts().first(where: { $0.path == path }) else { throw SecretsError.badRequest("no secret engine mount at \(path)/") }
            return .data(Self.json(mount))
        case .mountEnable(let path, let type, let description, let config):
            try await enable(path, type, description, config)
            return .noContent
        case .mountDisable(let path):
            guard let mount = try await mounts().first(where: { $0.path == path }) else { return .noContent }
            let key = SecretsKeys.mount(path)
            let result = try await store.transaction(
                Transaction(
                    compares: [Compare(key: key, .value(mount.encoded()))],
                    success: [.delete(Delete(.key(key))), .delete(Delete(.prefix(SecretsKeys.data(mount).prefix)))]))
            guard result.succeeded else { throw SecretsError.unavailable("mount \(path)/ changed meanwhile; try again") }
            return .noContent
        case .mountTune(let path, let description):
            try await updateMount(path) { mount in if let description { mount.description = description } }
            return .noContent
        case .kvConfig(let mount):
            return .data([
                "cas_required": mount.kv.casRequired, "delete_version_after": GoDuration.format(ms: mount.kv.deleteVersionAfterMs),
                "max_versions": mount.kv.maxVersions,
            ])
        case .kvConfigWrite(let mount, let config):
            try await updateMount(mount.path) { $0.kv = config }
            return .noContent
        case .kvRead, .kvWrite, .kvPatch, .kvVersions, .kvMetadata, .kvMetadataWrite, .kvMetadataDelete, .kvList:
            return try await runKV(operation)
        case .transit(let mount, let call):
            return try await TransitEngine(store: store, mount: mount, key: try await dataKey(), limits: limits, nowMs: nowMs).run(call)
        case .pki(let mount, let call):
            return try await PKIEngine(store: store, mount: mount, key: try await dataKey(), limits: limits, nowMs: nowMs).run(call)
        }
    }

    func runKV(_ operation: SecretsOperation) async throws -> VaultResponse {
        switch operation {
        case .kvRead(let mount, let path, let version):
            switch try await kv(mount).read(path, version: version) {
            case .found(let data, let number, let metadata):
                let value = (try? JSONSerialization.jsonObject(with: Data(data), options: [.fragmentsAllowed])) ?? NSNull()
                return .data(["data": value, "metadata": metadata.versionJSON(number)])
            case .gone(let number, let metadata):
                var answer = VaultResponse.data(["data": NSNull(), "metadata": metadata.versionJSON(number)])
                answer.status = 404
                return answer
            }
        case .kvWrite(let mount, let path, let data, let cas):
            let (number, metadata) = try await kv(mount).write(path, data: data, cas: cas)
            return .data(metadata.versionJSON(number))
        case .kvPatch(let mount, let path, let patch, let cas):
            let engine = try await kv(mount)
            guard case .found(let data, let number, _) = try await engine.read(path, version: nil) else {
                throw SecretsError.notFound("no secret at '\(path)' to patch")
            }
            if let cas, cas != number { throw SecretsError.badRequest("check-and-set parameter did not match the current version") }
            let secretRequiresCAS = try await engine.metadata(path)?.0.config.casRequired ?? false
            if cas == nil, mount.kv.casRequired || secretRequiresCAS {
                throw SecretsError.badRequest("check-and-set parameter required for this call")
            }
            let merged = try Self.mergePatch(data, patch)
            let (written, metadata) = try await engine.write(path, data: merged, cas: number)
            return .data(metadata.versionJSON(written))
        case .kvVersions(let mount, let action, let path, let versions):
            try await kv(mount).apply(action, path, versions: versions)
            return .noContent
        case .kvMetadata(let mount, let path):
            guard let (metadata, _) = try await kv(mount).metadata(path) else { return .notFound }
            return .data(metadata.json(nowMs: nowMs()))
        case .kvMetadataWrite(let mount, let path, var update, let patch):
            update.mergeCustomMetadata = patch
            try await kv(mount).updateMetadata(path, update)
            return .noContent
        case .kvMetadataDelete(let mount, let path):
            try await kv(mount).deleteAll(path)
            return .noContent
        case .kvList(let mount, let prefix):
            let names = try await kv(mount).list(prefix)
            return names.isEmpty ? .notFound : .data(["keys": names])
        default:
            throw SecretsError.internalError("not a kv-v2 operation")
        }
    }

    func enable(_ path: String, _ type: SecretsEngineType, _ description: String, _ config: KV2Config) async throws {
        let (existing, revision) = try await mountTable()
        if let clash = existing.first(where: { $0.path == path || path.hasPrefix($0.path + "/") || $0.path.hasPrefix(path + "/") }) {
            throw SecretsError.badRequest("path is already in use at \(clash.path)/")
        }
        guard existing.count < limits.secretsMountsMax else {
            throw SecretsError.badRequest("the cluster has \(existing.count) mounts, the most secretsMountsMax (\(limits.secretsMountsMax)) allows")
        }
        let id = SecureRandom.bytes(16)
        let record = MountRecord(path: path, type: type, id: id, description: description, createdMs: nowMs(), kv: config)
        let key = SecretsKeys.mount(path)
        // No mount appeared or changed since the table was read: the overlap and count checks hold.
        let table = SecretsKeys.mounts.range
        let unchanged = Compare(key: table.start, .modRevision(revision + 1), .less, extent: .range(end: table.end))
        let result = try await store.transaction(
            Transaction(compares: [Compare.absent(key), unchanged], success: [.put(Put(key: key, value: record.encoded()))]))
        guard result.succeeded else { throw SecretsError.unavailable("the mount table changed during this request; try again") }
    }

    func updateMount(_ path: String, _ change: (inout MountRecord) -> Void) async throws {
        guard let current = try await mounts().first(where: { $0.path == path }) else { throw SecretsError.badRequest("no secret engine mount at \(path)/") }
        var record = current
        change(&record)
        let key = SecretsKeys.mount(path)
        let result = try await store.transaction(
            Transaction(compares: [Compare(key: key, .value(current.encoded()))], success: [.put(Put(key: key, value: record.encoded()))]))
        guard result.succeeded else { throw SecretsError.unavailable("mount \(path)/ changed meanwhile; try again") }
    }

    /// `sys/mounts`' description of a mount.
    static func json(_ mount: MountRecord) -> [String: Any] {
        var options: [String: Any] = [:]
        if mount.type == .kv2 { options["version"] = "2" }
        return [
            "type": mount.type.vaultType, "description": mount.description, "options": options, "local": false, "seal_wrap": false,
            "uuid": mount.id.map { String(format: "%02x", $0) }.joined(),
            "accessor": "\(mount.type.vaultType)_\(mount.id.prefix(4).map { String(format: "%02x", $0) }.joined())",
            "config": ["default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false] as [String: Any],
        ]
    }

    /// RFC 7386 JSON merge patch of two objects (a null in the patch removes the key).
    static func mergePatch(_ target: Bytes, _ patch: Bytes) throws -> Bytes {
        func merge(_ target: Any?, _ patch: Any) -> Any {
            guard let patchObject = patch as? [String: Any] else { return patch }
            var result = target as? [String: Any] ?? [:]
            for (key, value) in patchObject {
                if value is NSNull { result[key] = nil } else { result[key] = merge(result[key], value) }
            }
            return result
        }
        let original = try JSONSerialization.jsonObject(with: Data(target), options: [.fragmentsAllowed])
        let change = try JSONSerialization.jsonObject(with: Data(patch), options: [.fragmentsAllowed])
        return SecretsJSON.encode(merge(original, change))
    }
}
