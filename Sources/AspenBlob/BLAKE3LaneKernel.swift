/// Whole chunks hashed `laneCount` at a time: lane k of every vector below belongs to chunk k.
/// Whole chunks are independent until their chaining values meet in parent nodes, so the sixteen
/// state words of several chunks sit side by side in SIMD vectors and each instruction advances all
/// of them: the layout of the reference implementation's `hash_many`. Only a chunk known not to be
/// the last (and so not the root) goes through here.
///
/// This file is compiled twice from one source: into AspenBlob, where `LaneWidth` (its
/// BLAKE3+Lanes.swift) makes lanes SIMD4 for any CPU, and into AspenBlobAVX2 (through a symbolic
/// link), built for AVX2, where lanes are SIMD8. Swift's SIMD operators are only vector
/// instructions on concrete vector types, so the width is a type alias rather than a generic.
enum LaneKernel {
    typealias Lane = LaneWidth.Lane
    static var laneCount: Int { Lane.scalarCount }

    static let blockByteCount = 64
    static let chunkByteCount = 1024
    /// The first eight words of SHA-256's initial hash value, as the specification uses them.
    static let initialVector = SIMD8<UInt32>(
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19)
    static let chunkStart: UInt32 = 1 << 0
    static let chunkEnd: UInt32 = 1 << 1
    static let parent: UInt32 = 1 << 2

    @inline(__always)
    static func mix(_ a: inout Lane, _ b: inout Lane, _ c: inout Lane, _ d: inout Lane, _ x: Lane, _ y: Lane) {
        a = a &+ b &+ x
        d = LaneWidth.rotateRight(d ^ a, 16)
        c = c &+ d
        b = LaneWidth.rotateRight(b ^ c, 12)
        a = a &+ b &+ y
        d = LaneWidth.rotateRight(d ^ a, 8)
        c = c &+ d
        b = LaneWidth.rotateRight(b ^ c, 7)
    }

    /// Eight words, one vector each, lane k for node k.
    struct Words8 {
        var w0, w1, w2, w3, w4, w5, w6, w7: Lane

        @inline(__always)
        init(repeating words: SIMD8<UInt32>) {
            w0 = Lane(repeating: words[0]); w1 = Lane(repeating: words[1])
            w2 = Lane(repeating: words[2]); w3 = Lane(repeating: words[3])
            w4 = Lane(repeating: words[4]); w5 = Lane(repeating: words[5])
            w6 = Lane(repeating: words[6]); w7 = Lane(repeating: words[7])
        }

        /// Lane k of each word, as one node's eight words.
        @inline(__always)
        func lane(_ k: Int) -> SIMD8<UInt32> {
            SIMD8(w0[k], w1[k], w2[k], w3[k], w4[k], w5[k], w6[k], w7[k])
        }
    }

