import AspenBlob
import AspenClient
import AspenCore
import AspenKV
import ArgumentParser
import Foundation

struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv", abstract: "Read and write keys.",
        subcommands: [Get.self, Put.self, Delete.self, CompareAndSwap.self, CompareAndDelete.self, Scan.self, BatchRead.self, BatchWrite.self, Txn.self, Watch.self, Compact.self])

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a key's value (a value kept in the blob store is streamed from there, verified).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var key: String
        @Option(help: "Read as of this past revision.") var revision: Int64 = 0
        @Flag(help: "Read this node's state without a ReadIndex round (may be stale).") var stale = false
        @Option(name: [.short, .customLong("output")], help: "Write the value to this file, byte for byte.") var outputPath: String?

        func run() async throws {
            try await runBlob {
                let client = try cluster.client()
                let consistency: ReadConsistency = stale ? .stale : .linearizable
                if cluster.json {
                    guard let kv = try await client.get(Array(key.utf8), revision: revision, consistency: consistency) else {
                        throw CLIError.notFound("key \(key) not found")
                    }
                    var object = describe(kv)
                    if let reference = BlobReference(decoding: kv.value) {
                        // The value lives in the blob store: say where, not the reference's bytes.
                        object["value"] = nil
                        object["blob"] = ["hash": reference.hash.hex, "size": reference.size] as [String: Any]
                    }
                    output(true, object, text: "")
                    return
                }
                let descriptor: Int32 = outputPath.map { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) } ?? 1
                guard descriptor >= 0 else { throw CLIError.badInput("cannot write \(outputPath ?? "-"): \(String(cString: strerror(errno)))") }
                defer { if descriptor != 1 { close(descriptor) } }
                let found = try await client.get(Array(key.utf8), revision: revision, consistency: consistency) { piece in
                    try writeAll(descriptor, piece)
                }
                guard found != nil else { throw CLIError.notFound("key \(key) not found") }
                if outputPath == nil, isatty(1) != 0 { print() }
            }
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a key.", aliases: ["set"])
        @OptionGroup var cluster: ClusterOptions
        @Argument var key: String
        @Argument(help: "The value (none with --ignore-value or --value-file).") var value: String?
        @Option(help: "Read the value from this file (- for standard input); above the key-value limit it is kept in the blob store.")
        var valueFile: String?
        @Option(help: "Attach the key to this lease.") var lease: Int64 = 0
        @Flag(help: "Print the previous value.") var prev = false
        @Flag(help: "Keep the key's current value (the key must exist).") var ignoreValue = false
        @Flag(help: "Keep the key's current lease (the key must exist).") var ignoreLease = false

        func run() async throws {
            try await runReporting {
                if let valueFile {
                    guard value == nil, !ignoreValue, !prev, !ignoreLease else {
                        throw CLIError.badInput("--value-file gives the value: no VALUE, --ignore-value, --ignore-lease or --prev with it")
                    }
                    try await runBlob {
                        let input = try BlobInput(path: valueFile)
                        defer { input.close() }
                        let result = try await cluster.client().put(Array(key.utf8), size: input.size, lease: lease) { try input.read(into: $0) }
                        output(cluster.json, ["revision": result.revision], text: "OK revision \(result.revision)")
                    }
                    return
                }
                if ignoreValue && value != nil { throw CLIError.badInput("--ignore-value keeps the current value: give no VALUE") }
                if !ignoreValue && value == nil { throw CLIError.badInput("missing VALUE (or --value-file, or --ignore-value)") }
                if ignoreLease && lease != 0 { throw CLIError.badInput("--ignore-lease keeps the current lease: give no --lease") }
                let put = AspenKV.Put(
                    key: Array(key.utf8), value: Array((value ?? "").utf8), lease: lease, returnPrevious: prev, ignoreValue: ignoreValue,
                    ignoreLease: ignoreLease)
                guard case .put(let result) = try await cluster.client().write(.put(put)) else { throw CLIError.unexpectedAnswer }
                var object: [String: Any] = ["revision": result.revision]
                if let previous = result.previous { object["previous"] = describe(previous) }
                let previousText = result.previous.map { "\nprevious: \(String(decoding: $0.value, as: UTF8.self))" } ?? ""
                output(cluster.json, object, text: "OK revision \(result.revision)" + previousText)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a key, or every key with a prefix.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var key: String
        @Flag(help: "Delete every key that starts with KEY.") var prefix = false

        func run() async throws {
            try await runReporting {
                let selection: KeySelection = prefix ? .prefix(Array(key.utf8)) : .key(Array(key.utf8))
                let result = try await cluster.client().delete(selection)
                output(cluster.json, ["deleted": result.deleted, "revision": result.revision], text: "\(result.deleted)")
                if result.deleted == 0 && !prefix { throw CLIError.notFound("key \(key) not found") }
            }
        }
    }

    struct CompareAndSwap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cas", abstract: "Set a key only if it holds the expected value (no --expected: only if absent).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var key: String
        @Option(help: "The value the key must hold.") var expected: String?
        @Option(help: "The value to set.") var new: String

        func run() async throws {
            try await runReporting {
                let result = try await cluster.client().compareAndSwap(Array(key.utf8), expected: expected.map { Array($0.utf8) }, new: Array(new.utf8))
                var object: [String: Any] = ["succeeded": result.succeeded, "revision": result.revision]
                if let current = result.current { object["current"] = describe(current) }
                output(cluster.json, object, text: result.succeeded ? "OK revision \(result.revision)" : "condition failed")
                if !result.succeeded { throw CLIError.conditionFailed("the key does not hold the expected value") }
            }
        }
    }

    struct CompareAndDelete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cad", abstract: "Delete a key only if it holds the expected value.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var key: String
        @Option(help: "The value the key must hold.") var expected: String

        func run() async throws {
            try await runReporting {
                let result = try await cluster.client().compareAndDelete(Array(key.utf8), expected: Array(expected.utf8))
                output(cluster.json, ["succeeded": result.succeeded, "revision": result.revision], text: result.succeeded ? "OK" : "condition failed")
                if !result.succeeded { throw CLIError.conditionFailed("the key does not hold the expected value") }
            }
        }
    }

    struct Scan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys with a prefix, one page at a time.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var prefix: String = ""
        @Option(help: "Keys per page (default 1000, at most 10000).") var limit: Int?
        @Option(help: "Continue after a previous page (its printed token).") var token: String?
        @Flag(help: "Print keys only.") var keysOnly = false

        func run() async throws {
            try await runReporting {
                var continuation: Bytes?
                if let token {
                    guard let data = Data(base64Encoded: token) else { throw CLIError.badInput("the token is not valid base64") }
                    continuation = Array(data)
                }
                let page = try await cluster.client().scan(.prefix(Array(prefix.utf8)), limit: limit, continuation: continuation, keysOnly: keysOnly)
                let next = page.continuation.map { Data($0).base64EncodedString() }
                var object: [String: Any] = ["kvs": page.kvs.map(describe), "count": page.count, "more": page.more, "revision": page.revision]
                if let next { object["token"] = next }
                if page.limitClamped { object["limitClamped"] = true }
                var lines = page.kvs.map { kv in
                    keysOnly ? String(decoding: kv.key, as: UTF8.self) : "\(String(decoding: kv.key, as: UTF8.self))\t\(String(decoding: kv.value, as: UTF8.self))"
                }
                if let next { lines.append("-- more: --token \(next)") }
                if page.limitClamped { lines.append("-- the page was clamped to the maximum of 10000 keys") }
                output(cluster.json, object, text: lines.joined(separator: "\n"))
            }
        }
    }

    struct BatchRead: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "batch-read", abstract: "Read several keys at one revision.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var keys: [String]

        func run() async throws {
            try await runReporting {
                let values = try await cluster.client().getMany(keys.map { Array($0.utf8) })
                let pairs = zip(keys, values).map { key, kv in (key, kv.map { String(decoding: $0.value, as: UTF8.self) }) }
                output(
                    cluster.json, ["values": pairs.map { ["key": $0.0, "value": $0.1 as Any] }],
                    text: pairs.map { "\($0.0)\t\($0.1 ?? "(absent)")" }.joined(separator: "\n"))
            }
        }
    }

    struct BatchWrite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "batch-write", abstract: "Write KEY=VALUE pairs atomically, at one revision.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var pairs: [String]

        func run() async throws {
            try await runReporting {
                let operations = try pairs.map { pair -> WriteOperation in
                    guard let equals = pair.firstIndex(of: "=") else { throw CLIError.badInput("'\(pair)' is not KEY=VALUE") }
                    return .put(AspenKV.Put(key: Array(pair[..<equals].utf8), value: Array(pair[pair.index(after: equals)...].utf8)))
                }
                let revision = try await cluster.client().batch(operations)
                output(cluster.json, ["revision": revision, "written": operations.count], text: "OK revision \(revision)")
            }
        }
    }

    struct Compact: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Drop history before a revision.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var revision: Int64

        func run() async throws {
            try await runReporting {
                try await cluster.client().compact(revision)
                output(cluster.json, ["compacted": revision], text: "OK")
            }
        }
    }
}

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease", abstract: "Grant and manage leases.", subcommands: [Grant.self, KeepAlive.self, Revoke.self, TTL.self, List.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a lease of TTL milliseconds.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var ttlMs: Int64
        func run() async throws {
            try await runReporting {
                let lease = try await cluster.client().grantLease(ttlMs: ttlMs)
                output(cluster.json, ["id": lease.id, "ttlMs": lease.ttlMs], text: "\(lease.id)")
            }
        }
    }

    struct KeepAlive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "keepalive", abstract: "Renew a lease once.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var id: Int64
        func run() async throws {
            try await runReporting {
                let lease = try await cluster.client().keepAlive(id)
                output(cluster.json, ["id": lease.id, "ttlMs": lease.ttlMs], text: "OK")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a lease and delete its keys.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var id: Int64
        func run() async throws {
            try await runReporting {
                let deleted = try await cluster.client().revokeLease(id)
                output(cluster.json, ["id": id, "deletedKeys": deleted], text: "OK, \(deleted) keys deleted")
            }
        }
    }

    struct TTL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ttl", abstract: "Show a lease's remaining time and keys.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var id: Int64
        func run() async throws {
            try await runReporting {
                let status = try await cluster.client().leaseStatus(id, withKeys: true)
                let keys = status.keys.map { String(decoding: $0, as: UTF8.self) }
                output(
                    cluster.json, ["id": id, "ttlMs": status.lease.ttlMs, "remainingMs": status.remainingMs, "keys": keys],
                    text: "lease \(id): \(status.remainingMs) ms left of \(status.lease.ttlMs); keys: \(keys.joined(separator: ", "))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List live leases.")
        @OptionGroup var cluster: ClusterOptions
        func run() async throws {
            try await runReporting {
                let leases = try await cluster.client().leases()
                output(cluster.json, ["leases": leases.map { ["id": $0.id, "ttlMs": $0.ttlMs] }], text: leases.map { "\($0.id)\t\($0.ttlMs) ms" }.joined(separator: "\n"))
            }
        }
    }
}
