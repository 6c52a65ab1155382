import AspenCore
import AspenKV
import Foundation

/// What a node reads from a SOPS file at start (`--bootstrap-secrets FILE --age-identity-file
/// KEY`): the file decrypted with the node's age identities, its MAC checked, then these
/// top-level entries (every other one is ignored):
///
/// ```yaml
/// trusted_roots: [HEX, …]      # root keys the node trusts beside --trusted-roots
/// cookie: TEXT                  # the cluster cookie, unless one is given otherwise
/// kv:                           # kv-v2 secrets written once, if absent: MOUNT/PATH: {KEY: VALUE}
///   secret/app/db: {user: a, password: b}
/// ```
///
/// A file over `sopsFileBytesMax`, one no identity opens, one whose MAC does not match, or one
/// whose entries are not of these shapes stops the node with a message saying which.
public struct BootstrapSecrets: Sendable {
    public var trustedRoots: [String] = []
    public var cookie: String?
    /// Each initial secret: its mount, its path in the mount, and its data as a JSON object.
    public var secrets: [(mount: String, path: String, data: Bytes)] = []
    /// The age recipient whose entry opened the file.
    public var openedFor = ""

    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static func load(path: String, identityFile: String, limits: Limits) throws(Problem) -> BootstrapSecrets {
        guard let text = try? String(contentsOfFile: identityFile, encoding: .utf8) else {
            throw Problem(description: "cannot read the age identity file \(identityFile)")
        }
        let identities: [AgeIdentity]
        do {
            identities = try AgeIdentity.parseFile(text)
        } catch {
            throw Problem(description: "the age identity file \(identityFile): \(error)")
        }
        guard !identities.isEmpty else { throw Problem(description: "the age identity file \(identityFile) holds no identity") }
        let document: SopsDocument
        do {
            document = try Sops.decryptFile(atPath: path, identities: identities, limits: limits)
        } catch {
            throw Problem(description: "the bootstrap secrets \(path): \(error)")
        }
        return try from(document, source: path)
    }

    /// The entries of a decrypted document.
    public static func from(_ document: SopsDocument, source: String) throws(Problem) -> BootstrapSecrets {
        // What the node trusts must have been encrypted: sops's MAC does not cover keys, and
        // with mac_only_encrypted not cleartext values at all, so a cleartext entry could have
        // been added or moved by anyone who can write the file.
        guard !document.macOnlyEncrypted else {
            throw Problem(description: "\(source): mac_only_encrypted files are refused for bootstrap (their cleartext values are not authenticated)")
        }
        guard case .map(let top) = document.tree else { throw Problem(description: "\(source): the document is not a map") }
        for field in top where ["trusted_roots", "cookie", "kv"].contains(field.key) {
            if let cleartext = cleartextLeaf(field.value, path: [field.key], encrypted: document.encryptedPaths) {
                throw Problem(description: "\(source): \(cleartext) is not encrypted in the file; bootstrap entries must be")
            }
        }
        var result = BootstrapSecrets()
        result.openedFor = document.openedFor
        guard case .map(let fields) = document.tree else { throw Problem(description: "\(source): the document is not a map") }
        for field in fields {
            switch field.key {
            case "trusted_roots":
                guard case .list(let items) = field.value else { throw Problem(description: "\(source): trusted_roots must be a list of keys") }
                for item in items {
                    guard let key = item.text, key.count == 64, key.allSatisfy(\.isHexDigit) else {
                        throw Problem(description: "\(source): trusted_roots holds '\(item.text ?? "?")', not a public key (64 hexadecimal digits)")
                    }
                    result.trustedRoots.append(key.lowercased())
                }
            case "cookie":
                guard let cookie = field.value.text, !cookie.isEmpty else { throw Problem(description: "\(source): cookie must be text") }
                result.cookie = cookie
            case "kv":
                guard case .map(let secrets) = field.value else { throw Problem(description: "\(source): kv must map MOUNT/PATH to secrets") }
                for secret in secrets {
                    let parts = secret.key.split(separator: "/", maxSplits: 1).map(String.init)
                    guard parts.count == 2, !parts[1].isEmpty, case .map = secret.value else {
                        throw Problem(description: "\(source): kv entry '\(secret.key)' must be MOUNT/PATH with a map of values")
                    }
                    result.secrets.append((parts[0], parts[1], SecretsJSON.encode(json(secret.value))))
                }
            default:
                continue
            }
        }
        return result
    }

    /// The path of the first value under `value` that was cleartext in the file (map keys only,
    /// as sops builds a value's path: list items share their list's), or nil.
    static func cleartextLeaf(_ value: SopsValue, path: [String], encrypted: Set<String>) -> String? {
        switch value {
        case .map(let fields):
            for field in fields { if let found = cleartextLeaf(field.value, path: path + [field.key], encrypted: encrypted) { return found } }
            return nil
        case .list(let items):
            for item in items { if let found = cleartextLeaf(item, path: path, encrypted: encrypted) { return found } }
            return nil
        case .null:
            return nil
        default:
            let text = path.map { $0 + ":" }.joined()
            return encrypted.contains(text) ? nil : text
        }
    }

    /// A SOPS value as JSON (bytes as their text, timestamps as RFC 3339 text).
    static func json(_ value: SopsValue) -> Any {
        switch value {
        case .null: return NSNull()
        case .bool(let flag): return flag
        case .integer(let number): return number
        case .float(let number): return number
        case .string(let text), .timestamp(let text): return text
        case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .list(let items): return items.map(json)
        case .map(let fields):
            var object: [String: Any] = [:]
            for field in fields { object[field.key] = json(field.value) }
            return object
        }
    }
}
