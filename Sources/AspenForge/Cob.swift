import AspenBlob
import AspenCore
import Crypto
import Foundation

/// Collaborative objects (DESIGN §14): an issue is a DAG of signed changes. Each change names its
/// object, its parents (the heads its author saw), its operations, its author's Ed25519 key and
/// a hybrid logical time; it is identified by the BLAKE3 hash of its canonical encoding and
/// signed by its author. Every node folds the same changes the same way.
public enum CobType: UInt8, Sendable, Equatable, CaseIterable {
    case issue = 1
    case patch = 2

    public var name: String {
        switch self {
        case .issue: "issue"
        case .patch: "patch"
        }
    }
}

/// A status context's state on a revision.
public enum StatusState: UInt8, Sendable, Equatable, CaseIterable {
    case pending = 0
    case success = 1
    case failure = 2

    public var name: String {
        switch self {
        case .pending: "pending"
        case .success: "success"
        case .failure: "failure"
        }
    }
}

/// How the forge merges a patch: fast-forward the target to the revision's head, make a merge
/// commit, or squash the revision into one commit on the target.
public enum MergeStrategy: UInt8, Sendable, Equatable, CaseIterable {
    case fastForward = 0
    case merge = 1
    case squash = 2

    public var name: String {
        switch self {
        case .fastForward: "ff"
        case .merge: "merge"
        case .squash: "squash"
        }
    }

    public init?(name: String) {
        guard let found = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = found
    }
}

/// A reviewer's verdict on a patch revision.
public enum ReviewVerdict: UInt8, Sendable, Equatable {
    case comment = 0
    case approve = 1
    case requestChanges = 2

    public var name: String {
        switch self {
        case .comment: "comment"
        case .approve: "approve"
        case .requestChanges: "request-changes"
        }
    }
}

/// A change's or an object's id: 32 bytes of BLAKE3.
public struct CobID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    public init?(hex: String) {
        guard hex.utf8.count == 64, let bytes = Hex.decode(hex) else { return nil }
        self.bytes = bytes
    }

    public var hex: String { Hex.encode(bytes) }
    /// What people see and type: the first 12 hex digits (any unique prefix of 7 or more works).
    public var short: String { String(hex.prefix(12)) }
    public var description: String { short }
    public static func < (lhs: CobID, rhs: CobID) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}

/// What a change does to an issue.
public enum CobOperation: Sendable, Equatable {
    /// The first change of an issue (and only it): its title and body.
    case open(title: String, body: String)
    case comment(body: String)
    case title(String)
    case label(add: [String], remove: [String])
    case close
    case reopen
    /// The first change of a patch: what it proposes to merge into `target` (a branch), and its
    /// first revision (the pushed `head` over the target's `base`). `topic` names it among its
    /// author's patches (a second push with the same topic adds a revision).
    case openPatch(title: String, description: String, target: String, topic: String, base: String, head: String)
    /// A new revision of a patch.
    case revision(base: String, head: String)
    /// A review of revision `revision` (1 is the first), with a comment.
    case review(revision: Int, verdict: ReviewVerdict, comment: String)
    /// A status context's state on revision `revision` (what CI reports: `ci/build` passed).
    case status(revision: Int, context: String, state: StatusState)
    /// The forge merged revision `revision` into the target (recorded in the merge's own
    /// transaction, with the target's new commit).
    case merged(revision: Int, strategy: MergeStrategy)