    /// One compression of `laneCount` blocks: `h` is replaced by the four next chaining values.
    @inline(__always)
    static func compress(
        _ h: inout Words8, _ m: (Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane),
        counterLow: Lane, counterHigh: Lane, blockLength: UInt32, flags: UInt32
    ) {
        let (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15) = m
        var v0 = h.w0, v1 = h.w1, v2 = h.w2, v3 = h.w3, v4 = h.w4, v5 = h.w5, v6 = h.w6, v7 = h.w7
        var v8 = Lane(repeating: LaneKernel.initialVector[0]), v9 = Lane(repeating: LaneKernel.initialVector[1])
        var v10 = Lane(repeating: LaneKernel.initialVector[2]), v11 = Lane(repeating: LaneKernel.initialVector[3])
        var v12 = counterLow, v13 = counterHigh, v14 = Lane(repeating: blockLength), v15 = Lane(repeating: flags)
        // The same seven rounds and message schedule as `LaneKernel.compress`.
        mix(&v0, &v4, &v8, &v12, m0, m1)
        mix(&v1, &v5, &v9, &v13, m2, m3)
        mix(&v2, &v6, &v10, &v14, m4, m5)
        mix(&v3, &v7, &v11, &v15, m6, m7)
        mix(&v0, &v5, &v10, &v15, m8, m9)
        mix(&v1, &v6, &v11, &v12, m10, m11)
        mix(&v2, &v7, &v8, &v13, m12, m13)
        mix(&v3, &v4, &v9, &v14, m14, m15)
        mix(&v0, &v4, &v8, &v12, m2, m6)
        mix(&v1, &v5, &v9, &v13, m3, m10)
        mix(&v2, &v6, &v10, &v14, m7, m0)
        mix(&v3, &v7, &v11, &v15, m4, m13)
        mix(&v0, &v5, &v10, &v15, m1, m11)
        mix(&v1, &v6, &v11, &v12, m12, m5)
        mix(&v2, &v7, &v8, &v13, m9, m14)
        mix(&v3, &v4, &v9, &v14, m15, m8)
        mix(&v0, &v4, &v8, &v12, m3, m4)
        mix(&v1, &v5, &v9, &v13, m10, m12)
        mix(&v2, &v6, &v10, &v14, m13, m2)
        mix(&v3, &v7, &v11, &v15, m7, m14)
        mix(&v0, &v5, &v10, &v15, m6, m5)
        mix(&v1, &v6, &v11, &v12, m9, m0)
        mix(&v2, &v7, &v8, &v13, m11, m15)
        mix(&v3, &v4, &v9, &v14, m8, m1)
        mix(&v0, &v4, &v8, &v12, m10, m7)
        mix(&v1, &v5, &v9, &v13, m12, m9)
        mix(&v2, &v6, &v10, &v14, m14, m3)
        mix(&v3, &v7, &v11, &v15, m13, m15)
        mix(&v0, &v5, &v10, &v15, m4, m0)
        mix(&v1, &v6, &v11, &v12, m11, m2)
        mix(&v2, &v7, &v8, &v13, m5, m8)
        mix(&v3, &v4, &v9, &v14, m1, m6)
        mix(&v0, &v4, &v8, &v12, m12, m13)
        mix(&v1, &v5, &v9, &v13, m9, m11)
        mix(&v2, &v6, &v10, &v14, m15, m10)
        mix(&v3, &v7, &v11, &v15, m14, m8)
        mix(&v0, &v5, &v10, &v15, m7, m2)
        mix(&v1, &v6, &v11, &v12, m5, m3)
        mix(&v2, &v7, &v8, &v13, m0, m1)
        mix(&v3, &v4, &v9, &v14, m6, m4)
        mix(&v0, &v4, &v8, &v12, m9, m14)
        mix(&v1, &v5, &v9, &v13, m11, m5)
        mix(&v2, &v6, &v10, &v14, m8, m12)
        mix(&v3, &v7, &v11, &v15, m15, m1)
        mix(&v0, &v5, &v10, &v15, m13, m3)
        mix(&v1, &v6, &v11, &v12, m0, m10)
        mix(&v2, &v7, &v8, &v13, m2, m6)
        mix(&v3, &v4, &v9, &v14, m4, m7)
        mix(&v0, &v4, &v8, &v12, m11, m15)
        mix(&v1, &v5, &v9, &v13, m5, m0)
        mix(&v2, &v6, &v10, &v14, m1, m9)
        mix(&v3, &v7, &v11, &v15, m8, m6)
        mix(&v0, &v5, &v10, &v15, m14, m10)
        mix(&v1, &v6, &v11, &v12, m2, m12)
        mix(&v2, &v7, &v8, &v13, m3, m4)
        mix(&v3, &v4, &v9, &v14, m7, m13)
        h.w0 = v0 ^ v8
        h.w1 = v1 ^ v9
        h.w2 = v2 ^ v10
        h.w3 = v3 ^ v11
        h.w4 = v4 ^ v12
        h.w5 = v5 ^ v13
        h.w6 = v6 ^ v14
        h.w7 = v7 ^ v15
    }

