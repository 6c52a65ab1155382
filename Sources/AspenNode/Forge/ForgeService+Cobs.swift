import AspenBlob
import AspenCore
import AspenForge
import AspenKV
import AspenLayer
import AspenTransport
import Foundation

// Collaborative objects: signed changes stored in the blob store, heads in the key-value store.
extension ForgeService {
    /// How far ahead of the node's clock a change's time may be.
    static let cobClockSkewMs: Int64 = 10 * 60 * 1000

    /// The heads of an object and their times, read linearizably.
    func cobHeads(_ repo: String, _ type: CobType, object: CobID) async throws -> [(id: CobID, time: UInt64)] {
        try ForgeNames.validate(repo: repo, limits: limits)
        try await barrier()
        do {
            var heads: [(CobID, UInt64)] = []
            for pair in try await scan(ForgeKeys.cobObject(repo, type, object: object).subspace(["h"])) {
                guard let tuple = try? ForgeKeys.cobObject(repo, type, object: object).subspace(["h"]).unpack(pair.key),
                    case .bytes(let bytes)? = tuple.elements.first, let id = CobID(bytes: bytes)
                else { continue }
                var reader = ByteReader(pair.value)
                heads.append((id, (try? reader.readFixed64()) ?? 0))
            }
            return heads
        }
    }

    /// Stores a signed change: its author must be the caller (the key its connection proved), its
    /// signature the author's, its parents changes of the same object. One transaction puts the
    /// change's reference and its head, and removes the heads among its parents: writers who saw
    /// the same heads leave several heads, none lost.
    func cobAdd(_ repo: String, _ signed: SignedCobChange, caller: NodeKey) async throws -> CobID {
        try ForgeNames.validate(repo: repo, limits: limits)
        let change = try signed.verified(limits: limits)
        guard change.author == caller.bytes else {
            throw ForgeError.badInput("a change must be signed by its author, the key of the connection that sends it")
        }
        try CobRules.validate(change, limits: limits)
        // A time far ahead would win every tie and leave no room after it.
        let latest = UInt64(max(0, node.nowMs() + Self.cobClockSkewMs)) << 16
        guard change.time <= latest else {
            throw ForgeError.badInput("the change's time is more than \(Self.cobClockSkewMs / 60_000) minutes ahead of this node's clock")
        }
        let id = signed.id
        let object = change.object ?? id
        let type = change.type
        if change.object != nil {
            let count = try await node.read(
                RangeRequest(.prefix(ForgeKeys.cobObject(repo, type, object: object).subspace(["c"]).prefix), countOnly: true),
                consistency: .stale
            ).count
            guard count < limits.forgeCobChangesMax else {
                throw ForgeError.badInput("\(type.name) \(object.short) holds \(count) changes, at forgeCobChangesMax (\(limits.forgeCobChangesMax))")
            }
        }
        let (changeCompares, operations) = changeWrites(repo, change, signed, try await store(signed, repo: repo))
        let compares = [Compare(key: ForgeKeys.repo(repo), .version(0), .greater)] + changeCompares
        let changeKey = ForgeKeys.cobChange(repo, type, object: object, change: id)
        guard case .transaction(let result) = try await node.write(.transaction(Transaction(compares: compares, success: operations)), forwarding: true)
        else { throw ForgeError.failed("unexpected result of the change's transaction") }
        guard result.succeeded else {
            if try await node.get(changeKey, consistency: .linearizable) != nil { return id }
            throw ForgeError.notFound("no repository \(repo), or no \(type.name) \(object.short) in it, or a parent change it names")
        }
        return id
    }

    /// Stores a signed change in the blob store (tagged until the transaction that adds it
    /// references it); returns its reference.
    func store(_ signed: SignedCobChange, repo: String) async throws -> BlobReference {
        let bytes = signed.encoded
        let hash = try await blobs.add(bytes, tag: "aspen/forge/cob/\(repo)/\(signed.id.hex)", tagTtlMs: Self.incomingTagTtlMs)
        return BlobReference(hash: hash, size: UInt64(bytes.count))
    }

    /// What adding `change` (stored at `reference`) asks of a transaction: that it is new (a
    /// retry must not bring back a head a later change replaced), that its object and its parents
    /// exist (not that they still be heads); and what it writes: its reference and its head, and
    /// the removal of its parents' heads.
    func changeWrites(
        _ repo: String, _ change: CobChange, _ signed: SignedCobChange, _ reference: BlobReference
    ) -> (compares: [Compare], operations: [TransactionOperation]) {
        let id = signed.id
        let object = change.object ?? id
        let type = change.type
        let changeKey = ForgeKeys.cobChange(repo, type, object: object, change: id)
        var compares: [Compare] = [.absent(changeKey)]
        var operations: [TransactionOperation] = [
            .put(Put(key: changeKey, value: reference.encoded)),
            .put(Put(key: ForgeKeys.cobHead(repo, type, object: object, change: id), value: ByteWriter.fixed(change.time))),
        ]
        if change.object != nil {
            compares.append(Compare(key: ForgeKeys.cobChange(repo, type, object: object, change: object), .version(0), .greater))
        }
        for parent in change.parents {
            compares.append(Compare(key: ForgeKeys.cobChange(repo, type, object: object, change: parent), .version(0), .greater))
            operations.append(.delete(Delete(.key(ForgeKeys.cobHead(repo, type, object: object, change: parent)))))
        }
        return (compares, operations)
    }

