import AspenAuth
import AspenCore
import AspenKV

/// Capability credentials: what a client presents with every request, before the node knows
/// anything of who sent it.
extension FuzzTarget {
    static let authTargets: [FuzzTarget] = [credential, credentialText, capabilityText, authWire]

    /// Decoding, then verification against a verifier that trusts the seeds' root: whatever
    /// decodes is verified (signatures, links, containment, times) without crashing.
    static let credential = FuzzTarget(
        name: "credential", summary: "Credential(decoding:limits:) and TokenVerifier.verify: the chain a request carries",
        seeds: { AuthSeeds.credentials.map(\.encoded) }
    ) { input in
        let outcome = FuzzCheck.roundTrip(
            input, decode: { try Credential(decoding: $0, limits: .standard) }, encode: \.encoded, canonical: true,
            bounds: { credential in
                credential.chain.count > Limits.standard.delegationDepthMax + 1
                    ? "\(credential.chain.count) tokens"
                    : credential.chain.first { $0.token.capabilities.count > Limits.standard.capabilitiesPerTokenMax }.map { "\($0.token.capabilities.count) capabilities" }
            })
        if case .decoded = outcome, let decoded = try? Credential(decoding: input, limits: .standard) {
            _ = try? AuthSeeds.verifier.verify(decoded, nowMs: AuthSeeds.now)
        }
        return outcome
    }

    static let credentialText = FuzzTarget(
        name: "credential-text", summary: "Credential(text:limits:): a credential as pasted (etcd's password, a file)",
        seeds: { AuthSeeds.credentials.map { Array($0.text.utf8) } }
    ) { input in
        FuzzCheck.roundTrip(
            input, decode: { try Credential(text: String(decoding: $0, as: UTF8.self), limits: .standard) }, encode: { Array($0.text.utf8) })
    }

    static let capabilityText = FuzzTarget(
        name: "capability-text", summary: "Capability.parse: --cap arguments",
        seeds: { TokenIssuer.everything.map { Array($0.description.utf8) } + [Array("read:app%2F%00x".utf8), Array("blob-read:tags/".utf8)] }
    ) { input in
        FuzzCheck.roundTrip(
            input, decode: { try Capability.parse(String(decoding: $0, as: UTF8.self)) }, encode: { Array($0.description.utf8) })
    }

    static let authWire = FuzzTarget(
        name: "auth-wire", summary: "AuthWire: the auth status, root changes and revocations of cluster.auth-*",
        seeds: {
            selected(0, [AuthWire.Status(required: true, clusterRequires: false, roots: [AuthSeeds.root.publicKey], revokedTokens: 3, issuerCutoffs: 1, denials: 9).encoded])
                + selected(1, [AuthWire.RootChange.add(AuthSeeds.root.publicKey).encoded, AuthWire.RootChange.remove(AuthSeeds.root.publicKey).encoded])
                + selected(2, [AuthWire.Revocation.token(AuthSeeds.credentials[0].id, expiresAtMs: 5).encoded,
                    AuthWire.Revocation.issuedBefore(AuthSeeds.root.publicKey, cutoffMs: -1).encoded])
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try AuthWire.Status(decoding: $0) }, encode: \.encoded) },
            { FuzzCheck.roundTrip($0, decode: { try AuthWire.RootChange(decoding: $0) }, encode: \.encoded) },
            { FuzzCheck.roundTrip($0, decode: { try AuthWire.Revocation(decoding: $0) }, encode: \.encoded) },
        ])
    }
}

enum AuthSeeds {
    static let root = SigningKey(seed: Array(1...32))!
    static let holder = SigningKey(seed: Array(33...64))!
    static let now: Int64 = 1_800_000_000_000
    static let verifier = TokenVerifier(trust: TrustState(roots: [root.publicKey]))

    /// Fixed nonces, so the seeds are the same on every run.
    static let credentials: [Credential] = {
        let rootToken = SignedToken.sign(
            Token(
                issuer: root.publicKey, audience: .key(holder.publicKey), capabilities: TokenIssuer.everything, issuedAtMs: now, notBeforeMs: now,
                expiresAtMs: now + 86_400_000, nonce: [1, 2, 3, 4], parent: nil, depth: 0, facts: [Token.Fact(name: "name", value: "root")]),
            with: root)
        let child = SignedToken.sign(
            Token(
                issuer: holder.publicKey, audience: .bearer, capabilities: [.read(prefix: Array("app/".utf8)), .watch(prefix: [0xFF, 0x00])],
                issuedAtMs: now, notBeforeMs: now, expiresAtMs: now + 600_000, nonce: [5], parent: rootToken.id, depth: 1),
            with: holder)
        return [Credential(chain: [rootToken], holderKey: holder), Credential(chain: [child, rootToken])]
    }()
}
