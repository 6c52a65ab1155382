import AspenCore
import AspenKV
import Crypto

/// 32 bytes with a name: a key or a token id, shown in hexadecimal and ordered by its bytes.
public protocol Bytes32: Sendable, Hashable, Comparable, CustomStringConvertible {
    var bytes: Bytes { get }
    /// From exactly 32 bytes.
    init(exactly bytes: Bytes)
}

extension Bytes32 {
    public init?(bytes: Bytes) {
        guard bytes.count == 32 else { return nil }
        self.init(exactly: bytes)
    }

    public init?(hex: String) {
        guard let bytes = Hex.decode(hex), bytes.count == 32 else { return nil }
        self.init(exactly: bytes)
    }

    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }
    public static func < (a: Self, b: Self) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// An Ed25519 public key: a token's issuer or audience, a trusted root.
public struct PublicKey: Bytes32 {
    public let bytes: Bytes
    public init(exactly bytes: Bytes) { self.bytes = bytes }

    func isValidSignature(_ signature: Bytes, for message: Bytes) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else { return false }
        return key.isValidSignature(signature, for: message)
    }
}

/// A signing key: a root key, or the key a credential's holder signs child tokens with.
public struct SigningKey: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey

    public init() { privateKey = .init() }
    public init(_ privateKey: Curve25519.Signing.PrivateKey) { self.privateKey = privateKey }

    /// From its 32-byte seed.
    public init?(seed: Bytes) {
        guard seed.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: seed) else { return nil }
        privateKey = key
    }

    public var seed: Bytes { Array(privateKey.rawRepresentation) }
    public var publicKey: PublicKey { PublicKey(bytes: Array(privateKey.publicKey.rawRepresentation))! }

    func sign(_ message: Bytes) -> Bytes {
        // Signing with a valid key does not fail.
        Array(try! privateKey.signature(for: message))
    }
}

/// A token's id: SHA-256 of the bytes its issuer signed (domain and body). A second signature
/// over the same bytes is the same token.
public struct TokenID: Bytes32 {
    public let bytes: Bytes
    public init(exactly bytes: Bytes) { self.bytes = bytes }
}

/// Who may use a token: the holder of one key (proven by the TLS handshake of the connection it
/// comes over), or whoever holds the token (a bearer token, with a short lifetime).
public enum Audience: Sendable, Hashable {
    case key(PublicKey)
    case bearer
}

/// What a token says. Signed by `issuer`; see `SignedToken`.
public struct Token: Sendable, Hashable {
    public static let version: UInt8 = 1
    public var issuer: PublicKey
    public var audience: Audience
    public var capabilities: [Capability]
    /// Unix milliseconds.
    public var issuedAtMs: Int64
    public var notBeforeMs: Int64
    public var expiresAtMs: Int64
    /// Makes two tokens with the same fields distinct.
    public var nonce: Bytes
    /// The token this one was delegated from; nil for a root token.
    public var parent: TokenID?
    /// 0 for a root token, the parent's depth plus one for a child.
    public var depth: Int
    /// Free-form statements about the holder (a name, a purpose), never used to authorize.
    public var facts: [Fact]

    public struct Fact: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(
        issuer: PublicKey, audience: Audience, capabilities: [Capability], issuedAtMs: Int64, notBeforeMs: Int64, expiresAtMs: Int64,
        nonce: Bytes, parent: TokenID?, depth: Int, facts: [Fact] = []
    ) {
        self.issuer = issuer
        self.audience = audience
        self.capabilities = capabilities
        self.issuedAtMs = issuedAtMs
        self.notBeforeMs = notBeforeMs
        self.expiresAtMs = expiresAtMs
        self.nonce = nonce
        self.parent = parent
        self.depth = depth
        self.facts = facts
    }

    /// Bounds on what a token may hold; decoding refuses more.
    static let nonceBytesMax = 32
    static let factsMax = 16
    static let factNameBytesMax = 64
    static let factValueBytesMax = 512
    static let prefixBytesMax = 1024

    /// The deterministic encoding that is signed.
    public var encoded: Bytes {
        var writer = ByteWriter(capacity: 256)
        writer.write(Self.version)
        writer.writeRaw(issuer.bytes)
        switch audience {
        case .bearer:
            writer.write(UInt8(0))
        case .key(let key):
            writer.write(UInt8(1))
            writer.writeRaw(key.bytes)
        }
        writer.writeVarint(signed: issuedAtMs)
        writer.writeVarint(signed: notBeforeMs)
        writer.writeVarint(signed: expiresAtMs)
        writer.writeBytes(nonce)
        if let parent {
            writer.write(UInt8(1))
            writer.writeRaw(parent.bytes)
        } else {
            writer.write(UInt8(0))
        }
        writer.writeVarint(UInt64(depth))
        writer.writeVarint(UInt64(capabilities.count))
        for capability in capabilities { capability.encode(into: &writer) }
        writer.writeVarint(UInt64(facts.count))
        for fact in facts {
            writer.writeString(fact.name)
            writer.writeString(fact.value)
        }
        return writer.bytes
    }

