import AspenCore
import Crypto

/// A shared secret that clients must prove they know before a node serves them (`--cookie`).
/// The proof is an HMAC-SHA256, keyed by the cookie, of the client's own public key: TLS already
/// proves the key, so the proof cannot be replayed by a client holding another key, and the
/// cookie itself never crosses the network.
public struct ClusterCookie: Sendable, Equatable {
    let secret: SymmetricKey

    public init(_ cookie: String) {
        secret = SymmetricKey(data: SHA256.hash(data: Array("aspen cluster cookie\0\(cookie)".utf8)))
    }

    public static func == (lhs: ClusterCookie, rhs: ClusterCookie) -> Bool {
        lhs.secret.withUnsafeBytes { Array($0) } == rhs.secret.withUnsafeBytes { Array($0) }
    }

    public func proof(for key: NodeKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: key.bytes, using: secret))
    }

    /// Constant-time check of a proof presented by the holder of `key`.
    public func accepts(_ proof: [UInt8], from key: NodeKey) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: key.bytes, using: secret)
    }
}
