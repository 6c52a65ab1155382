import AspenAuth
import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenRaft
import AspenTransport
import Foundation
import GRPCCore
import Synchronization

/// What every etcd service of a node shares: the local node (reads, status, watches, and writes
/// when it leads), a client to the other members for what only the leader can do, and etcd's
/// response headers. Semantics are Aspen's own state machine; there is no second store.
public final class EtcdGateway: Sendable {
    let node: RaftNode
    let identity: NodeIdentity
    let cookie: ClusterCookie?
    let limits: Limits
    /// The node's database file, for `Status.dbSize` (nil in memory).
    let databasePath: String?
    let clusterIDSource: @Sendable () async -> [UInt8]
    private let forwarder = Mutex<(members: [NodeID: MemberRecord], client: AspenClient)?>(nil)
    /// The cluster id in etcd's form, once known (it never changes).
    private let etcdClusterID = Mutex<UInt64?>(nil)
    /// Whether the endpoint serving this gateway takes only clients with a certificate its
    /// trusted CA signed (set by `EtcdServer.start`).
    let clientCertificatesRequired = Atomic<Bool>(false)
    /// Capability-token auth: sessions from `Authenticate`, and every call's check.
    let sessions: EtcdSessions

    public init(
        node: RaftNode, identity: NodeIdentity, cookie: ClusterCookie?, auth: NodeAuth? = nil, databasePath: String?,
        limits: Limits = .standard, clusterID: @escaping @Sendable () async -> [UInt8]
    ) {
        self.sessions = EtcdSessions(auth: auth, sessionsMax: limits.verifiedCredentialsMax)
        self.node = node
        self.identity = identity
        self.cookie = cookie
        self.databasePath = databasePath
        self.limits = limits
        self.clusterIDSource = clusterID
    }

    // MARK: Authority

    /// Until capability tokens, the etcd endpoint asks the native one's proof for what changes
    /// the cluster or its members' work (member add, remove and promote, move-leader,
    /// defragment): a client certificate the trusted CA signed, or, on a node started without a
    /// cookie, a caller on this machine. Without it a loopback endpoint would let any local
    /// process act with the node's own identity and cookie.
    func authorizeAdministrative(_ context: ServerContext, _ operation: String) throws {
        if sessions.enabled {
            // With capability tokens, the session's credential must hold cluster-admin.
            try authorize(.clusterAdmin, operation)
            return
        }
        if clientCertificatesRequired.load(ordering: .relaxed) { return }
        if cookie == nil, Self.isLoopback(context.remotePeer) { return }
        throw RPCError(
            code: .permissionDenied,
            message: cookie == nil
                ? "etcdserver: \(operation) is taken only from this node's machine, or from a client with a certificate (--etcd-trusted-ca-file)"
                : "etcdserver: \(operation) needs a client certificate on a node with a cookie: serve the etcd endpoint with --etcd-trusted-ca-file, or use `aspen cluster` with the cookie")
    }

    /// Authorizes the current call for `needed` when the node requires credentials.
    func authorize(_ needed: Requirement, _ operation: String) throws {
        try sessions.authorize(needed, operation: operation, nowMs: node.nowMs())
    }

    /// Whether a gRPC peer name (`ipv4:…`, `ipv6:[…]`) is a loopback address.
    static func isLoopback(_ peer: String) -> Bool {
        peer.hasPrefix("ipv4:127.") || peer.hasPrefix("ipv6:[::1]") || peer.hasPrefix("ipv6:[::ffff:127.")
    }

    // MARK: Headers

