import GRPCCore
import SwiftProtobuf

/// One gRPC method as the endpoint serves it: messages arrive and leave still encoded, the
/// method decodes its requests and encodes its responses.
enum GRPCMethod: Sendable {
    /// One request, one response.
    case unary(@Sendable (_ request: [UInt8], _ context: ServerContext) async throws -> [UInt8])
    /// Any number of requests and responses (server-streaming and bidirectional calls).
    case streaming(
        @Sendable (_ requests: RPCAsyncSequence<[UInt8], any Error>, _ responses: RPCWriter<[UInt8]>, _ context: ServerContext) async throws
            -> Void)
}

/// The methods an endpoint serves, by HTTP/2 path (`/package.Service/Method`).
struct GRPCMethodTable: Sendable {
    private(set) var methods: [String: (descriptor: MethodDescriptor, method: GRPCMethod)] = [:]

    subscript(path: String) -> (descriptor: MethodDescriptor, method: GRPCMethod)? { methods[path] }

    static func decode<Message: SwiftProtobuf.Message>(_ type: Message.Type, _ bytes: [UInt8]) throws -> Message {
        do {
            return try Message(serializedBytes: bytes)
        } catch {
            throw RPCError(code: .invalidArgument, message: "the request is not a valid \(Message.protoMessageName): \(error)")
        }
    }

    mutating func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor, _ body: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        methods["/" + descriptor.fullyQualifiedMethod] = (
            descriptor,
            .unary { bytes, context in try await body(Self.decode(Request.self, bytes), context).serializedBytes() }
        )
    }

    mutating func bidirectional<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor,
        _ body: @escaping @Sendable (RPCAsyncSequence<Request, any Error>, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        methods["/" + descriptor.fullyQualifiedMethod] = (
            descriptor,
            .streaming { requests, responses, context in
                try await body(
                    RPCAsyncSequence(wrapping: requests.map { try Self.decode(Request.self, $0) }), RPCWriter(wrapping: EncodingWriter(responses)),
                    context)
            }
        )
    }

    mutating func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor, _ body: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        methods["/" + descriptor.fullyQualifiedMethod] = (
            descriptor,
            .streaming { requests, responses, context in
                var iterator = requests.makeAsyncIterator()
                guard let first = try await iterator.next() else {
                    throw RPCError(code: .invalidArgument, message: "\(descriptor.fullyQualifiedMethod) takes one request; none came")
                }
                guard try await iterator.next() == nil else {
                    throw RPCError(code: .invalidArgument, message: "\(descriptor.fullyQualifiedMethod) takes one request; more came")
                }
                try await body(Self.decode(Request.self, first), RPCWriter(wrapping: EncodingWriter(responses)), context)
            }
        )
    }
}

/// Encodes each message it is given and passes the bytes on.
struct EncodingWriter<Message: SwiftProtobuf.Message>: RPCWriterProtocol {
    let bytes: RPCWriter<[UInt8]>

    init(_ bytes: RPCWriter<[UInt8]>) { self.bytes = bytes }

    func write(_ element: Message) async throws { try await bytes.write(element.serializedBytes()) }

    func write(contentsOf elements: some Sequence<Message>) async throws {
        for element in elements { try await write(element) }
    }
}

extension GRPCMethodTable {
    /// etcd's KV, Watch, Lease, Cluster, Maintenance and Auth services over `gateway`.
    static func etcd(gateway: EtcdGateway, progressIntervalMs: Int) -> GRPCMethodTable {
        var table = GRPCMethodTable()
        let kv = EtcdKVService(gateway: gateway)
        table.unary(Etcdserverpb_KV.Method.Range.descriptor, kv.range(request:context:))
        table.unary(Etcdserverpb_KV.Method.Put.descriptor, kv.put(request:context:))
        table.unary(Etcdserverpb_KV.Method.DeleteRange.descriptor, kv.deleteRange(request:context:))
        table.unary(Etcdserverpb_KV.Method.Txn.descriptor, kv.txn(request:context:))
        table.unary(Etcdserverpb_KV.Method.Compact.descriptor, kv.compact(request:context:))

        let watch = EtcdWatchService(gateway: gateway, progressIntervalMs: progressIntervalMs)
        table.bidirectional(Etcdserverpb_Watch.Method.Watch.descriptor, watch.watch(request:response:context:))

        let lease = EtcdLeaseService(gateway: gateway)
        table.unary(Etcdserverpb_Lease.Method.LeaseGrant.descriptor, lease.leaseGrant(request:context:))
        table.unary(Etcdserverpb_Lease.Method.LeaseRevoke.descriptor, lease.leaseRevoke(request:context:))
        table.bidirectional(Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor, lease.leaseKeepAlive(request:response:context:))
        table.unary(Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor, lease.leaseTimeToLive(request:context:))
        table.unary(Etcdserverpb_Lease.Method.LeaseLeases.descriptor, lease.leaseLeases(request:context:))

        let cluster = EtcdClusterService(gateway: gateway)
        table.unary(Etcdserverpb_Cluster.Method.MemberAdd.descriptor, cluster.memberAdd(request:context:))
        table.unary(Etcdserverpb_Cluster.Method.MemberRemove.descriptor, cluster.memberRemove(request:context:))
        table.unary(Etcdserverpb_Cluster.Method.MemberUpdate.descriptor, cluster.memberUpdate(request:context:))
        table.unary(Etcdserverpb_Cluster.Method.MemberList.descriptor, cluster.memberList(request:context:))
        table.unary(Etcdserverpb_Cluster.Method.MemberPromote.descriptor, cluster.memberPromote(request:context:))

        let maintenance = EtcdMaintenanceService(gateway: gateway)
        table.unary(Etcdserverpb_Maintenance.Method.Alarm.descriptor, maintenance.alarm(request:context:))
        table.unary(Etcdserverpb_Maintenance.Method.Status.descriptor, maintenance.status(request:context:))
        table.unary(Etcdserverpb_Maintenance.Method.Defragment.descriptor, maintenance.defragment(request:context:))
        table.unary(Etcdserverpb_Maintenance.Method.Hash.descriptor, maintenance.hash(request:context:))
        table.unary(Etcdserverpb_Maintenance.Method.HashKV.descriptor, maintenance.hashKV(request:context:))
        table.serverStreaming(Etcdserverpb_Maintenance.Method.Snapshot.descriptor, maintenance.snapshot(request:response:context:))
        table.unary(Etcdserverpb_Maintenance.Method.MoveLeader.descriptor, maintenance.moveLeader(request:context:))

        let auth = EtcdAuthService(gateway: gateway)
        table.unary(Etcdserverpb_Auth.Method.Authenticate.descriptor, auth.authenticate(request:context:))
        table.unary(Etcdserverpb_Auth.Method.AuthStatus.descriptor, auth.authStatus(request:context:))
        table.unary(Etcdserverpb_Auth.Method.AuthEnable.descriptor, auth.authEnable(request:context:))
        table.unary(Etcdserverpb_Auth.Method.AuthDisable.descriptor, auth.authDisable(request:context:))
        return table
    }
}