    func write(to writer: inout ByteWriter) {
        switch self {
        case .open(let title, let body):
            writer.write(UInt8(1))
            writer.writeString(title)
            writer.writeString(body)
        case .comment(let body):
            writer.write(UInt8(2))
            writer.writeString(body)
        case .title(let title):
            writer.write(UInt8(3))
            writer.writeString(title)
        case .label(let add, let remove):
            writer.write(UInt8(4))
            writer.writeVarint(UInt64(add.count))
            for label in add { writer.writeString(label) }
            writer.writeVarint(UInt64(remove.count))
            for label in remove { writer.writeString(label) }
        case .close:
            writer.write(UInt8(5))
        case .reopen:
            writer.write(UInt8(6))
        case .openPatch(let title, let description, let target, let topic, let base, let head):
            writer.write(UInt8(7))
            for text in [title, description, target, topic, base, head] { writer.writeString(text) }
        case .revision(let base, let head):
            writer.write(UInt8(8))
            writer.writeString(base)
            writer.writeString(head)
        case .review(let revision, let verdict, let comment):
            writer.write(UInt8(9))
            writer.writeVarint(UInt64(revision))
            writer.write(verdict.rawValue)
            writer.writeString(comment)
        case .status(let revision, let context, let state):
            writer.write(UInt8(10))
            writer.writeVarint(UInt64(revision))
            writer.writeString(context)
            writer.write(state.rawValue)
        case .merged(let revision, let strategy):
            writer.write(UInt8(11))
            writer.writeVarint(UInt64(revision))
            writer.write(strategy.rawValue)
        }
    }

    static func read(from reader: inout ByteReader, limits: Limits) throws(DecodingError) -> CobOperation {
        switch try reader.readByte() {
        case 1: return .open(title: try reader.readString(limit: limits.forgeTitleBytesMax), body: try reader.readString(limit: limits.forgeCommentBytesMax))
        case 2: return .comment(body: try reader.readString(limit: limits.forgeCommentBytesMax))
        case 3: return .title(try reader.readString(limit: limits.forgeTitleBytesMax))
        case 4:
            var add: [String] = []
            for _ in 0..<(try reader.readCount(limit: limits.forgeLabelsMax)) { add.append(try reader.readString(limit: limits.forgeLabelBytesMax)) }
            var remove: [String] = []
            for _ in 0..<(try reader.readCount(limit: limits.forgeLabelsMax)) { remove.append(try reader.readString(limit: limits.forgeLabelBytesMax)) }
            return .label(add: add, remove: remove)
        case 5: return .close
        case 6: return .reopen
        case 7:
            return .openPatch(
                title: try reader.readString(limit: limits.forgeTitleBytesMax), description: try reader.readString(limit: limits.forgeCommentBytesMax),
                target: try reader.readString(limit: limits.forgeRefNameBytesMax), topic: try reader.readString(limit: limits.forgeRefNameBytesMax),
                base: try reader.readString(limit: 64), head: try reader.readString(limit: 64))
        case 8: return .revision(base: try reader.readString(limit: 64), head: try reader.readString(limit: 64))
        case 9:
            let revision = try reader.readCount(limit: limits.forgeCobChangesMax)
            guard let verdict = ReviewVerdict(rawValue: try reader.readByte()) else { throw .invalid("unknown review verdict") }
            return .review(revision: revision, verdict: verdict, comment: try reader.readString(limit: limits.forgeCommentBytesMax))
        case 10:
            let revision = try reader.readCount(limit: limits.forgeCobChangesMax)
            let context = try reader.readString(limit: 255)
            guard let state = StatusState(rawValue: try reader.readByte()) else { throw .invalid("unknown status state") }
            return .status(revision: revision, context: context, state: state)
        case 11:
            let revision = try reader.readCount(limit: limits.forgeCobChangesMax)
            guard let strategy = MergeStrategy(rawValue: try reader.readByte()) else { throw .invalid("unknown merge strategy") }
            return .merged(revision: revision, strategy: strategy)
        case let tag: throw .unknownTag(tag, context: "cob operation")
        }
    }
}

/// One change, as its author signed it.
public struct CobChange: Sendable, Equatable {
    public var type: CobType
    /// The object's id (its first change's); nil for the first change itself.
    public var object: CobID?
    /// The heads the author saw, sorted.
    public var parents: [CobID]
    public var operations: [CobOperation]
    /// The author's Ed25519 public key.
    public var author: [UInt8]
    /// Hybrid logical time: milliseconds since 1970 in the high 48 bits, a counter in the low
    /// 16; always above every parent's.
    public var time: UInt64

    public init(type: CobType, object: CobID?, parents: [CobID], operations: [CobOperation], author: [UInt8], time: UInt64) {
        self.type = type
        self.object = object
        self.parents = parents.sorted()
        self.operations = operations
        self.author = author
        self.time = time
    }