    /// Every object of `type` in the repository, by id.
    func cobObjects(_ repo: String, _ type: CobType) async throws -> [CobID] {
        var objects = Set<CobID>()
        let space = ForgeKeys.cobs(repo, type)
        for pair in try await scan(space, keysOnly: true) {
            if let tuple = try? space.unpack(pair.key), case .bytes(let bytes)? = tuple.elements.first, let id = CobID(bytes: bytes) {
                objects.insert(id)
            }
        }
        return objects.sorted()
    }

    /// The object of `type` whose id is `text` or starts with it (7 hex digits or more, unique).
    func resolve(_ repo: String, _ type: CobType, _ text: String) async throws -> CobID {
        if let id = CobID(hex: text) { return id }
        guard text.utf8.count >= 7, text.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            throw ForgeError.badInput("an \(type.name) id is hex: its first 7 digits or more")
        }
        let matches = try await cobObjects(repo, type).filter { $0.hex.hasPrefix(text) }
        guard let first = matches.first else { throw ForgeError.notFound("no \(type.name) \(text) in \(repo)") }
        guard matches.count == 1 else { throw ForgeError.badInput("\(text) names \(matches.count) \(type.name)es in \(repo): give more digits") }
        return first
    }

    func resolveIssue(_ repo: String, _ text: String) async throws -> CobID { try await resolve(repo, .issue, text) }

    /// An object's changes, every signature checked.
    func changes(_ repo: String, _ type: CobType, _ object: CobID) async throws -> [CobID: CobChange] {
        var changes: [CobID: CobChange] = [:]
        let space = ForgeKeys.cobObject(repo, type, object: object).subspace(["c"])
        for pair in try await scan(space) {
            guard let reference = BlobReference(decoding: pair.value) else { continue }
            let signed = try SignedCobChange(decoding: try await blobs.bytes(reference.hash), limits: limits)
            changes[signed.id] = try signed.verified(limits: limits)
        }
        guard !changes.isEmpty else { throw ForgeError.notFound("no \(type.name) \(object.short) in \(repo)") }
        return changes
    }

    /// Folds an issue from its changes, every signature checked.
    func foldIssue(_ repo: String, _ object: CobID, record: RepoRecord) async throws -> Issue {
        try Issue.fold(try await changes(repo, .issue, object), maintainers: Set(record.maintainers))
    }

    func patches(_ repo: String, only text: String?) async throws -> [Patch] {
        try ForgeNames.validate(repo: repo, limits: limits)
        try await barrier()
        guard let kv = try await node.get(ForgeKeys.repo(repo), consistency: .stale) else { throw ForgeError.notFound("no repository \(repo)") }
        let record = try RepoRecord(decoding: kv.value, limits: limits)
        let objects: [CobID]
        if let text {
            objects = [try await resolve(repo, .patch, text)]
        } else {
            objects = try await cobObjects(repo, .patch)
        }
        var patches: [Patch] = []
        for object in objects { patches.append(try Patch.fold(try await changes(repo, .patch, object), maintainers: Set(record.maintainers))) }
        return patches.sorted { ($0.revisions[0].time, $0.id) < ($1.revisions[0].time, $1.id) }
    }

    /// `git diff` between two revisions' heads (the interdiff), or of one revision against its base.
    func patchDiff(_ repo: String, _ text: String, from: Int, to: Int) async throws -> String {
        guard let patch = try await patches(repo, only: text).first else { throw ForgeError.notFound("no patch \(text) in \(repo)") }
        let count = patch.revisions.count
        guard (1...count).contains(to), (0..<to).contains(from) || from == 0 else {
            throw ForgeError.badInput("patch \(patch.id.short) has revisions 1 to \(count); a range is FROM..TO with FROM below TO")
        }
        let (path, _) = try await prepare(repo)
        let target = patch.revisions[to - 1]
        let old = from == 0 ? target.base : patch.revisions[from - 1].head
        guard !old.isEmpty else { throw ForgeError.badInput("revision \(to) has no base (its target branch did not exist)") }
        let diff = try await Git.check(["diff", "--stat", "--patch", old, target.head], in: path)
        guard diff.output.count <= ForgeAnswer.textBytesMax else {
            throw ForgeError.badInput("the diff is \(diff.output.count) bytes, over \(ForgeAnswer.textBytesMax): fetch the revisions and diff them locally")
        }
        return diff.text
    }

    func issues(_ repo: String, only text: String?) async throws -> [Issue] {
        try ForgeNames.validate(repo: repo, limits: limits)
        try await barrier()
        do {
            guard let kv = try await node.get(ForgeKeys.repo(repo), consistency: .stale) else { throw ForgeError.notFound("no repository \(repo)") }
            let record = try RepoRecord(decoding: kv.value, limits: limits)
            let objects: [CobID]
            if let text {
                objects = [try await resolveIssue(repo, text)]
            } else {
                objects = try await cobObjects(repo, .issue)
            }
            var issues: [Issue] = []
            for object in objects { issues.append(try await foldIssue(repo, object, record: record)) }
            return issues.sorted { ($0.created, $0.id) < ($1.created, $1.id) }
        }
    }

    /// Every key of `space`, at one revision (the state this node has applied: callers read
    /// linearizably first).
    func scan(_ space: Subspace, keysOnly: Bool = false) async throws -> [KeyValue] {
        let (start, end) = space.range
        return try await RepoCache.scan(node, start: start, end: end, keysOnly: keysOnly)
    }
}

extension ByteWriter {
    static func fixed(_ value: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeFixed(value)
        return writer.bytes
    }
}
