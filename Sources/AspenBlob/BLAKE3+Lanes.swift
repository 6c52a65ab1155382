/// Four whole chunks hashed at once: lane k of every vector below belongs to chunk k. Whole chunks are
/// independent until their chaining values meet in parent nodes, so the sixteen state words of four
/// chunks sit side by side in SIMD4 vectors and each instruction advances all four — the layout of the
/// reference implementation's `hash_many`. Only a chunk known not to be the last (and so not the root)
/// goes through here.
enum BLAKE3Lanes {
    static let laneCount = 4
    typealias Lane = SIMD4<UInt32>

    /// The two shifted halves are joined with `&+` (equal to `|`, as their bits never overlap): LLVM
    /// matches `|` as a vector rotate, which baseline x86-64 (SSE2) has no instruction for, and then
    /// rotates each lane in a general register — measured 4× slower than two shifts and an or.
    @inline(__always)
    static func rotateRight(_ x: Lane, _ n: UInt32) -> Lane {
        (x &>> n) &+ (x &<< (32 - n))
    }

    /// Rotation by 16 swaps each word's halves: two 16-bit shuffles instead of two shifts and an add.
    @inline(__always)
    static func rotateRight16(_ x: Lane) -> Lane {
        let h = unsafeBitCast(x, to: SIMD8<UInt16>.self)
        return unsafeBitCast(SIMD8<UInt16>(h[1], h[0], h[3], h[2], h[5], h[4], h[7], h[6]), to: Lane.self)
    }

    @inline(__always)
    static func mix(_ a: inout Lane, _ b: inout Lane, _ c: inout Lane, _ d: inout Lane, _ x: Lane, _ y: Lane) {
        a = a &+ b &+ x
        d = rotateRight(d ^ a, 16)
        c = c &+ d
        b = rotateRight(b ^ c, 12)
        a = a &+ b &+ y
        d = rotateRight(d ^ a, 8)
        c = c &+ d
        b = rotateRight(b ^ c, 7)
    }

