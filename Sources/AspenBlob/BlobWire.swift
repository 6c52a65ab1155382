import AspenCore

/// A blob's replicated metadata, as `stat` shows it.
public struct BlobStat: Sendable, Equatable {
    public var hash: BlobHash
    public var size: UInt64
    /// When it was last added (each add of the same bytes renews it).
    public var addedAtMs: Int64
    /// The nodes holding verified copies, each with when it verified its copy.
    public var holders: [BlobHolder]
    /// The tags naming this blob.
    public var tags: [String]

    public init(hash: BlobHash, size: UInt64, addedAtMs: Int64, holders: [BlobHolder], tags: [String]) {
        self.hash = hash
        self.size = size
        self.addedAtMs = addedAtMs
        self.holders = holders
        self.tags = tags
    }
}

public struct BlobHolder: Sendable, Equatable, Hashable {
    public var node: UInt64
    public var verifiedAtMs: Int64

    public init(node: UInt64, verifiedAtMs: Int64) {
        self.node = node
        self.verifiedAtMs = verifiedAtMs
    }
}

/// A request on `aspen/blobs/1`. [UInt8] move in slices (see `BlobSliceCursor`) and upload frames,
/// each bounded, so no request or answer holds a whole blob.
public enum BlobRequest: Sendable, Equatable {
    /// A slice: the parent pairs and bytes of `groups`, verifiable against `hash` alone.
    case read(hash: BlobHash, groups: Range<UInt64>)
    /// Starts an upload of `size` bytes; `replicas` copies (0: the cluster's factor) are made before
    /// it is acknowledged, and `tag` (if any) names it in the same step, for `tagTtlMs` (0: until
    /// removed). With `expected`, the upload fails unless the bytes hash to it.
    case uploadBegin(size: UInt64, replicas: Int, tag: String?, tagTtlMs: UInt64, expected: BlobHash?)
    /// [UInt8] of an upload at `offset` (frames may arrive out of order; each waits its turn).
    case uploadData(id: UInt64, offset: UInt64, bytes: [UInt8])
    /// All bytes sent: verify, replicate, commit, answer with the blob's metadata.
    case uploadEnd(id: UInt64)
    case stat(hash: BlobHash)
    /// Blobs in hash order after `after`, at most `limit`.
    case list(after: BlobHash?, limit: Int)
    /// Names a blob, for `ttlMs` (0: until removed).
    case tagSet(name: String, hash: BlobHash, ttlMs: UInt64)
    case tagRemove(name: String)
    /// Tags whose names start with `prefix`, in name order after `after`.
    case tags(prefix: String, after: String?, limit: Int)
    /// From a member: fetch `hash` from `sources` (node ids), verify and keep it, then answer.
    case replicate(hash: BlobHash, size: UInt64, sources: [UInt64])
    /// A garbage collection pass (or, with `dryRun`, what it would delete).
    case collect(dryRun: Bool)
    /// From a member: delete the files of blobs this node no longer holds (after a collection).
    case sweep
    /// Re-verifies every blob this node holds, quarantining and repairing bad copies.
    case scrub
}

/// One blob a collection deletes (or would), and why.
public struct BlobCollected: Sendable, Equatable {
    public var hash: BlobHash
    public var size: UInt64
    public var reason: String

    public init(hash: BlobHash, size: UInt64, reason: String) {
        self.hash = hash
        self.size = size
        self.reason = reason
    }
}

/// What a garbage collection pass did, or with `dryRun` would do.
public struct BlobCollection: Sendable, Equatable {
    public var dryRun: Bool
    /// Blobs deleted (or to be), in hash order; at most `blobListPageMax` a pass.
    public var deleted: [BlobCollected]
    /// Temporary tags past their expiry, removed (or to be).
    public var expiredTags: [String]
    /// Blobs kept: referenced, or younger than the grace period.
    public var kept: Int
    /// Blobs found unreferenced but referenced again before their deletion applied: kept.
    public var rescued: [BlobHash]
    /// More unreferenced blobs than one pass deletes: run again.
    public var more: Bool
    /// Files removed from the members' disks after the deletions (0 in a dry run).
    public var filesRemoved: Int

