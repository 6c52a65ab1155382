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

    // pki and transit
    case pki(MountRecord, PKICall)
    case transit(MountRecord, TransitCall)

    /// The mount the operation works in, if any.
    public var mount: MountRecord? {
        switch self {
        case .kvRead(let mount, _, _), .kvWrite(let mount, _, _, _), .kvPatch(let mount, _, _, _), .kvVersions(let mount, _, _, _),
            .kvMetadata(let mount, _), .kvMetadataWrite(let mount, _, _, _), .kvMetadataDelete(let mount, _), .kvList(let mount, _),
            .kvConfig(let mount), .kvConfigWrite(let mount, _), .pki(let mount, _),
            .transit(let mount, _):
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
        case .pki: return .pki(mount, try pki(method, inside, request))
        case .transit: return .transit(mount, try transit(method, inside, request))
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

    func pki(_ method: String, _ inside: String, _ request: VaultRequest) throws(SecretsError) -> PKICall {
        func body() throws(SecretsError) -> [String: Any] { try SecretsJSON.object(request.body, limits: limits) }
        func string(_ object: [String: Any], _ field: String) throws(SecretsError) -> String { try SecretsJSON.string(object[field], field) ?? "" }
        func list(_ object: [String: Any], _ field: String) throws(SecretsError) -> [String] {
            if let array = object[field] as? [Any] { return array.compactMap { $0 as? String }.filter { !$0.isEmpty } }
            return try string(object, field).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        func duration(_ object: [String: Any], _ field: String) throws(SecretsError) -> Duration? {
            try GoDuration.parseMs(object[field], field).map { Duration.milliseconds($0) }
        }
        func keyType(_ object: [String: Any], default value: PKIKeyType) throws(SecretsError) -> PKIKeyType {
            let name = try string(object, "key_type")
            if name.isEmpty { return value }
            guard let type = PKIKeyType(rawValue: name) else { throw .badRequest("unknown key_type \(name) (rsa, ec, ed25519)") }
            return type
        }
        func bits(_ object: [String: Any]) throws(SecretsError) -> Int { Int(clamping: try SecretsJSON.int(object["key_bits"], "key_bits") ?? 0) }
        func pathLength(_ object: [String: Any]) throws(SecretsError) -> Int? {
            guard let value = try SecretsJSON.int(object["max_path_length"], "max_path_length"), value >= 0 else { return nil }
            return Int(clamping: value)
        }
        func validName(_ name: String) throws(SecretsError) -> String {
            guard !name.isEmpty, name.utf8.count <= limits.secretPathBytesMax, !name.contains("/") else { throw .badRequest("invalid role name '\(name)'") }
            return name
        }
        let slash = inside.firstIndex(of: "/")
        let head = slash.map { String(inside[..<$0]) } ?? inside
        let name = slash.map { String(inside[inside.index(after: $0)...]) } ?? ""
        switch (method, inside) {
        case ("POST", "root/generate/internal"), ("POST", "root/generate/exported"):
            let object = try body()
            return .generateRoot(
                commonName: try string(object, "common_name"), keyType: try keyType(object, default: .rsa), keyBits: try bits(object),
                ttl: try duration(object, "ttl") ?? .seconds(365 * 86_400), maxPathLength: try pathLength(object))
        case ("POST", "intermediate/generate/internal"), ("POST", "intermediate/generate/exported"):
            let object = try body()
            return .generateIntermediate(commonName: try string(object, "common_name"), keyType: try keyType(object, default: .rsa), keyBits: try bits(object))
        case ("POST", "root/sign-intermediate"):
            let object = try body()
            return .signIntermediate(
                csr: try string(object, "csr"), commonName: try string(object, "common_name"), ttl: try duration(object, "ttl") ?? .seconds(365 * 86_400),
                maxPathLength: try pathLength(object))
        case ("POST", "intermediate/set-signed"): return .setSigned(certificate: try string(try body(), "certificate"))
        case ("LIST", "roles"), ("LIST", "roles/"): return .roles
        case ("GET", _) where head == "roles": return .roleRead(name: try validName(name))
        case ("DELETE", _) where head == "roles": return .roleDelete(name: try validName(name))
        case ("POST", _) where head == "roles":
            let object = try body()
            var role = PKIRole()
            role.allowedDomains = try list(object, "allowed_domains")
            func flag(_ field: String, _ keyPath: WritableKeyPath<PKIRole, Bool>) throws(SecretsError) {
                if let value = try SecretsJSON.bool(object[field], field) { role[keyPath: keyPath] = value }
            }
            try flag("allow_localhost", \.allowLocalhost)
            try flag("allow_bare_domains", \.allowBareDomains)
            try flag("allow_subdomains", \.allowSubdomains)
            try flag("allow_glob_domains", \.allowGlobDomains)
            try flag("allow_wildcard_certificates", \.allowWildcardCertificates)
            try flag("allow_any_name", \.allowAnyName)
            try flag("enforce_hostnames", \.enforceHostnames)
            try flag("allow_ip_sans", \.allowIPSANs)
            try flag("server_flag", \.serverFlag)
            try flag("client_flag", \.clientFlag)
            try flag("use_csr_common_name", \.useCSRCommonName)
            try flag("use_csr_sans", \.useCSRSANs)
            try flag("require_cn", \.requireCN)
            role.keyType = try keyType(object, default: .rsa)
            role.keyBits = try bits(object)
            role.ttl = try duration(object, "ttl")
            role.maxTTL = try duration(object, "max_ttl")
            if object["key_usage"] != nil { role.keyUsage = try list(object, "key_usage") }
            if object["ext_key_usage"] != nil { role.extKeyUsage = try list(object, "ext_key_usage") }
            return .roleWrite(name: try validName(name), role)
        case ("POST", _) where head == "issue":
            let object = try body()
            let format = try string(object, "private_key_format")
            return .issue(
                role: try validName(name), commonName: try string(object, "common_name"), altNames: try list(object, "alt_names"),
                ipSANs: try list(object, "ip_sans"), ttl: try duration(object, "ttl"), format: format == "pkcs8" ? .pkcs8 : .pem)
        case ("POST", _) where head == "sign":
            let object = try body()
            return .sign(
                role: try validName(name), csr: try string(object, "csr"), commonName: try string(object, "common_name"),
                altNames: try list(object, "alt_names"), ipSANs: try list(object, "ip_sans"), ttl: try duration(object, "ttl"))
        case ("POST", "revoke"): return .revoke(serial: try string(try body(), "serial_number"))
        case ("GET", "ca"): return .caCertificate(.der)
        case ("GET", "ca/pem"), ("GET", "ca_chain"): return .caCertificate(.pem)
        case ("GET", "cert/ca"): return .caCertificate(.json)
        case ("GET", "crl"): return .crl(.der)
        case ("GET", "crl/pem"): return .crl(.pem)
        case ("GET", "cert/crl"): return .crl(.json)
        case ("GET", "crl/rotate"): return .rotateCRL
        case ("LIST", "certs"), ("LIST", "certs/"): return .certificates
        case ("GET", _) where head == "cert": return .certificate(serial: name)
        default: throw .unsupported("unsupported operation \(method) on pki path \(inside)")
        }
    }

    func transit(_ method: String, _ inside: String, _ request: VaultRequest) throws(SecretsError) -> TransitCall {
        let parts = inside.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let head = parts.first else { throw .unsupported("unsupported transit path") }
        func body() throws(SecretsError) -> [String: Any] { try SecretsJSON.object(request.body, limits: limits) }
        func name(_ index: Int) throws(SecretsError) -> String {
            guard parts.count > index, !parts[index].isEmpty, parts[index].utf8.count <= limits.secretPathBytesMax else {
                throw .badRequest("missing or invalid key name")
            }
            return parts[index]
        }
        func base64(_ object: [String: Any], _ field: String) throws(SecretsError) -> Bytes? {
            guard let text = try SecretsJSON.string(object[field], field), !text.isEmpty else { return nil }
            guard text.utf8.count <= limits.transitPlaintextBytesMax * 4 / 3 + 8 else {
                throw .tooLarge("\(field) exceeds transitPlaintextBytesMax (\(limits.transitPlaintextBytesMax) bytes)")
            }
            return try TransitBase64.decode(validating: text)
        }
        func item(_ object: [String: Any]) throws(SecretsError) -> TransitItem {
            var item = TransitItem()
            item.plaintext = try base64(object, "plaintext")
            item.ciphertext = try SecretsJSON.string(object["ciphertext"], "ciphertext")
            item.input = try base64(object, "input")
            item.signature = try SecretsJSON.string(object["signature"], "signature")
            item.context = try base64(object, "context")
            item.associatedData = try base64(object, "associated_data")
            item.keyVersion = try SecretsJSON.int(object["key_version"], "key_version").map { Int(clamping: $0) }
            return item
        }
        /// The request's items: its `batch_input`, or itself.
        func items(_ object: [String: Any]) throws(SecretsError) -> (items: [TransitItem], batch: Bool) {
            guard let batch = object["batch_input"], !(batch is NSNull) else { return ([try item(object)], false) }
            guard let list = batch as? [Any] else { throw .badRequest("batch_input must be a list") }
            guard list.count <= limits.transitBatchMax else {
                throw .badRequest("batch_input has \(list.count) items; at most transitBatchMax (\(limits.transitBatchMax))")
            }
            var result: [TransitItem] = []
            for entry in list {
                guard let object = entry as? [String: Any] else { throw .badRequest("each batch_input item must be an object") }
                result.append(try item(object))
            }
            let withContext = result.filter { $0.context != nil }.count
            if withContext != 0 && withContext != result.count { throw .badRequest("context should be set either in all the request blocks or in none") }
            return (result, true)
        }
        func signing(_ object: [String: Any], hashInPath: String?) throws(SecretsError) -> TransitSigning {
            var options = TransitSigning()
            let named = try SecretsJSON.string(object["hash_algorithm"], "hash_algorithm")
            if let hash = hashInPath ?? named, !hash.isEmpty {
                options.hash = try TransitHashAlgorithm(vaultName: hash)
            }
            if let algorithm = try SecretsJSON.string(object["signature_algorithm"], "signature_algorithm"), !algorithm.isEmpty {
                options.algorithm = try TransitSignatureAlgorithm(vaultName: algorithm)
            }
            if let salt = try SecretsJSON.string(object["salt_length"], "salt_length"), !salt.isEmpty { options.saltLength = try TransitSaltLength(vaultValue: salt) }
            options.prehashed = try SecretsJSON.bool(object["prehashed"], "prehashed") ?? false
            if let marshaling = try SecretsJSON.string(object["marshaling_algorithm"], "marshaling_algorithm"), !marshaling.isEmpty {
                options.marshaling = try TransitMarshaling(vaultName: marshaling)
            }
            return options
        }
        func autoRotate(_ object: [String: Any]) throws(SecretsError) -> Int64? { try GoDuration.parseMs(object["auto_rotate_period"], "auto_rotate_period") }
        switch (method, head) {
        case ("LIST", "keys") where parts.count == 1 || (parts.count == 2 && parts[1].isEmpty): return .list
        case ("POST", "keys") where parts.count == 2:
            let object = try body()
            let typeName = try SecretsJSON.string(object["type"], "type") ?? ""
            return .create(
                name: try name(1), type: typeName.isEmpty ? .aes256GCM96 : try TransitKeyType(vaultName: typeName),
                derived: try SecretsJSON.bool(object["derived"], "derived") ?? false,
                convergent: try SecretsJSON.bool(object["convergent_encryption"], "convergent_encryption") ?? false,
                exportable: try SecretsJSON.bool(object["exportable"], "exportable") ?? false,
                allowPlaintextBackup: try SecretsJSON.bool(object["allow_plaintext_backup"], "allow_plaintext_backup") ?? false,
                autoRotateMs: try autoRotate(object) ?? 0)
        case ("GET", "keys") where parts.count == 2: return .read(name: try name(1))
        case ("DELETE", "keys") where parts.count == 2: return .delete(name: try name(1))
        case ("POST", "keys") where parts.count == 3 && parts[2] == "config":
            let object = try body()
            return .configure(
                name: try name(1), minDecryption: try SecretsJSON.int(object["min_decryption_version"], "min_decryption_version").map { Int(clamping: $0) },
                minEncryption: try SecretsJSON.int(object["min_encryption_version"], "min_encryption_version").map { Int(clamping: $0) },
                deletionAllowed: try SecretsJSON.bool(object["deletion_allowed"], "deletion_allowed"),
                exportable: try SecretsJSON.bool(object["exportable"], "exportable"),
                allowPlaintextBackup: try SecretsJSON.bool(object["allow_plaintext_backup"], "allow_plaintext_backup"), autoRotateMs: try autoRotate(object))
        case ("POST", "keys") where parts.count == 3 && parts[2] == "rotate": return .rotate(name: try name(1))
        case ("POST", "keys") where parts.count == 3 && parts[2] == "trim":
            let minimum = try SecretsJSON.int(try body()["min_available_version"], "min_available_version") ?? 0
            return .trim(name: try name(1), minAvailable: Int(clamping: minimum))
        case ("GET", "keys") where parts.count == 3 && parts[2] == "inventory":
            return .inventory(name: try name(1), prefix: Array((request.query["prefix"] ?? "").utf8))
        case ("POST", "keys") where parts.count == 3 && parts[2] == "rewrap-prefix":
            let object = try body()
            return .rewrapPrefix(
                name: try name(1), prefix: Array((try SecretsJSON.string(object["prefix"], "prefix") ?? "").utf8),
                background: try SecretsJSON.bool(object["background"], "background") ?? false)
        case ("POST", "encrypt") where parts.count == 2:
            let object = try body()
            let (list, batch) = try items(object)
            let typeName = try SecretsJSON.string(object["type"], "type") ?? ""
            return .encrypt(name: try name(1), list, batch: batch, type: typeName.isEmpty ? nil : try TransitKeyType(vaultName: typeName))
        case ("POST", "decrypt") where parts.count == 2:
            let (list, batch) = try items(try body())
            return .decrypt(name: try name(1), list, batch: batch)
        case ("POST", "rewrap") where parts.count == 2:
            let (list, batch) = try items(try body())
            return .rewrap(name: try name(1), list, batch: batch)
        case ("POST", "datakey") where parts.count == 3:
            guard parts[1] == "plaintext" || parts[1] == "wrapped" else { throw .badRequest("invalid type \(parts[1]): plaintext or wrapped") }
            let object = try body()
            let bits = try SecretsJSON.int(object["bits"], "bits") ?? 256
            return .dataKey(name: try name(2), plaintext: parts[1] == "plaintext", bits: Int(clamping: bits), try item(object))
        case ("POST", "sign") where parts.count == 2 || parts.count == 3, ("POST", "verify") where parts.count == 2 || parts.count == 3:
            let object = try body()
            let (list, batch) = try items(object)
            let options = try signing(object, hashInPath: parts.count == 3 ? parts[2] : nil)
            return head == "sign" ? .sign(name: try name(1), list, batch: batch, options) : .verify(name: try name(1), list, batch: batch, options)
        case ("GET", "export") where parts.count == 3 || parts.count == 4:
            return .export(name: try name(2), try TransitExportType(vaultName: parts[1]), version: parts.count == 4 ? parts[3] : nil)
        default:
            throw .unsupported("unsupported operation \(method) on transit path \(inside)")
        }
    }
}
