/// The BLAKE3 compression function and the two values built on it: the state of the chunk being
/// hashed and the not-yet-compressed output of a node. Pure functions on value types; nothing here
/// allocates except the bytes a caller asks `rootBytes(count:)` for.
enum BLAKE3Core {
    static let blockByteCount = LaneKernel.blockByteCount
    static let chunkByteCount = LaneKernel.chunkByteCount
    static let initialVector = LaneKernel.initialVector

    // Domain flags, one bit each, as the specification numbers them.
    static let chunkStart = LaneKernel.chunkStart
    static let chunkEnd = LaneKernel.chunkEnd
    static let parent = LaneKernel.parent
    static let root: UInt32 = 1 << 3
    static let keyedHash: UInt32 = 1 << 4
    static let deriveKeyContext: UInt32 = 1 << 5
    static let deriveKeyMaterial: UInt32 = 1 << 6

    /// The quarter-round on four state words and two message words.
    @inline(__always)
    static func mix(
        _ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32, _ x: UInt32, _ y: UInt32
    ) {
        a = a &+ b &+ x
        d ^= a
        d = (d &>> 16) | (d &<< 16)
        c = c &+ d
        b ^= c
        b = (b &>> 12) | (b &<< 20)
        a = a &+ b &+ y
        d ^= a
        d = (d &>> 8) | (d &<< 24)
        c = c &+ d
        b ^= c
        b = (b &>> 7) | (b &<< 25)
    }