    public init(
        dryRun: Bool, deleted: [BlobCollected] = [], expiredTags: [String] = [], kept: Int = 0, rescued: [BlobHash] = [],
        more: Bool = false, filesRemoved: Int = 0
    ) {
        self.dryRun = dryRun
        self.deleted = deleted
        self.expiredTags = expiredTags
        self.kept = kept
        self.rescued = rescued
        self.more = more
        self.filesRemoved = filesRemoved
    }
}

/// What a scrub of one node's blobs found.
public struct BlobScrub: Sendable, Equatable {
    public var node: UInt64
    public var checked: Int
    public var bytes: UInt64
    /// Copies that failed verification: moved to quarantine and no longer served.
    public var corrupt: [BlobHash]
    /// Corrupt copies replaced by a verified one from another holder.
    public var repaired: [BlobHash]

    public init(node: UInt64, checked: Int = 0, bytes: UInt64 = 0, corrupt: [BlobHash] = [], repaired: [BlobHash] = []) {
        self.node = node
        self.checked = checked
        self.bytes = bytes
        self.corrupt = corrupt
        self.repaired = repaired
    }
}

/// Why a blob request failed; the CLI maps each to its exit code.
public enum BlobErrorCode: UInt8, Sendable, Equatable {
    case notFound = 1
    case badInput = 2
    case tooLarge = 3
    case quotaExceeded = 4
    case notPermitted = 5
    case unavailable = 6
    case verificationFailed = 7
    case internalError = 8
}

public enum BlobResponse: Sendable, Equatable {
    case failed(BlobErrorCode, String)
    case done
    /// A slice of a blob of `size` bytes: its items, concatenated in cursor order.
    case slice(size: UInt64, payload: [UInt8])
    case uploadStarted(id: UInt64)
    case stat(BlobStat)
    case list([(hash: BlobHash, size: UInt64)], more: Bool)
    case tags([(name: String, hash: BlobHash)], more: Bool)
    case collected(BlobCollection)
    case scrubbed(BlobScrub)

    public static func == (lhs: BlobResponse, rhs: BlobResponse) -> Bool {
        switch (lhs, rhs) {
        case (.failed(let a, let b), .failed(let c, let d)): return a == c && b == d
        case (.done, .done): return true
        case (.slice(let a, let b), .slice(let c, let d)): return a == c && b == d
        case (.uploadStarted(let a), .uploadStarted(let b)): return a == b
        case (.stat(let a), .stat(let b)): return a == b
        case (.list(let a, let b), .list(let c, let d)): return a.map(\.hash) == c.map(\.hash) && a.map(\.size) == c.map(\.size) && b == d
        case (.tags(let a, let b), .tags(let c, let d)): return a.map(\.name) == c.map(\.name) && a.map(\.hash) == c.map(\.hash) && b == d
        case (.collected(let a), .collected(let b)): return a == b
        case (.scrubbed(let a), .scrubbed(let b)): return a == b
        default: return false
        }
    }
}

/// The blob protocol's frames: a version byte, the credential (requests), a kind, its fields.
/// Every decoder checks lengths and counts against `Limits` before allocating.
public enum BlobWire {
    static let version: UInt8 = 1
    static let credentialBytesMax = 16 * 1024

