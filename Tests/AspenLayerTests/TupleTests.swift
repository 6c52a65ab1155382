import AspenCore
import AspenLayer
import Foundation
import Testing

@Suite("Tuple encoding")
struct TupleTests {
    /// A random element, nested up to `depth`, drawn to hit edges (zero, ±2^k boundaries,
    /// embedded 0x00 bytes, -0.0, infinities).
    static func element(_ generator: inout SplitMix64, depth: Int = 2) -> TupleElement {
        switch generator.next(in: 0...8) {
        case 0: return .null
        case 1: return .bytes((0..<generator.next(in: 0...4)).map { _ in [0x00, 0xFF, 0x01, 0x7F][Int(generator.next(in: 0...3))] })
        case 2: return .string(["", "a", "ab", "é", "\u{0}", "a\u{0}b", "z"][Int(generator.next(in: 0...6))])
        case 3 where depth > 0: return .tuple((0..<generator.next(in: 0...3)).map { _ in element(&generator, depth: depth - 1) })
        case 4, 5:
            let edges: [Int64] = [0, 1, -1, 255, 256, -255, -256, 65535, -65536, .max, .min, .max - 1, .min + 1, 1 << 40, -(1 << 40)]
            return .int(generator.chance(0.5) ? edges[Int(generator.next(in: 0...UInt64(edges.count - 1)))] : Int64(bitPattern: generator.next()) >> Int64(generator.next(in: 0...62)))
        case 6:
            let values: [Double] = [0, -0.0, 1.5, -1.5, .infinity, -.infinity, .leastNonzeroMagnitude, -.greatestFiniteMagnitude, 1e300]
            return .double(values[Int(generator.next(in: 0...UInt64(values.count - 1)))])
        case 7: return .bool(generator.chance(0.5))
        default:
            let bytes = (0..<16).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            return .uuid(UUID(uuid: bytes.withUnsafeBytes { $0.loadUnaligned(as: uuid_t.self) }))
        }
    }

    static func tuple(_ generator: inout SplitMix64) -> Tuple {
        Tuple((0..<generator.next(in: 0...4)).map { _ in element(&generator) })
    }

    @Test("every tuple round-trips through its encoding", arguments: [1, 2, 3] as [UInt64])
    func roundTrip(seed: UInt64) throws {
        var generator = SplitMix64(seed: seed)
        for _ in 0..<3000 {
            let tuple = Self.tuple(&generator)
            #expect(try Tuple(decoding: tuple.encoded) == tuple, "\(tuple)")
        }
    }

    @Test("sorting encodings sorts the tuples", arguments: [4, 5, 6] as [UInt64])
    func orderPreserved(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        for _ in 0..<3000 {
            let a = Self.tuple(&generator)
            let b = Self.tuple(&generator)
            let byBytes = a.encoded.lexicographicallyPrecedes(b.encoded)
            #expect(byBytes == (a < b), "\(a) vs \(b)")
            #expect((a.encoded == b.encoded) == (a == b), "\(a) vs \(b)")
        }
    }

    @Test("known encodings and integer boundaries")
    func knownEncodings() {
        #expect(Tuple([.int(0)]).encoded == [0x14])
        #expect(Tuple([.int(1)]).encoded == [0x15, 0x01])
        #expect(Tuple([.int(-1)]).encoded == [0x13, 0xFE])
        #expect(Tuple([.int(256)]).encoded == [0x16, 0x01, 0x00])
        #expect(Tuple([.bytes([0x61, 0x00, 0x62])]).encoded == [0x01, 0x61, 0x00, 0xFF, 0x62, 0x00])
        #expect(Tuple([.string("a")]).encoded == [0x02, 0x61, 0x00])
        #expect(Tuple([.tuple([.null])]).encoded == [0x05, 0x00, 0xFF, 0x00])
        #expect(Tuple([.bool(false), .bool(true)]).encoded == [0x26, 0x27])
        let ints: [Int64] = [.min, -(1 << 40), -65536, -256, -255, -1, 0, 1, 255, 256, 65535, 1 << 40, .max]
        #expect(ints.map { Tuple([.int($0)]).encoded }.sorted { $0.lexicographicallyPrecedes($1) } == ints.map { Tuple([.int($0)]).encoded })
    }

    @Test("malformed encodings are refused, naming the problem and the byte")
    func malformed() {
        func problem(_ bytes: [UInt8]) -> TupleError? {
            do {
                _ = try Tuple(decoding: bytes)
                return nil
            } catch {
                return error
            }
        }
        #expect(problem([0x99]) == .unknownType(code: 0x99, offset: 0))
        #expect(problem([0x01, 0x61]) == .truncated(what: "a byte string", offset: 0))
        #expect(problem([0x14, 0x16, 0x01]) == .truncated(what: "an integer", offset: 1))
        #expect(problem([0x02, 0xC3, 0x28, 0x00]) == .invalidUTF8(offset: 0))
        #expect(problem([0x21, 0x00]) == .truncated(what: "a double", offset: 0))
        #expect(problem([0x05, 0x14]) == .truncated(what: "a nested tuple", offset: 0))
        #expect(problem([0x30, 1, 2]) == .truncated(what: "a UUID", offset: 0))
        #expect(TupleError.unknownType(code: 0x99, offset: 3).description == "unknown tuple type code 0x99 at byte 3")
        // Found by fuzzing: an integer in more bytes than it needs decoded, so two keys could
        // hold the same tuple (0x15 0x00 as well as 0x14 for 0; 0x16 0x00 0x07 for 7; -1 in two bytes).
        #expect(problem([0x15, 0x00]) == .nonCanonical(offset: 0))
        #expect(problem([0x01, 0x61, 0x00, 0x16, 0x00, 0x07]) == .nonCanonical(offset: 3))
        #expect(problem([0x12, 0xFF, 0xFE]) == .nonCanonical(offset: 0))
        for value: Int64 in [0, 1, -1, 255, -255, 256, -256, .max, .min, .max - 1, .min + 1] {
            #expect(problem(Tuple([.int(value)]).encoded) == nil, "\(value)")
        }
    }

