import AspenCore
import Crypto
import Foundation
import TOMLKit
import Yams

/// SOPS documents (getsops/sops, format version 3) whose data key is wrapped for age X25519
/// recipients: what a node reads from `--bootstrap-secrets` at start.
///
/// A SOPS file is the cleartext tree with each value replaced by
/// `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, plus a `sops` section holding the data key wrapped
/// for each recipient, the rules for which values are encrypted, and a MAC. The rules this decoder
/// follows are sops's own (`sops.go`, `aes/cipher.go`, `stores/`), checked against sops 3.11:
///
/// - A value's associated data is the path of *map keys* leading to it, each followed by `:`
///   (`db:password:`); list items add nothing, so every item of `hosts:` shares `hosts:`.
/// - The MAC is SHA-512 over the cleartext of every value, in document order, upper-case hex —
///   only the values: keys, nulls and comments are not hashed, and values are not delimited.
///   Strings hash as their bytes, integers in decimal, floats in Go's shortest `'f'` form, booleans
///   as `True`/`False`, timestamps in RFC 3339 with nanoseconds. `mac_only_encrypted: true` hashes
///   only encrypted values, after 32 fixed bytes. The MAC is stored encrypted with the data key,
///   `lastmodified` (re-formatted as Go's RFC 3339, seconds precision) as associated data.
/// - Values are encrypted unless a key on their path ends with `unencrypted_suffix` (by default
///   `_unencrypted`); or, when set instead, only where a key ends with `encrypted_suffix`, or
///   matches (or does not match) `encrypted_regex` / `unencrypted_regex`.
///
/// Formats: YAML (Yams; one document), JSON (an order-keeping parser here: Foundation's
/// `JSONSerialization` forgets key order, and the MAC depends on it), and TOML (TOMLKit), which
/// sops itself does not write: the same tree with a `sops` table, keys in byte order (TOML tables
/// keep no order a parser reports). Bounded by `Limits.sopsFileBytesMax`, `depthMax` and
/// `valueCountMax`; every refusal is a `SopsError`.
public enum Sops {
    /// Deepest nesting of maps and lists.
    public static let depthMax = 32
    /// Most values (scalars, maps and lists) in one document.
    public static let valueCountMax = 10_000
    /// Largest armored age file one `sops.age[].enc` may hold.
    public static let encryptedDataKeyBytesMax = 64 * 1024
    /// Longest `encrypted_regex` / `unencrypted_regex`.
    public static let regexBytesMax = 1024
    /// The 32 bytes sops hashes first when `mac_only_encrypted` is set (SHA-256 of "sops").
    static let macOnlyEncryptedInitialization: [UInt8] = [
        0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
        0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
    ]

    /// The decrypted document in `bytes`, whose data key one of `identities` opens.
    public static func decrypt(
        _ bytes: [UInt8], format: SopsFormat, identities: [AgeIdentity], limits: Limits = .standard
    ) throws(SopsError) -> SopsDocument {
        guard bytes.count <= limits.sopsFileBytesMax else {
            throw .tooLarge("the SOPS file is \(bytes.count) bytes, over the limit sopsFileBytesMax (\(limits.sopsFileBytesMax) bytes)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .malformed("the SOPS file is not UTF-8 text") }
        var budget = SopsBudget()
        let root: SopsValue
        switch format {
        case .yaml: root = try SopsYAML.parse(text, budget: &budget)
        case .json: root = try SopsJSON.parse(bytes, budget: &budget)
        case .toml: root = try SopsTOML.parse(text, budget: &budget)
        }
        var (data, metadata) = try SopsMetadata.split(root)
        let dataKey = try metadata.openDataKey(identities)
        var walker = SopsWalker(key: SymmetricKey(data: dataKey), rules: try metadata.rules(), macOnlyEncrypted: metadata.macOnlyEncrypted)
        let tree = try walker.walk(data, path: [])
        let storedMAC = try SopsCipher.decryptMAC(metadata.mac, key: walker.key, lastModified: metadata.lastModified)
        guard walker.macHex() == storedMAC else { throw .macMismatch }
        return SopsDocument(
            tree: tree, version: metadata.version, lastModified: metadata.lastModified, openedFor: metadata.openedFor,
            encryptedPaths: walker.encryptedPaths, macOnlyEncrypted: metadata.macOnlyEncrypted)
    }

    /// The decrypted document in the file at `path`, read only up to `limits.sopsFileBytesMax`;
    /// the format is `format`, or else the file's extension (.yaml/.yml, .json, .toml).
    public static func decryptFile(
        atPath path: String, format: SopsFormat? = nil, identities: [AgeIdentity], limits: Limits = .standard
    ) throws(SopsError) -> SopsDocument {
        guard let chosen = format ?? SopsFormat(path: path) else {
            throw .unknownFormat("cannot tell the format of \(path) from its extension; name it .yaml, .yml, .json or .toml, or say the format")
        }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .io("cannot open \(path) for reading") }
        defer { try? handle.close() }
        let contents: Data?
        do { contents = try handle.read(upToCount: limits.sopsFileBytesMax + 1) } catch { throw .io("cannot read \(path): \(error)") }
        let bytes = Array(contents ?? Data())
        guard bytes.count <= limits.sopsFileBytesMax else {
            throw .tooLarge("the SOPS file \(path) is over the limit sopsFileBytesMax (\(limits.sopsFileBytesMax) bytes)")
        }
        return try decrypt(bytes, format: chosen, identities: identities, limits: limits)
    }

    /// Every scalar of `tree` with the keys (and list positions, in decimal) leading to it, in
    /// document order; nulls are left out.
    public static func flatten(_ tree: SopsValue) -> [(path: [String], value: String)] {
        var entries: [(path: [String], value: String)] = []
        flatten(tree, path: [], into: &entries)
        return entries
    }

    static func flatten(_ value: SopsValue, path: [String], into entries: inout [(path: [String], value: String)]) {
        switch value {
        case .map(let fields): for field in fields { flatten(field.value, path: path + [field.key], into: &entries) }
        case .list(let items): for (index, item) in items.enumerated() { flatten(item, path: path + [String(index)], into: &entries) }
        case .null: break
        default: entries.append((path, value.text ?? ""))
        }
    }
}

/// How a SOPS file is written.
public enum SopsFormat: String, Sendable, CaseIterable {
    case yaml, json, toml

