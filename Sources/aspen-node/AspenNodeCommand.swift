import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import AspenTransport
import ArgumentParser
import Foundation
import Logging

@main
struct AspenNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen-node",
        abstract: "Run one Aspen node.",
        subcommands: [Run.self, Key.self],
        defaultSubcommand: Run.self)

    /// Prints the node's public key, creating the identity if needed (used to assemble peer lists).
    struct Key: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print this node's public key (creating it on first use).")
        @Option(help: "The node's data directory.") var dataDir: String
        func run() throws {
            print(try NodeIdentity.loadOrCreate(directory: dataDir).key.hex)
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start the node and serve until SIGINT or SIGTERM.")

        @Option(help: "This node's id (a positive integer, unique in the cluster).") var nodeId: UInt64
        @Option(help: "The node's data directory (identity key and database).") var dataDir: String
        @Option(help: "Address to listen on, HOST:PORT.") var listen: String = "127.0.0.1:7000"
        @Option(help: "The other members: ID=KEYHEX@HOST:PORT,...") var peers: String = ""
        @Option(help: "Admin HTTP address HOST:PORT for /health and /metrics (off unless given).") var http: String?
        @Flag(help: "Found a new cluster whose voters are this node and --peers (first start only).") var bootstrap = false
        @Option(help: "sqlite (default) or memory.") var storage: String = "sqlite"
        @Option(help: "Heartbeat interval in milliseconds (one Raft tick).") var heartbeatMs: Int = 100
        @Option(help: "Election timeout in heartbeats (randomized up to twice this).") var electionTicks: Int = 15
        @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel: String = "info"

        func validate() throws {
            guard nodeId > 0 else { throw ValidationError("--node-id must be a positive integer") }
            guard ["sqlite", "memory"].contains(storage) else { throw ValidationError("--storage must be sqlite or memory") }
            guard heartbeatMs > 0, electionTicks > 1 else { throw ValidationError("--heartbeat-ms must be positive and --election-ticks above 1") }
            do {
                _ = try PeerList.parseAddress(listen)
                _ = try PeerList.parse(peers)
                if let http { _ = try PeerList.parseAddress(http) }
            } catch {
                throw ValidationError("\(error)")
            }
        }

        func run() async throws {
            var logger = Logger(label: "aspen.node")
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            let id = NodeID(nodeId)
            // Phase 1: identity.
            let identity = try NodeIdentity.loadOrCreate(directory: dataDir)
            let tls = try TLSMaterial(identity: identity)
            // Phase 2: storage.
            let store: any NodeStorage =
                storage == "memory" ? MemoryNodeStorage() : try SQLiteNodeStorage(path: (dataDir as NSString).appendingPathComponent("aspen.db"))
            let peerList = try PeerList.parse(peers)
            if try store.load() == nil {
                try store.bootstrap(bootstrap ? .bootstrap(Raft.Membership(voters: [id] + Array(peerList.keys))) : .joining)
            }
            guard let state = try store.load() else { throw ValidationError("the store did not load after bootstrap") }
            // Phase 3: Raft.
            let network = PeerNetwork(tls: tls, peers: peerList, logger: logger)
            var configuration = NodeConfiguration(id: id)
            configuration.tickMs = heartbeatMs
            configuration.electionTicks = electionTicks
            let node = RaftNode(
                configuration: configuration, storage: store, state: state, send: { network.send($0) },
                nowMs: { Int64(Date().timeIntervalSince1970 * 1000) }, logger: logger)
            // Phase 4: transport and handlers.
            let (host, port) = try PeerList.parseAddress(listen)
            let server = try await TransportServer.start(
                host: host, port: port, tls: tls,
                routes: [AspenProtocol.raft: network.route(to: node), AspenProtocol.client: ClientService(node: node, logger: logger).route],
                logger: logger)
            // Phase 5: services.
            await node.start()
            var admin: AdminServer?
            if let http {
                let (adminHost, adminPort) = try PeerList.parseAddress(http)
                admin = try await AdminServer.start(host: adminHost, port: adminPort, node: node)
            }
            logger.info("node ready", metadata: ["id": "\(id)", "key": "\(identity.key.hex)", "listen": "\(host):\(server.port)"])
            FileHandle.standardOutput.write(Data("aspen-node \(id.rawValue) ready key=\(identity.key.hex) listen=\(host):\(server.port)\n".utf8))
            await waitForTerminationSignal()
            // Shutdown in dependency order: stop accepting, stop Raft, close the network.
            logger.info("shutting down")
            try? await admin?.close()
            try? await server.close()
            await node.stop()
        }
    }
}

