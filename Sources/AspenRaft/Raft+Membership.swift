import AspenCore

extension Raft {
    /// A Raft group's configuration. In a joint configuration (`outgoingVoters` non-empty) every
    /// decision needs a majority of both `voters` (the incoming set) and `outgoingVoters`.
    /// All sets are kept sorted so that iteration order, and with it every message, is deterministic.
    public struct Membership: Sendable, Equatable, CustomStringConvertible {
        public private(set) var voters: [NodeID]
        public private(set) var outgoingVoters: [NodeID]
        public private(set) var learners: [NodeID]
        /// Voters being demoted: voters of the outgoing set that become learners when the joint
        /// configuration is left.
        public private(set) var learnersNext: [NodeID]
        /// Opaque bytes per member that Raft only carries: the shell records there where a member
        /// listens and how to authenticate it, so the address book travels with the membership
        /// (in the log and in snapshots) and always describes exactly the current members.
        public private(set) var addresses: [NodeID: [UInt8]]

        public init(voters: [NodeID] = [], learners: [NodeID] = [], addresses: [NodeID: [UInt8]] = [:]) {
            self.voters = Array(Set(voters)).sorted()
            self.learners = Array(Set(learners).subtracting(voters)).sorted()
            self.outgoingVoters = []
            self.learnersNext = []
            let members = Set(voters).union(learners)
            self.addresses = addresses.filter { members.contains($0.key) }
        }

        /// Every part given explicitly, as a decoder needs it.
        public init(
            voters: [NodeID], outgoingVoters: [NodeID], learners: [NodeID], learnersNext: [NodeID],
            addresses: [NodeID: [UInt8]] = [:]
        ) {
            self.voters = Array(Set(voters)).sorted()
            self.outgoingVoters = Array(Set(outgoingVoters)).sorted()
            self.learners = Array(Set(learners)).sorted()
            self.learnersNext = Array(Set(learnersNext)).sorted()
            self.addresses = addresses
        }

        public var isJoint: Bool { !outgoingVoters.isEmpty }
        public var isEmpty: Bool { voters.isEmpty && outgoingVoters.isEmpty && learners.isEmpty }

        /// Everyone the leader replicates to, sorted.
        public var allMembers: [NodeID] {
            Array(Set(voters).union(outgoingVoters).union(learners).union(learnersNext)).sorted()
        }

        /// Everyone whose vote counts in either half of the configuration, sorted.
        public var allVoters: [NodeID] { Array(Set(voters).union(outgoingVoters)).sorted() }

