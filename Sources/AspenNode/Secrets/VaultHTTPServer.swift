import AspenAuth
import AspenCore
import AspenSecrets
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Foundation

/// Vault's HTTP API (`/v1/…`) on SwiftNIO's HTTP/1 server, so `hvac`, `curl` and other Vault
/// clients work unchanged. `X-Vault-Token` (or `Authorization: Bearer`) carries the caller's
/// Aspen credential as text. Bodies are aggregated up to `secretsRequestBytesMax` (413 past it).
///
/// Vault's clients send the `LIST` method, which HTTP parsers built on llhttp (NIO's, and so
/// Hummingbird's) refuse as unknown: `ListMethodRewriter` turns a request line `LIST /path` into
/// `GET /path?list=true` (Vault's own equivalent) before the parser sees it.
public final class VaultHTTPServer: Sendable {
    let channel: any Channel
    public var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    /// The TLS context of PEM files, each failure naming its file.
    public static func tls(certificateFile: String, keyFile: String) throws(Problem) -> NIOSSLContext {
        func load<T>(_ what: String, _ file: String, _ body: () throws -> T) throws(Problem) -> T {
            guard FileManager.default.isReadableFile(atPath: file) else { throw Problem(description: "cannot read the Vault endpoint's \(what) \(file)") }
            do {
                return try body()
            } catch {
                throw Problem(description: "the Vault endpoint's \(what) \(file) is not usable PEM: \(error)")
            }
        }
        let chain = try load("certificate", certificateFile) { try NIOSSLCertificate.fromPEMFile(certificateFile) }
        guard !chain.isEmpty else { throw Problem(description: "the Vault endpoint's certificate \(certificateFile) holds no certificate") }
        let key = try load("key", keyFile) { try NIOSSLPrivateKey(file: keyFile, format: .pem) }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        let built = configuration
        return try load("certificate and key", certificateFile) { try NIOSSLContext(configuration: built) }
    }

    public static func start(
        host: String, port: Int, secrets: SecretsService, auth: NodeAuth?, tls: NIOSSLContext? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> VaultHTTPServer {
        let maxBody = secrets.limits.secretsRequestBytesMax
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // NIO's HTTP server pipeline, with the rewriter before the parser and the
                // boundary observer right after it (before requests are queued for answers).
                let rewriter = ListMethodRewriter()
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandlers([
                        rewriter, HTTPResponseEncoder(), ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
                        RequestBoundaryObserver(rewriter: rewriter), HTTPServerPipelineHandler(), HTTPServerProtocolErrorHandler(),
                        NIOHTTPServerRequestAggregator(maxContentLength: maxBody), VaultHTTPHandler(secrets: secrets, auth: auth),
                    ])
                }
            }
            .bind(host: host, port: port).get()
        return VaultHTTPServer(channel: channel)
    }

    public func close() async throws { try await channel.close() }
}

/// Rewrites a `LIST` request line to `GET …?list=true`. It looks only at the start of each
/// request: the parser's end of a request (`RequestBoundaryObserver`) marks the next start, so
/// body bytes are never taken for a request line. A request line is read whole (up to 8 KiB)
/// before it is passed on. A pipelined request that came in the same read as the previous
/// one's end passes unchanged (a pipelined LIST is refused as an unknown method).
final class ListMethodRewriter: ChannelInboundHandler, @unchecked Sendable {
    // Touched only on the channel's event loop (the handler and this one share it).
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private var atRequestStart = true
    private var pending: ByteBuffer?

    func nextRequest() { atRequestStart = true }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard atRequestStart else {
            context.fireChannelRead(data)
            return
        }
        if var held = pending {
            held.writeBuffer(&buffer)
            buffer = held
            pending = nil
        }
        let view = buffer.readableBytesView
        guard let lineEnd = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes < 8192 {
                pending = buffer
                return
            }
            atRequestStart = false
            context.fireChannelRead(wrapInboundOut(buffer))
            return
        }
        atRequestStart = false
        let line = String(decoding: view[view.startIndex..<lineEnd], as: UTF8.self)
        guard line.hasPrefix("LIST "), let versionStart = line.range(of: " HTTP/", options: .backwards) else {
            context.fireChannelRead(wrapInboundOut(buffer))
            return
        }
        let target = line[line.index(line.startIndex, offsetBy: 5)..<versionStart.lowerBound]
        let rewritten = "GET \(target)\(target.contains("?") ? "&" : "?")list=true\(line[versionStart.lowerBound...])"
        var out = context.channel.allocator.buffer(capacity: buffer.readableBytes + 16)
        out.writeString(rewritten)
        buffer.moveReaderIndex(forwardBy: lineEnd - view.startIndex)
        out.writeBuffer(&buffer)
        context.fireChannelRead(wrapInboundOut(out))
    }
}

/// Tells the rewriter where each request ends, as the parser sees it.
final class RequestBoundaryObserver: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    let rewriter: ListMethodRewriter

    init(rewriter: ListMethodRewriter) { self.rewriter = rewriter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { rewriter.nextRequest() }
        context.fireChannelRead(data)
    }
}

final class VaultHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOHTTPServerRequestFull
    typealias OutboundOut = HTTPServerResponsePart
    let secrets: SecretsService
    let auth: NodeAuth?

    init(secrets: SecretsService, auth: NodeAuth?) {
        self.secrets = secrets
        self.auth = auth
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let full = unwrapInboundIn(data)
        let head = full.head
        let channel = context.channel
        let secrets = self.secrets
        let auth = self.auth
        let body = full.body.map { Array($0.readableBytesView) } ?? []
        let token = head.headers.first(name: "x-vault-token")
            ?? head.headers.first(name: "authorization").map { String($0.trimmingPrefix("Bearer ")) }
        let keepAlive = head.isKeepAlive
        Task {
            let response: VaultResponse
            do {
                let request = try VaultRequest(method: head.method.rawValue, target: head.uri, body: body, token: token)
                response = await secrets.handle(request, caller: Self.caller(auth: auth, token: token, nowMs: secrets.node.nowMs()))
            } catch let error as SecretsError {
                response = .error(error)
            } catch {
                response = .error(.badRequest("\(error)"))
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.contentType)
            headers.add(name: "cache-control", value: "no-store")
            headers.add(name: "content-length", value: "\(response.body.count)")
            if !keepAlive { headers.add(name: "connection", value: "close") }
            var buffer = channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            let status = HTTPResponseStatus(statusCode: response.status)
            channel.eventLoop.execute {
                channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: status, headers: headers)), promise: nil)
                if response.status != 204 { channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil) }
                channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
        }
    }

    /// The caller a token text makes: nothing is checked when the node requires no credentials.
    static func caller(auth: NodeAuth?, token: String?, nowMs: Int64) -> SecretsService.Caller {
        guard let auth, auth.isRequired else {
            return SecretsService.Caller(authorize: { _ in }, credential: nil, credentialRequired: false)
        }
        guard let token, !token.isEmpty else {
            return SecretsService.Caller(
                authorize: { needed in try auth.authorize(nil, caller: nil, needed: needed, nowMs: nowMs) }, credential: nil, credentialRequired: true)
        }
        do {
            let (credential, holder) = try auth.verifyCarried(token, nowMs: nowMs)
            return SecretsService.Caller(
                authorize: { needed in try auth.authorize(credential, caller: holder, needed: needed, nowMs: nowMs) }, credential: credential,
                credentialRequired: true)
        } catch {
            let refusal = AuthRefusal.denied(error)
            return SecretsService.Caller(authorize: { _ in throw refusal }, credential: nil, credentialRequired: true)
        }
    }
}
