import AspenCore

/// A repository as the forge records it.
public struct RepoRecord: Sendable, Equatable {
    public var name: String
    public var description: String
    /// The branch `HEAD` names (`main` unless created otherwise).
    public var defaultBranch: String
    public var createdMs: Int64
    /// Keys (hex) that may change any issue's title, labels and state, and merge patches: the
    /// creator's, and any named at creation.
    public var maintainers: [String]

    public static let maintainersMax = 32

    public init(name: String, description: String = "", defaultBranch: String = "main", createdMs: Int64 = 0, maintainers: [String] = []) {
        self.name = name
        self.description = description
        self.defaultBranch = defaultBranch
        self.createdMs = createdMs
        self.maintainers = maintainers
    }

    static let version: UInt8 = 1

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.writeString(name)
        writer.writeString(description)
        writer.writeString(defaultBranch)
        writer.writeVarint(signed: createdMs)
        writer.writeVarint(UInt64(maintainers.count))
        for key in maintainers { writer.writeString(key) }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.version else { throw .invalid("unknown repository record version") }
        name = try reader.readString(limit: limits.forgeRepoNameBytesMax)
        description = try reader.readString(limit: limits.forgeDescriptionBytesMax)
        defaultBranch = try reader.readString(limit: limits.forgeRefNameBytesMax)
        createdMs = try reader.readSignedVarint()
        maintainers = []
        for _ in 0..<(try reader.readCount(limit: Self.maintainersMax)) { maintainers.append(try reader.readString(limit: 64)) }
        try reader.expectEnd()
    }

    public func validate(limits: Limits = .standard) throws(ForgeError) {
        try ForgeNames.validate(repo: name, limits: limits)
        guard description.utf8.count <= limits.forgeDescriptionBytesMax else {
            throw .badInput("a description of \(description.utf8.count) bytes exceeds forgeDescriptionBytesMax (\(limits.forgeDescriptionBytesMax))")
        }
        try ForgeNames.validate(ref: "refs/heads/" + defaultBranch, limits: limits)
        guard maintainers.count <= Self.maintainersMax else {
            throw .badInput("\(maintainers.count) maintainers exceed the \(Self.maintainersMax) a repository may name")
        }
        for key in maintainers where key.utf8.count != 64 || Hex.decode(key) == nil {
            throw .badInput("a maintainer is named by its public key, 64 hex digits: \"\(key)\"")
        }
    }
}

/// One ref a push changes: git's `OLD NEW REFNAME` (an id of zeros: created or deleted).
public struct RefUpdate: Sendable, Equatable {
    public var old: String
    public var new: String
    public var name: String

    public init(old: String, new: String, name: String) {
        self.old = old
        self.new = new
        self.name = name
    }

    func write(to writer: inout ByteWriter) {
        writer.writeString(old)
        writer.writeString(new)
        writer.writeString(name)
    }

    init(from reader: inout ByteReader, limits: Limits) throws(DecodingError) {
        old = try reader.readString(limit: 64)
        new = try reader.readString(limit: 64)
        name = try reader.readString(limit: limits.forgeRefNameBytesMax)
    }

    public func validate(limits: Limits = .standard) throws(ForgeError) {
        guard ForgeNames.isObjectID(old), ForgeNames.isObjectID(new), old.utf8.count == new.utf8.count else {
            throw .badInput("\(name): \"\(old)\" or \"\(new)\" is not a git object id")
        }
        try ForgeNames.validate(ref: name, limits: limits)
    }
}

/// The last push to a repository: what each ref went from and to, the pack it brought, who and when.
public struct PushRecord: Sendable, Equatable {
    public var updates: [RefUpdate]
    public var packs: [String]
    /// The pusher's key (the TLS key of the client that pushed), in hex.
    public var pusher: String
    public var nowMs: Int64
    /// The node that took the push.
    public var node: UInt64

    /// Packs one push may bring (git's receive-pack keeps one).
    public static let packsMax = 16

