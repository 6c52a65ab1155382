import AspenAuth
import AspenCore
import AspenKV
import Testing

/// A root key, a trust state that trusts it, and helpers to mint chains.
struct Fixture {
    let root = SigningKey()
    let now: Int64 = 1_800_000_000_000
    var limits = Limits()
    let day: Int64 = 86_400_000

    var verifier: TokenVerifier { TokenVerifier(limits: limits, trust: TrustState(roots: [root.publicKey])) }

    func rootCredential(_ capabilities: [Capability] = TokenIssuer.everything, lifetime: Int64? = nil) throws -> Credential {
        try TokenIssuer.root(
            rootKey: root, holderKey: SigningKey(), capabilities: capabilities, lifetimeMs: lifetime ?? 30 * day, nowMs: now, limits: limits)
    }

    func child(of parent: Credential, _ capabilities: [Capability], lifetime: Int64? = nil) throws -> Credential {
        try TokenIssuer.delegate(
            from: parent, holderKey: SigningKey(), capabilities: capabilities, lifetimeMs: lifetime ?? day, nowMs: now, limits: limits)
    }

    /// A child signed by `parent`'s holder with whatever fields `edit` sets: what a tool that
    /// skips the minting checks would make.
    func forgedChild(of parent: Credential, _ edit: (inout Token) -> Void) -> Credential {
        let holder = SigningKey()
        var token = Token(
            issuer: parent.holderKey!.publicKey, audience: .key(holder.publicKey), capabilities: [.read(prefix: Array("app/".utf8))],
            issuedAtMs: now, notBeforeMs: now, expiresAtMs: now + day, nonce: [1, 2, 3], parent: parent.id,
            depth: parent.leaf.token.depth + 1)
        edit(&token)
        return Credential(chain: [SignedToken.sign(token, with: parent.holderKey!)] + parent.chain, holderKey: holder)
    }
}

func bytes(_ text: String) -> Bytes { Array(text.utf8) }

