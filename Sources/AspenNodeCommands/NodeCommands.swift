import AspenCore
import AspenEtcd
import AspenNode
import AspenTransport
import ArgumentParser
import Foundation
import Logging

/// The node's own commands, `run` and `key`: the `aspen-node` binary's, and the `aspen` CLI's
/// under `aspen node`, so that one binary can run a whole dev cluster.
public enum NodeCommands {
    /// Prints the node's public key, creating the identity if needed (used to assemble peer lists).
    public struct Key: ParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Print this node's public key (creating it on first use).")
        @Option(help: "The node's data directory.") var dataDir: String
        public init() {}
        public func run() throws {
            print(try NodeIdentity.loadOrCreate(directory: dataDir).key.hex)
        }
    }

    public struct Run: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Start the node and serve until SIGINT or SIGTERM.",
            discussion: """
                Every option can also be set by an environment variable (ASPEN_ and the option's name in
                upper case with _ for -, e.g. ASPEN_NODE_ID) or in the config file (TOML, top-level
                key = value lines, e.g. node-id = 1). Flags win over the environment, which wins over the
                file, which wins over the defaults; --print-config shows the result and where each value
                came from.
                """)

        @Option(help: "This node's id (a positive integer, unique in the cluster).") var nodeId: String?
        @Option(help: "The node's data directory (identity key and database).") var dataDir: String?
        @Option(help: "Address to listen on, HOST:PORT (default 127.0.0.1:7000).") var listen: String?
        @Option(help: "Admin HTTP address HOST:PORT for /health, /metrics and /cluster-ticket (off unless given).") var http: String?
        @Option(help: "Serve etcd's v3 gRPC API on HOST:PORT, so etcdctl and etcd clients work (off unless given; plaintext unless --etcd-cert-file).")
        var etcdListen: String?
        @Option(help: "Serve Vault's HTTP API (kv-v2, transit, pki) on HOST:PORT (off unless given; beyond loopback only with --vault-cert-file).")
        var vaultListen: String?
        @Option(help: "The Vault endpoint's TLS certificate chain (PEM); with --vault-key-file it serves HTTPS.") var vaultCertFile: String?
        @Option(help: "The Vault endpoint's TLS private key (PEM).") var vaultKeyFile: String?
        @Option(help: "A SOPS file (age recipients) read at start: trusted_roots, cookie, kv (initial secrets). Needs --age-identity-file.")
        var bootstrapSecrets: String?
        @Option(help: "The age identity file (AGE-SECRET-KEY-1…) that opens --bootstrap-secrets.") var ageIdentityFile: String?
        @Option(help: "The etcd endpoint's TLS certificate chain (PEM); with --etcd-key-file it serves TLS only.") var etcdCertFile: String?
        @Option(help: "The etcd endpoint's TLS private key (PEM).") var etcdKeyFile: String?
        @Option(help: "Require etcd clients to present a certificate signed by this CA (PEM).") var etcdTrustedCaFile: String?
        @Option(help: "Cluster cookie: clients must prove they know it (prefer --cookie-file: a command line is visible to every user).")
        var cookie: String?
        @Option(help: "A file holding the cluster cookie (or ASPEN_COOKIE_FILE).") var cookieFile: String?
        @Option(
            help: "Join the cluster of this ticket (aspen1...) on first start: as a learner, then a voter once caught up (or ASPEN_JOIN_TICKET; never ASPEN_TICKET, the CLI's).")
        var ticket: String?
        @Option(help: "With --bootstrap, the other founding members: ID=KEYHEX@HOST:PORT,...") var peers: String?
        @Flag(help: "Found a new cluster whose voters are this node and --peers (first start only).") var bootstrap = false
        @Flag(help: "With --ticket: stay a learner (no vote) after joining.") var learner = false
        @Option(help: "sqlite (the only store for a node; the memory store is for tests).") var storage: String?
        @Option(help: "Heartbeat interval in milliseconds (one Raft tick; default 100).") var heartbeatMs: String?
        @Option(help: "Election timeout MIN-MAX in milliseconds (default 10 to 20 heartbeats).") var electionTimeoutMs: String?
        @Option(help: "Snapshot and compact the log after this many applied entries (default 100000).") var compactAfterEntries: String?
        @Option(help: "periodic (default) or revision: how --auto-compaction-retention is counted.") var autoCompactionMode: String?
        @Option(
            help:
                "The leader compacts the key-value history by itself, keeping this much: a duration (30m, 1h, or a number of hours) in periodic mode, a number of revisions in revision mode (off unless given, as etcd's)."
        )
        var autoCompactionRetention: String?
        @Option(help: "trace, debug, info (default), notice, warning, error or critical.") var logLevel: String?
        @Option(
            help:
                "off, required or auto (default): whether requests need capability credentials; auto requires them when the node listens beyond this machine or the cluster was founded with auth."
        )
        var auth: String?
        @Option(help: "Root public keys (KEYHEX,...) this node trusts beside the ones the cluster records.") var trustedRoots: String?
        @Option(help: "With --ticket, on a cluster that requires credentials: the credential (with cluster-admin) this node asks to be added with.")
        var joinCredentialFile: String?
        @Option(help: "A TOML config file (default: $ASPEN_CONFIG).") var config: String?
        @Flag(help: "Print the effective settings and where each came from, then exit.") var printConfig = false

        func settings() throws -> NodeSettings {
            var flags: [String: String] = [:]
            let given: [(String, String?)] = [
                ("node-id", nodeId), ("data-dir", dataDir), ("listen", listen), ("http", http), ("etcd-listen", etcdListen), ("vault-listen", vaultListen), ("vault-cert-file", vaultCertFile), ("vault-key-file", vaultKeyFile), ("bootstrap-secrets", bootstrapSecrets), ("age-identity-file", ageIdentityFile),
                ("etcd-cert-file", etcdCertFile),
                ("etcd-key-file", etcdKeyFile), ("etcd-trusted-ca-file", etcdTrustedCaFile), ("cookie", cookie), ("cookie-file", cookieFile),
                ("ticket", ticket),
                ("peers", peers), ("storage", storage), ("heartbeat-ms", heartbeatMs), ("election-timeout-ms", electionTimeoutMs),
                ("compact-after-entries", compactAfterEntries), ("auto-compaction-mode", autoCompactionMode),
                ("auto-compaction-retention", autoCompactionRetention), ("log-level", logLevel), ("auth", auth),
                ("trusted-roots", trustedRoots), ("join-credential-file", joinCredentialFile),
                ("bootstrap", bootstrap ? "true" : nil), ("learner", learner ? "true" : nil),
            ]
            for case (let name, let value?) in given { flags[name] = value }
            let environment = ProcessInfo.processInfo.environment
            var file: [String: String] = [:]
            if let path = config ?? environment["ASPEN_CONFIG"] {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ValidationError("cannot read the config file \(path)")
                }
                do {
                    file = try ConfigFile.parse(text, name: path)
                } catch {
                    throw ValidationError("\(error)")
                }
            }
            do {
                return try NodeSettings.resolve(flags: flags, environment: environment, file: file)
            } catch {
                throw ValidationError("\(error)")
            }
        }

        public init() {}

        public func validate() throws { _ = try settings() }

        public func run() async throws {
            let settings = try settings()
            if printConfig {
                print(settings.summary)
                return
            }
            // The etcd endpoint's TLS files are read before the node starts: a bad one stops
            // the start, naming the file, with nothing to undo.
            let tls: EtcdTLS?
            do {
                tls = try settings.etcdTLS.map { try EtcdTLS(certificateFile: $0.certificate, keyFile: $0.key, clientCAFile: $0.clientCA) }
            } catch {
                throw ValidationError("\(error)")
            }
            var logger = Logger(label: "aspen.node")
            logger.logLevel = Logger.Level(rawValue: settings.logLevel) ?? .info
            let runtime = try await NodeRuntime.start(settings, logger: logger)
            let id = settings.nodeID
            logger.info("node ready", metadata: ["id": "\(id)", "key": "\(runtime.identity.key.hex)", "listen": "\(runtime.listenAddress)"])
            FileHandle.standardOutput.write(
                Data("aspen-node \(id.rawValue) ready key=\(runtime.identity.key.hex) listen=\(runtime.listenAddress)\n".utf8))
            if let vault = runtime.vault, let address = settings.vaultListen {
                let scheme = settings.vaultTLS == nil ? "http" : "https"
                FileHandle.standardOutput.write(Data("aspen-node \(id.rawValue) vault endpoint \(scheme)://\(address.host):\(vault.port)\n".utf8))
            }
            var etcd: EtcdServer?
            if let address = settings.etcdListen {
                let gateway = EtcdGateway(
                    node: runtime.node, identity: runtime.identity, cookie: runtime.cookie, auth: runtime.auth,
                    databasePath: settings.storage == "sqlite" ? (settings.dataDirectory as NSString).appendingPathComponent("aspen.db") : nil,
                    clusterID: { await runtime.clusterID() })
                etcd = try await EtcdServer.start(host: address.host, port: address.port, gateway: gateway, tls: tls,
                    loop: runtime.node.loop, logger: logger)
                let scheme = tls == nil ? "" : "https://"
                FileHandle.standardOutput.write(Data("aspen-node \(id.rawValue) etcd endpoint \(scheme)\(address.host):\(etcd!.port)\n".utf8))
            }
            await waitForTerminationSignal()
            // etcd's endpoint stops accepting with the node's own; its watches end when the node's do.
            etcd?.beginShutdown()
            // It serves on the node's event loop, so it finishes before the loop stops.
            await runtime.shutdown { await etcd?.finishShutdown() }
        }
    }
}
