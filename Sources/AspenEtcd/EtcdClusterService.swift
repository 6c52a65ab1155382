import AspenAuth
import AspenCore
import AspenNode
import AspenRaft
import AspenTransport
import Foundation
import GRPCCore

/// etcd's `Cluster` service over Aspen's membership. A member's peer URL is
/// `aspen://KEYHEX@HOST:PORT` (its key and Aspen address); its client URL is its etcd endpoint.
struct EtcdClusterService: Etcdserverpb_Cluster.SimpleServiceProtocol {
    let gateway: EtcdGateway

    func members() async -> [Etcdserverpb_Member] {
        let members = ClusterMembers(await gateway.node.membership)
        return (members.voters + members.learners).sorted().map { id in
            var member = Etcdserverpb_Member()
            member.id = id.rawValue
            member.name = "aspen-\(id.rawValue)"
            member.isLearner = members.learners.contains(id)
            if let record = members.records[id] {
                member.peerUrls = ["aspen://\(record.key.hex)@\(record.address)"]
                if let etcd = record.etcdAddress { member.clientUrls = ["http://\(etcd)"] }
            }
            return member
        }
    }

    func memberList(request: Etcdserverpb_MemberListRequest, context: ServerContext) async throws -> Etcdserverpb_MemberListResponse {
        var response = Etcdserverpb_MemberListResponse()
        response.header = await gateway.header()
        response.members = await members()
        return response
    }

    func memberAdd(request: Etcdserverpb_MemberAddRequest, context: ServerContext) async throws -> Etcdserverpb_MemberAddResponse {
        try gateway.authorizeAdministrative(context, "member add")
        guard let url = request.peerUrls.first, request.peerUrls.count == 1 else {
            throw RPCError(
                code: .invalidArgument,
                message: "give exactly one peer URL: https://KEYHEX@HOST:PORT (the node's key from `aspen-node key`, its Aspen address)")
        }
        // etcdctl accepts only http and https URLs: the key rides as the URL's user.
        var text = Substring(url)
        for scheme in ["aspen://", "https://", "http://"] where text.hasPrefix(scheme) { text = text.dropFirst(scheme.count) }
        guard let at = text.firstIndex(of: "@"), let key = NodeKey(hex: String(text[..<at])),
            let (host, port) = try? PeerList.parseAddress(String(text[text.index(after: at)...]))
        else {
            throw RPCError(code: .invalidArgument, message: "peer URL \(url) is not https://KEYHEX@HOST:PORT")
        }
        let membership = await gateway.node.membership
        let id = NodeID((membership.allMembers.map(\.rawValue).max() ?? 0) + 1)
        let record = MemberRecord(key: key, host: host, port: port, clusterID: await gateway.clusterIDSource())
        // Always a learner, with or without --learner: a voter added before it has caught up
        // (or before it even runs) counts toward every quorum at once. `etcdctl member promote`
        // makes it a voter once it has the log.
        try await gateway.translatingErrors {
            try await gateway.onLeader(
                { try await gateway.node.addMember(id, record: record.encoded, voter: false) },
                remote: { try await $0.addMember(id, record: record, voter: false, waitForCatchUp: false) })
        }
        var response = Etcdserverpb_MemberAddResponse()
        response.header = await gateway.header()
        response.members = await members()
        response.member = response.members.first { $0.id == id.rawValue } ?? Etcdserverpb_Member()
        return response
    }

    func memberRemove(request: Etcdserverpb_MemberRemoveRequest, context: ServerContext) async throws -> Etcdserverpb_MemberRemoveResponse {
        try gateway.authorizeAdministrative(context, "member remove")
        let id = NodeID(request.id)
        guard await gateway.node.membership.isMember(id) else {
            throw RPCError(code: .notFound, message: "etcdserver: member not found")
        }
        try await gateway.translatingErrors {
            try await gateway.onLeader(
                { try await gateway.node.changeMembership([.remove(id)]) }, remote: { try await $0.removeMember(id) })
        }
        var response = Etcdserverpb_MemberRemoveResponse()
        response.header = await gateway.header()
        response.members = await members()
        return response
    }

    func memberUpdate(request: Etcdserverpb_MemberUpdateRequest, context: ServerContext) async throws -> Etcdserverpb_MemberUpdateResponse {
        try gateway.authorize(.clusterAdmin, "MemberUpdate")
        throw EtcdGateway.unsupported("MemberUpdate (a member records its own address when it restarts)")
    }

    func memberPromote(request: Etcdserverpb_MemberPromoteRequest, context: ServerContext) async throws -> Etcdserverpb_MemberPromoteResponse {
        try gateway.authorizeAdministrative(context, "member promote")
        let id = NodeID(request.id)
        guard await gateway.node.membership.isMember(id) else {
            throw RPCError(code: .notFound, message: "etcdserver: member not found")
        }
        try await gateway.translatingErrors {
            try await gateway.onLeader({ try await gateway.node.promote(id) }, remote: { try await $0.promote(id) })
        }
        var response = Etcdserverpb_MemberPromoteResponse()
        response.header = await gateway.header()
        response.members = await members()
        return response
    }
}
