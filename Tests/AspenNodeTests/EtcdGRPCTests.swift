import AspenEtcd
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

extension ClusterSuites {
    /// etcd's API spoken directly over gRPC, for what etcdctl cannot send (a Txn nested in a Txn).
    @Suite("etcd v3 gRPC against Aspen", .serialized, .timeLimit(.minutes(3)))
    struct EtcdGRPCTests {
        static func put(_ key: String, _ value: String) -> Etcdserverpb_RequestOp {
            var put = Etcdserverpb_PutRequest()
            put.key = Data(key.utf8)
            put.value = Data(value.utf8)
            var op = Etcdserverpb_RequestOp()
            op.requestPut = put
            return op
        }

        static func valueEquals(_ key: String, _ value: String) -> Etcdserverpb_Compare {
            var compare = Etcdserverpb_Compare()
            compare.key = Data(key.utf8)
            compare.target = .value
            compare.result = .equal
            compare.value = Data(value.utf8)
            return compare
        }

        @Test("a Txn nested in a Txn runs on a follower as etcd runs it: inner compares see the state before the outer writes; compares over a range")
        func nestedTxn() async throws {
            guard let (cluster, etcdctl) = try await EtcdCompatibilityTests.startCluster() else { return }
            defer { cluster.terminateAll() }
            let leader = (try? await cluster.leader()) ?? 1
            let followerPort = cluster.basePort + 30 + leader % 3 + 1
            #expect(try await etcdctl(["put", "flag", "on"]).1 == "OK")

            var inner = Etcdserverpb_TxnRequest()
            inner.compare = [Self.valueEquals("flag", "on")]
            inner.success = [Self.put("inner", "took-success")]
            inner.failure = [Self.put("inner", "took-failure")]
            var nested = Etcdserverpb_RequestOp()
            nested.requestTxn = inner
            var outer = Etcdserverpb_TxnRequest()
            outer.compare = [Self.valueEquals("flag", "on")]
            outer.success = [Self.put("flag", "off"), nested]

            let response = try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: followerPort), transportSecurity: .plaintext)
            ) { client in
                try await Etcdserverpb_KV.Client(wrapping: client).txn(outer)
            }
            #expect(response.succeeded)
            #expect(response.responses.count == 2)
            let innerResponse = response.responses.last?.responseTxn
            #expect(innerResponse?.succeeded == true, "the inner compare saw flag=on, before the outer put")
            #expect(innerResponse?.header.revision == response.header.revision, "one revision for the whole Txn")
            #expect(try await etcdctl(["get", "inner", "--print-value-only"]).1 == "took-success")
            #expect(try await etcdctl(["get", "flag", "--print-value-only"]).1 == "off")

            // A key put by the outer Txn and by a nested one is refused as etcd refuses it.
            var clash = Etcdserverpb_TxnRequest()
            var again = Etcdserverpb_TxnRequest()
            again.success = [Self.put("flag", "twice")]
            var op = Etcdserverpb_RequestOp()
            op.requestTxn = again
            clash.success = [Self.put("flag", "once"), op]
            await #expect(throws: RPCError.self) {
                try await withGRPCClient(
                    transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: followerPort), transportSecurity: .plaintext)
                ) { client in
                    try await Etcdserverpb_KV.Client(wrapping: client).txn(clash)
                }
            }
            #expect(try await etcdctl(["get", "flag", "--print-value-only"]).1 == "off", "nothing of the refused Txn applied")

            // A compare over a range (range_end): "no key under cfg/ has version > 1".
            for key in ["cfg/a", "cfg/b"] { #expect(try await etcdctl(["put", key, "1"]).1 == "OK") }
            func rangeTxn() async throws -> Bool {
                var compare = Etcdserverpb_Compare()
                compare.key = Data("cfg/".utf8)
                compare.rangeEnd = Data("cfg0".utf8)
                compare.target = .version
                compare.result = .less
                compare.version = 2
                var request = Etcdserverpb_TxnRequest()
                request.compare = [compare]
                request.success = [Self.put("cfg-checked", "yes")]
                return try await withGRPCClient(
                    transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: followerPort), transportSecurity: .plaintext)
                ) { client in
                    try await Etcdserverpb_KV.Client(wrapping: client).txn(request).succeeded
                }
            }
            #expect(try await rangeTxn())
            #expect(try await etcdctl(["put", "cfg/b", "2"]).1 == "OK")
            #expect(try await !rangeTxn(), "cfg/b is at version 2")
        }
    }
}
