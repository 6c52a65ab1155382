import AspenCore
import AspenKV
import Synchronization

/// What the cluster has decided about trust: the roots it trusts and what it revoked. Kept in
/// the replicated system records, so every node judges alike.
public struct TrustState: Sendable, Equatable {
    public var roots: Set<PublicKey>
    /// Revoked tokens (and with them every token delegated from them).
    public var revoked: Set<TokenID>
    /// Per issuer: every token it issued before this time (Unix ms) is revoked.
    public var issuerCutoffs: [PublicKey: Int64]

    public init(roots: Set<PublicKey> = [], revoked: Set<TokenID> = [], issuerCutoffs: [PublicKey: Int64] = [:]) {
        self.roots = roots
        self.revoked = revoked
        self.issuerCutoffs = issuerCutoffs
    }
}

/// Why a credential or a request was refused: which link of the chain (0 is the credential's
/// own token, the last is the root's) and what about it.
public enum Denial: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(CredentialError)
    case noTrustedRoots
    case badSignature(link: Int, id: TokenID)
    case notYetValid(link: Int, id: TokenID, notBeforeMs: Int64)
    case expired(link: Int, id: TokenID, expiresAtMs: Int64)
    case revoked(link: Int, id: TokenID)
    case revokedByIssuerCutoff(link: Int, id: TokenID, issuer: PublicKey, cutoffMs: Int64)
    case bearerLifetimeTooLong(link: Int, id: TokenID, lifetimeMs: Int64, limitMs: Int64)
    case brokenChain(link: Int, id: TokenID, problem: String)
    case parentCannotDelegate(link: Int, id: TokenID)
    case widened(link: Int, id: TokenID, capability: Capability)
    case outlivesParent(link: Int, id: TokenID, expiresAtMs: Int64, parentExpiresAtMs: Int64)
    case untrustedRoot(issuer: PublicKey)
    case wrongAudience(id: TokenID, audience: PublicKey, presented: PublicKey?)
    case notPermitted(id: TokenID, needed: Requirement)
    case unknownCredential(id: TokenID)

    public var description: String {
        func at(_ link: Int, _ id: TokenID) -> String { "link \(link) (token \(id.hex.prefix(16))…)" }
        switch self {
        case .malformed(let error): return "\(error)"
        case .noTrustedRoots: return "the cluster trusts no root key yet: every credential is refused (aspen auth root add KEYHEX)"
        case .badSignature(let link, let id): return "\(at(link, id)): the signature is not its issuer's"
        case .notYetValid(let link, let id, let notBefore): return "\(at(link, id)): not valid before \(AuthTime.format(notBefore))"
        case .expired(let link, let id, let expires): return "\(at(link, id)): expired at \(AuthTime.format(expires))"
        case .revoked(let link, let id): return "\(at(link, id)): revoked"
        case .revokedByIssuerCutoff(let link, let id, let issuer, let cutoff):
            return "\(at(link, id)): revoked: its issuer \(issuer.hex.prefix(16))… had everything it issued before \(AuthTime.format(cutoff)) revoked"
        case .bearerLifetimeTooLong(let link, let id, let lifetime, let limit):
            return "\(at(link, id)): a bearer token may live at most \(limit / 1000) s (bearerLifetimeMsMax); this one lives \(lifetime / 1000) s"
        case .brokenChain(let link, let id, let problem): return "\(at(link, id)): broken chain: \(problem)"
        case .parentCannotDelegate(let link, let id): return "\(at(link, id)): its parent does not hold the delegate capability"
        case .widened(let link, let id, let capability):
            return "\(at(link, id)): capability \(capability) is not contained in any capability of its parent"
        case .outlivesParent(let link, let id, let expires, let parentExpires):
            return "\(at(link, id)): expires at \(AuthTime.format(expires)), after its parent (\(AuthTime.format(parentExpires)))"
        case .untrustedRoot(let issuer): return "the chain's root issuer \(issuer.hex) is not a trusted root of this cluster"
        case .wrongAudience(let id, let audience, let presented):
            return "token \(id.hex.prefix(16))… is addressed to key \(audience.hex.prefix(16))…, but the connection is "
                + (presented.map { "authenticated as \($0.hex.prefix(16))…" } ?? "not authenticated by a key")
        case .notPermitted(let id, let needed):
            return "permission denied: token \(id.hex.prefix(16))… holds no capability that allows \(needed.summary)"
        case .unknownCredential(let id): return "credential \(id.hex.prefix(16))… is not known to this node; present it whole"
        }
    }

    /// The name of the failed check, for metrics.
    public var reason: String {
        switch self {
        case .malformed: "malformed"
        case .noTrustedRoots: "no_trusted_roots"
        case .badSignature: "bad_signature"
        case .notYetValid: "not_yet_valid"
        case .expired: "expired"
        case .revoked, .revokedByIssuerCutoff: "revoked"
        case .bearerLifetimeTooLong: "bearer_lifetime"
        case .brokenChain: "broken_chain"
        case .parentCannotDelegate: "parent_cannot_delegate"
        case .widened: "widened"
        case .outlivesParent: "outlives_parent"
        case .untrustedRoot: "untrusted_root"
        case .wrongAudience: "wrong_audience"
        case .notPermitted: "not_permitted"
        case .unknownCredential: "unknown_credential"
        }
    }
}

