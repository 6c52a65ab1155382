// AspenBlob owns content-addressed blobs: their hash (BLAKE3, here) and, next, their storage layout.
// It imports only AspenCore and does no I/O; callers bring the bytes.

/// A streaming BLAKE3 hasher (hash, keyed-hash and derive-key modes, extended output), written in
/// pure Swift so blob ids need no C dependency and match the `b3sum` tool byte for byte.
///
/// Any split of the input across `update` calls gives the same result. Memory is bounded: one
/// pending chunk plus at most `chainingValueStackDepthMax` chaining values, whatever the input length.
public struct BLAKE3: Sendable {
    /// The default output length, in bytes.
    public static let outputByteCount = 32
    /// The length of a key for `init(key:)`, in bytes.
    public static let keyByteCount = 32
    /// Subtrees held while hashing: 2^54 chunks of 1 KiB is the format's 2^64-byte input limit.
    public static let chainingValueStackDepthMax = 54

    private let key: SIMD8<UInt32>
    private let flags: UInt32
    private var chunk: BLAKE3ChunkState
    /// Chaining values of completed subtrees, largest first; entry i covers 2^k chunks, k falling.
    private var chainingValueStack: [SIMD8<UInt32>] = []

    private init(keyWords: SIMD8<UInt32>, flags: UInt32, firstChunk: UInt64 = 0) {
        self.key = keyWords
        self.flags = flags
        self.chunk = BLAKE3ChunkState(key: keyWords, chunkCounter: firstChunk, flags: flags)
    }

    /// The plain hash mode.
    public init() {
        self.init(keyWords: BLAKE3Core.initialVector, flags: 0)
    }

    /// The keyed-hash mode (a MAC / PRF); nil unless `key` is exactly `keyByteCount` (32) bytes.
    public init?(key: [UInt8]) {
        guard key.count == BLAKE3.keyByteCount else { return nil }
        self.init(keyWords: BLAKE3Core.words(ofKey: key), flags: BLAKE3Core.keyedHash)
    }

    /// The key-derivation mode: the context string (hard-coded, globally unique, application-specific)
    /// is hashed first; the input then fed to `update` is the key material.
    public init(deriveKeyContext: String) {
        var contextHasher = BLAKE3(keyWords: BLAKE3Core.initialVector, flags: BLAKE3Core.deriveKeyContext)
        contextHasher.update(Array(deriveKeyContext.utf8))
        let contextKey = contextHasher.rootOutput().rootBytes(count: BLAKE3.keyByteCount)
        self.init(keyWords: BLAKE3Core.words(ofKey: contextKey), flags: BLAKE3Core.deriveKeyMaterial)
    }

