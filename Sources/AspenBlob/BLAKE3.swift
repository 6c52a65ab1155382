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

    private init(keyWords: SIMD8<UInt32>, flags: UInt32) {
        self.key = keyWords
        self.flags = flags
        self.chunk = BLAKE3ChunkState(key: keyWords, chunkCounter: 0, flags: flags)
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
                pushChunk(chainingValue: chunk.output().chainingValue(), chunkCount: chunkCount)
                chunk = BLAKE3ChunkState(key: key, chunkCounter: chunkCount, flags: flags)
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

    /// Adds a finished chunk's chaining value, merging completed subtrees. `chunkCount` is the number
    /// of chunks finished so far; each trailing zero bit of it is one pair of equal subtrees to merge.
    /// Merged parents are never the root, since more input is known to follow.
    private mutating func pushChunk(chainingValue: SIMD8<UInt32>, chunkCount: UInt64) {
        var merged = chainingValue
        var count = chunkCount
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