        public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) || outgoingVoters.contains(id) }
        public func isMember(_ id: NodeID) -> Bool { isVoter(id) || learners.contains(id) || learnersNext.contains(id) }

        public var description: String {
            var text = "voters=\(voters.map(\.description).joined(separator: ","))"
            if isJoint { text += " outgoing=\(outgoingVoters.map(\.description).joined(separator: ","))" }
            if !learners.isEmpty { text += " learners=\(learners.map(\.description).joined(separator: ","))" }
            if !learnersNext.isEmpty { text += " learnersNext=\(learnersNext.map(\.description).joined(separator: ","))" }
            return text
        }

        // MARK: Quorum arithmetic

        public enum VoteResult: Sendable, Equatable { case won, lost, pending }

        /// The outcome of an election given the votes received so far.
        public func voteResult(_ votes: [NodeID: Bool]) -> VoteResult {
            let incoming = Self.voteResult(voters, votes)
            guard isJoint else { return incoming }
            let outgoing = Self.voteResult(outgoingVoters, votes)
            if incoming == .lost || outgoing == .lost { return .lost }
            if incoming == .won && outgoing == .won { return .won }
            return .pending
        }

        private static func voteResult(_ set: [NodeID], _ votes: [NodeID: Bool]) -> VoteResult {
            if set.isEmpty { return .won }
            var granted = 0
            var rejected = 0
            for id in set {
                switch votes[id] {
                case true?: granted += 1
                case false?: rejected += 1
                case nil: break
                }
            }
            let quorum = set.count / 2 + 1
            if granted >= quorum { return .won }
            if set.count - rejected < quorum { return .lost }
            return .pending
        }

        /// The largest index that a quorum (of both halves, when joint) has acknowledged.
        public func committedIndex(_ acknowledged: (NodeID) -> Index) -> Index {
            let incoming = Self.committedIndex(voters, acknowledged)
            guard isJoint else { return incoming }
            return min(incoming, Self.committedIndex(outgoingVoters, acknowledged))
        }

        private static func committedIndex(_ set: [NodeID], _ acknowledged: (NodeID) -> Index) -> Index {
            if set.isEmpty { return .max }
            var values = set.map(acknowledged)
            values.sort(by: >)
            return values[set.count / 2]
        }

        /// True if the ids satisfying `isActive` form a quorum (of both halves, when joint).
        public func hasQuorum(_ isActive: (NodeID) -> Bool) -> Bool {
            func quorum(_ set: [NodeID]) -> Bool {
                set.isEmpty || set.filter(isActive).count >= set.count / 2 + 1
            }
            return quorum(voters) && (!isJoint || quorum(outgoingVoters))
        }

        // MARK: Changes

        /// Applies the requested changes and returns the configuration to propose: a joint
        /// configuration when the voter set changes, the simple new configuration otherwise.
        func proposing(_ changes: [MembershipChange], membersMax: Int) throws(ProposalError) -> Membership {
            guard !isJoint else { throw .membershipChangeInProgress }
            guard !changes.isEmpty else { throw .invalidMembership("no change requested") }
            var newVoters = Set(voters)
            var newLearners = Set(learners)
            var newAddresses = addresses
            for change in changes {
                switch change {
                case .addVoter(let id):
                    newLearners.remove(id)
                    newVoters.insert(id)
                case .addLearner(let id):
                    newVoters.remove(id)
                    newLearners.insert(id)
                case .remove(let id):
                    guard newVoters.contains(id) || newLearners.contains(id) else {
                        throw .invalidMembership("\(id) is not a member")
                    }
                    newVoters.remove(id)
                    newLearners.remove(id)
                case .setAddress(let id, let address):
                    guard address.count <= Self.addressBytesMax else {
                        throw .invalidMembership("the address of \(id) exceeds \(Self.addressBytesMax) bytes")
                    }
                    newAddresses[id] = address
                }
            }
            newAddresses = newAddresses.filter { newVoters.contains($0.key) || newLearners.contains($0.key) }
            for case .setAddress(let id, _) in changes where newAddresses[id] == nil {
                throw .invalidMembership("\(id) is given an address but is not a member")
            }
            guard !newVoters.isEmpty else { throw .invalidMembership("the change would leave no voters") }
            guard newVoters.count + newLearners.count <= membersMax else {
                throw .invalidMembership("more than raftMembersMax (\(membersMax)) members")
            }
            let oldVoters = Set(voters)
            var next = Membership(voters: Array(newVoters), learners: [])
            next.addresses = newAddresses
            if newVoters == oldVoters {
                next.learners = Array(newLearners).sorted()
                if next == self { throw .invalidMembership("the change does not alter the membership") }
                return next
            }
            next.outgoingVoters = voters
            // A demoted voter stays a voter of the outgoing half until the joint configuration is left.
            let demoted = newLearners.intersection(oldVoters)
            next.learners = Array(newLearners.subtracting(demoted)).sorted()
            next.learnersNext = Array(demoted).sorted()
            // Members leaving keep their address until the joint configuration is left.
            for id in next.allMembers where next.addresses[id] == nil { next.addresses[id] = addresses[id] }
            return next
        }

        /// The bound on one member's address bytes.
        public static let addressBytesMax = 1024

        /// The configuration that ends a joint configuration.
        func leavingJoint() -> Membership {
            var next = self
            next.outgoingVoters = []
            next.learners = Array(Set(learners).union(learnersNext)).sorted()
            next.learnersNext = []
            next.addresses = addresses.filter { next.isMember($0.key) }
            return next
        }
    }

    /// One requested change of membership. Promote a learner with `addVoter`, demote a voter with
    /// `addLearner`.
    public enum MembershipChange: Sendable, Equatable {
        case addVoter(NodeID)
        case addLearner(NodeID)
        case remove(NodeID)
        /// Records the member's opaque address bytes (see `Membership.addresses`).
        case setAddress(NodeID, [UInt8])
    }
}