/// A credential whose chain was verified: signatures, links, attenuation, root. What may
/// change later — time, revocations — is checked again on every use (`TokenVerifier.check`).
public struct VerifiedCredential: Sendable {
    public let id: TokenID
    public let audience: Audience
    /// The leaf's capabilities: what the credential allows.
    public let capabilities: [Capability]
    /// Leaf first: each token's id, issuer and issue time.
    public let links: [(id: TokenID, issuer: PublicKey, issuedAtMs: Int64, notBeforeMs: Int64, expiresAtMs: Int64)]
    /// The trust state it was verified against.
    let rootsVersion: UInt64

    /// When the whole chain is valid (before skew).
    public var notBeforeMs: Int64 { links.map(\.notBeforeMs).max()! }
    public var expiresAtMs: Int64 { links.map(\.expiresAtMs).min()! }

    /// Whether some capability grants each part of `requirement`; the first part none grants.
    public func firstUngranted(_ requirement: Requirement) -> Requirement? {
        requirement.atoms.first { atom in !capabilities.contains { $0.grants(atom) } }
    }
}

/// Verifies credentials against the cluster's trust state, remembering verified chains.
///
/// A chain is checked at every link, from the credential's own token to the root: size,
/// signature, time (with `tokenClockSkewMs`), revocation (by id and by issuer cutoff), that the
/// link's issuer is its parent's audience, that the parent holds `delegate`, that each of its
/// capabilities is contained in one of the parent's, its depth, that it expires no later than
/// its parent, and that the root's issuer is trusted. Minting checks none of this for the
/// verifier: a child signed by a tool that widened it is refused here.
public final class TokenVerifier: Sendable {
    public let limits: Limits
    private struct State {
        var trust = TrustState()
        var rootsVersion: UInt64 = 0
        var verified: [TokenID: VerifiedCredential] = [:]
    }
    private let state = Mutex(State())

    public init(limits: Limits = .standard, trust: TrustState = TrustState()) {
        self.limits = limits
        state.withLock { $0.trust = trust }
    }

    public var trust: TrustState { state.withLock { $0.trust } }

    /// Installs a new trust state. Remembered chains are forgotten when the roots change
    /// (revocations are checked on every use anyway).
    public func update(_ trust: TrustState) {
        state.withLock { state in
            if state.trust.roots != trust.roots {
                state.rootsVersion += 1
                state.verified = [:]
            }
            state.trust = trust
        }
    }

    /// A chain verified before, by its credential's id.
    public func remembered(_ id: TokenID) -> VerifiedCredential? { state.withLock { $0.verified[id] } }

    /// Verifies `credential` (or finds it verified before) and checks time and revocation now.
    public func verify(_ credential: Credential, nowMs: Int64) throws(Denial) -> VerifiedCredential {
        let (known, trust) = state.withLock { ($0.verified[credential.id], $0.trust) }
        if let known {
            try check(known, nowMs: nowMs, trust: trust)
            return known
        }
        let verified = try verifyChain(credential.chain, trust: trust, version: state.withLock { $0.rootsVersion })
        try check(verified, nowMs: nowMs, trust: trust)
        state.withLock { state in
            guard state.rootsVersion == verified.rootsVersion else { return }
            if state.verified.count >= limits.verifiedCredentialsMax, let any = state.verified.keys.first {
                state.verified[any] = nil
            }
            state.verified[verified.id] = verified
        }
        return verified
    }

    /// Whether a verified credential is still valid now: in time, nothing in it revoked.
    public func check(_ verified: VerifiedCredential, nowMs: Int64) throws(Denial) {
        try check(verified, nowMs: nowMs, trust: state.withLock { $0.trust })
    }

    /// Authorizes one request: the credential is valid now, addressed to `presented` (the key
    /// the connection proved) unless it is a bearer token, and grants every part of `needed`.
    public func authorize(_ verified: VerifiedCredential, presented: PublicKey?, needed: Requirement, nowMs: Int64) throws(Denial) {
        try check(verified, nowMs: nowMs)
        if case .key(let audience) = verified.audience, audience != presented {
            throw .wrongAudience(id: verified.id, audience: audience, presented: presented)
        }
        if let missing = verified.firstUngranted(needed) { throw .notPermitted(id: verified.id, needed: missing) }
    }