    public init(updates: [RefUpdate], packs: [String], pusher: String, nowMs: Int64, node: UInt64) {
        self.updates = updates
        self.packs = packs
        self.pusher = pusher
        self.nowMs = nowMs
        self.node = node
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeVarint(UInt64(updates.count))
        for update in updates { update.write(to: &writer) }
        writer.writeVarint(UInt64(packs.count))
        for pack in packs { writer.writeString(pack) }
        writer.writeString(pusher)
        writer.writeVarint(signed: nowMs)
        writer.writeVarint(node)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown push record version") }
        let count = try reader.readCount(limit: limits.forgeRefUpdatesMax)
        updates = []
        for _ in 0..<count { updates.append(try RefUpdate(from: &reader, limits: limits)) }
        let packCount = try reader.readCount(limit: Self.packsMax)
        packs = []
        for _ in 0..<packCount { packs.append(try reader.readString(limit: 128)) }
        pusher = try reader.readString(limit: 128)
        nowMs = try reader.readSignedVarint()
        node = try reader.readVarint()
        try reader.expectEnd()
    }
}

/// A push as CI takes it from the forge's outbox: the repository and its push record.
public struct PushEvent: Sendable, Equatable {
    public var repo: String
    public var record: PushRecord

    public init(repo: String, record: PushRecord) {
        self.repo = repo
        self.record = record
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeString(repo)
        writer.writeBytes(record.encoded)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown push event version") }
        repo = try reader.readString(limit: limits.forgeRepoNameBytesMax)
        record = try PushRecord(decoding: try reader.readBytes(limit: 1 << 20), limits: limits)
        try reader.expectEnd()
    }
}

