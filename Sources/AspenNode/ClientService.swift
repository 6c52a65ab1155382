import AspenAuth
import AspenCI
import AspenForge
import AspenCore
import AspenCoordination
import AspenJobs
import AspenKV
import AspenLayer
import AspenRaft
import AspenSecrets
import AspenTransport
import Logging

/// The node's side of `aspen/client/1`: decodes a request, hands it to the domain's handler and
/// answers with a result or a sanitized, coded error. Followers answer writes and linearizable
/// reads with `not_leader` and the leader's id.
public struct ClientService: Sendable {
    let node: RaftNode
    let limits: Limits
    let logger: Logger
    /// Makes the members a node not yet joined was told of durable (`adopt`), so that it still
    /// accepts their Raft traffic if it restarts before it has joined.
    let keepAdopted: (@Sendable ([UInt8]) throws -> Void)?
    /// For membership requests: the node's network (addresses it learns before joining).
    let network: PeerNetwork?
    /// When set, every request must prove knowledge of the cluster cookie.
    let cookie: ClusterCookie?
    /// Capability-token auth; nil or off: the cookie and the loopback rule alone.
    let auth: NodeAuth?
    let metrics: RequestMetrics?
    /// Shared by the coordination calls this node runs.
    let coordination = LocalCoordination()
    /// The job system's calls (nil: this node answers them as unknown).
    let jobs: JobService?
    /// The forge's repository calls (nil: this node answers them as unknown).
    let forge: ForgeService?
    /// CI's calls (nil: this node answers them as unknown).
    let ci: CIService?
    /// The secrets engines (nil: this node answers their calls as unknown).
    let secrets: SecretsService?

    public init(
        node: RaftNode, network: PeerNetwork? = nil, cookie: ClusterCookie? = nil, auth: NodeAuth? = nil,
        metrics: RequestMetrics? = nil, jobs: JobService? = nil, forge: ForgeService? = nil, secrets: SecretsService? = nil, ci: CIService? = nil, limits: Limits = .standard,
        logger: Logger, keepAdopted: (@Sendable ([UInt8]) throws -> Void)? = nil
    ) {
        self.jobs = jobs
        self.secrets = secrets
        self.forge = forge
        self.ci = ci
        self.keepAdopted = keepAdopted
        self.node = node
        self.metrics = metrics
        self.cookie = cookie
        self.auth = auth
        self.network = network
        self.limits = limits
        self.logger = logger
    }

    public var route: TransportRoute {
        TransportRoute(authorize: { _ in true }, handleFrom: { caller, body in await self.handle(body, from: caller).encoded() })
    }

    public func handle(_ bytes: [UInt8], from caller: TransportCaller) async -> RPCResponse {
        let request: RPCRequest
        do {
            request = try RPCRequest(decoding: bytes, limits: limits)
        } catch {
            metrics?.record("undecodable", seconds: 0, outcome: "bad_request")
            return .failure(RPCFailure(code: "bad_request", message: "undecodable request: \(error)"))
        }
        guard let metrics else { return await respond(to: request, from: caller) }
        let clock = ContinuousClock()
        let started = clock.now
        let response = await respond(to: request, from: caller)
        let elapsed = (clock.now - started).components
        let outcome = if case .failure(let failure) = response { failure.code } else { "ok" }
        // Only operations the node knows get their own label; the rest count as unknown.
        let known = outcome != "unknown_operation"
        metrics.record(
            known ? "\(request.domain).\(request.operation)" : "unknown",
            seconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18, outcome: outcome)
        return response
    }

    /// Requests that change who is in the cluster or what its members do: without a cookie, a
    /// node takes them only from its own machine.
    static let administrative: Set<String> = [
        "init", "adopt", "add-member", "promote", "remove", "set-voters", "transfer-leader", "snapshot", "defragment",
    ]

