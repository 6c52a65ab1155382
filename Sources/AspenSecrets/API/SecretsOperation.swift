import AspenCore
import AspenKV
import Foundation

/// Every request the Vault API serves, decided from its method and path (`SecretsRouter`).
/// The node maps each case to the capability it needs in one exhaustive switch.
public enum SecretsOperation: Sendable {
    // sys and auth
    case health
    case sealStatus
    case lookupSelf
    case mounts
    case mountRead(path: String)
    case mountEnable(path: String, type: SecretsEngineType, description: String, kv: KV2Config)
    case mountDisable(path: String)
    case mountTune(path: String, description: String?)

    // kv-v2 (`path`: the secret's path inside the mount)
    case kvRead(MountRecord, path: String, version: Int64?)
    case kvWrite(MountRecord, path: String, data: Bytes, cas: Int64?)
    case kvPatch(MountRecord, path: String, patch: Bytes, cas: Int64?)
    case kvVersions(MountRecord, KV2Engine.VersionAction, path: String, versions: [Int64])
    case kvMetadata(MountRecord, path: String)
    case kvMetadataWrite(MountRecord, path: String, KV2Engine.MetadataUpdate, patch: Bool)
    case kvMetadataDelete(MountRecord, path: String)
    case kvList(MountRecord, prefix: String)
    case kvConfig(MountRecord)
    case kvConfigWrite(MountRecord, KV2Config)

    /// The mount the operation works in, if any.
    public var mount: MountRecord? {
        switch self {
        case .kvRead(let mount, _, _), .kvWrite(let mount, _, _, _), .kvPatch(let mount, _, _, _), .kvVersions(let mount, _, _, _),
            .kvMetadata(let mount, _), .kvMetadataWrite(let mount, _, _, _), .kvMetadataDelete(let mount, _), .kvList(let mount, _),
            .kvConfig(let mount), .kvConfigWrite(let mount, _):
            return mount
        case .health, .sealStatus, .lookupSelf, .mounts, .mountRead, .mountEnable, .mountDisable, .mountTune:
            return nil
        }
    }
}

/// Decides a request's operation: the mount is the longest mounted path the request's path
/// starts with (at a `/`); the rest of the path names the endpoint inside the engine.
public struct SecretsRouter: Sendable {
    public let mounts: [MountRecord]
    public let limits: Limits

    public init(mounts: [MountRecord], limits: Limits) {
        self.mounts = mounts.sorted { $0.path.count > $1.path.count }
        self.limits = limits
    }

    public func route(_ request: VaultRequest) throws(SecretsError) -> SecretsOperation {
        var method = request.method
        if method == "GET", let list = request.query["list"], (try? SecretsJSON.bool(list, "list")) == true { method = "LIST" }
        if method == "PUT" { method = "POST" }
        let path = request.path.hasSuffix("/") && method != "LIST" ? String(request.path.dropLast()) : request.path
        if path == "sys/health" || path == "sys/seal-status" || path == "auth/token/lookup-self" || path == "sys/mounts" || path.hasPrefix("sys/mounts/") {
            return try system(method, path, request)
        }
        guard let mount = mounts.first(where: { path == $0.path || path.hasPrefix($0.path + "/") }) else {
            throw .notFound("no handler for route '\(request.path)'. route entry not found.")
        }
        let inside = String(path.dropFirst(mount.path.count).drop { $0 == "/" })
        switch mount.type {
        case .kv2: return try kv(method, mount, inside, request)
        case .transit, .pki: throw .unsupported("the \(mount.type.rawValue) engine is not served yet")
        }
    }

    func system(_ method: String, _ path: String, _ request: VaultRequest) throws(SecretsError) -> SecretsOperation {
        switch (method, path) {
        case ("GET", "sys/health"), ("HEAD", "sys/health"): return .health
        case ("GET", "sys/seal-status"): return .sealStatus
        case ("GET", "auth/token/lookup-self"), ("POST", "auth/token/lookup-self"): return .lookupSelf
        case ("GET", "sys/mounts"): return .mounts
        default: break
        }
        var mountPath = String(path.dropFirst("sys/mounts/".count))
        let tune = mountPath.hasSuffix("/tune")
        if tune { mountPath.removeLast("/tune".count) }
        while mountPath.hasSuffix("/") { mountPath.removeLast() }
        try MountRecord.validate(path: mountPath, limits: limits)
        switch (method, tune) {
        case ("GET", false): return .mountRead(path: mountPath)
        case ("DELETE", false): return .mountDisable(path: mountPath)
        case ("POST", false):
            let body = try SecretsJSON.object(request.body, limits: limits)
            let typeName = try SecretsJSON.string(body["type"], "type") ?? ""
            let options = body["options"] as? [String: Any] ?? [:]
            let version = try SecretsJSON.string(options["version"], "options.version")
            let type: SecretsEngineType
            switch typeName {
            case "kv-v2": type = .kv2
            case "kv":
                guard version == "2" else { throw .badRequest("only version 2 of the kv engine is served: pass options.version=2 (or type kv-v2)") }
                type = .kv2
            case "transit": type = .transit
            case "pki": type = .pki
            case "": throw .badRequest("the mount's type is missing (kv-v2, transit or pki)")
            default: throw .badRequest("plugin not found in the catalog: \(typeName) (this cluster serves kv-v2, transit and pki)")
            }
            return .mountEnable(path: mountPath, type: type, description: try description(body) ?? "", kv: KV2Config())
        case ("GET", true): return .mountRead(path: mountPath)
        case ("POST", true):
            let body = try SecretsJSON.object(request.body, limits: limits)
            return .mountTune(path: mountPath, description: try description(body))
        default: throw .unsupported("unsupported operation \(method) on \(path)")
        }
    }

