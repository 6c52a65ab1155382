import AspenCore
import AspenKV

/// The bodies of the native protocol's auth operations (`cluster.auth-*`).
public enum AuthWire {
    /// What `cluster.auth-status` answers.
    public struct Status: Sendable, Equatable {
        /// Whether the answering node requires credentials.
        public var required: Bool
        /// Whether the cluster was founded with auth (nodes in `auto` mode then require it).
        public var clusterRequires: Bool
        public var roots: [PublicKey]
        public var revokedTokens: Int
        public var issuerCutoffs: Int
        /// Requests the answering node refused since it started.
        public var denials: Int

        public init(required: Bool, clusterRequires: Bool, roots: [PublicKey], revokedTokens: Int, issuerCutoffs: Int, denials: Int) {
            self.required = required
            self.clusterRequires = clusterRequires
            self.roots = roots
            self.revokedTokens = revokedTokens
            self.issuerCutoffs = issuerCutoffs
            self.denials = denials
        }

        public var encoded: Bytes {
            var writer = ByteWriter()
            writer.write(required)
            writer.write(clusterRequires)
            writer.writeVarint(UInt64(roots.count))
            for root in roots { writer.writeRaw(root.bytes) }
            writer.writeVarint(UInt64(revokedTokens))
            writer.writeVarint(UInt64(issuerCutoffs))
            writer.writeVarint(UInt64(denials))
            return writer.bytes
        }

        public init(decoding bytes: Bytes) throws(DecodingError) {
            var reader = ByteReader(bytes)
            required = try reader.readBool()
            clusterRequires = try reader.readBool()
            let count = try reader.readCount(limit: 100_000)
            var roots: [PublicKey] = []
            for _ in 0..<count { roots.append(PublicKey(exactly: try reader.readRaw(32))) }
            self.roots = roots
            revokedTokens = try reader.readCount(limit: Int.max)
            issuerCutoffs = try reader.readCount(limit: Int.max)
            denials = try reader.readCount(limit: Int.max)
            try reader.expectEnd()
        }
    }

    /// `cluster.auth-roots`: add or remove a trusted root.
    public enum RootChange: Sendable, Equatable {
        case add(PublicKey)
        case remove(PublicKey)

        public var encoded: Bytes {
            switch self {
            case .add(let key): return [1] + key.bytes
            case .remove(let key): return [2] + key.bytes
            }
        }

        public init(decoding bytes: Bytes) throws(DecodingError) {
            var reader = ByteReader(bytes)
            let tag = try reader.readByte()
            let key = PublicKey(exactly: try reader.readRaw(32))
            try reader.expectEnd()
            switch tag {
            case 1: self = .add(key)
            case 2: self = .remove(key)
            default: throw .unknownTag(tag, context: "root change")
            }
        }
    }

    /// `cluster.auth-revoke`: one token (and so its descendants) until it expires, or everything
    /// an issuer issued before a time.
    public enum Revocation: Sendable, Equatable {
        case token(TokenID, expiresAtMs: Int64)
        case issuedBefore(PublicKey, cutoffMs: Int64)

        public var encoded: Bytes {
            var writer = ByteWriter()
            switch self {
            case .token(let id, let expires):
                writer.write(UInt8(1))
                writer.writeRaw(id.bytes)
                writer.writeVarint(signed: expires)
            case .issuedBefore(let issuer, let cutoff):
                writer.write(UInt8(2))
                writer.writeRaw(issuer.bytes)
                writer.writeVarint(signed: cutoff)
            }
            return writer.bytes
        }

        public init(decoding bytes: Bytes) throws(DecodingError) {
            var reader = ByteReader(bytes)
            let tag = try reader.readByte()
            let raw = try reader.readRaw(32)
            let time = try reader.readSignedVarint()
            try reader.expectEnd()
            switch tag {
            case 1: self = .token(TokenID(exactly: raw), expiresAtMs: time)
            case 2: self = .issuedBefore(PublicKey(exactly: raw), cutoffMs: time)
            default: throw .unknownTag(tag, context: "revocation")
            }
        }
    }
}
