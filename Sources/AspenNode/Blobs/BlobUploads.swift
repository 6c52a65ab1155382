import AspenBlob
import AspenCore

/// Uploads in progress on this node. Frames of one upload may arrive out of order (each is its own
/// request); each waits until the bytes before it have been written, so the blob is hashed as it
/// streams, in one pass, and never buffered whole. An upload idle for `blobUploadIdleMsMax` is
/// dropped with its partial files.
actor BlobUploads {
    struct Finished: Sendable {
        var hash: BlobHash
        var size: UInt64
        var replicas: Int
        var tag: String?
        var tagTtlMs: UInt64
    }

    final class Session {
        let partial: PartialBlob
        let size: UInt64
        let replicas: Int
        let tag: String?
        let tagTtlMs: UInt64
        let expected: BlobHash?
        var builder = BlobOutboardBuilder()
        var received: UInt64 = 0
        var lastActivityMs: Int64
        /// Frames waiting for the bytes before them, by offset.
        var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]

        init(partial: PartialBlob, size: UInt64, replicas: Int, tag: String?, tagTtlMs: UInt64, expected: BlobHash?, nowMs: Int64) {
            self.partial = partial
            self.size = size
            self.replicas = replicas
            self.tag = tag
            self.tagTtlMs = tagTtlMs
            self.expected = expected
            self.lastActivityMs = nowMs
        }
    }

    let files: BlobFileStore
    let limits: Limits
    var sessions: [UInt64: Session] = [:]
    var nextID = UInt64.random(in: 1...(1 << 40))

    init(files: BlobFileStore, limits: Limits) {
        self.files = files
        self.limits = limits
    }

    /// Opens an upload, reserving its size under the node's quota first: refused (quota
    /// exceeded) before a byte is written when there is no room.
    func begin(size: UInt64, replicas: Int, tag: String?, tagTtlMs: UInt64, expected: BlobHash?, nowMs: Int64) throws -> UInt64 {
        dropIdle(nowMs: nowMs)
        guard sessions.count < limits.blobTransfersMax else {
            throw BlobServiceError.unavailable("this node has blobTransfersMax (\(limits.blobTransfersMax)) uploads open; try again")
        }
        let id = nextID
        nextID += 1
        let partial = try files.beginPartial(name: "upload-\(id)", size: size)
        sessions[id] = Session(
            partial: partial, size: size, replicas: replicas, tag: tag, tagTtlMs: tagTtlMs, expected: expected, nowMs: nowMs)
        return id
    }

    func write(id: UInt64, offset: UInt64, bytes: [UInt8], nowMs: Int64) async throws {
        guard let session = sessions[id] else { throw BlobServiceError.notFound("no upload \(id) on this node (finished, or idle too long)") }
        // Written so that no sum can pass 2^64: a hostile offset must not trap the node.
        guard offset <= session.size, UInt64(bytes.count) <= session.size - offset else {
            fail(id, session)
            throw BlobServiceError.badInput(
                "upload \(id) sent \(bytes.count) bytes at offset \(offset), past the \(session.size) bytes it announced")
        }
        if offset > session.received {
            // Bytes before these are still on their way (a window of frames in flight).
            guard session.waiting[offset] == nil else { throw BlobServiceError.badInput("upload \(id) sent offset \(offset) twice") }
            await withCheckedContinuation { session.waiting[offset] = $0 }
            guard sessions[id] === session else { throw BlobServiceError.notFound("upload \(id) was abandoned") }
        }
        guard offset == session.received else {
            throw BlobServiceError.badInput("upload \(id) sent offset \(offset) again; \(session.received) bytes are already in")
        }
        do {
            try bytes.withUnsafeBytes { buffer in
                try session.partial.writeData(buffer, at: offset)
                try session.builder.update(buffer) { slot, pair in
                    try pair.withUnsafeBytes { try session.partial.writePair($0, slot: slot) }
                }
            }
        } catch {
            fail(id, session)
            throw error
        }
        session.received += UInt64(bytes.count)
        session.lastActivityMs = nowMs
        session.waiting.removeValue(forKey: session.received)?.resume()
    }

    func finish(id: UInt64) throws -> Finished {
        guard let session = sessions.removeValue(forKey: id) else {
            throw BlobServiceError.notFound("no upload \(id) on this node (finished, or idle too long)")
        }
        guard session.received == session.size else {
            // Frames still waiting for bytes before them are answered (abandoned), not left hanging.
            fail(id, session)
            throw BlobServiceError.badInput("upload \(id) ended after \(session.received) of the \(session.size) bytes it announced")
        }
        let hash = try session.builder.finish { slot, pair in
            try pair.withUnsafeBytes { try session.partial.writePair($0, slot: slot) }
        }
        if let expected = session.expected, expected != hash {
            session.partial.discard()
            throw BlobServiceError.verificationFailed("the uploaded bytes hash to \(hash), not to \(expected) as announced")
        }
        try session.partial.seal(as: hash)
        return Finished(hash: hash, size: session.size, replicas: session.replicas, tag: session.tag, tagTtlMs: session.tagTtlMs)
    }

    private func fail(_ id: UInt64, _ session: Session) {
        sessions[id] = nil
        session.partial.discard()
        for waiter in session.waiting.values { waiter.resume() }
        session.waiting.removeAll()
    }

    /// Drops uploads idle past `blobUploadIdleMsMax` (the node's upkeep calls it, as does `begin`).
    func dropIdle(nowMs: Int64) {
        for (id, session) in sessions where nowMs - session.lastActivityMs > limits.blobUploadIdleMsMax {
            fail(id, session)
        }
    }
}