@Suite("Capability tokens: minting, encoding and verification")
struct TokenTests {
    @Test("a root credential and a delegated one verify on any node that trusts the root, offline")
    func happyPath() throws {
        let fixture = Fixture()
        let root = try fixture.rootCredential()
        let child = try fixture.child(of: root, [.read(prefix: bytes("app/")), .write(prefix: bytes("app/jobs/"))])
        let verified = try fixture.verifier.verify(child, nowMs: fixture.now + 1000)
        #expect(verified.id == child.id)
        #expect(verified.links.count == 2)
        try fixture.verifier.authorize(
            verified, presented: child.holderKey!.publicKey, needed: .read(KeySelection.prefix(bytes("app/reports/"))), nowMs: fixture.now)
        try fixture.verifier.authorize(verified, presented: child.holderKey!.publicKey, needed: .write(bytes("app/jobs/1")), nowMs: fixture.now)
        #expect(throws: Denial.notPermitted(id: child.id, needed: .write(bytes("app/x")))) {
            try fixture.verifier.authorize(verified, presented: child.holderKey!.publicKey, needed: .write(bytes("app/x")), nowMs: fixture.now)
        }
    }

    @Test("encoding round trips, in binary and text, and a token has exactly one encoding")
    func codec() throws {
        let fixture = Fixture()
        let credential = try fixture.child(of: fixture.rootCredential(), [.watch(prefix: [0, 0xFF, 0x25])])
        let decoded = try Credential(text: credential.text, limits: fixture.limits)
        #expect(decoded.encoded == credential.encoded)
        #expect(decoded.chain.map(\.id) == credential.chain.map(\.id))
        #expect(decoded.holderKey?.publicKey == credential.holderKey?.publicKey)
        // A varint written long (0x80 0x00 for 0) decodes to the same value but is not the
        // canonical encoding: refused.
        // The issue time's varint starts after version, issuer and audience (1 + 32 + 33 bytes);
        // rewrite its last byte as a continuation and a zero.
        var body = credential.leaf.body
        var end = 66
        while body[end] & 0x80 != 0 { end += 1 }
        body.replaceSubrange(end...end, with: [body[end] | 0x80, 0])
        #expect(throws: DecodingError.invalid("the token is not in its one canonical encoding")) { try Token(decoding: body, limits: fixture.limits) }
        #expect(throws: DecodingError.trailingBytes(1)) { try Token(decoding: credential.leaf.body + [0], limits: fixture.limits) }
    }

    @Test("capability text forms round trip, and bad ones are refused with the list of valid forms")
    func capabilityText() throws {
        let all: [Capability] = [
            .read(prefix: bytes("app/")), .write(prefix: []), .delete(prefix: [0x00, 0x25, 0xFF]), .watch(prefix: bytes("a b")),
            .full(prefix: bytes("x")), .coordination(prefix: bytes("locks/")), .clusterAdmin, .delegate,
            .service(.blob, .read, prefix: bytes("tags/")), .service(.secrets, .full, prefix: bytes("team-a/")),
        ]
        for capability in all {
            #expect(try Capability.parse(capability.description) == capability, "\(capability)")
        }
        #expect(Capability("read:app%2") == nil)
        #expect(throws: CapabilityParseError.unknown("reed:app/")) { try Capability.parse("reed:app/") }
        #expect("\(CapabilityParseError.unknown("x"))".contains("cluster-admin"))
    }

    @Test("a forged signature or an altered capability is refused")
    func forged() throws {
        let fixture = Fixture()
        let root = try fixture.rootCredential()
        let child = try fixture.child(of: root, [.read(prefix: bytes("app/"))])
        // The same token with a wider capability, keeping the original signature.
        var widened = child.leaf.token
        widened.capabilities = [.read(prefix: [])]
        let envelope = ByteWriterHelper.envelope(body: widened.encoded, signature: child.leaf.signature)
        let altered = Credential(chain: [try SignedToken(decoding: envelope, limits: fixture.limits)] + root.chain)
        #expect(throws: Denial.badSignature(link: 0, id: altered.id)) { try fixture.verifier.verify(altered, nowMs: fixture.now) }
        // A signature by someone else.
        let stranger = SigningKey()
        var token = child.leaf.token
        token.issuer = stranger.publicKey
        let signedByStranger = Credential(chain: [SignedToken.sign(token, with: stranger)] + root.chain)
        #expect(throws: Denial.self) { try fixture.verifier.verify(signedByStranger, nowMs: fixture.now) }
    }

    @Test("an untrusted root, or no trusted root at all, denies everything")
    func roots() throws {
        let fixture = Fixture()
        let credential = try fixture.rootCredential()
        let other = TokenVerifier(trust: TrustState(roots: [SigningKey().publicKey]))
        #expect(throws: Denial.untrustedRoot(issuer: fixture.root.publicKey)) { try other.verify(credential, nowMs: fixture.now) }
        #expect(throws: Denial.noTrustedRoots) { try TokenVerifier().verify(credential, nowMs: fixture.now) }
    }

    @Test("expiry and not-before are checked with the bounded clock skew, at every link")
    func time() throws {
        var fixture = Fixture()
        fixture.limits.tokenClockSkewMs = 1000
        let root = try fixture.rootCredential(lifetime: 10_000)
        let child = try fixture.child(of: root, [.read(prefix: [])], lifetime: 5_000)
        let verifier = fixture.verifier
        _ = try verifier.verify(child, nowMs: fixture.now - 999)
        #expect(throws: Denial.notYetValid(link: 0, id: child.id, notBeforeMs: fixture.now)) {
            try verifier.verify(child, nowMs: fixture.now - 1001)
        }
        _ = try verifier.verify(child, nowMs: fixture.now + 5_999)
        #expect(throws: Denial.expired(link: 0, id: child.id, expiresAtMs: fixture.now + 5_000)) {
            try verifier.verify(child, nowMs: fixture.now + 6_000)
        }
        // A child forged to outlive its parent is refused even while both are valid.
        let outliving = fixture.forgedChild(of: root) { $0.expiresAtMs = fixture.now + 20_000 }
        #expect(throws: Denial.outlivesParent(link: 0, id: outliving.id, expiresAtMs: fixture.now + 20_000, parentExpiresAtMs: fixture.now + 10_000)) {
            try verifier.verify(outliving, nowMs: fixture.now)
        }
    }

    @Test("a child that claims more than its parent, signed by a tool that skips the minting checks, is refused naming the capability")
    func widenedDelegation() throws {
        let fixture = Fixture()
        let parent = try fixture.child(of: fixture.rootCredential(), [.read(prefix: bytes("app/")), .delegate])
        let wide = fixture.forgedChild(of: parent) { $0.capabilities = [.read(prefix: bytes("app/")), .write(prefix: bytes("app/"))] }
        #expect(throws: Denial.widened(link: 0, id: wide.id, capability: .write(prefix: bytes("app/")))) {
            try fixture.verifier.verify(wide, nowMs: fixture.now)
        }
        #expect(throws: TokenIssuer.Problem.widened(.write(prefix: bytes("app/")))) {
            try fixture.child(of: parent, [.write(prefix: bytes("app/"))])
        }
        let narrower = try fixture.child(of: parent, [.read(prefix: bytes("app/reports/"))])
        _ = try fixture.verifier.verify(narrower, nowMs: fixture.now)
    }

    @Test("a broken chain is refused at the link that breaks it: audience, delegate, parent id, depth")
    func brokenChain() throws {
        let fixture = Fixture()
        let root = try fixture.rootCredential()
        let noDelegate = try fixture.child(of: root, [.read(prefix: [])])
        let fromNoDelegate = fixture.forgedChild(of: noDelegate) { _ in }
        #expect(throws: Denial.parentCannotDelegate(link: 0, id: fromNoDelegate.id)) { try fixture.verifier.verify(fromNoDelegate, nowMs: fixture.now) }
        #expect(throws: TokenIssuer.Problem.cannotDelegate) { try fixture.child(of: noDelegate, [.read(prefix: [])]) }

        let wrongIssuer = fixture.forgedChild(of: root) { $0.issuer = SigningKey().publicKey }
        #expect(throws: Denial.self) { try fixture.verifier.verify(wrongIssuer, nowMs: fixture.now) }
        let other = try fixture.rootCredential()
        let wrongParent = fixture.forgedChild(of: root) { $0.parent = other.id }
        #expect(throws: Denial.brokenChain(link: 0, id: wrongParent.id, problem: "its parent id is not the id of the next token in the chain")) {
            try fixture.verifier.verify(wrongParent, nowMs: fixture.now)
        }
        let wrongDepth = fixture.forgedChild(of: root) { $0.depth = 3 }
        #expect(throws: Denial.self) { try fixture.verifier.verify(wrongDepth, nowMs: fixture.now) }
        // A chain cut short: the child alone, naming a parent it does not carry.
        let cut = Credential(chain: [wrongDepth.leaf])
        #expect(throws: Denial.self) { try fixture.verifier.verify(cut, nowMs: fixture.now) }
    }

    @Test("delegation 8 deep verifies; a ninth link is refused, minted or forged")
    func depth() throws {
        let fixture = Fixture()
        var credential = try fixture.rootCredential()
        for _ in 1...8 { credential = try fixture.child(of: credential, [.read(prefix: []), .delegate]) }
        #expect(credential.leaf.token.depth == 8)
        _ = try fixture.verifier.verify(credential, nowMs: fixture.now)
        #expect(throws: TokenIssuer.Problem.tooDeep(limit: 8)) { try fixture.child(of: credential, [.read(prefix: [])]) }
        let ninth = fixture.forgedChild(of: credential) { $0.capabilities = [.read(prefix: [])] }
        // Its depth (9) is past the bound the decoder reads, and the chain has ten tokens.
        #expect(throws: CredentialError.self) { try Credential(decoding: ninth.encoded, limits: fixture.limits) }
        #expect(throws: Denial.self) { try fixture.verifier.verify(ninth, nowMs: fixture.now) }
    }

    @Test("33 capabilities are refused when minted and when decoded")
    func tooManyCapabilities() throws {
        let fixture = Fixture()
        let many = (0..<33).map { Capability.read(prefix: bytes("k\($0)/")) }
        #expect(throws: TokenIssuer.Problem.tooManyCapabilities(count: 33, limit: 32)) { try fixture.rootCredential(many) }
        _ = try fixture.rootCredential(Array(many.prefix(32)))
        let token = Token(
            issuer: fixture.root.publicKey, audience: .bearer, capabilities: many, issuedAtMs: 0, notBeforeMs: 0, expiresAtMs: 1, nonce: [],
            parent: nil, depth: 0)
        #expect(throws: DecodingError.lengthTooLarge(length: 33, limit: 32)) { try Token(decoding: token.encoded, limits: fixture.limits) }
    }

    @Test("an oversized token or credential is refused by its size, naming the limit, before anything is decoded or verified")
    func oversized() throws {
        let fixture = Fixture()
        let huge = Bytes(repeating: 0xAB, count: fixture.limits.credentialBytesMax + 1)
        #expect(throws: CredentialError.tooLarge(bytes: huge.count, limit: fixture.limits.credentialBytesMax, name: "credentialBytesMax")) {
            try Credential(decoding: huge, limits: fixture.limits)
        }
        let bigToken = Bytes(repeating: 0, count: fixture.limits.tokenBytesMax + 1)
        #expect(throws: DecodingError.lengthTooLarge(length: UInt64(bigToken.count), limit: fixture.limits.tokenBytesMax)) {
            try SignedToken(decoding: bigToken, limits: fixture.limits)
        }
        let text = Credential.textPrefix + String(repeating: "A", count: 100_000)
        #expect(throws: CredentialError.self) { try Credential(text: text, limits: fixture.limits) }
    }

    @Test("revoking a token revokes every token delegated from it; an issuer cutoff revokes what it issued before")
    func revocation() throws {
        let fixture = Fixture()
        let root = try fixture.rootCredential()
        let parent = try fixture.child(of: root, [.read(prefix: []), .delegate])
        let child = try fixture.child(of: parent, [.read(prefix: bytes("a/"))])
        let verifier = fixture.verifier
        let verified = try verifier.verify(child, nowMs: fixture.now)
        verifier.update(TrustState(roots: [fixture.root.publicKey], revoked: [parent.id]))
        #expect(throws: Denial.revoked(link: 1, id: parent.id)) { try verifier.verify(child, nowMs: fixture.now) }
        #expect(throws: Denial.revoked(link: 1, id: parent.id)) {
            try verifier.authorize(verified, presented: child.holderKey!.publicKey, needed: .nothing, nowMs: fixture.now)
        }
        let issuer = parent.holderKey!.publicKey
        verifier.update(TrustState(roots: [fixture.root.publicKey], issuerCutoffs: [issuer: fixture.now + 1]))
        #expect(throws: Denial.revokedByIssuerCutoff(link: 0, id: child.id, issuer: issuer, cutoffMs: fixture.now + 1)) {
            try verifier.verify(child, nowMs: fixture.now)
        }
        verifier.update(TrustState(roots: [fixture.root.publicKey], issuerCutoffs: [issuer: fixture.now]))
        _ = try verifier.verify(child, nowMs: fixture.now)
    }

    @Test("a token addressed to a key is refused over a connection that proved another; a bearer token needs no key but lives at most an hour")
    func audience() throws {
        let fixture = Fixture()
        let root = try fixture.rootCredential()
        let child = try fixture.child(of: root, [.read(prefix: [])])
        let verified = try fixture.verifier.verify(child, nowMs: fixture.now)
        let stranger = SigningKey().publicKey
        #expect(throws: Denial.wrongAudience(id: child.id, audience: child.holderKey!.publicKey, presented: stranger)) {
            try fixture.verifier.authorize(verified, presented: stranger, needed: .read(KeySelection.key(bytes("k"))), nowMs: fixture.now)
        }
        let bearer = try TokenIssuer.delegate(
            from: root, holderKey: nil, audience: .bearer, capabilities: [.read(prefix: [])], lifetimeMs: 600_000, nowMs: fixture.now)
        let verifiedBearer = try fixture.verifier.verify(bearer, nowMs: fixture.now)
        try fixture.verifier.authorize(verifiedBearer, presented: nil, needed: .read(KeySelection.key(bytes("k"))), nowMs: fixture.now)
        #expect(throws: TokenIssuer.Problem.bearerLifetimeTooLong(lifetimeMs: 7_200_000, limitMs: 3_600_000)) {
            try TokenIssuer.delegate(from: root, holderKey: nil, audience: .bearer, capabilities: [.read(prefix: [])], lifetimeMs: 7_200_000, nowMs: fixture.now)
        }
        let longBearer = fixture.forgedChild(of: root) {
            $0.audience = .bearer
            $0.expiresAtMs = fixture.now + 7_200_000
        }
        #expect(throws: Denial.bearerLifetimeTooLong(link: 0, id: longBearer.id, lifetimeMs: 7_200_000, limitMs: 3_600_000)) {
            try fixture.verifier.verify(longBearer, nowMs: fixture.now)
        }
    }

    @Test("a verified chain is remembered until the roots change")
    func memo() throws {
        let fixture = Fixture()
        let credential = try fixture.child(of: fixture.rootCredential(), [.read(prefix: [])])
        let verifier = fixture.verifier
        #expect(verifier.remembered(credential.id) == nil)
        _ = try verifier.verify(credential, nowMs: fixture.now)
        #expect(verifier.remembered(credential.id) != nil)
        verifier.update(TrustState(roots: [fixture.root.publicKey], revoked: [TokenID(bytes: Bytes(repeating: 1, count: 32))!]))
        #expect(verifier.remembered(credential.id) != nil, "a revocation of another token flushed the memo")
        verifier.update(TrustState(roots: [SigningKey().publicKey]))
        #expect(verifier.remembered(credential.id) == nil)
        #expect(throws: Denial.self) { try verifier.verify(credential, nowMs: fixture.now) }
    }
}

