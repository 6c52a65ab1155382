import AspenBlob
import AspenCore

/// The blob protocol (`aspen/blobs/1`): requests from clients and members, answers from nodes,
/// the key-value reference to an offloaded value, and the slices a peer serves, which a fetch
/// verifies item by item.
extension FuzzTarget {
    static let blobTargets: [FuzzTarget] = [blobWire, blobSlice]

    static let blobWire = FuzzTarget(
        name: "blob-wire",
        summary: "BlobWire.decodeRequest and decodeResponse, and BlobReference(decoding:)",
        seeds: {
            let hash = BlobHash.of(Array("seed".utf8))
            let requests: [BlobRequest] = [
                .read(hash: hash, groups: 0..<64), .uploadBegin(size: 1 << 30, replicas: 3, tag: "release/1", tagTtlMs: 3_600_000, expected: hash),
                .uploadBegin(size: 0, replicas: 0, tag: nil, tagTtlMs: 0, expected: nil), .uploadData(id: 7, offset: 1 << 20, bytes: [1, 2, 3]),
                .uploadEnd(id: 7), .stat(hash: hash), .list(after: hash, limit: 10), .list(after: nil, limit: 0),
                .tagSet(name: "a", hash: hash, ttlMs: 0), .tagRemove(name: "a"), .tags(prefix: "", after: "b", limit: 5),
                .replicate(hash: hash, size: 99, sources: [1, 2, 3]), .collect(dryRun: true), .sweep, .scrub,
            ]
            let responses: [BlobResponse] = [
                .failed(.quotaExceeded, "quota exceeded"), .done, .slice(size: 5, payload: [1, 2, 3, 4, 5]), .uploadStarted(id: 3),
                .stat(BlobStat(hash: hash, size: 9, addedAtMs: 1, holders: [BlobHolder(node: 1, verifiedAtMs: 2)], tags: ["t"])),
                .list([(hash: hash, size: UInt64(9))], more: true), .tags([("t", hash)], more: false),
                .collected(BlobCollection(
                    dryRun: false, deleted: [BlobCollected(hash: hash, size: 1, reason: "unreferenced")], expiredTags: ["x"], kept: 4,
                    rescued: [hash], more: true, filesRemoved: 3)),
                .scrubbed(BlobScrub(node: 2, checked: 3, bytes: 4, corrupt: [hash], repaired: [hash])),
            ]
            return selected(0, requests.map { BlobWire.encode($0, credential: [9, 9]) }) + selected(1, responses.map { BlobWire.encode($0) })
                + selected(2, [BlobReference(hash: hash, size: 1 << 40).encoded, BlobReference(hash: hash, size: 0).encoded])
        }
    ) { input in
        let limits = Limits.standard
        return FuzzCheck.select(input, [
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try BlobWire.decodeRequest($0, limits: limits) }, encode: { BlobWire.encode($0.request, credential: $0.credential) },
                    bounds: { BlobBounds.request($0.request) })
            },
            { FuzzCheck.roundTrip($0, decode: { try BlobWire.decodeResponse($0, limits: limits) }, encode: { BlobWire.encode($0) }) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { (bytes: [UInt8]) throws -> BlobReference in
                        guard let reference = BlobReference(decoding: bytes) else { throw BlobError.malformed("not a blob reference") }
                        return reference
                    }, encode: { (reference: BlobReference) in reference.encoded })
            },
        ])
    }

    /// A slice as a peer would answer it, checked against a fixed blob's hash: whatever a peer
    /// sends, the verifier refuses it with an error or accepts exactly the blob's own bytes.
    static let blobSlice = FuzzTarget(
        name: "blob-slice",
        summary: "BlobFetch.verify: a slice's payload (parent pairs, groups) against the hash of a fixed three-group blob",
        seeds: { BlobSliceSeeds.ranges.map { range in [UInt8(range.lowerBound), UInt8(range.upperBound)] + BlobSliceSeeds.payload(range) } }
    ) { input in
        guard input.count >= 2 else { return .rejected(shape: "short input") }
        let lower = UInt64(input[0] % 4)
        let upper = max(lower, UInt64(input[1] % 4))
        var sink = BlobSliceSeeds.Collecting()
        var accepted = lower
        do {
            try BlobFetch.verify(
                Array(input.dropFirst(2)), hash: BlobSliceSeeds.hash, size: UInt64(BlobSliceSeeds.blob.count), groups: lower..<upper,
                accepted: &accepted, into: &sink)
        } catch {
            return .rejected(shape: FuzzCheck.shape(of: error))
        }
        // Accepted: every group given to the sink must be the blob's own bytes.
        for (index, bytes) in sink.groups {
            let range = BlobTree(size: UInt64(BlobSliceSeeds.blob.count)).byteRange(ofGroup: index)
            guard bytes[...] == BlobSliceSeeds.blob[Int(range.lowerBound)..<Int(range.upperBound)] else {
                return .failed("the verifier accepted group \(index) with bytes that are not the blob's")
            }
        }
        return .decoded
    }
}

enum BlobBounds {
    static func request(_ request: BlobRequest) -> String? {
        let limits = Limits.standard
        switch request {
        case .uploadData(_, _, let bytes) where bytes.count > limits.blobUploadFrameBytesMax: return "an upload frame of \(bytes.count) bytes"
        case .replicate(_, _, let sources) where sources.count > limits.blobReplicasMax: return "\(sources.count) replication sources"
        case .uploadBegin(_, let replicas, let tag, _, _) where replicas > limits.blobReplicasMax || (tag?.utf8.count ?? 0) > limits.blobTagBytesMax * 3:
            return "an upload of \(replicas) replicas, tag \(tag ?? "")"
        case .list(_, let limit) where limit > limits.blobListPageMax: return "a list page of \(limit)"
        case .read(_, let groups) where groups.lowerBound > groups.upperBound: return "a reversed slice"
        default: return nil
        }
    }
}

/// A fixed blob of two and a half chunk groups, and the valid slices of it.
enum BlobSliceSeeds {
    static let blob: [UInt8] = (0..<(BlobTree.groupByteCount * 5 / 2)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    static let hash = BlobHash.of(blob)
    static let ranges: [Range<UInt64>] = [0..<3, 0..<1, 1..<2, 2..<3, 1..<3]

    struct Collecting: BlobFetchSink {
        var groups: [(UInt64, [UInt8])] = []
        mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
        mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) { groups.append((index, Array(bytes))) }
    }

    /// The payload a node would serve for `groups`: parent pairs from the outboard, then bytes.
    static func payload(_ groups: Range<UInt64>) -> [UInt8] {
        var outboard: [UInt64: [UInt8]] = [:]
        var builder = BlobOutboardBuilder()
        blob.withUnsafeBytes { builder.update($0) { slot, pair in outboard[slot] = pair } }
        _ = builder.finish { slot, pair in outboard[slot] = pair }
        let tree = BlobTree(size: UInt64(blob.count))
        var cursor = BlobSliceCursor(tree: tree, groups: groups)!
        var payload: [UInt8] = []
        while let item = cursor.next() {
            switch item {
            case .parent(let slot): payload += outboard[slot] ?? []
            case .group(let index):
                let range = tree.byteRange(ofGroup: index)
                payload += blob[Int(range.lowerBound)..<Int(range.upperBound)]
            }
        }
        return payload
    }
}
