import AspenCore
import AspenKV
import AspenLayer
import Foundation

/// One item of a transit request (the request itself, or one of its `batch_input`).
public struct TransitItem: Sendable {
    public var plaintext: Bytes?
    public var ciphertext: String?
    public var input: Bytes?
    public var signature: String?
    public var context: Bytes?
    public var associatedData: Bytes?
    public var keyVersion: Int?
}

/// Options of a sign or verify request.
public struct TransitSigning: Sendable {
    public var hash: TransitHashAlgorithm = .sha256
    public var algorithm: TransitSignatureAlgorithm = .pss
    public var saltLength: TransitSaltLength = .auto
    public var prehashed = false
    public var marshaling: TransitMarshaling = .asn1
}

/// The transit engine's calls (Vault's `transit` paths), decided by the router.
public enum TransitCall: Sendable {
    case create(name: String, type: TransitKeyType, derived: Bool, convergent: Bool, exportable: Bool, allowPlaintextBackup: Bool, autoRotateMs: Int64)
    case read(name: String)
    case list
    case delete(name: String)
    case configure(name: String, minDecryption: Int?, minEncryption: Int?, deletionAllowed: Bool?, exportable: Bool?, allowPlaintextBackup: Bool?, autoRotateMs: Int64?)
    case rotate(name: String)
    case trim(name: String, minAvailable: Int)
    case encrypt(name: String, [TransitItem], batch: Bool, type: TransitKeyType?)
    case decrypt(name: String, [TransitItem], batch: Bool)
    case rewrap(name: String, [TransitItem], batch: Bool)
    case dataKey(name: String, plaintext: Bool, bits: Int, TransitItem)
    case sign(name: String, [TransitItem], batch: Bool, TransitSigning)
    case verify(name: String, [TransitItem], batch: Bool, TransitSigning)
    case export(name: String, TransitExportType, version: String?)
    /// Beyond Vault: how many values under a key-value prefix are this key's ciphertexts of each version.
    case inventory(name: String, prefix: Bytes)
    /// Beyond Vault: rewraps every value under a prefix that is an older version's ciphertext
    /// (`background`: as a job on the job system, answered with its id).
    case rewrapPrefix(name: String, prefix: Bytes, background: Bool)

    public var keyName: String? {
        switch self {
        case .list: nil
        case .create(let name, _, _, _, _, _, _), .read(let name), .delete(let name), .configure(let name, _, _, _, _, _, _), .rotate(let name),
            .trim(let name, _), .encrypt(let name, _, _, _), .decrypt(let name, _, _), .rewrap(let name, _, _), .dataKey(let name, _, _, _),
            .sign(let name, _, _, _), .verify(let name, _, _, _), .export(let name, _, _), .inventory(let name, _), .rewrapPrefix(let name, _, _):
            name
        }
    }
}

/// Transit over a `KeyValueStore`: each named key one record, sealed like every secret;
/// every operation reads it (linearizably) and runs `TransitKey`'s pure code; a change is one
/// transaction comparing the record's revision.
public struct TransitEngine: MountEngine {
    public let context: MountContext

    public init(_ context: MountContext) { self.context = context }

    var keys: Subspace { space.subspace(["key"]) }
    func storageKey(_ name: String) -> Bytes { keys.pack([.string(name)]) }

    func load(_ name: String) async throws -> (TransitKey, KeyValue)? {
        guard let entry = try await store.get(storageKey(name)) else { return nil }
        return (try TransitKey(decoding: try key.open(entry.value, storageKey: entry.key), limits: limits), entry)
    }

    func existing(_ name: String) async throws -> TransitKey {
        guard let (found, _) = try await load(name) else { throw SecretsError.badRequest("encryption key not found") }
        return found
    }

    /// Writes `transitKey` if its record is still `previous` (nil: absent) and the mount unchanged.
    func save(_ transitKey: TransitKey, replacing previous: KeyValue?) async throws {
        let storage = storageKey(transitKey.name)
        let compare = previous.map { Compare(key: storage, .modRevision($0.modRevision)) } ?? Compare.absent(storage)
        let result = try await store.transaction(
            Transaction(compares: [compare, context.mountHolds], success: [.put(Put(key: storage, value: key.seal(transitKey.encoded(), storageKey: storage)))]))
        guard result.succeeded else { throw SecretsError.unavailable("transit key \(transitKey.name) changed during this request; try again") }
    }

