import AspenClient
import AspenCore
import AspenSecrets
import ArgumentParser
import Foundation

/// Runs one Vault API request through a node and returns its `data`, turning an error answer
/// into the CLI's exit codes (404 not found, failed check-and-set 2, 503 unavailable, 403 not
/// permitted, other 4xx bad input).
func vaultCall(_ cluster: ClusterOptions, _ method: String, _ path: String, query: [String: String] = [:], body: [String: Any]? = nil) async throws
    -> [String: Any]?
{
    let request = VaultRequest(method: method, path: path, query: query, body: body.map(SecretsJSON.encode) ?? [])
    let response = try await cluster.client().secrets(request)
    let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
    switch response.status {
    case 200..<300: return object?["data"] as? [String: Any] ?? [:]
    default:
        let message = response.errors.joined(separator: "; ")
        switch response.status {
        case 404:
            // A deleted version is a 404 that still says which version and when.
            if let metadata = (object?["data"] as? [String: Any])?["metadata"] as? [String: Any] {
                let deleted = metadata["deletion_time"] as? String ?? ""
                throw CLIError.notFound(
                    (metadata["destroyed"] as? Bool ?? false) ? "version \(metadata["version"] ?? "?") of \(path) was destroyed"
                        : "version \(metadata["version"] ?? "?") of \(path) was deleted at \(deleted) (undelete restores it)")
            }
            throw CLIError.notFound(message.isEmpty ? "nothing at \(path)" : message)
        case 403: throw CLIError.notPermitted(message)
        case 503, 500: throw CLIError.unavailable(message)
        default:
            if message.contains("check-and-set") { throw CLIError.conditionFailed(message) }
            throw CLIError.badInput(message)
        }
    }
}

/// The mount a `MOUNT/PATH` argument names (the longest mounted prefix), and the path inside it.
func splitMount(_ cluster: ClusterOptions, _ full: String, type: String) async throws -> (mount: String, path: String) {
    let table = try await vaultCall(cluster, "GET", "sys/mounts") ?? [:]
    let trimmed = full.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    let candidates = table.keys.map { String($0.dropLast()) }.filter { trimmed == $0 || trimmed.hasPrefix($0 + "/") }
    guard let mount = candidates.max(by: { $0.count < $1.count }) else {
        throw CLIError.notFound("no secrets engine is mounted at the start of '\(full)' (aspen secrets list shows the mounts)")
    }
    if let kind = (table[mount + "/"] as? [String: Any])?["type"] as? String, kind != type {
        throw CLIError.badInput("\(mount)/ holds a \(kind) engine, not \(type)")
    }
    return (mount, String(trimmed.dropFirst(mount.count).drop { $0 == "/" }))
}

func printJSON(_ value: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .prettyPrinted, .fragmentsAllowed]) {
        print(String(decoding: data, as: UTF8.self))
    }
}

/// `aspen secrets …`: the secrets engines' mounts.
struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets", abstract: "Secrets engines (kv-v2, transit, pki) mounted at paths; Vault's HTTP API serves them too.",
        discussion: """
            Every secret, key and certificate key is stored encrypted under a data key that a quorum of the
            cluster's voters must be up to recover. Vault clients (hvac, curl) talk to a node started with
            --vault-listen, with the Aspen credential as the Vault token.
            """,
        subcommands: [Enable.self, Disable.self, List.self])

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mount a secrets engine.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The engine: kv-v2, transit or pki.") var type: String
        @Option(help: "Where to mount it (default: the engine's name; kv-v2 mounts at secret).") var path: String?
        @Option(help: "A description.") var description: String = ""

        func run() async throws {
            try await runReporting {
                let at = path ?? (type == "kv-v2" || type == "kv" ? "secret" : type)
                _ = try await vaultCall(cluster, "POST", "sys/mounts/\(at)", body: ["type": type, "description": description, "options": ["version": "2"]])
                output(cluster.json, ["mounted": at, "type": type], text: "enabled the \(type) engine at \(at)/")
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unmount a secrets engine, removing everything it holds.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The mount's path.") var path: String

        func run() async throws {
            try await runReporting {
                let at = path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
                _ = try await vaultCall(cluster, "DELETE", "sys/mounts/\(at)")
                output(cluster.json, ["unmounted": at], text: "disabled \(at)/ and removed its data")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the mounts.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let table = try await vaultCall(cluster, "GET", "sys/mounts") ?? [:]
                if cluster.json { return printJSON(table) }
                print("Path\tType\tDescription")
                for (path, mount) in table.sorted(by: { $0.key < $1.key }) {
                    let info = mount as? [String: Any] ?? [:]
                    let type = info["type"] as? String ?? "?"
                    let version = (info["options"] as? [String: Any])?["version"] as? String
                    print("\(path)\t\(type == "kv" && version == "2" ? "kv-v2" : type)\t\(info["description"] as? String ?? "")")
                }
            }
        }
    }
}