    /// The time of a change made now whose parents' latest time is `after`.
    public static func time(nowMs: Int64, after: UInt64) -> UInt64 { max(UInt64(max(0, nowMs)) << 16, after == .max ? .max : after + 1) }

    /// The canonical encoding: fields in a fixed order, lengths as varints, no floats.
    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.write(type.rawValue)
        writer.writeBytes(object?.bytes ?? [])
        writer.writeVarint(UInt64(parents.count))
        for parent in parents { writer.writeRaw(parent.bytes) }
        writer.writeVarint(UInt64(operations.count))
        for operation in operations { operation.write(to: &writer) }
        writer.writeRaw(author)
        writer.writeFixed(time)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw .invalid("unknown change version") }
        guard let type = CobType(rawValue: try reader.readByte()) else { throw .invalid("unknown object type") }
        self.type = type
        let object = try reader.readBytes(limit: 32)
        if object.isEmpty {
            self.object = nil
        } else {
            guard let id = CobID(bytes: object) else { throw .invalid("an object id of \(object.count) bytes") }
            self.object = id
        }
        var parents: [CobID] = []
        for _ in 0..<(try reader.readCount(limit: limits.forgeCobParentsMax)) { parents.append(CobID(bytes: try reader.readRaw(32))!) }
        guard parents == parents.sorted(), Set(parents).count == parents.count else { throw .invalid("parents not sorted or repeated") }
        self.parents = parents
        var operations: [CobOperation] = []
        for _ in 0..<(try reader.readCount(limit: limits.forgeCobOperationsMax)) { operations.append(try CobOperation.read(from: &reader, limits: limits)) }
        self.operations = operations
        author = try reader.readRaw(32)
        time = try reader.readFixed64()
        try reader.expectEnd()
    }

    public var id: CobID { CobID(bytes: BLAKE3.hash(encoded))! }

    static let domain = Array("aspen-cob-v1\0".utf8)

    /// The change signed by `key` (its author).
    public func signed(by key: Curve25519.Signing.PrivateKey) throws -> SignedCobChange {
        let body = encoded
        return SignedCobChange(body: body, signature: Array(try key.signature(for: Self.domain + body)))
    }
}

/// A change's canonical encoding and its author's signature over it: what the blob store holds.
public struct SignedCobChange: Sendable, Equatable {
    public var body: [UInt8]
    public var signature: [UInt8]

    public init(body: [UInt8], signature: [UInt8]) {
        self.body = body
        self.signature = signature
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeBytes(body)
        writer.writeBytes(signature)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        body = try reader.readBytes(limit: limits.forgeCobChangeBytesMax)
        signature = try reader.readBytes(limit: 64)
        try reader.expectEnd()
    }

    public var id: CobID { CobID(bytes: BLAKE3.hash(body))! }

    /// The change, if its signature is its author's.
    public func verified(limits: Limits = .standard) throws -> CobChange {
        let change = try CobChange(decoding: body, limits: limits)
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: change.author),
            key.isValidSignature(signature, for: CobChange.domain + body)
        else { throw ForgeError.badInput("change \(id.short): the signature is not its author's") }
        return change
    }
}

/// An issue, as the fold of its changes makes it.
public struct Issue: Sendable, Equatable {
    public struct Comment: Sendable, Equatable {
        public var id: CobID
        public var author: String
        public var body: String
        public var time: UInt64
    }

    public var id: CobID
    public var author: String
    public var title: String
    public var body: String
    public var open: Bool
    public var labels: [String]
    public var comments: [Comment]
    public var created: UInt64
    public var updated: UInt64
    /// Changes folded (every one's signature verified), and those whose operations the fold
    /// ignored, with the reason (a right the author lacks).
    public var changes: Int
    public var ignored: [(id: CobID, reason: String)]
    public var heads: [CobID]

    public static func == (lhs: Issue, rhs: Issue) -> Bool {
        lhs.id == rhs.id && lhs.author == rhs.author && lhs.title == rhs.title && lhs.body == rhs.body && lhs.open == rhs.open
            && lhs.labels == rhs.labels && lhs.comments == rhs.comments && lhs.created == rhs.created && lhs.updated == rhs.updated
            && lhs.changes == rhs.changes && lhs.ignored.map(\.id) == rhs.ignored.map(\.id) && lhs.ignored.map(\.reason) == rhs.ignored.map(\.reason)
            && lhs.heads == rhs.heads
    }