    /// The format a file's extension names, if any (`.yaml`/`.yml`, `.json`, `.toml`; any case).
    public init?(path: String) {
        let name = path.split(separator: "/").last.map(String.init)?.lowercased() ?? ""
        if name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            self = .yaml
        } else if name.hasSuffix(".json") {
            self = .json
        } else if name.hasSuffix(".toml") {
            self = .toml
        } else {
            return nil
        }
    }
}

/// A value of a SOPS tree, before or after decryption. Maps keep their order.
public indirect enum SopsValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int)
    case float(Double)
    case string(String)
    /// A value of sops type `bytes`.
    case bytes([UInt8])
    /// A timestamp, as RFC 3339 text with nanoseconds (Go's `time.Time` text form).
    case timestamp(String)
    case list([SopsValue])
    case map([SopsField])

    /// The value under `key`, when this is a map that has it.
    public subscript(key: String) -> SopsValue? {
        guard case .map(let fields) = self else { return nil }
        return fields.first { $0.key == key }?.value
    }

    /// A scalar as text: strings as they are, numbers in decimal (floats as sops hashes them),
    /// booleans `true`/`false`, bytes as UTF-8; nil for null, maps and lists.
    public var text: String? {
        switch self {
        case .string(let value): value
        case .integer(let value): String(value)
        case .float(let value): SopsNumbers.formatFloat(value)
        case .bool(let value): value ? "true" : "false"
        case .bytes(let value): String(decoding: value, as: UTF8.self)
        case .timestamp(let value): value
        case .null, .list, .map: nil
        }
    }

    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .integer: "integer"
        case .float: "float"
        case .string: "string"
        case .bytes: "bytes"
        case .timestamp: "timestamp"
        case .list: "list"
        case .map: "map"
        }
    }
}

/// One entry of a map.
public struct SopsField: Sendable, Equatable {
    public var key: String
    public var value: SopsValue

    public init(key: String, value: SopsValue) {
        self.key = key
        self.value = value
    }
}

/// A decrypted SOPS document.
public struct SopsDocument: Sendable {
    /// The cleartext tree (the top-level map, without the `sops` section).
    public let tree: SopsValue
    /// The `sops.version` that wrote it, and its `sops.lastmodified`.
    public let version: String
    public let lastModified: String
    /// The `recipient` of the `sops.age` entry whose data key an identity opened.
    public let openedFor: String
    /// The paths (`a:b:`, as sops writes them) of the values that were encrypted in the file;
    /// the others were cleartext, which sops's MAC protects weakly (values only, not keys).
    public let encryptedPaths: Set<String>
    /// Whether the file's MAC covers only its encrypted values (`mac_only_encrypted`).
    public let macOnlyEncrypted: Bool

    /// Every scalar with its path, in document order (see `Sops.flatten`).
    public var flattened: [(path: [String], value: String)] { Sops.flatten(tree) }
}

/// Why a SOPS file was refused.
public enum SopsError: Error, Sendable, Equatable, CustomStringConvertible {
    case tooLarge(String)
    case unknownFormat(String)
    case io(String)
    case malformed(String)
    case tooDeep(limit: Int)
    case tooManyValues(limit: Int)
    case metadata(String)
    case unsupported(String)
    case noMatchingIdentity(recipients: [String])
    case dataKey(String)
    case value(path: String, reason: String)
    case macMismatch

    public var message: String {
        switch self {
        case .tooLarge(let text), .unknownFormat(let text), .io(let text), .dataKey(let text): text
        case .malformed(let text): "the SOPS file does not parse: \(text)"
        case .tooDeep(let limit): "the SOPS file nests maps and lists deeper than the limit of \(limit)"
        case .tooManyValues(let limit): "the SOPS file holds more than the limit of \(limit) values"
        case .metadata(let text): "the SOPS file's sops section is invalid: \(text)"
        case .unsupported(let text): "the SOPS file uses something this decoder does not support: \(text)"
        case .noMatchingIdentity(let recipients):
            recipients.isEmpty
                ? "this SOPS file's data key is wrapped for no age recipient, so no age identity can open it"
                : "no identity matches any age recipient of this SOPS file (its recipients: \(recipients.joined(separator: ", ")))"
        case .value(let path, let reason): "the SOPS value at \(path) cannot be read: \(reason)"
        case .macMismatch: "the SOPS file's MAC does not match: it was altered"
        }
    }

    public var description: String { message }
}

/// Counts values as a document is read, so an alias bomb or a huge file stops at the bound.
struct SopsBudget {
    var remaining = Sops.valueCountMax

    mutating func take(depth: Int) throws(SopsError) {
        guard depth <= Sops.depthMax else { throw .tooDeep(limit: Sops.depthMax) }
        guard remaining > 0 else { throw .tooManyValues(limit: Sops.valueCountMax) }
        remaining -= 1
    }
}

