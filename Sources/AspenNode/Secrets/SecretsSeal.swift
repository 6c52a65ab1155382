import AspenCore
import AspenKV
import AspenRaft
import AspenSecrets
import Logging
import Synchronization

/// The cluster secret behind the data key, split by Shamir's scheme among the voters (DESIGN
/// §16, docs/secrets.md). A node holds the secret in memory only: it recovers it by opening its
/// own share and asking the other voters for theirs over the authenticated transport, and
/// needs a quorum of them; without one it answers "sealed" (503) within the secrets wait. The
/// first node that needs the secret makes it (one system write, conditioned on there being
/// none); the leader splits it again whenever the voters change, so the threshold stays a
/// quorum of the current voters and a removed node's share stops counting.
actor SecretsSeal {
    /// How a node reaches the others: asks a voter for its share of an epoch, or asks a voter to
    /// seal a new share under its own key (returning the envelope).
    struct Peers: Sendable {
        var share: @Sendable (NodeID, UInt64) async throws -> Bytes
        var seal: @Sendable (NodeID, UInt64, Bytes) async throws -> Bytes
    }

    let node: RaftNode
    let selfID: NodeID
    let shareKey: DataKey
    let peers: Peers
    let limits: Limits
    let logger: Logger
    private var secret: Bytes?
    private var key: DataKey? {
        didSet { known.withLock { $0 = key } }
    }
    /// The data key once this node holds it, readable without a turn on the actor (every
    /// secrets request asks for it).
    private nonisolated let known = Mutex<DataKey?>(nil)
    nonisolated var knownKey: DataKey? { known.withLock { $0 } }
    private var opening: Task<DataKey, any Error>?
    private var resharing = false
    /// The last failed unseal: requests within a second of it get its answer, not another round
    /// of connections to every voter (a sealed node under load, or under a flood).
    private var lastFailure: (atMs: Int64, error: any Error)?

    init(node: RaftNode, selfID: NodeID, identityKey: Bytes, peers: Peers, limits: Limits, logger: Logger) {
        self.node = node
        self.selfID = selfID
        self.shareKey = SealRecord.shareKey(identityKey: identityKey)
        self.peers = peers
        self.limits = limits
        self.logger = logger
    }

    var isSealed: Bool { key == nil }

    /// The data key, unsealing (or making the cluster secret) first if this node has not yet.
    func dataKey() async throws -> DataKey {
        if let key { return key }
        if let opening { return try await opening.value }
        if let lastFailure, node.nowMs() - lastFailure.atMs < 1000 { throw lastFailure.error }
        let task = Task { try await self.open() }
        opening = task
        defer { opening = nil }
        do {
            return try await task.value
        } catch {
            lastFailure = (node.nowMs(), error)
            throw error
        }
    }

    func record() throws -> SealRecord? {
        guard let bytes = try node.storage.systemRecords(prefix: SealRecord.name).first(where: { $0.name == SealRecord.name })?.value else { return nil }
        return try SealRecord(decoding: bytes)
    }

    private func open() async throws -> DataKey {
        try await SecretsService.within(limits.secretsQuorumWaitMs, "no quorum: this node could not reach the cluster") {
            try await self.node.linearizableBarrier()
        }
        for _ in 0..<3 {
            if let record = try record() { return try await unseal(record) }
            if let made = try await initialize() { return made }
        }
        throw SecretsError.unavailable("the seal changed under this node three times in a row; try again")
    }

    private func adopt(_ secret: Bytes) -> DataKey {
        self.secret = secret
        let key = DataKey(clusterSecret: secret)
        self.key = key
        return key
    }

    /// Makes the cluster secret and splits it among the voters, if no node has yet. Returns nil
    /// when another node did first (the caller then unseals with that one).
    private func initialize() async throws -> DataKey? {
        let voters = await node.status.membership.allVoters
        let secret = SecureRandom.bytes(32)
        let write = try await split(secret, epoch: 1, voters: voters, replacing: nil)
        do {
            let node = self.node
            try await SecretsService.within(limits.secretsQuorumWaitMs, "no quorum: the cluster did not record the new key split") {
                try await node.writeSystem(write, forwarding: true)
            }
        } catch KVError.systemConditionFailed {
            return nil
        }
        logger.notice("secrets: made the cluster secret and split it", metadata: ["voters": "\(voters.count)"])
        return adopt(secret)
    }

    /// The system write that records a new split of `secret` among `voters` (each share sealed
    /// by its holder), replacing `old` (nil: there must be none).
    private func split(_ secret: Bytes, epoch: UInt64, voters: [NodeID], replacing old: SealRecord?) async throws -> SystemWrite {
        guard !voters.isEmpty else { throw SecretsError.unavailable("the cluster has no voters to hold key shares") }
        let threshold = SealRecord.threshold(voters: voters.count)
        let shares = try Shamir.split(secret, threshold: threshold, count: voters.count)
        var changes: [SystemRecordChange] = [.expect(name: SealRecord.name, value: old?.encoded())]
        var members: [NodeID: UInt8] = [:]
        try await withThrowingTaskGroup(of: (NodeID, Bytes).self) { group in
            for (voter, share) in zip(voters, shares) {
                members[voter] = share.x
                if voter == selfID {
                    changes.append(.set(name: SealRecord.shareName(epoch: epoch, node: voter), value: shareKey.seal(share.bytes, storageKey: SealRecord.shareName(epoch: epoch, node: voter))))
                    continue
                }
                let peers = self.peers
                let wait = limits.secretsQuorumWaitMs
                group.addTask {
                    let envelope = try await SecretsService.within(wait, "voter \(voter) did not answer to take its key share") {
                        try await peers.seal(voter, epoch, share.bytes)
                    }
                    return (voter, envelope)
                }
            }
            for try await (voter, envelope) in group {
                changes.append(.set(name: SealRecord.shareName(epoch: epoch, node: voter), value: envelope))
            }
        }
        if let old { changes.append(.removePrefix(SealRecord.shares(epoch: old.epoch))) }
        let record = SealRecord(epoch: epoch, threshold: threshold, members: members, verifier: SealRecord.verifier(of: secret))
        changes.append(.set(name: SealRecord.name, value: record.encoded()))
        return SystemWrite(changes: changes)
    }

    private func unseal(_ record: SealRecord) async throws -> DataKey {
        var shares: [Shamir.Share] = []
        var problems: [String] = []
        if record.members[selfID] != nil {
            // A share that does not open (a damaged record) leaves the others to ask.
            do {
                if let own = try ownShare(epoch: record.epoch) { shares.append(own) }
            } catch {
                problems.append("this node's own share: \(error)")
            }
        }
        let others = record.members.keys.filter { $0 != selfID }.sorted { $0.rawValue < $1.rawValue }
        if shares.count < record.threshold {
            let peers = self.peers
            let wait = limits.secretsQuorumWaitMs
            await withTaskGroup(of: Result<Shamir.Share, any Error>.self) { group in
                for voter in others {
                    group.addTask {
                        do {
                            let bytes = try await SecretsService.within(wait, "voter \(voter) did not answer") { try await peers.share(voter, record.epoch) }
                            guard let share = Shamir.Share(bytes: bytes), share.x == record.members[voter] else {
                                throw SecretsError.internalError("voter \(voter) sent a malformed key share")
                            }
                            return .success(share)
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                for await result in group {
                    switch result {
                    case .success(let share): shares.append(share)
                    case .failure(let error): problems.append("\(error)")
                    }
                    if shares.count >= record.threshold {
                        group.cancelAll()
                        break
                    }
                }
            }
        }
        guard shares.count >= record.threshold else {
            throw SecretsError.unavailable(
                "sealed: \(shares.count) of the \(record.threshold) key shares needed are reachable"
                    + (problems.isEmpty ? "" : " (\(problems.prefix(3).joined(separator: "; ")))"))
        }
        let secret = try Shamir.combine(Array(shares.prefix(record.threshold)))
        guard SealRecord.verifier(of: secret) == record.verifier else {
            throw SecretsError.internalError("the key shares do not recover the cluster secret (a share is damaged)")
        }
        logger.info("secrets: unsealed", metadata: ["epoch": "\(record.epoch)", "shares": "\(shares.count)"])
        return adopt(secret)
    }

    /// This node's share of `epoch`, opened.
    func ownShare(epoch: UInt64) throws -> Shamir.Share? {
        let name = SealRecord.shareName(epoch: epoch, node: selfID)
        guard let envelope = try node.storage.systemRecords(prefix: name).first(where: { $0.name == name })?.value else { return nil }
        guard let share = Shamir.Share(bytes: try shareKey.open(envelope, storageKey: name)) else {
            throw SecretsError.internalError("this node's key share is malformed")
        }
        return share
    }

    /// Another member's request for this node's share (a voter, or a learner that serves
    /// secrets too): answered only to a current member of the cluster, for the current split.
    func share(epoch: UInt64, for caller: NodeID) async throws -> Bytes {
        guard let record = try record(), record.epoch == epoch else { throw SecretsError.badRequest("no key split of epoch \(epoch)") }
        let members = await node.status.membership
        guard members.allVoters.contains(caller) || members.learners.contains(caller) else {
            throw SecretsError.forbidden("node \(caller) is not a member of the cluster")
        }
        guard let share = try ownShare(epoch: epoch) else { throw SecretsError.notFound("this node holds no share of epoch \(epoch)") }
        return share.bytes
    }

    /// Seals a new share of `epoch` under this node's key, for the voter making a split.
    func seal(epoch: UInt64, share: Bytes, for caller: NodeID) async throws -> Bytes {
        guard await node.status.membership.allVoters.contains(caller) else {
            throw SecretsError.forbidden("node \(caller) is not a voter: it cannot split the cluster secret")
        }
        guard Shamir.Share(bytes: share) != nil, share.count <= 64 else { throw SecretsError.badRequest("a malformed key share") }
        return shareKey.seal(share, storageKey: SealRecord.shareName(epoch: epoch, node: selfID))
    }

    /// Splits the secret again when the voters are not those of the current split (a voter
    /// added, removed or replaced), so the threshold stays a quorum of the current voters.
    /// Any node holding the secret may do it; the write compares the seal record, so of several
    /// at once one wins and the others find it done. Called periodically by the service.
    func checkVoters() async {
        guard !resharing, let secret else { return }
        resharing = true
        defer { resharing = false }
        do {
            guard let record = try record() else { return }
            let voters = await node.status.membership.allVoters
            guard !voters.isEmpty, Set(voters) != Set(record.members.keys) else { return }
            let write = try await split(secret, epoch: record.epoch + 1, voters: voters, replacing: record)
            let node = self.node
            try await SecretsService.within(limits.secretsQuorumWaitMs, "no quorum: the new key split was not recorded") {
                try await node.writeSystem(write, forwarding: true)
            }
            logger.notice("secrets: split the cluster secret again for the current voters", metadata: ["voters": "\(voters.count)", "epoch": "\(record.epoch + 1)"])
        } catch KVError.systemConditionFailed {
            // Another node split it first.
        } catch {
            logger.warning("secrets: could not split the cluster secret for the current voters; will retry", metadata: ["error": "\(error)"])
        }
    }

}
