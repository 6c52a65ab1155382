import AspenCore
import AspenRaft
import AspenTransport

extension RaftNode {
    /// The member records this node vouches for (its own, and for founders the given peers').
    public func setLocalRecords(_ records: [NodeID: [UInt8]]) { localRecords = records }

    public var membership: Raft.Membership { raft.membership }

    /// The leader records addresses the membership lacks, and this node's own when it changed
    /// (a restart on a new address). One change at a time, when no other is under way.
    func publishRecordsIfDue() {
        guard raft.isLeader, raft.commitIndex >= recordProposalIndex, !raft.membership.isJoint else { return }
        let membership = raft.membership
        let changes: [Raft.MembershipChange] = localRecords.keys.sorted().compactMap { member in
            guard membership.isMember(member), var record = localRecords[member] else { return nil }
            guard let current = membership.addresses[member] else { return .setAddress(member, record) }
            guard member == id else { return nil }
            // The cluster id is the cluster's, as recorded; only this node's address is its own.
            if let recorded = try? MemberRecord(decoding: current), var mine = try? MemberRecord(decoding: record) {
                mine.clusterID = recorded.clusterID
                record = mine.encoded
            }
            return current == record ? nil : .setAddress(member, record)
        }
        guard !changes.isEmpty, let receipt = try? raft.proposeMembership(changes) else { return }
        recordProposalIndex = receipt.indexes.upperBound
        logger.info("recording member addresses", metadata: ["members": "\(changes.count)", "term": "\(raft.term)"])
    }

    /// Founds a one-member cluster on a node that has never been part of one (`aspen cluster init`),
    /// recording this node's own record under the new cluster's id; returns that id.
    @discardableResult
    public func initialize() throws -> [UInt8] {
        guard raft.membership.isEmpty else { throw NodeError.refused("this node is already a member of a cluster") }
        guard raft.term == 0, raft.lastIndex == 0, !committing else {
            throw NodeError.refused("this node has already heard from a cluster; it cannot found a new one")
        }
        guard let own = localRecords[id], var record = try? MemberRecord(decoding: own) else {
            throw NodeError.refused("this node cannot found a cluster (it has no address)")
        }
        record.clusterID = MemberRecord.foundingClusterID([(id, record.key)])
        let state = Raft.PersistentState.bootstrap(Raft.Membership(voters: [id], addresses: [id: record.encoded]))
        try storage.bootstrap(state)
        raft = Raft.Instance(config: Self.raftConfig(configuration, nowMs: nowMs), state: state)
        logger.info("founded a new cluster", metadata: ["term": "0"])
        noteMembershipChange()
        raft.campaign()
        pump()
        return record.clusterID
    }

    /// Proposes a membership change and returns once it is in force (joint consensus left, when
    /// the voters changed). A change already under way is waited for, up to a bound.
    @discardableResult
    public func changeMembership(_ changes: [Raft.MembershipChange], timeoutMs: Int = 10_000) async throws -> Raft.Membership {
        let deadline = nowMs() + Int64(timeoutMs)
        var receipt: Raft.ProposalReceipt?
        while receipt == nil {
            do {
                receipt = try raft.proposeMembership(changes)
            } catch .membershipChangeInProgress where nowMs() < deadline {
                try await Task.sleep(for: .milliseconds(configuration.tickMs))
            } catch .notLeader(let hint) {
                throw NodeError.notLeader(leaderHint: hint)
            } catch {
                throw NodeError.refused(error.description)
            }
        }
        pump()
        let index = receipt!.indexes.upperBound
        await waitUntilApplied(index)
        guard raft.term(at: index) == receipt!.term || raft.snapshotMetadata.index >= index else { throw NodeError.proposalLost }
        while raft.membership.isJoint {
            guard nowMs() < deadline else { throw NodeError.refused("the cluster did not leave the joint configuration in time") }
            try await Task.sleep(for: .milliseconds(configuration.tickMs))
        }
        return raft.membership
    }