    func description(_ body: [String: Any]) throws(SecretsError) -> String? {
        guard let text = try SecretsJSON.string(body["description"], "description") else { return nil }
        guard text.utf8.count <= limits.secretsMountDescriptionBytesMax else {
            throw .badRequest("a description of \(text.utf8.count) bytes exceeds secretsMountDescriptionBytesMax (\(limits.secretsMountDescriptionBytesMax))")
        }
        return text
    }

    func kv(_ method: String, _ mount: MountRecord, _ inside: String, _ request: VaultRequest) throws(SecretsError) -> SecretsOperation {
        let slash = inside.firstIndex(of: "/")
        let endpoint = slash.map { String(inside[..<$0]) } ?? inside
        let path = slash.map { String(inside[inside.index(after: $0)...]) } ?? ""
        func object() throws(SecretsError) -> [String: Any] { try SecretsJSON.object(request.body, limits: limits) }
        func needPath() throws(SecretsError) {
            if path.isEmpty { throw .badRequest("missing path") }
        }
        switch (endpoint, method) {
        case ("config", "GET"): return .kvConfig(mount)
        case ("config", "POST"):
            let body = try object()
            var config = mount.kv
            if let value = try SecretsJSON.int(body["max_versions"], "max_versions") {
                guard value >= 0, value <= Int64(limits.secretVersionsMax) else {
                    throw .badRequest("max_versions must be 0 to \(limits.secretVersionsMax) (secretVersionsMax)")
                }
                config.maxVersions = Int(value)
            }
            if let value = try SecretsJSON.bool(body["cas_required"], "cas_required") { config.casRequired = value }
            if let value = try GoDuration.parseMs(body["delete_version_after"], "delete_version_after") { config.deleteVersionAfterMs = max(0, value) }
            return .kvConfigWrite(mount, config)
        case ("data", "GET"):
            try needPath()
            return .kvRead(mount, path: path, version: try SecretsJSON.int(request.query["version"], "version"))
        case ("data", "POST"), ("data", "PATCH"):
            try needPath()
            let body = try object()
            guard let data = body["data"], data is [String: Any] else {
                throw .badRequest(method == "PATCH" ? "no data provided" : "no data provided: the body needs a \"data\" object")
            }
            let options = body["options"] as? [String: Any] ?? [:]
            let cas = try SecretsJSON.int(options["cas"], "cas")
            let encoded = SecretsJSON.encode(data)
            return method == "PATCH" ? .kvPatch(mount, path: path, patch: encoded, cas: cas) : .kvWrite(mount, path: path, data: encoded, cas: cas)
        case ("data", "DELETE"):
            try needPath()
            return .kvVersions(mount, .delete, path: path, versions: [])
        case ("delete", "POST"), ("undelete", "POST"), ("destroy", "POST"):
            try needPath()
            let versions = try SecretsJSON.ints(try object()["versions"], "versions")
            guard !versions.isEmpty else { throw .badRequest("no version number provided") }
            let action: KV2Engine.VersionAction = endpoint == "delete" ? .delete : endpoint == "undelete" ? .undelete : .destroy
            return .kvVersions(mount, action, path: path, versions: versions)
        case ("metadata", "LIST"):
            var prefix = path
            if !prefix.isEmpty, !prefix.hasSuffix("/") { prefix += "/" }
            return .kvList(mount, prefix: prefix)
        case ("metadata", "GET"):
            try needPath()
            return .kvMetadata(mount, path: path)
        case ("metadata", "POST"), ("metadata", "PATCH"):
            try needPath()
            let body = try object()
            var update = KV2Engine.MetadataUpdate()
            if let value = try SecretsJSON.int(body["max_versions"], "max_versions") { update.maxVersions = Int(clamping: value) }
            update.casRequired = try SecretsJSON.bool(body["cas_required"], "cas_required")
            update.deleteVersionAfterMs = try GoDuration.parseMs(body["delete_version_after"], "delete_version_after").map { max(0, $0) }
            if let custom = body["custom_metadata"], !(custom is NSNull) {
                guard let dictionary = custom as? [String: Any] else { throw .badRequest("custom_metadata must be an object of strings") }
                var strings: [String: String] = [:]
                for (key, value) in dictionary {
                    guard let string = value as? String else { throw .badRequest("custom_metadata value of '\(key)' must be a string") }
                    strings[key] = string
                }
                update.customMetadata = strings
            }
            return .kvMetadataWrite(mount, path: path, update, patch: method == "PATCH")
        case ("metadata", "DELETE"):
            try needPath()
            return .kvMetadataDelete(mount, path: path)
        default:
            throw .unsupported("unsupported operation \(method) on \(mount.path)/\(inside)")
        }
    }
}
