import AspenAuth
import AspenClient
import AspenCore
import AspenNode
import AspenTransport
import ArgumentParser
import Foundation

/// `aspen dev`: a local cluster of real `aspen-node` processes on loopback, for trying Aspen.
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local cluster of real aspen-node processes until Ctrl-C.",
        discussion: "Data survives restarts: run it again with the same --data-dir and the cluster comes back with its data.")

    @Option(help: "Number of nodes.") var nodes: Int = 3
    @Option(help: "Where the nodes keep their keys and databases, and the cluster's ticket (the CLI reads ./.aspen-dev/ticket).")
    var dataDir: String = DevTicket.defaultDataDirectory
    @Option(help: "Node N listens on 127.0.0.1:(base-port + N).") var basePort: Int = 7100
    @Option(help: "Heartbeat interval of the nodes, in milliseconds.") var heartbeatMs: Int = 50
    @Option(help: "The nodes' log level (trace, debug, info, notice, warning, error, critical); they log to standard error.")
    var logLevel: String = "warning"
    @Flag(help: "Require capability credentials: makes a root key and writes a root credential (the CLI run here uses it).")
    var auth = false

    func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(logLevel) else { throw ValidationError("--log-level must be one of \(levels.joined(separator: ", "))") }
        guard basePort > 0, basePort + nodes < 65536 else { throw ValidationError("--base-port leaves no room for \(nodes) ports") }
    }

    func run() async throws {
        // aspen-node beside this binary if it was built (`swift build`), else this binary's own
        // `aspen node` (`swift run aspen dev` builds only aspen).
        // This program's own path: argv[0] is only a name when it was found on PATH.
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let here = URL(fileURLWithPath: own).resolvingSymlinksInPath()
        let sibling = here.deletingLastPathComponent().appendingPathComponent("aspen-node").path
        let (nodeBinary, nodeCommand): (String, [String]) =
            FileManager.default.isExecutableFile(atPath: sibling) ? (sibling, []) : (here.path, ["node"])
        let root = URL(fileURLWithPath: dataDir).standardizedFileURL
        let fresh = !FileManager.default.fileExists(atPath: root.appendingPathComponent("n1/aspen.db").path)
        var endpoints: [Endpoint] = []
        for id in 1...nodes {
            let directory = root.appendingPathComponent("n\(id)").path
            let key = try Self.capture(nodeBinary, nodeCommand + ["key", "--data-dir", directory]).trimmingCharacters(in: .whitespacesAndNewlines)
            endpoints.append(Endpoint(id: NodeID(UInt64(id)), host: "127.0.0.1", port: basePort + id, key: NodeKey(hex: key)))
        }
        // With auth (asked for now, or on the first run): a root key, and a root credential that
        // the CLI run from this directory finds by itself, as it finds the ticket.
        let keyPath = root.appendingPathComponent("root.key").path
        let credentialPath = DevTicket.credentialPath(in: root.path)
        var credential: Credential?
        var authArguments: [String] = []
        if auth || FileManager.default.fileExists(atPath: keyPath) {
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: keyPath) { try CredentialFiles.writeSecret(NodeIdentity().pemRepresentation, to: keyPath) }
            let rootKey = try CredentialFiles.readKey(keyPath)
            if let existing = try? CredentialFiles.read(credentialPath), existing.leaf.token.expiresAtMs > CredentialFiles.nowMs + 86_400_000 {
                credential = existing
            } else {
                try? FileManager.default.removeItem(atPath: credentialPath)
                let minted = try TokenIssuer.root(
                    rootKey: rootKey, holderKey: SigningKey(), capabilities: TokenIssuer.everything, lifetimeMs: 365 * 86_400_000,
                    nowMs: CredentialFiles.nowMs)
                try CredentialFiles.writeSecret(minted.text + "\n", to: credentialPath)
                credential = minted
            }
            authArguments = ["--auth", "required", "--trusted-roots", rootKey.publicKey.hex, "--join-credential-file", credentialPath]
        }
        let identity = credential?.holderKey.map { NodeIdentity(privateKey: $0.privateKey) } ?? NodeIdentity()
        var processes: [Process] = []
        func launch(_ id: Int, ticket: String?) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: nodeBinary)
            process.arguments = nodeCommand + [
                "run", "--node-id", "\(id)", "--data-dir", root.appendingPathComponent("n\(id)").path,
                "--listen", "127.0.0.1:\(basePort + id)", "--heartbeat-ms", "\(heartbeatMs)",
                "--election-timeout-ms", "\(heartbeatMs * 10)-\(heartbeatMs * 20 - 1)", "--log-level", logLevel, "--http", "127.0.0.1:\(basePort + 50 + id)",
                "--etcd-listen", "127.0.0.1:\(basePort + 30 + id)", "--vault-listen", "127.0.0.1:\(basePort + 60 + id)",
            ] + (ticket.map { ["--ticket", $0] } ?? []) + authArguments
            try process.run()
            processes.append(process)
        }
        let client = try AspenClient(endpoints: endpoints, identity: identity, attemptsMax: 50, credential: credential)
        let ticket: String
        do {
            if fresh {
                // Found the cluster on node 1, then let the others join it with its ticket.
                try launch(1, ticket: nil)
                let first = try AspenClient(endpoints: [endpoints[0]], identity: identity, attemptsMax: 50, credential: credential)
                _ = try await first.initializeCluster()
                let founded = try await Self.waitForMembers(first, voters: 1)
                await first.close()
                for id in 2...max(2, nodes) where id <= nodes { try launch(id, ticket: founded.ticket.encoded) }
            } else {
                for id in 1...nodes { try launch(id, ticket: nil) }
            }
            ticket = try await Self.waitForMembers(client, voters: nodes).ticket.encoded
        } catch {
            for process in processes where process.isRunning { process.terminate() }
            throw CLIError.unavailable("the dev cluster did not come up: \(error)")
        }
        await client.close()
        // The CLI run from this directory finds the cluster by this file (no export needed).
        let ticketPath = DevTicket.path(in: root.path)
        if !FileManager.default.createFile(atPath: ticketPath, contents: Data((ticket + "\n").utf8), attributes: [.posixPermissions: 0o600]) {
            FileHandle.standardError.write(Data("could not write \(ticketPath): export ASPEN_TICKET to use the CLI\n".utf8))
        }
        // Written unbuffered: the line to export must appear while the cluster runs.
        FileHandle.standardOutput.write(Data("""
            Aspen dev cluster: \(nodes) nodes, data in \(root.path)
            export ASPEN_TICKET=\(ticket)
            Admin: http://127.0.0.1:\(basePort + 51)/metrics and /health (node N on port \(basePort + 50) + N)
            etcd endpoints: \((1...nodes).map { "127.0.0.1:\(basePort + 30 + $0)" }.joined(separator: ",")) (e.g. etcdctl --endpoints=127.0.0.1:\(basePort + 31) member list)
            Vault API: export VAULT_ADDR=http://127.0.0.1:\(basePort + 61) (node N on port \(basePort + 60) + N); aspen secrets enable kv-v2
            Try: aspen kv put hello world && aspen kv get hello   (from this directory, no export needed; Ctrl-C stops the cluster)
            \(credential == nil ? "" : "Auth: required; the root credential is \(credentialPath) (the CLI run here uses it; etcdctl --user root --password \"$(cat \(credentialPath))\")\n")
            """.utf8))
        await waitForTerminationSignal()
        for process in processes where process.isRunning { process.terminate() }
        for process in processes { process.waitUntilExit() }
        FileHandle.standardOutput.write(Data("stopped\n".utf8))
    }

    /// Waits (up to a minute) until the cluster has this many voters, all with recorded addresses.
    static func waitForMembers(_ client: AspenClient, voters: Int) async throws -> ClusterMembers {
        let deadline = Date().addingTimeInterval(60)
        var last = "no answer yet"
        while Date() < deadline {
            do {
                let members = try await client.members()
                if members.voters.count >= voters, members.voters.allSatisfy({ members.records[$0] != nil }) { return members }
                last = "\(members.voters.count) of \(voters) voters so far"
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError.unavailable(last)
    }

    static func capture(_ binary: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLIError.unavailable("\(binary) \(arguments.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self)
    }
}
