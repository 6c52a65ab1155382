import AspenCore
import AspenKV
import AspenRaft
import AspenTransport

extension ClientService {
    /// `cluster.*`: status, members, founding, membership changes, leadership transfer, state
    /// hashes and defragmentation.
    func handleCluster(_ operation: ClusterOperation, _ body: [UInt8], caller: TransportCaller) async throws -> [UInt8] {
        var reader = ByteReader(body)
        switch operation {
        case .status:
            let status = await node.status
            var info = NodeStatusInfo(
                id: status.id.rawValue, role: status.role.rawValue, term: status.term, leader: status.leader?.rawValue,
                commitIndex: status.commitIndex, appliedIndex: status.appliedIndex, lastIndex: status.lastIndex,
                voters: status.membership.allVoters.map(\.rawValue), learners: status.membership.learners.map(\.rawValue))
            info.snapshotIndex = status.snapshotIndex
            return NodeStatusWire.encode(info)
        case .members:
            return Self.members(await node.membership).encoded
        case .metrics:
            // The same text as the admin endpoint's /metrics, from whichever node answers.
            let text = AdminServer.metrics(
                await node.status, await node.counters, requests: metrics, watchers: node.watches.watcherCount, authDenials: auth?.denials ?? 0)
            return Array(text.utf8)
        case .snapshot:
            let (index, term, bytes) = try await node.snapshotNow()
            var writer = ByteWriter()
            writer.writeVarint(index)
            writer.writeVarint(term)
            writer.writeVarint(UInt64(bytes))
            return writer.bytes
        case .hash:
            let revision = try reader.readSignedVarint()
            try reader.expectEnd()
            let state = try await node.stateHash(at: revision)
            var writer = ByteWriter()
            writer.writeVarint(UInt64(state.hash))
            writer.writeVarint(signed: state.revision)
            writer.writeVarint(signed: state.compactedRevision)
            return writer.bytes
        case .defragment:
            let sizes = try await node.defragment() ?? (0, 0)
            var writer = ByteWriter()
            writer.writeVarint(signed: sizes.before)
            writer.writeVarint(signed: sizes.after)
            return writer.bytes
        case .transferLeader:
            try await node.transferLeadership(to: NodeID(try reader.readVarint()))
            return []
        case .initialize:
            return try await node.initialize()
        case .adopt:
            // A node that has not joined yet learns where the cluster's members are, so that it
            // accepts and answers their Raft traffic once it is added.
            let members = try ClusterMembers(decoding: body, limits: limits)
            guard await node.membership.isEmpty else { throw NodeError.refused("this node is already a member of a cluster") }
            guard let network else { throw NodeError.refused("this node cannot join a cluster") }
            try keepAdopted?(body)
            network.addGiven(members.records.mapValues { PeerAddress(host: $0.host, port: $0.port, key: $0.key) })
            return []
        case .addMember:
            let member = NodeID(try reader.readVarint())
            let record = try MemberRecord(decoding: try reader.readBytes(limit: Raft.Membership.addressBytesMax))
            let voter = try reader.readBool()
            // A voter added at once (etcd's MemberAdd) does not wait for the node to catch up.
            let immediately = reader.isAtEnd ? false : try reader.readBool()
            try reader.expectEnd()
            guard member.rawValue > 0 else { throw NodeError.refused("node id 0 is not valid") }
            let members = await node.membership
            if let taken = members.addresses.first(where: { (try? MemberRecord(decoding: $0.value))?.key == record.key && $0.key != member }) {
                throw NodeError.refused("that key already belongs to member \(taken.key)")
            }
            if immediately && voter {
                try await node.addVoterNow(member, record: record.encoded)
            } else {
                try await node.addMember(member, record: record.encoded, voter: voter)
            }
            return Self.members(await node.membership).encoded
        case .promote:
            try await node.promote(NodeID(try reader.readVarint()))
            return Self.members(await node.membership).encoded
        case .remove:
            let member = NodeID(try reader.readVarint())
            guard await node.membership.isMember(member) else { throw NodeError.refused("\(member) is not a member") }
            try await node.changeMembership([.remove(member)])
            return Self.members(await node.membership).encoded
        case .setVoters:
            var voters: [NodeID] = []
            for _ in 0..<(try reader.readCount(limit: limits.raftMembersMax)) { voters.append(NodeID(try reader.readVarint())) }
            try await node.setVoters(voters)
            return Self.members(await node.membership).encoded
        case .authStatus, .authRoots, .authRevoke, .authRequire:
            return try await handleAuth(operation, body)
        }
    }

    static func members(_ membership: Raft.Membership) -> ClusterMembers { ClusterMembers(membership) }
}

extension ClusterMembers {
    /// The members of a Raft membership with their decoded records.
    public init(_ membership: Raft.Membership) {
        self.init(
            voters: membership.allVoters, learners: membership.learners + membership.learnersNext,
            records: membership.addresses.compactMapValues { try? MemberRecord(decoding: $0) })
    }
}
