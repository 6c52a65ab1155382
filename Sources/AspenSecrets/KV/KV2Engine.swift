import AspenCore
import AspenKV
import AspenLayer
import Foundation

/// What a read of one version found.
public enum KV2Read: Sendable {
    /// The version's data (JSON bytes) and the secret's metadata.
    case found(data: Bytes, version: Int64, metadata: KV2Metadata)
    /// The version exists but is deleted or destroyed: Vault answers 404 with its metadata.
    case gone(version: Int64, metadata: KV2Metadata)
}

/// kv-v2 over a `KeyValueStore` (DESIGN §16): versioned JSON secrets, each secret one metadata
/// record and one record per version, every value sealed by the data key. Every change is one
/// transaction that compares the metadata's revision, so a check-and-set is decided against
/// exactly the version it read, and two writers never both win.
public struct KV2Engine: MountEngine {
    public let context: MountContext
    /// Rounds of read-compare-write under contention before a change gives up (503).
    static let attemptsMax = 32

    public init(_ context: MountContext) { self.context = context }

    func metadataKey(_ path: String) -> Bytes { space.pack(["meta", .string(path)]) }
    func versionKey(_ path: String, _ version: Int64) -> Bytes { space.pack(["ver", .string(path), .int(version)]) }
    func versionsRange(_ path: String) -> Subspace { space.subspace(["ver", .string(path)]) }

