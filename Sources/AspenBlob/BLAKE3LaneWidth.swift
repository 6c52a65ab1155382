/// The lane width of AspenBlob's build of `LaneKernel`: four chunks at once in SIMD4 vectors,
/// which every x86-64 CPU (SSE2) and ARM64 CPU (NEON) has. CPUs with AVX2 take AspenBlobAVX2's
/// eight-lane build instead (see `BLAKE3Lanes.wide`).
enum LaneWidth {
    typealias Lane = SIMD4<UInt32>

    /// The two shifted halves are joined with `&+` (equal to `|`, as their bits never overlap): LLVM
    /// matches `|` as a vector rotate, which baseline x86-64 (SSE2) has no instruction for, and then
    /// rotates each lane in a general register — measured 4× slower than two shifts and an or.
    /// Rotation by 16 swaps each word's halves: two 16-bit shuffles instead.
    @inline(__always)
    static func rotateRight(_ x: Lane, _ n: UInt32) -> Lane {
        if n == 16 {
            let h = unsafeBitCast(x, to: SIMD8<UInt16>.self)
            return unsafeBitCast(SIMD8<UInt16>(h[1], h[0], h[3], h[2], h[5], h[4], h[7], h[6]), to: Lane.self)
        }
        return (x &>> n) &+ (x &<< (32 - n))
    }

    /// The low and high words of the counters of four consecutive chunks from `counter`.
    @inline(__always)
    static func counters(from counter: UInt64) -> (Lane, Lane) {
        let counters = SIMD4<UInt64>(counter, counter &+ 1, counter &+ 2, counter &+ 3)
        return (Lane(truncatingIfNeeded: counters), Lane(truncatingIfNeeded: counters &>> 32))
    }

    /// Words `4q…4q+3` of block `block` of the four consecutive chunks at `base`, one vector per
    /// word, lane k from chunk k.
    @inline(__always)
    static func loadQuarter(_ base: UnsafeRawPointer, block: Int, quarter: Int) -> (Lane, Lane, Lane, Lane) {
        LaneKernel.transposedQuarter(base, block: block, quarter: quarter)
    }

    /// The chaining values of the four 4-chunk subtrees of sixteen consecutive whole chunks at
    /// `base`, the first numbered `counter` (a multiple of 16).
    static func quarterChainingValues16(
        _ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32
    ) -> (SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>) {
        let stride = 4 * LaneKernel.chunkByteCount
        let c0 = LaneKernel.chunkChainingValues(base, counter: counter, key: key, flags: flags)
        let c1 = LaneKernel.chunkChainingValues(base + stride, counter: counter &+ 4, key: key, flags: flags)
        let c2 = LaneKernel.chunkChainingValues(base + 2 * stride, counter: counter &+ 8, key: key, flags: flags)
        let c3 = LaneKernel.chunkChainingValues(base + 3 * stride, counter: counter &+ 12, key: key, flags: flags)
        // Level 1: parents of chunks (0,1) (2,3) (4,5) (6,7), then of (8,9) … (14,15).
        let p0 = LaneKernel.parentChainingValues(left: LaneKernel.pick(c0, c1, odd: false), right: LaneKernel.pick(c0, c1, odd: true), key: key, flags: flags)
        let p1 = LaneKernel.parentChainingValues(left: LaneKernel.pick(c2, c3, odd: false), right: LaneKernel.pick(c2, c3, odd: true), key: key, flags: flags)
        // Level 2: four parents of level-1 pairs.
        let q = LaneKernel.parentChainingValues(left: LaneKernel.pick(p0, p1, odd: false), right: LaneKernel.pick(p0, p1, odd: true), key: key, flags: flags)
        return (q.lane(0), q.lane(1), q.lane(2), q.lane(3))
    }
}
