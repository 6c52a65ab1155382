import AspenClient
import AspenCore
import AspenSecrets
import ArgumentParser
import Foundation

/// Options every `aspen pki` command shares: the cluster and the mount.
struct PKIOptions: ParsableArguments {
    @OptionGroup var cluster: ClusterOptions
    @Option(help: "The PKI mount.") var mount: String = "pki"
}

/// Runs a PKI call; raw answers (certificates, CRLs) come back as bytes.
func pkiCall(_ options: PKIOptions, _ method: String, _ path: String, body: [String: Any]? = nil) async throws -> [String: Any] {
    try await vaultCall(options.cluster, method, "\(options.mount)/\(path)", body: body) ?? [:]
}

func readInput(_ path: String) throws -> String {
    if path == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError.badInput("cannot read \(path)") }
    return text
}

func writeOutput(_ text: String, to path: String?) throws {
    guard let path else { return print(text, terminator: text.hasSuffix("\n") ? "" : "\n") }
    guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else { throw CLIError.badInput("cannot write \(path)") }
}

/// `aspen pki …`: a certificate authority (Vault's pki engine).
struct PKICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki", abstract: "A certificate authority: root and intermediate CAs, roles, issued certificates, revocation and a signed CRL.",
        discussion: "Mount it first: aspen secrets enable pki (or --path pki_int for an intermediate).",
        subcommands: [Root.self, Intermediate.self, Role.self, Issue.self, Sign.self, Revoke.self, CA.self, CRL.self])

    struct Root: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The mount's root CA.", subcommands: [Generate.self, SignIntermediate.self])

        struct Generate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Generate a root CA (a new key and a self-signed certificate); prints the certificate.")
            @OptionGroup var options: PKIOptions
            @Option(help: "The CA's common name.") var cn: String
            @Option(help: "rsa, ec or ed25519.") var keyType: String = "rsa"
            @Option(help: "Key size (0: the type's default).") var keyBits: Int = 0
            @Option(help: "Lifetime (e.g. 87600h).") var ttl: String = "87600h"
            @Option(help: "Write the certificate here instead of standard output.") var out: String?

            func run() async throws {
                try await runReporting {
                    let data = try await pkiCall(options, "POST", "root/generate/internal", body: ["common_name": cn, "key_type": keyType, "key_bits": keyBits, "ttl": ttl])
                    if options.cluster.json { return printJSON(data) }
                    try writeOutput(data["certificate"] as? String ?? "", to: out)
                }
            }
        }

        struct SignIntermediate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "sign-intermediate", abstract: "Sign an intermediate CA's CSR with this root; prints the certificate.")
            @OptionGroup var options: PKIOptions
            @Option(help: "The CSR (PEM; - reads standard input).") var csrFile: String
            @Option(help: "The intermediate's common name (default: the CSR's).") var cn: String = ""
            @Option(help: "Lifetime.") var ttl: String = "43800h"
            @Option(help: "Write the certificate here instead of standard output.") var out: String?

            func run() async throws {
                try await runReporting {
                    let data = try await pkiCall(options, "POST", "root/sign-intermediate", body: ["csr": try readInput(csrFile), "common_name": cn, "ttl": ttl])
                    if options.cluster.json { return printJSON(data) }
                    try writeOutput(data["certificate"] as? String ?? "", to: out)
                }
            }
        }
    }

    struct Intermediate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The mount's intermediate CA.", subcommands: [Generate.self, SetSigned.self])

        struct Generate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Generate an intermediate's key; prints its CSR for the parent to sign.")
            @OptionGroup var options: PKIOptions
            @Option(help: "The CA's common name.") var cn: String
            @Option(help: "rsa, ec or ed25519.") var keyType: String = "rsa"
            @Option(help: "Key size (0: the type's default).") var keyBits: Int = 0
            @Option(help: "Write the CSR here instead of standard output.") var out: String?

            func run() async throws {
                try await runReporting {
                    let data = try await pkiCall(options, "POST", "intermediate/generate/internal", body: ["common_name": cn, "key_type": keyType, "key_bits": keyBits])
                    if options.cluster.json { return printJSON(data) }
                    try writeOutput(data["csr"] as? String ?? "", to: out)
                }
            }
        }

        struct SetSigned: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "set-signed", abstract: "Install the intermediate's certificate, signed by its parent.")
            @OptionGroup var options: PKIOptions
            @Option(help: "The certificate (PEM, optionally followed by its chain; - reads standard input).") var certFile: String

            func run() async throws {
                try await runReporting {
                    _ = try await pkiCall(options, "POST", "intermediate/set-signed", body: ["certificate": try readInput(certFile)])
                    output(options.cluster.json, ["installed": true], text: "the intermediate certificate is installed at \(options.mount)/")
                }
            }
        }
    }

    struct Role: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Roles: which names a certificate may have, its key and lifetime.", subcommands: [Create.self, Show.self, List.self, Delete.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create or replace a role.")
            @OptionGroup var options: PKIOptions
            @Argument var name: String
            @Option(help: "Domains certificates may name (comma-separated).") var allowedDomains: String = ""
            @Flag(help: "Names under the allowed domains (www.example.com).") var allowSubdomains = false
            @Flag(help: "The allowed domains themselves.") var allowBareDomains = false
            @Flag(help: "Any name at all.") var allowAnyName = false
            @Flag(help: "Refuse IP addresses in certificates.") var denyIpSans = false
            @Option(help: "rsa, ec or ed25519 (any: signing only).") var keyType: String = "rsa"
            @Option(help: "Key size (0: the type's default).") var keyBits: Int = 0
            @Option(help: "Default lifetime.") var ttl: String?
            @Option(help: "Longest lifetime.") var maxTtl: String?

            func run() async throws {
                try await runReporting {
                    var body: [String: Any] = [
                        "allowed_domains": allowedDomains, "allow_subdomains": allowSubdomains, "allow_bare_domains": allowBareDomains,
                        "allow_any_name": allowAnyName, "allow_ip_sans": !denyIpSans, "key_type": keyType, "key_bits": keyBits,
                    ]
                    if let ttl { body["ttl"] = ttl }
                    if let maxTtl { body["max_ttl"] = maxTtl }
                    _ = try await pkiCall(options, "POST", "roles/\(name)", body: body)
                    output(options.cluster.json, ["role": name], text: "role \(name) written")
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show a role.")
            @OptionGroup var options: PKIOptions
            @Argument var name: String
            func run() async throws { try await runReporting { printJSON(try await pkiCall(options, "GET", "roles/\(name)")) } }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the roles.")
            @OptionGroup var options: PKIOptions
            func run() async throws {
                try await runReporting { for name in try await pkiCall(options, "LIST", "roles")["keys"] as? [String] ?? [] { print(name) } }
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a role.")
            @OptionGroup var options: PKIOptions
            @Argument var name: String
            func run() async throws {
                try await runReporting {
                    _ = try await pkiCall(options, "DELETE", "roles/\(name)")
                    output(options.cluster.json, ["deleted": name], text: "role \(name) deleted")
                }
            }
        }
    }

    /// Writes an issued certificate's parts to files, or prints them.
    static func emit(_ data: [String: Any], json: Bool, certOut: String?, keyOut: String?, caOut: String?) throws {
        if json { return printJSON(data) }
        let certificate = data["certificate"] as? String ?? ""
        if certOut == nil { print(certificate) } else { try writeOutput(certificate, to: certOut) }
        if let key = data["private_key"] as? String {
            if keyOut == nil { print(key) } else { try writeOutput(key, to: keyOut) }
        }
        if let caOut { try writeOutput((data["ca_chain"] as? [String] ?? [data["issuing_ca"] as? String ?? ""]).joined(separator: "\n"), to: caOut) }
        FileHandle.standardError.write(Data("serial \(data["serial_number"] ?? "")\n".utf8))
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a certificate and its new private key under a role.")
        @OptionGroup var options: PKIOptions
        @Argument var role: String
        @Option(help: "The common name.") var cn: String
        @Option(help: "More DNS names (comma-separated).") var altNames: String = ""
        @Option(help: "IP addresses (comma-separated).") var ipSans: String = ""
        @Option(help: "Lifetime (default: the role's).") var ttl: String?
        @Option(help: "Write the certificate here.") var certOut: String?
        @Option(help: "Write the private key here.") var keyOut: String?
        @Option(help: "Write the CA chain here.") var caOut: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["common_name": cn, "alt_names": altNames, "ip_sans": ipSans]
                if let ttl { body["ttl"] = ttl }
                try PKICommand.emit(try await pkiCall(options, "POST", "issue/\(role)", body: body), json: options.cluster.json, certOut: certOut, keyOut: keyOut, caOut: caOut)
            }
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a CSR under a role.")
        @OptionGroup var options: PKIOptions
        @Argument var role: String
        @Option(help: "The CSR (PEM; - reads standard input).") var csrFile: String
        @Option(help: "The common name (default: the CSR's).") var cn: String = ""
        @Option(help: "Lifetime (default: the role's).") var ttl: String?
        @Option(help: "Write the certificate here.") var certOut: String?

        func run() async throws {
            try await runReporting {
                var body: [String: Any] = ["csr": try readInput(csrFile), "common_name": cn]
                if let ttl { body["ttl"] = ttl }
                try PKICommand.emit(try await pkiCall(options, "POST", "sign/\(role)", body: body), json: options.cluster.json, certOut: certOut, keyOut: nil, caOut: nil)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a certificate by serial; the CRL is signed again at once.")
        @OptionGroup var options: PKIOptions
        @Argument var serial: String

        func run() async throws {
            try await runReporting {
                let data = try await pkiCall(options, "POST", "revoke", body: ["serial_number": serial])
                output(options.cluster.json, data, text: "revoked \(serial) at \(data["revocation_time_rfc3339"] ?? data["revocation_time"] ?? "")")
            }
        }
    }

    /// The CA certificate and the CRL, DER by default (what `openssl … -inform DER` reads).
    static func raw(_ options: PKIOptions, _ path: String, pem: Bool) async throws {
        let response = try await options.cluster.client().secrets(VaultRequest(method: "GET", path: "\(options.mount)/\(path)\(pem ? "/pem" : "")"))
        guard response.status == 200 else { throw CLIError.unavailable(response.errors.joined(separator: "; ")) }
        FileHandle.standardOutput.write(Data(response.body))
    }

    struct CA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the CA certificate (DER, or --pem).")
        @OptionGroup var options: PKIOptions
        @Flag var pem = false
        func run() async throws { try await runReporting { try await PKICommand.raw(options, "ca", pem: pem) } }
    }

    struct CRL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the signed CRL (DER, or --pem).")
        @OptionGroup var options: PKIOptions
        @Flag var pem = false
        func run() async throws { try await runReporting { try await PKICommand.raw(options, "crl", pem: pem) } }
    }
}