    func change(_ name: String, _ body: (inout TransitKey) throws(SecretsError) -> Void) async throws {
        guard let (current, entry) = try await load(name) else { throw SecretsError.badRequest("encryption key not found") }
        var next = current
        try body(&next)
        try await save(next, replacing: entry)
    }

    public func run(_ call: TransitCall) async throws -> VaultResponse {
        switch call {
        case .create(let name, let type, let derived, let convergent, let exportable, let backup, let autoRotateMs):
            if try await load(name) != nil { return .noContent }  // Vault: creating an existing key changes nothing
            try await checkRoom()
            let created = try TransitKey.create(
                name: name, type: type, derived: derived, convergentEncryption: convergent, exportable: exportable,
                allowPlaintextBackup: backup, autoRotatePeriodMs: autoRotateMs, nowMs: nowMs(), limits: limits)
            try await save(created, replacing: nil)
            return .data(try Self.json(created))
        case .read(let name):
            guard let (found, _) = try await load(name) else { return .notFound }
            return .data(try Self.json(found))
        case .list:
            var names: [String] = []
            let page = try await store.read(RangeRequest(.prefix(keys.prefix), limit: limits.transitKeysMax, keysOnly: true), consistency: .linearizable)
            for entry in page.kvs { if let tuple = try? keys.unpack(entry.key), case .string(let name)? = tuple.elements.first { names.append(name) } }
            return names.isEmpty ? .notFound : .data(["keys": names])
        case .delete(let name):
            guard let (found, entry) = try await load(name) else { return .noContent }
            guard found.deletionAllowed else { throw SecretsError.badRequest("deletion is not allowed for this key") }
            let result = try await store.transaction(
                Transaction(compares: [Compare(key: entry.key, .modRevision(entry.modRevision))], success: [.delete(Delete(.key(entry.key)))]))
            guard result.succeeded else { throw SecretsError.unavailable("transit key \(name) changed during this request; try again") }
            return .noContent
        case .configure(let name, let minDecryption, let minEncryption, let deletionAllowed, let exportable, let backup, let autoRotateMs):
            var warnings: [String] = []
            try await change(name) { key throws(SecretsError) in
                warnings = try key.configure(
                    minDecryptionVersion: minDecryption, minEncryptionVersion: minEncryption, deletionAllowed: deletionAllowed,
                    exportable: exportable, allowPlaintextBackup: backup, autoRotatePeriodMs: autoRotateMs)
            }
            return warnings.isEmpty ? .noContent : .data(try Self.json(try await existing(name)), warnings: warnings)
        case .rotate(let name):
            let now = nowMs()
            let limits = self.limits
            try await change(name) { key throws(SecretsError) in try key.rotate(nowMs: now, limits: limits) }
            return .data(try Self.json(try await existing(name)))
        case .trim(let name, let minAvailable):
            try await change(name) { key throws(SecretsError) in try key.trim(minAvailableVersion: minAvailable) }
            return .noContent
        case .encrypt(let name, let items, let batch, _):
            // Vault creates a missing key here when the caller may also create keys; a key
            // must be created first here (transit-encrypt alone never makes one).
            let transitKey = try await existing(name)
            return try Self.answer(items, batch: batch) { item, index throws(SecretsError) in
                let ciphertext = try transitKey.encrypt(
                    plaintext: item.plaintext ?? [], context: item.context, associatedData: item.associatedData, keyVersion: item.keyVersion,
                    batchIndex: index)
                return ["ciphertext": ciphertext, "key_version": TransitKey.versionOf(ciphertext: ciphertext) ?? 0]
            }
        case .decrypt(let name, let items, let batch):
            let transitKey = try await existing(name)
            return try Self.answer(items, batch: batch) { item, index throws(SecretsError) in
                let plaintext = try transitKey.decrypt(
                    ciphertext: item.ciphertext ?? "", context: item.context, associatedData: item.associatedData, batchIndex: index)
                return ["plaintext": TransitBase64.encode(plaintext)]
            }
        case .rewrap(let name, let items, let batch):
            let transitKey = try await existing(name)
            return try Self.answer(items, batch: batch) { item, index throws(SecretsError) in
                let ciphertext = try transitKey.rewrap(
                    ciphertext: item.ciphertext ?? "", context: item.context, associatedData: item.associatedData, keyVersion: item.keyVersion,
                    batchIndex: index)
                return ["ciphertext": ciphertext, "key_version": TransitKey.versionOf(ciphertext: ciphertext) ?? 0]
            }
        case .dataKey(let name, let plaintext, let bits, let item):
            let transitKey = try await existing(name)
            let made = try transitKey.dataKey(
                plaintext: plaintext, bits: bits, context: item.context, associatedData: item.associatedData, keyVersion: item.keyVersion)
            var data: [String: Any] = ["ciphertext": made.ciphertext, "key_version": made.keyVersion]
            if let key = made.plaintext { data["plaintext"] = TransitBase64.encode(key) }
            return .data(data)
        case .sign(let name, let items, let batch, let options):
            let transitKey = try await existing(name)
            return try Self.answer(items, batch: batch) { item, _ throws(SecretsError) in
                let signed = try transitKey.sign(
                    input: item.input ?? [], context: item.context, keyVersion: item.keyVersion, hashAlgorithm: options.hash,
                    signatureAlgorithm: options.algorithm, saltLength: options.saltLength, prehashed: options.prehashed, marshaling: options.marshaling)
                var data: [String: Any] = ["signature": signed.signature, "key_version": signed.keyVersion]
                if let publicKey = signed.publicKey { data["publickey"] = TransitBase64.encode(publicKey) }
                return data
            }
        case .verify(let name, let items, let batch, let options):
            let transitKey = try await existing(name)
            return try Self.answer(items, batch: batch) { item, _ throws(SecretsError) in
                let valid = try transitKey.verify(
                    input: item.input ?? [], signature: item.signature ?? "", context: item.context, hashAlgorithm: options.hash,
                    signatureAlgorithm: options.algorithm, saltLength: options.saltLength, prehashed: options.prehashed, marshaling: options.marshaling)
                return ["valid": valid]
            }
        case .export(let name, let type, let version):
            let transitKey = try await existing(name)
            let exported = try transitKey.exportKey(type: type, version: version)
            return .data([
                "name": name, "type": transitKey.type.vaultName,
                "keys": Dictionary(uniqueKeysWithValues: exported.map { (String($0.key), $0.value) }),
            ])
        case .inventory(let name, let prefix):
            let transitKey = try await existing(name)
            var counts: [Int: Int] = [:]
            var scanned = 0
            try await scan(prefix) { entry in
                scanned += 1
                if let version = TransitKey.versionOf(ciphertext: String(decoding: entry.value, as: UTF8.self)) { counts[version, default: 0] += 1 }
            }
            return .data([
                "name": name, "latest_version": transitKey.latestVersion, "min_decryption_version": transitKey.minDecryptionVersion,
                "keys_scanned": scanned, "versions": Dictionary(uniqueKeysWithValues: counts.map { (String($0.key), $0.value) }),
                "behind_latest": counts.filter { $0.key < transitKey.latestVersion }.values.reduce(0, +),
            ])
        case .rewrapPrefix(let name, let prefix, _):
            let transitKey = try await existing(name)
            var rewrapped = 0
            var skipped = 0
            var failed: [String] = []
            try await scan(prefix) { entry in
                let text = String(decoding: entry.value, as: UTF8.self)
                guard let version = TransitKey.versionOf(ciphertext: text), version < transitKey.latestVersion else { return }
                do {
                    let fresh = try transitKey.rewrap(ciphertext: text)
                    // Only if the value is still the one read: a concurrent writer's value is left alone.
                    let result = try await store.transaction(
                        Transaction(compares: [Compare(key: entry.key, .modRevision(entry.modRevision))], success: [.put(Put(key: entry.key, value: Array(fresh.utf8), ignoreLease: true))]))
                    if result.succeeded { rewrapped += 1 } else { skipped += 1 }
                } catch let error as SecretsError {
                    if failed.count < 10 { failed.append("\(String(decoding: entry.key, as: UTF8.self)): \(error.message)") }
                }
            }
            return .data(["rewrapped": rewrapped, "changed_meanwhile": skipped, "failed": failed, "latest_version": transitKey.latestVersion])
        }
    }

