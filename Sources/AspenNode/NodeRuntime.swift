import AspenAuth
import AspenCI
import AspenClient
import AspenCore
import AspenJobs
import AspenKV
import AspenRaft
import AspenSecrets
import AspenStorage
import AspenTransport
import Foundation
import Logging
import NIOPosix

/// One running node, assembled from its settings in clear phases (identity, storage, Raft,
/// transport and handlers, services) and taken down in dependency order.
public final class NodeRuntime: Sendable {
    public let settings: NodeSettings
    public let identity: NodeIdentity
    public let node: RaftNode
    public let server: TransportServer
    public let admin: AdminServer?
    /// Capability-token auth: the trust state and the check every request passes.
    public let auth: NodeAuth
    let network: PeerNetwork
    let storage: any NodeStorage
    let joiner: Task<Void, Never>?
    public let blobs: BlobService
    public let jobs: JobService
    public let forge: ForgeService
    public let secrets: SecretsService
    public let ci: CIService
    /// Vault's HTTP API, when `vault-listen` is set.
    public let vault: VaultHTTPServer?
    let logger: Logger
    let initialClusterID: [UInt8]
    /// The node's own event loop: its Raft actor, its peer connections and the connections it
    /// accepts all run there (see `RaftNode.loop`).
    public let loops: MultiThreadedEventLoopGroup

    private init(
        settings: NodeSettings, identity: NodeIdentity, node: RaftNode, server: TransportServer, admin: AdminServer?, auth: NodeAuth,
        network: PeerNetwork, storage: any NodeStorage, joiner: Task<Void, Never>?, blobs: BlobService, jobs: JobService, forge: ForgeService, secrets: SecretsService,
        ci: CIService, vault: VaultHTTPServer?, logger: Logger, clusterID: [UInt8], loops: MultiThreadedEventLoopGroup
    ) {
        self.secrets = secrets
        self.ci = ci
        self.vault = vault
        self.loops = loops
        self.blobs = blobs
        self.jobs = jobs
        self.forge = forge
        self.initialClusterID = clusterID
        self.settings = settings
        self.identity = identity
        self.node = node
        self.server = server
        self.admin = admin
        self.auth = auth
        self.network = network
        self.storage = storage
        self.joiner = joiner
        self.logger = logger
    }

    public var listenAddress: String { "\(settings.listen.host):\(server.port)" }

    /// The cluster's id: as recorded with the members, or as this node knew it when it started.
    public func clusterID() async -> [UInt8] {
        let recorded = ClusterMembers(await node.membership).clusterID
        return recorded.isEmpty ? initialClusterID : recorded
    }

    /// The cookie clients of this node must prove, if any.
    public var cookie: ClusterCookie? { settings.cookie.map(ClusterCookie.init) }

