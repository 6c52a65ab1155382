import AspenCore
import AspenTransport
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization

/// Unary gRPC calls straight over HTTP/2 frames, the client side of `GRPCConnectionHandler`:
/// each call is a stream of request HEADERS and one DATA frame, answered by response HEADERS,
/// DATA and trailers. It serves `aspen bench --protocol etcd`, where one client process drives
/// Aspen's etcd endpoints and etcd's own, so it must cost little CPU and keep its connections
/// whatever the server does within HTTP/2's rules.
///
/// That last point is why it exists: etcd's server (grpc-go) sends a PING after most DATA it
/// receives, to estimate the connection's bandwidth-delay product, and grpc-swift's client
/// transport takes more than 200 control frames in 30 seconds as an attack, answering with
/// GOAWAY (ENHANCE_YOUR_CALM) and closing the connection. Against etcd that failed hundreds of
/// calls per second ("Stream unexpectedly closed") and reconnected every few hundred
/// milliseconds. Here the HTTP/2 handler's control-frame budget fits such a peer (see
/// `NIOHTTP2Handler.ConnectionConfiguration.grpc`).
///
/// A lost connection fails the calls on it as `unavailable`; the next call connects again.
public final class GRPCFrameClient: Sendable {
    public let host: String
    public let port: Int
    let group: any EventLoopGroup
    let authority: String
    /// Metadata sent with every call (an auth session's `token`).
    let metadata: [(name: String, value: String)]
    let connection = Mutex<EventLoopFuture<NIOLoopBound<Handler>>?>(nil)

