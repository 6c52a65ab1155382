import AspenTransport
import GRPCCore
import NIOCore
import SwiftProtobuf

/// The endpoint's input handling without a node, for the fuzz targets (`AspenFuzz`): the same
/// connection handler and the same request decoding (`GRPCMethodTable.decode`), over methods
/// that only decode their requests. Package-only; nothing here serves a real call.
package enum GRPCEndpointFuzzing {
    /// Receives each request a method decoded, with the method's path.
    package typealias Sink = @Sendable (_ path: String, _ request: any SwiftProtobuf.Message) -> Void

    /// One method of `GRPCMethodTable.etcd`: its path, whether it streams, how it is registered.
    package struct Method: Sendable {
        package let path: String
        package let isStreaming: Bool
        let decode: @Sendable ([UInt8]) throws -> any SwiftProtobuf.Message
        let register: @Sendable (inout GRPCMethodTable, @escaping Sink) -> Void
    }

    /// Every method `GRPCMethodTable.etcd` serves, in its order, with the same request types
    /// and the same kind of call. Keep in step with `GRPCMethodTable.etcd`.
    package static let methods: [Method] = [
        unary(Etcdserverpb_KV.Method.Range.descriptor, Etcdserverpb_RangeRequest.self, Etcdserverpb_RangeResponse.self),
        unary(Etcdserverpb_KV.Method.Put.descriptor, Etcdserverpb_PutRequest.self, Etcdserverpb_PutResponse.self),
        unary(Etcdserverpb_KV.Method.DeleteRange.descriptor, Etcdserverpb_DeleteRangeRequest.self, Etcdserverpb_DeleteRangeResponse.self),
        unary(Etcdserverpb_KV.Method.Txn.descriptor, Etcdserverpb_TxnRequest.self, Etcdserverpb_TxnResponse.self),
        unary(Etcdserverpb_KV.Method.Compact.descriptor, Etcdserverpb_CompactionRequest.self, Etcdserverpb_CompactionResponse.self),
        bidirectional(Etcdserverpb_Watch.Method.Watch.descriptor, Etcdserverpb_WatchRequest.self, Etcdserverpb_WatchResponse.self),
        unary(Etcdserverpb_Lease.Method.LeaseGrant.descriptor, Etcdserverpb_LeaseGrantRequest.self, Etcdserverpb_LeaseGrantResponse.self),
        unary(Etcdserverpb_Lease.Method.LeaseRevoke.descriptor, Etcdserverpb_LeaseRevokeRequest.self, Etcdserverpb_LeaseRevokeResponse.self),
        bidirectional(
            Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor, Etcdserverpb_LeaseKeepAliveRequest.self, Etcdserverpb_LeaseKeepAliveResponse.self),
        unary(
            Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor, Etcdserverpb_LeaseTimeToLiveRequest.self,
            Etcdserverpb_LeaseTimeToLiveResponse.self),
        unary(Etcdserverpb_Lease.Method.LeaseLeases.descriptor, Etcdserverpb_LeaseLeasesRequest.self, Etcdserverpb_LeaseLeasesResponse.self),
        unary(Etcdserverpb_Cluster.Method.MemberAdd.descriptor, Etcdserverpb_MemberAddRequest.self, Etcdserverpb_MemberAddResponse.self),
        unary(Etcdserverpb_Cluster.Method.MemberRemove.descriptor, Etcdserverpb_MemberRemoveRequest.self, Etcdserverpb_MemberRemoveResponse.self),
        unary(Etcdserverpb_Cluster.Method.MemberUpdate.descriptor, Etcdserverpb_MemberUpdateRequest.self, Etcdserverpb_MemberUpdateResponse.self),
        unary(Etcdserverpb_Cluster.Method.MemberList.descriptor, Etcdserverpb_MemberListRequest.self, Etcdserverpb_MemberListResponse.self),
        unary(
            Etcdserverpb_Cluster.Method.MemberPromote.descriptor, Etcdserverpb_MemberPromoteRequest.self, Etcdserverpb_MemberPromoteResponse.self),
        unary(Etcdserverpb_Maintenance.Method.Alarm.descriptor, Etcdserverpb_AlarmRequest.self, Etcdserverpb_AlarmResponse.self),
        unary(Etcdserverpb_Maintenance.Method.Status.descriptor, Etcdserverpb_StatusRequest.self, Etcdserverpb_StatusResponse.self),
        unary(Etcdserverpb_Maintenance.Method.Defragment.descriptor, Etcdserverpb_DefragmentRequest.self, Etcdserverpb_DefragmentResponse.self),
        unary(Etcdserverpb_Maintenance.Method.Hash.descriptor, Etcdserverpb_HashRequest.self, Etcdserverpb_HashResponse.self),
        unary(Etcdserverpb_Maintenance.Method.HashKV.descriptor, Etcdserverpb_HashKVRequest.self, Etcdserverpb_HashKVResponse.self),
        serverStreaming(Etcdserverpb_Maintenance.Method.Snapshot.descriptor, Etcdserverpb_SnapshotRequest.self, Etcdserverpb_SnapshotResponse.self),
        unary(Etcdserverpb_Maintenance.Method.MoveLeader.descriptor, Etcdserverpb_MoveLeaderRequest.self, Etcdserverpb_MoveLeaderResponse.self),
    ]

    /// Decodes `bytes` as `method`'s request, exactly as the endpoint does.
    package static func decodeRequest(_ method: Method, _ bytes: [UInt8]) throws -> any SwiftProtobuf.Message {
        try method.decode(bytes)
    }

    /// The connection handler that follows `NIOHTTP2Handler` in the endpoint's pipeline, serving
    /// `methods` by handing each decoded request to `sink` and answering with an empty response.
    package static func connectionHandler(executor: EventLoopExecutor, sink: @escaping Sink) -> any ChannelInboundHandler {
        var table = GRPCMethodTable()
        for method in methods { method.register(&table, sink) }
        return GRPCConnectionHandler(methods: table, executor: executor, logger: .init(label: "aspen.fuzz.etcd"))
    }

    private static func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor, _: Request.Type, _: Response.Type
    ) -> Method {
        let path = "/" + descriptor.fullyQualifiedMethod
        return Method(path: path, isStreaming: false, decode: { try GRPCMethodTable.decode(Request.self, $0) }) { table, sink in
            table.unary(descriptor) { (request: Request, _) -> Response in
                sink(path, request)
                return Response()
            }
        }
    }

    private static func bidirectional<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor, _: Request.Type, _: Response.Type
    ) -> Method {
        let path = "/" + descriptor.fullyQualifiedMethod
        return Method(path: path, isStreaming: true, decode: { try GRPCMethodTable.decode(Request.self, $0) }) { table, sink in
            table.bidirectional(descriptor) { (requests: RPCAsyncSequence<Request, any Error>, _: RPCWriter<Response>, _) in
                for try await request in requests { sink(path, request) }
            }
        }
    }

    private static func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor, _: Request.Type, _: Response.Type
    ) -> Method {
        let path = "/" + descriptor.fullyQualifiedMethod
        return Method(path: path, isStreaming: true, decode: { try GRPCMethodTable.decode(Request.self, $0) }) { table, sink in
            table.serverStreaming(descriptor) { (request: Request, _: RPCWriter<Response>, _) in sink(path, request) }
        }
    }
}