    /// Folds an issue's changes (each already verified), deterministically: changes in
    /// topological order, ties broken by (time, id); the title and the state are the last
    /// writer's in that order, labels are added and removed in that order, comments appended.
    /// Rights: the title, the state and the labels change only by the issue's author or a
    /// maintainer of the repository; anyone may comment.
    public static func fold(_ changes: [CobID: CobChange], maintainers: Set<String>) throws -> Issue {
        guard let (rootID, root) = changes.first(where: { $0.value.object == nil }), case .open(let title, let body)? = root.operations.first,
            root.parents.isEmpty
        else { throw ForgeError.failed("the issue has no opening change") }
        try checkGraph(changes, root: rootID, type: .issue)
        let author = Hex.encode(root.author)
        var discussion = Discussion(title: title, refusal: "only the issue's author or a maintainer may change its title, labels or state")
        var updated = root.time
        for id in topologicalOrder(changes) where id != rootID {
            let change = changes[id]!
            let who = Hex.encode(change.author)
            let privileged = who == author || maintainers.contains(who)
            updated = max(updated, change.time)
            for operation in change.operations where !discussion.apply(operation, id: id, who: who, time: change.time, privileged: privileged) {
                switch operation {
                case .open:
                    discussion.ignored.append((id, "only an issue's first change opens it"))
                default:
                    discussion.ignored.append((id, "revisions, reviews, statuses and merges belong to patches"))
                }
            }
        }
        return Issue(
            id: rootID, author: author, title: discussion.title, body: body, open: discussion.open, labels: discussion.labels.sorted(),
            comments: discussion.comments, created: root.time, updated: updated, changes: changes.count, ignored: discussion.ignored,
            heads: heads(of: changes))
    }

    /// The changes no other change names as a parent.
    static func heads(of changes: [CobID: CobChange]) -> [CobID] {
        let parents = Set(changes.values.flatMap(\.parents))
        return changes.keys.filter { !parents.contains($0) }.sorted()
    }

    /// Every change belongs to the object and names only changes of it as parents.
    static func checkGraph(_ changes: [CobID: CobChange], root rootID: CobID, type: CobType) throws {
        for (id, change) in changes where id != rootID {
            guard change.object == rootID, change.type == type else { throw ForgeError.failed("change \(id.short) belongs to another object") }
            for parent in change.parents where changes[parent] == nil { throw ForgeError.failed("change \(id.short) names a missing parent \(parent.short)") }
        }
    }

    /// Kahn's order: a change after all its parents; among those ready, the earliest (time, id).
    static func topologicalOrder(_ changes: [CobID: CobChange]) -> [CobID] {
        var waiting: [CobID: Int] = [:]
        var children: [CobID: [CobID]] = [:]
        for (id, change) in changes {
            waiting[id] = change.parents.count
            for parent in change.parents { children[parent, default: []].append(id) }
        }
        var ready = changes.keys.filter { waiting[$0] == 0 }
        var order: [CobID] = []
        while !ready.isEmpty {
            let next = ready.min { (changes[$0]!.time, $0) < (changes[$1]!.time, $1) }!
            ready.removeAll { $0 == next }
            order.append(next)
            for child in children[next] ?? [] {
                waiting[child]! -= 1
                if waiting[child] == 0 { ready.append(child) }
            }
        }
        return order
    }
}

extension Issue {
    func write(to writer: inout ByteWriter) {
        writer.writeRaw(id.bytes)
        writer.writeString(author)
        writer.writeString(title)
        writer.writeString(body)
        writer.write(open)
        writer.write(labels: labels)
        writer.write(comments: comments)
        writer.writeFixed(created)
        writer.writeFixed(updated)
        writer.writeVarint(UInt64(changes))
        writer.write(ignored: ignored)
        writer.write(ids: heads)
    }

