import AspenCore
import AspenRaft

/// How far an image being received is staged: which snapshot it is, its size, and the bytes
/// staged so far. Both stores check chunks against it the same way before they stage a byte.
struct StagedImage: Sendable, Equatable {
    var metadata: Raft.SnapshotMetadata
    var totalBytes: Int
    var stagedBytes: Int

    var isComplete: Bool { stagedBytes == totalBytes }

    /// Where staging `chunks` in order leads from `staged` (nil: nothing staged). A chunk at
    /// offset 0 starts a new image; any other must continue the staged one at exactly its
    /// size, for the same snapshot. Throws `invalidBatch` for the first chunk that does not.
    static func after(_ chunks: [Raft.SnapshotChunk], from staged: StagedImage?) throws -> StagedImage? {
        var current = staged
        for chunk in chunks { current = try accepting(chunk, after: current) }
        return current
    }

    private static func accepting(_ chunk: Raft.SnapshotChunk, after staged: StagedImage?) throws -> StagedImage {
        let what = "snapshot chunk at byte \(chunk.offset) of snapshot \(chunk.metadata.index) (term \(chunk.metadata.term))"
        guard chunk.data.count == chunk.length else {
            throw StorageError.invalidBatch("\(what) carries \(chunk.data.count) of its \(chunk.length) bytes")
        }
        guard chunk.offset >= 0, chunk.totalBytes >= chunk.offset, chunk.data.count <= chunk.totalBytes - chunk.offset else {
            throw StorageError.invalidBatch("\(what) with \(chunk.data.count) bytes overruns the image's \(chunk.totalBytes)")
        }
        guard chunk.offset > 0 else {
            return StagedImage(metadata: chunk.metadata, totalBytes: chunk.totalBytes, stagedBytes: chunk.data.count)
        }
        guard let staged, staged.metadata == chunk.metadata, staged.totalBytes == chunk.totalBytes, staged.stagedBytes == chunk.offset
        else {
            throw StorageError.invalidBatch("\(what) does not continue the staged image (\(describe(staged)))")
        }
        return StagedImage(metadata: staged.metadata, totalBytes: staged.totalBytes, stagedBytes: staged.stagedBytes + chunk.data.count)
    }

    /// Checks that `staged` is the whole image of the snapshot `metadata` describes.
    static func requireComplete(_ staged: StagedImage?, for metadata: Raft.SnapshotMetadata) throws {
        guard let staged, staged.metadata == metadata, staged.isComplete else {
            throw StorageError.invalidBatch(
                "cannot install snapshot \(metadata.index) (term \(metadata.term)): its image is not staged whole (\(describe(staged)))")
        }
    }

    static func describe(_ staged: StagedImage?) -> String {
        guard let staged else { return "nothing is staged" }
        return "\(staged.stagedBytes) of \(staged.totalBytes) bytes of snapshot \(staged.metadata.index) (term \(staged.metadata.term)) are staged"
    }
}