enum ByteWriterHelper {
    static func envelope(body: Bytes, signature: Bytes) -> Bytes {
        var writer = ByteWriter()
        writer.writeBytes(body)
        writer.writeRaw(signature)
        return writer.bytes
    }
}

@Suite("Capability algebra: containment is a partial order, delegation never widens, prefixes confine ranges")
struct CapabilityAlgebraTests {
    static func random(_ random: inout SplitMix64) -> Capability {
        let prefixes: [Bytes] = [[], bytes("a"), bytes("a/"), bytes("a/b"), bytes("b"), [0xFF], [0xFF, 0xFF], bytes("a/b/c")]
        let prefix = prefixes[Int(random.next(in: 0...UInt64(prefixes.count - 1)))]
        switch random.next(in: 0...9) {
        case 0: return .read(prefix: prefix)
        case 1: return .write(prefix: prefix)
        case 2: return .delete(prefix: prefix)
        case 3: return .watch(prefix: prefix)
        case 4: return .full(prefix: prefix)
        case 5: return .coordination(prefix: prefix)
        case 6: return .clusterAdmin
        case 7: return .delegate
        default:
            let service = Capability.Service.allCases[Int(random.next(in: 0...UInt64(Capability.Service.allCases.count - 1)))]
            let access = Capability.Access.allCases[Int(random.next(in: 0...2))]
            return .service(service, access, prefix: prefix)
        }
    }