    @Test("a tuple nested deeper than Limits.tupleDepthMax is refused, however long the input, without exhausting the stack")
    func nestingDepth() throws {
        let limit = Limits.standard.tupleDepthMax
        // 100 KB of nested-tuple codes: each used to cost a stack frame, and this many crashed.
        #expect(throws: TupleError.tooDeep(limit: limit, offset: limit - 1)) { try Tuple(decoding: Array(repeating: 0x05, count: 100_000)) }
        func nested(_ levels: Int) -> Tuple {
            var element = TupleElement.int(7)
            for _ in 1..<levels { element = .tuple([element]) }
            return Tuple([element])
        }
        #expect(try Tuple(decoding: nested(limit).encoded) == nested(limit))
        #expect(throws: TupleError.tooDeep(limit: limit, offset: limit - 1)) { try Tuple(decoding: nested(limit + 1).encoded) }
        #expect(throws: TupleError.tooDeep(limit: 2, offset: 1)) { try Tuple(decoding: nested(3).encoded, depthMax: 2) }
        #expect(TupleError.tooDeep(limit: 32, offset: 31).description.contains("Limits.tupleDepthMax"))
    }

    @Test("subspaces pack under their prefix, unpack only their own keys, and range over exactly them")
    func subspaces() throws {
        let users = Subspace(["app", "users"])
        let key = users.pack([.int(42), .string("name")])
        #expect(users.contains(key))
        #expect(try users.unpack(key) == [.int(42), .string("name")])
        #expect(throws: TupleError.notInSubspace) { try users.unpack(Subspace(["app", "orders"]).pack([.int(1)])) }
        let (start, end) = users.range
        #expect(start.lexicographicallyPrecedes(key) && key.lexicographicallyPrecedes(end))
        // A sibling whose name merely starts the same is outside both the subspace and its range.
        let sibling = Subspace(["app", "usersX"]).pack([.int(1)])
        #expect(!users.contains(sibling))
        #expect(!(start.lexicographicallyPrecedes(sibling) && sibling.lexicographicallyPrecedes(end)))
        let nested = users.subspace([.int(42)])
        #expect(nested.contains(key))
        #expect(try nested.unpack(key) == [.string("name")])
    }
}

@Suite("Hybrid logical clock")
struct HybridLogicalClockTests {
    final class ManualClock: @unchecked Sendable {
        var now: Int64 = 1000
    }

    @Test("timestamps never go backwards, even when the wall clock does")
    func monotonic() {
        let wall = ManualClock()
        var clock = HybridLogicalClock(node: 1) { wall.now }
        var previous = clock.now()
        for step in 0..<1000 {
            wall.now += [1, 0, -5, 0, 2][step % 5]
            let next = clock.now()
            #expect(previous < next)
            previous = next
        }
    }

    @Test("a received timestamp from a clock running ahead orders later events after it, within the skew")
    func skew() {
        let slow = ManualClock()
        let fast = ManualClock()
        fast.now = slow.now + 5000
        var a = HybridLogicalClock(node: 1) { slow.now }
        var b = HybridLogicalClock(node: 2) { fast.now }
        let sent = b.now()
        let received = a.update(received: sent)
        #expect(received > sent)
        let later = a.now()
        #expect(later > received)
        // Logical time runs ahead of the slow wall clock by no more than the skew.
        #expect(later.wallMs - slow.now <= 5000)
        // Two events in the same millisecond on different nodes still order totally.
        let x = HLCTimestamp(wallMs: 7, logical: 0, node: 1)
        let y = HLCTimestamp(wallMs: 7, logical: 0, node: 2)
        #expect(x < y && x != y)
    }

    @Test("the 20-byte encoding sorts like the timestamps and round-trips")
    func encoding() throws {
        var generator = SplitMix64(seed: 9)
        for _ in 0..<2000 {
            let a = HLCTimestamp(wallMs: Int64(bitPattern: generator.next()) >> 20, logical: UInt32(generator.next(in: 0...3)), node: NodeID(generator.next(in: 0...3)))
            let b = HLCTimestamp(wallMs: Int64(bitPattern: generator.next()) >> 20, logical: UInt32(generator.next(in: 0...3)), node: NodeID(generator.next(in: 0...3)))
            #expect(a.encoded.lexicographicallyPrecedes(b.encoded) == (a < b))
            #expect(try HLCTimestamp(decoding: a.encoded) == a)
        }
        #expect(throws: DecodingError.self) { try HLCTimestamp(decoding: [1, 2, 3]) }
    }
}