/// The forge's calls over `aspen/client/1` (domain `forge`).
public enum ForgeCall: Sendable, Equatable {
    case create(RepoRecord)
    /// The repositories whose names start with `prefix` (what a credential scoped to it may list).
    case list(prefix: String)
    case show(String)
    case delete(String)
    /// The refs of a repository, read linearizably.
    case refs(String)
    /// The packs of a repository's pack set.
    case packs(String)
    /// Repacks a repository's packs into one now.
    case repack(String)
    /// Protects a branch with a rule, or (nil) lifts its protection.
    case protect(String, branch: String, ProtectionRule?)
    /// The repository's protected branches.
    case protections(String)
    /// The heads of a collaborative object, with their times (what a new change names as parents).
    case cobHeads(String, CobType, object: CobID)
    /// Adds a signed change (its author must be the caller).
    case cobAdd(String, SignedCobChange)
    /// Every issue of a repository, folded.
    case issues(String)
    /// One issue, by its id or a unique prefix of 7 hex digits or more.
    case issue(String, id: String)
    /// Every patch of a repository, folded.
    case patches(String)
    /// One patch, by its id or a unique prefix.
    case patch(String, id: String)
    /// A patch's diff: revision `from` against revision `to` (the interdiff), or with `from` 0,
    /// revision `to` against its base.
    case patchDiff(String, id: String, from: Int, to: Int)
    /// Merges a patch's latest revision into its target: the caller's signed `merged` change.
    case patchMerge(String, SignedCobChange)

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .create(let record):
            writer.write(UInt8(1))
            writer.writeBytes(record.encoded)
        case .list(let prefix):
            writer.write(UInt8(2))
            writer.writeString(prefix)
        case .show(let name):
            writer.write(UInt8(3))
            writer.writeString(name)
        case .delete(let name):
            writer.write(UInt8(4))
            writer.writeString(name)
        case .refs(let name):
            writer.write(UInt8(5))
            writer.writeString(name)
        case .packs(let name):
            writer.write(UInt8(6))
            writer.writeString(name)
        case .repack(let name):
            writer.write(UInt8(7))
            writer.writeString(name)
        case .protect(let name, let branch, let rule):
            writer.write(UInt8(8))
            writer.writeString(name)
            writer.writeString(branch)
            writer.writeOptionalBytes(rule?.encoded)
        case .protections(let name):
            writer.write(UInt8(9))
            writer.writeString(name)
        case .cobHeads(let name, let type, let object):
            writer.write(UInt8(10))
            writer.writeString(name)
            writer.write(type.rawValue)
            writer.writeRaw(object.bytes)
        case .cobAdd(let name, let change):
            writer.write(UInt8(11))
            writer.writeString(name)
            writer.writeBytes(change.encoded)
        case .issues(let name):
            writer.write(UInt8(12))
            writer.writeString(name)
        case .issue(let name, let id):
            writer.write(UInt8(13))
            writer.writeString(name)
            writer.writeString(id)
        case .patches(let name):
            writer.write(UInt8(14))
            writer.writeString(name)
        case .patch(let name, let id):
            writer.write(UInt8(15))
            writer.writeString(name)
            writer.writeString(id)
        case .patchDiff(let name, let id, let from, let to):
            writer.write(UInt8(16))
            writer.writeString(name)
            writer.writeString(id)
            writer.writeVarint(UInt64(from))
            writer.writeVarint(UInt64(to))
        case .patchMerge(let name, let change):
            writer.write(UInt8(17))
            writer.writeString(name)
            writer.writeBytes(change.encoded)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 1: self = .create(try RepoRecord(decoding: try reader.readBytes(limit: 4096), limits: limits))
        case 2: self = .list(prefix: try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 3: self = .show(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 4: self = .delete(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 5: self = .refs(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 6: self = .packs(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 7: self = .repack(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 8:
            let name = try reader.readString(limit: limits.forgeRepoNameBytesMax)
            let branch = try reader.readString(limit: limits.forgeRefNameBytesMax)
            let rule = try reader.readOptionalBytes(limit: 16 * 1024).map { bytes throws(DecodingError) in try ProtectionRule(decoding: bytes) }
            self = .protect(name, branch: branch, rule)
        case 9: self = .protections(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 10:
            let name = try reader.readString(limit: limits.forgeRepoNameBytesMax)
            guard let type = CobType(rawValue: try reader.readByte()) else { throw .invalid("unknown object type") }
            self = .cobHeads(name, type, object: CobID(bytes: try reader.readRaw(32))!)
        case 11:
            let name = try reader.readString(limit: limits.forgeRepoNameBytesMax)
            self = .cobAdd(name, try SignedCobChange(decoding: try reader.readBytes(limit: limits.forgeCobChangeBytesMax + 128), limits: limits))
        case 12: self = .issues(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 13: self = .issue(try reader.readString(limit: limits.forgeRepoNameBytesMax), id: try reader.readString(limit: 64))
        case 14: self = .patches(try reader.readString(limit: limits.forgeRepoNameBytesMax))
        case 15: self = .patch(try reader.readString(limit: limits.forgeRepoNameBytesMax), id: try reader.readString(limit: 64))
        case 16:
            self = .patchDiff(
                try reader.readString(limit: limits.forgeRepoNameBytesMax), id: try reader.readString(limit: 64),
                from: try reader.readCount(limit: limits.forgeCobChangesMax), to: try reader.readCount(limit: limits.forgeCobChangesMax))
        case 17:
            let name = try reader.readString(limit: limits.forgeRepoNameBytesMax)
            self = .patchMerge(name, try SignedCobChange(decoding: try reader.readBytes(limit: limits.forgeCobChangeBytesMax + 128), limits: limits))
        default: throw .invalid("unknown forge call")
        }
        try reader.expectEnd()
    }

    /// The repository the call is about (empty for a list: every repository).
    public var repo: String {
        switch self {
        case .create(let record): record.name
        case .list(let prefix): prefix
        case .show(let name), .delete(let name), .refs(let name), .packs(let name), .repack(let name), .protections(let name), .issues(let name),
            .patches(let name):
            name
        case .protect(let name, _, _), .cobHeads(let name, _, _), .cobAdd(let name, _), .issue(let name, _), .patch(let name, _),
            .patchDiff(let name, _, _, _), .patchMerge(let name, _):
            name
        }
    }
}

/// A forge call's answer.
public enum ForgeAnswer: Sendable, Equatable {
    case done
    case repos([RepoRecord])
    case refs([(name: String, id: String)])
    /// Pack names, sizes and BLAKE3 hashes (hex); `retired` ones were replaced by a repack and
    /// are kept for the grace period.
    case packs([PackInfo])
    case protections([(branch: String, rule: ProtectionRule)])
    case heads([(id: CobID, time: UInt64)])
    case added(CobID)
    case issues([Issue])
    case patches([Patch])
    case text(String)

    /// The longest text answer (a diff), in bytes.
    public static let textBytesMax = 8 << 20

    public static func == (lhs: ForgeAnswer, rhs: ForgeAnswer) -> Bool {
        switch (lhs, rhs) {
        case (.done, .done): true
        case (.repos(let a), .repos(let b)): a == b
        case (.refs(let a), .refs(let b)): a.map(\.name) == b.map(\.name) && a.map(\.id) == b.map(\.id)
        case (.packs(let a), .packs(let b)): a == b
        case (.protections(let a), .protections(let b)): a.map(\.branch) == b.map(\.branch) && a.map(\.rule) == b.map(\.rule)
        case (.heads(let a), .heads(let b)): a.map(\.id) == b.map(\.id) && a.map(\.time) == b.map(\.time)
        case (.added(let a), .added(let b)): a == b
        case (.issues(let a), .issues(let b)): a == b
        case (.patches(let a), .patches(let b)): a == b
        case (.text(let a), .text(let b)): a == b
        default: false
        }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .done:
            writer.write(UInt8(1))
        case .repos(let records):
            writer.write(UInt8(2))
            writer.writeVarint(UInt64(records.count))
            for record in records { writer.writeBytes(record.encoded) }
        case .refs(let refs):
            writer.write(UInt8(3))
            writer.writeVarint(UInt64(refs.count))
            for ref in refs {
                writer.writeString(ref.name)
                writer.writeString(ref.id)
            }
        case .packs(let packs):
            writer.write(UInt8(4))
            writer.writeVarint(UInt64(packs.count))
            for pack in packs {
                writer.writeString(pack.name)
                writer.writeVarint(pack.size)
                writer.writeString(pack.hash)
                writer.write(pack.retired)
            }
        case .protections(let rules):
            writer.write(UInt8(5))
            writer.writeVarint(UInt64(rules.count))
            for (branch, rule) in rules {
                writer.writeString(branch)
                writer.writeBytes(rule.encoded)
            }
        case .heads(let heads):
            writer.write(UInt8(6))
            writer.writeVarint(UInt64(heads.count))
            for head in heads {
                writer.writeRaw(head.id.bytes)
                writer.writeFixed(head.time)
            }
        case .added(let id):
            writer.write(UInt8(7))
            writer.writeRaw(id.bytes)
        case .issues(let issues):
            writer.write(UInt8(8))
            writer.writeVarint(UInt64(issues.count))
            for issue in issues { issue.write(to: &writer) }
        case .patches(let patches):
            writer.write(UInt8(9))
            writer.writeVarint(UInt64(patches.count))
            for patch in patches { patch.write(to: &writer) }
        case .text(let text):
            writer.write(UInt8(10))
            writer.writeString(text)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 1: self = .done
        case 2:
            let count = try reader.readCount(limit: 100_000)
            var records: [RepoRecord] = []
            for _ in 0..<count { records.append(try RepoRecord(decoding: try reader.readBytes(limit: 4096), limits: limits)) }
            self = .repos(records)
        case 3:
            let count = try reader.readCount(limit: limits.forgeRefsMax)
            var refs: [(String, String)] = []
            for _ in 0..<count { refs.append((try reader.readString(limit: limits.forgeRefNameBytesMax), try reader.readString(limit: 64))) }
            self = .refs(refs)
        case 4:
            let count = try reader.readCount(limit: limits.forgePacksMax * 2)
            var packs: [PackInfo] = []
            for _ in 0..<count {
                packs.append(
                    PackInfo(
                        name: try reader.readString(limit: 128), size: try reader.readVarint(), hash: try reader.readString(limit: 64),
                        retired: try reader.readBool()))
            }
            self = .packs(packs)
        case 5:
            let count = try reader.readCount(limit: limits.forgeRefsMax)
            var rules: [(String, ProtectionRule)] = []
            for _ in 0..<count {
                rules.append((try reader.readString(limit: limits.forgeRefNameBytesMax), try ProtectionRule(decoding: try reader.readBytes(limit: 16 * 1024))))
            }
            self = .protections(rules)
        case 6:
            var heads: [(CobID, UInt64)] = []
            for _ in 0..<(try reader.readCount(limit: limits.forgeCobChangesMax)) {
                heads.append((CobID(bytes: try reader.readRaw(32))!, try reader.readFixed64()))
            }
            self = .heads(heads)
        case 7: self = .added(CobID(bytes: try reader.readRaw(32))!)
        case 8:
            var issues: [Issue] = []
            for _ in 0..<(try reader.readCount(limit: 100_000)) { issues.append(try Issue(from: &reader, limits: limits)) }
            self = .issues(issues)
        case 9:
            var patches: [Patch] = []
            for _ in 0..<(try reader.readCount(limit: 100_000)) { patches.append(try Patch(from: &reader, limits: limits)) }
            self = .patches(patches)
        case 10: self = .text(try reader.readString(limit: ForgeAnswer.textBytesMax))
        default: throw .invalid("unknown forge answer")
        }
        try reader.expectEnd()
    }
}

/// How a protected branch may change: never deleted, never rewritten (a push must fast-forward
/// it), and with approvals or status contexts required, never pushed to directly (changes land
/// through patches the forge merges).
public struct ProtectionRule: Sendable, Equatable {
    public var requiredApprovals: Int
    public var requiredStatuses: [String]

    public init(requiredApprovals: Int = 0, requiredStatuses: [String] = []) {
        self.requiredApprovals = requiredApprovals
        self.requiredStatuses = requiredStatuses
    }

    /// Whether direct pushes are refused (something must be checked first).
    public var gatesPushes: Bool { requiredApprovals > 0 || !requiredStatuses.isEmpty }

    public static let statusesMax = 32

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeVarint(UInt64(requiredApprovals))
        writer.writeVarint(UInt64(requiredStatuses.count))
        for status in requiredStatuses { writer.writeString(status) }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown protection rule version") }
        requiredApprovals = try reader.readCount(limit: 100)
        let count = try reader.readCount(limit: Self.statusesMax)
        requiredStatuses = []
        for _ in 0..<count { requiredStatuses.append(try reader.readString(limit: 255)) }
        try reader.expectEnd()
    }

    public func validate() throws(ForgeError) {
        guard (0...100).contains(requiredApprovals) else { throw .badInput("required approvals must be 0 to 100, not \(requiredApprovals)") }
        guard requiredStatuses.count <= Self.statusesMax else {
            throw .badInput("\(requiredStatuses.count) required statuses exceed the \(Self.statusesMax) a rule may name")
        }
        for status in requiredStatuses where status.isEmpty || status.utf8.count > 255 || status.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F }) {
            throw .badInput("a status context must be 1 to 255 bytes without spaces or control characters: \"\(status)\"")
        }
    }
}

/// One pack of a repository's pack set.
public struct PackInfo: Sendable, Equatable {
    public var name: String
    public var size: UInt64
    public var hash: String
    public var retired: Bool

    public init(name: String, size: UInt64, hash: String, retired: Bool) {
        self.name = name
        self.size = size
        self.hash = hash
        self.retired = retired
    }
}

/// git's two services, as the remote helper asks for them.
public enum GitService: String, Sendable, Equatable {
    case uploadPack = "git-upload-pack"
    case receivePack = "git-receive-pack"
}

/// The first frame of an `aspen/git/1` tunnel: which repository, which service, which
/// protocol version (0, 1 or 2: what git put in `GIT_PROTOCOL`), and the client's cookie proof
/// and credential.
public struct GitTunnelRequest: Sendable, Equatable {
    public var repo: String
    public var service: GitService
    public var protocolVersion: UInt8
    public var proof: [UInt8]
    public var credential: [UInt8]

    public init(repo: String, service: GitService, protocolVersion: UInt8, proof: [UInt8] = [], credential: [UInt8] = []) {
        self.repo = repo
        self.service = service
        self.protocolVersion = protocolVersion
        self.proof = proof
        self.credential = credential
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(GitTunnelFrame.header)
        writer.write(UInt8(1))
        writer.writeString(repo)
        writer.writeString(service.rawValue)
        writer.write(protocolVersion)
        writer.writeBytes(proof)
        writer.writeBytes(credential)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == GitTunnelFrame.header else { throw .invalid("the first frame is not a tunnel header") }
        guard try reader.readByte() == 1 else { throw .invalid("unknown tunnel header version") }
        repo = try reader.readString(limit: limits.forgeRepoNameBytesMax)
        guard let service = GitService(rawValue: try reader.readString(limit: 32)) else { throw .invalid("unknown git service") }
        self.service = service
        protocolVersion = try reader.readByte()
        guard protocolVersion <= 2 else { throw .invalid("unknown git protocol version \(protocolVersion)") }
        proof = try reader.readBytes(limit: 64)
        credential = try reader.readBytes(limit: 64 * 1024)
        try reader.expectEnd()
    }
}

/// The kind byte that starts each tunnel frame. The client sends a header, then data (git's
/// standard input) and an end; the node answers ready (or refused, with the reason), then
/// git's standard output and error, and its exit status.
public enum GitTunnelFrame {
    public static let header: UInt8 = 0x01
    public static let data: UInt8 = 0x02
    public static let end: UInt8 = 0x03
    /// A signed patch change the push to `refs/for/…` that follows makes (sent before its pack).
    public static let change: UInt8 = 0x04
    public static let ready: UInt8 = 0x10
    public static let stdout: UInt8 = 0x11
    public static let stderr: UInt8 = 0x12
    public static let exit: UInt8 = 0x13
    public static let refused: UInt8 = 0x14
}

/// What the node's receive hook sends the node: the push it belongs to (a one-time token), the
/// quarantine directory holding the pack git received, and the ref updates.
public struct ForgeHookRequest: Sendable, Equatable {
    public var token: String
    public var quarantine: String
    public var updates: [RefUpdate]
    public var pushOptions: [String]

    public init(token: String, quarantine: String, updates: [RefUpdate], pushOptions: [String] = []) {
        self.token = token
        self.quarantine = quarantine
        self.updates = updates
        self.pushOptions = pushOptions
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeString(token)
        writer.writeString(quarantine)
        writer.writeVarint(UInt64(updates.count))
        for update in updates { update.write(to: &writer) }
        writer.writeVarint(UInt64(pushOptions.count))
        for option in pushOptions { writer.writeString(option) }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown hook request version") }
        token = try reader.readString(limit: 128)
        quarantine = try reader.readString(limit: 4096)
        // Up to a whole repository's refs: the node refuses a push over forgeRefUpdatesMax by name.
        let count = try reader.readCount(limit: limits.forgeRefsMax)
        updates = []
        for _ in 0..<count { updates.append(try RefUpdate(from: &reader, limits: limits)) }
        let options = try reader.readCount(limit: 64)
        pushOptions = []
        for _ in 0..<options { pushOptions.append(try reader.readString(limit: 1024)) }
        try reader.expectEnd()
    }
}

/// The node's answer to its hook: accepted or not, and what git shows the pusher.
public struct ForgeHookAnswer: Sendable, Equatable {
    public var accepted: Bool
    public var message: String

    public init(accepted: Bool, message: String) {
        self.accepted = accepted
        self.message = message
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(accepted)
        writer.writeString(message)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        accepted = try reader.readBool()
        message = try reader.readString(limit: 64 * 1024)
        try reader.expectEnd()
    }
}