// MARK: - Metadata

/// The `sops` section: wrapped data keys, the encryption rules, the MAC.
struct SopsMetadata {
    var ageEntries: [(recipient: String, encrypted: String)] = []
    var lastModified = ""
    var mac = ""
    var version = ""
    var unencryptedSuffix: String?
    var encryptedSuffix: String?
    var unencryptedRegex: String?
    var encryptedRegex: String?
    var macOnlyEncrypted = false
    var openedFor = ""

    /// The data tree (the top-level map without `sops`) and the metadata.
    static func split(_ root: SopsValue) throws(SopsError) -> (SopsValue, SopsMetadata) {
        guard case .map(var fields) = root else { throw .malformed("the top level of a SOPS document must be a map") }
        let indices = fields.indices.filter { fields[$0].key == "sops" }
        guard let index = indices.first else { throw .metadata("there is none: the file is not SOPS-encrypted") }
        guard indices.count == 1 else { throw .metadata("the file has more than one sops section") }
        guard case .map(let section) = fields[index].value else { throw .metadata("sops is not a map") }
        fields.remove(at: index)
        return (.map(fields), try SopsMetadata(section))
    }

    init(_ section: [SopsField]) throws(SopsError) {
        func scalar(_ key: String) throws(SopsError) -> String? {
            guard let value = section.first(where: { $0.key == key })?.value, value != .null else { return nil }
            guard let text = value.text else { throw .metadata("sops.\(key) is a \(value.kind), not a scalar") }
            return text
        }
        for unsupported in ["key_groups", "encrypted_comment_regex", "unencrypted_comment_regex"] {
            if let value = section.first(where: { $0.key == unsupported })?.value, value != .null {
                throw .unsupported(
                    unsupported == "key_groups"
                        ? "key_groups (a data key split with Shamir's scheme); wrap the data key for age recipients directly"
                        : "\(unsupported) (comments are not read, so comment rules cannot be followed)")
            }
        }
        ageEntries = try Self.ageEntries(section.first { $0.key == "age" }?.value)
        guard let lastModified = try scalar("lastmodified") else { throw .metadata("sops.lastmodified is missing") }
        guard let mac = try scalar("mac"), !mac.isEmpty else { throw .metadata("sops.mac is missing") }
        self.lastModified = lastModified
        self.mac = mac
        version = try scalar("version") ?? ""
        unencryptedSuffix = try scalar("unencrypted_suffix").flatMap { $0.isEmpty ? nil : $0 }
        encryptedSuffix = try scalar("encrypted_suffix").flatMap { $0.isEmpty ? nil : $0 }
        unencryptedRegex = try scalar("unencrypted_regex").flatMap { $0.isEmpty ? nil : $0 }
        encryptedRegex = try scalar("encrypted_regex").flatMap { $0.isEmpty ? nil : $0 }
        let ruleCount = [unencryptedSuffix, encryptedSuffix, unencryptedRegex, encryptedRegex].compactMap { $0 }.count
        guard ruleCount <= 1 else {
            throw .metadata("it sets more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex")
        }
        if ruleCount == 0 { unencryptedSuffix = "_unencrypted" }
        switch try scalar("mac_only_encrypted")?.lowercased() {
        case nil, "false": macOnlyEncrypted = false
        case "true": macOnlyEncrypted = true
        case let other?: throw .metadata("sops.mac_only_encrypted is \(other), not true or false")
        }
    }

    static func ageEntries(_ value: SopsValue?) throws(SopsError) -> [(recipient: String, encrypted: String)] {
        guard let value, value != .null else { return [] }
        guard case .list(let items) = value else { throw .metadata("sops.age is not a list") }
        var entries: [(recipient: String, encrypted: String)] = []
        for item in items {
            guard case .string(let encrypted)? = item["enc"] else { throw .metadata("a sops.age entry has no enc string") }
            let recipient: String
            if case .string(let text)? = item["recipient"] { recipient = text } else { recipient = "(no recipient)" }
            entries.append((recipient, encrypted))
        }
        return entries
    }

    /// The 32-byte data key from the first age entry an identity opens.
    mutating func openDataKey(_ identities: [AgeIdentity]) throws(SopsError) -> [UInt8] {
        var failures: [String] = []
        for entry in ageEntries {
            do {
                let key = try Age.decrypt(Array(entry.encrypted.utf8), identities: identities, fileBytesMax: Sops.encryptedDataKeyBytesMax)
                guard key.count == 32 else {
                    failures.append("\(entry.recipient): the data key is \(key.count) bytes, not 32")
                    continue
                }
                openedFor = entry.recipient
                return key
            } catch .noMatchingIdentity {
                continue
            } catch {
                failures.append("\(entry.recipient): \(error.message)")
            }
        }
        guard failures.isEmpty else { throw .dataKey("no sops.age entry opened: " + failures.joined(separator: "; ")) }
        throw .noMatchingIdentity(recipients: ageEntries.map(\.recipient))
    }

    func rules() throws(SopsError) -> SopsRules {
        func compile(_ pattern: String?, _ name: String) throws(SopsError) -> Regex<AnyRegexOutput>? {
            guard let pattern else { return nil }
            guard pattern.utf8.count <= Sops.regexBytesMax else { throw .metadata("sops.\(name) is longer than \(Sops.regexBytesMax) bytes") }
            do {
                return try Regex(pattern).matchingSemantics(.unicodeScalar)
            } catch {
                throw .metadata("sops.\(name) is not a regular expression this decoder reads: \(error)")
            }
        }
        return SopsRules(
            unencryptedSuffix: unencryptedSuffix, encryptedSuffix: encryptedSuffix,
            unencryptedRegex: try compile(unencryptedRegex, "unencrypted_regex"), encryptedRegex: try compile(encryptedRegex, "encrypted_regex"))
    }
}

