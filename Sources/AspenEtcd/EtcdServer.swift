import AspenCore
import AspenNode
import AspenTransport
import GRPCCore
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import Foundation
import Synchronization

/// A node's etcd v3 endpoint: gRPC over HTTP/2, plaintext or over TLS (`EtcdTLS`), serving KV,
/// Watch, Lease, Cluster and Maintenance. Methods it does not serve (the
/// Auth service, for one) fail with `Unimplemented`.
///
/// The gRPC layer is `GRPCConnectionHandler`, working on HTTP/2 frames; the generated service
/// protocols and messages are grpc-swift's and swift-protobuf's.
public final class EtcdServer: Sendable {
    let listener: any Channel
    /// The endpoint's own event loop, when it was not given one: its connections and the tasks
    /// serving their calls.
    let ownLoops: MultiThreadedEventLoopGroup?
    let connections: Connections
    public let port: Int

    private init(listener: any Channel, ownLoops: MultiThreadedEventLoopGroup?, connections: Connections, port: Int) {
        self.listener = listener
        self.ownLoops = ownLoops
        self.connections = connections
        self.port = port
    }

    /// HTTP/2 settings sent to every client: many calls at once (`Limits.grpcStreamsMax`), stream
    /// windows a megabyte wide so a streaming call's requests need few window updates.
    static func settings(_ limits: Limits) -> HTTP2Settings {
        [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.grpcStreamsMax),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 14),
        ]
    }

    /// The endpoint's bounds on its connections.
    public struct Options: Sendable {
        /// A connection that has not finished its TLS handshake and sent its HTTP/2 preface by
        /// then is closed.
        public var handshakeTimeoutSeconds: Double = 5
        /// A connection with no call open and no frame read for this long is told to go away.
        public var idleTimeoutSeconds: Double = 300
        public var limits = Limits.standard

        public init() {}
    }

    /// Serves etcd's API over `gateway` on HOST:PORT; with `tls`, only over TLS.
    public static func start(
        host: String, port: Int, gateway: EtcdGateway, tls: EtcdTLS? = nil, progressIntervalMs: Int = 10_000,
        options: Options = Options(), loop: (any EventLoop)? = nil, logger: Logger
    ) async throws -> EtcdServer {
        gateway.clientCertificatesRequired.store(tls?.requiresClientCertificates ?? false, ordering: .relaxed)
        return try await start(
            host: host, port: port, methods: .etcd(gateway: gateway, progressIntervalMs: progressIntervalMs), tls: tls, options: options,
            loop: loop, logger: logger)
    }

    /// Serves `methods` on HOST:PORT, on `loop` (the node's, so that a call reaches the node's
    /// actor without changing threads) or on an event loop of its own.
    static func start(
        host: String, port: Int, methods: GRPCMethodTable, tls: EtcdTLS? = nil, options: Options = Options(),
        loop given: (any EventLoop)? = nil, logger: Logger
    ) async throws -> EtcdServer {
        // One thread: measured here, calls served on the thread that reads their connection (and
        // the tasks running them preferring it) beat spreading them over more threads.
        let ownLoops = given == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let loop = given ?? ownLoops!.next()
        let executor = EventLoopExecutor(loop)
        let connections = Connections()
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: loop)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let key = ObjectIdentifier(channel)
                        let limit = options.limits.grpcConnectionsMax
                        let taken = connections.open.withLock { open in
                            guard open.count < limit else { return false }
                            open[key] = channel
                            connections.accepted.add(1, ordering: .relaxed)
                            return true
                        }
                        guard taken else {
                            logger.warning(
                                "etcd endpoint connection refused",
                                metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "unknown")", "reason": "more than grpcConnectionsMax (\(limit)) connections"])
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in _ = connections.open.withLock { $0.removeValue(forKey: key) } }
                        if let tls {
                            // A failed handshake (no certificate, an untrusted one, not TLS at all)
                            // closes this connection only.
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            NIOHTTP2Handler(mode: .server, connectionConfiguration: .grpc(settings: settings(options.limits)), streamConfiguration: .init()))
                        try channel.pipeline.syncOperations.addHandler(
                            GRPCConnectionHandler(methods: methods, executor: executor, options: options, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            try? await ownLoops?.shutdownGracefully()
            throw error
        }
        guard let boundPort = listener.localAddress?.port else {
            try? await listener.close()
            try? await ownLoops?.shutdownGracefully()
            throw RPCError(code: .internalError, message: "the etcd endpoint did not bind an IP address")
        }
        logger.info(
            "etcd endpoint listening",
            metadata: ["address": "\(host):\(boundPort)", "tls": "\(tls.map { $0.requiresClientCertificates ? "client certificates" : "on" } ?? "off")"])
        return EtcdServer(listener: listener, ownLoops: ownLoops, connections: connections, port: boundPort)
    }

    /// Stops accepting connections and tells every client (HTTP/2 GOAWAY) to start no new calls;
    /// the ones under way may finish.
    public func beginShutdown() {
        listener.close(promise: nil)
        for channel in connections.open.withLock({ Array($0.values) }) {
            channel.eventLoop.execute {
                (try? channel.pipeline.syncOperations.handler(type: GRPCConnectionHandler.self))?.goAway()
            }
        }
    }

    /// Waits for the calls under way (bounded: long-lived streams such as lease keep-alives are
    /// cut after `seconds`).
    public func finishShutdown(seconds: Double = 2) async {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !connections.open.withLock({ $0.isEmpty }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for channel in connections.open.withLock({ Array($0.values) }) { try? await channel.close() }
        try? await ownLoops?.shutdownGracefully()
    }
}

/// The endpoint's open connections, so that shutting down can reach them.
final class Connections: Sendable {
    let open = Mutex<[ObjectIdentifier: any Channel]>([:])
    /// Connections taken since the endpoint started.
    let accepted = Atomic<Int>(0)
}

/// The etcd endpoint's TLS: a certificate chain and key from PEM files, HTTP/2 by ALPN (gRPC
/// clients such as etcdctl insist on it), and, with a client CA, mutual TLS: a client must show a
/// certificate that CA signed (etcd's --client-cert-auth with --trusted-ca-file).
public struct EtcdTLS: Sendable {
    let context: NIOSSLContext
    public let requiresClientCertificates: Bool

    /// Why the files cannot serve, naming the file.
    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil) throws(Problem) {
        func load<T>(_ what: String, _ file: String, _ body: () throws -> T) throws(Problem) -> T {
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw Problem(description: "cannot read the etcd endpoint's \(what) \(file)")
            }
            do {
                return try body()
            } catch {
                throw Problem(description: "the etcd endpoint's \(what) \(file) is not usable PEM: \(error)")
            }
        }
        let chain = try load("certificate", certificateFile) { try NIOSSLCertificate.fromPEMFile(certificateFile) }
        guard !chain.isEmpty else { throw Problem(description: "the etcd endpoint's certificate \(certificateFile) holds no certificate") }
        let key = try load("key", keyFile) { try NIOSSLPrivateKey(file: keyFile, format: .pem) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["h2"]
        if let clientCAFile {
            let roots = try load("trusted CA", clientCAFile) { try NIOSSLCertificate.fromPEMFile(clientCAFile) }
            configuration.trustRoots = .certificates(roots)
            configuration.certificateVerification = .noHostnameVerification
        }
        requiresClientCertificates = clientCAFile != nil
        let built = configuration
        context = try load("certificate and key", certificateFile) { try NIOSSLContext(configuration: built) }
    }
}