    /// A capability `capability` contains: a longer prefix, or a narrower kind.
    static func narrowed(_ capability: Capability, _ random: inout SplitMix64) -> Capability {
        let more: Bytes = random.chance(0.5) ? [] : bytes("/z")
        switch capability {
        case .read(let prefix): return .read(prefix: prefix + more)
        case .write(let prefix): return .write(prefix: prefix + more)
        case .delete(let prefix): return .delete(prefix: prefix + more)
        case .watch(let prefix): return .watch(prefix: prefix + more)
        case .full(let prefix): return random.chance(0.5) ? .read(prefix: prefix + more) : .full(prefix: prefix + more)
        case .coordination(let prefix): return .coordination(prefix: prefix + more)
        case .service(let service, let access, let prefix): return .service(service, access == .full ? .read : access, prefix: prefix + more)
        case .clusterAdmin, .delegate: return capability
        }
    }

    static func randomRequirement(_ random: inout SplitMix64) -> Requirement {
        let keys: [Bytes] = [[], bytes("a"), bytes("a/"), bytes("a/b"), bytes("a/b/c"), bytes("b"), [0xFF, 0x01], bytes("a0")]
        let start = keys[Int(random.next(in: 0...UInt64(keys.count - 1)))]
        let bounds: KeyBounds
        switch random.next(in: 0...3) {
        case 0: bounds = KeySelection.key(start).bounds
        case 1: bounds = KeySelection.prefix(start).bounds
        case 2: bounds = KeyBounds(start: start, end: nil)
        default: bounds = KeyBounds(start: start, end: keys[Int(random.next(in: 0...UInt64(keys.count - 1)))])
        }
        switch random.next(in: 0...7) {
        case 0: return .read(bounds)
        case 1: return .write(bounds)
        case 2: return .delete(bounds)
        case 3: return .watch(bounds)
        case 4: return .coordination(name: start)
        case 5: return .clusterAdmin
        case 6: return .lease
        default: return .service(.blob, .read, resource: start)
        }
    }