    public static func start(_ given: NodeSettings, logger: Logger) async throws -> NodeRuntime {
        let id = given.nodeID
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        // Phase 0: the bootstrap secrets, if any: a file that does not open stops the node here.
        var configured = given
        var bootstrap: BootstrapSecrets?
        if let path = configured.bootstrapSecrets, let identityFile = configured.ageIdentityFile {
            let loaded = try BootstrapSecrets.load(path: path, identityFile: identityFile, limits: .standard)
            configured.trustedRoots += loaded.trustedRoots.compactMap { PublicKey(hex: $0) }
            if configured.cookie == nil { configured.cookie = loaded.cookie }
            logger.info(
                "bootstrap secrets read", metadata: ["file": "\(path)", "roots": "\(loaded.trustedRoots.count)", "secrets": "\(loaded.secrets.count)"])
            bootstrap = loaded
        }
        let settings = configured
        // Phase 1: identity.
        let identity = try NodeIdentity.loadOrCreate(directory: settings.dataDirectory)
        let tls = try TLSMaterial(identity: identity)
        logger.info("identity loaded", metadata: ["key": "\(identity.key.hex)"])
        // Phase 2: storage. A fresh store founds a cluster (bootstrap) or waits to be added.
        let store: any NodeStorage =
            settings.storage == "memory"
            ? MemoryNodeStorage() : try SQLiteNodeStorage(path: (settings.dataDirectory as NSString).appendingPathComponent("aspen.db"))
        if let cut = (store as? SQLiteNodeStorage)?.logCut {
            logger.warning(
                "cut a torn write off the end of the log", metadata: ["file": "\(cut.file)", "offset": "\(cut.offset)", "bytes": "\(cut.bytes)",
                "writtenBytes": "\(cut.writtenBytes)", "reason": "\(cut.reason)"])
        }
        var given = settings.peers
        for peer in settings.ticket?.peers ?? [] where peer.id != id {
            given[peer.id] = PeerAddress(host: peer.host, port: peer.port, key: peer.key)
        }
        // The members this node was told of before it joined (`adopt`), kept across restarts:
        // a node added with add-learner that restarts before it has heard the membership must
        // still accept its leader.
        let adoptedPath = (settings.dataDirectory as NSString).appendingPathComponent("adopted-members")
        if let bytes = FileManager.default.contents(atPath: adoptedPath) {
            do {
                for (member, record) in try ClusterMembers(decoding: Array(bytes)).records where member != id && given[member] == nil {
                    given[member] = PeerAddress(host: record.host, port: record.port, key: record.key)
                }
            } catch {
                logger.warning("ignored an undecodable adopted-members file", metadata: ["file": "\(adoptedPath)", "error": "\(error)"])
            }
        }
        if try store.load() == nil {
            try store.bootstrap(settings.bootstrap ? .bootstrap(Raft.Membership(voters: [id] + Array(given.keys))) : .joining)
        }
        guard let state = try store.load() else { throw NodeError.refused("the store did not load after bootstrap") }
        logger.info("storage opened", metadata: ["applied": "\(state.appliedIndex)", "term": "\(state.hardState.term)"])
        // Phase 3: Raft, and the network that follows its membership, on one event loop. One
        // thread carries a message from socket to Raft and Raft's answer back: measured here
        // with three nodes on two cores, spreading the work over NIO's threads and the
        // concurrency pool cost 14-20 thread switches per replicated put.
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let network = PeerNetwork(tls: tls, peers: given, logger: logger, group: loops)
        // For tests of clock skew only: this node's clock reads ahead (or behind) by this much.
        let clockSkewMs = Int64(ProcessInfo.processInfo.environment["ASPEN_TEST_CLOCK_SKEW_MS"] ?? "") ?? 0
        if clockSkewMs != 0 { logger.warning("this node's clock is skewed for testing", metadata: ["skewMs": "\(clockSkewMs)"]) }
        var configuration = NodeConfiguration(id: id)
        configuration.tickMs = settings.heartbeatMs
        configuration.electionTicks = max(2, settings.electionTimeoutMs.lowerBound / settings.heartbeatMs)
        configuration.electionTicksMax = max(configuration.electionTicks, settings.electionTimeoutMs.upperBound / settings.heartbeatMs)
        configuration.compactionThreshold = settings.compactAfterEntries
        // The log grows to about twice the threshold before compaction (see `compactionWaitMs`):
        // its bound must leave room for that, however large the threshold is set.
        let logEntriesNeeded = Int(clamping: settings.compactAfterEntries.multipliedReportingOverflow(by: 3).partialValue)
        configuration.limits.raftLogEntriesMax = max(configuration.limits.raftLogEntriesMax, logEntriesNeeded)
        configuration.limits.ciArtifactBytesMax = settings.ciArtifactBytesMax
        configuration.limits.ciRunsKeptPerRepo = settings.ciRunsKept
        configuration.limits.ciActiveRunsPerRepoMax = settings.ciActiveRunsPerRepo
        configuration.limits.ciActiveRunsMax = settings.ciActiveRuns
        configuration.limits.ciCachesPerRepoMax = settings.ciCachesKept
        configuration.limits.ciCacheBytesPerRepoMax = settings.ciCacheBytesPerRepo
        configuration.autoCompaction = settings.autoCompaction.map { AutoCompaction(mode: $0) }
        let auth = NodeAuth(
            mode: settings.auth, listensBeyondLoopback: settings.listensBeyondLoopback, configuredRoots: Set(settings.trustedRoots),
            limits: configuration.limits, logger: logger)
        try auth.reload(from: store)
        // A node that requires credentials and trusts no root would refuse every request. One
        // joining a cluster learns the cluster's roots as it catches up.
        if auth.isRequired, !auth.hasRoots, settings.ticket == nil {
            throw NodeError.refused(
                "auth is required (\(settings.auth == .required ? "--auth required" : "the node listens on \(settings.listen.host), beyond this machine"))"
                    + " and this node trusts no root key: start it with --trusted-roots KEYHEX, the public key of your root key"
                    + " (aspen token keygen makes one), or with --auth off")
        }
        let node = RaftNode(
            configuration: configuration, storage: store, state: state, send: { network.send($0) },
            nowMs: { Int64(Date().timeIntervalSince1970 * 1000) + clockSkewMs }, logger: logger,
            membershipChanged: { network.update(membership: $0) },
            systemRecordsChanged: {
                do {
                    try auth.reload(from: store)
                } catch {
                    auth.logger.error("reading the cluster's trust state failed", metadata: ["error": "\(error)"])
                }
            }, loop: loops.next())
        // The cluster id: recorded with the members, or derived by the founders, or the ticket's.
        let recorded = state.snapshot.membership.addresses.values.lazy.compactMap { try? MemberRecord(decoding: $0) }.first
        let foundingID = MemberRecord.foundingClusterID([(id, identity.key)] + given.map { ($0.key, $0.value.key) })
        let clusterID = recorded?.clusterID ?? settings.ticket?.clusterID ?? (settings.bootstrap ? foundingID : [])
        // Phase 4: transport and handlers.
        let cookie = settings.cookie.map(ClusterCookie.init)
        let requestMetrics = RequestMetrics()
        let (host, port) = settings.listen
        let blobs = try BlobService.open(
            dataDirectory: settings.dataDirectory, node: node, network: network, auth: auth,
            settings: settings.blob, limits: configuration.limits, logger: logger)
        requestMetrics.add { blobs.metricsExposition }
        let jobs = JobService(node: node, limits: configuration.limits, retentionMs: settings.jobs.retentionMs, blobs: blobs, logger: logger)
        requestMetrics.add { jobs.metricsExposition }
        // git's pipes: a client gone mid-push must fail a write, not end the node.
        signal(SIGPIPE, SIG_IGN)
        let forge = try ForgeService(
            dataDirectory: settings.dataDirectory, node: node, blobs: blobs, auth: auth, cookie: cookie, ownKey: identity.key,
            limits: configuration.limits, logger: logger)
        requestMetrics.add { forge.metricsExposition }
        let secrets = SecretsService(
            node: node, selfID: id, identityKey: Array(identity.privateKey.rawRepresentation),
            peers: Self.secretsPeers(network: network, identity: identity, cookie: cookie), logger: logger)
        let ci = CIService(
            dataDirectory: settings.dataDirectory, node: node, forge: forge, jobs: jobs, blobs: blobs, secrets: secrets, limits: configuration.limits,
            untrustedNetwork: settings.ciUntrustedNetwork, logger: logger)
        requestMetrics.add { ci.metrics.exposition }
        let server = try await TransportServer.start(
            host: host, port: port, tls: tls,
            routes: [
                AspenProtocol.raft: network.route(to: node),
                AspenProtocol.logs: WatchService(hub: node.watches, cookie: cookie, auth: auth, nowMs: node.nowMs, logger: logger).route(),
                AspenProtocol.blobs: blobs.route,
                AspenProtocol.git: forge.route,
                AspenProtocol.gitHook: forge.hookRoute,
                AspenProtocol.client: ClientService(
                    node: node, network: network, cookie: cookie, auth: auth, metrics: requestMetrics, jobs: jobs, forge: forge, secrets: secrets,
                    ci: ci, logger: logger, keepAdopted: { try DurableFiles.replaceContents(adoptedPath, with: $0) })
                    .route,
            ],
            logger: logger, group: loops)
        // This node's record, with the port actually bound (`cluster init` founds with it).
        let selfRecord = MemberRecord(
            key: identity.key, host: host, port: server.port, clusterID: clusterID,
            etcdAddress: settings.etcdListen.map { "\($0.host):\($0.port)" })
        var records = [id: selfRecord.encoded]
        if settings.bootstrap {
            for (peer, address) in given {
                records[peer] = MemberRecord(key: address.key, host: address.host, port: address.port, clusterID: clusterID).encoded
            }
        }
        await node.setLocalRecords(records)
        forge.listening(host: host, port: server.port)
        logger.info("transport listening", metadata: ["address": "\(host):\(server.port)"])
        if settings.cookie == nil {
            logger.notice("no cookie: open to local clients only for membership and maintenance requests (start with --cookie to allow them from elsewhere)")
        }
        // Phase 5: services.
        await node.start()
        blobs.startMaintenance()
        jobs.startMaintenance(
            blobs.maintenanceTasks, needed: { await blobs.needsMaintenance() }, run: { command in
                if let summary = try await secrets.runMaintenance(command) { return summary }
                return try await blobs.runMaintenance(command.first ?? "")
            }, identity: identity,
            cookie: cookie)
        blobs.setEventSink { jobs.publishNodeEvents($0) }
        jobs.start()
        forge.start()
        ci.start()
        // A job is submitted on the leader (from a follower, through a connection to it).
        secrets.start(submitJob: { spec in
            let calls = LeaderJobCalls(service: jobs, identity: identity, cookie: cookie)
            let answer: JobAnswer
            do {
                answer = try await calls.job(.submit(spec))
                await calls.close()
            } catch {
                await calls.close()
                throw error
            }
            guard case .submitted(let id, _) = answer else { throw SecretsError.internalError("the job system answered a submit with \(answer)") }
            return id
        })
        if let bootstrap, !bootstrap.secrets.isEmpty { secrets.writeInitial(bootstrap.secrets) }
        jobs.startWorkers(settings.jobs, identity: identity, cookie: cookie) { markerPrefix in
            [CIJobTask.jobType: ci.handler(markerPrefix: markerPrefix)]
        }
        if settings.jobs.workers > 0 { ci.startWarming() }
        var admin: AdminServer?
        if let http = settings.http {
            admin = try await AdminServer.start(host: http.host, port: http.port, node: node, requests: requestMetrics, auth: auth)
        }
        var vault: VaultHTTPServer?
        if let address = settings.vaultListen {
            let tls = try settings.vaultTLS.map { files throws(VaultHTTPServer.Problem) in
                try VaultHTTPServer.tls(certificateFile: files.certificate, keyFile: files.key)
            }
            vault = try await VaultHTTPServer.start(host: address.host, port: address.port, secrets: secrets, auth: auth, tls: tls, group: loops)
            logger.info("Vault API listening", metadata: ["address": "\(address.host):\(vault!.port)"])
        }
        var joiner: Task<Void, Never>?
        if let ticket = settings.ticket, await node.membership.isEmpty {
            joiner = Task {
                await Joiner.join(
                    id: id, record: selfRecord, ticket: ticket, asVoter: !settings.learner, node: node, network: network, cookie: cookie,
                    credential: settings.joinCredential, logger: logger)
            }
        }
        return NodeRuntime(
            settings: settings, identity: identity, node: node, server: server, admin: admin, auth: auth, network: network, storage: store,
            joiner: joiner, blobs: blobs, jobs: jobs, forge: forge, secrets: secrets, ci: ci, vault: vault, logger: logger, clusterID: clusterID,
            loops: loops)
    }

