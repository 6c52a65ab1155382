import AspenBlob
import AspenCore
import AspenForge
import AspenKV
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One lock per repository on this node: a sync of the cache from the cluster, and a push from
/// its commit until git has moved the cache's refs, never overlap.
actor RepoLocks {
    private var held: Set<String> = []
    private var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]

    func acquire(_ name: String) async {
        if held.insert(name).inserted { return }
        await withCheckedContinuation { waiting[name, default: []].append($0) }
    }

    func release(_ name: String) {
        if var queue = waiting[name], !queue.isEmpty {
            let next = queue.removeFirst()
            waiting[name] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            held.remove(name)
        }
    }

    func withLock<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        await acquire(name)
        do {
            let value = try await body()
            release(name)
            return value
        } catch {
            release(name)
            throw error
        }
    }
}

/// What the cluster holds of one repository at one revision: its record, refs and packs.
struct RepoState: Sendable {
    var record: RepoRecord
    /// The revision at which the repository was created: a cache made for an older repository
    /// of the same name is thrown away.
    var createRevision: Revision
    var refs: [String: String]
    var packs: [String: BlobReference]
    /// Packs a repack replaced, kept until their grace ends.
    var retired: [(pack: String, retiredMs: Int64, reference: BlobReference)] = []
    /// Protected branches (without `refs/heads/`), with the revision their rule was set at.
    var protections: [String: (rule: ProtectionRule, revision: Revision)] = [:]
}

/// The node's git repository for each forge repository: a cache of what the cluster holds,
/// filled from the blob store and set to the cluster's refs before git serves from it.
struct RepoCache: Sendable {
    let root: String
    let hooksDirectory: String

    func path(_ name: String) -> String { (root as NSString).appendingPathComponent("repos/\(name).git") }

    /// Reads the repository's state as this node has applied it, at one revision (callers pass a
    /// linearizable barrier first: `ForgeService.state`). What the keys hold is checked again
    /// here, since any writer of the key-value store could have put it there: a name, a pack
    /// name or an id that fails its rule is refused or skipped, never used as a path or a command.
    static func read(_ name: String, node: RaftNode, limits: Limits) async throws -> RepoState {
        guard let kv = try await node.get(ForgeKeys.repo(name), consistency: .stale) else {
            throw ForgeError.notFound("no repository \(name): create it with `aspen repo create \(name)`")
        }
        let record = try RepoRecord(decoding: kv.value, limits: limits)
        guard record.name == name else { throw ForgeError.failed("the record of repository \(name) names \(record.name)") }
        let contents = ForgeKeys.contents(name)
        // From the packs on: the collaborative objects sort before them and are not needed here.
        let start = ForgeKeys.packs(name).prefix
        let end = contents.range.end
        var refs: [String: String] = [:]
        var packs: [String: BlobReference] = [:]
        var retired: [(pack: String, retiredMs: Int64, reference: BlobReference)] = []
        var protections: [String: (rule: ProtectionRule, revision: Revision)] = [:]
        for pair in try await scan(node, start: start, end: end) {
            if let ref = ForgeKeys.name(in: ForgeKeys.refs(name), pair.key) {
                let id = String(decoding: pair.value, as: UTF8.self)
                guard ForgeNames.isObjectID(id), (try? ForgeNames.validate(ref: ref, limits: limits)) != nil else { continue }
                refs[ref] = id
            } else if let pack = ForgeKeys.name(in: ForgeKeys.packs(name), pair.key), ForgeNames.isPackName(pack),
                let reference = BlobReference(decoding: pair.value)
            {
                packs[pack] = reference
            } else if let branch = ForgeKeys.name(in: ForgeKeys.protections(name), pair.key) {
                protections[branch] = (try ProtectionRule(decoding: pair.value), pair.modRevision)
            } else if let tuple = try? ForgeKeys.retired(name).unpack(pair.key), tuple.elements.count == 2,
                case .int(let retiredMs) = tuple.elements[0], case .string(let pack) = tuple.elements[1], ForgeNames.isPackName(pack),
                let reference = BlobReference(decoding: pair.value)
            {
                retired.append((pack, retiredMs, reference))
            }
        }
        return RepoState(record: record, createRevision: kv.createRevision, refs: refs, packs: packs, retired: retired, protections: protections)
    }