/// Which values are encrypted, from the keys on their path (sops's `shouldBeEncrypted`).
struct SopsRules {
    var unencryptedSuffix: String?
    var encryptedSuffix: String?
    var unencryptedRegex: Regex<AnyRegexOutput>?
    var encryptedRegex: Regex<AnyRegexOutput>?

    func isEncrypted(_ path: [String]) -> Bool {
        if let suffix = unencryptedSuffix { return !path.contains { $0.hasSuffix(suffix) } }
        if let suffix = encryptedSuffix { return path.contains { $0.hasSuffix(suffix) } }
        if let regex = unencryptedRegex { return !path.contains { $0.firstMatch(of: regex) != nil } }
        if let regex = encryptedRegex { return path.contains { $0.firstMatch(of: regex) != nil } }
        return true
    }
}

// MARK: - Decryption and the MAC

/// Walks the tree in document order: decrypts what the rules say is encrypted and hashes each
/// value's cleartext for the MAC.
struct SopsWalker {
    let key: SymmetricKey
    let rules: SopsRules
    let macOnlyEncrypted: Bool
    var hash = SHA512()
    /// Every encrypted value's path, as `SopsCipher.pathText` writes it.
    var encryptedPaths: Set<String> = []

    init(key: SymmetricKey, rules: SopsRules, macOnlyEncrypted: Bool) {
        self.key = key
        self.rules = rules
        self.macOnlyEncrypted = macOnlyEncrypted
        if macOnlyEncrypted { hash.update(data: Sops.macOnlyEncryptedInitialization) }
    }

    mutating func walk(_ value: SopsValue, path: [String]) throws(SopsError) -> SopsValue {
        switch value {
        case .map(let fields):
            var result: [SopsField] = []
            result.reserveCapacity(fields.count)
            for field in fields { result.append(SopsField(key: field.key, value: try walk(field.value, path: path + [field.key]))) }
            return .map(result)
        case .list(let items):
            var result: [SopsValue] = []
            result.reserveCapacity(items.count)
            for item in items { result.append(try walk(item, path: path)) }
            return .list(result)
        case .null:
            // sops neither decrypts nor hashes a null.
            return .null
        default:
            return try leaf(value, path: path)
        }
    }

    mutating func leaf(_ value: SopsValue, path: [String]) throws(SopsError) -> SopsValue {
        let encrypted = rules.isEncrypted(path)
        if encrypted { encryptedPaths.insert(SopsCipher.pathText(path)) }
        let cleartext: SopsValue
        let hashed: [UInt8]
        if encrypted {
            guard case .string(let text) = value else {
                throw .value(path: SopsCipher.pathText(path), reason: "it should be encrypted (an ENC[…] string) but is a \(value.kind)")
            }
            (cleartext, hashed) = try SopsCipher.decrypt(text, key: key, path: path)
        } else {
            cleartext = value
            hashed = try SopsNumbers.macBytes(value, path: path)
        }
        if !macOnlyEncrypted || encrypted { hash.update(data: hashed) }
        return cleartext
    }

    func macHex() -> String {
        hash.finalize().map { byte in
            let digits = Array("0123456789ABCDEF")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
        }.joined()
    }
}

/// sops's value cipher: AES-256-GCM under the data key, a 32-byte IV, the path as associated data.
enum SopsCipher {
    static let prefix = "ENC[AES256_GCM,data:"

    static func pathText(_ path: [String]) -> String { path.joined(separator: ":") + ":" }

    /// The cleartext of an `ENC[…]` value and the bytes sops hashes for it.
    static func decrypt(_ text: String, key: SymmetricKey, path: [String]) throws(SopsError) -> (SopsValue, [UInt8]) {
        let location = pathText(path)
        // sops stores an empty string (or empty bytes) as an empty, unencrypted value.
        if text.isEmpty { return (.string(""), []) }
        let (raw, type) = try open(text, key: key, associatedData: Array(location.utf8), path: location)
        let cleartext = String(decoding: raw, as: UTF8.self)
        func invalid(_ what: String) -> SopsError { .value(path: location, reason: "its cleartext is not a valid \(what)") }
        switch type {
        case "str":
            return (.string(cleartext), raw)
        case "bytes":
            return (.bytes(raw), raw)
        case "int":
            guard let value = Int(cleartext) else { throw invalid("integer") }
            return (.integer(value), Array(String(value).utf8))
        case "float":
            guard let value = Double(cleartext) else { throw invalid("float") }
            return (.float(value), Array(SopsNumbers.formatFloat(value).utf8))
        case "bool":
            guard let value = SopsNumbers.parseBool(cleartext) else { throw invalid("boolean") }
            return (.bool(value), Array((value ? "True" : "False").utf8))
        case "time":
            guard let value = SopsTime.canonical(cleartext, yaml: false, nanoseconds: true) else { throw invalid("RFC 3339 time") }
            return (.timestamp(value), Array(value.utf8))
        case "comment":
            throw .value(path: location, reason: "it is an encrypted comment where a value belongs")
        default:
            throw .value(path: location, reason: "its type \(type) is not one sops writes")
        }
    }

