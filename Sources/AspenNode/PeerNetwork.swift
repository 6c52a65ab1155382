import AspenCore
import AspenRaft
import AspenTransport
import Logging
import NIOCore
import NIOPosix
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
    /// Where outgoing connections live: the node's own event loop, so that Raft's sends from
    /// the node's actor write straight to the socket.
    let group: any EventLoopGroup

    struct Book {
        /// Addresses given on the command line or in a ticket: enough to find the cluster.
        var given: [NodeID: PeerAddress]
        /// Addresses recorded in the committed membership; they win over given ones.
        var recorded: [NodeID: PeerAddress] = [:]
        /// The committed membership's members; empty while the node has not joined yet.
        var members: Set<NodeID> = []
        var clusterID: [UInt8]?

        func address(_ id: NodeID) -> PeerAddress? { recorded[id] ?? given[id] }

        func node(for key: NodeKey) -> NodeID? {
            recorded.first { $0.value.key == key }?.key ?? given.first { $0.value.key == key && recorded[$0.key] == nil }?.key
        }

        /// Only members may speak Raft to this node; before it has joined, the nodes it was
        /// told about (the ones that will add it).
        func isAuthorized(_ key: NodeKey) -> Bool {
            guard let id = node(for: key) else { return false }
            return members.isEmpty || members.contains(id)
        }
    }

    private let book: Mutex<Book>
    private let connections = Mutex<[NodeID: Task<TransportConnection, any Error>]>([:])
    private let established = Mutex<[NodeID: TransportConnection]>([:])

    public init(
        tls: TLSMaterial, peers: [NodeID: PeerAddress], options: TransportOptions = TransportOptions(), logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.tls = tls
        self.group = group
        self.book = Mutex(Book(given: peers))
        self.options = options
        self.logger = logger
    }

    /// Adds addresses to the given ones (a joining node learning where the cluster is).
    public func addGiven(_ peers: [NodeID: PeerAddress]) {
        let changed = book.withLock { book -> [NodeID] in
            let changed = peers.filter { book.given[$0.key] != $0.value }.map(\.key)
            book.given.merge(peers) { $1 }
            return changed
        }
        for id in changed { dropConnection(id) }
    }

    /// The committed membership changed: route to and accept exactly its members.
    public func update(membership: Raft.Membership) {
        var recorded: [NodeID: PeerAddress] = [:]
        var clusterID: [UInt8]?
        for (id, bytes) in membership.addresses {
            guard let record = try? MemberRecord(decoding: bytes) else {
                logger.error("undecodable member record ignored", metadata: ["member": "\(id)"])
                continue
            }
            recorded[id] = PeerAddress(host: record.host, port: record.port, key: record.key)
            clusterID = record.clusterID
        }
        let changed = book.withLock { book -> [NodeID] in
            let before = Set(book.recorded.keys).union(book.given.keys).filter { book.address($0) != nil }
            let old = Dictionary(uniqueKeysWithValues: before.map { ($0, book.address($0)!) })
            book.recorded = recorded
            book.members = Set(membership.allMembers)
            if let clusterID { book.clusterID = clusterID }
            return old.filter { book.address($0.key) != $0.value }.map(\.key)
        }
        for id in changed { dropConnection(id) }
    }

    /// Where a node listens, as far as this node knows.
    public func address(of id: NodeID) -> PeerAddress? { book.withLock { $0.address(id) } }

    public var givenPeers: [NodeID: PeerAddress] { book.withLock { $0.given } }

    /// The cluster id recorded in the membership, when there is one.
    public var recordedClusterID: [UInt8]? { book.withLock { $0.clusterID } }

    /// Keys allowed on the raft protocol.
    public func isAuthorized(_ key: NodeKey) -> Bool { book.withLock { $0.isAuthorized(key) } }

    public func node(for key: NodeKey) -> NodeID? { book.withLock { $0.node(for: key) } }

    /// Whether `key` is a current member's, as the committed membership records it.
    public func isMember(_ key: NodeKey) -> Bool {
        book.withLock { book in
            guard let id = book.recorded.first(where: { $0.value.key == key })?.key else { return false }
            return book.members.contains(id)
        }
    }

    /// Closes every outgoing connection (at shutdown), and returns once they are closed: the
    /// event loop they live on may be stopped next, and a close still under way would then be
    /// scheduled on a loop that has shut down.
    public func closeAll() async {
        let tasks = connections.withLock { connections in
            defer { connections = [:] }
            return Array(connections.values)
        }
        for task in tasks { task.cancel() }
        var open = established.withLock { established in
            defer { established = [:] }
            return Array(established.values)
        }
        // A connection being opened may still complete despite the cancellation.
        for task in tasks {
            if let connection = try? await task.value, !open.contains(where: { $0 === connection }) { open.append(connection) }
        }
        for connection in open { await connection.close() }
    }

    private func dropConnection(_ id: NodeID) {
        connections.withLock { $0.removeValue(forKey: id) }?.cancel()
        if let connection = established.withLock({ $0.removeValue(forKey: id) }) { Task { await connection.close() } }
    }

    public func send(_ message: Raft.Message) {
        send([message])
    }

    /// Sends messages in order; those to one peer go out in one write.
    public func send(_ messages: [Raft.Message]) {
        var order: [NodeID] = []
        var bodies: [NodeID: [[UInt8]]] = [:]
        for message in messages {
            if bodies[message.to] == nil { order.append(message.to) }
            bodies[message.to, default: []].append(message.encoded())
        }
        for peer in order { send(bodies[peer]!, to: peer) }
    }

    private func send(_ bodies: [[UInt8]], to peer: NodeID) {
        guard let address = address(of: peer) else { return }
        // An established connection: write at once, in order, without waiting for anything.
        if let ready = established.withLock({ $0[peer] }), ready.isActive, (try? ready.send(bodies)) != nil {
            return
        }
        let connecting = connections.withLock { connections -> Task<TransportConnection, any Error> in
            if let existing = connections[peer] { return existing }
            let tls = self.tls
            let options = self.options
            let group = self.group
            let task = Task {
                try await TransportConnection.connect(
                    host: address.host, port: address.port, protocol: AspenProtocol.raft, tls: tls, expecting: address.key,
                    options: options, group: group)
            }
            connections[peer] = task
            return task
        }
        Task {
            do {
                let connection = try await connecting.value
                guard connection.isActive else { throw TransportError.connectionClosed }
                self.established.withLock { $0[peer] = connection }
                try connection.send(bodies)
            } catch {
                self.forget(peer, task: connecting)
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
    /// to, and queue it for Raft, in the order the connection delivered it.
    public func route(to node: RaftNode) -> TransportRoute {
        let logger = self.logger
        let limits = options.limits
        var route = TransportRoute(
            authorize: { [weak self] key in self?.isAuthorized(key) ?? false },
            receive: { [weak self] key, body in
                guard let self else { return }
                // Checked per message too: a member removed while connected is cut off.
                guard self.isAuthorized(key) else {
                    logger.warning("raft message from a key that is no longer a member's dropped", metadata: ["peer": "\(key)"])
                    return
                }
                do {
                    let message = try Raft.Message(decoding: body, limits: limits)
                    guard self.node(for: key) == message.from else {
                        logger.warning("raft message from a key that is not its sender's", metadata: ["peer": "\(key)"])
                        return
                    }
                    node.enqueue(message)
                } catch {
                    logger.warning("undecodable raft message dropped", metadata: ["peer": "\(key)", "error": "\(error)"])
                }
            })
        route.pool = .peers
        return route
    }
}
