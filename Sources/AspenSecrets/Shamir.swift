import AspenCore
import AspenKV

/// Shamir's secret sharing over GF(2⁸) (the AES field, x⁸+x⁴+x³+x+1): a secret of any length is
/// split byte by byte, each byte the constant term of its own random polynomial of degree
/// `threshold - 1`; share `x` holds every polynomial's value at `x` (1…255). Any `threshold`
/// shares give the secret back by Lagrange interpolation at 0; fewer say nothing about it.
/// Field arithmetic runs without tables or branches on secret data.
public enum Shamir {
    public struct Share: Sendable, Equatable {
        /// The evaluation point, 1…255 (never 0: that is the secret).
        public var x: UInt8
        public var y: Bytes

        public init(x: UInt8, y: Bytes) {
            self.x = x
            self.y = y
        }

        /// `x` then `y`.
        public var bytes: Bytes { [x] + y }

        public init?(bytes: Bytes) {
            guard bytes.count >= 2, bytes[0] != 0 else { return nil }
            self.init(x: bytes[0], y: Array(bytes[1...]))
        }
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case badParameters(String)
        case badShares(String)

        public var description: String {
            switch self {
            case .badParameters(let text), .badShares(let text): text
            }
        }
    }

    /// Splits `secret` into `count` shares (x = 1…count), any `threshold` of which recover it.
    public static func split<R: RandomNumberGenerator>(
        _ secret: Bytes, threshold: Int, count: Int, using random: inout R
    ) throws(Failure) -> [Share] {
        guard !secret.isEmpty else { throw .badParameters("the secret is empty") }
        guard threshold >= 1, count >= threshold, count <= 255 else {
            throw .badParameters("a split needs 1 ≤ threshold (\(threshold)) ≤ shares (\(count)) ≤ 255")
        }
        var shares = (1...count).map { Share(x: UInt8($0), y: Bytes(repeating: 0, count: secret.count)) }
        var coefficients = Bytes(repeating: 0, count: threshold)
        for (index, byte) in secret.enumerated() {
            coefficients[0] = byte
            for degree in 1..<threshold { coefficients[degree] = UInt8.random(in: 0...255, using: &random) }
            for share in shares.indices {
                // Horner's rule, highest degree first.
                var value: UInt8 = 0
                for degree in stride(from: threshold - 1, through: 0, by: -1) {
                    value = multiply(value, shares[share].x) ^ coefficients[degree]
                }
                shares[share].y[index] = value
            }
        }
        for degree in coefficients.indices { coefficients[degree] = 0 }
        return shares
    }

    public static func split(_ secret: Bytes, threshold: Int, count: Int) throws(Failure) -> [Share] {
        var random = SystemRandomNumberGenerator()
        return try split(secret, threshold: threshold, count: count, using: &random)
    }

    /// The secret the shares interpolate to. Shares must have distinct nonzero `x` and equal
    /// lengths; with fewer than the split's threshold, the answer is a wrong secret (the caller
    /// checks it against a verifier).
    public static func combine(_ shares: [Share]) throws(Failure) -> Bytes {
        guard let length = shares.first?.y.count, length > 0 else { throw .badShares("no shares") }
        guard shares.allSatisfy({ $0.y.count == length }) else { throw .badShares("shares of different lengths") }
        guard Set(shares.map(\.x)).count == shares.count, !shares.contains(where: { $0.x == 0 }) else {
            throw .badShares("shares must have distinct, nonzero evaluation points")
        }
        // Lagrange basis at 0: ∏_{j≠i} x_j / (x_j - x_i); subtraction is xor in GF(2⁸).
        let basis = shares.indices.map { i in
            var numerator: UInt8 = 1
            var denominator: UInt8 = 1
            for j in shares.indices where j != i {
                numerator = multiply(numerator, shares[j].x)
                denominator = multiply(denominator, shares[j].x ^ shares[i].x)
            }
            return multiply(numerator, inverse(denominator))
        }
        var secret = Bytes(repeating: 0, count: length)
        for index in 0..<length {
            var value: UInt8 = 0
            for share in shares.indices { value ^= multiply(shares[share].y[index], basis[share]) }
            secret[index] = value
        }
        return secret
    }

    /// Product in GF(2⁸), in constant time (eight rounds, masks instead of branches).
    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a
        var b = b
        var product: UInt8 = 0
        for _ in 0..<8 {
            product ^= a & (0 &- (b & 1))
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (0x1B & carry)
            b >>= 1
        }
        return product
    }

    /// Inverse in GF(2⁸): a²⁵⁴ (0 maps to 0).
    static func inverse(_ a: UInt8) -> UInt8 {
        var result: UInt8 = 1
        var base = a
        var exponent = 254
        while exponent > 0 {
            if exponent & 1 == 1 { result = multiply(result, base) }
            base = multiply(base, base)
            exponent >>= 1
        }
        return result
    }
}
