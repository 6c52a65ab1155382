import AspenAuth
import AspenCore
import AspenKV
import AspenTransport
import Logging

/// The node's side of `aspen/logs/1`: each request is one watch, answered by a stream of
/// messages that ends with the reason it ended.
public struct WatchService: Sendable {
    let hub: WatchHub
    let limits: Limits
    let logger: Logger
    let cookie: ClusterCookie?
    let auth: NodeAuth?
    let nowMs: @Sendable () -> Int64

    public init(
        hub: WatchHub, cookie: ClusterCookie? = nil, auth: NodeAuth? = nil, nowMs: @escaping @Sendable () -> Int64 = { 0 },
        limits: Limits = .standard, logger: Logger
    ) {
        self.hub = hub
        self.cookie = cookie
        self.auth = auth
        self.nowMs = nowMs
        self.limits = limits
        self.logger = logger
    }

    public func route(authorize: @escaping @Sendable (NodeKey) -> Bool = { _ in true }) -> TransportRoute {
        TransportRoute(authorize: authorize, stream: { key, body, sink in await self.serve(body, from: key, sink) })
    }

    func serve(_ body: [UInt8], from key: NodeKey, _ sink: StreamSink) async {
        let request: WatchRequest
        do {
            request = try WatchWire.decodeRequest(body, limits: limits)
            try KVValidator.validate(.range(start: request.bounds.start, end: request.bounds.end), limits: limits)
        } catch {
            try? await sink.send(WatchWire.encode(.ended(.failed("bad watch request: \(error)"))))
            return
        }
        if let cookie, !cookie.accepts(request.proof, from: key) {
            logger.warning("watch without a valid cookie proof refused", metadata: ["client": "\(key)"])
            try? await sink.send(WatchWire.encode(.ended(.failed("unauthorized: this cluster requires its cookie"))))
            return
        }
        if let auth, auth.isRequired {
            let now = nowMs()
            do {
                let credential: VerifiedCredential?
                do {
                    credential = try auth.authenticate(request.credential, nowMs: now)
                } catch {
                    throw AuthRefusal.denied(error)
                }
                try auth.authorize(credential, caller: PublicKey(bytes: key.bytes), needed: .watch(request.bounds), nowMs: now)
            } catch let refusal as AuthRefusal {
                auth.noteDenial(refusal, client: "\(key)", operation: "watch", nowMs: now)
                try? await sink.send(WatchWire.encode(.ended(.failed("\(refusal.code): \(refusal)"))))
                return
            } catch {
                return
            }
        }
        let subscription: WatchHub.Subscription
        do {
            subscription = try hub.subscribe(request)
        } catch {
            try? await sink.send(WatchWire.encode(.ended(error)))
            return
        }
        // A closed connection ends the watch even when nothing is being sent.
        let watchdog = Task {
            await sink.closed()
            subscription.cancel()
        }
        let keepAlive = Task {
            guard request.progressIntervalMs > 0 else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(request.progressIntervalMs))
                subscription.progress()
            }
        }
        defer {
            watchdog.cancel()
            keepAlive.cancel()
        }
        for await message in subscription.messages {
            subscription.consumed()
            do {
                try await sink.send(WatchWire.encode(message))
            } catch {
                subscription.cancel()
                return
            }
        }
    }
}
