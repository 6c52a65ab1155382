import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import AspenTransport
import Logging
import Testing

/// Until capability tokens: who may change the membership, move leadership, snapshot or
/// defragment. Any client that reached the native port could add its own key as a voter.
@Suite("Who may change the cluster")
struct AdminAuthorityTests {
    static func leader(cookie: ClusterCookie?) async throws -> (RaftNode, ClientService) {
        let storage = MemoryNodeStorage()
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let node = try await startSoloLeader(storage)
        #expect(await node.status.role == .leader)
        var logger = Logger(label: "aspen.authority.test")
        logger.logLevel = .critical
        return (node, ClientService(node: node, cookie: cookie, logger: logger))
    }

    static func code(_ response: RPCResponse) -> String {
        if case .failure(let failure) = response { return failure.code }
        return "ok"
    }

    @Test("without a cookie, membership and maintenance requests are taken from this machine only; reads and writes from anywhere")
    func loopbackOnlyWithoutCookie() async throws {
        let (node, service) = try await Self.leader(cookie: nil)
        defer { Task { await node.stop() } }
        let stranger = TransportCaller(key: NodeIdentity().key, isLoopback: false)
        let local = TransportCaller(key: NodeIdentity().key, isLoopback: true)
        for operation in ["add-member", "promote", "remove", "set-voters", "transfer-leader", "snapshot", "defragment", "init", "adopt"] {
            let response = await service.handle(RPCRequest(domain: "cluster", operation: operation, body: []).encoded(), from: stranger)
            #expect(Self.code(response) == "unauthorized", "cluster.\(operation) from another machine: \(response)")
            if case .failure(let failure) = response { #expect(failure.message.contains("--cookie")) }
        }
        #expect(Self.code(await service.handle(RPCRequest(domain: "cluster", operation: "snapshot", body: []).encoded(), from: local)) == "ok")
        // Status and key-value requests stay open (the cookie, when set, guards those).
        #expect(Self.code(await service.handle(RPCRequest(domain: "cluster", operation: "status", body: []).encoded(), from: stranger)) == "ok")
        let put = KVWire.encode(KVWriteRequest.put(Put(key: Array("k".utf8), value: [1])))
        #expect(Self.code(await service.handle(RPCRequest(domain: "kv", operation: "write", body: put).encoded(), from: stranger)) == "ok")
    }

    @Test("with a cookie, a caller that proves it may change the cluster from anywhere; one that does not may do nothing")
    func cookieProves() async throws {
        let cookie = ClusterCookie("s3cret")
        let (node, service) = try await Self.leader(cookie: cookie)
        defer { Task { await node.stop() } }
        let identity = NodeIdentity()
        let remote = TransportCaller(key: identity.key, isLoopback: false)
        let proven = RPCRequest(domain: "cluster", operation: "snapshot", body: [], proof: cookie.proof(for: identity.key))
        #expect(Self.code(await service.handle(proven.encoded(), from: remote)) == "ok")
        let unproven = RPCRequest(domain: "cluster", operation: "snapshot", body: [])
        #expect(Self.code(await service.handle(unproven.encoded(), from: TransportCaller(key: identity.key, isLoopback: true))) == "unauthorized")
    }
}
