import AspenClient
import AspenCore
import AspenSecrets
import ArgumentParser
import Foundation

/// Options every `aspen transit` command shares: the cluster and the mount.
struct TransitOptions: ParsableArguments {
    @OptionGroup var cluster: ClusterOptions
    @Option(help: "The transit mount.") var mount: String = "transit"
}

func transitCall(_ options: TransitOptions, _ method: String, _ path: String, query: [String: String] = [:], body: [String: Any]? = nil) async throws
    -> [String: Any]
{
    try await vaultCall(options.cluster, method, "\(options.mount)/\(path)", query: query, body: body) ?? [:]
}

/// `aspen transit …`: encryption as a service (Vault's transit engine).
struct TransitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transit", abstract: "Encryption as a service: named keys with versions; encrypt, decrypt, rewrap, sign, verify.",
        discussion: "Mount it first: aspen secrets enable transit. Ciphertexts are vault:vN:…, as Vault's.",
        subcommands: [Create.self, Show.self, List.self, Rotate.self, Config.self, Encrypt.self, Decrypt.self, Rewrap.self, Sign.self, Verify.self, Inventory.self,
            RewrapPrefix.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a named key.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "aes256-gcm96, aes128-gcm96, chacha20-poly1305, ed25519, ecdsa-p256/p384/p521, rsa-2048/3072/4096.") var type: String = "aes256-gcm96"
        @Flag(help: "Derive a key per context.") var derived = false
        @Flag(help: "Allow the key to be exported.") var exportable = false

        func run() async throws {
            try await runReporting {
                _ = try await transitCall(options, "POST", "keys/\(name)", body: ["type": type, "derived": derived, "exportable": exportable])
                output(options.cluster.json, ["created": name], text: "created transit key \(name) (\(type))")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a key: its type, versions and public keys.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        func run() async throws { try await runReporting { printJSON(try await transitCall(options, "GET", "keys/\(name)")) } }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys.")
        @OptionGroup var options: TransitOptions
        func run() async throws {
            try await runReporting { for name in try await transitCall(options, "LIST", "keys")["keys"] as? [String] ?? [] { print(name) } }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a new version; new encryptions use it.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        func run() async throws {
            try await runReporting {
                let data = try await transitCall(options, "POST", "keys/\(name)/rotate")
                output(options.cluster.json, data, text: "\(name) is now at version \(data["latest_version"] ?? "?")")
            }
        }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a key's version floors, deletion and export.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "Ciphertexts below this version are refused.") var minDecryptionVersion: Int?
        @Option(help: "Encrypting with a version below this is refused.") var minEncryptionVersion: Int?
        @Option(help: "Allow deleting the key (true or false).") var deletionAllowed: Bool?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = [:]
                if let minDecryptionVersion { body["min_decryption_version"] = minDecryptionVersion }
                if let minEncryptionVersion { body["min_encryption_version"] = minEncryptionVersion }
                if let deletionAllowed { body["deletion_allowed"] = deletionAllowed }
                _ = try await transitCall(options, "POST", "keys/\(name)/config", body: body)
                output(options.cluster.json, ["configured": name], text: "configured \(name)")
            }
        }
    }

    /// The bytes of `--plaintext`, `--plaintext-file` (- for standard input).
    static func bytes(text: String?, file: String?) throws -> [UInt8] {
        if let text { return Array(text.utf8) }
        guard let file else { throw CLIError.badInput("give --plaintext or --plaintext-file") }
        if file == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
        guard let data = FileManager.default.contents(atPath: file) else { throw CLIError.badInput("cannot read \(file)") }
        return Array(data)
    }

    struct Encrypt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Encrypt; prints the ciphertext.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "The plaintext, as text.") var plaintext: String?
        @Option(help: "A file holding the plaintext (- reads standard input).") var plaintextFile: String?
        @Option(help: "The derivation context (text).") var context: String?
        @Option(help: "Associated data (text), authenticated but not encrypted.") var associatedData: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["plaintext": TransitBase64.encode(try TransitCommand.bytes(text: plaintext, file: plaintextFile))]
                if let context { body["context"] = TransitBase64.encode(Array(context.utf8)) }
                if let associatedData { body["associated_data"] = TransitBase64.encode(Array(associatedData.utf8)) }
                let data = try await transitCall(options, "POST", "encrypt/\(name)", body: body)
                output(options.cluster.json, data, text: data["ciphertext"] as? String ?? "")
            }
        }
    }

    struct Decrypt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Decrypt; writes the plaintext's bytes to standard output.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Argument(help: "The ciphertext (vault:vN:…).") var ciphertext: String
        @Option(help: "The derivation context (text).") var context: String?
        @Option(help: "Associated data (text).") var associatedData: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["ciphertext": ciphertext]
                if let context { body["context"] = TransitBase64.encode(Array(context.utf8)) }
                if let associatedData { body["associated_data"] = TransitBase64.encode(Array(associatedData.utf8)) }
                let data = try await transitCall(options, "POST", "decrypt/\(name)", body: body)
                if options.cluster.json { return printJSON(data) }
                let plain = try TransitBase64.decode(validating: data["plaintext"] as? String ?? "")
                FileHandle.standardOutput.write(Data(plain))
            }
        }
    }

    struct Rewrap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-encrypt a ciphertext with the key's latest version; prints it.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Argument var ciphertext: String
        func run() async throws {
            try await runReporting {
                let data = try await transitCall(options, "POST", "rewrap/\(name)", body: ["ciphertext": ciphertext])
                output(options.cluster.json, data, text: data["ciphertext"] as? String ?? "")
            }
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign; prints the signature (vault:vN:…).")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "The input, as text.") var input: String?
        @Option(help: "A file holding the input (- reads standard input).") var inputFile: String?
        @Option(help: "sha2-256 (default), sha2-384, sha2-512, …") var hashAlgorithm: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["input": TransitBase64.encode(try TransitCommand.bytes(text: input, file: inputFile))]
                if let hashAlgorithm { body["hash_algorithm"] = hashAlgorithm }
                let data = try await transitCall(options, "POST", "sign/\(name)", body: body)
                output(options.cluster.json, data, text: data["signature"] as? String ?? "")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a signature; exits 2 when it does not hold.")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Argument var signature: String
        @Option(help: "The input, as text.") var input: String?
        @Option(help: "A file holding the input (- reads standard input).") var inputFile: String?
        @Option(help: "sha2-256 (default), sha2-384, sha2-512, …") var hashAlgorithm: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["input": TransitBase64.encode(try TransitCommand.bytes(text: input, file: inputFile)), "signature": signature]
                if let hashAlgorithm { body["hash_algorithm"] = hashAlgorithm }
                let data = try await transitCall(options, "POST", "verify/\(name)", body: body)
                guard data["valid"] as? Bool == true else { throw CLIError.conditionFailed("the signature does not hold") }
                output(options.cluster.json, data, text: "valid")
            }
        }
    }

    struct Inventory: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Count the values under a key-value prefix that are this key's ciphertexts, by version (what a rotation leaves behind).")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "The key-value prefix the application stores its ciphertexts under.") var prefix: String

        func run() async throws {
            try await runReporting {
                let data = try await transitCall(options, "GET", "keys/\(name)/inventory", query: ["prefix": prefix])
                if options.cluster.json { return printJSON(data) }
                print("scanned \(data["keys_scanned"] ?? 0) keys; latest version \(data["latest_version"] ?? "?"); \(data["behind_latest"] ?? 0) behind it")
                for (version, count) in (data["versions"] as? [String: Any] ?? [:]).sorted(by: { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }) {
                    print("v\(version)\t\(count)")
                }
            }
        }
    }

    struct RewrapPrefix: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rewrap-prefix",
            abstract: "Rewrap every value under a key-value prefix that an older version encrypted (each compared, so a concurrent write wins).")
        @OptionGroup var options: TransitOptions
        @Argument var name: String
        @Option(help: "The key-value prefix.") var prefix: String
        @Flag(help: "Run it as a job on the job system (prints the job's id; aspen job result ID --wait 5m).") var background = false

        func run() async throws {
            try await runReporting {
                let data = try await transitCall(options, "POST", "keys/\(name)/rewrap-prefix", body: ["prefix": prefix, "background": background])
                if background { return output(options.cluster.json, data, text: "\(data["job_id"] ?? "?")") }
                output(options.cluster.json, data, text: "rewrapped \(data["rewrapped"] ?? 0) values to version \(data["latest_version"] ?? "?"); \(data["changed_meanwhile"] ?? 0) changed meanwhile")
            }
        }
    }
}