    @Test("containment is reflexive, antisymmetric and transitive over random capabilities")
    func partialOrder() {
        var random = SplitMix64(seed: 23)
        let all = (0..<200).map { _ in Self.random(&random) }
        for a in all {
            #expect(a.contains(a), "\(a)")
            for b in all where a.contains(b) {
                if b.contains(a) { #expect(a == b, "\(a) and \(b) contain each other") }
                for c in all where b.contains(c) { #expect(a.contains(c), "\(a) ⊇ \(b) ⊇ \(c)") }
            }
        }
    }

    @Test("whatever a contained capability grants, the containing one grants too")
    func containmentRespectsGrants() {
        var random = SplitMix64(seed: 29)
        let all = (0..<150).map { _ in Self.random(&random) }
        let requirements = (0..<300).map { _ in Self.randomRequirement(&random) }
        var granted = 0
        for a in all {
            for b in all where a.contains(b) {
                for requirement in requirements where b.grants(requirement) {
                    granted += 1
                    #expect(a.grants(requirement), "\(b) grants \(requirement.summary) but \(a), which contains it, does not")
                }
            }
        }
        #expect(granted > 1000, "the random requirements were too rarely granted to test anything")
    }

    @Test("a forged child verifies exactly when each of its capabilities is contained in one of its parent's, and never grants more")
    func delegationNeverWidens() throws {
        let fixture = Fixture()
        var random = SplitMix64(seed: 31)
        let root = try fixture.rootCredential()
        var accepted = 0
        var refused = 0
        for _ in 0..<60 {
            let parentCapabilities = (0..<Int(random.next(in: 1...4))).map { _ in Self.random(&random) } + [.delegate]
            let parent = try fixture.child(of: root, Array(Set(parentCapabilities)))
            // Mostly narrowings of the parent's capabilities; sometimes one drawn at random.
            var childCapabilities = parentCapabilities.filter { _ in random.chance(0.5) }.map { Self.narrowed($0, &random) }
            if childCapabilities.isEmpty || random.chance(0.4) { childCapabilities.append(Self.random(&random)) }
            let child = fixture.forgedChild(of: parent) { $0.capabilities = childCapabilities }
            let contained = childCapabilities.allSatisfy { capability in parent.leaf.token.capabilities.contains { $0.contains(capability) } }
            do {
                let verified = try fixture.verifier.verify(child, nowMs: fixture.now)
                accepted += 1
                #expect(contained, "accepted a child with \(childCapabilities) under \(parent.leaf.token.capabilities)")
                let parentVerified = try fixture.verifier.verify(parent, nowMs: fixture.now)
                for _ in 0..<30 {
                    let requirement = Self.randomRequirement(&random)
                    if verified.firstUngranted(requirement) == nil {
                        #expect(parentVerified.firstUngranted(requirement) == nil, "the child grants \(requirement.summary), its parent does not")
                    }
                }
            } catch {
                refused += 1
                #expect(!contained, "refused a contained child: \(error)")
            }
        }
        #expect(accepted > 5 && refused > 5, "accepted \(accepted), refused \(refused)")
    }

    @Test("a prefix confines whole ranges: a key, a prefix, a range, and from-key only under the empty prefix")
    func prefixConfinesRanges() {
        let app = Capability.read(prefix: bytes("app/"))
        #expect(app.grants(.read(KeySelection.key(bytes("app/x")))))
        #expect(app.grants(.read(KeySelection.prefix(bytes("app/")))))
        #expect(app.grants(.read(KeySelection.prefix(bytes("app/reports/")))))
        #expect(app.grants(.read(KeySelection.range(start: bytes("app/a"), end: bytes("app0")))), "app0 is app/'s prefix end")
        #expect(!app.grants(.read(KeySelection.range(start: bytes("app/a"), end: bytes("app1")))))
        #expect(!app.grants(.read(KeySelection.prefix(bytes("app")))), "app is wider than app/")
        #expect(!app.grants(.read(KeySelection.range(start: bytes("app/"), end: nil))), "from-key runs past the prefix")
        #expect(!app.grants(.read(KeySelection.key(bytes("apq")))))
        #expect(Capability.read(prefix: []).grants(.read(KeySelection.range(start: bytes("x"), end: nil))))
        #expect(Capability.read(prefix: [0xFF]).grants(.read(KeyBounds(start: [0xFF, 0x01], end: nil))), "0xFF's range runs to the end")
        #expect(!app.grants(.write(KeySelection.key(bytes("app/x")).bounds)), "read does not grant write")
        #expect(Capability.full(prefix: bytes("app/")).grants(.delete(KeySelection.key(bytes("app/x")))))
        #expect(Capability.write(prefix: bytes("x/")).grants(.lease))
        #expect(!Capability.read(prefix: []).grants(.lease))
    }
}
