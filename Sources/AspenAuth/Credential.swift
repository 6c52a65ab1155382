import AspenCore
import AspenKV
import Foundation

/// What a client presents: a token and its proof chain — the token it was delegated from, and
/// so on up to a token signed by a trusted root — and, in a credential file, the key of the
/// token's audience (the holder), which the client proves on its connections and signs child
/// tokens with.
public struct Credential: Sendable {
    /// Leaf first, root last.
    public let chain: [SignedToken]
    /// The holder's signing key; nil for a credential given to a node, or a bearer token.
    public let holderKey: SigningKey?

    public var leaf: SignedToken { chain[0] }
    public var id: TokenID { leaf.id }

    public init(chain: [SignedToken], holderKey: SigningKey? = nil) {
        precondition(!chain.isEmpty, "a credential holds at least one token")
        self.chain = chain
        self.holderKey = holderKey
    }

    /// The same chain without the holder's key: what may be shown to others.
    public var withoutHolderKey: Credential { Credential(chain: chain) }

    static let magic = Array("ACR1".utf8)
    /// The text form's prefix.
    public static let textPrefix = "aspen-credential-1:"

    public var encoded: Bytes {
        var writer = ByteWriter(capacity: chain.reduce(48) { $0 + $1.body.count + 72 })
        writer.writeRaw(Self.magic)
        writer.writeVarint(UInt64(chain.count))
        for token in chain { writer.writeBytes(token.encoded) }
        if let holderKey {
            writer.write(UInt8(1))
            writer.writeRaw(holderKey.seed)
        } else {
            writer.write(UInt8(0))
        }
        return writer.bytes
    }

    /// Decodes at most `limits.credentialBytesMax` bytes (checked first), each token at most
    /// `limits.tokenBytesMax`, at most `delegationDepthMax + 1` of them. Checks no signature.
    public init(decoding bytes: Bytes, limits: Limits) throws(CredentialError) {
        guard bytes.count <= limits.credentialBytesMax else {
            throw .tooLarge(bytes: bytes.count, limit: limits.credentialBytesMax, name: "credentialBytesMax")
        }
        do {
            var reader = ByteReader(bytes)
            guard try reader.readRaw(Self.magic.count) == Self.magic else { throw CredentialError.malformed("not an Aspen credential") }
            let count = try reader.readCount(limit: limits.delegationDepthMax + 1)
            guard count > 0 else { throw CredentialError.malformed("a credential holds at least one token") }
            var chain: [SignedToken] = []
            for _ in 0..<count {
                let envelope = try reader.readBytes(limit: limits.credentialBytesMax)
                guard envelope.count <= limits.tokenBytesMax else {
                    throw CredentialError.tooLarge(bytes: envelope.count, limit: limits.tokenBytesMax, name: "tokenBytesMax")
                }
                chain.append(try SignedToken(decoding: envelope, limits: limits))
            }
            var holderKey: SigningKey?
            switch try reader.readByte() {
            case 0: holderKey = nil
            case 1:
                guard let key = SigningKey(seed: try reader.readRaw(32)) else { throw CredentialError.malformed("the holder key is not an Ed25519 key") }
                holderKey = key
            case let tag: throw DecodingError.unknownTag(tag, context: "credential holder key")
            }
            try reader.expectEnd()
            self.init(chain: chain, holderKey: holderKey)
        } catch let error as CredentialError {
            throw error
        } catch let error as DecodingError {
            throw .malformed("\(error)")
        } catch {
            throw .malformed("\(error)")
        }
    }

    /// `aspen-credential-1:` and the encoding in unpadded base64url.
    public var text: String { Self.textPrefix + Base64URL.encode(encoded) }

    /// From its text form (surrounding whitespace allowed).
    public init(text: String, limits: Limits) throws(CredentialError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix(Self.textPrefix) else {
            throw .malformed("a credential starts with '\(Self.textPrefix)'")
        }
        let body = trimmed.dropFirst(Self.textPrefix.count)
        // Base64 takes four characters for three bytes: refuse before decoding what is too long.
        guard body.utf8.count <= (limits.credentialBytesMax + 2) / 3 * 4 else {
            throw .tooLarge(bytes: body.utf8.count * 3 / 4, limit: limits.credentialBytesMax, name: "credentialBytesMax")
        }
        guard let bytes = Base64URL.decode(String(body)) else { throw .malformed("the credential is not valid base64url") }
        try self.init(decoding: bytes, limits: limits)
    }
}

public enum CredentialError: Error, Sendable, Equatable, CustomStringConvertible {
    case tooLarge(bytes: Int, limit: Int, name: String)
    case malformed(String)

    public var description: String {
        switch self {
        case .tooLarge(let bytes, let limit, let name): "credential refused: \(bytes) bytes exceed \(name) (\(limit))"
        case .malformed(let why): "malformed credential: \(why)"
        }
    }
}

/// Unpadded base64url (RFC 4648 §5).
public enum Base64URL {
    public static func encode(_ bytes: Bytes) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: String) -> Bytes? {
        guard text.utf8.allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "=") }) else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        if standard.utf8.count % 4 == 1 { return nil }
        while standard.utf8.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard).map(Array.init)
    }
}
