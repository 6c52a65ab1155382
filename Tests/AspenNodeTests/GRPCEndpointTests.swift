@testable import AspenEtcd
import AspenCore
import AspenTransport
import AspenTesting
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
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
        options: EtcdServer.Options = EtcdServer.Options(),
        _ body: @Sendable (_ server: EtcdServer, _ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, _ observed: Observed) async throws -> T
    ) async throws -> T {
        let observed = Observed()
        let server = try await EtcdServer.start(
            host: "127.0.0.1", port: 0, methods: methods(observed), options: options, logger: Logger(label: "test"))
        do {
            let result = try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: server.port), transportSecurity: .plaintext)
            ) { client in
                try await body(server, Etcdserverpb_KV.Client(wrapping: client), observed)
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

    @Test("a call whose deadline passes is cancelled on the server, and costs nothing else on its connection")
    func cancellation() async throws {
        try await Self.withEndpoint { server, kv, observed in
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
            // The deadline passed on both sides at once: the server's answer met a stream the
            // client had reset, which must end that call only, not the connection.
            let after = try await kv.put(Self.put(size: 2)).header.revision
            #expect(after == 2)
            #expect(server.connections.accepted.load(ordering: .relaxed) == 1, "a passed deadline cost the connection")
        }
    }

    @Test("a bidirectional stream carries more requests than its window holds: the window is given back as the method reads")
    func longStream() async throws {
        try await Self.withEndpoint { server, _, _ in
            try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: server.port), transportSecurity: .plaintext)
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

    /// A Txn whose one operation puts `size` bytes (the test's Txn holds it until cancelled).
    static func txn(size: Int) -> Etcdserverpb_TxnRequest {
        var operation = Etcdserverpb_RequestOp()
        operation.requestPut = put(size: size)
        var request = Etcdserverpb_TxnRequest()
        request.success = [operation]
        return request
    }

    @Test("a connection holds at most grpcConnectionBufferedBytesMax of requests: the call that would pass it is refused naming the limit, and room comes back as calls end")
    func bufferedBound() async throws {
        var options = EtcdServer.Options()
        options.limits.grpcConnectionBufferedBytesMax = 2 << 20
        try await Self.withEndpoint(options: options) { _, kv, observed in
            // Two held calls of 800 KB each fit; a third does not. The held calls end only when
            // cancelled below (a short deadline would free their room early on a loaded machine).
            let held = (0..<2).map { _ in
                Task {
                    var callOptions = CallOptions.defaults
                    callOptions.timeout = .seconds(60)
                    return try await kv.txn(Self.txn(size: 800_000), options: callOptions)
                }
            }
            #expect(try await Self.eventually { observed.started.load(ordering: .relaxed) == 2 })
            do {
                var callOptions = CallOptions.defaults
                callOptions.timeout = .seconds(10)
                _ = try await kv.txn(Self.txn(size: 800_000), options: callOptions)
                Issue.record("a call past the connection's buffered bound was taken")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("grpcConnectionBufferedBytesMax (\(2 << 20))"), "\(error.message)")
            }
            // Small calls still pass; once the held calls end, a large one does too.
            #expect(try await kv.put(Self.put(size: 10)).header.revision == 10)
            for call in held { call.cancel() }
            for call in held { _ = await call.result }
            #expect(try await Self.eventually { observed.cancelled.load(ordering: .relaxed) == 2 })
            #expect(try await kv.put(Self.put(size: 1_500_000)).header.revision == 1_500_000)
        }
    }

    /// Waits (at most 10 s) until `condition` holds; says whether it did.
    static func eventually(_ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    @Test("connections past grpcConnectionsMax and ones that send nothing are closed; an idle one is told to go away, a busy one is not")
    func connectionBounds() async throws {
        var options = EtcdServer.Options()
        options.handshakeTimeoutSeconds = 0.3
        options.idleTimeoutSeconds = 1.5
        // No grpc-swift client here: it reconnects as soon as it is told to go away.
        let observed = Observed()
        let server = try await EtcdServer.start(
            host: "127.0.0.1", port: 0, methods: Self.methods(observed), options: options, logger: Logger(label: "test"))
        do {
            // Silent after connecting: cut at the handshake timeout (the socket waits up to 5 s).
            #expect(RawSocket.closesAfterGarbage(port: server.port, []), "a silent connection was kept")
            let open = { server.connections.open.withLock { $0.count } }
            let accepted = { server.connections.accepted.load(ordering: .relaxed) }
            // The bench's frame-level client reconnects only when it next calls, so what the
            // endpoint does to an idle connection shows. A call in flight keeps its connection
            // past the idle timeout.
            let busyClient = GRPCFrameClient(host: "127.0.0.1", port: server.port)
            let busy = Task { try await busyClient.call("/etcdserverpb.KV/Txn", try Self.txn(size: 10).serializedBytes()) }
            #expect(try await Self.eventually { observed.started.load(ordering: .relaxed) == 1 })
            try await Task.sleep(for: .milliseconds(2000))
            #expect(open() == 1 && accepted() == 2, "a connection with a call in flight was cut")
            await busyClient.close()
            _ = await busy.result
            // An idle one is told to go away; its client reconnects for its next call.
            let client = GRPCFrameClient(host: "127.0.0.1", port: server.port)
            defer { Task { await client.close() } }
            let put = { (size: Int) in
                try Etcdserverpb_PutResponse(serializedBytes: try await client.call("/etcdserverpb.KV/Put", try Self.put(size: size).serializedBytes()))
            }
            let first = try await put(3).header.revision
            #expect(first == 3)
            #expect(accepted() == 3)
            #expect(try await Self.eventually { open() == 0 }, "an idle connection was kept")
            // The client sees its connection go; a call sent before it did could meet the
            // closed socket (a reset can drop the GOAWAY still unread).
            #expect(try await Self.eventually { !client.holdsConnection }, "the client did not notice its connection closed")
            let again = try await put(4).header.revision
            #expect(again == 4)
            #expect(accepted() == 4)
        } catch {
            Issue.record(error)
        }
        server.beginShutdown()
        await server.finishShutdown()
        options = EtcdServer.Options()
        options.limits.grpcConnectionsMax = 1
        try await Self.withEndpoint(options: options) { server, kv, _ in
            let first = try await kv.put(Self.put(size: 5)).header.revision
            #expect(first == 5)
            // The one connection is taken: the next is closed at once (long before the 5 s handshake timeout).
            let clock = ContinuousClock()
            let started = clock.now
            #expect(RawSocket.closesAfterGarbage(port: server.port, []), "a connection past grpcConnectionsMax was kept")
            #expect(clock.now - started < .seconds(4))
            let after = try await kv.put(Self.put(size: 6)).header.revision
            #expect(after == 6)
        }
    }

    @Test("a call refused at its first HEADERS is answered once: the client's closing HEADERS on that stream open no second call")
    func refusedOnce() throws {
        let channel = EmbeddedChannel()
        let handler = GRPCConnectionHandler(methods: GRPCMethodTable(), executor: EventLoopExecutor(channel.eventLoop), logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(handler)
        let stream = HTTP2StreamID(1)
        let request: HPACKHeaders = [":method": "POST", ":path": "/etcdserverpb.Auth/Authenticate", "content-type": "application/grpc"]
        try channel.writeInbound(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: request))))
        try channel.writeInbound(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: ["x-end": "1"], endStream: true))))
        channel.embeddedEventLoop.run()
        var answers = 0
        while let frame = try channel.readOutbound(as: HTTP2Frame.self) {
            if frame.streamID == stream, case .headers = frame.payload { answers += 1 }
        }
        #expect(answers == 1, "the refused call was answered \(answers) times")
        _ = try? channel.finish()
    }

    @Test("bytes that are not HTTP/2 lose their connection and nothing else")
    func garbage() async throws {
        try await Self.withEndpoint { server, kv, _ in
            let port = server.port
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