    func respond(to request: RPCRequest, from caller: TransportCaller) async -> RPCResponse {
        let key = caller.key
        if let cookie, !cookie.accepts(request.proof, from: key) {
            logger.warning("request without a valid cookie proof refused", metadata: ["client": "\(key)"])
            return .failure(
                RPCFailure(
                    code: "unauthorized",
                    message: request.proof.isEmpty
                        ? "this cluster requires a cookie: pass --cookie or set ASPEN_COOKIE" : "wrong cluster cookie"))
        }
        let authRequired = auth?.isRequired ?? false
        if !authRequired, cookie == nil, !caller.isLoopback, request.domain == "cluster", Self.administrative.contains(request.operation) {
            logger.warning(
                "membership or maintenance request from another machine refused: this node has no cookie",
                metadata: ["client": "\(key)", "operation": "\(request.operation)"])
            return .failure(
                RPCFailure(
                    code: "unauthorized",
                    message:
                        "cluster \(request.operation) is taken only from this node's own machine, as it was started without a cookie: "
                        + "start the nodes with --cookie (or ASPEN_COOKIE) and pass the same to the CLI"))
        }
        do {
            let access = try Access(service: self, request: request, caller: caller)
            switch (request.domain, request.operation) {
            case ("kv", "write"):
                let (write, stamp) = try KVWire.decodeClientWrite(request.body, limits: limits)
                let needed = try RequestRequirements.of(write) { try node.storage.lease($0)?.keys ?? [] }
                if let problem = RequestRequirements.reservedWriteProblem(needed), try await node.holdsSecrets() {
                    throw KVError.invalidCommand(problem)
                }
                try access.authorize(needed)
                if let stamp { return .ok(KVWire.encode(try await node.write(write, stamp: stamp))) }
                return .ok(KVWire.encode(try await node.write(write)))
            case ("kv", "read"):
                let (range, consistency) = try KVWire.decodeRead(request.body, limits: limits)
                try access.authorize(RequestRequirements.of(range))
                return .ok(KVWire.encode(try await node.read(range, consistency: consistency)))
            case ("kv", "lease"):
                var reader = ByteReader(request.body)
                let id = try reader.readSignedVarint()
                let withKeys = try reader.readBool()
                try access.authorize(RequestRequirements.leaseStatus(keys: withKeys ? try node.storage.lease(id)?.keys ?? [] : []))
                return .ok(KVWire.encode(try await node.leaseStatus(id, withKeys: withKeys)))
            case ("kv", "leases"):
                try access.authorize(.lease)
                return .ok(KVWire.encode(try await node.leases()))
            case ("cluster", _):
                guard let operation = ClusterOperation(rawValue: request.operation) else {
                    try access.authorize(.clusterAdmin)
                    return .failure(RPCFailure(code: "unknown_operation", message: "unknown operation cluster.\(request.operation)"))
                }
                try access.authorizeCluster(operation)
                return .ok(try await handleCluster(operation, request.body, caller: caller))
            case ("coord", "call"):
                // The layer runs here, next to the log, against the node itself (a follower
                // answers not_leader at its first write or linearizable read).
                let call = try CoordinationCall(decoding: request.body)
                try access.authorize(RequestRequirements.of(call))
                let executor = CoordinationExecutor(store: node, local: coordination, nowMs: node.nowMs)
                return .ok(try await executor.run(call).encoded)
            case ("job", "call") where jobs != nil:
                let call = try JobCall(decoding: request.body, limits: limits)
                try access.authorize(RequestRequirements.of(call))
                // CI's jobs are the scheduler's alone: a job of its type (or under its keys) from a
                // client could name any repository's secrets, or stand in for a run's job.
                if case .submit(let spec) = call, spec.type == CIJobTask.jobType || spec.idempotencyKey?.hasPrefix("ci/") == true {
                    throw JobError.invalid("jobs of type \(CIJobTask.jobType) (and idempotency keys under ci/) are made by CI runs only")
                }
                return .ok(try await jobs!.run(call).encoded)
            case ("forge", "call") where forge != nil:
                let call = try ForgeCall(decoding: request.body, limits: limits)
                try access.authorize(RequestRequirements.of(call))
                return .ok(try await forge!.call(call, caller: caller.key).encoded)
            case ("ci", "call") where ci != nil:
                let call = try CICall(decoding: request.body, limits: limits)
                return .ok(try await ci!.call(call, caller: caller.key.hex) { try access.authorize($0) }.encoded)
            case ("secrets", "call") where secrets != nil:
                var vault = try VaultRequest(decoding: request.body, limits: limits)
                vault.token = nil
                let caller = SecretsService.Caller(
                    authorize: { try access.authorize($0) }, credential: access.credential, credentialRequired: access.auth != nil)
                return .ok(await secrets!.handle(vault, caller: caller).encoded())
            case ("secrets", "share") where secrets != nil, ("secrets", "seal-share") where secrets != nil:
                // Between voters only: a key share goes to (or comes from) a member's proven key.
                guard let from = network?.node(for: caller.key), network?.isMember(caller.key) == true else {
                    return .failure(RPCFailure(code: "unauthorized", message: "key shares are exchanged between cluster members only"))
                }
                var reader = ByteReader(request.body)
                let epoch = try reader.readVarint()
                if request.operation == "share" { return .ok(try await secrets!.share(epoch: epoch, for: from)) }
                let share = try reader.readBytes(limit: 64)
                return .ok(try await secrets!.sealShare(epoch: epoch, share: share, for: from))
            default:
                try access.authorize(.clusterAdmin)
                return .failure(
                    RPCFailure(code: "unknown_operation", message: "unknown operation \(request.domain).\(request.operation)"))
            }
        } catch let error as SecretsError {
            return .failure(RPCFailure(code: "secrets", message: error.message))
        } catch let refusal as AuthRefusal {
            auth?.noteDenial(refusal, client: "\(caller.key)", operation: "\(request.domain).\(request.operation)", nowMs: node.nowMs())
            return .failure(RPCFailure(code: refusal.code, message: refusal.description))
        } catch let error as KVError {
            return .failure(RPCFailure(code: error.code, message: error.description, detail: KVWire.encode(error)))
        } catch let error as NodeError {
            switch error {
            case .notLeader(let hint):
                return .failure(RPCFailure(code: "not_leader", message: error.description, leaderHint: hint?.rawValue))
            case .proposalLost: return .failure(RPCFailure(code: "proposal_lost", message: error.description))
            case .outcomeUnknown: return .failure(RPCFailure(code: "outcome_unknown", message: error.description))
            case .stopped, .unavailable: return .failure(RPCFailure(code: "unavailable", message: error.description))
            case .refused(let reason): return .failure(RPCFailure(code: "refused", message: reason))
            }
        } catch let error as CoordinationError {
            return .failure(RPCFailure(code: CoordinationError.rpcCode, message: error.description, detail: error.encoded))
        } catch let error as JobError {
            return .failure(RPCFailure(code: JobError.rpcCode, message: error.description, detail: error.encoded))
        } catch let error as CIError {
            return .failure(RPCFailure(code: CIError.rpcCode, message: error.description, detail: Array(error.code.utf8)))
        } catch let error as PipelineError {
            return .failure(RPCFailure(code: CIError.rpcCode, message: error.description, detail: Array("bad_request".utf8)))
        } catch let error as ForgeError {
            return .failure(RPCFailure(code: ForgeError.rpcCode, message: error.description, detail: Array(error.code.utf8)))
        } catch let failure as RPCFailure {
            return .failure(failure)
        } catch let error as DecodingError {
            return .failure(RPCFailure(code: "bad_request", message: "undecodable request body: \(error)"))
        } catch let error as TupleError {
            return .failure(RPCFailure(code: "bad_request", message: "undecodable coordination call: \(error)"))
        } catch {
            logger.error("request failed", metadata: ["error": "\(error)"])
            return .failure(RPCFailure(code: "internal", message: "the node could not complete the request"))
        }
    }
}

extension RaftNode: KeyValueStore {
    /// A lease's time to live, as the leader sees it.
    public func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        // A lease past its time is gone, even before the expiry command has applied.
        guard let (lease, keys) = try storage.lease(id), lease.expiresAtMs > nowMs() else { throw KVError.leaseNotFound(id) }
        return LeaseStatus(lease: lease, remainingMs: max(0, lease.expiresAtMs - nowMs()), keys: withKeys ? keys : [])
    }

    public func leases() async throws -> [Lease] {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        let now = nowMs()
        return try storage.leases().filter { $0.expiresAtMs > now }
    }
}
