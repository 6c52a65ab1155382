import AspenBlob
import AspenCore
import AspenJobs
import Foundation

/// Blobs the node itself adds and reads (a job's output, kept once its attempt ends).
extension BlobService {
    /// Adds `bytes` from this node, with the copies and the tag any add gets; returns the hash
    /// once the blob is committed.
    func add(_ bytes: [UInt8], tag: String, tagTtlMs: UInt64) async throws -> BlobHash {
        guard UInt64(bytes.count) <= limits.blobBytesMax else {
            throw BlobServiceError.tooLarge("a blob of \(bytes.count) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
        }
        try BlobRecords.validate(tag: tag, limits: limits)
        let id = try await uploads.begin(size: UInt64(bytes.count), replicas: 0, tag: tag, tagTtlMs: tagTtlMs, expected: nil, nowMs: node.nowMs())
        try await uploads.write(id: id, offset: 0, bytes: bytes, nowMs: node.nowMs())
        // The node's own blobs make no events: a hook on them could feed itself.
        return try await commitAdd(try await uploads.finish(id: id), announcing: false).hash
    }

    /// A blob's bytes, checked against its hash: read from this node's copy, fetched from a
    /// holder first when this node has none.
    func bytes(_ hash: BlobHash) async throws -> [UInt8] {
        if files.size(hash) == nil {
            try await node.linearizableBarrier()
            guard let stat = try await stat(hash) else { throw BlobServiceError.notFound("blob \(hash) is not in the cluster") }
            guard stat.size <= limits.blobBytesMax else {
                throw BlobServiceError.tooLarge("a blob of \(stat.size) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
            }
            try await withTransfer { try await replicate(hash, size: stat.size, from: stat.holders.map { NodeID(rawValue: $0.node) }) }
        }
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
