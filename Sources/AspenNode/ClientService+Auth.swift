import AspenAuth
import AspenCore
import AspenKV
import AspenTransport

extension ClientService {
    /// What one request's caller may do: its credential, verified once per request before the
    /// body is decoded, and the checks of what the body asks.
    struct Access {
        let auth: NodeAuth?
        let credential: VerifiedCredential?
        let caller: TransportCaller
        let nowMs: Int64

        init(service: ClientService, request: RPCRequest, caller: TransportCaller) throws(AuthRefusal) {
            self.caller = caller
            nowMs = service.node.nowMs()
            // A member forwards what its own clients were authorized for (the etcd endpoint's
            // leader-only calls): members trust each other, as they do in Raft.
            guard let auth = service.auth, auth.isRequired, !(service.network?.isMember(caller.key) ?? false) else {
                self.auth = nil
                credential = nil
                return
            }
            self.auth = auth
            do {
                credential = try auth.authenticate(request.credential, nowMs: nowMs)
            } catch {
                throw .denied(error)
            }
        }

        func authorize(_ needed: Requirement) throws(AuthRefusal) {
            guard let auth else { return }
            try auth.authorize(credential, caller: PublicKey(bytes: caller.key.bytes), needed: needed, nowMs: nowMs)
        }

        func authorizeCluster(_ operation: ClusterOperation) throws(AuthRefusal) {
            try authorize(RequestRequirements.of(operation))
        }
    }

    /// `cluster.auth-*`: the trust state, trusted roots, revocations, the cluster's auth mode.
    func handleAuth(_ operation: ClusterOperation, _ body: [UInt8]) async throws -> [UInt8] {
        typealias Records = NodeAuth.Records
        switch operation {
        case .authStatus:
            let trust = auth?.verifier.trust ?? TrustState()
            let clusterRequires = try await !node.systemRecords(prefix: Records.required).isEmpty
            return AuthWire.Status(
                required: auth?.isRequired ?? false, clusterRequires: clusterRequires, roots: trust.roots.sorted(),
                revokedTokens: trust.revoked.count, issuerCutoffs: trust.issuerCutoffs.count, denials: auth?.denials ?? 0
            ).encoded
        case .authRoots:
            switch try AuthWire.RootChange(decoding: body) {
            case .add(let key):
                try await node.writeSystem(SystemWrite(changes: [.set(name: Records.root(key), value: [])]))
            case .remove(let key):
                let roots = try await node.systemRecords(prefix: Records.rootPrefix).map(\.name)
                guard roots.contains(Records.root(key)) else { throw NodeError.refused("\(key.hex) is not a trusted root of this cluster") }
                guard roots.count > 1 else {
                    throw NodeError.refused("\(key.hex) is the cluster's last trusted root: add another before removing it")
                }
                try await node.writeSystem(SystemWrite(changes: [.remove(name: Records.root(key))]))
            }
            return []
        case .authRevoke:
            let revocation = try AuthWire.Revocation(decoding: body)
            // Revocations of tokens expired past any clock skew are dropped meanwhile: those
            // tokens are refused by their expiry, and the records stay bounded.
            let now = node.nowMs()
            let skew = limits.tokenClockSkewMs
            var changes: [SystemRecordChange] = try await node.systemRecords(prefix: Records.revokedPrefix).compactMap { record in
                guard let expires = Records.decode(record.value), expires < now - skew else { return nil }
                return .remove(name: record.name)
            }
            switch revocation {
            case .token(let id, let expires):
                let kept = try await node.systemRecords(prefix: Records.revokedPrefix).count - changes.count
                guard kept < limits.revocationsMax else {
                    throw NodeError.refused(
                        "the cluster keeps at most \(limits.revocationsMax) token revocations (revocationsMax): revoke by issuer and "
                            + "time instead (aspen token revoke --issuer KEYHEX --before TIME), one record for all of them")
                }
                changes.append(.set(name: Records.revoked(id), value: Records.encode(expires)))
            case .issuedBefore(let issuer, let cutoff):
                changes.append(.set(name: Records.cutoff(issuer), value: Records.encode(cutoff)))
            }
            try await node.writeSystem(SystemWrite(changes: changes))
            return []
        case .authRequire:
            var reader = ByteReader(body)
            let required = try reader.readBool()
            try reader.expectEnd()
            try await node.writeSystem(Records.requiring(required))
            return []
        default:
            throw NodeError.refused("not an auth operation: \(operation.rawValue)")
        }
    }
}
