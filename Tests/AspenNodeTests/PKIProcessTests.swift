import AspenCore
import Foundation
import Testing

/// Runs `openssl ARGUMENTS` in `directory`: its status and its output with errors.
func openssl(_ arguments: [String], in directory: URL) throws -> (Int32, String) { try runProgram("/usr/bin/openssl", arguments, in: directory) }

extension ClusterSuites {
    @Suite("The PKI engine on real processes, checked by openssl", .serialized, .timeLimit(.minutes(5)))
    struct PKIProcessTests {
        @Test("root → intermediate → leaf verifies; a disallowed name is refused; an RSA role gives RSA; a revoked leaf fails the signed CRL across a leader change while another passes")
        func certificateAuthority() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try await cluster.startWithVault()
            let directory = cluster.directory
            let file: @Sendable (String) -> String = { directory.appendingPathComponent($0).path }
            func aspen(_ arguments: [String], endpoints: String? = nil) async throws -> (Int32, String) {
                try await cluster.aspen(arguments, endpoints: endpoints, withErrors: true)
            }
            func ok(_ arguments: [String]) async throws -> String {
                let (status, output) = try await aspen(arguments)
                #expect(status == 0, "aspen \(arguments.joined(separator: " ")): \(output)")
                return output
            }
            func issue(_ arguments: [String]) async throws -> [String: Any] {
                let output = try await ok(["pki", "issue"] + arguments + ["--json"])
                let start = output.firstIndex(of: "{") ?? output.startIndex
                return (try? JSONSerialization.jsonObject(with: Data(output[start...].utf8))) as? [String: Any] ?? [:]
            }
            _ = try await ok(["secrets", "enable", "pki"])
            _ = try await ok(["secrets", "enable", "pki", "--path", "pki_int"])
            _ = try await ok(["pki", "root", "generate", "--cn", "Example Root", "--out", file("root.pem")])
            _ = try await ok(["pki", "intermediate", "generate", "--mount", "pki_int", "--cn", "Example Intermediate", "--key-type", "ec", "--out", file("int.csr")])
            _ = try await ok(["pki", "root", "sign-intermediate", "--csr-file", file("int.csr"), "--out", file("int.pem")])
            _ = try await ok(["pki", "intermediate", "set-signed", "--mount", "pki_int", "--cert-file", file("int.pem")])
            _ = try await ok(["pki", "role", "create", "web", "--mount", "pki_int", "--allowed-domains", "example.com", "--allow-subdomains", "--key-type", "ec"])

            let leaf = try await issue(["web", "--mount", "pki_int", "--cn", "www.example.com"])
            let kept = try await issue(["web", "--mount", "pki_int", "--cn", "api.example.com"])
            try Data((leaf["certificate"] as? String ?? "").utf8).write(to: URL(fileURLWithPath: file("leaf.pem")))
            try Data((kept["certificate"] as? String ?? "").utf8).write(to: URL(fileURLWithPath: file("kept.pem")))
            let chain = try openssl(["verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"], in: directory)
            #expect(chain.0 == 0 && chain.1.contains("leaf.pem: OK"), "\(chain.1)")

            let refused = try await aspen(["pki", "issue", "web", "--mount", "pki_int", "--cn", "www.evil.com"])
            #expect(refused.0 != 0 && refused.1.contains("common name www.evil.com not allowed by this role"), "\(refused)")

            _ = try await ok(["pki", "role", "create", "rsa", "--mount", "pki_int", "--allowed-domains", "example.com", "--allow-subdomains", "--key-type", "rsa", "--key-bits", "3072"])
            let rsa = try await issue(["rsa", "--mount", "pki_int", "--cn", "rsa.example.com"])
            #expect(rsa["private_key_type"] as? String == "rsa")
            try Data((rsa["private_key"] as? String ?? "").utf8).write(to: URL(fileURLWithPath: file("rsa.key")))
            let key = try openssl(["pkey", "-in", "rsa.key", "-noout", "-text"], in: directory)
            #expect(key.0 == 0 && key.1.contains("3072 bit") && key.1.contains("modulus:") && key.1.contains("publicExponent"), "\(key.1.prefix(200))")
            #expect((rsa["private_key"] as? String ?? "").contains("BEGIN RSA PRIVATE KEY"))

            // Revoke one leaf, then read the CRL from another node after the leader is gone.
            let serial = try #require(leaf["serial_number"] as? String)
            _ = try await ok(["pki", "revoke", serial, "--mount", "pki_int"])
            let leader = try await cluster.leader()
            cluster.kill9(leader)
            let survivor = cluster.entries[(leader % 3)]
            var crl = (Int32(-1), "")
            try await eventually("a survivor serves the CRL") {
                crl = try await offThePool {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
                    process.arguments = ["pki", "crl", "--pem", "--mount", "pki_int", "--endpoints", survivor]
                    process.environment = ProcessInfo.processInfo.environment.merging(["ASPEN_IDENTITY_DIR": file("cli-identity")]) { $1 }
                    let output = Pipe()
                    process.standardOutput = output
                    try process.run()
                    let data = output.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
                }
                return crl.0 == 0 && crl.1.contains("BEGIN X509 CRL")
            }
            try Data(crl.1.utf8).write(to: URL(fileURLWithPath: file("crl.pem")))
            let signed = try openssl(["crl", "-in", "crl.pem", "-CAfile", "int.pem", "-noout", "-verify"], in: directory)
            #expect(signed.0 == 0 && signed.1.contains("verify OK"), "\(signed.1)")
            let listed = try openssl(["crl", "-in", "crl.pem", "-noout", "-text"], in: directory)
            #expect(listed.1.uppercased().contains(serial.replacingOccurrences(of: ":", with: "").uppercased()), "the CRL lists \(serial): \(listed.1)")
            let revoked = try openssl(["verify", "-crl_check", "-CAfile", "root.pem", "-untrusted", "int.pem", "-CRLfile", "crl.pem", "leaf.pem"], in: directory)
            #expect(revoked.0 != 0 && revoked.1.contains("certificate revoked"), "\(revoked.1)")
            let passes = try openssl(["verify", "-crl_check", "-CAfile", "root.pem", "-untrusted", "int.pem", "-CRLfile", "crl.pem", "kept.pem"], in: directory)
            #expect(passes.0 == 0 && passes.1.contains("kept.pem: OK"), "\(passes.1)")
        }
    }
}