    init(from reader: inout ByteReader, limits: Limits) throws(DecodingError) {
        id = CobID(bytes: try reader.readRaw(32))!
        author = try reader.readString(limit: 64)
        title = try reader.readString(limit: limits.forgeTitleBytesMax)
        body = try reader.readString(limit: limits.forgeCommentBytesMax)
        open = try reader.readBool()
        labels = try reader.readLabels(limits: limits)
        comments = try reader.readComments(limits: limits)
        created = try reader.readFixed64()
        updated = try reader.readFixed64()
        changes = try reader.readCount(limit: limits.forgeCobChangesMax)
        ignored = try reader.readIgnored(limits: limits)
        heads = try reader.readIDs(limit: limits.forgeCobChangesMax)
    }
}

/// What an issue's fold and a patch's share: the title, the open state, the labels and the
/// comments, and the changes whose operations were ignored, with the reason.
struct Discussion {
    var title: String
    var open = true
    var labels = Set<String>()
    var comments: [Issue.Comment] = []
    var ignored: [(id: CobID, reason: String)] = []
    /// Why a title, label or state change by someone without the right is ignored.
    let refusal: String

    init(title: String, refusal: String) {
        self.title = title
        self.refusal = refusal
    }

    /// Applies an operation both kinds take: a comment (anyone), a title, labels, closing or
    /// reopening (the author or a maintainer; ignored with `refusal` otherwise). False for an
    /// operation only the kind's own fold knows.
    mutating func apply(_ operation: CobOperation, id: CobID, who: String, time: UInt64, privileged: Bool) -> Bool {
        switch operation {
        case .comment(let body): comments.append(Issue.Comment(id: id, author: who, body: body, time: time))
        case .title(let new) where privileged: title = new
        case .label(let add, let remove) where privileged:
            labels.formUnion(add)
            labels.subtract(remove)
        case .close where privileged: open = false
        case .reopen where privileged: open = true
        case .title, .label, .close, .reopen: ignored.append((id, refusal))
        default: return false
        }
        return true
    }
}

// The parts of an issue's and a patch's encodings they share.
extension ByteWriter {
    mutating func write(labels: [String]) {
        writeVarint(UInt64(labels.count))
        for label in labels { writeString(label) }
    }

    mutating func write(comments: [Issue.Comment]) {
        writeVarint(UInt64(comments.count))
        for comment in comments {
            writeRaw(comment.id.bytes)
            writeString(comment.author)
            writeString(comment.body)
            writeFixed(comment.time)
        }
    }

    mutating func write(ignored: [(id: CobID, reason: String)]) {
        writeVarint(UInt64(ignored.count))
        for (id, reason) in ignored {
            writeRaw(id.bytes)
            writeString(reason)
        }
    }

    mutating func write(ids: [CobID]) {
        writeVarint(UInt64(ids.count))
        for id in ids { writeRaw(id.bytes) }
    }
}

extension ByteReader {
    mutating func readLabels(limits: Limits) throws(DecodingError) -> [String] {
        var labels: [String] = []
        for _ in 0..<(try readCount(limit: 10_000)) { labels.append(try readString(limit: limits.forgeLabelBytesMax)) }
        return labels
    }

    mutating func readComments(limits: Limits) throws(DecodingError) -> [Issue.Comment] {
        var comments: [Issue.Comment] = []
        for _ in 0..<(try readCount(limit: limits.forgeCobChangesMax * limits.forgeCobOperationsMax)) {
            comments.append(
                Issue.Comment(
                    id: CobID(bytes: try readRaw(32))!, author: try readString(limit: 64), body: try readString(limit: limits.forgeCommentBytesMax),
                    time: try readFixed64()))
        }
        return comments
    }

    mutating func readIgnored(limits: Limits) throws(DecodingError) -> [(id: CobID, reason: String)] {
        var ignored: [(id: CobID, reason: String)] = []
        for _ in 0..<(try readCount(limit: limits.forgeCobChangesMax * limits.forgeCobOperationsMax)) {
            ignored.append((CobID(bytes: try readRaw(32))!, try readString(limit: 1024)))
        }
        return ignored
    }

    mutating func readIDs(limit: Int) throws(DecodingError) -> [CobID] {
        var ids: [CobID] = []
        for _ in 0..<(try readCount(limit: limit)) { ids.append(CobID(bytes: try readRaw(32))!) }
        return ids
    }
}

