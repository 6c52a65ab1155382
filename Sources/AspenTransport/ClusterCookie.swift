import AspenCore
import Crypto
import _CryptoExtras
import Foundation

/// A shared secret that clients must prove they know before a node serves them (`--cookie`).
/// The proof is an HMAC-SHA256, keyed by the cookie, of the client's own public key: TLS already
/// proves the key, so the proof cannot be replayed by a client holding another key, and the
/// cookie itself never crosses the network.
public struct ClusterCookie: Sendable, Equatable {
    let secret: SymmetricKey

    /// The cookie is stretched with scrypt (N = 2^15, r = 8, p = 1: about 32 MiB and a tenth
    /// of a second, once per process), so that each guess at a cookie costs that much.
    public init(_ cookie: String) {
        do {
            secret = try KDF.Scrypt.deriveKey(
                from: Array(cookie.utf8), salt: Array("aspen cluster cookie".utf8), outputByteCount: 32, rounds: 1 << 15, blockSize: 8,
                parallelism: 1)
        } catch {
            preconditionFailure("scrypt with fixed parameters failed: \(error)")
        }
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

/// A small file that holds one value (a cookie, a ticket) and perhaps a trailing newline.
public enum ValueFile {
    /// Its text without surrounding whitespace: nil if it cannot be read, empty if it holds none.
    public static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