    func header(revision: Revision? = nil) async -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        if let known = etcdClusterID.withLock({ $0 }) {
            header.clusterID = known
        } else {
            let id = await clusterIDSource()
            header.clusterID = MemberRecord.etcdClusterID(id)
            if !id.isEmpty { etcdClusterID.withLock { $0 = header.clusterID } }
        }
        header.memberID = node.id.rawValue
        header.revision = revision ?? node.watches.revision
        header.raftTerm = node.term
        return header
    }

    // MARK: Local first, then the leader

    /// The client used when this node is not the leader, rebuilt when the members change.
    func leaderClient() async throws -> AspenClient {
        let members = ClusterMembers(await node.membership).records
        if let current = forwarder.withLock({ $0 }), current.members == members { return current.client }
        guard !members.isEmpty else { throw RPCError(code: .unavailable, message: "etcdserver: no leader (the members' addresses are not known yet)") }
        let client = try AspenClient(
            endpoints: members.keys.sorted().map { Endpoint(id: $0, host: members[$0]!.host, port: members[$0]!.port, key: members[$0]!.key) },
            identity: identity, attemptsMax: 20, cookie: cookie)
        let old = forwarder.withLock { forwarder in
            defer { forwarder = (members, client) }
            return forwarder?.client
        }
        if let old { Task { await old.close() } }
        return client
    }

    /// Runs `local` on this node; if it is not the leader, `remote` through the leader.
    func onLeader<T: Sendable>(
        _ local: () async throws -> T, remote: (AspenClient) async throws -> T
    ) async throws -> T {
        do {
            return try await local()
        } catch NodeError.notLeader {
            return try await remote(try await leaderClient())
        }
    }

    /// A write through the log. On a follower it travels to the leader inside Raft's own
    /// traffic (as etcd's followers forward proposals); only writes the node cannot forward so
    /// (no leader known yet, or lease grants and keep-alives, which take the leader's clock) go
    /// to the leader as client requests.
    func write(_ request: KVWriteRequest) async throws -> KVResult {
        let needed = try RequestRequirements.of(request) { try node.keysAttached(toLease: $0) }
        if let problem = RequestRequirements.reservedWriteProblem(needed), try await node.holdsSecrets() {
            throw RPCError(code: .permissionDenied, message: "etcdserver: \(problem)")
        }
        try authorize(needed, "write")
        return try await translatingErrors {
            try await onLeader({ try await node.write(request, forwarding: true) }, remote: { try await $0.write(request) })
        }
    }

    /// Reads on this node: linearizable ones confirm the leader's commit index first (ReadIndex,
    /// also from a follower); serializable ones read what this node has applied.
    func read(_ request: RangeRequest, serializable: Bool) async throws -> RangeResult {
        try authorize(RequestRequirements.of(request), "Range")
        return try await translatingErrors {
            try await onLeader(
                { try await node.read(request, consistency: serializable ? .stale : .linearizable) },
                remote: { try await $0.read(request, consistency: serializable ? .stale : .linearizable) })
        }
    }

    /// Maps Aspen's errors to gRPC statuses with etcd's messages where etcd clients recognise them.
    func translatingErrors<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RPCError {
            throw error
        } catch let error as KVError {
            throw Self.rpcError(error)
        } catch let error as NodeError {
            switch error {
            case .notLeader: throw RPCError(code: .unavailable, message: "etcdserver: no leader")
            case .stopped: throw RPCError(code: .unavailable, message: "etcdserver: server stopped")
            case .unavailable(let reason): throw RPCError(code: .unavailable, message: "etcdserver: \(reason)")
            case .proposalLost, .outcomeUnknown: throw RPCError(code: .unavailable, message: "etcdserver: request timed out, \(error)")
            case .refused(let reason): throw RPCError(code: .failedPrecondition, message: reason)
            }
        } catch let error as ClientError {
            switch error {
            case .unavailable(let reason): throw RPCError(code: .unavailable, message: "etcdserver: no leader reachable: \(reason)")
            case .rejected(let failure):
                throw RPCError(code: failure.code == "refused" ? .failedPrecondition : .unavailable, message: failure.message)
            case .malformedResponse(let reason): throw RPCError(code: .internalError, message: reason)
            case .outcomeUnknown(let reason): throw RPCError(code: .unavailable, message: "etcdserver: request timed out, \(reason)")
            }
        } catch is CancellationError {
            throw RPCError(code: .cancelled, message: "etcdserver: request cancelled")
        } catch {
            // A storage failure and the like: its message, not an anonymous `unknown`.
            throw RPCError(code: .internalError, message: "etcdserver: \(error)")
        }
    }

    static func rpcError(_ error: KVError) -> RPCError {
        switch error {
        case .compacted: return RPCError(code: .outOfRange, message: "etcdserver: mvcc: required revision has been compacted")
        case .futureRevision: return RPCError(code: .outOfRange, message: "etcdserver: mvcc: required revision is a future revision")
        case .leaseNotFound: return RPCError(code: .notFound, message: "etcdserver: requested lease not found")
        case .leaseExists: return RPCError(code: .failedPrecondition, message: "etcdserver: lease already exists")
        case .keyNotFound: return RPCError(code: .invalidArgument, message: "etcdserver: key not found")
        case .emptyKey: return RPCError(code: .invalidArgument, message: "etcdserver: key is not provided")
        case .duplicateKey: return RPCError(code: .invalidArgument, message: "etcdserver: duplicate key given in txn request")
        case .tooManyOperations: return RPCError(code: .invalidArgument, message: "etcdserver: too many operations in txn request (\(error))")
        case .keyTooLarge, .valueTooLarge: return RPCError(code: .invalidArgument, message: "etcdserver: request is too large (\(error))")
        default: return RPCError(code: .invalidArgument, message: "etcdserver: \(error)")
        }
    }

    static func unsupported(_ what: String) -> RPCError {
        RPCError(code: .unimplemented, message: "\(what) is not supported by Aspen's etcd endpoint")
    }

    // MARK: Conversions

    /// etcd's key/range_end pair as a selection; nil when the range is empty (start not before end).
    static func selection(key: Data, rangeEnd: Data) -> KeySelection? {
        let key = Bytes(key)
        if rangeEnd.isEmpty { return .key(key) }
        if rangeEnd == Data([0]) { return .range(start: key, end: nil) }
        let end = Bytes(rangeEnd)
        guard key.lexicographicallyPrecedes(end) else { return nil }
        return .range(start: key, end: end)
    }

    static func keyValue(_ kv: KeyValue) -> Mvccpb_KeyValue {
        var out = Mvccpb_KeyValue()
        out.key = Data(kv.key)
        out.value = Data(kv.value)
        out.createRevision = kv.createRevision
        out.modRevision = kv.modRevision
        out.version = kv.version
        out.lease = kv.lease
        return out
    }
}