    public static func encode(_ request: BlobRequest, credential: [UInt8] = []) -> [UInt8] {
        if case .uploadData(let id, let offset, let bytes) = request {
            return bytes.withUnsafeBytes { encodeUploadData(id: id, offset: offset, bytes: $0, credential: credential) }
        }
        var writer = ByteWriter()
        writer.write(version)
        writer.writeBytes(credential)
        switch request {
        case .read(let hash, let groups):
            writer.write(1)
            writer.writeRaw(hash.bytes)
            writer.writeVarint(groups.lowerBound)
            writer.writeVarint(groups.upperBound)
        case .uploadBegin(let size, let replicas, let tag, let tagTtlMs, let expected):
            writer.write(2)
            writer.writeVarint(size)
            writer.writeVarint(UInt64(max(0, replicas)))
            writer.writeOptionalBytes(tag.map { Array($0.utf8) })
            writer.writeVarint(tagTtlMs)
            writer.writeOptionalBytes(expected?.bytes)
        case .uploadData:
            preconditionFailure("encoded above")
        case .uploadEnd(let id):
            writer.write(4)
            writer.writeVarint(id)
        case .stat(let hash):
            writer.write(5)
            writer.writeRaw(hash.bytes)
        case .list(let after, let limit):
            writer.write(6)
            writer.writeOptionalBytes(after?.bytes)
            writer.writeVarint(UInt64(max(0, limit)))
        case .tagSet(let name, let hash, let ttlMs):
            writer.write(7)
            writer.writeString(name)
            writer.writeRaw(hash.bytes)
            writer.writeVarint(ttlMs)
        case .tagRemove(let name):
            writer.write(8)
            writer.writeString(name)
        case .tags(let prefix, let after, let limit):
            writer.write(9)
            writer.writeString(prefix)
            writer.writeOptionalBytes(after.map { Array($0.utf8) })
            writer.writeVarint(UInt64(max(0, limit)))
        case .replicate(let hash, let size, let sources):
            writer.write(10)
            writer.writeRaw(hash.bytes)
            writer.writeVarint(size)
            writer.writeVarint(UInt64(sources.count))
            for source in sources { writer.writeVarint(source) }
        case .collect(let dryRun):
            writer.write(11)
            writer.write(dryRun)
        case .sweep:
            writer.write(12)
        case .scrub:
            writer.write(13)
        }
        return writer.bytes
    }

    /// An `uploadData` request encoded straight from the caller's buffer, without an array of the
    /// bytes first: the same encoding as `encode(.uploadData(…))`.
    public static func encodeUploadData(id: UInt64, offset: UInt64, bytes: UnsafeRawBufferPointer, credential: [UInt8] = []) -> [UInt8] {
        var writer = ByteWriter(capacity: credential.count + bytes.count + 32)
        writer.write(version)
        writer.writeBytes(credential)
        writer.write(3)
        writer.writeVarint(id)
        writer.writeVarint(offset)
        writer.writeVarint(UInt64(bytes.count))
        writer.writeRaw(bytes)
        return writer.bytes
    }