    /// The stored MAC (decrypted with `lastmodified`, in Go's RFC 3339 form, as associated data).
    static func decryptMAC(_ text: String, key: SymmetricKey, lastModified: String) throws(SopsError) -> String {
        guard let associated = SopsTime.canonical(lastModified, yaml: false, nanoseconds: false) else {
            throw .metadata("sops.lastmodified (\(lastModified)) is not an RFC 3339 time")
        }
        let (raw, type) = try open(text, key: key, associatedData: Array(associated.utf8), path: "sops.mac")
        guard type == "str" else { throw .metadata("sops.mac is of type \(type), not str") }
        return String(decoding: raw, as: UTF8.self)
    }

    /// The cleartext bytes and sops type of an `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` value.
    static func open(_ text: String, key: SymmetricKey, associatedData: [UInt8], path: String) throws(SopsError) -> ([UInt8], String) {
        func malformed(_ why: String) -> SopsError { .value(path: path, reason: "it is not a sops ENC[AES256_GCM,…] value: \(why)") }
        guard text.hasPrefix(prefix), text.hasSuffix("]") else { throw malformed("wrong prefix or suffix") }
        let inner = text.dropFirst(prefix.count).dropLast()
        guard let ivRange = inner.range(of: ",iv:"), let tagRange = inner.range(of: ",tag:"), let typeRange = inner.range(of: ",type:"),
            ivRange.upperBound <= tagRange.lowerBound, tagRange.upperBound <= typeRange.lowerBound
        else { throw malformed("missing iv, tag or type") }
        let fields = [inner[..<ivRange.lowerBound], inner[ivRange.upperBound..<tagRange.lowerBound], inner[tagRange.upperBound..<typeRange.lowerBound]]
        // Go's base64.StdEncoding, which sops uses, tolerates non-zero bits after the last byte.
        let decoded = fields.map { BootstrapBase64.decode(Array($0.utf8), padded: true, canonical: false) }
        guard let data = decoded[0], let iv = decoded[1], let tag = decoded[2] else { throw malformed("data, iv or tag is not base64") }
        guard !data.isEmpty else { throw malformed("empty data") }
        guard iv.count >= 12, iv.count <= 256 else { throw malformed("an iv of \(iv.count) bytes") }
        guard tag.count == 16 else { throw malformed("a tag of \(tag.count) bytes, not 16") }
        // swift-crypto's AES.GCM.Nonce takes any length from 12 bytes; BoringSSL derives the
        // counter block from a long IV with GHASH, as Go's NewGCMWithNonceSize does.
        guard let nonce = try? AES.GCM.Nonce(data: iv), let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: data, tag: tag),
            let opened = try? AES.GCM.open(box, using: key, authenticating: associatedData)
        else {
            throw .value(path: path, reason: "it does not decrypt (altered, moved to another key, or under another data key)")
        }
        return (Array(opened), String(inner[typeRange.upperBound...]))
    }
}

// MARK: - Go's scalar forms

/// The text forms sops (in Go) gives numbers and booleans, so that the MAC of unencrypted values
/// matches its own.
enum SopsNumbers {
    /// Bytes sops hashes for an unencrypted value (its `ToBytes`).
    static func macBytes(_ value: SopsValue, path: [String]) throws(SopsError) -> [UInt8] {
        switch value {
        case .string(let text): Array(text.utf8)
        case .bytes(let bytes): bytes
        case .integer(let number): Array(String(number).utf8)
        case .float(let number): Array(formatFloat(number).utf8)
        case .bool(let flag): Array((flag ? "True" : "False").utf8)
        case .timestamp(let text): Array(text.utf8)
        case .null, .list, .map:
            throw .value(path: SopsCipher.pathText(path), reason: "a \(value.kind) is not a scalar sops can hash")
        }
    }

    /// Go's `strconv.FormatFloat(value, 'f', -1, 64)`: the shortest digits that round-trip,
    /// written without an exponent ("1", "0.000001", "1000000000000000000000").
    static func formatFloat(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
        let sign = value.sign == .minus ? "-" : ""
        if value == 0 { return sign + "0" }
        // Swift's description is the shortest round-trip form: "1.5", "1e-05", "1.2345e+19".
        let text = "\(value.magnitude)"
        let parts = text.split(separator: "e", maxSplits: 1)
        let mantissa = parts[0]
        let exponent = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        let point = mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count
        var digits = Array(mantissa.filter { $0 != "." })
        var pointPosition = point + exponent
        while digits.first == "0", digits.count > 1 {
            digits.removeFirst()
            pointPosition -= 1
        }
        while digits.last == "0", digits.count > 1 { digits.removeLast() }
        let digitText = String(digits)
        if pointPosition <= 0 { return sign + "0." + String(repeating: "0", count: -pointPosition) + digitText }
        if pointPosition >= digits.count { return sign + digitText + String(repeating: "0", count: pointPosition - digits.count) }
        return sign + String(digits[..<pointPosition]) + "." + String(digits[pointPosition...])
    }

