import AspenAuth
import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenTransport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

extension ClusterSuites {
    /// Capability-token auth against real `aspen-node` processes, through the real CLI and etcdctl.
    @Suite("Capability tokens on real processes", .serialized, .timeLimit(.minutes(5)))
    struct AuthProcessTests {
        /// Runs the CLI with no cluster options (offline commands: keygen, create, inspect, check).
        static func offline(_ arguments: [String]) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }

        /// A 3-node cluster that requires credentials and trusts one root key; its root
        /// credential (every capability) in `root.cred`, the etcd endpoint on node 1.
        static func start() throws -> (cluster: ProcessCluster, root: String, rootKey: String) {
            let cluster = try ProcessCluster(nodes: 3)
            let keyFile = cluster.directory.appendingPathComponent("root.key").path
            let credential = cluster.directory.appendingPathComponent("root.cred").path
            try FileManager.default.createDirectory(at: cluster.directory, withIntermediateDirectories: true)
            let (status, rootKey) = try offline(["token", "keygen", "--out", keyFile])
            #expect(status == 0, "\(rootKey)")
            #expect(try offline(["token", "create", "--root-key-file", keyFile, "--cap", "full:", "--cap", "coordination:", "--cap", "cluster-admin",
                "--cap", "delegate", "--lifetime", "1d", "--out", credential]).0 == 0)
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(
                    id,
                    arguments: ["--peers", peers, "--bootstrap", "--auth", "required", "--trusted-roots", rootKey]
                        + (id == 1 ? ["--etcd-listen", "127.0.0.1:\(cluster.basePort + 31)", "--http", "127.0.0.1:\(cluster.basePort + 51)"] : []))
            }
            return (cluster, credential, rootKey)
        }

        @Test("every node serves a credential it verifies alone; capabilities confine keys; delegation narrows; revocation holds on every node and across a restart")
        func credentials() async throws {
            let (cluster, root, _) = try Self.start()
            defer { cluster.terminateAll() }
            let file = { (name: String) in cluster.directory.appendingPathComponent(name).path }
            func aspen(_ credential: String?, _ arguments: [String], node: Int? = nil) async throws -> (Int32, String) {
                try await cluster.aspen((credential.map { ["--credential-file", $0] } ?? []) + arguments, endpoints: node.map { cluster.entries[$0 - 1] })
            }
            try await eventually("the cluster takes the root credential") { try await aspen(root, ["kv", "put", "app/x", "1"]).0 == 0 }

            // Without a credential: refused (exit 6), the node keeps serving.
            #expect(try await aspen(nil, ["kv", "put", "a", "b"]).0 == 6)
            #expect(try await aspen(nil, ["kv", "get", "app/x"]).0 == 6)
            // Public: status, members, auth status.
            #expect(try await aspen(nil, ["cluster", "status"]).0 == 0)
            #expect(try await aspen(nil, ["auth", "status", "--json"]).1.contains("\"required\":true"))
            // Every node verifies the root credential by itself (a follower's own state).
            for node in 1...3 {
                try await eventually("node \(node) applied the write") { try await aspen(root, ["kv", "get", "app/x", "--stale"], node: node).1 == "1" }
            }

            // A credential for app/ reads and writes app/jobs/ only.
            let app = file("app.cred")
            #expect(try Self.offline(["token", "create", "--credential-file", root, "--cap", "read:app/", "--cap", "write:app/jobs/", "--lifetime", "1h", "--out", app]).0 == 0)
            #expect(try await aspen(app, ["kv", "get", "app/x"]).1 == "1")
            #expect(try await aspen(app, ["kv", "put", "app/jobs/1", "a"]).0 == 0)
            #expect(try await aspen(app, ["kv", "put", "app/x", "2"]).0 == 6)
            #expect(try await aspen(app, ["kv", "put", "app/jobs/2", "b", "--prev"]).0 == 0, "read and write of app/jobs/ both held")
            #expect(try await aspen(app, ["kv", "get", "other"]).0 == 6)
            #expect(try await aspen(app, ["kv", "scan", "app"]).0 == 6, "the prefix app is wider than app/")
            #expect(try await aspen(app, ["kv", "scan", "app/"]).0 == 0)
            #expect(try await aspen(app, ["kv", "delete", "app/jobs/1"]).0 == 6, "write does not allow delete")
            // A transaction is checked on both branches: the failure branch's put outside app/jobs/
            // refuses it whole, and nothing applies.
            let txn = #"{"compare":[{"key":"app/x","value":"no"}],"success":[{"put":{"key":"app/jobs/3","value":"c"}}],"failure":[{"put":{"key":"app/y","value":"d"}}]}"#
            #expect(try await cluster.aspen(["--credential-file", app, "kv", "txn"], stdin: txn).0 == 6)
            #expect(try await aspen(root, ["kv", "get", "app/jobs/3"]).0 == 1)
            #expect(try await aspen(app, ["kv", "watch", "other/", "--from-revision", "1"]).0 == 6)
            let check = try Self.offline(["token", "check", app, "--op", "put", "--key", "app/x"])
            #expect(check.0 == 6 && check.1.contains("write of key 'app/x'"), "\(check)")

            // Delegation narrows; a parent without delegate cannot delegate.
            #expect(try Self.offline(["token", "delegate", "--from", app, "--cap", "read:app/"]).0 == 4)
            let parent = file("parent.cred")
            let child = file("child.cred")
            #expect(try Self.offline(["token", "create", "--credential-file", root, "--cap", "read:app/", "--cap", "delegate", "--lifetime", "1h", "--out", parent]).0 == 0)
            #expect(try Self.offline(["token", "delegate", "--from", parent, "--cap", "read:app/", "--lifetime", "30m", "--out", child]).0 == 0)
            #expect(try Self.offline(["token", "delegate", "--from", parent, "--cap", "read:", "--lifetime", "30m"]).0 == 4, "a widening child is not minted")
            #expect(try await aspen(child, ["kv", "get", "app/x", "--stale"], node: 3).1 == "1")

            // Revoke the parent through node 1: its child is refused on node 3 at once.
            #expect(try await aspen(root, ["token", "revoke", parent], node: 1).0 == 0)
            #expect(try await aspen(child, ["kv", "get", "app/x", "--stale"], node: 3).0 == 6)
            #expect(try await aspen(child, ["kv", "get", "app/x", "--stale"], node: 2).0 == 6)
            // A full: credential cannot reach the revocation records: deleting every key leaves them.
            #expect(try await aspen(root, ["kv", "delete", "", "--prefix"]).0 == 0)
            #expect(try await aspen(child, ["kv", "get", "app/x", "--stale"], node: 3).0 == 6)
            #expect(try await aspen(app, ["kv", "put", "app/jobs/9", "z"]).0 == 0, "an unrelated credential still works")

            // The whole cluster restarts: the revocation is replicated state.
            cluster.terminateAll()
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(id, arguments: ["--peers", peers, "--auth", "required", "--trusted-roots", try Self.rootKey(root)])
            }
            try await eventually("the restarted cluster serves the root credential") { try await aspen(root, ["kv", "put", "after", "restart"]).0 == 0 }
            for node in 1...3 { #expect(try await aspen(child, ["kv", "get", "app/x", "--stale"], node: node).0 == 6, "node \(node) after the restart") }

            // Everything an issuer issued before now: the app credential's issuer is the root
            // credential's holder.
            let holder = try #require(try Self.offline(["token", "inspect", app, "--json"]).1.split(separator: "\"").drop { $0 != "issuer" }.dropFirst(2).first)
            let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(1))
            #expect(try await aspen(root, ["token", "revoke", "--issuer", String(holder), "--before", now]).0 == 0)
            #expect(try await aspen(app, ["kv", "get", "app/jobs/9"]).0 == 6)

            // Verification is offline: node 3, cut off from the others (both killed), still
            // verifies a credential it has never seen, and still refuses the revoked one.
            let fresh = file("fresh.cred")
            #expect(try Self.offline(["token", "create", "--root-key-file", cluster.directory.appendingPathComponent("root.key").path,
                "--cap", "read:", "--lifetime", "1h", "--out", fresh]).0 == 0)
            try await eventually("node 3 applied the issuer cutoff") { try await aspen(app, ["kv", "get", "app/x", "--stale"], node: 3).0 == 6 }
            cluster.kill9(1)
            cluster.kill9(2)
            #expect(try await aspen(fresh, ["kv", "get", "after", "--stale"], node: 3).1 == "restart")
            #expect(try await aspen(child, ["kv", "get", "after", "--stale"], node: 3).0 == 6)

            // A node whose clock runs two hours ahead finds the one-hour credential expired.
            cluster.kill9(3)
            try cluster.start(
                3, arguments: ["--peers", cluster.entries[0] + "," + cluster.entries[1], "--auth", "required", "--trusted-roots", try Self.rootKey(root)],
                environment: ["ASPEN_TEST_CLOCK_SKEW_MS": "7200000"])
            try await eventually("node 3 is back") { try await aspen(nil, ["cluster", "status"], node: 3).0 == 0 }
            #expect(try await aspen(fresh, ["kv", "get", "after", "--stale"], node: 3).0 == 6)
            #expect(try await aspen(root, ["kv", "get", "after", "--stale"], node: 3).1 == "restart", "the root credential lives a day")
        }

        static func rootKey(_ credential: String) throws -> String {
            let inspected = try offline(["token", "inspect", credential, "--json"]).1
            return String(try #require(inspected.split(separator: "\"").drop { $0 != "issuer" }.dropFirst(2).first))
        }

        @Test("a node that requires credentials and trusts no root refuses to start, saying how to give it one")
        func noRootNoStart() throws {
            let cluster = try ProcessCluster(nodes: 1)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen-node"))
            process.arguments = [
                "run", "--node-id", "1", "--data-dir", cluster.dataDirectory(1), "--listen", "127.0.0.1:\(cluster.basePort + 1)", "--bootstrap",
                "--auth", "required",
            ]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus != 0)
            #expect(text.contains("trusts no root key") && text.contains("--trusted-roots"), "\(text)")
        }

        @Test("a credential holding only delegate is refused every request kind but the published public ones")
        func everyRequestKindIsChecked() async throws {
            let (cluster, root, _) = try Self.start()
            defer { cluster.terminateAll() }
            try await eventually("the cluster takes the root credential") {
                try await cluster.aspen(["--credential-file", root, "kv", "put", "k", "v"]).0 == 0
            }
            let only = cluster.directory.appendingPathComponent("delegate.cred").path
            #expect(try Self.offline(["token", "create", "--credential-file", root, "--cap", "delegate", "--lifetime", "1h", "--out", only]).0 == 0)
            let refused: [[String]] = [
                ["kv", "put", "k", "v"], ["kv", "get", "k"], ["kv", "delete", "k"], ["kv", "scan", ""], ["kv", "cas", "k", "--expected", "v", "--new", "w"],
                ["kv", "watch", "k", "--from-revision", "1"], ["kv", "compact", "1"],
                ["lease", "grant", "10000"], ["lease", "list"], ["lease", "ttl", "1"], ["lease", "revoke", "1"],
                ["lock", "acquire", "l", "--ttl-ms", "1000"], ["counter", "get", "c"], ["counter", "add", "c", "1"], ["sequence", "s"],
                ["queue", "enqueue", "q", "x"], ["queue", "status", "q"], ["semaphore", "holders", "s", "--capacity", "2"],
                ["barrier", "status", "b"], ["election", "leader", "e"], ["service", "discover", "web"],
                ["cluster", "snapshot"], ["cluster", "defrag"], ["cluster", "hash"], ["cluster", "metrics"], ["cluster", "transfer-leader", "2"],
                ["cluster", "remove", "3"], ["auth", "root", "add", String(repeating: "ab", count: 32)], ["auth", "require", "off"],
                ["token", "revoke", String(repeating: "cd", count: 32)],
            ]
            for arguments in refused {
                let (status, output) = try await cluster.aspen(["--credential-file", only] + arguments)
                #expect(status == 6, "\(arguments.joined(separator: " ")) with only delegate: exit \(status) \(output)")
            }
            for arguments in [["cluster", "status"], ["cluster", "members"], ["auth", "status"]] {
                #expect(try await cluster.aspen(["--credential-file", only] + arguments).0 == 0, "\(arguments.joined(separator: " ")) is public")
            }
            // Nothing refused changed anything: the key is as the root credential wrote it.
            #expect(try await cluster.aspen(["--credential-file", root, "kv", "get", "k"]).1 == "v")

            // The admin port: /health is public; /metrics and /cluster-ticket need cluster-admin.
            let admin = "http://127.0.0.1:\(cluster.basePort + 51)"
            func get(_ path: String, _ credential: String?) async throws -> (Int, String) {
                var request = URLRequest(url: URL(string: admin + path)!)
                if let credential { request.setValue("Bearer \(try #require(ValueFile.read(credential)))", forHTTPHeaderField: "Authorization") }
                let (data, response) = try await URLSession.shared.data(for: request)
                return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
            }
            try await eventually("/health is ok") { try await get("/health", nil).0 == 200 }
            #expect(try await get("/metrics", nil).0 == 401)
            #expect(try await get("/cluster-ticket", only).0 == 401)
            let metrics = try await get("/metrics", root)
            #expect(metrics.0 == 200 && metrics.1.contains("aspen_auth_denials_total"), "\(metrics.0)")
            let denials = metrics.1.split(separator: "\n").first { $0.hasPrefix("aspen_auth_denials_total ") }.flatMap { Int($0.split(separator: " ")[1]) }
            #expect((denials ?? 0) > 0, "the refusals above were counted on node 1")
        }

        @Test("etcdctl: no credential, a garbage one, one lacking the capability and a valid one")
        func etcdctl() async throws {
            guard let binary = EtcdCompatibilityTests.etcdctl else {
                Issue.record("etcdctl is not installed (apt-get install etcd-client; .ci/run does it)")
                return
            }
            let (cluster, root, _) = try Self.start()
            defer { cluster.terminateAll() }
            try await eventually("the cluster takes the root credential") {
                try await cluster.aspen(["--credential-file", root, "kv", "put", "app/x", "1"]).0 == 0
            }
            let app = cluster.directory.appendingPathComponent("app.cred").path
            #expect(try Self.offline(["token", "create", "--credential-file", root, "--cap", "full:app/", "--lifetime", "1h", "--out", app]).0 == 0)
            let etcdctl = EtcdCompatibilityTests.Etcdctl(binary: binary, endpoints: "127.0.0.1:\(cluster.basePort + 31)")
            let password = try #require(ValueFile.read(app))
            let none = try await etcdctl(["get", "app/x"])
            #expect(none.0 != 0 && none.2.contains("user name is empty"), "\(none)")
            let garbage = try await etcdctl(["--user", "token", "--password", "aspen-credential-1:garbage", "get", "app/x"])
            #expect(garbage.0 != 0 && garbage.2.contains("authentication failed"), "\(garbage)")
            let lacking = try await etcdctl(["--user", "token", "--password", password, "put", "other", "1"])
            #expect(lacking.0 != 0 && lacking.2.contains("permission denied"), "\(lacking)")
            #expect(try await etcdctl(["--user", "token", "--password", password, "put", "app/y", "2"]).1 == "OK")
            #expect(try await etcdctl(["--user", "token", "--password", password, "get", "app/x", "--print-value-only"]).1 == "1")
            let wide = try await etcdctl(["--user", "token", "--password", password, "get", "", "--prefix"])
            #expect(wide.0 != 0 && wide.2.contains("permission denied"), "a prefix read wider than app/: \(wide)")
            let users = try await etcdctl(["--user", "token", "--password", password, "user", "list"])
            #expect(users.0 != 0 && users.2.contains("capability tokens"), "\(users)")

            // A session whose credential holds only delegate: every etcd method but the public
            // ones is refused with etcd's own error.
            let only = cluster.directory.appendingPathComponent("delegate.cred").path
            #expect(try Self.offline(["token", "create", "--credential-file", root, "--cap", "delegate", "--lifetime", "1h", "--out", only]).0 == 0)
            let onlyPassword = try #require(ValueFile.read(only))
            let refused: [[String]] = [
                ["put", "k", "v"], ["get", "k"], ["get", "", "--prefix"], ["del", "k"], ["compaction", "1"],
                ["lease", "grant", "10"], ["lease", "list"], ["lease", "timetolive", "1"], ["lease", "revoke", "1"],
                ["defrag"], ["endpoint", "hashkv"], ["member", "remove", "2"], ["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
                ["auth", "disable"],
            ]
            for arguments in refused {
                let result = try await etcdctl(["--user", "token", "--password", onlyPassword] + arguments)
                #expect(result.0 != 0 && result.2.contains("permission denied"), "etcdctl \(arguments.joined(separator: " ")): \(result)")
            }
            #expect(try await etcdctl(["--user", "token", "--password", onlyPassword, "member", "list"]).0 == 0)
            #expect(try await etcdctl(["--user", "token", "--password", onlyPassword, "endpoint", "status"]).0 == 0)
        }
    }
}
