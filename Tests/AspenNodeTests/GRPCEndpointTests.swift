@testable import AspenEtcd
import AspenCore
import AspenTesting
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOHTTP2
import Synchronization
import Testing

/// The etcd endpoint's gRPC layer (HTTP/2 frames to calls and back), driven by grpc-swift's
/// client against methods defined here, so each behaviour is checked on its own.
@Suite("gRPC endpoint", .timeLimit(.minutes(2)))
struct GRPCEndpointTests {
    /// What the test methods saw: calls cancelled by their client.
    final class Observed: Sendable {
        let started = Atomic<Int>(0)
        let cancelled = Atomic<Int>(0)
    }

    static func methods(_ observed: Observed) -> GRPCMethodTable {
        var table = GRPCMethodTable()
        // Put answers with the value's size and its last bytes, so a large request is checked whole.
        table.unary(Etcdserverpb_KV.Method.Put.descriptor) { (request: Etcdserverpb_PutRequest, _) in
            var response = Etcdserverpb_PutResponse()
            response.header.revision = Int64(request.value.count)
            response.prevKv.value = request.value.suffix(16)
            return response
        }
        table.unary(Etcdserverpb_KV.Method.Range.descriptor) { (_: Etcdserverpb_RangeRequest, _) -> Etcdserverpb_RangeResponse in
            throw RPCError(code: .failedPrecondition, message: "naïve: 100% refused\nsecond line")
        }
        // Txn waits until its client gives up.
        table.unary(Etcdserverpb_KV.Method.Txn.descriptor) { (_: Etcdserverpb_TxnRequest, _) -> Etcdserverpb_TxnResponse in
            observed.started.add(1, ordering: .relaxed)
            do {
                try await Task.sleep(for: .seconds(60))
            } catch {
                observed.cancelled.add(1, ordering: .relaxed)
                throw error
            }
            return Etcdserverpb_TxnResponse()
        }
        // Watch answers each request with the size of its key.
        table.bidirectional(Etcdserverpb_Watch.Method.Watch.descriptor) {
            (requests: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>, responses: RPCWriter<Etcdserverpb_WatchResponse>, _) in
            for try await request in requests {
                var response = Etcdserverpb_WatchResponse()
                response.watchID = Int64(request.createRequest.key.count)
                try await responses.write(response)
            }
        }
        return table
    }