    /// How this node's seal reaches another voter: one request on a connection that proves this
    /// node's key and checks the peer's.
    static func secretsPeers(network: PeerNetwork, identity: NodeIdentity, cookie: ClusterCookie?) -> SecretsSeal.Peers {
        @Sendable func withPeer(_ id: NodeID, _ body: @Sendable (AspenClient) async throws -> [UInt8]) async throws -> [UInt8] {
            guard let address = network.address(of: id) else { throw SecretsError.unavailable("no address is known for node \(id)") }
            let client = try AspenClient(
                endpoints: [Endpoint(id: id, host: address.host, port: address.port, key: address.key)], identity: identity, attemptsMax: 1,
                cookie: cookie)
            do {
                let answer = try await body(client)
                await client.close()
                return answer
            } catch {
                await client.close()
                throw error
            }
        }
        return SecretsSeal.Peers(
            share: { id, epoch in try await withPeer(id) { try await $0.secretsShare(epoch: epoch) } },
            seal: { id, epoch, share in try await withPeer(id) { try await $0.secretsSealShare(epoch: epoch, share: share) } })
    }

    /// Stops in dependency order: stop accepting, drain in-flight requests (bounded), stop Raft
    /// (failing what still waits) and wait for its own tasks, end watches, close the store
    /// (checkpointed), close the network, let the services that share the node's event loop
    /// finish (`finishing`: its etcd endpoint), and stop the loop. Each step returns only once
    /// its work is done: nothing may be left to run on the loop after it stops.
    public func shutdown(drainSeconds: Double = 5, finishing: () async -> Void = {}) async {
        logger.info("shutting down: no new connections")
        joiner?.cancel()
        await blobs.stopMaintenance()
        await jobs.stop()
        ci.stop()
        await forge.stop()
        secrets.stop()
        await server.stopAccepting()
        try? await admin?.close()
        try? await vault?.close()
        let left = await server.drain(seconds: drainSeconds)
        if left > 0 { logger.warning("requests still in flight after the drain period", metadata: ["requests": "\(left)"]) }
        await blobs.closeConnections()
        await node.stop()
        await node.waitUntilIdle()
        do {
            try storage.close()
        } catch {
            logger.error("closing the store failed", metadata: ["error": "\(error)"])
        }
        try? await server.close()
        await network.closeAll()
        await finishing()
        try? await loops.shutdownGracefully()
        logger.info("stopped")
    }
}
