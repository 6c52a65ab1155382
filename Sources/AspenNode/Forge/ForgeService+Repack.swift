import AspenBlob
import AspenCore
import AspenForge
import AspenKV
import Foundation

// Compaction of a repository's pack set: every push adds a pack, and a fetch from a node that
// lacks them pulls each one. The leader repacks a repository once it holds several.
extension ForgeService {
    /// A repository with this many packs is repacked by the leader's next pass.
    static let repackAfterPacks = 8
    /// How often the leader looks for repositories to repack.
    static let repackPassMs: Int64 = 30_000
    /// Retired packs one pass releases (a compare and a delete each).
    static let releasesMax = 100

    /// Old packs one repack replaces (a compare, a delete and a put each, in its one transaction
    /// with `expired` releases and the new pack), within `batchKeysMax`; the rest wait for the next.
    func replacesMax(expired: Int) -> Int { max(1, (limits.batchKeysMax - 3 - 2 * expired) / 3) }

    /// Starts the leader's repack pass (stopped by `stop`).
    public func start() {
        let task = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Self.repackPassMs))
                let status = await node.status
                guard status.leader == node.id else { continue }
                do {
                    try await repackPass()
                } catch {
                    logger.warning("the forge's repack pass failed", metadata: ["error": "\(error)"])
                }
            }
        }
        maintenance.withLock { $0 = task }
    }

    public func stop() async {
        let task = maintenance.withLock { task in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    /// Repacks every repository with `repackAfterPacks` packs or more, or retired packs whose
    /// grace has ended.
    func repackPass() async throws {
        guard case .repos(let records) = try await call(.list(prefix: "")) else { return }
        for record in records where !Task.isCancelled {
            let state = try await RepoCache.read(record.name, node: node, limits: limits)
            let now = node.nowMs()
            if state.packs.count >= Self.repackAfterPacks || state.retired.contains(where: { $0.retiredMs + limits.forgePackGraceMs <= now }) {
                _ = try await repack(record.name)
            }
        }
    }

    /// Repacks the repository's packs into one (`git repack -a -d -k`: unreachable objects are
    /// kept, since a push racing the repack may rely on them), stores it in the blob store, and
    /// swaps the pack set in one transaction: the old packs become retired (still referenced for
    /// `forgePackGraceMs`), packs pushed meanwhile are left as they are. Retired packs past
    /// their grace are released in the same transaction. Returns whether the pack set changed.
    func repack(_ name: String) async throws -> Bool {
        try ForgeNames.validate(repo: name, limits: limits)
        return try await locks.withLock(name) {
            let state = try await self.state(name)
            let now = self.node.nowMs()
            let expired = state.retired.filter { $0.retiredMs + self.limits.forgePackGraceMs <= now }
            var compares = [Compare(key: ForgeKeys.repo(name), .createRevision(state.createRevision))]
            var operations: [TransactionOperation] = []
            var made: String?
            if state.packs.count >= 2 {
                let pushing = self.sessions.withLock { $0.values.contains { $0.repo == name } }
                let path = try await self.cache.sync(state, blobs: self.blobs, pushing: pushing)
                try await Git.check(["repack", "-a", "-d", "-k", "-q", "--write-bitmap-index"], in: path)
                let directory = (path as NSString).appendingPathComponent("objects/pack")
                let packs = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("pack-") && $0.hasSuffix(".pack") }
                guard packs.count == 1, let file = packs.first else {
                    throw ForgeError.failed("git repack left \(packs.count) packs in \(name)'s cache")
                }
                let pack = String(file.dropLast(5))
                made = pack
                let replaced = state.packs.keys.filter { $0 != pack }.sorted().prefix(self.replacesMax(expired: min(expired.count, Self.releasesMax)))
                if state.packs[pack] == nil {
                    let added = try await self.blobs.addFile(
                        (directory as NSString).appendingPathComponent(file), tag: "aspen/forge/incoming/\(name)/\(pack)", tagTtlMs: Self.incomingTagTtlMs)
                    operations.append(.put(Put(key: ForgeKeys.pack(name, pack), value: BlobReference(hash: added.hash, size: added.size).encoded)))
                }
                for old in replaced {
                    let key = ForgeKeys.pack(name, old)
                    compares.append(Compare(key: key, .version(0), .greater))
                    operations.append(.delete(Delete(.key(key))))
                    operations.append(.put(Put(key: ForgeKeys.retired(name, old, retiredMs: now), value: state.packs[old]!.encoded)))
                }
            }
            for old in expired.prefix(Self.releasesMax) {
                let key = ForgeKeys.retired(name, old.pack, retiredMs: old.retiredMs)
                compares.append(Compare(key: key, .version(0), .greater))
                operations.append(.delete(Delete(.key(key))))
            }
            guard !operations.isEmpty else { return false }
            guard case .transaction(let result) = try await self.node.write(.transaction(Transaction(compares: compares, success: operations)), forwarding: true)
            else { throw ForgeError.failed("unexpected result of the repack transaction") }
            guard result.succeeded else { throw ForgeError.conflict("\(name)'s pack set changed during the repack; nothing was swapped") }
            self.logger.info(
                "repacked", metadata: ["repo": "\(name)", "packs": "\(state.packs.count)", "into": "\(made ?? "-")", "released": "\(expired.count)"])
            return true
        }
    }
}
