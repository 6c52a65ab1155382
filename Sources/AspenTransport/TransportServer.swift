import AspenCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// What the server does with one application protocol: who may speak it, and how a request is
/// answered. Requests are opaque bytes; the protocol's own codec lives above the transport.
/// Who sent a request: the key the connection's TLS proved, and whether it came over loopback
/// (from this machine).
public struct TransportCaller: Sendable, Equatable {
    public var key: NodeKey
    public var isLoopback: Bool

    public init(key: NodeKey, isLoopback: Bool) {
        self.key = key
        self.isLoopback = isLoopback
    }

    /// Whether `address` is a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z).
    public static func isLoopback(_ address: SocketAddress?) -> Bool {
        switch address {
        case .v4(let v4)?:
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let v6)?:
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes == [UInt8](repeating: 0, count: 15) + [1] { return true }
            return bytes.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] && bytes[12] == 127
        default:
            return false
        }
    }
}

public struct TransportRoute: Sendable {
    public var authorize: @Sendable (NodeKey) -> Bool
    public var handle: @Sendable (NodeKey, [UInt8]) async -> [UInt8]
    /// Takes the place of `handle` when set: the handler also learns where the caller is.
    public var handleFrom: (@Sendable (TransportCaller, [UInt8]) async -> [UInt8])?
    /// For streaming protocols: each request is answered by any number of frames sent through
    /// the sink, until the handler returns. Takes the place of `handle` when set.
    public var stream: (@Sendable (NodeKey, [UInt8], StreamSink) async -> Void)?
    /// For protocols of one-way messages (Raft): called on the connection's event loop for each
    /// frame, in the order the frames arrived, with no task per message. It must not block.
    /// Takes the place of `handle` when set.
    public var receive: (@Sendable (NodeKey, [UInt8]) -> Void)?

    public init(authorize: @escaping @Sendable (NodeKey) -> Bool, handle: @escaping @Sendable (NodeKey, [UInt8]) async -> [UInt8]) {
        self.authorize = authorize
        self.handle = handle
    }

    public init(authorize: @escaping @Sendable (NodeKey) -> Bool, handleFrom: @escaping @Sendable (TransportCaller, [UInt8]) async -> [UInt8]) {
        self.authorize = authorize
        self.handle = { _, _ in [] }
        self.handleFrom = handleFrom
    }

    public init(authorize: @escaping @Sendable (NodeKey) -> Bool, stream: @escaping @Sendable (NodeKey, [UInt8], StreamSink) async -> Void) {
        self.authorize = authorize
        self.handle = { _, _ in [] }
        self.stream = stream
    }

    public init(authorize: @escaping @Sendable (NodeKey) -> Bool, receive: @escaping @Sendable (NodeKey, [UInt8]) -> Void) {
        self.authorize = authorize
        self.handle = { _, _ in [] }
        self.receive = receive
    }
}

/// Where a streaming handler writes its answers to one request. `send` waits until the frame is
/// written, so a slow reader slows the handler rather than filling memory.
public struct StreamSink: Sendable {
    let channel: any Channel
    let id: UInt64

    public func send(_ body: [UInt8]) async throws {
        guard channel.isActive else { throw TransportError.connectionClosed }
        var buffer = channel.allocator.buffer(capacity: 8 + body.count)
        buffer.writeInteger(id)
        buffer.writeBytes(body)
        try await channel.writeAndFlush(buffer)
    }

    public var isActive: Bool { channel.isActive }

    /// Completes when the connection closes.
    public func closed() async { try? await channel.closeFuture.get() }
}

/// Timeouts and bounds of the transport (DESIGN §9).
public struct TransportOptions: Sendable {
    public var connectTimeoutSeconds: Double = 5
    public var handshakeTimeoutSeconds: Double = 5
    public var requestTimeoutSeconds: Double = 10
    public var limits = Limits.standard

    public init() {}
}

/// The peer key a connection's TLS handshake proved, set by the verification callback.
final class PeerBox: Sendable {
    private let key = Mutex<NodeKey?>(nil)
    var value: NodeKey? {
        get { key.withLock { $0 } }
        set { key.withLock { $0 = newValue } }
    }
}