    private func check(_ verified: VerifiedCredential, nowMs: Int64, trust: TrustState) throws(Denial) {
        let skew = limits.tokenClockSkewMs
        for (link, token) in verified.links.enumerated() {
            if nowMs < token.notBeforeMs - skew { throw .notYetValid(link: link, id: token.id, notBeforeMs: token.notBeforeMs) }
            if nowMs >= token.expiresAtMs + skew { throw .expired(link: link, id: token.id, expiresAtMs: token.expiresAtMs) }
            if trust.revoked.contains(token.id) { throw .revoked(link: link, id: token.id) }
            if let cutoff = trust.issuerCutoffs[token.issuer], token.issuedAtMs < cutoff {
                throw .revokedByIssuerCutoff(link: link, id: token.id, issuer: token.issuer, cutoffMs: cutoff)
            }
        }
    }

    private func verifyChain(_ chain: [SignedToken], trust: TrustState, version: UInt64) throws(Denial) -> VerifiedCredential {
        guard !trust.roots.isEmpty else { throw .noTrustedRoots }
        for (link, signed) in chain.enumerated() {
            let token = signed.token
            guard signed.encoded.count <= limits.tokenBytesMax else {
                throw .malformed(.tooLarge(bytes: signed.encoded.count, limit: limits.tokenBytesMax, name: "tokenBytesMax"))
            }
            guard signed.signatureIsValid else { throw .badSignature(link: link, id: signed.id) }
            if case .bearer = token.audience, token.expiresAtMs - token.notBeforeMs > limits.bearerLifetimeMsMax {
                throw .bearerLifetimeTooLong(
                    link: link, id: signed.id, lifetimeMs: token.expiresAtMs - token.notBeforeMs, limitMs: limits.bearerLifetimeMsMax)
            }
            guard token.capabilities.count <= limits.capabilitiesPerTokenMax, token.depth <= limits.delegationDepthMax else {
                throw .brokenChain(link: link, id: signed.id, problem: "more capabilities or depth than the limits allow")
            }
            guard link + 1 < chain.count else {
                // The root.
                guard token.parent == nil, token.depth == 0 else {
                    throw .brokenChain(link: link, id: signed.id, problem: "the chain ends before its root (the last token names a parent)")
                }
                guard trust.roots.contains(token.issuer) else { throw .untrustedRoot(issuer: token.issuer) }
                break
            }
            let parent = chain[link + 1]
            guard token.parent == parent.id else {
                throw .brokenChain(link: link, id: signed.id, problem: "its parent id is not the id of the next token in the chain")
            }
            guard case .key(let parentAudience) = parent.token.audience, parentAudience == token.issuer else {
                throw .brokenChain(link: link, id: signed.id, problem: "its issuer is not its parent's audience")
            }
            guard token.depth == parent.token.depth + 1 else {
                throw .brokenChain(link: link, id: signed.id, problem: "depth \(token.depth) does not follow its parent's \(parent.token.depth)")
            }
            guard parent.token.capabilities.contains(.delegate) else { throw .parentCannotDelegate(link: link, id: signed.id) }
            for capability in token.capabilities where !parent.token.capabilities.contains(where: { $0.contains(capability) }) {
                throw .widened(link: link, id: signed.id, capability: capability)
            }
            guard token.expiresAtMs <= parent.token.expiresAtMs else {
                throw .outlivesParent(link: link, id: signed.id, expiresAtMs: token.expiresAtMs, parentExpiresAtMs: parent.token.expiresAtMs)
            }
        }
        let leaf = chain[0]
        return VerifiedCredential(
            id: leaf.id, audience: leaf.token.audience, capabilities: leaf.token.capabilities,
            links: chain.map { ($0.id, $0.token.issuer, $0.token.issuedAtMs, $0.token.notBeforeMs, $0.token.expiresAtMs) },
            rootsVersion: version)
    }
}

extension Requirement {
    /// How a denial names what was needed.
    public var summary: String {
        switch self {
        case .read(let bounds): return "read of \(KeyBoundsText(bounds).text)"
        case .write(let bounds): return "write of \(KeyBoundsText(bounds).text)"
        case .delete(let bounds): return "delete of \(KeyBoundsText(bounds).text)"
        case .watch(let bounds): return "watch of \(KeyBoundsText(bounds).text)"
        case .coordination(let name): return "coordination on '\(Capability.escape(name))'"
        case .lease: return "leases (any write capability)"
        case .clusterAdmin: return "cluster administration (cluster-admin)"
        case .delegate: return "delegation (delegate)"
        case .service(let service, let access, let resource): return "\(service.name)-\(access.name) on '\(Capability.escape(resource))'"
        case .all(let parts): return parts.map(\.summary).joined(separator: ", ")
        case .nothing: return "nothing"
        }
    }
}
