import AspenAuth
import AspenCore
import AspenKV
import AspenStorage
import AspenTransport
import Logging
import Synchronization

/// A node's side of capability-token auth: whether it requires credentials, the cluster's
/// trust state (read from the system records after every change), and the check every request
/// passes before it is served.
public final class NodeAuth: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// No credentials: the cookie and the loopback rule alone guard the node.
        case off
        /// Every request but the published public ones needs a credential that allows it.
        case required
        /// `required` when the node listens beyond loopback or the cluster was founded with
        /// auth; `off` otherwise.
        case auto
    }

    /// Names of the auth system records.
    public enum Records {
        public static let prefix = Array("auth/".utf8)
        /// Present when the cluster was founded with auth: nodes in `auto` mode require it.
        public static let required = Array("auth/required".utf8)
        /// `auth/root/` and a trusted root's 32 key bytes.
        public static let rootPrefix = Array("auth/root/".utf8)
        /// `auth/revoked/` and a token id; the value is the token's expiry (8 bytes, big-endian),
        /// after which the record may be dropped.
        public static let revokedPrefix = Array("auth/revoked/".utf8)
        /// `auth/cutoff/` and an issuer key; the value is the cutoff (8 bytes, big-endian).
        public static let cutoffPrefix = Array("auth/cutoff/".utf8)

        public static func root(_ key: PublicKey) -> Bytes { rootPrefix + key.bytes }
        public static func revoked(_ id: TokenID) -> Bytes { revokedPrefix + id.bytes }
        public static func cutoff(_ issuer: PublicKey) -> Bytes { cutoffPrefix + issuer.bytes }

        /// The write that records (or removes) that the cluster requires credentials.
        public static func requiring(_ required: Bool) -> SystemWrite {
            SystemWrite(changes: [required ? .set(name: Self.required, value: [1]) : .remove(name: Self.required)])
        }

        public static func encode(_ value: Int64) -> Bytes { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
        public static func decode(_ bytes: Bytes) -> Int64? {
            guard bytes.count == 8 else { return nil }
            return bytes.reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }
    }

    public let mode: Mode
    let listensBeyondLoopback: Bool
    /// Roots given on the command line (`--trusted-root`), trusted beside the cluster's.
    public let configuredRoots: Set<PublicKey>
    public let verifier: TokenVerifier
    let logger: Logger
    private let state = Mutex(State())

    struct State {
        var clusterRequires = false
        var denials = 0
        var lastDenialLogMs: Int64 = 0
        var denialsNotLogged = 0
    }

    public init(mode: Mode, listensBeyondLoopback: Bool, configuredRoots: Set<PublicKey> = [], limits: Limits, logger: Logger) {
        self.mode = mode
        self.listensBeyondLoopback = listensBeyondLoopback
        self.configuredRoots = configuredRoots
        self.verifier = TokenVerifier(limits: limits, trust: TrustState(roots: configuredRoots))
        self.logger = logger
    }

    /// Whether requests need credentials now.
    public var isRequired: Bool {
        switch mode {
        case .off: return false
        case .required: return true
        case .auto: return listensBeyondLoopback || state.withLock { $0.clusterRequires }
        }
    }

    /// Requests refused so far.
    public var denials: Int { state.withLock { $0.denials } }

    /// Reads the trust state from the store's system records: after start, after a system write
    /// applies, after a snapshot is installed.
    public func reload(from storage: any NodeStorage) throws {
        let records = try storage.systemRecords(prefix: Records.prefix)
        var trust = TrustState(roots: configuredRoots)
        var requires = false
        for (name, value) in records {
            if name == Records.required {
                requires = true
            } else if name.starts(with: Records.rootPrefix), let key = PublicKey(bytes: Array(name.dropFirst(Records.rootPrefix.count))) {
                trust.roots.insert(key)
            } else if name.starts(with: Records.revokedPrefix), let id = TokenID(bytes: Array(name.dropFirst(Records.revokedPrefix.count))) {
                trust.revoked.insert(id)
            } else if name.starts(with: Records.cutoffPrefix), let issuer = PublicKey(bytes: Array(name.dropFirst(Records.cutoffPrefix.count))),
                let cutoff = Records.decode(value)
            {
                trust.issuerCutoffs[issuer] = cutoff
            }
        }
        verifier.update(trust)
        state.withLock { $0.clusterRequires = requires }
    }

    /// Whether the cluster trusts any root (configured or replicated).
    public var hasRoots: Bool { !verifier.trust.roots.isEmpty }

    /// The credential a request carries, verified: nil when auth is off. A request without one
    /// when auth is required is refused unless what it asks is public.
    public func authenticate(_ credential: Bytes, nowMs: Int64) throws(Denial) -> VerifiedCredential? {
        guard isRequired, !credential.isEmpty else { return nil }
        if credential.count == 32, let id = TokenID(bytes: credential) {
            guard let known = verifier.remembered(id) else { throw .unknownCredential(id: id) }
            try verifier.check(known, nowMs: nowMs)
            return known
        }
        let decoded: Credential
        do {
            decoded = try Credential(decoding: credential, limits: verifier.limits)
        } catch {
            throw .malformed(error)
        }
        return try verifier.verify(decoded, nowMs: nowMs)
    }

    /// Whether a request that needs `needed` may be served for the caller holding `credential`.
    public func authorize(_ credential: VerifiedCredential?, caller: PublicKey?, needed: Requirement, nowMs: Int64) throws(AuthRefusal) {
        guard isRequired, needed != .nothing else { return }
        guard let credential else { throw .missingCredential(needed: needed) }
        do {
            try verifier.authorize(credential, presented: caller, needed: needed, nowMs: nowMs)
        } catch {
            throw .denied(error)
        }
    }

    /// Authorizes a request whose credential comes as text over a channel that proves no key
    /// (admin HTTP): a credential addressed to a key must carry that key.
    public func authorizeCarried(_ text: String?, needed: Requirement, nowMs: Int64) throws(AuthRefusal) {
        guard isRequired, needed != .nothing else { return }
        guard let text, !text.isEmpty else { throw .missingCredential(needed: needed) }
        let carried: (credential: VerifiedCredential, holder: PublicKey?)
        do {
            carried = try verifyCarried(text, nowMs: nowMs)
        } catch {
            throw .denied(error)
        }
        try authorize(carried.credential, caller: carried.holder, needed: needed, nowMs: nowMs)
    }

    /// Verifies a credential given as text where nothing proves a key (admin HTTP, etcd's
    /// Authenticate): one addressed to a key must carry that key. Returns it verified, with the
    /// key it proved (nil for a bearer token).
    public func verifyCarried(_ text: String, nowMs: Int64) throws(Denial) -> (credential: VerifiedCredential, holder: PublicKey?) {
        let credential: Credential
        do {
            credential = try Credential(text: text, limits: verifier.limits)
        } catch {
            throw .malformed(error)
        }
        let verified = try verifier.verify(credential, nowMs: nowMs)
        guard case .key(let audience) = verified.audience else { return (verified, nil) }
        guard credential.holderKey?.publicKey == audience else {
            throw .wrongAudience(id: verified.id, audience: audience, presented: credential.holderKey?.publicKey)
        }
        return (verified, audience)
    }

    /// Counts a refusal and logs it, at most once a second (with how many were not logged).
    public func noteDenial(_ refusal: AuthRefusal, client: String, operation: String, nowMs: Int64) {
        let (log, skipped) = state.withLock { state -> (Bool, Int) in
            state.denials += 1
            guard nowMs - state.lastDenialLogMs >= 1000 else {
                state.denialsNotLogged += 1
                return (false, 0)
            }
            state.lastDenialLogMs = nowMs
            defer { state.denialsNotLogged = 0 }
            return (true, state.denialsNotLogged)
        }
        guard log else { return }
        logger.warning(
            "request refused", metadata: ["client": "\(client)", "operation": "\(operation)", "reason": "\(refusal)", "refusals not logged": "\(skipped)"])
    }
}

/// Why a request was not served under auth.
public enum AuthRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case missingCredential(needed: Requirement)
    case denied(Denial)

    public var description: String {
        switch self {
        case .missingCredential(let needed):
            return "this cluster requires a credential (--credential-file or ASPEN_CREDENTIAL_FILE) for \(needed.summary)"
        case .denied(let denial): return "\(denial)"
        }
    }

    /// The wire error code: `unknown_credential` tells a client to send its credential whole.
    public var code: String {
        if case .denied(.unknownCredential) = self { return "unknown_credential" }
        if case .denied(.notPermitted) = self { return "permission_denied" }
        return "unauthorized"
    }
}
