import AspenBlobAVX2
import Foundation

/// Where AspenBlob hashes whole chunks in SIMD lanes (`LaneKernel`): four at a time here, or eight
/// in AspenBlobAVX2's build of the same kernel on a CPU with AVX2.
enum BLAKE3Lanes {
    static let laneCount = LaneKernel.laneCount

    /// Whether this CPU takes the eight-lane AVX2 kernel for sixteen-chunk subtrees: read once from
    /// /proc/cpuinfo. ASPEN_BLAKE3_LANES=4 keeps the four-lane one (to compare, or to rule it out).
    static let wide: Bool = {
        #if arch(x86_64)
        if ProcessInfo.processInfo.environment["ASPEN_BLAKE3_LANES"] == "4" { return false }
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return false }
        return flags.split(separator: " ").contains("avx2")
        #else
        return false
        #endif
    }()

    /// The chaining values of `laneCount` consecutive whole chunks at `base`, the first numbered `counter`.
    @inline(__always)
    static func chunkChainingValues(_ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> LaneKernel.Words8 {
        LaneKernel.chunkChainingValues(base, counter: counter, key: key, flags: flags)
    }

    /// The chaining value of sixteen consecutive whole chunks (a 16 KiB subtree) at `base`, the first
    /// numbered `counter` (a multiple of 16), through the eight-lane kernel when `wide`. The subtree
    /// may not be the whole input's root.
    static func subtreeChainingValue16(
        _ base: UnsafeRawPointer, counter: UInt64, key: SIMD8<UInt32>, flags: UInt32, wide: Bool = BLAKE3Lanes.wide
    ) -> SIMD8<UInt32> {
        let (a, b, c, d) =
            wide
            ? BLAKE3AVX2.quarterChainingValues16(base, counter: counter, key: key, flags: flags)
            : LaneWidth.quarterChainingValues16(base, counter: counter, key: key, flags: flags)
        // Levels 3 and 4: three parents, one at a time.
        let left = BLAKE3Output.parent(left: a, right: b, key: key, flags: flags).chainingValue()
        let right = BLAKE3Output.parent(left: c, right: d, key: key, flags: flags).chainingValue()
        return BLAKE3Output.parent(left: left, right: right, key: key, flags: flags).chainingValue()
    }
}
