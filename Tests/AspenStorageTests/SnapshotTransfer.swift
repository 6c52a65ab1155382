import AspenCore
import AspenKV
import AspenRaft
import AspenStorage

/// Moving a state from one store to another the way Raft does: the source prepares an image and
/// serves it in chunks; the target stages them and installs the image in the batch that carries
/// the last chunk.
extension NodeStorage {
    /// Prepares an image of the applied state and reads it back whole, `chunkBytes` at a time.
    func wholeImage(chunkBytes: Int = 4096) throws -> (index: Raft.Index, data: Bytes) {
        let (index, size) = try prepareSnapshotImage()
        var data: Bytes = []
        while data.count < size {
            guard let bytes = try snapshotImageBytes(index: index, offset: data.count, length: chunkBytes), !bytes.isEmpty else {
                throw StorageError.invalidBatch("the prepared image at \(index) ended at byte \(data.count) of \(size)")
            }
            data += bytes
        }
        return (index, data)
    }

    /// Stages `chunks` a few per batch and installs the image with the last of them.
    func install(_ chunks: [Raft.SnapshotChunk], hardState: Raft.HardState?, chunksPerBatch: Int = 3) throws {
        let batches = stride(from: 0, to: chunks.count, by: chunksPerBatch).map { Array(chunks[$0..<min($0 + chunksPerBatch, chunks.count)]) }
        for (number, batch) in batches.enumerated() {
            let last = number == batches.count - 1
            _ = try commit(StorageBatch(snapshot: last ? batch.last?.metadata : nil, snapshotChunks: batch, hardState: last ? hardState : nil))
        }
    }
}

/// `data` cut into chunks of `chunkBytes`, as a leader sends them.
func snapshotChunks(of data: Bytes, metadata: Raft.SnapshotMetadata, chunkBytes: Int) -> [Raft.SnapshotChunk] {
    stride(from: 0, to: max(data.count, 1), by: chunkBytes).map { offset in
        Raft.SnapshotChunk(
            metadata: metadata, totalBytes: data.count, offset: offset, data: Array(data[offset..<min(offset + chunkBytes, data.count)]))
    }
}

/// Sends the applied state of `source` to `target` in chunks read from the source's prepared
/// image (not from a copy of it), and installs it there. Returns the snapshot's metadata.
@discardableResult
func transferSnapshot(
    from source: any NodeStorage, to target: any NodeStorage, term: Raft.Term, membership: Raft.Membership, chunkBytes: Int = 4096
) throws -> Raft.SnapshotMetadata {
    let (index, size) = try source.prepareSnapshotImage()
    let metadata = Raft.SnapshotMetadata(index: index, term: term, membership: membership)
    var chunks: [Raft.SnapshotChunk] = []
    var offset = 0
    while offset < size {
        guard let bytes = try source.snapshotImageBytes(index: index, offset: offset, length: chunkBytes), !bytes.isEmpty else {
            throw StorageError.invalidBatch("the prepared image at \(index) ended at byte \(offset) of \(size)")
        }
        chunks.append(Raft.SnapshotChunk(metadata: metadata, totalBytes: size, offset: offset, data: bytes))
        offset += bytes.count
    }
    try target.install(chunks, hardState: Raft.HardState(term: term, commit: index))
    return metadata
}