    /// Every key in `[start, end)` as this node has applied it, at one revision (the first
    /// page's), page after page.
    static func scan(_ node: RaftNode, start: Bytes, end: Bytes?, keysOnly: Bool = false) async throws -> [KeyValue] {
        var found: [KeyValue] = []
        var continuation: Bytes?
        var revision: Revision = 0
        repeat {
            let page = try await node.read(
                RangeRequest(.range(start: start, end: end), revision: revision, keysOnly: keysOnly, continuation: continuation), consistency: .stale)
            revision = page.revision
            found += page.kvs
            continuation = page.more ? page.continuation : nil
        } while continuation != nil
        return found
    }

    /// Makes the cache of `state.record.name` hold every pack and exactly the refs of `state`.
    /// The caller holds the repository's lock.
    /// `pushing`: a push of this repository is under way on this node (its quarantine is live).
    func sync(_ state: RepoState, blobs: BlobService, pushing: Bool) async throws -> String {
        let name = state.record.name
        let path = self.path(name)
        let marker = (path as NSString).appendingPathComponent("aspen-incarnation")
        let incarnation = "\(state.createRevision)"
        if (try? String(contentsOfFile: marker, encoding: .utf8)) != incarnation {
            // A repository of the same name, deleted since: a push still running into the old
            // one is refused at its commit (it names the creation it started on).
            try? FileManager.default.removeItem(atPath: path)
            try await create(path, defaultBranch: state.record.defaultBranch, incarnation: incarnation)
        }
        let packDirectory = (path as NSString).appendingPathComponent("objects/pack")
        // Staging a pull left by a node that died mid-pull (a sync holds the lock: none is live).
        for leftover in ((try? FileManager.default.contentsOfDirectory(atPath: packDirectory)) ?? []) where leftover.hasPrefix("incoming-") {
            try? FileManager.default.removeItem(atPath: (packDirectory as NSString).appendingPathComponent(leftover))
        }
        for (pack, reference) in state.packs.sorted(by: { $0.key < $1.key })
        where !FileManager.default.fileExists(atPath: (packDirectory as NSString).appendingPathComponent("\(pack).idx")) {
            try await pull(pack, reference, into: packDirectory, blobs: blobs)
        }
        removeStalePacks(in: packDirectory, keeping: Set(state.packs.keys).union(state.retired.map(\.pack)))
        if !pushing { removeStaleQuarantines(in: (path as NSString).appendingPathComponent("objects")) }
        // The refs: set to the cluster's, and those it lacks deleted. No old values are checked:
        // the lock keeps every other writer of this cache out.
        let refs: [String: String]
        if let stored = Self.storedRefs(in: path) { refs = stored } else { refs = try await Self.listedRefs(in: path) }
        var commands = ""
        for (ref, id) in state.refs where refs[ref] != id { commands += "update \(ref) \(id)\n" }
        for ref in refs.keys where state.refs[ref] == nil { commands += "delete \(ref)\n" }
        if !commands.isEmpty { try await Git.check(["update-ref", "--stdin"], in: path, input: Array(commands.utf8)) }
        return path
    }

