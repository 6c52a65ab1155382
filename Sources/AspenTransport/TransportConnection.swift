import AspenCore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// A client connection to one node on one protocol: TLS 1.3, the node's key pinned, requests
/// multiplexed by id. Pending requests fail (rather than hang) when the connection closes or a
/// request outlives its timeout.
public final class TransportConnection: Sendable {
    let channel: any Channel
    let pending: PendingRequests
    let options: TransportOptions
    private let nextID = Atomic<UInt64>(1)
    /// The key the server proved.
    public let peer: NodeKey

    init(channel: any Channel, pending: PendingRequests, options: TransportOptions, peer: NodeKey) {
        self.channel = channel
        self.pending = pending
        self.options = options
        self.peer = peer
    }

    /// Connects to `host:port` speaking `protocol`. With `expecting`, the server must prove that
    /// key or the connection is refused.
    public static func connect(
        host: String, port: Int, protocol name: String, tls: TLSMaterial, expecting: NodeKey? = nil,
        options: TransportOptions = TransportOptions(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TransportConnection {
        let pending = PendingRequests()
        let (channel, peer) = try await open(
            host: host, port: port, protocol: name, tls: tls, expecting: expecting, options: options, group: group
        ) { channel in
            try channel.pipeline.syncOperations.addHandlers([
                ByteToMessageHandler(FrameDecoder(limit: options.limits.rpcMessageBytesMax)),
                MessageToByteHandler(FrameEncoder()), ClientResponseHandler(pending: pending),
            ])
        }
        return TransportConnection(channel: channel, pending: pending, options: options, peer: peer)
    }

    /// Opens a TLS connection with the server's key pinned (to `expecting` when given) and
    /// `protocol` negotiated; `install` adds the protocol's handlers behind TLS, on the
    /// channel's loop, before any byte is read. Returns once the handshake has finished.
    static func open(
        host: String, port: Int, protocol name: String, tls: TLSMaterial, expecting: NodeKey?, options: TransportOptions,
        group: any EventLoopGroup, install: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> (channel: any Channel, peer: NodeKey) {
        let context = try NIOSSLContext(configuration: tls.clientConfiguration(protocol: name))
        let seen = PeerBox()
        // Held here, not looked up in the pipeline later: a failed handshake may already have
        // emptied the pipeline by the time `connect` returns.
        let watcher = HandshakeWatcher(protocol: name)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.milliseconds(Int64(options.connectTimeoutSeconds * 1000)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ssl = try NIOSSLClientHandler(context: context, serverHostname: nil) { certificates, promise in
                        let key = TLSMaterial.peerKey(certificates)
                        seen.value = key
                        if let key, expecting == nil || expecting == key {
                            promise.succeed(.certificateVerified)
                        } else {
                            promise.succeed(.failed)
                        }
                    }
                    try channel.pipeline.syncOperations.addHandlers([ssl, watcher])
                    try install(channel)
                }
            }
            .connect(host: host, port: port).get()
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(options.handshakeTimeoutSeconds * 1000))) {
            watcher.fail(TransportError.timedOut(operation: "TLS handshake", seconds: options.handshakeTimeoutSeconds))
            channel.close(promise: nil)
        }
        do {
            try await watcher.completed.get()
            timeout.cancel()
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            if let expecting, seen.value != expecting { throw TransportError.unexpectedPeer(expected: expecting, actual: seen.value) }
            throw error
        }
        guard let peer = seen.value else {
            channel.close(promise: nil)
            throw TransportError.notEd25519Certificate
        }
        return (channel, peer)
    }

