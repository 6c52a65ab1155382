import AspenBlob
import AspenCI
import AspenCore
import AspenKV
import AspenLayer
import Foundation

// Artifacts and caches, in the blob store with references in the key-value store (which keep
// them from collection while the run's records live).
extension CIService {
    /// The artifacts of `run` (of `job` only, when named).
    func artifacts(of run: UInt64, job: String?) async throws -> [CIArtifact] {
        let subspace = job.map { CIKeys.artifacts(run, $0) } ?? CIKeys.artifacts(run)
        var found: [CIArtifact] = []
        for kv in try await scan(subspace) {
            guard let tuple = try? CIKeys.artifacts(run).unpack(kv.key), tuple.elements.count == 2, case .string(let name) = tuple.elements[0],
                case .string(let path) = tuple.elements[1], let reference = BlobReference(decoding: kv.value)
            else { continue }
            found.append(CIArtifact(job: name, path: path, hash: reference.hash.bytes, size: reference.size))
            if found.count >= CIWire.artifactsListedMax(limits) { break }
        }
        return found
    }

    /// Puts the artifacts of the jobs `task` needs into the checkout, at their paths.
    func restoreArtifacts(_ task: CIJobTask, into directory: String, log: CILogWriter) async throws {
        for need in task.needs {
            for artifact in try await artifacts(of: task.run, job: need) {
                guard let hash = BlobHash(bytes: artifact.hash), Self.safe(artifact.path) else { continue }
                // The node writes as root into a tree the pushed commit shaped: a link committed
                // at `out` must not carry `out/app` outside the checkout.
                guard Self.withoutLinks(artifact.path, in: directory) else {
                    await log.append(Array("aspen: artifact \(artifact.path) of '\(need)' not restored: a part of its path is a symbolic link\n".utf8))
                    continue
                }
                let file = (directory as NSString).appendingPathComponent(artifact.path)
                try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try await blobs.write(hash, to: file)
                await log.append(Array("aspen: artifact \(artifact.path) of '\(need)' (\(artifact.size) bytes)\n".utf8))
            }
        }
    }

    /// Whether no part of `path` that exists under `directory` is a symbolic link (what does not
    /// exist yet is made as a directory or a file, never followed).
    static func withoutLinks(_ path: String, in directory: String) -> Bool {
        var current = directory
        for part in path.split(separator: "/") {
            current += "/" + part
            var info = stat()
            guard lstat(current, &info) == 0 else { return true }
            if info.st_mode & S_IFMT == S_IFLNK { return false }
        }
        return true
    }

    /// A relative path inside the checkout: no `..`, not absolute, not into `.git`.
    static func safe(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return !path.isEmpty && !path.hasPrefix("/") && !parts.contains { $0.isEmpty || $0 == "." || $0 == ".." } && parts.first != ".git"
    }