    /// Decodes a token body, refusing anything past the bounds and any encoding other than the
    /// one `encoded` writes (so one token has one encoding).
    public init(decoding bytes: Bytes, limits: Limits) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version == Self.version else { throw .invalid("token version \(version); this node reads version \(Self.version)") }
        issuer = PublicKey(exactly: try reader.readRaw(32))
        switch try reader.readByte() {
        case 0: audience = .bearer
        case 1: audience = .key(PublicKey(exactly: try reader.readRaw(32)))
        case let tag: throw .unknownTag(tag, context: "token audience")
        }
        issuedAtMs = try reader.readSignedVarint()
        notBeforeMs = try reader.readSignedVarint()
        expiresAtMs = try reader.readSignedVarint()
        nonce = try reader.readBytes(limit: Self.nonceBytesMax)
        switch try reader.readByte() {
        case 0: parent = nil
        case 1: parent = TokenID(exactly: try reader.readRaw(32))
        case let tag: throw .unknownTag(tag, context: "token parent")
        }
        depth = try reader.readCount(limit: limits.delegationDepthMax)
        let count = try reader.readCount(limit: limits.capabilitiesPerTokenMax)
        var capabilities: [Capability] = []
        capabilities.reserveCapacity(count)
        for _ in 0..<count { capabilities.append(try Capability(decoding: &reader)) }
        self.capabilities = capabilities
        let factCount = try reader.readCount(limit: Self.factsMax)
        var facts: [Fact] = []
        for _ in 0..<factCount {
            facts.append(Fact(name: try reader.readString(limit: Self.factNameBytesMax), value: try reader.readString(limit: Self.factValueBytesMax)))
        }
        self.facts = facts
        try reader.expectEnd()
        guard encoded == bytes else { throw .invalid("the token is not in its one canonical encoding") }
    }
}

extension Capability {
    func encode(into writer: inout ByteWriter) {
        switch self {
        case .read(let prefix): writer.write(UInt8(1)); writer.writeBytes(prefix)
        case .write(let prefix): writer.write(UInt8(2)); writer.writeBytes(prefix)
        case .delete(let prefix): writer.write(UInt8(3)); writer.writeBytes(prefix)
        case .watch(let prefix): writer.write(UInt8(4)); writer.writeBytes(prefix)
        case .full(let prefix): writer.write(UInt8(5)); writer.writeBytes(prefix)
        case .coordination(let prefix): writer.write(UInt8(6)); writer.writeBytes(prefix)
        case .clusterAdmin: writer.write(UInt8(7))
        case .delegate: writer.write(UInt8(8))
        case .service(let service, let access, let prefix):
            writer.write(UInt8(9))
            writer.write(service.rawValue)
            writer.write(access.rawValue)
            writer.writeBytes(prefix)
        }
    }

    init(decoding reader: inout ByteReader) throws(DecodingError) {
        let tag = try reader.readByte()
        switch tag {
        case 1: self = .read(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 2: self = .write(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 3: self = .delete(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 4: self = .watch(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 5: self = .full(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 6: self = .coordination(prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        case 7: self = .clusterAdmin
        case 8: self = .delegate
        case 9:
            let serviceTag = try reader.readByte()
            guard let service = Service(rawValue: serviceTag) else { throw .unknownTag(serviceTag, context: "capability service") }
            let accessTag = try reader.readByte()
            guard let access = Access(rawValue: accessTag) else { throw .unknownTag(accessTag, context: "capability access") }
            self = .service(service, access, prefix: try reader.readBytes(limit: Token.prefixBytesMax))
        default:
            throw .unknownTag(tag, context: "capability")
        }
    }
}

/// A token as its issuer signed it: the body bytes exactly as sent and an Ed25519 signature
/// over a domain tag and those bytes. Verification checks the signature over the bytes
/// received, never over a re-encoding.
public struct SignedToken: Sendable, Hashable {
    public let body: Bytes
    public let signature: Bytes
    public let token: Token
    public let id: TokenID

    static let domain = Array("aspen capability token v1\0".utf8)

    /// Signs `token` as its issuer. Checks nothing about what the token claims: minting checks
    /// are `TokenIssuer`'s, and verification never trusts them.
    public static func sign(_ token: Token, with key: SigningKey) -> SignedToken {
        let body = token.encoded
        return SignedToken(body: body, signature: key.sign(domain + body), token: token)
    }

    private init(body: Bytes, signature: Bytes, token: Token) {
        self.body = body
        self.signature = signature
        self.token = token
        self.id = Self.id(of: body)
    }

    static func id(of body: Bytes) -> TokenID { TokenID(bytes: Array(SHA256.hash(data: domain + body)))! }

    /// The envelope: body and signature.
    public var encoded: Bytes {
        var writer = ByteWriter(capacity: body.count + 72)
        writer.writeBytes(body)
        writer.writeRaw(signature)
        return writer.bytes
    }

    /// Decodes an envelope of at most `limits.tokenBytesMax` bytes (checked before anything
    /// else) and its body. The signature is not checked here: `TokenVerifier` checks it.
    public init(decoding bytes: Bytes, limits: Limits) throws(DecodingError) {
        guard bytes.count <= limits.tokenBytesMax else { throw .lengthTooLarge(length: UInt64(bytes.count), limit: limits.tokenBytesMax) }
        var reader = ByteReader(bytes)
        let body = try reader.readBytes(limit: limits.tokenBytesMax)
        let signature = try reader.readRaw(64)
        try reader.expectEnd()
        self.init(body: body, signature: signature, token: try Token(decoding: body, limits: limits))
    }

    /// Whether the signature is the issuer's over exactly `body`.
    public var signatureIsValid: Bool { token.issuer.isValidSignature(signature, for: Self.domain + body) }
}