    /// Go's `strconv.ParseBool`.
    static func parseBool(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": true
        case "0", "f", "F", "FALSE", "false", "False": false
        default: nil
        }
    }

    /// Go's `strconv.ParseInt(text, 0, 64)` on text without underscores: an optional sign, then
    /// decimal, `0x` hex, `0o`/`0` octal or `0b` binary digits.
    static func parseGoInteger(_ text: Substring) -> Int? {
        var rest = text
        var negative = false
        if let first = rest.first, first == "+" || first == "-" {
            negative = first == "-"
            rest = rest.dropFirst()
        }
        var radix = 10
        let lower = rest.lowercased()
        if lower.hasPrefix("0x") {
            radix = 16
            rest = rest.dropFirst(2)
        } else if lower.hasPrefix("0o") {
            radix = 8
            rest = rest.dropFirst(2)
        } else if lower.hasPrefix("0b") {
            radix = 2
            rest = rest.dropFirst(2)
        } else if rest.count > 1, rest.first == "0" {
            radix = 8
            rest = rest.dropFirst()
        }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isASCII && ($0.hexDigitValue ?? 99) < radix }),
            let magnitude = UInt64(rest, radix: radix)
        else { return nil }
        if negative { return magnitude <= UInt64(Int64.max) + 1 ? Int(truncatingIfNeeded: 0 &- magnitude) : nil }
        return magnitude <= UInt64(Int64.max) ? Int(magnitude) : nil
    }
}

/// Timestamps as Go reads and writes them: YAML's plain timestamps (go-yaml's formats), RFC 3339,
/// and Go's `time.Time` text (RFC 3339, with nanoseconds trimmed of trailing zeros, or without).
enum SopsTime {
    /// The canonical text of `text`, or nil when it is not a timestamp. `yaml` accepts go-yaml's
    /// forms (one-digit fields, a lower-case `t`, a space and no zone, a date alone); otherwise
    /// only RFC 3339. `nanoseconds` keeps the fraction (Go's `MarshalText`); else it is dropped
    /// (Go's `Format(time.RFC3339)`).
    static func canonical(_ text: String, yaml: Bool, nanoseconds: Bool) -> String? {
        var scanner = Scanner(Array(text.utf8))
        guard let year = scanner.number(minimum: 4, maximum: 4), scanner.take("-"),
            let month = scanner.number(minimum: yaml ? 1 : 2, maximum: 2), scanner.take("-"),
            let day = scanner.number(minimum: yaml ? 1 : 2, maximum: 2), (1...12).contains(month),
            (1...daysIn(month: month, year: year)).contains(day)
        else { return nil }
        var clock = (hour: 0, minute: 0, second: 0)
        var fraction = ""
        var offsetMinutes = 0
        if scanner.atEnd {
            guard yaml else { return nil }
        } else {
            let spaceSeparated = yaml && scanner.take(" ")
            guard spaceSeparated || scanner.take("T") || (yaml && scanner.take("t")) else { return nil }
            let width = yaml ? 1 : 2
            guard let hour = scanner.number(minimum: width, maximum: 2), scanner.take(":"),
                let minute = scanner.number(minimum: width, maximum: 2), scanner.take(":"),
                let second = scanner.number(minimum: width, maximum: 2), hour < 24, minute < 60, second < 60
            else { return nil }
            clock = (hour, minute, second)
            if scanner.take(".") {
                fraction = scanner.digits(maximum: 9)
                guard !fraction.isEmpty else { return nil }
            }
            if spaceSeparated {
                guard scanner.atEnd else { return nil }
            } else if !scanner.take("Z") {
                guard let sign = scanner.next(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-"),
                    let hours = scanner.number(minimum: 2, maximum: 2), scanner.take(":"), let minutes = scanner.number(minimum: 2, maximum: 2),
                    hours < 24, minutes < 60
                else { return nil }
                offsetMinutes = (sign == UInt8(ascii: "-") ? -1 : 1) * (hours * 60 + minutes)
            }
            guard scanner.atEnd else { return nil }
        }
        while fraction.last == "0" { fraction.removeLast() }
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        var result = "\(year)-\(two(month))-\(two(day))T\(two(clock.hour)):\(two(clock.minute)):\(two(clock.second))"
        if nanoseconds && !fraction.isEmpty { result += "." + fraction }
        if offsetMinutes == 0 { return result + "Z" }
        let magnitude = abs(offsetMinutes)
        return result + (offsetMinutes < 0 ? "-" : "+") + two(magnitude / 60) + ":" + two(magnitude % 60)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool { index == bytes.count }

        mutating func next() -> UInt8? {
            guard index < bytes.count else { return nil }
            defer { index += 1 }
            return bytes[index]
        }

        mutating func take(_ character: Character) -> Bool {
            guard index < bytes.count, let ascii = character.asciiValue, bytes[index] == ascii else { return false }
            index += 1
            return true
        }

        mutating func digits(maximum: Int) -> String {
            var text = ""
            while index < bytes.count, text.count < maximum, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                text.append(Character(Unicode.Scalar(bytes[index])))
                index += 1
            }
            return text
        }

        mutating func number(minimum: Int, maximum: Int) -> Int? {
            let text = digits(maximum: maximum)
            guard text.count >= minimum else { return nil }
            return Int(text)
        }
    }
}

// MARK: - YAML

/// YAML through Yams, with scalars typed as go-yaml v3 (which sops uses) types them: only a
/// plain scalar is resolved (`true`, `~`, `0x1F`, `1_000`, `.inf`, timestamps…); quoted ones are
/// strings. Comments are not read (sops keeps them, encrypted, but leaves them out of the MAC).
enum SopsYAML {
    static func parse(_ text: String, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        let root: Node
        do {
            let parser = try Parser(yaml: text, resolver: .basic)
            guard let first = try parser.nextRoot() else { throw SopsError.malformed("the YAML document is empty") }
            guard try parser.nextRoot() == nil else {
                throw SopsError.unsupported("a YAML stream of several documents; a bootstrap file holds one")
            }
            root = first
        } catch let error as SopsError {
            throw error
        } catch let error as YamlError {
            throw .malformed("YAML: " + describe(error))
        } catch {
            throw .malformed("YAML: \(error)")
        }
        return try convert(root, depth: 0, budget: &budget)
    }

