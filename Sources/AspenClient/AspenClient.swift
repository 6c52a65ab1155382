import AspenAuth
import AspenCore
import AspenCoordination
import AspenJobs
import AspenKV
import AspenTransport
import Synchronization

/// One node a client may talk to.
public struct Endpoint: Sendable, Equatable {
    public var id: NodeID?
    public var host: String
    public var port: Int
    /// The node's key; when given, the connection is refused unless the node proves it.
    public var key: NodeKey?

    public init(id: NodeID? = nil, host: String, port: Int, key: NodeKey? = nil) {
        self.id = id
        self.host = host
        self.port = port
        self.key = key
    }
}

/// Why the client gave up.
public enum ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No node answered in time (all down, partitioned, or no leader yet).
    case unavailable(String)
    /// The node answered with an error the client has no better type for.
    case rejected(RPCFailure)
    case malformedResponse(String)
    /// The request may or may not have taken effect (the connection broke or the node stopped
    /// after it was sent) and was not safe to send again: check before repeating it.
    case outcomeUnknown(String)

    public var description: String {
        switch self {
        case .unavailable(let reason): return "the cluster is unavailable: \(reason)"
        case .outcomeUnknown(let reason): return "the outcome is unknown (it may have been applied): \(reason)"
        case .rejected(let failure): return failure.description
        case .malformedResponse(let reason): return "malformed response: \(reason)"
        }
    }
}

/// Aspen's client: finds the leader among the endpoints, follows `not_leader` hints, retries dead
/// nodes with bounded backoff, and speaks the same `KeyValueStore` protocol as every store.
public final class AspenClient: KeyValueStore {
    let endpoints: [Endpoint]
    let tls: TLSMaterial
    let options: TransportOptions
    /// Attempts per request before giving up.
    let attemptsMax: Int
    /// Proof of the cluster cookie sent with every request (empty without a cookie).
    let proof: [UInt8]
    /// The capability credential, whole (without its holder key) and by id; empty without one.
    let credential: (whole: [UInt8], id: [UInt8])
    /// Endpoints that have verified the credential: they are sent only its id.
    private let presented = Mutex(Set<Int>())
    let preferred = Mutex(0)
    private let connections = TransportConnectionPool<Int>()
    /// Blob connections (`aspen/blobs/1`), by endpoint position.
    let blobConnections = TransportConnectionPool<Int>()
    /// Every write carries this client's session, so a retry is never applied twice.
    let sessions = ClientSessions()

    public init(
        endpoints: [Endpoint], identity: NodeIdentity = NodeIdentity(), options: TransportOptions = TransportOptions(),
        attemptsMax: Int = 20, cookie: ClusterCookie? = nil, credential: Credential? = nil
    ) throws {
        precondition(!endpoints.isEmpty, "a client needs at least one endpoint")
        self.endpoints = endpoints
        self.credential = credential.map { ($0.withoutHolderKey.encoded, $0.id.bytes) } ?? ([], [])
        self.proof = cookie?.proof(for: identity.key) ?? []
        self.tls = try TLSMaterial(identity: identity)
        self.options = options
        self.attemptsMax = attemptsMax
    }

    /// The open connection to endpoint `position` on `protocol`, made if there is none or the
    /// one there has closed (a node closes idle client connections).
    private func openConnection(_ position: Int) async throws -> TransportConnection {
        try await connections.connection(position) { [endpoints, tls, options] in
            let endpoint = endpoints[position]
            return try await TransportConnection.connect(
                host: endpoint.host, port: endpoint.port, protocol: AspenProtocol.client, tls: tls, expecting: endpoint.key, options: options)
        }
    }

    private func forget(_ position: Int) async {
        await connections.forget(position)
    }

    /// Sends a request, following leader hints and rotating past dead nodes.
    ///
    /// A request that reached a node and got no definite answer (the connection broke after it
    /// was sent, the node stopped, or it said the outcome is unknown) may have taken effect. It
    /// is sent again only when `repeatable` (a read, or a write carried by the session, which
    /// applies once however often it arrives); otherwise the call ends with `outcomeUnknown`.
    /// `reached` tells the caller whether any attempt may have taken effect.
    func call(
        _ domain: String, _ operation: String, _ body: [UInt8], extraSeconds: Double = 0, repeatable: Bool = true
    ) async throws -> [UInt8] {
        var reached = false
        return try await call(domain, operation, body, extraSeconds: extraSeconds, repeatable: repeatable, reached: &reached)
    }