/// Checks a change's content against the limits and the rules of its type, before it is stored.
public enum CobRules {
    public static func validate(_ change: CobChange, limits: Limits = .standard) throws(ForgeError) {
        guard !change.operations.isEmpty else { throw .badInput("a change must do something") }
        let opens = change.object == nil
        let kind = change.type.name
        if opens {
            guard change.parents.isEmpty, change.operations.count == 1 else {
                throw .badInput("a new \(kind)'s first change opens it, and does nothing else")
            }
            switch (change.type, change.operations[0]) {
            case (.issue, .open(let title, _)):
                try validate(title: title, limits: limits)
            case (.patch, .openPatch(let title, _, let target, let topic, let base, let head)):
                try validate(title: title, limits: limits)
                try ForgeNames.validate(ref: "refs/heads/" + target, limits: limits)
                try ForgeNames.validate(ref: "refs/heads/" + topic, limits: limits)
                guard ForgeNames.isObjectID(base) || base.isEmpty, ForgeNames.isObjectID(head) else {
                    throw .badInput("a patch's base and head are git object ids")
                }
            default:
                throw .badInput("a new \(kind)'s first change opens it")
            }
        } else {
            guard !change.parents.isEmpty else { throw .badInput("a change to a \(kind) names the heads it saw as parents") }
        }
        for operation in change.operations {
            switch operation {
            case .open where !opens || change.type != .issue: throw .badInput("only an issue's first change opens it")
            case .openPatch where !opens || change.type != .patch: throw .badInput("only a patch's first change opens it")
            case .revision where change.type != .patch, .review where change.type != .patch, .status where change.type != .patch,
                .merged where change.type != .patch:
                throw .badInput("revisions, reviews, statuses and merges belong to patches")
            case .status(let revision, let context, _):
                guard revision >= 1 else { throw .badInput("revisions are numbered from 1") }
                guard !context.isEmpty, context.utf8.count <= 255, !context.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F }) else {
                    throw .badInput("a status context is 1 to 255 bytes without spaces or control characters")
                }
            case .merged(let revision, _):
                guard revision >= 1 else { throw .badInput("revisions are numbered from 1") }
            case .revision(let base, let head):
                guard ForgeNames.isObjectID(base) || base.isEmpty, ForgeNames.isObjectID(head) else {
                    throw .badInput("a revision's base and head are git object ids")
                }
            case .review(let revision, _, _):
                guard revision >= 1 else { throw .badInput("revisions are numbered from 1") }
            case .title(let title): try validate(title: title, limits: limits)
            case .label(let add, let remove):
                for label in add + remove {
                    guard !label.isEmpty, label.utf8.count <= limits.forgeLabelBytesMax, !label.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ",") })
                    else { throw .badInput("a label is 1 to \(limits.forgeLabelBytesMax) bytes (forgeLabelBytesMax), without commas or control characters: \"\(label)\"") }
                }
            case .comment(let body):
                guard !body.isEmpty else { throw .badInput("an empty comment") }
            default: break
            }
        }
    }

    static func validate(title: String, limits: Limits) throws(ForgeError) {
        guard !title.trimmingCharacters(in: .whitespaces).isEmpty else { throw .badInput("a title must not be empty") }
        guard !title.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw .badInput("a title is one line, without control characters") }
    }
}

/// A patch, as the fold of its changes makes it.
public struct Patch: Sendable, Equatable {
    public struct Revision: Sendable, Equatable {
        public var number: Int
        public var change: CobID
        public var base: String
        public var head: String
        public var time: UInt64
    }

    public struct Review: Sendable, Equatable {
        public var revision: Int
        public var author: String
        public var verdict: ReviewVerdict
        public var comment: String
        public var time: UInt64
    }

    public var id: CobID
    public var author: String
    public var title: String
    public var description: String
    public var target: String
    public var topic: String
    public var open: Bool
    public var labels: [String]
    public var revisions: [Revision]
    public var reviews: [Review]
    public var comments: [Issue.Comment]
    public var changes: Int
    public var ignored: [(id: CobID, reason: String)]
    public var heads: [CobID]
    /// The latest state of each status context, by revision and context.
    public var statuses: [Status] = []
    /// The revision the forge merged, if any (a merged patch is closed).
    public var merged: Int?

