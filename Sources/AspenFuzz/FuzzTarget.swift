import AspenCore

/// What one input did to a decoder.
public enum FuzzOutcome: Sendable, Equatable {
    /// The decoder accepted it and every property held.
    case decoded
    /// The decoder refused it with an error; `shape` is the error's description without its
    /// numbers, so that errors of one kind count once (the runner keeps inputs that reach a new one).
    case rejected(shape: String)
    /// A property failed: the decoder accepted something it must not, or its value does not
    /// survive its own encoding. Always a bug.
    case failed(String)
}

/// One decoder under fuzzing: a name, seed inputs built from valid encodings of representative
/// values, byte strings whose repetition nests deeper (depth attacks), and a body that decodes an
/// input and checks the decoder's properties. A body never traps on its own account: a trap
/// while it runs is the decoder's.
public struct FuzzTarget: Sendable {
    public let name: String
    public let summary: String
    /// Byte strings the mutator repeats to build deeply nested input.
    public let nestingTokens: [[UInt8]]
    private let makeSeeds: @Sendable () -> [[UInt8]]
    private let body: @Sendable ([UInt8]) -> FuzzOutcome

    public init(
        name: String, summary: String, nestingTokens: [[UInt8]] = [], seeds: @escaping @Sendable () -> [[UInt8]],
        body: @escaping @Sendable ([UInt8]) -> FuzzOutcome
    ) {
        self.name = name
        self.summary = summary
        self.nestingTokens = nestingTokens
        self.makeSeeds = seeds
        self.body = body
    }

    /// Valid encodings the mutation starts from.
    public var seeds: [[UInt8]] { makeSeeds() }

    public func run(_ input: [UInt8]) -> FuzzOutcome { body(input) }
}

extension FuzzTarget {
    /// Every target, in the order `aspen-fuzz list` shows them.
    public static let all: [FuzzTarget] =
        raftTargets + clientTargets + kvTargets + layerTargets + transportTargets + etcdTargets + authTargets + blobTargets + jobTargets
        + forgeTargets + secretsTargets + ciTargets

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// The checks every target makes, in one place.
enum FuzzCheck {
    /// Decodes `input`; when that succeeds, checks `bounds` on the value, then that the value's
    /// encoding decodes again and encodes to the same bytes (encoding is a fixpoint after one
    /// decode, whatever non-canonical form the input had).
    static func roundTrip<Value>(
        _ input: [UInt8], decode: ([UInt8]) throws -> Value, encode: (Value) -> [UInt8], canonical: Bool = false,
        bounds: (Value) -> String? = { _ in nil }
    ) -> FuzzOutcome {
        let value: Value
        do {
            value = try decode(input)
        } catch {
            return .rejected(shape: shape(of: error))
        }
        if let broken = bounds(value) { return .failed("decoded a value past its bound: \(broken)") }
        let encoded = encode(value)
        // Where bytes are keys, a value has one encoding: what decodes must be that encoding.
        if canonical, encoded != input {
            return .failed("a second encoding decodes to the same value: \(hex(input)) as well as \(hex(encoded))")
        }
        let again: Value
        do {
            again = try decode(encoded)
        } catch {
            return .failed("the encoding of a decoded value does not decode (\(error)): \(hex(encoded))")
        }
        let reencoded = encode(again)
        guard reencoded == encoded else {
            return .failed("encoding is not stable across a decode: \(hex(encoded)) became \(hex(reencoded))")
        }
        return .decoded
    }

    /// Chooses one of `choices` by the input's first byte and runs it on the rest.
    static func select(_ input: [UInt8], _ choices: [([UInt8]) -> FuzzOutcome]) -> FuzzOutcome {
        guard let first = input.first else { return .rejected(shape: "empty input") }
        return choices[Int(first) % choices.count](Array(input.dropFirst()))
    }

    /// An error's description with its digits dropped, cut short: what an error says about the
    /// input's own bytes (a name, a verb) mostly comes late, and would make every refusal new.
    static func shape(of error: any Error) -> String {
        String(String(describing: error).unicodeScalars.filter { !("0"..."9").contains($0) }.prefix(shapeLength).map(Character.init))
    }

    static let shapeLength = 64

    static func hex(_ bytes: [UInt8], max: Int = 256) -> String {
        let shown = bytes.prefix(max).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        return bytes.count > max ? shown + "…(\(bytes.count) bytes)" : shown
    }
}

/// Builds seed inputs: a selector byte (for targets that choose a decoder by it) and an encoding.
func selected(_ selector: Int, _ encodings: [[UInt8]]) -> [[UInt8]] {
    encodings.map { [UInt8(selector)] + $0 }
}

/// Bytes followed by their CRC-32C, little-endian: how tickets and version 2 snapshots end.
func crcSealed(_ bytes: [UInt8]) -> [UInt8] {
    var writer = ByteWriter()
    writer.writeRaw(bytes)
    writer.writeFixed(CRC32C.checksum(bytes))
    return writer.bytes
}
