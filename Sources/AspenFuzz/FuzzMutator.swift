import AspenCore

/// Derives new inputs from old ones, deterministically from its seed: bit flips, byte writes,
/// inserts and deletes, splices with another input, integer boundary values (as varints and as
/// fixed-width integers, where Aspen's lengths and counts live), and runs of a repeated byte
/// string (the target's nesting tokens, or a slice of the input) to attack depth bounds.
public struct FuzzMutator: Sendable {
    private var random: SplitMix64
    public let inputBytesMax: Int
    private let nestingTokens: [[UInt8]]

    public init(seed: UInt64, inputBytesMax: Int = FuzzMutator.inputBytesMaxDefault, nestingTokens: [[UInt8]] = []) {
        precondition(inputBytesMax > 0)
        self.random = SplitMix64(seed: seed)
        self.inputBytesMax = inputBytesMax
        self.nestingTokens = nestingTokens
    }

    /// Largest input made by default: room for a depth attack thousands of levels deep.
    public static let inputBytesMaxDefault = 64 * 1024

    /// Values at the edges of what a length, count or integer field holds.
    static let boundaryValues: [UInt64] = [
        0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0xFFFF, 0x1_0000, 1024, 1025, 4096, 65_535, 1 << 20, (1 << 20) + 1,
        0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 1, .max,
    ]

    /// An input derived from `input` by one to four mutations; `corpus` supplies splice partners.
    public mutating func mutate(_ input: [UInt8], corpus: [[UInt8]]) -> [UInt8] {
        var bytes = input
        for _ in 0...random.next(in: 0...3) { mutateOnce(&bytes, corpus: corpus) }
        if bytes.count > inputBytesMax { bytes.removeLast(bytes.count - inputBytesMax) }
        return bytes
    }

    private mutating func mutateOnce(_ bytes: inout [UInt8], corpus: [[UInt8]]) {
        switch random.next(in: 0...11) {
        case 0, 1:
            guard !bytes.isEmpty else { return bytes.append(byte()) }
            bytes[index(in: bytes)] ^= 1 << UInt8(random.next(in: 0...7))
        case 2:
            guard !bytes.isEmpty else { return bytes.append(byte()) }
            bytes[index(in: bytes)] = [0, 1, 0x7F, 0x80, 0xFF, byte()][Int(random.next(in: 0...5))]
        case 3:
            guard !bytes.isEmpty else { return }
            let at = index(in: bytes)
            bytes[at] = bytes[at] &+ UInt8(truncatingIfNeeded: Int(random.next(in: 0...32)) - 16)
        case 4: bytes.insert(contentsOf: (0..<random.next(in: 1...8)).map { _ in byte() }, at: index(in: bytes, end: true))
        case 5:
            guard !bytes.isEmpty else { return }
            let at = index(in: bytes)
            bytes.removeSubrange(at..<min(bytes.count, at + Int(random.next(in: 1...16))))
        case 6:
            guard let other = corpus.randomElement(using: &random), !other.isEmpty else { return }
            let cut = index(in: bytes, end: true)
            let from = index(in: other)
            bytes = Array(bytes[..<cut]) + other[from...]
        case 7: writeInteger(&bytes)
        case 8: repeatNesting(&bytes)
        case 9:
            guard !bytes.isEmpty else { return }
            bytes.removeLast(Int(random.next(in: 1...UInt64(min(bytes.count, 64)))))
        case 10:
            guard !bytes.isEmpty else { return }
            let start = index(in: bytes)
            let chunk = Array(bytes[start..<min(bytes.count, start + Int(random.next(in: 1...32)))])
            bytes.insert(contentsOf: chunk, at: index(in: bytes, end: true))
        default:
            guard bytes.count > 1 else { return }
            let (a, b) = (index(in: bytes), index(in: bytes))
            bytes.swapAt(a, b)
        }
    }

    /// A boundary value written over or into the input, as a varint or a fixed-width integer.
    private mutating func writeInteger(_ bytes: inout [UInt8]) {
        let value = Self.boundaryValues[Int(random.next(in: 0...UInt64(Self.boundaryValues.count - 1)))]
        var writer = ByteWriter()
        switch random.next(in: 0...4) {
        case 0: writer.writeVarint(value)
        case 1: writer.writeVarint(signed: Int64(bitPattern: value))
        case 2: writer.writeFixed(UInt32(truncatingIfNeeded: value))
        case 3: writer.writeFixed(value)
        default:
            // Big-endian, as gRPC's length prefix and the tuple layer's integers are.
            writer.writeRaw(withUnsafeBytes(of: UInt32(truncatingIfNeeded: value).bigEndian) { Array($0) })
        }
        let at = index(in: bytes, end: true)
        if random.chance(0.5) {
            bytes.insert(contentsOf: writer.bytes, at: at)
        } else {
            bytes.replaceSubrange(at..<min(bytes.count, at + writer.bytes.count), with: writer.bytes)
        }
    }

    /// A run of one repeated byte string: a target's nesting token or a slice of the input.
    private mutating func repeatNesting(_ bytes: inout [UInt8]) {
        var token: [UInt8]
        if let chosen = nestingTokens.randomElement(using: &random), random.chance(0.75) {
            token = chosen
        } else {
            guard !bytes.isEmpty else { return }
            let start = index(in: bytes)
            token = Array(bytes[start..<min(bytes.count, start + Int(random.next(in: 1...8)))])
        }
        // Mostly a little past the usual bounds (8, 32, 64, 100 levels); now and then thousands.
        let most = max(161, inputBytesMax / max(1, token.count))
        let levels = Int(random.chance(0.95) ? random.next(in: 2...160) : random.next(in: 161...UInt64(most)))
        let run = Array([[UInt8]](repeating: token, count: levels).joined())
        bytes.insert(contentsOf: run, at: index(in: bytes, end: true))
    }

    private mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: random.next()) }

    /// A position in `bytes` (or just past its end, when `end`).
    private mutating func index(in bytes: [UInt8], end: Bool = false) -> Int {
        let last = end ? bytes.count : bytes.count - 1
        return last <= 0 ? 0 : Int(random.next(in: 0...UInt64(last)))
    }
}