    /// Sends one request and waits for its answer.
    /// Sends a request and waits for its answer, up to the transport's request timeout plus
    /// `extraSeconds` (for requests that wait on purpose, such as a lock acquire with a wait).
    public func request(_ body: [UInt8], extraSeconds: Double = 0) async throws -> [UInt8] {
        let limit = options.limits.rpcMessageBytesMax
        guard body.count + 8 <= limit else { throw TransportError.frameTooLarge(length: body.count + 8, limit: limit) }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let promise = channel.eventLoop.makePromise(of: [UInt8].self)
        guard pending.add(id, promise) else {
            throw TransportError.connectionClosed
        }
        let seconds = options.requestTimeoutSeconds + max(0, extraSeconds)
        let pending = self.pending
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            pending.fail(id, TransportError.timedOut(operation: "request", seconds: seconds))
        }
        var buffer = channel.allocator.buffer(capacity: 8 + body.count)
        buffer.writeInteger(id)
        buffer.writeBytes(body)
        channel.writeAndFlush(buffer, promise: nil)
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }

    /// Sends a request answered by a stream of frames (a streaming protocol such as watch). The
    /// stream ends with an error when the connection closes; cancel the iteration to stop reading.
    public func stream(_ body: [UInt8]) throws -> AsyncThrowingStream<[UInt8], any Error> {
        let limit = options.limits.rpcMessageBytesMax
        guard body.count + 8 <= limit else { throw TransportError.frameTooLarge(length: body.count + 8, limit: limit) }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        guard pending.addStream(id, continuation) else { throw TransportError.connectionClosed }
        var buffer = channel.allocator.buffer(capacity: 8 + body.count)
        buffer.writeInteger(id)
        buffer.writeBytes(body)
        channel.writeAndFlush(buffer, promise: nil)
        return stream
    }

    /// Sends a one-way message (request id 0): no answer, no waiting. Messages sent from one
    /// thread leave in order.
    public func send(_ body: [UInt8]) throws {
        try send([body])
    }

    /// Sends one-way messages in order, in one write (one flush): several small messages to one
    /// peer cost one system call, not one each. None is sent if any is too large.
    public func send(_ bodies: [[UInt8]]) throws {
        let limit = options.limits.rpcMessageBytesMax
        for body in bodies where body.count + 8 > limit { throw TransportError.frameTooLarge(length: body.count + 8, limit: limit) }
        guard channel.isActive else { throw TransportError.connectionClosed }
        for body in bodies {
            var buffer = channel.allocator.buffer(capacity: 8 + body.count)
            buffer.writeInteger(UInt64(0))
            buffer.writeBytes(body)
            channel.write(buffer, promise: nil)
        }
        channel.flush()
    }

    /// Sends raw bytes on the connection, bypassing framing (for tests of garbage input).
    public func sendRawForTesting(_ bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        // From just above TLS: encrypted, but not framed.
        let channel = self.channel
        try await channel.eventLoop.submit {
            let context = try channel.pipeline.syncOperations.context(handlerType: HandshakeWatcher.self)
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }.get()
    }

    public var isActive: Bool { channel.isActive }

    public func close() async {
        try? await channel.close()
    }
}

/// Requests waiting for answers, by id; all fail at once when the connection closes.
final class PendingRequests: Sendable {
    private let state = Mutex<(open: Bool, promises: [UInt64: EventLoopPromise<[UInt8]>])>((true, [:]))
    private let streams = Mutex<[UInt64: AsyncThrowingStream<[UInt8], any Error>.Continuation]>([:])

    func addStream(_ id: UInt64, _ continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation) -> Bool {
        // Under the state lock, so that `closeAll` either sees this stream or refuses it.
        state.withLock { state in
            guard state.open else { return false }
            streams.withLock { $0[id] = continuation }
            return true
        }
    }

    func add(_ id: UInt64, _ promise: EventLoopPromise<[UInt8]>) -> Bool {
        let added = state.withLock { state -> Bool in
            guard state.open else { return false }
            state.promises[id] = promise
            return true
        }
        if !added { promise.fail(TransportError.connectionClosed) }
        return added
    }

    func succeed(_ id: UInt64, _ body: [UInt8]) {
        if let stream = streams.withLock({ $0[id] }) {
            stream.yield(body)
            return
        }
        state.withLock { $0.promises.removeValue(forKey: id) }?.succeed(body)
    }

    func fail(_ id: UInt64, _ error: any Error) {
        state.withLock { $0.promises.removeValue(forKey: id) }?.fail(error)
    }

    func closeAll() {
        let promises = state.withLock { state -> [EventLoopPromise<[UInt8]>] in
            state.open = false
            defer { state.promises = [:] }
            return Array(state.promises.values)
        }
        for promise in promises { promise.fail(TransportError.connectionClosed) }
        let open = streams.withLock { streams in
            defer { streams = [:] }
            return Array(streams.values)
        }
        for stream in open { stream.finish(throwing: TransportError.connectionClosed) }
    }
}

final class ClientResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let pending: PendingRequests

    init(pending: PendingRequests) { self.pending = pending }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        guard let id = frame.readInteger(as: UInt64.self) else {
            context.close(promise: nil)
            return
        }
        pending.succeed(id, Array(frame.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending.closeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pending.closeAll()
        context.close(promise: nil)
    }
}

/// Completes when the TLS handshake has finished with the requested protocol. Its promise is
/// completed exactly once, whatever happens first: the handshake, an error, the channel closing,
/// or the handler being removed from a channel that never became active.
final class HandshakeWatcher: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let name: String
    private let promise = Mutex<EventLoopPromise<Void>?>(nil)
    private let futureStorage = Mutex<EventLoopFuture<Void>?>(nil)

    init(protocol name: String) { self.name = name }

    var completed: EventLoopFuture<Void> {
        get throws { try futureStorage.withLock { $0! } }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let made = context.eventLoop.makePromise(of: Void.self)
        promise.withLock { $0 = made }
        futureStorage.withLock { $0 = made.futureResult }
    }

    private func complete(_ result: Result<Void, any Error>) {
        let pending = promise.withLock { promise -> EventLoopPromise<Void>? in
            defer { promise = nil }
            return promise
        }
        pending?.completeWith(result)
    }

    func fail(_ error: any Error) { complete(.failure(error)) }

    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(TransportError.connectionClosed))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            complete(negotiated == name ? .success(()) : .failure(TransportError.unknownProtocol(negotiated)))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(TransportError.connectionClosed))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.fireErrorCaught(error)
    }
}
