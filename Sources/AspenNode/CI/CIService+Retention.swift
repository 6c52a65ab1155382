import AspenBlob
import AspenCI
import AspenCore
import AspenKV
import Foundation

// Retention: a repository keeps its newest `ciRunsKeptPerRepo` runs; the leader deletes the
// ended runs past them with everything they hold (their logs' and artifacts' references go with
// them, and the blob store's collection then frees the bytes). Caches are kept by use: the
// least recently used go past `ciCachesPerRepoMax` or `ciCacheBytesPerRepoMax`.
extension CIService {
    func pruneIfDue() async {
        let now = ContinuousClock.now
        let due = lastPrune.withLock { last -> Bool in
            guard last.map({ now - $0 >= .milliseconds(Self.pruneEveryMs) }) ?? true else { return false }
            last = now
            return true
        }
        guard due else { return }
        do {
            let removed = try await prune()
            if removed > 0 { logger.info("old CI runs deleted", metadata: ["runs": "\(removed)"]) }
            let caches = try await pruneCaches()
            if caches > 0 { logger.info("least recently used CI caches deleted", metadata: ["caches": "\(caches)"]) }
        } catch {
            logger.info("deleting old CI runs did not finish; it runs again", metadata: ["error": "\(error)"])
        }
    }

    /// Deletes every ended run past the newest `ciRunsKeptPerRepo` of its repository (of
    /// `repo` only, when named: what a run's end calls); returns how many.
    @discardableResult
    func prune(repo only: String? = nil) async throws -> Int {
        var seen: [String: Int] = [:]
        var removed = 0
        // Keys sort by repository, then newest first.
        for kv in try await scan(only.map { CIKeys.repoRuns($0) } ?? CIKeys.repos, keysOnly: true) {
            guard let tuple = try? CIKeys.repos.unpack(kv.key), tuple.elements.count == 2, case .string(let repo) = tuple.elements[0],
                case .int(let inverted) = tuple.elements[1]
            else { continue }
            seen[repo, default: 0] += 1
            guard seen[repo]! > limits.ciRunsKeptPerRepo else { continue }
            let id = UInt64(Int64.max - inverted)
            if try await delete(run: id, indexKey: kv.key) { removed += 1 }
        }
        return removed
    }

    /// Deletes, in each repository (or `repo` only), the least recently used caches (by the
    /// revision of their last save or restore) past `ciCachesPerRepoMax` or
    /// `ciCacheBytesPerRepoMax`; returns how many. Each deletion is conditioned on the cache
    /// being unchanged since it was read: one used meanwhile stays.
    @discardableResult
    func pruneCaches(repo only: String? = nil) async throws -> Int {
        let subspace = only.map { CIKeys.caches($0) } ?? CIKeys.allCaches
        var byRepo: [String: [(key: [UInt8], size: UInt64, revision: Revision)]] = [:]
        for kv in try await scan(subspace) {
            guard let tuple = try? CIKeys.allCaches.unpack(kv.key), case .string(let repo)? = tuple.elements.first else { continue }
            byRepo[repo, default: []].append((kv.key, BlobReference(decoding: kv.value)?.size ?? 0, kv.modRevision))
        }
        var removed = 0
        for caches in byRepo.values {
            var kept = 0
            var bytes: UInt64 = 0
            for cache in caches.sorted(by: { $0.revision > $1.revision }) {
                if kept < limits.ciCachesPerRepoMax, bytes + cache.size <= limits.ciCacheBytesPerRepoMax {
                    kept += 1
                    bytes += cache.size
                } else if try await commit([Compare(key: cache.key, .modRevision(cache.revision))], [.delete(Delete(.key(cache.key)))]) {
                    removed += 1
                }
            }
        }
        return removed
    }

    /// A repository's caches, most recently saved or restored first (all of them unless `limit`).
    func caches(of repo: String, limit: Int? = CIWire.cachesListedMax) async throws -> [CICache] {
        let entries = try await scan(CIKeys.caches(repo)).compactMap { kv in Self.cache(repo, kv) }.sorted { $0.revision > $1.revision }
        return limit.map { Array(entries.prefix($0)) } ?? entries
    }

    static func cache(_ repo: String, _ kv: KeyValue) -> CICache? {
        guard let tuple = try? CIKeys.caches(repo).unpack(kv.key), case .string(let key)? = tuple.elements.first,
            let reference = BlobReference(decoding: kv.value)
        else { return nil }
        return CICache(key: key, hash: reference.hash.bytes, size: reference.size, revision: UInt64(max(0, kv.modRevision)))
    }

    /// Deletes the cache of exactly `key` (every cache of the repository, when nil), each on the
    /// condition that no save or restore rewrote it meanwhile; the archives go with the blob
    /// store's next collection. Returns what was deleted (at most `cachesListedMax` of it; the
    /// rest goes all the same); an unknown key is an error.
    func deleteCaches(of repo: String, key: String?) async throws -> [CICache] {
        let found: [CICache]
        if let key {
            guard let kv = try await read(CIKeys.cache(repo, key)), let cache = Self.cache(repo, kv) else {
                throw CIError.notFound("repository \(repo) has no cache '\(key)'")
            }
            found = [cache]
        } else {
            found = try await caches(of: repo, limit: nil)
        }
        var deleted: [CICache] = []
        for cache in found {
            let name = CIKeys.cache(repo, cache.key)
            if try await commit([Compare(key: name, .modRevision(Revision(cache.revision)))], [.delete(Delete(.key(name)))]) {
                deleted.append(cache)
            }
        }
        return Array(deleted.prefix(CIWire.cachesListedMax))
    }

    /// Deletes an ended run and what it holds, in one transaction conditioned on the run being
    /// unchanged; a run not yet ended stays.
    func delete(run id: UInt64, indexKey: [UInt8]) async throws -> Bool {
        guard let (run, revision) = try await self.run(id) else {
            return try await commit([], [.delete(Delete(.key(indexKey)))])
        }
        guard run.state.ended else { return false }
        var operations: [TransactionOperation] = [
            .delete(Delete(.key(indexKey))), .delete(Delete(.key(CIKeys.run(id)))), .delete(Delete(.key(CIKeys.pipeline(id)))),
            .delete(Delete(.key(CIKeys.active(id)))),
            .delete(Delete(.prefix(CIKeys.tries(id).prefix))), .delete(Delete(.prefix(CIKeys.logs(id).prefix))),
            .delete(Delete(.prefix(CIKeys.artifacts(id).prefix))),
        ]
        let claim = CIKeys.idempotency(run.repo, ref: run.ref, sha: run.sha, pipeline: run.pipeline)
        if let kv = try await read(claim), Self.runID(kv.value) == id { operations.append(.delete(Delete(.key(claim)))) }
        for kv in try await scan(CIKeys.statuses(run.repo, run.sha)) where (try? CommitStatus(decoding: kv.value, limits: limits))?.run == id {
            operations.append(.delete(Delete(.key(kv.key))))
        }
        return try await commit([Compare(key: CIKeys.run(id), .modRevision(revision))], operations)
    }
}