    /// A parse error without the line of the file that Yams quotes (it may hold a secret).
    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            "\(problem) at line \(mark.line), column \(mark.column)"
        case .reader(let problem, _, _, _):
            problem
        case .duplicatedKeysInMapping(let duplicates, _):
            "duplicate keys \(duplicates.map(\.description).sorted().joined(separator: ", "))"
        default:
            "\(error)"
        }
    }

    static func convert(_ node: Node, depth: Int, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        try budget.take(depth: depth)
        switch node {
        case .scalar(let scalar):
            return try value(of: scalar)
        case .mapping(let mapping):
            var fields: [SopsField] = []
            var seen = Set<String>()
            for (keyNode, valueNode) in mapping {
                guard case .scalar(let keyScalar) = keyNode, case .string(let key) = try value(of: keyScalar) else {
                    throw .malformed("a map key is not a string (sops reads only string keys)")
                }
                guard seen.insert(key).inserted else { throw .malformed("the key \(key) appears twice in one map") }
                fields.append(SopsField(key: key, value: try convert(valueNode, depth: depth + 1, budget: &budget)))
            }
            return .map(fields)
        case .sequence(let sequence):
            var items: [SopsValue] = []
            for item in sequence { items.append(try convert(item, depth: depth + 1, budget: &budget)) }
            return .list(items)
        case .alias:
            throw .malformed("an unresolved YAML alias")
        }
    }

    static func value(of scalar: Node.Scalar) throws(SopsError) -> SopsValue {
        let text = scalar.string
        // Yams keeps a scalar's tag name internal; its description is the name.
        let tag = scalar.tag.description
        if tag == Tag.Name.implicit.rawValue {
            return scalar.style == .plain || scalar.style == .any ? resolvePlain(text) : .string(text)
        }
        if tag == Tag.Name.str.rawValue || tag == Tag.Name.nonSpecific.rawValue { return .string(text) }
        let expected: [String: String] = [
            Tag.Name.null.rawValue: "null", Tag.Name.bool.rawValue: "boolean", Tag.Name.int.rawValue: "integer",
            Tag.Name.float.rawValue: "float", Tag.Name.timestamp.rawValue: "timestamp",
        ]
        guard let kind = expected[tag] else { throw .unsupported("the YAML tag \(tag)") }
        let resolved = resolvePlain(text)
        if kind == "float", case .integer(let number) = resolved { return .float(Double(number)) }
        guard resolved.kind == kind else { throw .malformed("a scalar tagged \(kind) is not one") }
        return resolved
    }

    /// go-yaml v3's resolution of a plain scalar.
    static func resolvePlain(_ text: String) -> SopsValue {
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case ".nan", ".NaN", ".NAN": return .float(.nan)
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .float(.infinity)
        case "-.inf", "-.Inf", "-.INF": return .float(-.infinity)
        case "-0", "-0.0": return .float(-0.0)
        default: break
        }
        guard let first = text.first else { return .string(text) }
        if first == "." {
            if let number = Double(text), number.isFinite, isDecimal(text) { return .float(number) }
            return .string(text)
        }
        guard first.isASCII, first.isNumber || first == "+" || first == "-" else { return .string(text) }
        if let time = SopsTime.canonical(text, yaml: true, nanoseconds: true) { return .timestamp(time) }
        let plain = text.replacingOccurrences(of: "_", with: "")
        if let number = SopsNumbers.parseGoInteger(plain[...]) { return .integer(number) }
        // go-yaml makes an unsigned 64-bit integer of this, which sops cannot hash; kept as text.
        if plain.first != "0", UInt64(plain) != nil { return .string(text) }
        if isDecimal(plain), let number = Double(plain), number.isFinite { return .float(number) }
        return .string(text)
    }

    /// go-yaml's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
    static func isDecimal(_ text: String) -> Bool {
        var bytes = Array(text.utf8)[...]
        func digits() -> Int {
            let count = bytes.prefix { $0 >= 0x30 && $0 <= 0x39 }.count
            bytes = bytes.dropFirst(count)
            return count
        }
        if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { bytes = bytes.dropFirst() }
        if bytes.first == UInt8(ascii: ".") {
            bytes = bytes.dropFirst()
            guard digits() > 0 else { return false }
        } else {
            guard digits() > 0 else { return false }
            if bytes.first == UInt8(ascii: ".") {
                bytes = bytes.dropFirst()
                _ = digits()
            }
        }
        if let e = bytes.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { bytes = bytes.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return bytes.isEmpty
    }
}

// MARK: - TOML

/// TOML through TOMLKit. sops has no TOML store; this one reads the same tree with a `sops` table
/// and walks each table's keys in byte order (the order TOMLKit reports, made explicit).
enum SopsTOML {
    static func parse(_ text: String, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch { throw .malformed("TOML: \(error)") }
        return try convert(table, depth: 0, budget: &budget)
    }

    static func convert(_ value: any TOMLValueConvertible, depth: Int, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        try budget.take(depth: depth)
        switch value.type {
        case .table:
            guard let table = value.table else { throw .malformed("an unreadable TOML table") }
            var fields: [SopsField] = []
            for key in table.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                guard let child = table[key] else { throw .malformed("an unreadable TOML value under \(key)") }
                fields.append(SopsField(key: key, value: try convert(child, depth: depth + 1, budget: &budget)))
            }
            return .map(fields)
        case .array:
            guard let array = value.array else { throw .malformed("an unreadable TOML array") }
            var items: [SopsValue] = []
            for item in array { items.append(try convert(item, depth: depth + 1, budget: &budget)) }
            return .list(items)
        case .string:
            return .string(value.string ?? "")
        case .int:
            guard let number = value.int else { throw .malformed("an unreadable TOML integer") }
            return .integer(number)
        case .double:
            guard let number = value.double else { throw .malformed("an unreadable TOML float") }
            return .float(number)
        case .bool:
            return .bool(value.bool ?? false)
        case .date, .time, .dateTime:
            throw .unsupported("TOML dates and times (write them as strings)")
        }
    }
}