    func call(
        _ domain: String, _ operation: String, _ body: [UInt8], extraSeconds: Double = 0, repeatable: Bool, reached: inout Bool
    ) async throws -> [UInt8] {
        var lastProblem = "no attempt made"
        var backoffMs = 20
        for attempt in 0..<attemptsMax {
            let position = preferred.withLock { $0 }
            let request = self.request(domain, operation, body, at: position)
            let connection: TransportConnection
            do {
                connection = try await openConnection(position)
            } catch {
                // Never sent: any node may be tried.
                lastProblem = "\(endpoints[position].host):\(endpoints[position].port): \(error)"
                await forget(position)
                preferred.withLock { $0 = (position + 1) % endpoints.count }
                try await pause(&backoffMs, attempt)
                continue
            }
            do {
                let response = try RPCResponse(
                    decoding: try await connection.request(request, extraSeconds: extraSeconds), limits: options.limits)
                switch response {
                case .ok(let body):
                    if !credential.whole.isEmpty { presented.withLock { _ = $0.insert(position) } }
                    return body
                case .failure(let failure) where failure.code == "unknown_credential":
                    // The node forgot the credential (it restarted): send it whole.
                    lastProblem = failure.message
                    presented.withLock { _ = $0.remove(position) }
                    continue
                case .failure(let failure) where failure.code == "not_leader":
                    lastProblem = failure.message
                    let hinted = failure.leaderHint.flatMap { hint in endpoints.firstIndex { $0.id?.rawValue == hint } }
                    preferred.withLock { $0 = hinted ?? (position + 1) % endpoints.count }
                    if hinted == nil { try await pause(&backoffMs, attempt) }
                    continue
                case .failure(let failure) where failure.code == "proposal_lost":
                    // Superseded by a new leader: it did not apply.
                    lastProblem = failure.message
                    preferred.withLock { $0 = (position + 1) % endpoints.count }
                    try await pause(&backoffMs, attempt)
                    continue
                case .failure(let failure) where failure.code == "unavailable" || failure.code == "outcome_unknown":
                    // A stopping node may have committed it without answering.
                    reached = true
                    lastProblem = failure.message
                    guard repeatable else { throw ClientError.outcomeUnknown(failure.message) }
                    preferred.withLock { $0 = (position + 1) % endpoints.count }
                    try await pause(&backoffMs, attempt)
                    continue
                case .failure(let failure) where failure.code == CoordinationError.rpcCode:
                    throw CoordinationError(decoding: failure.detail) ?? ClientError.rejected(failure)
                case .failure(let failure) where failure.code == JobError.rpcCode:
                    throw (try? JobError(decoding: failure.detail)) ?? ClientError.rejected(failure)
                case .failure(let failure):
                    if !failure.detail.isEmpty, let error = try? KVWire.decodeError(failure.detail) { throw error }
                    throw ClientError.rejected(failure)
                }
            } catch let error as KVError {
                throw error
            } catch let error as ClientError {
                throw error
            } catch let error as CoordinationError {
                throw error
            } catch let error as JobError {
                throw error
            } catch {
                // The connection broke with the request sent: it may have been applied.
                reached = true
                lastProblem = "\(endpoints[position].host):\(endpoints[position].port): \(error)"
                await forget(position)
                guard repeatable else { throw ClientError.outcomeUnknown(lastProblem) }
                preferred.withLock { $0 = (position + 1) % endpoints.count }
                try await pause(&backoffMs, attempt)
            }
        }
        throw ClientError.unavailable(lastProblem)
    }

    /// A request to endpoint `position`, with the credential whole unless that endpoint knows it.
    private func request(_ domain: String, _ operation: String, _ body: [UInt8], at position: Int) -> [UInt8] {
        let known = !credential.whole.isEmpty && presented.withLock { $0.contains(position) }
        return RPCRequest(domain: domain, operation: operation, body: body, proof: proof, credential: known ? credential.id : credential.whole)
            .encoded()
    }

    private func pause(_ backoffMs: inout Int, _ attempt: Int) async throws {
        try await Task.sleep(for: .milliseconds(backoffMs))
        backoffMs = min(backoffMs * 2, 1000)
    }

    // MARK: KeyValueStore

    /// Applies a write exactly once: it carries the client's session and its own sequence, so
    /// the cluster answers a retry with the result it recorded instead of applying it again.
    public func write(_ request: KVWriteRequest) async throws -> KVResult {
        // Refused here, with the same error the node would give, before anything is sent.
        try KVValidator.validate(request.command(nowMs: 0), limits: options.limits)
        var reached = false
        var renewed = false
        while true {
            let stamp = sessions.begin()
            defer { sessions.finished(stamp) }
            let body: [UInt8]
            do {
                body = try await call("kv", "write", KVWire.encode(request, stamp: stamp), repeatable: true, reached: &reached)
            } catch KVError.sessionExpired(let session) {
                sessions.renew(after: session)
                // Refused before it applied; but an earlier attempt may have applied under the
                // forgotten session, and that can no longer be told.
                if reached || renewed { throw ClientError.outcomeUnknown(KVError.sessionExpired(session: session).description) }
                renewed = true
                continue
            } catch let error as KVError {
                if case .sessionResultDiscarded = error { throw ClientError.outcomeUnknown(error.description) }
                throw error
            } catch ClientError.unavailable(let reason) where reached {
                // Out of attempts after one may have applied: neither failed nor done.
                throw ClientError.outcomeUnknown(reason)
            }
            do {
                return try KVWire.decodeResult(body)
            } catch {
                throw ClientError.malformedResponse("\(error)")
            }
        }
    }