    /// The refs of the git repository at `path` as its files hold them — loose files under
    /// `refs/` over `packed-refs` — read here instead of by a `git for-each-ref` process on every
    /// sync (3–12 ms each, and a CI job syncs at least once). Symbolic refs, lock files and
    /// files that hold no object id are left out. Nil for a repository whose refs are in a
    /// reftable (git 2.45 and later can make one): `listedRefs` asks git then.
    static func storedRefs(in path: String) -> [String: String]? {
        guard access((path as NSString).appendingPathComponent("reftable"), F_OK) != 0 else { return nil }
        func objectID(_ text: Substring) -> String? {
            text.utf8.count == 40 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } ? String(text) : nil
        }
        var refs: [String: String] = [:]
        if let packed = try? String(contentsOfFile: (path as NSString).appendingPathComponent("packed-refs"), encoding: .utf8) {
            for line in packed.split(separator: "\n") where !line.hasPrefix("#") && !line.hasPrefix("^") {
                let parts = line.split(separator: " ", maxSplits: 1)
                if parts.count == 2, let id = objectID(parts[0]) { refs[String(parts[1])] = id }
            }
        }
        let root = (path as NSString).appendingPathComponent("refs")
        guard let walker = FileManager.default.enumerator(atPath: root) else { return refs }
        while let relative = walker.nextObject() as? String {
            // A directory has no contents to read.
            guard !relative.hasSuffix(".lock"), let data = FileManager.default.contents(atPath: (root as NSString).appendingPathComponent(relative)),
                let id = objectID(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)[...])
            else { continue }
            refs["refs/" + relative] = id
        }
        return refs
    }

    /// The refs of the git repository at `path`, as `git for-each-ref` lists them.
    static func listedRefs(in path: String) async throws -> [String: String] {
        let listing = try await Git.check(["for-each-ref", "--format=%(objectname) %(refname)"], in: path)
        var refs: [String: String] = [:]
        for line in listing.text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { refs[String(parts[1])] = String(parts[0]) }
        }
        return refs
    }

    /// A pack in the cache that the cluster no longer lists (a repack replaced it, and its grace
    /// ended) goes once it is old enough that no git process started before its replacement
    /// can still be reading it. Its replacement is in by then: a sync pulls before it removes.
    func removeStalePacks(in directory: String, keeping: Set<String>, ageMs: Int64 = 600_000) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        let now = Date()
        for name in names where name.hasPrefix("pack-") && name.hasSuffix(".pack") {
            let pack = String(name.dropLast(5))
            let path = (directory as NSString).appendingPathComponent(name)
            guard !keeping.contains(pack), let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                now.timeIntervalSince(modified) * 1000 > Double(ageMs)
            else { continue }
            for suffix in [".idx", ".bitmap", ".rev", ".pack"] {
                try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(pack + suffix))
            }
        }
    }

    /// A push's quarantine left by a receive-pack that was killed (a node killed mid-push): gone
    /// once an hour old, longer than any push takes.
    func removeStaleQuarantines(in directory: String, ageMs: Int64 = 3_600_000) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        let now = Date()
        for name in names where name.hasPrefix("tmp_objdir-") {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                now.timeIntervalSince(modified) * 1000 > Double(ageMs)
            else { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    private func create(_ path: String, defaultBranch: String, incarnation: String) async throws {
        let staging = (root as NSString).appendingPathComponent("staging/\(UUID().uuidString).git")
        try FileManager.default.createDirectory(atPath: (staging as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        // The files backend, whatever a user's git configuration says: `storedRefs` reads it.
        try await Git.check(["-c", "init.defaultRefFormat=files", "init", "--bare", "--quiet", staging])
        let settings: [(String, String)] = [
            ("receive.fsckObjects", "true"), ("receive.unpackLimit", "1"), ("receive.autogc", "false"), ("gc.auto", "0"),
            ("uploadpack.allowFilter", "true"), ("uploadpack.allowReachableSHA1InWant", "true"), ("receive.advertisePushOptions", "true"),
            ("receive.denyDeleteCurrent", "false"), ("core.hooksPath", hooksDirectory), ("core.logAllRefUpdates", "false"),
        ]
        for (key, value) in settings { try await Git.check(["config", key, value], in: staging) }
        try await Git.check(["symbolic-ref", "HEAD", "refs/heads/\(defaultBranch)"], in: staging)
        try incarnation.write(toFile: (staging as NSString).appendingPathComponent("aspen-incarnation"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: staging, toPath: path)
    }

    /// Fetches a pack from the blob store and indexes it with git into the cache: the pack
    /// goes in first and its index last, so git never sees an index without its pack.
    private func pull(_ pack: String, _ reference: BlobReference, into directory: String, blobs: BlobService) async throws {
        let staging = (directory as NSString).appendingPathComponent("incoming-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let file = (staging as NSString).appendingPathComponent("\(pack).pack")
        // Streamed from the blob store, checked against its hash as it goes, never held whole.
        try await blobs.write(reference.hash, to: file)
        try await Git.check(["index-pack", file], in: directory)
        // rename(2) replaces a pack a node killed mid-pull left without its index.
        for suffix in [".pack", ".idx"] {
            let from = (staging as NSString).appendingPathComponent(pack + suffix)
            let to = (directory as NSString).appendingPathComponent(pack + suffix)
            guard rename(from, to) == 0 else { throw ForgeError.failed("cannot move \(pack + suffix) into the cache: \(String(cString: strerror(errno)))") }
        }
    }
}
