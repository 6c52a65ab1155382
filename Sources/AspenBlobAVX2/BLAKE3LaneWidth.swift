/// The lane width of AspenBlobAVX2's build of `LaneKernel` (the same source as AspenBlob's, through
/// a symbolic link): eight chunks at once in SIMD8 vectors, compiled for AVX2 (Haswell and later),
/// where each is one 256-bit register. AspenBlob calls it only on a CPU that has AVX2.
enum LaneWidth {
    typealias Lane = SIMD8<UInt32>

    /// Rotation by 16 and by 8 move whole bytes: one byte shuffle each (vpshufb). Other amounts
    /// are two shifts joined with `&+` (equal to `|`: the halves never overlap).
    @inline(__always)
    static func rotateRight(_ x: Lane, _ n: UInt32) -> Lane {
        if n == 16 {
            let h = unsafeBitCast(x, to: SIMD16<UInt16>.self)
            return unsafeBitCast(
                SIMD16<UInt16>(h[1], h[0], h[3], h[2], h[5], h[4], h[7], h[6], h[9], h[8], h[11], h[10], h[13], h[12], h[15], h[14]),
                to: Lane.self)
        }
        if n == 8 {
            let b = unsafeBitCast(x, to: SIMD32<UInt8>.self)
            var r = SIMD32<UInt8>()
            for word in 0..<8 {
                r[4 * word] = b[4 * word + 1]
                r[4 * word + 1] = b[4 * word + 2]
                r[4 * word + 2] = b[4 * word + 3]
                r[4 * word + 3] = b[4 * word]
            }
            return unsafeBitCast(r, to: Lane.self)
        }
        return (x &>> n) &+ (x &<< (32 - n))
    }

    /// The low and high words of the counters of eight consecutive chunks from `counter`.
    @inline(__always)
    static func counters(from counter: UInt64) -> (Lane, Lane) {
        let counters = SIMD8<UInt64>(0, 1, 2, 3, 4, 5, 6, 7) &+ counter
        return (Lane(truncatingIfNeeded: counters), Lane(truncatingIfNeeded: counters &>> 32))
    }

    /// Words `4q…4q+3` of block `block` of the eight consecutive chunks at `base`, one vector per
    /// word, lane k from chunk k: the four-chunk transposes of chunks 0–3 and 4–7, side by side.
    @inline(__always)
    static func loadQuarter(_ base: UnsafeRawPointer, block: Int, quarter: Int) -> (Lane, Lane, Lane, Lane) {
        let (a0, a1, a2, a3) = LaneKernel.transposedQuarter(base, block: block, quarter: quarter)
        let (b0, b1, b2, b3) = LaneKernel.transposedQuarter(base + 4 * LaneKernel.chunkByteCount, block: block, quarter: quarter)
        return (Lane(lowHalf: a0, highHalf: b0), Lane(lowHalf: a1, highHalf: b1), Lane(lowHalf: a2, highHalf: b2), Lane(lowHalf: a3, highHalf: b3))
    }
}

/// The entry point AspenBlob calls on a CPU with AVX2.
public enum BLAKE3AVX2 {
    /// The chaining values of the four 4-chunk subtrees of sixteen consecutive whole chunks at
    /// `base`, the first numbered `counter` (a multiple of 16): two eight-lane passes over the
    /// chunks, eight level-1 parents at once, then the four level-2 parents (half the lanes idle).
    public static func quarterChainingValues16(
        _ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32
    ) -> (SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>) {
        let c0 = LaneKernel.chunkChainingValues(base, counter: counter, key: key, flags: flags)
        let c1 = LaneKernel.chunkChainingValues(base + 8 * LaneKernel.chunkByteCount, counter: counter &+ 8, key: key, flags: flags)
        let p = LaneKernel.parentChainingValues(
            left: LaneKernel.pick(c0, c1, odd: false), right: LaneKernel.pick(c0, c1, odd: true), key: key, flags: flags)
        let q = LaneKernel.parentChainingValues(
            left: LaneKernel.pick(p, p, odd: false), right: LaneKernel.pick(p, p, odd: true), key: key, flags: flags)
        return (q.lane(0), q.lane(1), q.lane(2), q.lane(3))
    }
}