    public struct Status: Sendable, Equatable {
        public var revision: Int
        public var context: String
        public var state: StatusState
        public var author: String
    }

    /// Whether each of `contexts` succeeded on the latest revision.
    public func missingStatuses(_ contexts: [String]) -> [String] {
        contexts.filter { context in !statuses.contains { $0.revision == latest.number && $0.context == context && $0.state == .success } }
    }

    public static func == (lhs: Patch, rhs: Patch) -> Bool {
        lhs.id == rhs.id && lhs.author == rhs.author && lhs.title == rhs.title && lhs.description == rhs.description && lhs.target == rhs.target
            && lhs.topic == rhs.topic && lhs.open == rhs.open && lhs.labels == rhs.labels && lhs.revisions == rhs.revisions
            && lhs.reviews == rhs.reviews && lhs.comments == rhs.comments && lhs.changes == rhs.changes
            && lhs.ignored.map(\.id) == rhs.ignored.map(\.id) && lhs.ignored.map(\.reason) == rhs.ignored.map(\.reason) && lhs.heads == rhs.heads
            && lhs.statuses == rhs.statuses && lhs.merged == rhs.merged
    }

    /// The latest revision.
    public var latest: Revision { revisions[revisions.count - 1] }

    /// Approvals of the latest revision by maintainers other than the patch's author, the last
    /// verdict of each reviewer counting.
    public func approvals(maintainers: Set<String>) -> Int {
        var last: [String: ReviewVerdict] = [:]
        for review in reviews where review.revision == latest.number && review.verdict != .comment { last[review.author] = review.verdict }
        return last.filter { $0.value == .approve && $0.key != author && maintainers.contains($0.key) }.count
    }

    /// Folds a patch like an issue (`Issue.fold`'s order and rules): revisions are numbered in
    /// that order and only the patch's author (or a maintainer) adds them; anyone may review.
    public static func fold(_ changes: [CobID: CobChange], maintainers: Set<String>) throws -> Patch {
        guard let (rootID, root) = changes.first(where: { $0.value.object == nil }),
            case .openPatch(let title, let description, let target, let topic, let base, let head)? = root.operations.first, root.parents.isEmpty
        else { throw ForgeError.failed("the patch has no opening change") }
        try Issue.checkGraph(changes, root: rootID, type: .patch)
        let author = Hex.encode(root.author)
        var patch = Patch(
            id: rootID, author: author, title: title, description: description, target: target, topic: topic, open: true, labels: [],
            revisions: [Revision(number: 1, change: rootID, base: base, head: head, time: root.time)], reviews: [], comments: [],
            changes: changes.count, ignored: [], heads: [])
        var discussion = Discussion(title: title, refusal: "only the patch's author or a maintainer may add revisions or change its title, labels or state")
        for id in Issue.topologicalOrder(changes) where id != rootID {
            let change = changes[id]!
            let who = Hex.encode(change.author)
            let privileged = who == author || maintainers.contains(who)
            for operation in change.operations where !discussion.apply(operation, id: id, who: who, time: change.time, privileged: privileged) {
                switch operation {
                case .revision(let base, let head) where privileged:
                    patch.revisions.append(Revision(number: patch.revisions.count + 1, change: id, base: base, head: head, time: change.time))
                case .review(let revision, let verdict, let comment):
                    guard revision <= patch.revisions.count else {
                        discussion.ignored.append((id, "a review of revision \(revision), which did not exist when it was made"))
                        continue
                    }
                    patch.reviews.append(Review(revision: revision, author: who, verdict: verdict, comment: comment, time: change.time))
                case .revision:
                    discussion.ignored.append((id, discussion.refusal))
                case .status(let revision, let context, let state):
                    guard revision <= patch.revisions.count else {
                        discussion.ignored.append((id, "a status of revision \(revision), which did not exist when it was set"))
                        continue
                    }
                    patch.statuses.removeAll { $0.revision == revision && $0.context == context }
                    patch.statuses.append(Status(revision: revision, context: context, state: state, author: who))
                case .merged(let revision, _) where privileged:
                    patch.merged = revision
                    discussion.open = false
                case .merged:
                    discussion.ignored.append((id, "only the patch's author or a maintainer merges it"))
                default:
                    discussion.ignored.append((id, "only a patch's first change opens it"))
                }
            }
        }
        patch.title = discussion.title
        patch.open = discussion.open
        patch.labels = discussion.labels.sorted()
        patch.comments = discussion.comments
        patch.ignored = discussion.ignored
        patch.heads = Issue.heads(of: changes)
        return patch
    }
}