    public func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult {
        try KVValidator.validate(request, limits: options.limits)
        let body = try await call("kv", "read", KVWire.encode(request, consistency: consistency))
        do {
            return try KVWire.decodeRange(body)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    public func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus {
        var writer = ByteWriter()
        writer.writeVarint(signed: id)
        writer.write(withKeys)
        let body = try await call("kv", "lease", writer.bytes)
        do {
            return try KVWire.decodeLeaseStatus(body)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    public func leases() async throws -> [Lease] {
        let body = try await call("kv", "leases", [])
        do {
            return try KVWire.decodeLeases(body)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    /// Runs a coordination operation (lock, election, counter, queue, …) on the leader, in one
    /// round trip: the layer executes next to the log, with the leader's clock. Layer failures
    /// come back as the same `CoordinationError` the layer raised.
    public func coordinate(_ call: CoordinationCall) async throws -> CoordinationAnswer {
        // The layer runs on the leader as several writes: a call that changes state is not sent
        // again once it may have run (it would run twice); one that only reads is.
        let body = try await self.call(
            "coord", "call", call.encoded, extraSeconds: Double(call.waitMs) / 1000, repeatable: call.isReadOnly)
        return try CoordinationAnswer(decoding: body)
    }

    /// Asks the leader to hand leadership to `target` (which must be a caught-up voter).
    public func transferLeadership(to target: NodeID) async throws {
        var writer = ByteWriter()
        writer.writeVarint(target.rawValue)
        _ = try await call("cluster", "transfer-leader", writer.bytes)
    }

    // MARK: Watch

    /// Watches changes to the keys in `request.bounds` on one node (the first that answers):
    /// `created`, then events (history first when a start revision is given), progress messages
    /// while idle, and finally `ended` with the reason. The stream throws if the connection breaks;
    /// resume from the last revision seen + 1.
    public func watch(_ request: WatchRequest) async throws -> AsyncThrowingStream<WatchMessage, any Error> {
        try KVValidator.validate(.range(start: request.bounds.start, end: request.bounds.end), limits: options.limits)
        var lastProblem = "no endpoint"
        let first = preferred.withLock { $0 }
        for offset in endpoints.indices {
            let endpoint = endpoints[(first + offset) % endpoints.count]
            do {
                let connection = try await TransportConnection.connect(
                    host: endpoint.host, port: endpoint.port, protocol: AspenProtocol.logs, tls: tls, expecting: endpoint.key,
                    options: options)
                var request = request
                request.proof = proof
                request.credential = credential.whole
                let frames = try connection.stream(WatchWire.encode(request))
                let limits = options.limits
                return AsyncThrowingStream { continuation in
                    let reader = Task {
                        do {
                            for try await frame in frames {
                                let message = try WatchWire.decodeMessage(frame, limits: limits)
                                continuation.yield(message)
                                if case .ended = message { break }
                            }
                            continuation.finish()
                        } catch {
                            continuation.finish(throwing: error)
                        }
                        await connection.close()
                    }
                    continuation.onTermination = { _ in
                        reader.cancel()
                        Task { await connection.close() }
                    }
                }
            } catch {
                lastProblem = "\(endpoint.host):\(endpoint.port): \(error)"
            }
        }
        throw ClientError.unavailable(lastProblem)
    }

    /// The answering node's metrics in the Prometheus text format.
    public func metrics() async throws -> String {
        String(decoding: try await call("cluster", "metrics", []), as: UTF8.self)
    }

    /// Has the answering node snapshot its state and compact its log now.
    public func snapshot() async throws -> (index: UInt64, term: UInt64, bytes: Int) {
        var reader = ByteReader(try await call("cluster", "snapshot", []))
        do {
            return (try reader.readVarint(), try reader.readVarint(), Int(try reader.readVarint()))
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    // MARK: Membership

    /// The members, their roles and recorded addresses, as the answering node knows them.
    public func members() async throws -> ClusterMembers {
        try decodeMembers(try await call("cluster", "members", []))
    }

    /// Founds a one-member cluster on the (single) endpoint, which must never have been part of
    /// one; returns the new cluster's id.
    public func initializeCluster() async throws -> [UInt8] {
        try await call("cluster", "init", [])
    }

    /// Tells a node that has not joined yet where the cluster's members are.
    public func adopt(_ members: ClusterMembers) async throws {
        _ = try await call("cluster", "adopt", members.encoded)
    }

    /// Adds a member as a learner, and promotes it once caught up when `voter` is true (or at
    /// once, without waiting, when `waitForCatchUp` is false).
    @discardableResult
    public func addMember(_ id: NodeID, record: MemberRecord, voter: Bool, waitForCatchUp: Bool = true) async throws -> ClusterMembers {
        var writer = ByteWriter()
        writer.writeVarint(id.rawValue)
        writer.writeBytes(record.encoded)
        writer.write(voter)
        writer.write(!waitForCatchUp)
        return try decodeMembers(try await call("cluster", "add-member", writer.bytes))
    }

    @discardableResult
    public func promote(_ id: NodeID) async throws -> ClusterMembers {
        var writer = ByteWriter()
        writer.writeVarint(id.rawValue)
        return try decodeMembers(try await call("cluster", "promote", writer.bytes))
    }

    @discardableResult
    public func removeMember(_ id: NodeID) async throws -> ClusterMembers {
        var writer = ByteWriter()
        writer.writeVarint(id.rawValue)
        return try decodeMembers(try await call("cluster", "remove", writer.bytes))
    }

    /// Makes exactly these nodes the voters (members not named are removed).
    @discardableResult
    public func setVoters(_ voters: [NodeID]) async throws -> ClusterMembers {
        var writer = ByteWriter()
        writer.writeVarint(UInt64(voters.count))
        for id in voters { writer.writeVarint(id.rawValue) }
        return try decodeMembers(try await call("cluster", "set-voters", writer.bytes))
    }

    private func decodeMembers(_ body: [UInt8]) throws -> ClusterMembers {
        do {
            return try ClusterMembers(decoding: body, limits: options.limits)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    /// What each endpoint says about itself (unreachable ones are reported as errors).
    public func status() async -> [(endpoint: Endpoint, status: Result<NodeStatusInfo, any Error>)] {
        await eachEndpoint("status", []).map { ($0.endpoint, $0.answer.flatMap { body in Result { try NodeStatusWire.decode(body) } }) }
    }

    /// The checksum of every endpoint's applied key-value state as of `revision` (0: each one's
    /// current revision; etcd's HashKV). Members that applied the same log agree.
    public func stateHashes(at revision: Int64 = 0) async
        -> [(endpoint: Endpoint, hash: Result<(hash: UInt32, revision: Int64, compactedRevision: Int64), any Error>)]
    {
        var writer = ByteWriter()
        writer.writeVarint(signed: revision)
        return await eachEndpoint("hash", writer.bytes).map { reply in
            (reply.endpoint, reply.answer.flatMap { body in
                Result {
                    var reader = ByteReader(body)
                    let hash = UInt32(truncatingIfNeeded: try reader.readVarint())
                    let found = (hash, try reader.readSignedVarint(), try reader.readSignedVarint())
                    try reader.expectEnd()
                    return found
                }
            })
        }
    }

    /// Has every endpoint rewrite its database without its free pages (etcd's defragment; each
    /// node's writes wait while it runs). Answers each file's size before and after, in bytes.
    public func defragment() async -> [(endpoint: Endpoint, sizes: Result<(before: Int64, after: Int64), any Error>)] {
        await eachEndpoint("defragment", [], extraSeconds: 600).map { reply in
            (reply.endpoint, reply.answer.flatMap { body in
                Result {
                    var reader = ByteReader(body)
                    let sizes = (try reader.readSignedVarint(), try reader.readSignedVarint())
                    try reader.expectEnd()
                    return sizes
                }
            })
        }
    }

    /// Asks every endpoint, one after the other, `cluster.<operation>`.
    func eachEndpoint(_ operation: String, _ body: [UInt8], extraSeconds: Double = 0) async
        -> [(endpoint: Endpoint, answer: Result<[UInt8], any Error>)]
    {
        var results: [(Endpoint, Result<[UInt8], any Error>)] = []
        let request = RPCRequest(domain: "cluster", operation: operation, body: body, proof: proof, credential: credential.whole).encoded()
        for position in endpoints.indices {
            do {
                let connection = try await openConnection(position)
                switch try RPCResponse(decoding: try await connection.request(request, extraSeconds: extraSeconds)) {
                case .ok(let body): results.append((endpoints[position], .success(body)))
                case .failure(let failure): results.append((endpoints[position], .failure(ClientError.rejected(failure))))
                }
            } catch {
                await forget(position)
                results.append((endpoints[position], .failure(error)))
            }
        }
        return results
    }

    public func close() async {
        await connections.closeAll()
        await blobConnections.closeAll()
    }
}
