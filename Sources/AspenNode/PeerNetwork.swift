import AspenCore
import AspenRaft
import AspenTransport
import Logging
import Synchronization

/// Where a peer listens and the key it must prove.
public struct PeerAddress: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var key: NodeKey

    public init(host: String, port: Int, key: NodeKey) {
        self.host = host
        self.port = port
        self.key = key
    }
}

/// Raft traffic between nodes over `aspen/raft/1`: one pinned connection per peer, opened on
/// first use and reopened after a failure. Sending never blocks Raft: a message that cannot be
/// delivered is dropped, and Raft's own retries (heartbeats, probes) recover.
public final class PeerNetwork: Sendable {
    let tls: TLSMaterial
    let options: TransportOptions
    let logger: Logger
    private let peers: Mutex<[NodeID: PeerAddress]>
    private let connections = Mutex<[NodeID: Task<TransportConnection, any Error>]>([:])
    private let established = Mutex<[NodeID: TransportConnection]>([:])

    public init(tls: TLSMaterial, peers: [NodeID: PeerAddress], options: TransportOptions = TransportOptions(), logger: Logger) {
        self.tls = tls
        self.peers = Mutex(peers)
        self.options = options
        self.logger = logger
    }

    public func setPeer(_ id: NodeID, _ address: PeerAddress) {
        peers.withLock { $0[id] = address }
        connections.withLock { $0.removeValue(forKey: id) }?.cancel()
        established.withLock { $0[id] = nil }
    }

    /// Keys allowed on the raft protocol: the known peers.
    public func isPeer(_ key: NodeKey) -> Bool { peers.withLock { $0.values.contains { $0.key == key } } }

    public func node(for key: NodeKey) -> NodeID? { peers.withLock { $0.first { $0.value.key == key }?.key } }

    public func send(_ message: Raft.Message) {
        guard let address = peers.withLock({ $0[message.to] }) else { return }
        let bytes = message.encoded()
        // An established connection: write at once, in order, without waiting for anything.
        if let ready = established.withLock({ $0[message.to] }), ready.isActive, (try? ready.send(bytes)) != nil {
            return
        }
        let connecting = connections.withLock { connections -> Task<TransportConnection, any Error> in
            if let existing = connections[message.to] { return existing }
            let tls = self.tls
            let options = self.options
            let task = Task {
                try await TransportConnection.connect(
                    host: address.host, port: address.port, protocol: AspenProtocol.raft, tls: tls, expecting: address.key,
                    options: options)
            }
            connections[message.to] = task
            return task
        }
        Task {
            do {
                let connection = try await connecting.value
                guard connection.isActive else { throw TransportError.connectionClosed }
                self.established.withLock { $0[message.to] = connection }
                try connection.send(bytes)
            } catch {
                self.forget(message.to, task: connecting)
            }
        }
    }

    private func forget(_ id: NodeID, task: Task<TransportConnection, any Error>) {
        connections.withLock { connections in
            // Only if no newer connection replaced it meanwhile.
            if let current = connections[id], current == task { connections[id] = nil }
        }
        established.withLock { $0[id] = nil }
    }

    /// The server side: decode a peer's message, check that it comes from the node its key belongs
    /// to, and hand it to Raft.
    public func route(to node: RaftNode) -> TransportRoute {
        let logger = self.logger
        return TransportRoute(
            authorize: { [weak self] key in self?.isPeer(key) ?? false },
            handle: { [weak self] key, body in
                guard let self else { return [] }
                do {
                    let message = try Raft.Message(decoding: body, limits: self.options.limits)
                    guard self.node(for: key) == message.from else {
                        logger.warning("raft message from a key that is not its sender's", metadata: ["peer": "\(key)"])
                        return []
                    }
                    await node.receive(message)
                } catch {
                    logger.warning("undecodable raft message dropped", metadata: ["peer": "\(key)", "error": "\(error)"])
                }
                return []
            })
    }
}