    /// Every key-value entry under `prefix` (outside the secrets' own subspace), page by page,
    /// at most `secretsListKeysMax` of them per request.
    func scan(_ prefix: Bytes, _ body: (KeyValue) async throws -> Void) async throws {
        var cursor: Bytes? = nil
        var seen = 0
        repeat {
            let page = try await store.read(RangeRequest(.prefix(prefix), limit: 1000, continuation: cursor), consistency: .linearizable)
            for entry in page.kvs where !entry.key.starts(with: SecretsKeys.space.prefix) {
                seen += 1
                guard seen <= limits.secretsListKeysMax else {
                    throw SecretsError.tooLarge("more than secretsListKeysMax (\(limits.secretsListKeysMax)) keys under the prefix; name a narrower one")
                }
                try await body(entry)
            }
            cursor = page.more ? page.continuation : nil
        } while cursor != nil
    }

    func checkRoom() async throws {
        let count = try await store.read(RangeRequest(.prefix(keys.prefix), countOnly: true), consistency: .linearizable).count
        guard count < limits.transitKeysMax else {
            throw SecretsError.badRequest("the mount holds \(count) keys, the most transitKeysMax (\(limits.transitKeysMax)) allows")
        }
    }

    /// One answer, or Vault's `batch_results` (each item its answer or its `error`).
    static func answer(_ items: [TransitItem], batch: Bool, _ body: (TransitItem, Int) throws(SecretsError) -> [String: Any]) throws(SecretsError)
        -> VaultResponse
    {
        guard batch else { return .data(try body(items.first ?? TransitItem(), 0)) }
        var results: [[String: Any]] = []
        var failures = 0
        for (index, item) in items.enumerated() {
            do {
                results.append(try body(item, index))
            } catch {
                failures += 1
                results.append(["error": error.message])
            }
        }
        var answer = VaultResponse.data(["batch_results": results])
        if failures == items.count, !items.isEmpty { answer.status = 400 }
        return answer
    }

