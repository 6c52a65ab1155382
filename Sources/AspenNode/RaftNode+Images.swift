import AspenCore
import AspenRaft
import AspenStorage

// Images for followers: snapshot chunks filled as they leave, images written off the actor.
extension RaftNode {
    /// Messages as they leave, in order: a snapshot chunk gets its bytes from the prepared image
    /// here (the instance only says which range). If the image cannot be read (replaced,
    /// damaged, gone), Raft is told, and asks for a new one. The messages go in one call, so
    /// those to the same peer share a write: a forwarded command's answer and the append that
    /// carries it reach the follower together.
    func dispatch(_ messages: [Raft.Message]) {
        guard !messages.isEmpty else { return }
        var leaving: [Raft.Message] = []
        leaving.reserveCapacity(messages.count)
        for message in messages {
            do {
                if let filled = try storage.withImageBytes(message) {
                    if case .snapshotChunk(let chunk) = filled.kind { counters.snapshotBytesSent += chunk.length }
                    leaving.append(filled)
                    continue
                }
            } catch {
                logger.error("reading the snapshot image failed", metadata: ["error": "\(error)"])
            }
            if case .snapshotChunk(let chunk) = message.kind { raft.snapshotImageUnavailable(index: chunk.metadata.index) }
        }
        send(leaving)
    }

    /// Writes an image of the applied state for followers the log no longer reaches, off the
    /// actor (one read transaction, streamed to a file); Raft then streams it to them.
    func prepareImage() {
        guard !preparingImage, !stopped, compaction.mayAttempt(nowMs: monotonicMs()) else { return }
        preparingImage = true
        let storage = self.storage
        Task {
            let clock = ContinuousClock()
            let started = clock.now
            let prepared = await Task.detached { Result { try storage.prepareSnapshotImage() } }.value
            self.imagePrepared(prepared, milliseconds: Int((clock.now - started) / .milliseconds(1)))
        }
    }

    func imagePrepared(_ prepared: Result<(index: Raft.Index, bytes: Int), any Error>, milliseconds: Int) {
        preparingImage = false
        guard !stopped else { return }
        switch prepared {
        case .success(let (index, bytes)):
            compaction.succeeded()
            counters.snapshotImagesPrepared += 1
            let image = raft.snapshotImagePrepared(index: index, bytes: bytes)
            logger.info(
                "snapshot image written for followers",
                metadata: ["index": "\(index)", "bytes": "\(bytes)", "ms": "\(milliseconds)", "used": "\(image != nil)"])
            pump()
        case .failure(let error):
            snapshotFailed("writing a snapshot image for a follower failed", error, retryInMs: compaction.failed(nowMs: monotonicMs()))
        }
    }
}
