import AspenAuth
import AspenCore
import AspenKV
import AspenNode
import Foundation
import GRPCCore

/// etcd's `Lease` service. TTLs are seconds on etcd's wire and milliseconds in Aspen.
struct EtcdLeaseService: Etcdserverpb_Lease.SimpleServiceProtocol {
    let gateway: EtcdGateway

    func leaseGrant(request: Etcdserverpb_LeaseGrantRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseGrantResponse {
        guard request.ttl > 0 else { throw RPCError(code: .outOfRange, message: "etcdserver: too small lease TTL (\(request.ttl) s)") }
        let result = try await gateway.write(.leaseGrant(id: request.id, ttlMs: request.ttl * 1000))
        guard case .leaseGranted(let lease) = result else { throw RPCError(code: .internalError, message: "unexpected result \(result)") }
        var response = Etcdserverpb_LeaseGrantResponse()
        response.header = await gateway.header()
        response.id = lease.id
        response.ttl = lease.ttlMs / 1000
        return response
    }

    func leaseRevoke(request: Etcdserverpb_LeaseRevokeRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseRevokeResponse {
        let result = try await gateway.write(.leaseRevoke(request.id))
        var response = Etcdserverpb_LeaseRevokeResponse()
        if case .leaseRevoked(_, _, let revision) = result { response.header = await gateway.header(revision: revision) }
        return response
    }

    func leaseKeepAlive(
        request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>, response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>,
        context: ServerContext
    ) async throws {
        for try await keepAlive in request {
            var answer = Etcdserverpb_LeaseKeepAliveResponse()
            answer.id = keepAlive.id
            do {
                if case .leaseKeptAlive(let lease) = try await gateway.write(.leaseKeepAlive(keepAlive.id)) { answer.ttl = lease.ttlMs / 1000 }
            } catch let error as RPCError where error.code == .notFound {
                // etcd answers a keep-alive of a lease that is gone with TTL 0.
                answer.ttl = 0
            }
            answer.header = await gateway.header()
            try await response.write(answer)
        }
    }

    func leaseTimeToLive(request: Etcdserverpb_LeaseTimeToLiveRequest, context: ServerContext) async throws
        -> Etcdserverpb_LeaseTimeToLiveResponse
    {
        try gateway.authorize(
            RequestRequirements.leaseStatus(keys: request.keys ? try gateway.node.keysAttached(toLease: request.id) : []), "LeaseTimeToLive")
        var response = Etcdserverpb_LeaseTimeToLiveResponse()
        response.id = request.id
        do {
            let status = try await gateway.translatingErrors {
                try await gateway.onLeader(
                    { try await gateway.node.leaseStatus(request.id, withKeys: request.keys) },
                    remote: { try await $0.leaseStatus(request.id, withKeys: request.keys) })
            }
            response.ttl = (status.remainingMs + 999) / 1000
            response.grantedTtl = status.lease.ttlMs / 1000
            response.keys = status.keys.map { Data($0) }
        } catch let error as RPCError where error.code == .notFound {
            // etcd reports a lease that is gone with TTL -1.
            response.ttl = -1
        }
        response.header = await gateway.header()
        return response
    }

    func leaseLeases(request: Etcdserverpb_LeaseLeasesRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseLeasesResponse {
        try gateway.authorize(.lease, "LeaseLeases")
        let leases = try await gateway.translatingErrors {
            try await gateway.onLeader({ try await gateway.node.leases() }, remote: { try await $0.leases() })
        }
        var response = Etcdserverpb_LeaseLeasesResponse()
        response.header = await gateway.header()
        response.leases = leases.map { lease in
            var status = Etcdserverpb_LeaseStatus()
            status.id = lease.id
            return status
        }
        return response
    }
}
