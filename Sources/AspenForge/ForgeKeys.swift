import AspenCore
import AspenLayer

/// Where the forge keeps a repository in the key-value store (DESIGN §14):
///
/// - `("repo", NAME)`: the repository's record (`RepoRecord`);
/// - `("r", NAME, "ref", REFNAME)`: a ref, as git's id in hex (what `git ls-remote` shows);
/// - `("r", NAME, "pack", PACKNAME)`: one pack of the repository, a `BlobReference` to its bytes
///   in the blob store (which keeps the blob from collection);
/// - `("r", NAME, "push")`: the last push (`PushRecord`); each push is a new revision of it,
///   so a watch on it sees every push, in order (the outbox CI reads).
public enum ForgeKeys {
    public static let space = Subspace(["aspen", "forge"])
    public static let repos = space.subspace(["repo"])

    public static func repo(_ name: String) -> [UInt8] { repos.pack([.string(name)]) }
    /// Everything a repository holds besides its record.
    public static func contents(_ name: String) -> Subspace { space.subspace(["r", .string(name)]) }
    public static func refs(_ name: String) -> Subspace { contents(name).subspace(["ref"]) }
    public static func ref(_ name: String, _ ref: String) -> [UInt8] { refs(name).pack([.string(ref)]) }
    public static func packs(_ name: String) -> Subspace { contents(name).subspace(["pack"]) }
    public static func pack(_ name: String, _ pack: String) -> [UInt8] { packs(name).pack([.string(pack)]) }
    public static func push(_ name: String) -> [UInt8] { contents(name).pack(["push"]) }
    /// Push events not yet taken by CI: `(nowMs, id)` → `PushEvent`. Written in the push's own
    /// transaction and removed by the transaction that creates its runs, so that each push is
    /// taken exactly once whichever leader takes it.
    public static let outbox = space.subspace(["outbox"])
    public static func outbox(nowMs: Int64, id: String) -> [UInt8] { outbox.pack([.int(nowMs), .string(id)]) }
    /// A repository's collaborative objects of one type: `(OBJECT, "c", CHANGE)` holds a
    /// `BlobReference` to each change (every change stays referenced), `(OBJECT, "h", CHANGE)`
    /// marks each head.
    public static func cobs(_ name: String, _ type: CobType) -> Subspace { contents(name).subspace(["cob", .int(Int64(type.rawValue))]) }
    public static func cobChange(_ name: String, _ type: CobType, object: CobID, change: CobID) -> [UInt8] {
        cobs(name, type).pack([.bytes(object.bytes), "c", .bytes(change.bytes)])
    }
    public static func cobHead(_ name: String, _ type: CobType, object: CobID, change: CobID) -> [UInt8] {
        cobs(name, type).pack([.bytes(object.bytes), "h", .bytes(change.bytes)])
    }
    public static func cobObject(_ name: String, _ type: CobType, object: CobID) -> Subspace { cobs(name, type).subspace([.bytes(object.bytes)]) }
    /// Branch protection rules, by branch name (without `refs/heads/`).
    public static func protections(_ name: String) -> Subspace { contents(name).subspace(["protect"]) }
    public static func protection(_ name: String, _ branch: String) -> [UInt8] { protections(name).pack([.string(branch)]) }
    /// Packs a repack replaced, kept referenced (so blob collection leaves them) until
    /// `retiredMs` plus the grace: a clone that read the old pack set can still fetch them.
    public static func retired(_ name: String) -> Subspace { contents(name).subspace(["retired"]) }
    public static func retired(_ name: String, _ pack: String, retiredMs: Int64) -> [UInt8] { retired(name).pack([.int(retiredMs), .string(pack)]) }

    /// The last string of a key in `subspace` (a ref's or a pack's name), if it is one.
    public static func name(in subspace: Subspace, _ key: [UInt8]) -> String? {
        guard let tuple = try? subspace.unpack(key), tuple.elements.count == 1, case .string(let name) = tuple.elements[0] else { return nil }
        return name
    }
}

/// What the forge refuses, with the bound or the rule named.
public enum ForgeError: Error, Sendable, Equatable, CustomStringConvertible {
    case badInput(String)
    case notFound(String)
    case exists(String)
    case conflict(String)
    case unavailable(String)
    case failed(String)

    public var description: String {
        switch self {
        case .badInput(let text), .notFound(let text), .exists(let text), .conflict(let text), .unavailable(let text), .failed(let text): text
        }
    }