/// One TCP port, TLS 1.3 with both sides pinned by Ed25519 key, and ALPN choosing the protocol.
/// Garbage, oversized frames, unknown protocols and unknown keys close that one connection (and
/// are logged with the peer's address); everyone else is served as before.
public final class TransportServer: Sendable {
    public let port: Int
    private let channel: any Channel
    private let connections: Connections

    final class Connections: Sendable {
        private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
        private let requests = Atomic<Int>(0)

        func open(_ channel: any Channel, limit: Int) -> Bool {
            channels.withLock { channels in
                guard channels.count < limit else { return false }
                channels[ObjectIdentifier(channel)] = channel
                return true
            }
        }
        func close(_ channel: any Channel) { channels.withLock { $0[ObjectIdentifier(channel)] = nil } }
        var current: Int { channels.withLock { $0.count } }
        var all: [any Channel] { channels.withLock { Array($0.values) } }

        func requestStarted() { requests.add(1, ordering: .relaxed) }
        func requestFinished() { requests.subtract(1, ordering: .relaxed) }
        var inFlight: Int { requests.load(ordering: .relaxed) }
    }

    public var connectionCount: Int { connections.current }

    private init(channel: any Channel, connections: Connections) {
        self.channel = channel
        self.connections = connections
        self.port = channel.localAddress?.port ?? 0
    }

    public static func start(
        host: String, port: Int, tls: TLSMaterial, routes: [String: TransportRoute], options: TransportOptions = TransportOptions(),
        logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TransportServer {
        let context = try NIOSSLContext(configuration: tls.serverConfiguration(protocols: routes.keys.sorted()))
        let connections = Connections()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let remote = channel.remoteAddress?.description ?? "unknown"
                    guard connections.open(channel, limit: options.limits.peersMax) else {
                        logger.warning("connection refused", metadata: ["peer": "\(remote)", "reason": "\(TransportError.tooManyConnections(limit: options.limits.peersMax))"])
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in connections.close(channel) }
                    let peer = PeerBox()
                    let ssl = NIOSSLServerHandler(context: context) { certificates, promise in
                        // Any well-formed Ed25519 identity may finish the handshake; what it may
                        // do is decided per protocol once ALPN has chosen one.
                        if let key = TLSMaterial.peerKey(certificates) {
                            peer.value = key
                            promise.succeed(.certificateVerified)
                        } else {
                            promise.succeed(.failed)
                        }
                    }
                    try channel.pipeline.syncOperations.addHandler(ssl)
                    try channel.pipeline.syncOperations.addHandler(
                        RouterHandler(routes: routes, peer: peer, options: options, logger: logger, remote: remote, connections: connections))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        return TransportServer(channel: channel, connections: connections)
    }

    /// Stops accepting connections; established ones keep being served.
    public func stopAccepting() async {
        try? await channel.close()
    }

    /// Requests being answered right now (streams included).
    public var requestsInFlight: Int { connections.inFlight }

    /// Waits until no request is in flight, or `seconds` have passed; returns what is left.
    public func drain(seconds: Double) async -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        while connections.inFlight > 0 && clock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return connections.inFlight
    }

    /// Closes the listening socket and every connection.
    public func close() async throws {
        try? await channel.close()
        for connection in connections.all { try? await connection.close() }
    }
}

