@testable import AspenEtcd
import AspenCore
import AspenNode
import AspenRaft
import AspenStorage
import AspenTransport
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Testing

/// Until capability tokens, the etcd endpoint asks the native one's proof for what changes the
/// cluster: it used to act with the node's own identity and cookie for any caller.
@Suite("Who may change the cluster through the etcd endpoint")
struct EtcdAuthorityTests {
    /// A one-voter node with an etcd endpoint on loopback, plaintext; `body` gets its port.
    static func withEndpoint(cookie: ClusterCookie?, _ body: (Int) async throws -> Void) async throws {
        let storage = MemoryNodeStorage()
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let node = try await startSoloLeader(storage)
        var logger = Logger(label: "aspen.etcd.authority.test")
        logger.logLevel = .critical
        let gateway = EtcdGateway(node: node, identity: NodeIdentity(), cookie: cookie, databasePath: nil, clusterID: { [1, 2, 3] })
        let server = try await EtcdServer.start(host: "127.0.0.1", port: 0, gateway: gateway, logger: logger)
        do {
            try await body(server.port)
        } catch {
            Issue.record(error)
        }
        server.beginShutdown()
        await server.finishShutdown()
        await node.stop()
    }

    /// The gRPC status of adding a learner and of moving the leadership, or "ok".
    static func outcomes(port: Int) async throws -> [String] {
        try await withGRPCClient(
            transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        ) { client in
            var results: [String] = []
            var add = Etcdserverpb_MemberAddRequest()
            add.peerUrls = ["https://\(NodeIdentity().key.hex)@127.0.0.1:1"]
            var move = Etcdserverpb_MoveLeaderRequest()
            move.targetID = 1
            let calls: [() async throws -> Void] = [
                { _ = try await Etcdserverpb_Cluster.Client(wrapping: client).memberAdd(add) },
                { _ = try await Etcdserverpb_Maintenance.Client(wrapping: client).moveLeader(move) },
            ]
            for call in calls {
                do {
                    try await call()
                    results.append("ok")
                } catch let error as RPCError {
                    results.append(error.code == .permissionDenied ? "permissionDenied: \(error.message)" : "other: \(error.code)")
                }
            }
            return results
        }
    }

    @Test("a node with a cookie takes member add and move-leader through its etcd endpoint only from clients with a certificate")
    func cookieNeedsCertificates() async throws {
        try await Self.withEndpoint(cookie: ClusterCookie("s3cret")) { port in
            let outcomes = try await Self.outcomes(port: port)
            #expect(outcomes.count == 2 && outcomes.allSatisfy { $0.hasPrefix("permissionDenied") && $0.contains("--etcd-trusted-ca-file") }, "\(outcomes)")
        }
    }

    @Test("a node without a cookie takes them from its own machine")
    func loopbackWithoutCookie() async throws {
        try await Self.withEndpoint(cookie: nil) { port in
            let outcomes = try await Self.outcomes(port: port)
            #expect(outcomes.allSatisfy { !$0.hasPrefix("permissionDenied") }, "\(outcomes)")
            #expect(outcomes.first == "ok", "the learner was not added: \(outcomes)")
        }
        #expect(EtcdGateway.isLoopback("ipv4:127.0.0.1:2379") && EtcdGateway.isLoopback("ipv6:[::1]:2379"))
        #expect(!EtcdGateway.isLoopback("ipv4:10.0.0.7:2379") && !EtcdGateway.isLoopback("ipv6:[fe80::1]:2379") && !EtcdGateway.isLoopback("unknown"))
        #expect(GRPCConnectionHandler.grpcPeer(try .init(ipAddress: "127.0.0.1", port: 2379)) == "ipv4:127.0.0.1:2379")
    }
}