    /// Adds a member as a learner with its record; as a voter too once it has caught up, unless
    /// `voter` is false. Adding a node that is already a member with the same record succeeds.
    public func addMember(_ member: NodeID, record: [UInt8], voter: Bool, catchUpTimeoutMs: Int = 60_000) async throws {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        if !raft.membership.isMember(member) || raft.membership.addresses[member] != record {
            var changes: [Raft.MembershipChange] = [.setAddress(member, record)]
            if !raft.membership.isMember(member) { changes.insert(.addLearner(member), at: 0) }
            try await changeMembership(changes)
            logger.info("member added as a learner", metadata: ["member": "\(member)", "term": "\(raft.term)"])
        }
        guard voter, !raft.membership.isVoter(member) else { return }
        try await waitForCatchUp(member, timeoutMs: catchUpTimeoutMs)
        try await changeMembership([.addVoter(member)])
        logger.info("member promoted to voter", metadata: ["member": "\(member)", "term": "\(raft.term)"])
    }

    /// Adds a voter at once, without waiting for it to catch up (etcd's MemberAdd): until it runs
    /// and catches up, the cluster needs a quorum among the others.
    public func addVoterNow(_ member: NodeID, record: [UInt8]) async throws {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        guard !raft.membership.isVoter(member) else { return }
        try await changeMembership([.addVoter(member), .setAddress(member, record)])
    }

    /// Promotes a learner once it holds the log up to the commit index.
    public func promote(_ member: NodeID, catchUpTimeoutMs: Int = 60_000) async throws {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        guard raft.membership.isMember(member) else { throw NodeError.refused("\(member) is not a member; add it as a learner first") }
        guard !raft.membership.isVoter(member) else { return }
        try await waitForCatchUp(member, timeoutMs: catchUpTimeoutMs)
        try await changeMembership([.addVoter(member)])
    }

    /// Sets the voters to exactly `voters`: members not named are removed, named learners promoted.
    public func setVoters(_ voters: [NodeID]) async throws {
        guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
        let membership = raft.membership
        guard !voters.isEmpty else { throw NodeError.refused("a cluster needs at least one voter") }
        if let stranger = voters.first(where: { !membership.isMember($0) }) {
            throw NodeError.refused("\(stranger) is not a member; add it as a learner first")
        }
        for learner in voters where !membership.isVoter(learner) { try await waitForCatchUp(learner, timeoutMs: 60_000) }
        var changes: [Raft.MembershipChange] = voters.filter { !membership.isVoter($0) }.map { .addVoter($0) }
        changes += membership.allVoters.filter { !voters.contains($0) }.map { .remove($0) }
        guard !changes.isEmpty else { return }
        try await changeMembership(changes)
    }

    func waitForCatchUp(_ member: NodeID, timeoutMs: Int) async throws {
        let deadline = nowMs() + Int64(timeoutMs)
        while true {
            guard raft.isLeader else { throw NodeError.notLeader(leaderHint: raft.leader) }
            if let follower = raft.followers.first(where: { $0.id == member }), follower.matchIndex >= raft.commitIndex { return }
            guard nowMs() < deadline else {
                throw NodeError.refused("\(member) did not catch up within \(timeoutMs) ms; is it running and reachable?")
            }
            try await Task.sleep(for: .milliseconds(configuration.tickMs))
        }
    }

    public func proposeMembership(_ changes: [Raft.MembershipChange]) throws {
        do {
            try raft.proposeMembership(changes)
        } catch {
            if case .notLeader(let hint) = error { throw NodeError.notLeader(leaderHint: hint) }
            throw NodeError.refused(error.description)
        }
        pump()
    }

    public func transferLeadership(to target: NodeID) throws {
        do {
            try raft.transferLeadership(to: target)
        } catch {
            if case .notLeader(let hint) = error { throw NodeError.notLeader(leaderHint: hint) }
            throw NodeError.refused(error.description)
        }
        pump()
    }
}
