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
        @Option(help: "Join the cluster of this ticket (aspen1...) on first start: as a learner, then a voter once caught up.")
        var ticket: String?
        @Flag(help: "With --ticket: stay a learner (no vote) after joining.") var learner = false
        @Option(help: "sqlite (default) or memory.") var storage: String = "sqlite"
        @Option(help: "Heartbeat interval in milliseconds (one Raft tick).") var heartbeatMs: Int = 100
        @Option(help: "Election timeout in heartbeats (randomized up to twice this).") var electionTicks: Int = 15
        @Option(help: "Snapshot the state and compact the log once this many entries applied since the last snapshot.")
        var compactAfterEntries: UInt64 = 10_000
        @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel: String = "info"

        func validate() throws {
            guard nodeId > 0 else { throw ValidationError("--node-id must be a positive integer") }
            guard ["sqlite", "memory"].contains(storage) else { throw ValidationError("--storage must be sqlite or memory") }
            guard heartbeatMs > 0, electionTicks > 1 else { throw ValidationError("--heartbeat-ms must be positive and --election-ticks above 1") }
            do {
                _ = try PeerList.parseAddress(listen)
                _ = try PeerList.parse(peers)
                if let http { _ = try PeerList.parseAddress(http) }
                if let ticket { _ = try ClusterTicket(parsing: ticket) }
            } catch {
                throw ValidationError("\(error)")
            }
            guard !(bootstrap && ticket != nil) else { throw ValidationError("--bootstrap founds a cluster and --ticket joins one: give one of them") }
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
            var given = try PeerList.parse(peers)
            let joining = try ticket.map { try ClusterTicket(parsing: $0) }
            for peer in joining?.peers ?? [] where peer.id != id {
                given[peer.id] = PeerAddress(host: peer.host, port: peer.port, key: peer.key)
            }
            if try store.load() == nil {
                try store.bootstrap(bootstrap ? .bootstrap(Raft.Membership(voters: [id] + Array(given.keys))) : .joining)
            }
            guard let state = try store.load() else { throw ValidationError("the store did not load after bootstrap") }
            let (host, port) = try PeerList.parseAddress(listen)
            // Phase 3: Raft, and the network that follows its membership.
            let network = PeerNetwork(tls: tls, peers: given, logger: logger)
            var configuration = NodeConfiguration(id: id)
            configuration.tickMs = heartbeatMs
            configuration.electionTicks = electionTicks
            configuration.compactionThreshold = max(1, compactAfterEntries)
            let node = RaftNode(
                configuration: configuration, storage: store, state: state, send: { network.send($0) },
                nowMs: { Int64(Date().timeIntervalSince1970 * 1000) }, logger: logger,
                membershipChanged: { network.update(membership: $0) })
            // The cluster id: recorded with the members, or derived by the founders, or the ticket's.
            let recordedID = state.snapshot.metadata.membership.addresses.values.lazy.compactMap { try? MemberRecord(decoding: $0) }.first?.clusterID
            let foundingID = MemberRecord.foundingClusterID([(id, identity.key)] + given.map { ($0.key, $0.value.key) })
            let clusterID = recordedID ?? joining?.clusterID ?? (bootstrap ? foundingID : [])
            // Phase 4: transport and handlers.
            let server = try await TransportServer.start(
                host: host, port: port, tls: tls,
                routes: [
                    AspenProtocol.raft: network.route(to: node),
                    AspenProtocol.logs: WatchService(hub: node.watches, logger: logger).route(),
                    AspenProtocol.client: ClientService(
                        node: node, network: network,
                        selfRecord: MemberRecord(key: identity.key, host: host, port: port, clusterID: clusterID), logger: logger
                    ).route,
                ],
                logger: logger)
            let selfRecord = MemberRecord(key: identity.key, host: host, port: server.port, clusterID: clusterID)
            var records = [id: selfRecord.encoded]
            if bootstrap {
                for (peer, address) in given {
                    records[peer] = MemberRecord(key: address.key, host: address.host, port: address.port, clusterID: clusterID).encoded
                }
            }
            await node.setLocalRecords(records)
            // Phase 5: services.
            await node.start()
            var admin: AdminServer?
            if let http {
                let (adminHost, adminPort) = try PeerList.parseAddress(http)
                admin = try await AdminServer.start(host: adminHost, port: adminPort, node: node)
            }
            let joiner: Task<Void, Never>? =
                if let joining, await node.membership.isEmpty {
                    Task { await Joiner.join(id: id, record: selfRecord, ticket: joining, asVoter: !learner, node: node, network: network, logger: logger) }
                } else { nil }
            logger.info("node ready", metadata: ["id": "\(id)", "key": "\(identity.key.hex)", "listen": "\(host):\(server.port)"])
            FileHandle.standardOutput.write(Data("aspen-node \(id.rawValue) ready key=\(identity.key.hex) listen=\(host):\(server.port)\n".utf8))
            await waitForTerminationSignal()
            // Shutdown in dependency order: stop accepting, stop Raft, close the network.
            logger.info("shutting down")
            joiner?.cancel()
            try? await admin?.close()
            try? await server.close()
            await node.stop()
        }
    }
}

