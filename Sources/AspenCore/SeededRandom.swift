/// A small, fast, seeded generator (SplitMix64). Everything random in Aspen's pure cores and in the
/// simulator draws from one of these, so one seed reproduces a run exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniformly distributed value in `range`, without the bias of a plain modulo.
    public mutating func next(in range: ClosedRange<UInt64>) -> UInt64 {
        UInt64.random(in: range, using: &self)
    }

    /// True with probability `probability` (0...1).
    public mutating func chance(_ probability: Double) -> Bool {
        probability > 0 && Double(next() >> 11) * 0x1.0p-53 < probability
    }

    /// A new generator whose stream is independent of this one's.
    public mutating func fork() -> SplitMix64 { SplitMix64(seed: next()) }
}
