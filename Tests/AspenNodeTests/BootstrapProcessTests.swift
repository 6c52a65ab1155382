import AspenCore
import AspenTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension ClusterSuites {
    @Suite("Bootstrap secrets: SOPS files with age recipients, on real processes", .serialized, .timeLimit(.minutes(3)))
    struct BootstrapProcessTests {
        static func run(_ program: String, _ arguments: [String]) throws -> (Int32, String) { try runProgram(program, arguments, seconds: 20) }

        @Test("nodes read a SOPS file made with the real age: its trusted root admits a credential, its secrets are written once; a tampered, foreign or oversized file stops a node with a clear error")
        func bootstrap() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            let directory = cluster.directory
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let file = { (name: String) in directory.appendingPathComponent(name).path }
            let keygen = try #require(SopsFixture.program("age-keygen"), "age-keygen is not on PATH: apt-get install -y age")
            #expect(try Self.run(keygen, ["-o", file("node.agekey")]).0 == 0)
            #expect(try Self.run(keygen, ["-o", file("stranger.agekey")]).0 == 0)
            let recipient = try Self.run(keygen, ["-y", file("node.agekey")]).1.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(recipient.hasPrefix("age1"), "\(recipient)")
            let (keyStatus, rootKey) = try AuthProcessTests.offline(["token", "keygen", "--out", file("root.key")])
            #expect(keyStatus == 0, "\(rootKey)")
            #expect(try AuthProcessTests.offline([
                "token", "create", "--root-key-file", file("root.key"), "--cap", "full:", "--cap", "cluster-admin", "--cap", "secrets-full:",
                "--lifetime", "1d", "--out", file("root.cred"),
            ]).0 == 0)
            let tree = #"{"trusted_roots": ["\#(rootKey)"], "kv": {"secret/app/db": {"password": "from-sops", "port": 5432, "nested": {"ok": true}}}}"#
            let good = try SopsFixture.make(format: "yaml", tree: tree, recipients: [recipient], in: directory.appendingPathComponent("sops-good"))
            try Data(good).write(to: URL(fileURLWithPath: file("secrets.sops.yaml")))

            // The root key is only in the file: a node that did not read it would refuse the credential.
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(
                    id,
                    arguments: ["--peers", peers, "--bootstrap", "--auth", "required", "--bootstrap-secrets", file("secrets.sops.yaml"),
                        "--age-identity-file", file("node.agekey")] + cluster.vaultArguments(id))
            }
            func aspen(_ arguments: [String]) async throws -> (Int32, String) {
                try await cluster.aspen(["--credential-file", file("root.cred")] + arguments, withErrors: true)
            }
            try await eventually("the file's secret is written and readable with the file's root") {
                try await aspen(["kv2", "get", "secret/app/db", "--field", "password"]).1 == "from-sops"
            }
            #expect(try await aspen(["kv2", "get", "secret/app/db", "--field", "port"]).1 == "5432")
            // Written once: a change survives the nodes reading the file again at restart.
            #expect(try await aspen(["kv2", "put", "secret/app/db", "password=rotated"]).0 == 0)
            cluster.kill9(1)
            try cluster.start(
                1,
                arguments: ["--peers", cluster.entries.dropFirst().joined(separator: ","), "--bootstrap", "--auth", "required",
                    "--bootstrap-secrets", file("secrets.sops.yaml"), "--age-identity-file", file("node.agekey")] + cluster.vaultArguments(1))
            try await Task.sleep(for: .seconds(2))
            #expect(try await aspen(["kv2", "get", "secret/app/db", "--field", "password"]).1 == "rotated")

            // Files a node must refuse to start with.
            let tampered = try SopsFixture.make(format: "json", tree: tree, recipients: [recipient], tamper: "mac", in: directory.appendingPathComponent("sops-bad"))
            try Data(tampered).write(to: URL(fileURLWithPath: file("tampered.sops.json")))
            try Data(repeating: 0x20, count: Limits.standard.sopsFileBytesMax + 1).write(to: URL(fileURLWithPath: file("huge.sops.yaml")))
            let node = ProcessCluster.binary("aspen-node")
            func refused(_ secrets: String, _ identity: String) throws -> (Int32, String) {
                try Self.run(node, [
                    "run", "--node-id", "9", "--data-dir", file("refused-\(UUID().uuidString)"), "--listen", "127.0.0.1:0",
                    "--bootstrap-secrets", secrets, "--age-identity-file", identity,
                ])
            }
            let mac = try refused(file("tampered.sops.json"), file("node.agekey"))
            #expect(mac.0 != 0 && mac.1.contains("MAC does not match"), "\(mac)")
            let stranger = try refused(file("secrets.sops.yaml"), file("stranger.agekey"))
            #expect(stranger.0 != 0 && stranger.1.contains("no identity"), "\(stranger)")
            let huge = try refused(file("huge.sops.yaml"), file("node.agekey"))
            #expect(huge.0 != 0 && huge.1.contains("sopsFileBytesMax"), "\(huge)")
        }
    }
}