    public static func decodeRequest(_ bytes: [UInt8], limits: Limits) throws(DecodingError) -> (request: BlobRequest, credential: [UInt8]) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == version else { throw .invalid("unknown blob protocol version") }
        let credential = try reader.readBytes(limit: credentialBytesMax)
        let request: BlobRequest
        switch try reader.readByte() {
        case 1:
            let hash = try readHash(&reader)
            let lower = try reader.readVarint()
            let upper = try reader.readVarint()
            guard lower <= upper else { throw .invalid("a slice's first group \(lower) is past its end \(upper)") }
            request = .read(hash: hash, groups: lower..<upper)
        case 2:
            let size = try reader.readVarint()
            let replicas = try reader.readVarint()
            guard replicas <= UInt64(limits.blobReplicasMax) else {
                throw .invalid("\(replicas) replicas exceed blobReplicasMax (\(limits.blobReplicasMax))")
            }
            let tag = try reader.readOptionalBytes(limit: limits.blobTagBytesMax).map { String(decoding: $0, as: UTF8.self) }
            let tagTtlMs = try reader.readVarint()
            let expected = try reader.readOptionalBytes(limit: BlobHash.byteCount).map { bytes throws(DecodingError) in
                guard let hash = BlobHash(bytes: bytes) else { throw .invalid("a blob hash is 32 bytes, got \(bytes.count)") }
                return hash
            }
            request = .uploadBegin(size: size, replicas: Int(replicas), tag: tag, tagTtlMs: tagTtlMs, expected: expected)
        case 3:
            let id = try reader.readVarint()
            let offset = try reader.readVarint()
            let data = try reader.readBytes(limit: limits.blobUploadFrameBytesMax)
            request = .uploadData(id: id, offset: offset, bytes: data)
        case 4:
            request = .uploadEnd(id: try reader.readVarint())
        case 5:
            request = .stat(hash: try readHash(&reader))
        case 6:
            let after = try reader.readOptionalBytes(limit: BlobHash.byteCount).map { bytes throws(DecodingError) in
                guard let hash = BlobHash(bytes: bytes) else { throw .invalid("a blob hash is 32 bytes, got \(bytes.count)") }
                return hash
            }
            request = .list(after: after, limit: Int(min(try reader.readVarint(), UInt64(limits.blobListPageMax))))
        case 7:
            let name = try reader.readString(limit: limits.blobTagBytesMax)
            request = .tagSet(name: name, hash: try readHash(&reader), ttlMs: try reader.readVarint())
        case 8:
            request = .tagRemove(name: try reader.readString(limit: limits.blobTagBytesMax))
        case 9:
            let prefix = try reader.readString(limit: limits.blobTagBytesMax)
            let after = try reader.readOptionalBytes(limit: limits.blobTagBytesMax).map { String(decoding: $0, as: UTF8.self) }
            request = .tags(prefix: prefix, after: after, limit: Int(min(try reader.readVarint(), UInt64(limits.blobListPageMax))))
        case 10:
            let hash = try readHash(&reader)
            let size = try reader.readVarint()
            let count = try reader.readCount(limit: limits.blobReplicasMax)
            var sources: [UInt64] = []
            for _ in 0..<count { sources.append(try reader.readVarint()) }
            request = .replicate(hash: hash, size: size, sources: sources)
        case 11: request = .collect(dryRun: try reader.readBool())
        case 12: request = .sweep
        case 13: request = .scrub
        case let kind:
            throw .invalid("unknown blob request kind \(kind)")
        }
        try reader.expectEnd()
        return (request, credential)
    }

    public static func encode(_ response: BlobResponse) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(version)
        switch response {
        case .failed(let code, let message):
            writer.write(0)
            writer.write(code.rawValue)
            writer.writeString(message)
        case .done:
            writer.write(1)
        case .slice(let size, let payload):
            writer.write(2)
            writer.writeVarint(size)
            writer.writeBytes(payload)
        case .uploadStarted(let id):
            writer.write(3)
            writer.writeVarint(id)
        case .stat(let stat):
            writer.write(4)
            writer.writeRaw(stat.hash.bytes)
            writer.writeVarint(stat.size)
            writer.writeVarint(signed: stat.addedAtMs)
            writer.writeVarint(UInt64(stat.holders.count))
            for holder in stat.holders {
                writer.writeVarint(holder.node)
                writer.writeVarint(signed: holder.verifiedAtMs)
            }
            writer.writeVarint(UInt64(stat.tags.count))
            for tag in stat.tags { writer.writeString(tag) }
        case .list(let entries, let more):
            writer.write(5)
            writer.write(more)
            writer.writeVarint(UInt64(entries.count))
            for entry in entries {
                writer.writeRaw(entry.hash.bytes)
                writer.writeVarint(entry.size)
            }
        case .tags(let entries, let more):
            writer.write(6)
            writer.write(more)
            writer.writeVarint(UInt64(entries.count))
            for entry in entries {
                writer.writeString(entry.name)
                writer.writeRaw(entry.hash.bytes)
            }
        case .collected(let collection):
            writer.write(7)
            writer.write(collection.dryRun)
            writer.writeVarint(UInt64(collection.deleted.count))
            for entry in collection.deleted {
                writer.writeRaw(entry.hash.bytes)
                writer.writeVarint(entry.size)
                writer.writeString(entry.reason)
            }
            writer.writeVarint(UInt64(collection.expiredTags.count))
            for tag in collection.expiredTags { writer.writeString(tag) }
            writer.writeVarint(UInt64(collection.kept))
            writer.writeVarint(UInt64(collection.rescued.count))
            for hash in collection.rescued { writer.writeRaw(hash.bytes) }
            writer.write(collection.more)
            writer.writeVarint(UInt64(collection.filesRemoved))
        case .scrubbed(let scrub):
            writer.write(8)
            writer.writeVarint(scrub.node)
            writer.writeVarint(UInt64(scrub.checked))
            writer.writeVarint(scrub.bytes)
            for list in [scrub.corrupt, scrub.repaired] {
                writer.writeVarint(UInt64(list.count))
                for hash in list { writer.writeRaw(hash.bytes) }
            }
        }
        return writer.bytes
    }

    public static func decodeResponse(_ bytes: [UInt8], limits: Limits) throws(DecodingError) -> BlobResponse {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == version else { throw .invalid("unknown blob protocol version") }
        let response: BlobResponse
        switch try reader.readByte() {
        case 0:
            guard let code = BlobErrorCode(rawValue: try reader.readByte()) else { throw .invalid("unknown blob error code") }
            response = .failed(code, try reader.readString(limit: 64 * 1024))
        case 1:
            response = .done
        case 2:
            let size = try reader.readVarint()
            response = .slice(size: size, payload: try reader.readBytes(limit: limits.rpcMessageBytesMax))
        case 3:
            response = .uploadStarted(id: try reader.readVarint())
        case 4:
            let hash = try readHash(&reader)
            let size = try reader.readVarint()
            let created = try reader.readSignedVarint()
            var holders: [BlobHolder] = []
            for _ in 0..<(try reader.readCount(limit: 1000)) {
                holders.append(BlobHolder(node: try reader.readVarint(), verifiedAtMs: try reader.readSignedVarint()))
            }
            var tags: [String] = []
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) {
                tags.append(try reader.readString(limit: limits.blobTagBytesMax))
            }
            response = .stat(BlobStat(hash: hash, size: size, addedAtMs: created, holders: holders, tags: tags))
        case 5:
            let more = try reader.readBool()
            var entries: [(hash: BlobHash, size: UInt64)] = []
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) {
                entries.append((try readHash(&reader), try reader.readVarint()))
            }
            response = .list(entries, more: more)
        case 6:
            let more = try reader.readBool()
            var entries: [(name: String, hash: BlobHash)] = []
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) {
                entries.append((try reader.readString(limit: limits.blobTagBytesMax), try readHash(&reader)))
            }
            response = .tags(entries, more: more)
        case 7:
            var collection = BlobCollection(dryRun: try reader.readBool())
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) {
                collection.deleted.append(
                    BlobCollected(hash: try readHash(&reader), size: try reader.readVarint(), reason: try reader.readString(limit: 1024)))
            }
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) {
                collection.expiredTags.append(try reader.readString(limit: limits.blobTagBytesMax))
            }
            collection.kept = try reader.readCount(limit: Int.max)
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) { collection.rescued.append(try readHash(&reader)) }
            collection.more = try reader.readBool()
            collection.filesRemoved = try reader.readCount(limit: Int.max)
            response = .collected(collection)
        case 8:
            var scrub = BlobScrub(node: try reader.readVarint(), checked: try reader.readCount(limit: Int.max), bytes: try reader.readVarint())
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) { scrub.corrupt.append(try readHash(&reader)) }
            for _ in 0..<(try reader.readCount(limit: limits.blobListPageMax)) { scrub.repaired.append(try readHash(&reader)) }
            response = .scrubbed(scrub)
        case let kind:
            throw .invalid("unknown blob response kind \(kind)")
        }
        try reader.expectEnd()
        return response
    }

    static func readHash(_ reader: inout ByteReader) throws(DecodingError) -> BlobHash {
        BlobHash(bytes: try reader.readRaw(BlobHash.byteCount))!
    }
}