extension Patch {
    func write(to writer: inout ByteWriter) {
        writer.writeRaw(id.bytes)
        for text in [author, title, description, target, topic] { writer.writeString(text) }
        writer.write(open)
        writer.write(labels: labels)
        writer.writeVarint(UInt64(revisions.count))
        for revision in revisions {
            writer.writeVarint(UInt64(revision.number))
            writer.writeRaw(revision.change.bytes)
            writer.writeString(revision.base)
            writer.writeString(revision.head)
            writer.writeFixed(revision.time)
        }
        writer.writeVarint(UInt64(reviews.count))
        for review in reviews {
            writer.writeVarint(UInt64(review.revision))
            writer.writeString(review.author)
            writer.write(review.verdict.rawValue)
            writer.writeString(review.comment)
            writer.writeFixed(review.time)
        }
        writer.write(comments: comments)
        writer.writeVarint(UInt64(changes))
        writer.write(ignored: ignored)
        writer.write(ids: heads)
        writer.writeVarint(UInt64(statuses.count))
        for status in statuses {
            writer.writeVarint(UInt64(status.revision))
            writer.writeString(status.context)
            writer.write(status.state.rawValue)
            writer.writeString(status.author)
        }
        writer.writeVarint(UInt64(merged ?? 0))
    }

    init(from reader: inout ByteReader, limits: Limits) throws(DecodingError) {
        let many = limits.forgeCobChangesMax * limits.forgeCobOperationsMax
        id = CobID(bytes: try reader.readRaw(32))!
        author = try reader.readString(limit: 64)
        title = try reader.readString(limit: limits.forgeTitleBytesMax)
        description = try reader.readString(limit: limits.forgeCommentBytesMax)
        target = try reader.readString(limit: limits.forgeRefNameBytesMax)
        topic = try reader.readString(limit: limits.forgeRefNameBytesMax)
        open = try reader.readBool()
        labels = try reader.readLabels(limits: limits)
        revisions = []
        for _ in 0..<(try reader.readCount(limit: many)) {
            revisions.append(
                Revision(
                    number: try reader.readCount(limit: many), change: CobID(bytes: try reader.readRaw(32))!, base: try reader.readString(limit: 64),
                    head: try reader.readString(limit: 64), time: try reader.readFixed64()))
        }
        guard !revisions.isEmpty else { throw .invalid("a patch without revisions") }
        reviews = []
        for _ in 0..<(try reader.readCount(limit: many)) {
            let revision = try reader.readCount(limit: many)
            let author = try reader.readString(limit: 64)
            guard let verdict = ReviewVerdict(rawValue: try reader.readByte()) else { throw .invalid("unknown review verdict") }
            reviews.append(
                Review(revision: revision, author: author, verdict: verdict, comment: try reader.readString(limit: limits.forgeCommentBytesMax), time: try reader.readFixed64()))
        }
        comments = try reader.readComments(limits: limits)
        changes = try reader.readCount(limit: limits.forgeCobChangesMax)
        ignored = try reader.readIgnored(limits: limits)
        heads = try reader.readIDs(limit: limits.forgeCobChangesMax)
        statuses = []
        for _ in 0..<(try reader.readCount(limit: many)) {
            let revision = try reader.readCount(limit: many)
            let context = try reader.readString(limit: 255)
            guard let state = StatusState(rawValue: try reader.readByte()) else { throw .invalid("unknown status state") }
            statuses.append(Status(revision: revision, context: context, state: state, author: try reader.readString(limit: 64)))
        }
        let mergedRevision = try reader.readCount(limit: many)
        merged = mergedRevision == 0 ? nil : mergedRevision
    }
}
