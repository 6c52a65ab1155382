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

/// Which bound a connection counts against once its protocol is known: peers (Raft between
/// members) and clients are capped apart, so that one cannot crowd out the other.
public enum ConnectionPool: Sendable, Hashable {
    case peers
    case clients
}

public struct TransportRoute: Sendable {
    public var authorize: @Sendable (NodeKey) -> Bool
    /// The connections of this protocol count against `Limits.peersMax` or, by default,
    /// `Limits.clientConnectionsMax`; a client connection is also closed when idle and held to
    /// `Limits.connectionRequestsMax` requests in flight.
    public var pool = ConnectionPool.clients
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
    /// For protocols that carry a byte stream both ways (git's): the connection is handed over
    /// whole, as frames in and frames out with backpressure, and closed when the handler returns.
    /// Takes the place of `handle` when set.
    public var tunnel: (@Sendable (TransportCaller, TunnelInbound, TunnelOutbound) async -> Void)?

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

    public init(authorize: @escaping @Sendable (NodeKey) -> Bool, tunnel: @escaping @Sendable (TransportCaller, TunnelInbound, TunnelOutbound) async -> Void) {
        self.authorize = authorize
        self.handle = { _, _ in [] }
        self.tunnel = tunnel
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
    /// A client connection with no request in flight and nothing read for this long is closed
    /// (the client reconnects when it next needs to).
    public var idleTimeoutSeconds: Double = 300
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
        struct Counts {
            /// Each open connection, with the pool it joined once its handshake finished.
            var channels: [ObjectIdentifier: (channel: any Channel, pool: ConnectionPool?)] = [:]
            var handshaking = 0
            var established: [ConnectionPool: Int] = [:]
        }
        private let counts = Mutex(Counts())
        private let requests = Atomic<Int>(0)

        /// Takes a new connection into its handshake, unless `Limits.handshakesMax` are in one.
        func open(_ channel: any Channel, limits: Limits) -> TransportError? {
            let refusal: TransportError? = counts.withLock { counts in
                guard counts.handshaking < limits.handshakesMax else {
                    return .tooManyConnections(limit: limits.handshakesMax, name: "handshakesMax")
                }
                counts.handshaking += 1
                counts.channels[ObjectIdentifier(channel)] = (channel, nil)
                return nil
            }
            if refusal == nil { channel.closeFuture.whenComplete { _ in self.close(channel) } }
            return refusal
        }

        /// Moves a connection whose handshake finished into `pool`, unless that pool is full.
        func establish(_ channel: any Channel, in pool: ConnectionPool, limits: Limits) -> TransportError? {
            counts.withLock { counts in
                guard let entry = counts.channels[ObjectIdentifier(channel)], entry.pool == nil else { return nil }
                let limit = pool == .peers ? limits.peersMax : limits.clientConnectionsMax
                guard counts.established[pool, default: 0] < limit else {
                    return .tooManyConnections(limit: limit, name: pool == .peers ? "peersMax" : "clientConnectionsMax")
                }
                counts.handshaking -= 1
                counts.established[pool, default: 0] += 1
                counts.channels[ObjectIdentifier(channel)] = (channel, pool)
                return nil
            }
        }

        private func close(_ channel: any Channel) {
            counts.withLock { counts in
                guard let entry = counts.channels.removeValue(forKey: ObjectIdentifier(channel)) else { return }
                if let pool = entry.pool { counts.established[pool, default: 0] -= 1 } else { counts.handshaking -= 1 }
            }
        }

        var current: Int { counts.withLock { $0.channels.count } }
        var all: [any Channel] { counts.withLock { $0.channels.values.map(\.channel) } }

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
                    if let refusal = connections.open(channel, limits: options.limits) {
                        logger.warning("connection refused", metadata: ["peer": "\(remote)", "reason": "\(refusal)"])
                        channel.close(promise: nil)
                        return
                    }
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
        if let refusal = connections.establish(context.channel, in: route.pool, limits: options.limits) {
            drop(context, refusal)
            return
        }
        if let tunnel = route.tunnel {
            startTunnel(tunnel, context: context, key: key)
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
                        isLoopback: TransportCaller.isLoopback(context.channel.remoteAddress), options: options),
                ], position: .after(self))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } catch {
            drop(context, error)
        }
    }

    /// Frames the connection and hands it to the tunnel's handler, counted as one request in
    /// flight until the handler returns (the node's drain waits for it).
    private func startTunnel(
        _ tunnel: @escaping @Sendable (TransportCaller, TunnelInbound, TunnelOutbound) async -> Void, context: ChannelHandlerContext, key: NodeKey
    ) {
        do {
            try context.pipeline.syncOperations.addHandlers(
                [ByteToMessageHandler(FrameDecoder(limit: TransportTunnel.frameBytesMax)), MessageToByteHandler(FrameEncoder())],
                position: .after(self))
            let channel = try TransportTunnel.wrap(context.channel)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            let caller = TransportCaller(key: key, isLoopback: TransportCaller.isLoopback(context.channel.remoteAddress))
            let connections = self.connections
            connections.requestStarted()
            Task {
                try? await channel.executeThenClose { inbound, outbound in await tunnel(caller, inbound, outbound) }
                connections.requestFinished()
            }
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
///
/// On a client connection, at most `Limits.connectionRequestsMax` requests (and
/// `connectionRequestBytesMax` of their bytes) are served at once: past that the handler stops
/// reading from the socket, and frames already read wait their turn, so a client that pipelines
/// without bound is slowed by TCP rather than buffered by the node. A client connection with
/// nothing in flight and nothing read for `idleTimeoutSeconds` is closed.
final class ServerRequestHandler: ChannelDuplexHandler, FlushesOncePerPass {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
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
    let limits: Limits
    let idleTimeout: TimeAmount

    /// Requests being served on this connection, and their bytes.
    var inFlight = 0
    var inFlightBytes = 0
    /// Frames read while the connection was at its bound, oldest first.
    var waiting: [(id: UInt64, body: [UInt8])] = []
    var waitingHead = 0
    /// A read the channel asked for and this handler held back.
    var readHeld = false
    var lastActivity = NIODeadline.now()
    var idleCheck: Scheduled<Void>?
    /// Client requests being served, by slot. They are cancelled when the connection goes, so a
    /// request whose client is gone (one waiting for a lock or a job) stops rather than act for
    /// nobody.
    var serving: [Int: Task<Void, Never>] = [:]
    var nextSlot = 0

    init(
        route: TransportRoute, peer: NodeKey, logger: Logger, remote: String, connections: TransportServer.Connections,
        executor: EventLoopExecutor, isLoopback: Bool, options: TransportOptions
    ) {
        self.isLoopback = isLoopback
        self.executor = executor
        self.connections = connections
        self.route = route
        self.peer = peer
        self.logger = logger
        self.remote = remote
        self.limits = options.limits
        self.idleTimeout = .milliseconds(Int64(options.idleTimeoutSeconds * 1000))
    }

    var context: ChannelHandlerContext?
    var flushScheduled = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if route.pool == .clients { scheduleIdleCheck(at: lastActivity + idleTimeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        self.context = nil
        for task in serving.values { task.cancel() }
        serving = [:]
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
        lastActivity = .now()
        if isFull || waitingHead < waiting.count {
            waiting.append((id, body))
        } else {
            serve(id, body, context: context)
        }
    }

    var isFull: Bool {
        route.pool == .clients && (inFlight >= limits.connectionRequestsMax || inFlightBytes >= limits.connectionRequestBytesMax)
    }

    func read(context: ChannelHandlerContext) {
        if isFull {
            readHeld = true
        } else {
            context.read()
        }
    }

    private func serve(_ id: UInt64, _ body: [UInt8], context: ChannelHandlerContext) {
        inFlight += 1
        inFlightBytes += body.count
        let channel = context.channel
        let handle = route.handle
        let peer = self.peer
        let connections = self.connections
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let size = body.count
        connections.requestStarted()
        if let stream = route.stream {
            Task(executorPreference: executor) {
                await stream(peer, body, StreamSink(channel: channel, id: id))
                connections.requestFinished()
                channel.eventLoop.executeHereOrQueue { handler.value.finished(bytes: size) }
            }
            return
        }
        let handleFrom = route.handleFrom
        let caller = TransportCaller(key: peer, isLoopback: isLoopback)
        // The task's end runs on this loop after `serve` returns (the task cannot finish before),
        // so the slot is always filled before it is cleared.
        let slot = nextSlot
        nextSlot &+= 1
        let task = Task(executorPreference: executor) {
            let response = if let handleFrom { await handleFrom(caller, body) } else { await handle(peer, body) }
            connections.requestFinished()
            // Id 0 marks a one-way message: nothing goes back.
            guard id != 0 else {
                channel.eventLoop.executeHereOrQueue {
                    handler.value.serving[slot] = nil
                    handler.value.finished(bytes: size)
                }
                return
            }
            var buffer = channel.allocator.buffer(capacity: 8 + response.count)
            buffer.writeInteger(id)
            buffer.writeBytes(response)
            channel.eventLoop.executeHereOrQueue { [buffer] in
                handler.value.serving[slot] = nil
                handler.value.answer(buffer)
                handler.value.finished(bytes: size)
            }
        }
        if route.pool == .clients, context.channel.isActive { serving[slot] = task }
    }

    /// A request has been answered: frames that waited are served, and a held read goes out.
    private func finished(bytes: Int) {
        inFlight -= 1
        inFlightBytes -= bytes
        lastActivity = .now()
        guard let context else { return }
        while !isFull, waitingHead < waiting.count {
            let (id, body) = waiting[waitingHead]
            waitingHead += 1
            serve(id, body, context: context)
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            waitingHead = 0
        }
        if readHeld, !isFull {
            readHeld = false
            context.read()
        }
    }

    private func scheduleIdleCheck(at deadline: NIODeadline) {
        guard let context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: deadline) { handler.value.checkIdle() }
    }

    private func checkIdle() {
        guard let context else { return }
        let due = lastActivity + idleTimeout
        guard inFlight == 0, due <= .now() else {
            scheduleIdleCheck(at: inFlight == 0 ? due : .now() + idleTimeout)
            return
        }
        logger.debug("idle connection closed", metadata: ["peer": "\(remote)", "idleSeconds": "\(idleTimeout.nanoseconds / 1_000_000_000)"])
        context.close(promise: nil)
    }

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