// MARK: - JSON

/// A strict JSON (RFC 8259) reader that keeps object keys in order — the MAC depends on the order,
/// and Foundation's `JSONSerialization` forgets it. Numbers become integers when they are integer
/// literals that fit 64 bits, floats otherwise, as sops's JSON store does. Duplicate keys are refused.
struct SopsJSON {
    let bytes: [UInt8]
    var index = 0

    static func parse(_ bytes: [UInt8], budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        var reader = SopsJSON(bytes: bytes)
        reader.skipWhitespace()
        guard reader.peek == UInt8(ascii: "{") else { throw .malformed("JSON: the top level must be an object") }
        let value = try reader.value(depth: 0, budget: &budget)
        reader.skipWhitespace()
        guard reader.index == bytes.count else { throw reader.error("data after the JSON document") }
        return value
    }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    func error(_ why: String) -> SopsError { .malformed("JSON: \(why) at byte \(index)") }

    mutating func skipWhitespace() {
        while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    mutating func expect(_ byte: UInt8) throws(SopsError) {
        guard peek == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        index += 1
    }

    mutating func value(depth: Int, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        try budget.take(depth: depth)
        skipWhitespace()
        switch peek {
        case UInt8(ascii: "{"): return try object(depth: depth, budget: &budget)
        case UInt8(ascii: "["): return try array(depth: depth, budget: &budget)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case let byte? where byte == UInt8(ascii: "-") || (byte >= 0x30 && byte <= 0x39): return try number()
        default: throw error("expected a value")
        }
    }

    mutating func object(depth: Int, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        index += 1
        var fields: [SopsField] = []
        var seen = Set<String>()
        skipWhitespace()
        if peek == UInt8(ascii: "}") {
            index += 1
            return .map(fields)
        }
        while true {
            skipWhitespace()
            let key = try string()
            guard seen.insert(key).inserted else { throw error("the key \(key) appears twice in one object") }
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            fields.append(SopsField(key: key, value: try value(depth: depth + 1, budget: &budget)))
            skipWhitespace()
            if peek == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "}"))
            return .map(fields)
        }
    }

    mutating func array(depth: Int, budget: inout SopsBudget) throws(SopsError) -> SopsValue {
        index += 1
        var items: [SopsValue] = []
        skipWhitespace()
        if peek == UInt8(ascii: "]") {
            index += 1
            return .list(items)
        }
        while true {
            items.append(try value(depth: depth + 1, budget: &budget))
            skipWhitespace()
            if peek == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "]"))
            return .list(items)
        }
    }

    mutating func literal(_ word: String, _ value: SopsValue) throws(SopsError) -> SopsValue {
        let expected = Array(word.utf8)
        guard bytes[index...].starts(with: expected) else { throw error("expected \(word)") }
        index += expected.count
        return value
    }

    mutating func string() throws(SopsError) -> String {
        try expect(UInt8(ascii: "\""))
        var output: [UInt8] = []
        while true {
            guard let byte = peek else { throw error("an unterminated string") }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: output, as: UTF8.self) else { throw error("a string that is not UTF-8") }
                return text
            case UInt8(ascii: "\\"):
                try escape(into: &output)
            case 0..<0x20:
                throw error("a control character inside a string")
            default:
                output.append(byte)
            }
        }
    }

    mutating func escape(into output: inout [UInt8]) throws(SopsError) {
        guard let byte = peek else { throw error("an unterminated escape") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(byte)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                guard bytes[index...].starts(with: Array("\\u".utf8)) else { throw error("an unpaired surrogate escape") }
                index += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw error("an unpaired surrogate escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw error("an unpaired surrogate escape") }
            output += Array(String(Character(unicode)).utf8)
        default:
            throw error("an unknown escape")
        }
    }

    mutating func hex4() throws(SopsError) -> UInt32 {
        guard index + 4 <= bytes.count, let value = UInt32(String(decoding: bytes[index..<(index + 4)], as: UTF8.self), radix: 16),
            bytes[index..<(index + 4)].allSatisfy({ Character(Unicode.Scalar($0)).isHexDigit })
        else { throw error("a \\u escape without four hex digits") }
        index += 4
        return value
    }

    mutating func number() throws(SopsError) -> SopsValue {
        let start = index
        var isInteger = true
        func digits() -> Int {
            let begin = index
            while let byte = peek, byte >= 0x30, byte <= 0x39 { index += 1 }
            return index - begin
        }
        if peek == UInt8(ascii: "-") { index += 1 }
        if peek == UInt8(ascii: "0") {
            index += 1
        } else {
            guard digits() > 0 else { throw error("a malformed number") }
        }
        if peek == UInt8(ascii: ".") {
            index += 1
            isInteger = false
            guard digits() > 0 else { throw error("a malformed number") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            index += 1
            isInteger = false
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw error("a malformed number") }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if isInteger, let number = Int64(text) { return .integer(Int(number)) }
        guard let number = Double(text), number.isFinite else { throw error("a number out of range") }
        return .float(number)
    }
}