    /// Absorbs more input.
    public mutating func update(_ bytes: some Collection<UInt8>) {
        let absorbed: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            update(UnsafeRawBufferPointer(buffer))
        }
        if absorbed == nil {
            Array(bytes).withUnsafeBytes { update($0) }
        }
    }

    /// Absorbs more input from raw memory (the fast path; no copy beyond a partial block).
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var offset = 0
        while offset < bytes.count {
            // A full chunk is finished only once more input proves it is not the last one.
            if chunk.length == BLAKE3Core.chunkByteCount {
                let chunkCount = chunk.chunkCounter + 1
                pushSubtree(chainingValue: chunk.output().chainingValue(), chunkCount: chunkCount, chunksLog2: 0)
                chunk = BLAKE3ChunkState(key: key, chunkCounter: chunkCount, flags: flags)
            }
            // Whole chunks many at a time while more input follows them (so none of them is the root):
            // sixteen-chunk subtrees from a multiple of sixteen, four chunks at a time from a multiple of four.
            if chunk.length == 0 {
                let groupBytes = 16 * BLAKE3Core.chunkByteCount
                let laneBytes = BLAKE3Lanes.laneCount * BLAKE3Core.chunkByteCount
                while bytes.count - offset > laneBytes {
                    let first = chunk.chunkCounter
                    if first % 16 == 0, bytes.count - offset > groupBytes {
                        let value = BLAKE3Lanes.subtreeChainingValue16(base + offset, counter: first, key: key, flags: flags)
                        pushSubtree(chainingValue: value, chunkCount: first + 16, chunksLog2: 4)
                        chunk = BLAKE3ChunkState(key: key, chunkCounter: first + 16, flags: flags)
                        offset += groupBytes
                    } else if first % 4 == 0 {
                        let values = BLAKE3Lanes.chunkChainingValues(base + offset, counter: first, key: key, flags: flags)
                        for lane in 0..<BLAKE3Lanes.laneCount {
                            pushSubtree(chainingValue: values.lane(lane), chunkCount: first + UInt64(lane) + 1, chunksLog2: 0)
                        }
                        chunk = BLAKE3ChunkState(key: key, chunkCounter: first + 4, flags: flags)
                        offset += laneBytes
                    } else {
                        break  // one chunk at a time until the counter is a multiple of four
                    }
                }
            }
            let take = min(BLAKE3Core.chunkByteCount - chunk.length, bytes.count - offset)
            chunk.update(base + offset, count: take)
            offset += take
        }
    }

    /// The 32-byte digest. Does not change the hasher, so more input may follow.
    public func finalize() -> [UInt8] {
        finalize(count: BLAKE3.outputByteCount)
    }

    /// `count` bytes of extended output (any length); the first 32 are `finalize()`.
    public func finalize(count: Int) -> [UInt8] {
        rootOutput().rootBytes(count: count)
    }

    /// The 32-byte BLAKE3 hash of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var hasher = BLAKE3()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// The plain-mode tree node over `bytes`, which start at chunk `firstChunk`: a whole subtree of the
    /// tree over some larger input (its chunk count a power of two, aligned to it, or the input's
    /// last subtree). Its chaining value when it is not the root; its `rootBytes` when it is.
    static func subtree(_ bytes: UnsafeRawBufferPointer, firstChunk: UInt64, isRoot: Bool = false) -> BLAKE3Output {
        if !isRoot, firstChunk % 16 == 0, bytes.count == 16 * BLAKE3Core.chunkByteCount, let base = bytes.baseAddress {
            // The common case, a whole chunk group that is not the root, without the hasher.
            let value = BLAKE3Lanes.subtreeChainingValue16(
                base, counter: firstChunk, key: BLAKE3Core.initialVector, flags: 0)
            return BLAKE3Output.known(chainingValue: value)
        }
        var hasher = BLAKE3(keyWords: BLAKE3Core.initialVector, flags: 0, firstChunk: firstChunk)
        hasher.update(bytes)
        return hasher.rootOutput()
    }

    /// Adds the chaining value of a finished subtree of 2^`chunksLog2` chunks (aligned to its size),
    /// merging completed subtrees. `chunkCount` is the number of chunks finished so far; each trailing
    /// zero bit of it above the subtree's own is one pair of equal subtrees to merge. Merged parents
    /// are never the root, since more input is known to follow.
    private mutating func pushSubtree(chainingValue: SIMD8<UInt32>, chunkCount: UInt64, chunksLog2: Int) {
        var merged = chainingValue
        var count = chunkCount >> UInt64(chunksLog2)
        while count & 1 == 0 {
            let left = chainingValueStack.removeLast()
            merged = BLAKE3Output.parent(left: left, right: merged, key: key, flags: flags).chainingValue()
            count >>= 1
        }
        precondition(
            chainingValueStack.count < BLAKE3.chainingValueStackDepthMax,
            "BLAKE3 input exceeds 2^64 bytes (chainingValueStackDepthMax \(BLAKE3.chainingValueStackDepthMax))")
        chainingValueStack.append(merged)
    }

    /// The root node: the current chunk, folded right-to-left with every subtree on the stack.
    private func rootOutput() -> BLAKE3Output {
        var output = chunk.output()
        for left in chainingValueStack.reversed() {
            output = BLAKE3Output.parent(left: left, right: output.chainingValue(), key: key, flags: flags)
        }
        return output
    }
}