    static func json(_ key: TransitKey) throws(SecretsError) -> [String: Any] {
        var versions: [String: Any] = [:]
        let publicKeys = try key.publicKeys()
        for version in key.listedVersions {
            let created = (key.versions[version]?.creationTimeMs ?? 0) / 1000
            if let publicKey = publicKeys[version] {
                versions[String(version)] = ["public_key": publicKey, "creation_time": VaultTime.format(ms: created * 1000), "name": key.type.publicKeyName ?? ""]
            } else {
                versions[String(version)] = created
            }
        }
        var data: [String: Any] = [
            "name": key.name, "type": key.type.vaultName, "keys": versions, "latest_version": key.latestVersion,
            "min_decryption_version": key.minDecryptionVersion, "min_encryption_version": key.minEncryptionVersion,
            "min_available_version": key.minAvailableVersion, "deletion_allowed": key.deletionAllowed, "derived": key.derived,
            "exportable": key.exportable, "allow_plaintext_backup": key.allowPlaintextBackup,
            "supports_encryption": key.type.supportsEncryption, "supports_decryption": key.type.supportsDecryption,
            "supports_derivation": key.type.supportsDerivation, "supports_signing": key.type.supportsSigning,
            "auto_rotate_period": key.autoRotatePeriodMs / 1000, "imported_key": false,
        ]
        if let kdf = key.kdf { data["kdf"] = kdf }
        if key.convergentEncryption { data["convergent_encryption"] = true; data["convergent_encryption_version"] = -1 }
        return data
    }
}