/// `aspen kv2 …`: versioned secrets in a kv-v2 mount (Vault's `vault kv`).
struct KV2Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv2", abstract: "Versioned JSON secrets in a kv-v2 mount (MOUNT/PATH), as Vault's vault kv.",
        subcommands: [Put.self, Patch.self, Get.self, List.self, Metadata.self, Delete.self, Undelete.self, Destroy.self])

    /// `KEY=VALUE` pairs (`KEY=@file` reads a file, `-` as the only argument reads JSON from stdin).
    static func data(_ pairs: [String], json: String?) throws -> [String: Any] {
        if let json {
            let text = json == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : json
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw CLIError.badInput("--json must be a JSON object")
            }
            return object
        }
        var data: [String: Any] = [:]
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else { throw CLIError.badInput("'\(pair)' is not KEY=VALUE") }
            let key = String(pair[..<equals])
            var value = String(pair[pair.index(after: equals)...])
            if value.hasPrefix("@") {
                guard let text = try? String(contentsOfFile: String(value.dropFirst()), encoding: .utf8) else {
                    throw CLIError.badInput("cannot read \(value.dropFirst())")
                }
                value = text
            }
            data[key] = value
        }
        guard !data.isEmpty else { throw CLIError.badInput("give the secret's data as KEY=VALUE pairs or --json") }
        return data
    }

    /// Writes a new version (`POST`) or merges a patch into one (`PATCH`); prints the version made.
    static func writeVersion(_ method: String, _ cluster: ClusterOptions, _ path: String, _ pairs: [String], json: String?, cas: Int?) async throws {
        let (mount, inside) = try await splitMount(cluster, path, type: "kv")
        var body: [String: Any] = ["data": try data(pairs, json: json)]
        if let cas { body["options"] = ["cas": cas] }
        let version = try await vaultCall(cluster, method, "\(mount)/data/\(inside)", body: body) ?? [:]
        if cluster.json { return printJSON(version) }
        print("version \(version["version"] ?? "?") created \(version["created_time"] ?? "")")
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new version of a secret.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Argument(help: "KEY=VALUE pairs (KEY=@FILE reads a file).") var pairs: [String] = []
        @Option(help: "The secret's data as a JSON object (any JSON values; - reads standard input).") var jsonData: String?
        @Option(help: "Check-and-set: 0 writes only a new secret, N only if the current version is N.") var cas: Int?

        func run() async throws {
            try await runReporting { try await KV2Command.writeVersion("POST", cluster, path, pairs, json: jsonData, cas: cas) }
        }
    }

    struct Patch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change some keys of the current version (a JSON merge patch), as a new version.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Argument(help: "KEY=VALUE pairs.") var pairs: [String] = []
        @Option(help: "The patch as a JSON object (null removes a key).") var jsonData: String?
        @Option(help: "Check-and-set on the current version.") var cas: Int?

        func run() async throws {
            try await runReporting { try await KV2Command.writeVersion("PATCH", cluster, path, pairs, json: jsonData, cas: cas) }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Read a secret (its current version, or --version N).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Option(help: "The version to read.") var version: Int?
        @Option(help: "Print only this key's value.") var field: String?

        func run() async throws {
            try await runReporting {
                let (mount, inside) = try await splitMount(cluster, path, type: "kv")
                let answer = try await vaultCall(cluster, "GET", "\(mount)/data/\(inside)", query: version.map { ["version": "\($0)"] } ?? [:]) ?? [:]
                let data = answer["data"] as? [String: Any] ?? [:]
                if let field {
                    guard let value = data[field] else { throw CLIError.notFound("\(path) has no key '\(field)'") }
                    if let string = value as? String { print(string) } else { printJSON(value) }
                    return
                }
                if cluster.json { return printJSON(answer) }
                let metadata = answer["metadata"] as? [String: Any] ?? [:]
                print("version \(metadata["version"] ?? "?") created \(metadata["created_time"] ?? "")")
                for (key, value) in data.sorted(by: { $0.key < $1.key }) {
                    if let string = value as? String {
                        print("\(key)\t\(string)")
                    } else if let encoded = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) {
                        print("\(key)\t\(String(decoding: encoded, as: UTF8.self))")
                    }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the secrets and folders under MOUNT/PREFIX.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT or MOUNT/FOLDER") var path: String

        func run() async throws {
            try await runReporting {
                let (mount, inside) = try await splitMount(cluster, path, type: "kv")
                let answer = try await vaultCall(cluster, "LIST", "\(mount)/metadata/\(inside.isEmpty ? "" : inside + "/")") ?? [:]
                let keys = answer["keys"] as? [String] ?? []
                if cluster.json { return printJSON(["keys": keys]) }
                for key in keys { print(key) }
            }
        }
    }

    struct Metadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a secret's metadata and versions; with options, change its settings.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Option(help: "Versions to keep (0: the mount's setting).") var maxVersions: Int?
        @Option(help: "Require check-and-set on every write (true or false).") var casRequired: Bool?
        @Option(help: "Soft-delete each version this long after it is written (e.g. 30d, 1h; 0s: never).") var deleteVersionAfter: String?
        @Option(help: "Custom metadata KEY=VALUE (repeat; replaces all of it).") var custom: [String] = []
        @Flag(help: "Delete the secret: its metadata and every version.") var deleteAll = false

        func run() async throws {
            try await runReporting {
                let (mount, inside) = try await splitMount(cluster, path, type: "kv")
                if deleteAll {
                    _ = try await vaultCall(cluster, "DELETE", "\(mount)/metadata/\(inside)")
                    return output(cluster.json, ["deleted": path], text: "deleted \(path) and every version of it")
                }
                var body: [String: Any] = [:]
                if let maxVersions { body["max_versions"] = maxVersions }
                if let casRequired { body["cas_required"] = casRequired }
                if let deleteVersionAfter { body["delete_version_after"] = deleteVersionAfter }
                if !custom.isEmpty {
                    var metadata: [String: String] = [:]
                    for pair in custom {
                        let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                        guard parts.count == 2 else { throw CLIError.badInput("'\(pair)' is not KEY=VALUE") }
                        metadata[parts[0]] = parts[1]
                    }
                    body["custom_metadata"] = metadata
                }
                if !body.isEmpty { _ = try await vaultCall(cluster, "POST", "\(mount)/metadata/\(inside)", body: body) }
                let metadata = try await vaultCall(cluster, "GET", "\(mount)/metadata/\(inside)") ?? [:]
                if cluster.json { return printJSON(metadata) }
                for key in ["current_version", "oldest_version", "max_versions", "cas_required", "delete_version_after", "created_time", "updated_time"] {
                    print("\(key)\t\(metadata[key] ?? "")")
                }
                if let custom = metadata["custom_metadata"] as? [String: String] {
                    for (key, value) in custom.sorted(by: { $0.key < $1.key }) { print("custom.\(key)\t\(value)") }
                }
                let versions = metadata["versions"] as? [String: Any] ?? [:]
                for (number, info) in versions.sorted(by: { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }) {
                    let version = info as? [String: Any] ?? [:]
                    let state = (version["destroyed"] as? Bool ?? false) ? "destroyed" : (version["deletion_time"] as? String ?? "").isEmpty ? "" : "deleted \(version["deletion_time"]!)"
                    print("version \(number)\tcreated \(version["created_time"] ?? "")\t\(state)")
                }
            }
        }
    }

    /// Soft delete, undelete and destroy share their shape.
    static func versions(_ cluster: ClusterOptions, _ action: String, _ path: String, _ versions: String?) async throws {
        let (mount, inside) = try await splitMount(cluster, path, type: "kv")
        guard let versions else {
            guard action == "delete" else { throw CLIError.badInput("--versions is required (e.g. --versions 2,3)") }
            _ = try await vaultCall(cluster, "DELETE", "\(mount)/data/\(inside)")
            return output(cluster.json, ["deleted": path], text: "deleted the current version of \(path)")
        }
        let numbers = versions.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !numbers.isEmpty else { throw CLIError.badInput("--versions takes version numbers, e.g. 2,3") }
        _ = try await vaultCall(cluster, "POST", "\(mount)/\(action)/\(inside)", body: ["versions": numbers])
        output(cluster.json, [action + "d": numbers], text: "\(action == "destroy" ? "destroyed" : action + "d") versions \(versions) of \(path)")
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Soft-delete versions (default: the current one); undelete restores them.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Option(help: "Version numbers, comma-separated.") var versions: String?
        func run() async throws { try await runReporting { try await KV2Command.versions(cluster, "delete", path, versions) } }
    }

    struct Undelete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restore soft-deleted versions.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Option(help: "Version numbers, comma-separated.") var versions: String?
        func run() async throws { try await runReporting { try await KV2Command.versions(cluster, "undelete", path, versions) } }
    }

    struct Destroy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Destroy versions: their data is removed for good.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "MOUNT/PATH") var path: String
        @Option(help: "Version numbers, comma-separated.") var versions: String?
        func run() async throws { try await runReporting { try await KV2Command.versions(cluster, "destroy", path, versions) } }
    }
}