    static func withEndpoint<T: Sendable>(
        _ body: @Sendable (_ port: Int, _ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, _ observed: Observed) async throws -> T
    ) async throws -> T {
        let observed = Observed()
        let server = try await EtcdServer.start(host: "127.0.0.1", port: 0, methods: methods(observed), logger: Logger(label: "test"))
        do {
            let result = try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: server.port), transportSecurity: .plaintext)
            ) { client in
                try await body(server.port, Etcdserverpb_KV.Client(wrapping: client), observed)
            }
            server.beginShutdown()
            await server.finishShutdown()
            return result
        } catch {
            server.beginShutdown()
            await server.finishShutdown()
            throw error
        }
    }

    static func put(size: Int) -> Etcdserverpb_PutRequest {
        var request = Etcdserverpb_PutRequest()
        request.key = Data("k".utf8)
        request.value = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) })
        return request
    }

    @Test("a 3 MiB request crosses the HTTP/2 flow-control windows whole; many calls at once each get their own answer")
    func largeAndConcurrentCalls() async throws {
        try await Self.withEndpoint { _, kv, _ in
            let big = Self.put(size: 3 << 20)
            let response = try await kv.put(big)
            #expect(response.header.revision == Int64(3 << 20))
            #expect(response.prevKv.value == big.value.suffix(16))
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for size in 1...200 {
                    group.addTask { try await kv.put(Self.put(size: size * 100)).header.revision == Int64(size * 100) }
                }
                for try await matched in group { #expect(matched) }
            }
        }
    }

    @Test("an oversized message is refused naming the limit; a method's error reaches the client with its code and message; unknown methods are Unimplemented")
    func errors() async throws {
        try await Self.withEndpoint { _, kv, _ in
            do {
                _ = try await kv.put(Self.put(size: Limits.standard.grpcMessageBytesMax + 1))
                Issue.record("an oversized put was accepted")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("\(Limits.standard.grpcMessageBytesMax)-byte limit"), "\(error.message)")
            }
            // The connection still serves.
            #expect(try await kv.put(Self.put(size: 10)).header.revision == 10)

            do {
                _ = try await kv.range(Etcdserverpb_RangeRequest())
                Issue.record("Range should have failed")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message == "naïve: 100% refused\nsecond line")
            }

            do {
                _ = try await kv.deleteRange(Etcdserverpb_DeleteRangeRequest())
                Issue.record("DeleteRange is not served here")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
                #expect(error.message.contains("/etcdserverpb.KV/DeleteRange"))
            }
        }
    }

    @Test("a call whose deadline passes is cancelled on the server")
    func cancellation() async throws {
        try await Self.withEndpoint { _, kv, observed in
            #expect(try await kv.put(Self.put(size: 1)).header.revision == 1)
            var options = CallOptions.defaults
            // Long enough for the call to reach the server on a loaded machine (a deadline that
            // passes before the request leaves ends the call in the client alone).
            // A request that arrives after its deadline is answered without running the method;
            // on a loaded machine that can happen, so the call is retried until the method ran.
            options.timeout = .milliseconds(500)
            for _ in 1...3 {
                await #expect(throws: RPCError.self) { try await kv.txn(Etcdserverpb_TxnRequest(), options: options) }
                if observed.started.load(ordering: .relaxed) > 0 { break }
            }
            let started = observed.started.load(ordering: .relaxed)
            #expect(started >= 1)
            let deadline = ContinuousClock.now + .seconds(5)
            while observed.cancelled.load(ordering: .relaxed) < started, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            // Every run of the method was cancelled, none left waiting out its 60 s.
            #expect(observed.cancelled.load(ordering: .relaxed) == started)
        }
    }

    @Test("a bidirectional stream carries more requests than its window holds: the window is given back as the method reads")
    func longStream() async throws {
        try await Self.withEndpoint { port, _, _ in
            try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            ) { client in
                // 3000 requests of 1 KiB: three times the stream's 1 MiB window.
                let count = 3000
                let seen = try await Etcdserverpb_Watch.Client(wrapping: client).watch(
                    requestProducer: { writer in
                        for index in 0..<count {
                            var request = Etcdserverpb_WatchRequest()
                            var create = Etcdserverpb_WatchCreateRequest()
                            create.key = Data(repeating: UInt8(index % 251), count: 1024 + index % 3)
                            request.createRequest = create
                            try await writer.write(request)
                        }
                    },
                    onResponse: { response in
                        var ids: [Int64] = []
                        for try await message in response.messages { ids.append(message.watchID) }
                        return ids
                    })
                #expect(seen.count == count)
                let expected: [Int64] = (0..<count).map { (index: Int) -> Int64 in Int64(1024 + index % 3) }
                #expect(seen == expected)
            }
        }
    }

    @Test("bytes that are not HTTP/2 lose their connection and nothing else")
    func garbage() async throws {
        try await Self.withEndpoint { port, kv, _ in
            let junk = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + (0..<256).map { UInt8($0) }
            #expect(RawSocket.closesAfterGarbage(port: port, junk), "the endpoint kept a connection that spoke garbage")
            let response = try await kv.put(Self.put(size: 5))
            #expect(response.header.revision == 5)
        }
    }

    @Test("the bench's frame-level client: answers matched to their calls, statuses with code and message, a PING storm keeps the connection, a restarted server is reached again")
    func frameClient() async throws {
        let observed = Observed()
        var server = try await EtcdServer.start(host: "127.0.0.1", port: 0, methods: Self.methods(observed), logger: Logger(label: "test"))
        let port = server.port
        let client = GRPCFrameClient(host: "127.0.0.1", port: port)
        func put(_ size: Int) async throws -> Etcdserverpb_PutResponse {
            try Etcdserverpb_PutResponse(serializedBytes: try await client.call("/etcdserverpb.KV/Put", try Self.put(size: size).serializedBytes()))
        }
        do {
            let large = try await put(3 << 20).header.revision
            #expect(large == Int64(3 << 20))
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for size in 1...300 {
                    group.addTask {
                        let revision = try await put(size * 10).header.revision
                        return revision == Int64(size * 10)
                    }
                }
                for try await matched in group { #expect(matched) }
            }
            do {
                _ = try await client.call("/etcdserverpb.KV/Range", [])
                Issue.record("Range should have failed")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message == "naïve: 100% refused\nsecond line")
            }
            do {
                _ = try await client.call("/etcdserverpb.Auth/Authenticate", [])
                Issue.record("Auth is not served")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
            }

            // grpc-go peers PING after most DATA frames: thousands in seconds must not cost the
            // connection, on either side.
            let handler = try await client.connected().get()
            try await handler.eventLoop.submit {
                let context = handler.value.context!
                for round in 0..<3_000 {
                    context.write(NIOAny(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: UInt64(round)), ack: false))), promise: nil)
                }
                context.flush()
            }.get()
            let afterPings = try await put(7).header.revision
            #expect(afterPings == 7)
            let current = try await client.connected().get()
            let before = try await handler.eventLoop.submit { ObjectIdentifier(handler.value) }.get()
            let after = try await current.eventLoop.submit { ObjectIdentifier(current.value) }.get()
            #expect(before == after, "the PINGs cost the connection")

            // The server goes away: calls fail as unavailable; once it is back, calls reach it.
            server.beginShutdown()
            await server.finishShutdown()
            await #expect(throws: RPCError.self) { _ = try await put(1) }
            server = try await EtcdServer.start(host: "127.0.0.1", port: port, methods: Self.methods(observed), logger: Logger(label: "test"))
            let afterRestart = try await put(9).header.revision
            #expect(afterRestart == 9)
        } catch {
            await client.close()
            server.beginShutdown()
            await server.finishShutdown()
            throw error
        }
        await client.close()
        server.beginShutdown()
        await server.finishShutdown()
    }
}