    /// Secret paths: 1…`secretPathBytesMax` bytes, no NUL, no empty or dot segments.
    public func validate(path: String) throws(SecretsError) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= limits.secretPathBytesMax else {
            throw .badRequest("a secret path must have 1 to \(limits.secretPathBytesMax) bytes (secretPathBytesMax)")
        }
        guard !bytes.contains(0), !path.hasSuffix("/"), !path.hasPrefix("/"),
            !path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
        else { throw .badRequest("invalid secret path '\(path)'") }
    }

    // MARK: Reads

    /// The secret's metadata and the revision of its record, read linearizably.
    public func metadata(_ path: String) async throws -> (KV2Metadata, record: KeyValue)? {
        try validate(path: path)
        guard let record = try await store.get(metadataKey(path)) else { return nil }
        let plain = try key.open(record.value, storageKey: record.key)
        return (try KV2Metadata(decoding: plain, limits: limits), record)
    }

    public func read(_ path: String, version: Int64?) async throws -> KV2Read {
        guard let (metadata, _) = try await metadata(path), metadata.currentVersion > 0 else {
            throw SecretsError.notFound("no secret at '\(path)'")
        }
        let number = version.flatMap { $0 > 0 ? $0 : nil } ?? metadata.currentVersion
        guard let info = metadata.versions[number] else {
            if number > metadata.currentVersion { throw SecretsError.notFound("secret '\(path)' has no version \(number)") }
            return .gone(version: number, metadata: metadata)
        }
        if info.destroyed || info.isDeleted(nowMs: nowMs()) { return .gone(version: number, metadata: metadata) }
        let storage = versionKey(path, number)
        guard let record = try await store.get(storage) else { return .gone(version: number, metadata: metadata) }
        return .found(data: try key.open(record.value, storageKey: storage), version: number, metadata: metadata)
    }

    /// The names directly under `prefix` (which is empty or ends in `/`): secrets by name,
    /// folders with a trailing `/`, in order. Each folder costs one range read: the scan jumps
    /// over its contents.
    public func list(_ prefix: String) async throws -> [String] {
        if !prefix.isEmpty { try validate(path: String(prefix.dropLast())) }
        let metas = space.subspace(["meta"])
        let bounds = SecretsKeys.strings(in: metas, startingWith: prefix)
        var names: [String] = []
        var cursor = bounds.start
        scanning: while true {
            let page = try await store.read(
                RangeRequest(.range(start: cursor, end: bounds.end), limit: 256, keysOnly: true), consistency: .linearizable)
            for entry in page.kvs {
                guard let tuple = try? metas.unpack(entry.key), case .string(let path)? = tuple.elements.first else { continue }
                let rest = path.dropFirst(prefix.count)
                if let slash = rest.firstIndex(of: "/") {
                    let folder = String(rest[..<slash]) + "/"
                    names.append(folder)
                    // Past every path under the folder: the same bytes with the `/` raised to `0`.
                    cursor = SecretsKeys.strings(in: metas, startingWith: prefix + folder.dropLast() + "0").start
                } else {
                    names.append(String(rest))
                    cursor = entry.key + [0]
                }
                guard names.count <= limits.secretsListKeysMax else {
                    throw SecretsError.tooLarge("the listing passes secretsListKeysMax (\(limits.secretsListKeysMax)) names; list a deeper folder")
                }
                if rest.contains("/") { continue scanning }
            }
            if !page.more { break }
        }
        return names
    }

    // MARK: Changes

    /// One change of a secret: the new metadata (nil: remove the secret), the version data to
    /// write, and the version records to delete. Returns the value the caller answers.
    struct Change<Answer: Sendable>: Sendable {
        var metadata: KV2Metadata?
        var writes: [(version: Int64, data: Bytes)] = []
        var deletes: [Int64] = []
        var answer: Answer
    }

    /// Reads the metadata, lets `plan` decide, and commits the change in one transaction that
    /// compares the metadata record's revision; on a lost race, reads again and decides again.
    /// A write whose outcome is unknown (a dropped connection) is recognized by its sealed
    /// metadata bytes, which no other write can repeat (each envelope has a fresh salt).
    func change<Answer: Sendable>(
        _ path: String, _ plan: (KV2Metadata?, Int64) throws(SecretsError) -> Change<Answer>
    ) async throws -> Answer {
        try validate(path: path)
        let metaKey = metadataKey(path)
        // The first round reads this node's applied state (no round trip to the leader): the
        // transaction's compare catches a stale read. A refusal decided on it (a failed
        // check-and-set) is decided again on a linearizable read before it is answered.
        var consistency = ReadConsistency.stale
        for _ in 0..<Self.attemptsMax {
            let record = try await store.get(metaKey, consistency: consistency)
            let current = try record.map { record throws(SecretsError) in
                try KV2Metadata(decoding: try key.open(record.value, storageKey: metaKey), limits: limits)
            }
            let now = nowMs()
            let planned = Result { () throws(SecretsError) -> Change<Answer> in try plan(current, now) }
            if case .failure = planned, consistency == .stale {
                consistency = .linearizable
                continue
            }
            consistency = .linearizable
            let decided = try planned.get()
            var operations: [TransactionOperation] = []
            var sealedMetadata: Bytes? = nil
            if let metadata = decided.metadata {
                let sealed = key.seal(metadata.encoded(), storageKey: metaKey)
                sealedMetadata = sealed
                operations.append(.put(Put(key: metaKey, value: sealed)))
            } else if record != nil {
                operations.append(.delete(Delete(.key(metaKey))))
            }
            for write in decided.writes {
                let storage = versionKey(path, write.version)
                operations.append(.put(Put(key: storage, value: key.seal(write.data, storageKey: storage))))
            }
            for version in decided.deletes { operations.append(.delete(Delete(.key(versionKey(path, version))))) }
            if decided.metadata == nil { operations.append(.delete(Delete(.prefix(versionsRange(path).prefix)))) }
            if operations.isEmpty { return decided.answer }
            let compare = record.map { Compare(key: metaKey, .modRevision($0.modRevision)) } ?? Compare.absent(metaKey)
            // The mount as this request saw it: a write racing a disable (or a settings change)
            // does not land under a mount that is gone, or by rules that changed.
            let committed: Bool
            do {
                committed = try await store.transaction(Transaction(compares: [compare, context.mountHolds], success: operations)).succeeded
            } catch let error as KVError {
                throw error
            } catch {
                // Unknown outcome: committed if and only if the record holds exactly our bytes.
                let now = try? await store.get(metaKey)
                if let sealedMetadata, now?.value == sealedMetadata { return decided.answer }
                if sealedMetadata == nil, record != nil, now == nil { return decided.answer }
                throw error
            }
            if committed { return decided.answer }
            if try await store.get(SecretsKeys.mount(mount.path))?.value != mount.encoded() {
                throw SecretsError.unavailable("mount \(mount.path)/ changed during this request; try again")
            }
        }
        throw SecretsError.unavailable("secret '\(path)' changed under this request \(Self.attemptsMax) times in a row; try again")
    }

    /// Writes a new version. `cas`: nil none; 0 only if the secret has no version; N only if its
    /// current version is N. Returns the new version's number and the metadata after it.
    public func write(_ path: String, data: Bytes, cas: Int64?) async throws -> (version: Int64, metadata: KV2Metadata) {
        guard data.count <= limits.secretBytesMax else {
            throw SecretsError.tooLarge("a secret of \(data.count) bytes exceeds secretBytesMax (\(limits.secretBytesMax))")
        }
        let mountConfig = mount.kv
        let limits = self.limits
        return try await change(path) { current, now throws(SecretsError) in
            var metadata = current ?? KV2Metadata(createdMs: now)
            if cas == nil, metadata.config.casRequired || mountConfig.casRequired {
                throw .badRequest("check-and-set parameter required for this call")
            }
            if let cas, cas != metadata.currentVersion {
                throw .badRequest("check-and-set parameter did not match the current version")
            }
            let number = metadata.currentVersion + 1
            let deleteAfter = metadata.config.deleteVersionAfterMs > 0 ? metadata.config.deleteVersionAfterMs : mountConfig.deleteVersionAfterMs
            metadata.versions[number] = KV2Version(createdMs: now, deletionMs: deleteAfter > 0 ? now + deleteAfter : 0)
            metadata.currentVersion = number
            metadata.updatedMs = now
            if metadata.oldestVersion == 0 { metadata.oldestVersion = number }
            let pruned = Self.prune(&metadata, keeping: metadata.versionsKept(mount: mountConfig, limits: limits))
            return Change(metadata: metadata, writes: [(number, data)], deletes: pruned, answer: (number, metadata))
        }
    }

    /// Drops the oldest versions past `kept`; returns their numbers.
    static func prune(_ metadata: inout KV2Metadata, keeping kept: Int) -> [Int64] {
        var dropped: [Int64] = []
        while metadata.versions.count > kept, let oldest = metadata.versions.keys.min() {
            metadata.versions[oldest] = nil
            dropped.append(oldest)
        }
        if let oldest = metadata.versions.keys.min() { metadata.oldestVersion = oldest }
        return dropped
    }

    public enum VersionAction: Sendable { case delete, undelete, destroy }

    /// Soft-deletes, undeletes or destroys versions (`versions` empty with `.delete`: the
    /// current one, as `DELETE data/PATH` does). Missing versions are ignored, as in Vault.
    public func apply(_ action: VersionAction, _ path: String, versions: [Int64]) async throws {
        if action != .delete || !versions.isEmpty {
            guard !versions.isEmpty else { throw SecretsError.badRequest("no version number provided") }
        }
        try await change(path) { current, now throws(SecretsError) in
            guard var metadata = current else { return Change(metadata: nil, answer: ()) }
            let chosen = versions.isEmpty ? [metadata.currentVersion] : versions
            var destroyed: [Int64] = []
            for number in Set(chosen) {
                guard var version = metadata.versions[number], !version.destroyed else { continue }
                switch action {
                case .delete: if !version.isDeleted(nowMs: now) { version.deletionMs = now }
                case .undelete: version.deletionMs = 0
                case .destroy:
                    version.destroyed = true
                    destroyed.append(number)
                }
                metadata.versions[number] = version
            }
            metadata.updatedMs = now
            return Change(metadata: metadata, deletes: destroyed.sorted(), answer: ())
        }
    }

    /// Vault's metadata update: only the fields given change.
    public struct MetadataUpdate: Sendable {
        public var maxVersions: Int?
        public var casRequired: Bool?
        public var deleteVersionAfterMs: Int64?
        public var customMetadata: [String: String]?
        /// Merge `customMetadata` into what is there (Vault's PATCH) rather than replace it.
        public var mergeCustomMetadata = false
        public init() {}
    }

    public func updateMetadata(_ path: String, _ update: MetadataUpdate) async throws {
        if let max = update.maxVersions, max < 0 || max > limits.secretVersionsMax {
            throw SecretsError.badRequest("max_versions must be 0 to \(limits.secretVersionsMax) (secretVersionsMax)")
        }
        if let custom = update.customMetadata { try validate(customMetadata: custom) }
        let mountConfig = mount.kv
        let limits = self.limits
        try await change(path) { current, now throws(SecretsError) in
            var metadata = current ?? KV2Metadata(createdMs: now)
            if let value = update.maxVersions { metadata.config.maxVersions = value }
            if let value = update.casRequired { metadata.config.casRequired = value }
            if let value = update.deleteVersionAfterMs { metadata.config.deleteVersionAfterMs = value }
            if let value = update.customMetadata {
                metadata.customMetadata = update.mergeCustomMetadata ? metadata.customMetadata.merging(value) { $1 } : value
                guard metadata.customMetadata.count <= limits.secretCustomMetadataMax else {
                    throw .badRequest("custom_metadata would have \(metadata.customMetadata.count) keys; at most \(limits.secretCustomMetadataMax) (secretCustomMetadataMax)")
                }
            }
            metadata.updatedMs = now
            let pruned = Self.prune(&metadata, keeping: metadata.versionsKept(mount: mountConfig, limits: limits))
            return Change(metadata: metadata, deletes: pruned, answer: ())
        }
    }

    /// Removes the secret: its metadata and every version.
    public func deleteAll(_ path: String) async throws {
        try await change(path) { _, _ throws(SecretsError) in Change(metadata: nil, answer: ()) }
    }

    func validate(customMetadata: [String: String]) throws(SecretsError) {
        guard customMetadata.count <= limits.secretCustomMetadataMax else {
            throw .badRequest("custom_metadata has \(customMetadata.count) keys; at most \(limits.secretCustomMetadataMax) (secretCustomMetadataMax)")
        }
        for (key, value) in customMetadata {
            guard !key.isEmpty, key.utf8.count <= limits.secretCustomMetadataKeyBytesMax else {
                throw .badRequest("custom_metadata keys must have 1 to \(limits.secretCustomMetadataKeyBytesMax) bytes (secretCustomMetadataKeyBytesMax)")
            }
            guard value.utf8.count <= limits.secretCustomMetadataValueBytesMax else {
                throw .badRequest("custom_metadata value of '\(key)' exceeds \(limits.secretCustomMetadataValueBytesMax) bytes (secretCustomMetadataValueBytesMax)")
            }
        }
    }
}
