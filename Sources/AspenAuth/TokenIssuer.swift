import AspenCore
import AspenKV
import Crypto

/// Mints tokens: a root credential from a root key, and children delegated from a credential
/// whose holder key it has. It refuses what verification would refuse (a widened capability,
/// a parent without `delegate`, a child outliving its parent, too deep, too many
/// capabilities), so a user learns at once, not at first use; verification trusts none of it.
public enum TokenIssuer {
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case noHolderKey
        case holderKeyMismatch
        case cannotDelegate
        case widened(Capability)
        case tooDeep(limit: Int)
        case tooManyCapabilities(count: Int, limit: Int)
        case outlivesParent(parentExpiresAtMs: Int64)
        case bearerLifetimeTooLong(lifetimeMs: Int64, limitMs: Int64)
        case noCapabilities
        case badLifetime

        public var description: String {
            switch self {
            case .noHolderKey: "the parent credential carries no holder key: only its holder can delegate from it"
            case .holderKeyMismatch: "the parent credential's holder key is not its token's audience"
            case .cannotDelegate: "the parent credential does not hold the delegate capability"
            case .widened(let capability): "capability \(capability) is not contained in any capability of the parent credential"
            case .tooDeep(let limit): "delegation deeper than \(limit) links (delegationDepthMax)"
            case .tooManyCapabilities(let count, let limit): "\(count) capabilities; a token holds at most \(limit) (capabilitiesPerTokenMax)"
            case .outlivesParent(let parentExpires): "the token would outlive its parent, which expires at \(AuthTime.format(parentExpires)); ask for a shorter lifetime"
            case .bearerLifetimeTooLong(let lifetime, let limit):
                "a bearer token may live at most \(limit / 1000) s (bearerLifetimeMsMax), not \(lifetime / 1000) s; address it to a key instead"
            case .noCapabilities: "a token needs at least one capability"
            case .badLifetime: "the lifetime must be positive"
            }
        }
    }

    /// A root token signed by `rootKey` for `audience`, as a credential. If `holderKey` is given
    /// its public key is the audience and the credential carries it.
    public static func root(
        rootKey: SigningKey, holderKey: SigningKey?, audience: Audience? = nil, capabilities: [Capability], lifetimeMs: Int64,
        nowMs: Int64, facts: [Token.Fact] = [], limits: Limits = .standard
    ) throws(Problem) -> Credential {
        let audience = audience ?? holderKey.map { .key($0.publicKey) } ?? .bearer
        try check(capabilities: capabilities, audience: audience, lifetimeMs: lifetimeMs, limits: limits)
        let token = Token(
            issuer: rootKey.publicKey, audience: audience, capabilities: capabilities, issuedAtMs: nowMs, notBeforeMs: nowMs,
            expiresAtMs: nowMs + lifetimeMs, nonce: nonce(), parent: nil, depth: 0, facts: facts)
        return Credential(chain: [SignedToken.sign(token, with: rootKey)], holderKey: holderKey)
    }

    /// A child of `parent` (whose holder key signs it) for `audience` — a new holder key it
    /// carries if `holderKey` is given — with `capabilities`, each contained in one of the parent's.
    public static func delegate(
        from parent: Credential, holderKey: SigningKey?, audience: Audience? = nil, capabilities: [Capability], lifetimeMs: Int64,
        nowMs: Int64, facts: [Token.Fact] = [], limits: Limits = .standard
    ) throws(Problem) -> Credential {
        guard let signer = parent.holderKey else { throw .noHolderKey }
        guard case .key(let parentAudience) = parent.leaf.token.audience, parentAudience == signer.publicKey else {
            throw .holderKeyMismatch
        }
        let parentToken = parent.leaf.token
        guard parentToken.capabilities.contains(.delegate) else { throw .cannotDelegate }
        let audience = audience ?? holderKey.map { .key($0.publicKey) } ?? .bearer
        try check(capabilities: capabilities, audience: audience, lifetimeMs: lifetimeMs, limits: limits)
        for capability in capabilities where !parentToken.capabilities.contains(where: { $0.contains(capability) }) {
            throw .widened(capability)
        }
        guard parentToken.depth + 1 <= limits.delegationDepthMax else { throw .tooDeep(limit: limits.delegationDepthMax) }
        guard nowMs + lifetimeMs <= parentToken.expiresAtMs else { throw .outlivesParent(parentExpiresAtMs: parentToken.expiresAtMs) }
        let token = Token(
            issuer: signer.publicKey, audience: audience, capabilities: capabilities, issuedAtMs: nowMs, notBeforeMs: nowMs,
            expiresAtMs: nowMs + lifetimeMs, nonce: nonce(), parent: parent.id, depth: parentToken.depth + 1, facts: facts)
        return Credential(chain: [SignedToken.sign(token, with: signer)] + parent.chain, holderKey: holderKey)
    }

    private static func check(capabilities: [Capability], audience: Audience, lifetimeMs: Int64, limits: Limits) throws(Problem) {
        guard !capabilities.isEmpty else { throw .noCapabilities }
        guard capabilities.count <= limits.capabilitiesPerTokenMax else {
            throw .tooManyCapabilities(count: capabilities.count, limit: limits.capabilitiesPerTokenMax)
        }
        guard lifetimeMs > 0 else { throw .badLifetime }
        if case .bearer = audience, lifetimeMs > limits.bearerLifetimeMsMax {
            throw .bearerLifetimeTooLong(lifetimeMs: lifetimeMs, limitMs: limits.bearerLifetimeMsMax)
        }
    }

    static func nonce() -> Bytes {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// Every capability there is, on every key: what a root credential holds.
    public static let everything: [Capability] =
        [.full(prefix: []), .coordination(prefix: []), .clusterAdmin, .delegate]
        + Capability.Service.allCases.map { .service($0, .full, prefix: []) }
}