/// Waits for the handshake, checks the negotiated protocol and the peer's right to it, then
/// installs framing and the protocol's handler in its place.
final class RouterHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    let routes: [String: TransportRoute]
    let peer: PeerBox
    let options: TransportOptions
    let logger: Logger
    let remote: String
    let connections: TransportServer.Connections
    var handshakeDone = false

    init(
        routes: [String: TransportRoute], peer: PeerBox, options: TransportOptions, logger: Logger, remote: String,
        connections: TransportServer.Connections
    ) {
        self.connections = connections
        self.routes = routes
        self.peer = peer
        self.options = options
        self.logger = logger
        self.remote = remote
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let logger = self.logger
        let remote = self.remote
        let seconds = options.handshakeTimeoutSeconds
        let task = context.eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            logger.warning("connection dropped", metadata: ["peer": "\(remote)", "reason": "\(TransportError.timedOut(operation: "TLS handshake", seconds: seconds))"])
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in task.cancel() }
        handshakeTask = task
    }

    var handshakeTask: Scheduled<Void>?

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        handshakeDone = true
        handshakeTask?.cancel()
        guard let name = negotiated, let route = routes[name] else {
            drop(context, TransportError.unknownProtocol(negotiated))
            return
        }
        guard let key = peer.value, route.authorize(key) else {
            drop(context, peer.value.map { TransportError.unauthorizedPeer($0, protocol: name) } ?? .notEd25519Certificate)
            return
        }
        do {
            try context.pipeline.syncOperations.addHandlers(
                [
                    ByteToMessageHandler(FrameDecoder(limit: options.limits.rpcMessageBytesMax)),
                    MessageToByteHandler(FrameEncoder()),
                    ServerRequestHandler(
                        route: route, peer: key, logger: logger, remote: remote, connections: connections,
                        executor: EventLoopExecutor(context.eventLoop),
                        isLoopback: TransportCaller.isLoopback(context.channel.remoteAddress)),
                ], position: .after(self))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } catch {
            drop(context, error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        drop(context, error)
    }

    private func drop(_ context: ChannelHandlerContext, _ error: any Error) {
        logger.warning("connection dropped", metadata: ["peer": "\(remote)", "reason": "\(error)"])
        context.close(promise: nil)
    }
}

/// Requests on an established connection: `[id: UInt64][body]`, answered `[id][body]`.
final class ServerRequestHandler: ChannelInboundHandler, FlushesOncePerPass {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let route: TransportRoute
    let peer: NodeKey
    let logger: Logger
    let remote: String
    let connections: TransportServer.Connections
    /// Requests are served by tasks preferring the connection's own event loop: a handler that
    /// calls an actor on that loop (the node's) runs without a thread hand-over either way.
    let executor: EventLoopExecutor
    let isLoopback: Bool

    init(
        route: TransportRoute, peer: NodeKey, logger: Logger, remote: String, connections: TransportServer.Connections,
        executor: EventLoopExecutor, isLoopback: Bool
    ) {
        self.isLoopback = isLoopback
        self.executor = executor
        self.connections = connections
        self.route = route
        self.peer = peer
        self.logger = logger
        self.remote = remote
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        guard let id = frame.readInteger(as: UInt64.self) else {
            logger.warning("connection dropped", metadata: ["peer": "\(remote)", "reason": "a frame shorter than its request id"])
            context.close(promise: nil)
            return
        }
        let body = Array(frame.readableBytesView)
        if let receive = route.receive {
            receive(peer, body)
            return
        }
        let channel = context.channel
        let handle = route.handle
        let peer = self.peer
        let connections = self.connections
        connections.requestStarted()
        if let stream = route.stream {
            Task(executorPreference: executor) {
                await stream(peer, body, StreamSink(channel: channel, id: id))
                connections.requestFinished()
            }
            return
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let handleFrom = route.handleFrom
        let caller = TransportCaller(key: peer, isLoopback: isLoopback)
        Task(executorPreference: executor) {
            let response = if let handleFrom { await handleFrom(caller, body) } else { await handle(peer, body) }
            connections.requestFinished()
            // Id 0 marks a one-way message: nothing goes back.
            guard id != 0 else { return }
            var buffer = channel.allocator.buffer(capacity: 8 + response.count)
            buffer.writeInteger(id)
            buffer.writeBytes(response)
            channel.eventLoop.executeHereOrQueue { [buffer] in handler.value.answer(buffer) }
        }
    }

    var context: ChannelHandlerContext?
    var flushScheduled = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func answer(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.write(NIOAny(buffer), promise: nil)
        flushSoon()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("connection dropped", metadata: ["peer": "\(remote)", "reason": "\(error)"])
        context.close(promise: nil)
    }
}
