import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenTesting
import AspenTransport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ClusterSuites {
    @Suite("Real nodes under bad input, with a cookie, shut down gracefully", .serialized, .timeLimit(.minutes(3)))
    struct NodeProcessHardeningTests {
        @Test("garbage, oversized and undecodable frames, a wrong ALPN and an unknown raft key are refused; the cluster keeps serving")
        func badInputAgainstRealNodes() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            let cookie = "sesame"
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(id, arguments: ["--peers", peers, "--bootstrap", "--cookie", cookie, "--http", "127.0.0.1:\(cluster.basePort + 50 + id)"])
            }
            let port = cluster.basePort + 1
            let client = try cluster.client(cookie: ClusterCookie(cookie))
            try await client.put(Bytes("before".utf8), Bytes("1".utf8))

            // Not TLS at all.
            #expect(RawSocket.sendGarbage(port: port, (0..<2048).map { UInt8(truncatingIfNeeded: $0 &* 131) }))
            let stranger = try TLSMaterial(identity: NodeIdentity())
            // A frame announcing 100 MiB on the client protocol: that connection is dropped.
            let oversized = try await TransportConnection.connect(host: "127.0.0.1", port: port, protocol: AspenProtocol.client, tls: stranger)
            try await oversized.sendRawForTesting([0x06, 0x40, 0x00, 0x00, 1, 2, 3])
            await #expect(throws: TransportError.self) { try await oversized.request([1]) }
            // A well-framed request that does not decode gets a clear error on a connection that stays open.
            let confused = try await TransportConnection.connect(host: "127.0.0.1", port: port, protocol: AspenProtocol.client, tls: stranger)
            let answer = try RPCResponse(decoding: try await confused.request([0xFF, 0xFE, 0xFD]))
            guard case .failure(let failure) = answer else {
                Issue.record("garbage was accepted: \(answer)")
                return
            }
            #expect(failure.code == "bad_request")
            // An unknown application protocol, and a key that is not a member's on the raft protocol.
            await #expect(throws: (any Error).self) {
                let connection = try await TransportConnection.connect(host: "127.0.0.1", port: port, protocol: "aspen/nonsense/9", tls: stranger)
                _ = try await connection.request([1])
            }
            await #expect(throws: (any Error).self) {
                let connection = try await TransportConnection.connect(host: "127.0.0.1", port: port, protocol: AspenProtocol.raft, tls: stranger)
                _ = try await connection.request([1])
            }
            // Without the cookie, or with a wrong one, requests are refused with the reason (the
            // CLI's exit code 6: not permitted).
            let noCookie = try cluster.client()
            await #expect(throws: ClientError.self) { try await noCookie.get(Bytes("before".utf8)) }
            let (code, _) = try await cluster.aspen(["kv", "get", "before"])
            #expect(code == 6)
            let (wrongCode, _) = try await cluster.aspen(["kv", "get", "before", "--cookie", "open"])
            #expect(wrongCode == 6)
            #expect(try await cluster.aspen(["kv", "get", "before", "--cookie", cookie]) == (0, "1"))

            // Every node still serves, and the admin endpoint counts what happened.
            try await client.put(Bytes("after".utf8), Bytes("2".utf8))
            #expect(try await client.get(Bytes("after".utf8))?.value == Bytes("2".utf8))
            let (metricsCode, metrics) = try await AdminServerTests.get("http://127.0.0.1:\(cluster.basePort + 51)/metrics")
            #expect(metricsCode == 200)
            #expect(metrics.contains("aspen_requests_total{op=\"undecodable\",outcome=\"bad_request\"} 1"))
            #expect(metrics.contains("outcome=\"unauthorized\""))
            // (The client may have written through any node: the one that served it counts it.)
            var everyNodesMetrics = metrics
            for id in 2...3 { everyNodesMetrics += try await AdminServerTests.get("http://127.0.0.1:\(cluster.basePort + 50 + id)/metrics").1 }
            #expect(everyNodesMetrics.contains("aspen_request_seconds_bucket{op=\"kv.write\""))
            #expect(metrics.contains("# TYPE aspen_storage_commit_seconds histogram"))
            let (ticketCode, ticket) = try await AdminServerTests.get("http://127.0.0.1:\(cluster.basePort + 52)/cluster-ticket")
            #expect(ticketCode == 200)
            #expect(try ClusterTicket(parsing: ticket).peers.count == 3)

            // SIGTERM: each node drains, stops and exits 0; the data is there after a restart.
            await client.close()
            for (_, process) in cluster.processes { kill(process.processIdentifier, SIGTERM) }
            for (_, process) in cluster.processes {
                process.waitUntilExit()
                #expect(process.terminationStatus == 0)
            }
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(id, arguments: ["--peers", peers, "--cookie", cookie])
            }
            let again = try cluster.client(cookie: ClusterCookie(cookie))
            #expect(try await again.get(Bytes("after".utf8))?.value == Bytes("2".utf8))
            await again.close()
            cluster.terminateAll()
        }
    }
}
