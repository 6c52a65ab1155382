import AspenBlob
import AspenCore
import AspenJobs
import Foundation

/// Blobs the node itself adds and reads (a job's output, kept once its attempt ends).
extension BlobService {
    /// Adds `bytes` from this node, with the copies and the tag any add gets (`replicas`: that
    /// many copies instead of the node's setting); returns the hash once the blob is committed.
    func add(_ bytes: [UInt8], tag: String, tagTtlMs: UInt64, replicas: Int = 0) async throws -> BlobHash {
        guard UInt64(bytes.count) <= limits.blobBytesMax else {
            throw BlobServiceError.tooLarge("a blob of \(bytes.count) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
        }
        try BlobRecords.validate(tag: tag, limits: limits)
        let id = try await uploads.begin(size: UInt64(bytes.count), replicas: replicas, tag: tag, tagTtlMs: tagTtlMs, expected: nil, nowMs: node.nowMs())
        try await uploads.write(id: id, offset: 0, bytes: bytes, nowMs: node.nowMs())
        // The node's own blobs make no events: a hook on them could feed itself.
        return try await commitAdd(try await uploads.finish(id: id), announcing: false).hash
    }

    /// Adds the file at `path` from this node, a megabyte at a time (it is hashed as it streams,
    /// never held whole), with the copies and the tag any add gets; returns the hash and size once
    /// the blob is committed.
    func addFile(_ path: String, tag: String, tagTtlMs: UInt64, replicas: Int = 0) async throws -> (hash: BlobHash, size: UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw BlobServiceError.notFound("cannot open \(path)") }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: 0)
        guard size <= limits.blobBytesMax else {
            throw BlobServiceError.tooLarge("a blob of \(size) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
        }
        try BlobRecords.validate(tag: tag, limits: limits)
        let id = try await uploads.begin(size: size, replicas: replicas, tag: tag, tagTtlMs: tagTtlMs, expected: nil, nowMs: node.nowMs())
        var offset: UInt64 = 0
        while offset < size {
            guard let piece = try handle.read(upToCount: 1 << 20), !piece.isEmpty else {
                throw BlobServiceError.badInput("\(path) ended at \(offset) of \(size) bytes")
            }
            try await uploads.write(id: id, offset: offset, bytes: Array(piece), nowMs: node.nowMs())
            offset += UInt64(piece.count)
        }
        return (try await commitAdd(try await uploads.finish(id: id), announcing: false).hash, size)
    }

    /// Writes a blob's bytes, checked against its hash, to a new file at `path` (fetched from a
    /// holder first when this node has none), a group at a time.
    func write(_ hash: BlobHash, to path: String) async throws {
        try await ensureLocal(hash)
        guard let size = files.size(hash) else { throw BlobServiceError.notFound("blob \(hash) is not held by this node") }
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw BlobServiceError.badInput("cannot create \(path)")
        }
        defer { try? handle.close() }
        var sink = FileSink(handle: handle)
        // A slice request's worth of groups at a time.
        let total = BlobTree(size: size).groupCount
        var start: UInt64 = 0
        while start < total {
            let end = min(total, start + limits.blobSliceGroupsMax)
            _ = try files.verifiedSlice(hash, groups: start..<end, into: &sink) { self.noteCorrupt($0, found: "reading it for this node") }
            if let failure = sink.failure { throw BlobServiceError.badInput("cannot write \(path): \(failure)") }
            start = end
        }
    }

    private struct FileSink: BlobFetchSink {
        let handle: FileHandle
        var failure: (any Error)?
        mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
        mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) {
            guard failure == nil else { return }
            do { try handle.write(contentsOf: Data(bytes)) } catch { failure = error }
        }
    }

    /// Makes sure this node holds a copy of the blob, replicating it from a holder if not.
    private func ensureLocal(_ hash: BlobHash) async throws {
        guard files.size(hash) == nil else { return }
        try await node.linearizableBarrier()
        guard let stat = try await stat(hash) else { throw BlobServiceError.notFound("blob \(hash) is not in the cluster") }
        guard stat.size <= limits.blobBytesMax else {
            throw BlobServiceError.tooLarge("a blob of \(stat.size) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
        }
        try await withTransfer { try await replicate(hash, size: stat.size, from: stat.holders.map { NodeID(rawValue: $0.node) }) }
    }

    /// A blob's bytes, checked against its hash: read from this node's copy, fetched from a
    /// holder first when this node has none.
    func bytes(_ hash: BlobHash) async throws -> [UInt8] {
        try await ensureLocal(hash)
        guard let size = files.size(hash) else { throw BlobServiceError.notFound("blob \(hash) is not held by this node") }
        let groups = 0..<BlobTree(size: size).groupCount
        var sink = Collected()
        _ = try files.verifiedSlice(hash, groups: groups, into: &sink) { self.noteCorrupt($0, found: "reading it for this node") }
        return sink.bytes
    }

    private struct Collected: BlobFetchSink {
        var bytes: [UInt8] = []
        mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
        mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) { self.bytes += bytes }
    }
}

/// The cluster's events about blobs (`hooks.blob.added`, `hooks.blob.deleted`), handed to whoever
/// publishes them once the change is committed.
extension BlobService {
    func setEventSink(_ sink: (@Sendable ([TopicMessage]) -> Void)?) { eventSink.withLock { $0 = sink } }

    func announce(_ events: [TopicMessage]) {
        guard !events.isEmpty, let sink = eventSink.withLock({ $0 }) else { return }
        sink(events)
    }
}