    /// Compresses one 64-byte block (as sixteen little-endian-decoded words) and returns all sixteen
    /// output words: the first eight are the next chaining value, all sixteen are extended output.
    /// Plain locals rather than arrays so the whole state stays in registers (measured faster than
    /// SIMD4 rows here, and far faster in debug builds).
    @inline(__always)
    static func compress(
        chainingValue h: SIMD8<UInt32>, block m: SIMD16<UInt32>, counter: UInt64, blockLength: UInt32, flags: UInt32
    ) -> SIMD16<UInt32> {
        var v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7]
        var v8 = initialVector[0], v9 = initialVector[1], v10 = initialVector[2], v11 = initialVector[3]
        var v12 = UInt32(truncatingIfNeeded: counter), v13 = UInt32(truncatingIfNeeded: counter &>> 32)
        var v14 = blockLength, v15 = flags
        let m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5], m6 = m[6], m7 = m[7]
        let m8 = m[8], m9 = m[9], m10 = m[10], m11 = m[11], m12 = m[12], m13 = m[13], m14 = m[14], m15 = m[15]
        // Seven rounds, unrolled: each mixes the columns, then the diagonals. Between rounds the message
        // words are permuted by the fixed permutation (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8);
        // the indices below are that permutation applied round after round, so no words move at run time.
        // Round 1.
        mix(&v0, &v4, &v8, &v12, m0, m1)
        mix(&v1, &v5, &v9, &v13, m2, m3)
        mix(&v2, &v6, &v10, &v14, m4, m5)
        mix(&v3, &v7, &v11, &v15, m6, m7)
        mix(&v0, &v5, &v10, &v15, m8, m9)
        mix(&v1, &v6, &v11, &v12, m10, m11)
        mix(&v2, &v7, &v8, &v13, m12, m13)
        mix(&v3, &v4, &v9, &v14, m14, m15)
        // Round 2.
        mix(&v0, &v4, &v8, &v12, m2, m6)
        mix(&v1, &v5, &v9, &v13, m3, m10)
        mix(&v2, &v6, &v10, &v14, m7, m0)
        mix(&v3, &v7, &v11, &v15, m4, m13)
        mix(&v0, &v5, &v10, &v15, m1, m11)
        mix(&v1, &v6, &v11, &v12, m12, m5)
        mix(&v2, &v7, &v8, &v13, m9, m14)
        mix(&v3, &v4, &v9, &v14, m15, m8)
        // Round 3.
        mix(&v0, &v4, &v8, &v12, m3, m4)
        mix(&v1, &v5, &v9, &v13, m10, m12)
        mix(&v2, &v6, &v10, &v14, m13, m2)
        mix(&v3, &v7, &v11, &v15, m7, m14)
        mix(&v0, &v5, &v10, &v15, m6, m5)
        mix(&v1, &v6, &v11, &v12, m9, m0)
        mix(&v2, &v7, &v8, &v13, m11, m15)
        mix(&v3, &v4, &v9, &v14, m8, m1)
        // Round 4.
        mix(&v0, &v4, &v8, &v12, m10, m7)
        mix(&v1, &v5, &v9, &v13, m12, m9)
        mix(&v2, &v6, &v10, &v14, m14, m3)
        mix(&v3, &v7, &v11, &v15, m13, m15)
        mix(&v0, &v5, &v10, &v15, m4, m0)
        mix(&v1, &v6, &v11, &v12, m11, m2)
        mix(&v2, &v7, &v8, &v13, m5, m8)
        mix(&v3, &v4, &v9, &v14, m1, m6)
        // Round 5.
        mix(&v0, &v4, &v8, &v12, m12, m13)
        mix(&v1, &v5, &v9, &v13, m9, m11)
        mix(&v2, &v6, &v10, &v14, m15, m10)
        mix(&v3, &v7, &v11, &v15, m14, m8)
        mix(&v0, &v5, &v10, &v15, m7, m2)
        mix(&v1, &v6, &v11, &v12, m5, m3)
        mix(&v2, &v7, &v8, &v13, m0, m1)
        mix(&v3, &v4, &v9, &v14, m6, m4)
        // Round 6.
        mix(&v0, &v4, &v8, &v12, m9, m14)
        mix(&v1, &v5, &v9, &v13, m11, m5)
        mix(&v2, &v6, &v10, &v14, m8, m12)
        mix(&v3, &v7, &v11, &v15, m15, m1)
        mix(&v0, &v5, &v10, &v15, m13, m3)
        mix(&v1, &v6, &v11, &v12, m0, m10)
        mix(&v2, &v7, &v8, &v13, m2, m6)
        mix(&v3, &v4, &v9, &v14, m4, m7)
        // Round 7.
        mix(&v0, &v4, &v8, &v12, m11, m15)
        mix(&v1, &v5, &v9, &v13, m5, m0)
        mix(&v2, &v6, &v10, &v14, m1, m9)
        mix(&v3, &v7, &v11, &v15, m8, m6)
        mix(&v0, &v5, &v10, &v15, m14, m10)
        mix(&v1, &v6, &v11, &v12, m2, m12)
        mix(&v2, &v7, &v8, &v13, m3, m4)
        mix(&v3, &v4, &v9, &v14, m7, m13)
        return SIMD16(
            v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15,
            v8 ^ h[0], v9 ^ h[1], v10 ^ h[2], v11 ^ h[3], v12 ^ h[4], v13 ^ h[5], v14 ^ h[6], v15 ^ h[7])
    }

    /// Sixteen words whose in-memory bytes are the little-endian encoding, converted to values.
    @inline(__always)
    static func fromLittleEndian(_ words: SIMD16<UInt32>) -> SIMD16<UInt32> {
        #if _endian(big)
        var swapped = words
        for index in 0..<16 { swapped[index] = words[index].byteSwapped }
        return swapped
        #else
        return words
        #endif
    }

    /// The words of a 64-byte block at `pointer` (any alignment).
    @inline(__always)
    static func loadBlock(_ pointer: UnsafeRawPointer) -> SIMD16<UInt32> {
        var words = SIMD16<UInt32>()
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: 64)) }
        return fromLittleEndian(words)
    }

    /// The words of a chaining value given as 32 little-endian bytes.
    static func words(of bytes: UnsafeRawBufferPointer) -> SIMD8<UInt32> {
        precondition(bytes.count == 32, "a BLAKE3 chaining value is 32 bytes, got \(bytes.count)")
        var words = SIMD8<UInt32>()
        for index in 0..<8 {
            words[index] = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
        }
        return words
    }

    /// The 32 little-endian bytes of a chaining value.
    static func bytes(of words: SIMD8<UInt32>) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(32)
        for index in 0..<8 { withUnsafeBytes(of: words[index].littleEndian) { bytes.append(contentsOf: $0) } }
        return bytes
    }

    /// The words of a key or chaining value given as 32 bytes.
    static func words(ofKey key: [UInt8]) -> SIMD8<UInt32> {
        precondition(key.count == 32, "a BLAKE3 key is 32 bytes, got \(key.count)")
        var words = SIMD8<UInt32>()
        for index in 0..<8 {
            let base = index * 4
            words[index] =
                UInt32(key[base]) | UInt32(key[base + 1]) << 8 | UInt32(key[base + 2]) << 16 | UInt32(key[base + 3]) << 24
        }
        return words
    }
}

/// A node's inputs, kept uncompressed until the caller knows whether it is the root: a non-root node
/// yields a chaining value, the root yields any number of output bytes.
struct BLAKE3Output: Sendable {
    var inputChainingValue: SIMD8<UInt32>
    var blockWords: SIMD16<UInt32>
    var counter: UInt64
    var blockLength: UInt32
    var flags: UInt32

    static func parent(
        left: SIMD8<UInt32>, right: SIMD8<UInt32>, key: SIMD8<UInt32>, flags: UInt32
    ) -> BLAKE3Output {
        BLAKE3Output(
            inputChainingValue: key, blockWords: SIMD16(lowHalf: left, highHalf: right), counter: 0,
            blockLength: UInt32(BLAKE3Core.blockByteCount), flags: flags | BLAKE3Core.parent)
    }