    public init(
        host: String, port: Int, metadata: [(name: String, value: String)] = [], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.metadata = metadata
        self.group = group
        authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Calls `path` ("/package.Service/Method") with one serialized request; returns the one
    /// serialized response, or throws the call's status as an `RPCError`.
    public func call(_ path: String, _ request: [UInt8]) async throws -> [UInt8] {
        for attempt in 0..<2 {
            let future = connected()
            let handler = try await future.get()
            let loop = handler.eventLoop
            let promise = loop.makePromise(of: [UInt8].self)
            loop.executeHereOrQueue { handler.value.start(path, request, promise) }
            do {
                return try await promise.futureResult.get()
            } catch let gone as ConnectionGone {
                // The call never left: the connection was going away (a GOAWAY came, or it
                // closed) before the client noticed. A new connection takes it, once.
                connection.withLock { box in if box === future { box = nil } }
                if attempt == 1 { throw gone.status }
            }
        }
        preconditionFailure("the loop returns or throws")
    }

    /// A call refused before it was sent, because its connection is going away.
    struct ConnectionGone: Error {
        let status: RPCError
    }

    /// Whether the client holds a connection (or is making one); false once it has seen its
    /// connection go away.
    public var holdsConnection: Bool { connection.withLock { $0 != nil } }

    public func close() async {
        guard let future = connection.withLock({ box in defer { box = nil }; return box }) else { return }
        guard let handler = try? await future.get() else { return }
        try? await handler.eventLoop.submit { handler.value.close() }.get()
    }

    /// The live connection's handler, connecting first when there is none (or it was lost).
    func connected() -> EventLoopFuture<NIOLoopBound<Handler>> {
        connection.withLock { box in
            if let future = box { return future }
            let future = connect()
            box = future
            return future
        }
    }

    private func connect() -> EventLoopFuture<NIOLoopBound<Handler>> {
        let authority = authority
        let metadata = metadata
        let lost: @Sendable () -> Void = { [weak self] in self?.connectionLost() }
        return ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let http2 = NIOHTTP2Handler(
                        mode: .client,
                        connectionConfiguration: .grpc(settings: [
                            HTTP2Setting(parameter: .enablePush, value: 0),
                            HTTP2Setting(parameter: .initialWindowSize, value: Handler.streamWindowBytes),
                            HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
                        ]),
                        streamConfiguration: .init())
                    try channel.pipeline.syncOperations.addHandler(http2)
                    try channel.pipeline.syncOperations.addHandler(Handler(authority: authority, metadata: metadata, lost: lost))
                }
            }
            .connect(host: host, port: port)
            .flatMapThrowing { channel in
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: Handler.self), eventLoop: channel.eventLoop)
            }
            .flatMapErrorThrowing { [weak self] error in
                self?.connectionLost()
                throw RPCError(code: .unavailable, message: "cannot connect to \(authority): \(error)")
            }
    }

    private func connectionLost() {
        connection.withLock { $0 = nil }
    }

    final class Handler: ChannelInboundHandler, FlushesOncePerPass {
        typealias InboundIn = HTTP2Frame
        typealias OutboundOut = HTTP2Frame

        /// Each stream's window for the answer; a unary answer larger than this waits for the
        /// window updates below, as the connection's does.
        static let streamWindowBytes = 1 << 20

        struct Call {
            let promise: EventLoopPromise<[UInt8]>
            var body = ByteBuffer()
            var window = ReceiveWindow()
        }

        let authority: String
        let lost: @Sendable () -> Void
        var context: ChannelHandlerContext?
        var calls: [HTTP2StreamID: Call] = [:]
        var nextStreamID = HTTP2StreamID(1)
        var window = ReceiveWindow()
        var flushScheduled = false
        /// Set by a GOAWAY or a lost connection: new calls fail, as they would on a closed one.
        var failure: RPCError?
        /// The headers after the pseudo-headers, the same on every call.
        let requestHeaders: HPACKHeaders

        init(authority: String, metadata: [(name: String, value: String)], lost: @escaping @Sendable () -> Void) {
            self.authority = authority
            self.lost = lost
            var headers: HPACKHeaders = ["content-type": "application/grpc", "te": "trailers", "user-agent": "aspen-bench"]
            for (name, value) in metadata { headers.add(name: name, value: value) }
            requestHeaders = headers
        }

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }

        func channelActive(context: ChannelHandlerContext) {
            context.fireChannelActive()
            context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: 1 << 24))), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            failAll(RPCError(code: .unavailable, message: "the connection to \(authority) closed"))
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let streamError = error as? NIOHTTP2Errors.StreamError {
                calls.removeValue(forKey: streamError.streamID)?.promise.fail(
                    RPCError(code: .internalError, message: "the stream broke HTTP/2's rules: \(streamError.baseError)"))
                return
            }
            failAll(RPCError(code: .unavailable, message: "the connection to \(authority) failed: \(error)"))
            context.close(promise: nil)
        }

        func start(_ path: String, _ request: [UInt8], _ promise: EventLoopPromise<[UInt8]>) {
            guard let context, failure == nil else {
                promise.fail(ConnectionGone(status: failure ?? RPCError(code: .unavailable, message: "the connection to \(authority) closed")))
                return
            }
            let id = nextStreamID
            nextStreamID = HTTP2StreamID(Int32(id) + 2)
            calls[id] = Call(promise: promise)
            var headers: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": path, ":authority": authority]
            headers.add(contentsOf: requestHeaders)
            let buffer = grpcFramed(request, allocator: context.channel.allocator)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(buffer), endStream: true)))), promise: nil)
            // Calls started in one turn of the event loop leave in one write.
            flushSoon()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            switch frame.payload {
            case .headers(let headers):
                if let status = headers.headers.first(name: ":status"), status != "200" {
                    finish(frame.streamID, RPCError(code: .unknown, message: "HTTP status \(status) from \(authority)"))
                } else if headers.endStream || headers.headers.first(name: "grpc-status") != nil {
                    trailers(frame.streamID, headers.headers)
                }
            case .data(let data):
                received(frame.streamID, data)
            case .rstStream(let code):
                finish(frame.streamID, RPCError(code: .unavailable, message: "\(authority) reset the call (\(code))"))
            case .goAway(let lastStreamID, let code, _):
                // Calls above the last one the server took were never seen: they fail now;
                // those below run to their end. New calls go to a new connection.
                failure = RPCError(code: .unavailable, message: "\(authority) is closing the connection (\(code))")
                lost()
                // Calls past the last stream the server took were never processed: safe to send again.
                for id in calls.keys where id > lastStreamID {
                    calls.removeValue(forKey: id)?.promise.fail(ConnectionGone(status: failure!))
                }
            default:
                break
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
            context.fireChannelReadComplete()
        }

        private func received(_ id: HTTP2StreamID, _ data: HTTP2Frame.FramePayload.Data) {
            let length = data.windowBytes
            if let increment = window.take(length) {
                context?.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            }
            guard var call = calls[id], case .byteBuffer(var bytes) = data.data else { return }
            guard call.body.readableBytes + bytes.readableBytes <= Limits.standard.grpcAnswerBytesMax + 5 else {
                finish(id, RPCError(code: .resourceExhausted, message: "the answer exceeds \(Limits.standard.grpcAnswerBytesMax) bytes"))
                context?.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
                return
            }
            call.body.writeBuffer(&bytes)
            if let increment = call.window.take(length, announce: !data.endStream) {
                context?.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            }
            calls[id] = call
            if data.endStream { finish(id, RPCError(code: .internalError, message: "\(authority) ended the call without a status")) }
        }

        private func trailers(_ id: HTTP2StreamID, _ headers: HPACKHeaders) {
            guard let call = calls.removeValue(forKey: id) else { return }
            let code = headers.first(name: "grpc-status").flatMap(Int.init) ?? RPCError.Code.unknown.rawValue
            guard code == 0 else {
                let message = headers.first(name: "grpc-message").map(Self.percentDecoded) ?? "no message"
                call.promise.fail(RPCError(code: Status.Code(rawValue: code).flatMap(RPCError.Code.init) ?? .unknown, message: message))
                return
            }
            var body = call.body
            guard body.readableBytes >= 5, body.readInteger(as: UInt8.self) == 0, let size = body.readInteger(as: UInt32.self),
                body.readableBytes == Int(size)
            else {
                call.promise.fail(RPCError(code: .internalError, message: "\(authority) answered OK without one whole uncompressed message"))
                return
            }
            call.promise.succeed(body.readBytes(length: Int(size)) ?? [])
        }

        private func finish(_ id: HTTP2StreamID, _ error: RPCError) {
            calls.removeValue(forKey: id)?.promise.fail(error)
        }

        private func failAll(_ error: RPCError) {
            if failure == nil { failure = error }
            lost()
            let failed = calls
            calls = [:]
            for (_, call) in failed { call.promise.fail(error) }
        }

        func close() {
            failAll(RPCError(code: .cancelled, message: "the client closed"))
            context?.close(promise: nil)
        }

        /// `grpc-message` is percent-encoded UTF-8.
        static func percentDecoded(_ text: String) -> String {
            var bytes: [UInt8] = []
            var utf8 = text.utf8.makeIterator()
            while let byte = utf8.next() {
                if byte == UInt8(ascii: "%"), let high = utf8.next(), let low = utf8.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                {
                    bytes.append(value)
                } else {
                    bytes.append(byte)
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

extension NIOHTTP2Handler.ConnectionConfiguration {
    /// HTTP/2 for gRPC peers, client or server side: `settings`, and a control-frame budget that
    /// grpc-go's peers fit. NIO takes more than 200 PING, SETTINGS or PRIORITY frames in 30 s as
    /// an attack, but grpc-go (etcd's server, and the client of etcdctl and every Go program
    /// using etcd) sends a PING after most DATA frames it receives, to size its windows: one
    /// busy connection sends hundreds a second, and was closed with ENHANCE_YOUR_CALM. Answering
    /// a PING costs less than answering a call, so the budget only stops a peer that sends
    /// nothing else.
    static func grpc(settings: HTTP2Settings) -> Self {
        var configuration = Self()
        configuration.initialSettings = settings
        configuration.controlFrameRateLimit.maximumCount = 200_000
        configuration.controlFrameRateLimit.windowLength = .seconds(10)
        return configuration
    }
}