    /// The chaining values of `laneCount` consecutive whole chunks at `base`, the first numbered `counter`.
    /// None of them may be the root.
    @inline(never)
    static func chunkChainingValues(_ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> Words8 {
        var h = Words8(repeating: key)
        let (counterLow, counterHigh) = LaneWidth.counters(from: counter)
        let blocksPerChunk = LaneKernel.chunkByteCount / LaneKernel.blockByteCount
        for block in 0..<blocksPerChunk {
            var blockFlags = flags
            if block == 0 { blockFlags |= LaneKernel.chunkStart }
            if block == blocksPerChunk - 1 { blockFlags |= LaneKernel.chunkEnd }
            let (m0, m1, m2, m3) = LaneWidth.loadQuarter(base, block: block, quarter: 0)
            let (m4, m5, m6, m7) = LaneWidth.loadQuarter(base, block: block, quarter: 1)
            let (m8, m9, m10, m11) = LaneWidth.loadQuarter(base, block: block, quarter: 2)
            let (m12, m13, m14, m15) = LaneWidth.loadQuarter(base, block: block, quarter: 3)
            compress(
                &h, (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15),
                counterLow: counterLow, counterHigh: counterHigh, blockLength: UInt32(LaneKernel.blockByteCount),
                flags: blockFlags)
        }
        return h
    }

    /// `laneCount` parent nodes at once: parent k joins `left` lane k and `right` lane k. None is the root.
    @inline(never)
    static func parentChainingValues(left: Words8, right: Words8, key: SIMD8<UInt32>, flags: UInt32) -> Words8 {
        var h = Words8(repeating: key)
        let zero = Lane()
        compress(
            &h,
            (left.w0, left.w1, left.w2, left.w3, left.w4, left.w5, left.w6, left.w7,
             right.w0, right.w1, right.w2, right.w3, right.w4, right.w5, right.w6, right.w7),
            counterLow: zero, counterHigh: zero, blockLength: UInt32(LaneKernel.blockByteCount),
            flags: flags | LaneKernel.parent)
        return h
    }


    /// Words8 whose lanes are the even (`odd == false`) or odd lanes of `a`, then those of `b`.
    @inline(__always)
    static func pick(_ a: Words8, _ b: Words8, odd: Bool) -> Words8 {
        let o = odd ? 1 : 0
        let half = Lane.scalarCount / 2
        @inline(__always)
        func join(_ x: Lane, _ y: Lane) -> Lane {
            var joined = Lane()
            for i in 0..<half {
                joined[i] = x[o + 2 * i]
                joined[half + i] = y[o + 2 * i]
            }
            return joined
        }
        var result = a
        result.w0 = join(a.w0, b.w0); result.w1 = join(a.w1, b.w1)
        result.w2 = join(a.w2, b.w2); result.w3 = join(a.w3, b.w3)
        result.w4 = join(a.w4, b.w4); result.w5 = join(a.w5, b.w5)
        result.w6 = join(a.w6, b.w6); result.w7 = join(a.w7, b.w7)
        return result
    }

    typealias Quad = SIMD4<UInt32>

    /// Words `4q…4q+3` of block `block` of the four consecutive chunks at `base`, one SIMD4 per word,
    /// lane k from chunk k: four 16-byte loads and a 4×4 transpose (shuffles), instead of sixteen
    /// scalar loads (measured 10% faster overall).
    @inline(__always)
    static func transposedQuarter(_ base: UnsafeRawPointer, block: Int, quarter: Int) -> (Quad, Quad, Quad, Quad) {
        let offset = block * LaneKernel.blockByteCount + quarter * 16
        let stride = LaneKernel.chunkByteCount
        #if _endian(little)
        let r0 = base.loadUnaligned(fromByteOffset: offset, as: Quad.self)
        let r1 = base.loadUnaligned(fromByteOffset: offset + stride, as: Quad.self)
        let r2 = base.loadUnaligned(fromByteOffset: offset + 2 * stride, as: Quad.self)
        let r3 = base.loadUnaligned(fromByteOffset: offset + 3 * stride, as: Quad.self)
        let t0 = Quad(r0[0], r1[0], r0[1], r1[1]), t1 = Quad(r2[0], r3[0], r2[1], r3[1])
        let t2 = Quad(r0[2], r1[2], r0[3], r1[3]), t3 = Quad(r2[2], r3[2], r2[3], r3[3])
        return (Quad(t0[0], t0[1], t1[0], t1[1]), Quad(t0[2], t0[3], t1[2], t1[3]),
                Quad(t2[0], t2[1], t3[0], t3[1]), Quad(t2[2], t2[3], t3[2], t3[3]))
        #else
        @inline(__always)
        func word(_ index: Int) -> Quad {
            let at = offset + index * 4
            return Quad(
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + stride, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + 2 * stride, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + 3 * stride, as: UInt32.self)))
        }
        return (word(0), word(1), word(2), word(3))
        #endif
    }
}