    /// The files of the checkout a job keeps: each matching one of `patterns` (or under a
    /// directory a pattern names), checked against the artifact limits before anything is
    /// stored; then stored, two copies each, and recorded. Returns a problem instead, naming the
    /// limit, when one is passed (the job then fails).
    func keepArtifacts(_ task: CIJobTask, from directory: String, log: CILogWriter) async throws -> String? {
        guard !task.artifacts.isEmpty else { return nil }
        let globs = try task.artifacts.map { pattern throws -> Glob in try Glob(pattern, limits: limits) }
        var files: [(path: String, size: UInt64)] = []
        var total: UInt64 = 0
        let root = URL(fileURLWithPath: directory)
        guard let walk = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey, .fileSizeKey, .isSymbolicLinkKey]) else {
            return "the checkout could not be read for artifacts"
        }
        for case let url as URL in walk {
            let path = String(url.path.dropFirst(root.path.count + 1))
            if path == ".git" {
                walk.skipDescendants()
                continue
            }
            let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .fileSizeKey, .isSymbolicLinkKey])
            guard values?.isRegularFile == true, values?.isSymbolicLink != true else { continue }
            let wanted = globs.contains { glob in glob.matches(path) || (!glob.pattern.contains("*") && path.hasPrefix(glob.pattern + "/")) }
            guard wanted else { continue }
            let size = UInt64(values?.fileSize ?? 0)
            guard path.utf8.count <= limits.ciArtifactPathBytesMax else {
                return "artifact path \(path.prefix(64))… of \(path.utf8.count) bytes exceeds ciArtifactPathBytesMax (\(limits.ciArtifactPathBytesMax))"
            }
            guard size <= limits.ciArtifactBytesMax else {
                return "artifact \(path) of \(size) bytes exceeds ciArtifactBytesMax (\(limits.ciArtifactBytesMax))"
            }
            files.append((path, size))
            total += size
            guard files.count <= limits.ciArtifactsPerJobMax else { return "more than ciArtifactsPerJobMax (\(limits.ciArtifactsPerJobMax)) artifacts" }
            guard total <= limits.ciArtifactsBytesPerJobMax else {
                return "artifacts of more than ciArtifactsBytesPerJobMax (\(limits.ciArtifactsBytesPerJobMax)) bytes"
            }
        }
        var writes: [TransactionOperation] = []
        for file in files {
            let added = try await blobs.addFile(
                (directory as NSString).appendingPathComponent(file.path), tag: "aspen/ci/artifact/\(task.run)/\(UUID().uuidString)", tagTtlMs: 3_600_000,
                replicas: 2)
            writes.append(.put(Put(key: CIKeys.artifact(task.run, task.job, file.path), value: BlobReference(hash: added.hash, size: added.size).encoded)))
            await log.append(Array("aspen: kept artifact \(file.path) (\(added.size) bytes, blake3 \(added.hash.hex))\n".utf8))
        }
        for start in stride(from: 0, to: writes.count, by: 200) {
            _ = try await commit([], Array(writes[start..<min(writes.count, start + 200)]))
        }
        return nil
    }

    /// Restores the cache of `task`'s key into the checkout: the archive of exactly that key,
    /// else the newest whose key starts with the same prefix (the key up to its last `-`).
    /// Returns whether the exact key was found (an inexact or missing one is saved after).
    func restoreCache(_ task: CIJobTask, into directory: String, log: CILogWriter) async throws -> Bool {
        guard let key = task.cacheKey else { return true }
        var found: (key: String, reference: BlobReference, exact: Bool, revision: Revision)?
        if let kv = try await read(CIKeys.cache(task.repo, key)), let reference = BlobReference(decoding: kv.value) {
            found = (key, reference, true, kv.modRevision)
        } else if let dash = key.lastIndex(of: "-") {
            let prefix = String(key[...dash])
            let candidates = try await scan(CIKeys.caches(task.repo)).compactMap { kv -> (String, BlobReference, Revision)? in
                guard let tuple = try? CIKeys.caches(task.repo).unpack(kv.key), case .string(let name)? = tuple.elements.first, name.hasPrefix(prefix),
                    let reference = BlobReference(decoding: kv.value)
                else { return nil }
                return (name, reference, kv.modRevision)
            }
            if let newest = candidates.max(by: { $0.2 < $1.2 }) { found = (newest.0, newest.1, false, newest.2) }
        }
        guard let found else {
            await log.append(Array("aspen: no cache for \(key)\n".utf8))
            return false
        }
        let archive = (workRoot as NSString).appendingPathComponent("cache-\(UUID().uuidString).tar")
        defer { try? FileManager.default.removeItem(atPath: archive) }
        try await blobs.write(found.reference.hash, to: archive)
        let unpacked = try await Git.runProgram("tar", ["-xf", archive, "-C", directory])
        await log.append(Array("aspen: cache \(found.key) restored (\(found.reference.size) bytes)\(unpacked == 0 ? "" : ", tar exited \(unpacked)")\n".utf8))
        // Used: written again (if unchanged meanwhile), so retention sees it as recent.
        let entry = CIKeys.cache(task.repo, found.key)
        _ = try? await commit([Compare(key: entry, .modRevision(found.revision))], [.put(Put(key: entry, value: found.reference.encoded))])
        return found.exact
    }

    /// Archives the cache's paths that exist and stores the archive under the key.
    func saveCache(_ task: CIJobTask, from directory: String, log: CILogWriter) async throws {
        guard let key = task.cacheKey else { return }
        let paths = task.cachePaths.filter { Self.safe($0) && FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent($0)) }
        guard !paths.isEmpty else { return }
        let archive = (workRoot as NSString).appendingPathComponent("cache-\(UUID().uuidString).tar")
        defer { try? FileManager.default.removeItem(atPath: archive) }
        guard try await Git.runProgram("tar", ["-cf", archive, "-C", directory, "--"] + paths) == 0 else {
            await log.append(Array("aspen: the cache \(key) could not be archived\n".utf8))
            return
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: archive)[.size] as? NSNumber)?.uint64Value ?? 0
        guard size <= limits.ciCacheBytesMax else {
            await log.append(Array("aspen: cache \(key) not saved: \(size) bytes exceeds ciCacheBytesMax (\(limits.ciCacheBytesMax))\n".utf8))
            return
        }
        let added = try await blobs.addFile(archive, tag: "aspen/ci/cache/\(UUID().uuidString)", tagTtlMs: 3_600_000, replicas: 2)
        _ = try await node.write(.put(Put(key: CIKeys.cache(task.repo, key), value: BlobReference(hash: added.hash, size: added.size).encoded)), forwarding: true)
        await log.append(Array("aspen: cache \(key) saved (\(added.size) bytes)\n".utf8))
        _ = try? await pruneCaches(repo: task.repo)
    }
}