    /// The code of a forge refusal in the native protocol; the detail carries `code`.
    public static let rpcCode = "forge"

    public var code: String {
        switch self {
        case .badInput: "bad_request"
        case .notFound: "not_found"
        case .exists: "exists"
        case .conflict: "conflict"
        case .unavailable: "unavailable"
        case .failed: "failed"
        }
    }

    public init(code: String, message: String) {
        switch code {
        case "bad_request": self = .badInput(message)
        case "not_found": self = .notFound(message)
        case "exists": self = .exists(message)
        case "conflict": self = .conflict(message)
        case "unavailable": self = .unavailable(message)
        default: self = .failed(message)
        }
    }
}

/// Names users give: repositories and refs.
public enum ForgeNames {
    /// A repository name: segments of letters, digits, `.`, `_` and `-` joined by `/` (`team/app`),
    /// none empty, none starting with `.` or `-`, no `.git` at the end (the URL may add it).
    public static func validate(repo name: String, limits: Limits = .standard) throws(ForgeError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw .badInput("a repository name must not be empty") }
        guard bytes.count <= limits.forgeRepoNameBytesMax else {
            throw .badInput("a repository name of \(bytes.count) bytes exceeds forgeRepoNameBytesMax (\(limits.forgeRepoNameBytesMax))")
        }
        for segment in name.split(separator: "/", omittingEmptySubsequences: false) {
            guard let first = segment.utf8.first else { throw .badInput("repository name \"\(name)\" has an empty segment") }
            guard first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
                throw .badInput("repository name \"\(name)\": a segment must not start with '.' or '-'")
            }
            for byte in segment.utf8 {
                let allowed =
                    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                    || byte == UInt8(ascii: "-")
                guard allowed else {
                    throw .badInput("repository name \"\(name)\": only letters, digits, '.', '_', '-' and '/' between segments are allowed")
                }
            }
            guard !segment.hasSuffix(".git"), !segment.hasSuffix(".lock") else {
                throw .badInput("repository name \"\(name)\": a segment must not end in .git or .lock")
            }
        }
    }

    /// A ref name as git itself would take it (`git check-ref-format`), within the bound: under
    /// `refs/`, no empty component, none starting with `.` or ending in `.lock`, no `..` or `@{`,
    /// not ending in `.`, and no control character, space, DEL or any of `~^:?*[\`. Like git, it
    /// looks at bytes, not characters (a combining mark after `..` does not hide it).
    public static func validate(ref name: String, limits: Limits = .standard) throws(ForgeError) {
        let bytes = Array(name.utf8)
        guard bytes.count <= limits.forgeRefNameBytesMax else {
            throw .badInput("a ref name of \(bytes.count) bytes exceeds forgeRefNameBytesMax (\(limits.forgeRefNameBytesMax))")
        }
        let dot = UInt8(ascii: ".")
        let forbidden = Array("~^:?*[\\".utf8)
        let components = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        let componentsValid = components.allSatisfy { component in
            guard let first = component.first, first != dot else { return false }
            return !component.suffix(5).elementsEqual(".lock".utf8)
        }
        let at = UInt8(ascii: "@")
        let brace = UInt8(ascii: "{")
        let pairsValid = !zip(bytes, bytes.dropFirst()).contains { (pair: (UInt8, UInt8)) -> Bool in
            (pair.0 == dot && pair.1 == dot) || (pair.0 == at && pair.1 == brace)
        }
        guard bytes.starts(with: "refs/".utf8), bytes.last != dot, componentsValid, pairsValid,
            !bytes.contains(where: { $0 < 0x21 || $0 == 0x7F || forbidden.contains($0) })
        else { throw .badInput("\"\(name)\" is not a valid ref name") }
    }

    /// A git object id in hex: 40 digits (SHA-1) or 64 (SHA-256), lower case.
    public static func isObjectID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return (bytes.count == 40 || bytes.count == 64)
            && bytes.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    /// A pack's file name without its extension: `pack-` and its 40 or 64 hex digits.
    public static func isPackName(_ name: String) -> Bool { name.hasPrefix("pack-") && isObjectID(String(name.dropFirst(5))) }

    /// The id git uses for "no object" (a ref created or deleted).
    public static func isZero(_ id: String) -> Bool { !id.isEmpty && id.utf8.allSatisfy { $0 == UInt8(ascii: "0") } }
}