    /// A node whose chaining value is already known, so it can only serve as a child (never the root).
    static func known(chainingValue: SIMD8<UInt32>) -> BLAKE3Output {
        BLAKE3Output(inputChainingValue: chainingValue, blockWords: SIMD16(), counter: 0, blockLength: 0, flags: knownFlag)
    }

    /// Marks `known` nodes: no real node has every flag bit set.
    static let knownFlag = UInt32.max

    func chainingValue() -> SIMD8<UInt32> {
        if flags == BLAKE3Output.knownFlag { return inputChainingValue }
        return BLAKE3Core.compress(
            chainingValue: inputChainingValue, block: blockWords, counter: counter, blockLength: blockLength,
            flags: flags
        ).lowHalf
    }

    /// The extended output: each 64-byte block is the root compression with its block index as counter.
    func rootBytes(count: Int) -> [UInt8] {
        precondition(count >= 0, "a BLAKE3 output length cannot be negative, got \(count)")
        precondition(flags != BLAKE3Output.knownFlag, "a node known only by its chaining value cannot be the root")
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { destination in
            var outputBlock: UInt64 = 0
            var offset = 0
            while offset < count {
                var words = BLAKE3Core.compress(
                    chainingValue: inputChainingValue, block: blockWords, counter: outputBlock,
                    blockLength: blockLength, flags: flags | BLAKE3Core.root)
                words = BLAKE3Core.fromLittleEndian(words)  // the same swap encodes as decodes
                let take = min(BLAKE3Core.blockByteCount, count - offset)
                withUnsafeBytes(of: &words) { source in
                    UnsafeMutableRawBufferPointer(rebasing: destination[offset..<(offset + take)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<take]))
                }
                offset += take
                outputBlock += 1
            }
        }
        return bytes
    }
}

/// The chunk (up to 1024 bytes) currently being absorbed. Its last block is held back until more
/// input arrives, because that block must be compressed with the chunk-end (and maybe root) flag.
struct BLAKE3ChunkState: Sendable {
    var chainingValue: SIMD8<UInt32>
    let chunkCounter: UInt64
    let flags: UInt32
    /// The pending block's bytes in memory order; bytes past `blockLength` are always zero.
    var block = SIMD16<UInt32>()
    var blockLength = 0
    var blocksCompressed = 0

    init(key: SIMD8<UInt32>, chunkCounter: UInt64, flags: UInt32) {
        self.chainingValue = key
        self.chunkCounter = chunkCounter
        self.flags = flags
    }

    var length: Int { blocksCompressed * BLAKE3Core.blockByteCount + blockLength }

    private var startFlag: UInt32 { blocksCompressed == 0 ? BLAKE3Core.chunkStart : 0 }

    @inline(__always)
    private mutating func compressBlock(_ words: SIMD16<UInt32>) {
        chainingValue = BLAKE3Core.compress(
            chainingValue: chainingValue, block: words, counter: chunkCounter,
            blockLength: UInt32(BLAKE3Core.blockByteCount), flags: flags | startFlag
        ).lowHalf
        blocksCompressed += 1
    }

    /// Absorbs `count` bytes; the caller never gives more than fits in the chunk.
    mutating func update(_ start: UnsafeRawPointer, count: Int) {
        precondition(length + count <= BLAKE3Core.chunkByteCount, "chunk overflow")
        var pointer = start
        var remaining = count
        while remaining > 0 {
            if blockLength == BLAKE3Core.blockByteCount {
                compressBlock(BLAKE3Core.fromLittleEndian(block))
                block = SIMD16()
                blockLength = 0
            }
            // Whole blocks straight from the input, keeping at least one byte back.
            if blockLength == 0 {
                while remaining > BLAKE3Core.blockByteCount {
                    compressBlock(BLAKE3Core.loadBlock(pointer))
                    pointer += BLAKE3Core.blockByteCount
                    remaining -= BLAKE3Core.blockByteCount
                }
            }
            let take = min(BLAKE3Core.blockByteCount - blockLength, remaining)
            let filled = blockLength
            withUnsafeMutableBytes(of: &block) { buffer in
                (buffer.baseAddress! + filled).copyMemory(from: pointer, byteCount: take)
            }
            blockLength += take
            pointer += take
            remaining -= take
        }
    }

    func output() -> BLAKE3Output {
        BLAKE3Output(
            inputChainingValue: chainingValue, blockWords: BLAKE3Core.fromLittleEndian(block), counter: chunkCounter,
            blockLength: UInt32(blockLength), flags: flags | startFlag | BLAKE3Core.chunkEnd)
    }
}