    /// Words `4q…4q+3` of block `block` of the four consecutive chunks at `base`, one vector per word,
    /// lane k from chunk k: four 16-byte loads and a 4×4 transpose (shuffles), instead of sixteen
    /// scalar loads (measured 10% faster overall).
    @inline(__always)
    static func loadQuarter(_ base: UnsafeRawPointer, block: Int, quarter: Int) -> (Lane, Lane, Lane, Lane) {
        let offset = block * BLAKE3Core.blockByteCount + quarter * 16
        let stride = BLAKE3Core.chunkByteCount
        #if _endian(little)
        let r0 = base.loadUnaligned(fromByteOffset: offset, as: Lane.self)
        let r1 = base.loadUnaligned(fromByteOffset: offset + stride, as: Lane.self)
        let r2 = base.loadUnaligned(fromByteOffset: offset + 2 * stride, as: Lane.self)
        let r3 = base.loadUnaligned(fromByteOffset: offset + 3 * stride, as: Lane.self)
        let t0 = Lane(r0[0], r1[0], r0[1], r1[1]), t1 = Lane(r2[0], r3[0], r2[1], r3[1])
        let t2 = Lane(r0[2], r1[2], r0[3], r1[3]), t3 = Lane(r2[2], r3[2], r2[3], r3[3])
        return (Lane(t0[0], t0[1], t1[0], t1[1]), Lane(t0[2], t0[3], t1[2], t1[3]),
                Lane(t2[0], t2[1], t3[0], t3[1]), Lane(t2[2], t2[3], t3[2], t3[3]))
        #else
        @inline(__always)
        func word(_ index: Int) -> Lane {
            let at = offset + index * 4
            return Lane(
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + stride, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + 2 * stride, as: UInt32.self)),
                UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + 3 * stride, as: UInt32.self)))
        }
        return (word(0), word(1), word(2), word(3))
        #endif
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

    /// One compression of four blocks: `h` is replaced by the four next chaining values.
    @inline(__always)
    static func compress(
        _ h: inout Words8, _ m: (Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane, Lane),
        counterLow: Lane, counterHigh: Lane, blockLength: UInt32, flags: UInt32
    ) {
        let (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15) = m
        var v0 = h.w0, v1 = h.w1, v2 = h.w2, v3 = h.w3, v4 = h.w4, v5 = h.w5, v6 = h.w6, v7 = h.w7
        var v8 = Lane(repeating: BLAKE3Core.initialVector[0]), v9 = Lane(repeating: BLAKE3Core.initialVector[1])
        var v10 = Lane(repeating: BLAKE3Core.initialVector[2]), v11 = Lane(repeating: BLAKE3Core.initialVector[3])
        var v12 = counterLow, v13 = counterHigh, v14 = Lane(repeating: blockLength), v15 = Lane(repeating: flags)
        // The same seven rounds and message schedule as `BLAKE3Core.compress`.
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

    /// The chaining values of four consecutive whole chunks at `base`, the first numbered `counter`.
    /// None of them may be the root.
    @inline(never)
    static func chunkChainingValues(_ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> Words8 {
        var h = Words8(repeating: key)
        let counters = SIMD4<UInt64>(counter, counter &+ 1, counter &+ 2, counter &+ 3)
        let counterLow = Lane(truncatingIfNeeded: counters)
        let counterHigh = Lane(truncatingIfNeeded: counters &>> 32)
        let blocksPerChunk = BLAKE3Core.chunkByteCount / BLAKE3Core.blockByteCount
        for block in 0..<blocksPerChunk {
            var blockFlags = flags
            if block == 0 { blockFlags |= BLAKE3Core.chunkStart }
            if block == blocksPerChunk - 1 { blockFlags |= BLAKE3Core.chunkEnd }
            let (m0, m1, m2, m3) = loadQuarter(base, block: block, quarter: 0)
            let (m4, m5, m6, m7) = loadQuarter(base, block: block, quarter: 1)
            let (m8, m9, m10, m11) = loadQuarter(base, block: block, quarter: 2)
            let (m12, m13, m14, m15) = loadQuarter(base, block: block, quarter: 3)
            compress(
                &h, (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15),
                counterLow: counterLow, counterHigh: counterHigh, blockLength: UInt32(BLAKE3Core.blockByteCount),
                flags: blockFlags)
        }
        return h
    }

    /// Four parent nodes at once: parent k joins `left` lane k and `right` lane k. None is the root.
    @inline(never)
    static func parentChainingValues(left: Words8, right: Words8, key: SIMD8<UInt32>, flags: UInt32) -> Words8 {
        var h = Words8(repeating: key)
        let zero = Lane()
        compress(
            &h,
            (left.w0, left.w1, left.w2, left.w3, left.w4, left.w5, left.w6, left.w7,
             right.w0, right.w1, right.w2, right.w3, right.w4, right.w5, right.w6, right.w7),
            counterLow: zero, counterHigh: zero, blockLength: UInt32(BLAKE3Core.blockByteCount),
            flags: flags | BLAKE3Core.parent)
        return h
    }

    /// Words8 whose lanes are the even (`odd == false`) or odd lanes of `a` then of `b`.
    @inline(__always)
    static func pick(_ a: Words8, _ b: Words8, odd: Bool) -> Words8 {
        let o = odd ? 1 : 0
        @inline(__always)
        func join(_ x: Lane, _ y: Lane) -> Lane { Lane(x[o], x[o + 2], y[o], y[o + 2]) }
        var result = a
        result.w0 = join(a.w0, b.w0); result.w1 = join(a.w1, b.w1)
        result.w2 = join(a.w2, b.w2); result.w3 = join(a.w3, b.w3)
        result.w4 = join(a.w4, b.w4); result.w5 = join(a.w5, b.w5)
        result.w6 = join(a.w6, b.w6); result.w7 = join(a.w7, b.w7)
        return result
    }

    /// The chaining value of sixteen consecutive whole chunks (a 16 KiB subtree) at `base`, the first
    /// numbered `counter` (a multiple of 16). The subtree may not be the whole input's root.
    static func subtreeChainingValue16(_ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> SIMD8<UInt32> {
        let stride = 4 * BLAKE3Core.chunkByteCount
        let c0 = chunkChainingValues(base, counter: counter, key: key, flags: flags)
        let c1 = chunkChainingValues(base + stride, counter: counter &+ 4, key: key, flags: flags)
        let c2 = chunkChainingValues(base + 2 * stride, counter: counter &+ 8, key: key, flags: flags)
        let c3 = chunkChainingValues(base + 3 * stride, counter: counter &+ 12, key: key, flags: flags)
        // Level 1: parents of chunks (0,1) (2,3) (4,5) (6,7), then of (8,9) … (14,15).
        let p0 = parentChainingValues(left: pick(c0, c1, odd: false), right: pick(c0, c1, odd: true), key: key, flags: flags)
        let p1 = parentChainingValues(left: pick(c2, c3, odd: false), right: pick(c2, c3, odd: true), key: key, flags: flags)
        // Level 2: four parents of level-1 pairs.
        let q = parentChainingValues(left: pick(p0, p1, odd: false), right: pick(p0, p1, odd: true), key: key, flags: flags)
        // Levels 3 and 4: three parents, one at a time.
        let left = BLAKE3Output.parent(left: q.lane(0), right: q.lane(1), key: key, flags: flags).chainingValue()
        let right = BLAKE3Output.parent(left: q.lane(2), right: q.lane(3), key: key, flags: flags).chainingValue()
        return BLAKE3Output.parent(left: left, right: right, key: key, flags: flags).chainingValue()
    }
}
