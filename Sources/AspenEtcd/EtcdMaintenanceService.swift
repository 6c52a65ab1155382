import AspenAuth
import AspenCore
import AspenNode
import Foundation
import GRPCCore

/// etcd's `Maintenance` service: Status, the alarm list, MoveLeader, Defragment, Hash and
/// HashKV; Snapshot is refused explicitly.
struct EtcdMaintenanceService: Etcdserverpb_Maintenance.SimpleServiceProtocol {
    let gateway: EtcdGateway
    /// Reported as the server version (etcd's API level that Aspen serves).
    static let version = "3.4.0"

    func status(request: Etcdserverpb_StatusRequest, context: ServerContext) async throws -> Etcdserverpb_StatusResponse {
        let status = await gateway.node.status
        var response = Etcdserverpb_StatusResponse()
        response.header = await gateway.header()
        response.version = Self.version
        response.leader = status.leader?.rawValue ?? 0
        response.raftIndex = status.commitIndex
        response.raftTerm = status.term
        response.raftAppliedIndex = status.appliedIndex
        response.isLearner = status.membership.learners.contains(gateway.node.id)
        if let path = gateway.databasePath {
            let size = NodeDatabase.fileBytes(at: path)
            response.dbSize = size
            response.dbSizeInUse = size
        }
        if status.leader == nil { response.errors = ["etcdserver: no leader"] }
        return response
    }

    func alarm(request: Etcdserverpb_AlarmRequest, context: ServerContext) async throws -> Etcdserverpb_AlarmResponse {
        guard request.action == .get else { throw EtcdGateway.unsupported("activating or deactivating alarms") }
        // Aspen raises no alarms: a full disk fails writes with an error instead.
        var response = Etcdserverpb_AlarmResponse()
        response.header = await gateway.header()
        return response
    }

    func moveLeader(request: Etcdserverpb_MoveLeaderRequest, context: ServerContext) async throws -> Etcdserverpb_MoveLeaderResponse {
        try gateway.authorizeAdministrative(context, "move-leader")
        let target = NodeID(request.targetID)
        try await gateway.translatingErrors {
            try await gateway.onLeader(
                { try await gateway.node.transferLeadership(to: target) }, remote: { try await $0.transferLeadership(to: target) })
        }
        var response = Etcdserverpb_MoveLeaderResponse()
        response.header = await gateway.header()
        return response
    }

    /// Rewrites this member's database without its free pages (SQLite's VACUUM); this member's
    /// writes wait meanwhile, as they do in etcd.
    func defragment(request: Etcdserverpb_DefragmentRequest, context: ServerContext) async throws -> Etcdserverpb_DefragmentResponse {
        try gateway.authorizeAdministrative(context, "defragment")
        _ = try await gateway.translatingErrors { try await gateway.node.defragment() }
        var response = Etcdserverpb_DefragmentResponse()
        response.header = await gateway.header()
        return response
    }

    /// The checksum of this member's whole key-value state (live keys and recorded history).
    func hash(request: Etcdserverpb_HashRequest, context: ServerContext) async throws -> Etcdserverpb_HashResponse {
        try gateway.authorize(.clusterAdmin, "Hash")
        let state = try await gateway.translatingErrors { try await gateway.node.stateHash(at: 0) }
        var response = Etcdserverpb_HashResponse()
        response.header = await gateway.header(revision: state.revision)
        response.hash = state.hash
        return response
    }

    /// The checksum of the key-value state as of a revision (0: the current one): members that
    /// applied the same log agree on it (`etcdctl endpoint hashkv --cluster` compares them).
    func hashKV(request: Etcdserverpb_HashKVRequest, context: ServerContext) async throws -> Etcdserverpb_HashKVResponse {
        try gateway.authorize(.clusterAdmin, "HashKV")
        let state = try await gateway.translatingErrors { try await gateway.node.stateHash(at: request.revision) }
        var response = Etcdserverpb_HashKVResponse()
        response.header = await gateway.header(revision: state.revision)
        response.hash = state.hash
        response.compactRevision = state.compactedRevision
        return response
    }

    func snapshot(
        request: Etcdserverpb_SnapshotRequest, response: RPCWriter<Etcdserverpb_SnapshotResponse>, context: ServerContext
    ) async throws {
        try gateway.authorize(.clusterAdmin, "Snapshot")
        throw EtcdGateway.unsupported("Snapshot (use `aspen cluster snapshot`)")
    }
}
