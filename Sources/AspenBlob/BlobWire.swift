import AspenCore

/// A blob's replicated metadata, as `stat` shows it.
public struct BlobStat: Sendable, Equatable {
    public var hash: BlobHash
    public var size: UInt64
    public var createdAtMs: Int64
    /// The nodes holding verified copies, each with when it verified its copy.
    public var holders: [BlobHolder]
    /// The tags naming this blob.
    public var tags: [String]

    public init(hash: BlobHash, size: UInt64, createdAtMs: Int64, holders: [BlobHolder], tags: [String]) {
        self.hash = hash
        self.size = size
        self.createdAtMs = createdAtMs
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
    /// it is acknowledged, and `tag` (if any) names it in the same step. With `expected`, the
    /// upload fails unless the bytes hash to it.
    case uploadBegin(size: UInt64, replicas: Int, tag: String?, expected: BlobHash?)
    /// [UInt8] of an upload at `offset` (frames may arrive out of order; each waits its turn).
    case uploadData(id: UInt64, offset: UInt64, bytes: [UInt8])
    /// All bytes sent: verify, replicate, commit, answer with the blob's metadata.
    case uploadEnd(id: UInt64)
    case stat(hash: BlobHash)
    /// Blobs in hash order after `after`, at most `limit`.
    case list(after: BlobHash?, limit: Int)
    case tagSet(name: String, hash: BlobHash)
    case tagRemove(name: String)
    /// Tags whose names start with `prefix`, in name order after `after`.
    case tags(prefix: String, after: String?, limit: Int)
    /// From a member: fetch `hash` from `sources` (node ids), verify and keep it, then answer.
    case replicate(hash: BlobHash, size: UInt64, sources: [UInt64])
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

    public static func == (lhs: BlobResponse, rhs: BlobResponse) -> Bool {
        switch (lhs, rhs) {
        case (.failed(let a, let b), .failed(let c, let d)): return a == c && b == d
        case (.done, .done): return true
        case (.slice(let a, let b), .slice(let c, let d)): return a == c && b == d
        case (.uploadStarted(let a), .uploadStarted(let b)): return a == b
        case (.stat(let a), .stat(let b)): return a == b
        case (.list(let a, let b), .list(let c, let d)): return a.map(\.hash) == c.map(\.hash) && a.map(\.size) == c.map(\.size) && b == d
        case (.tags(let a, let b), .tags(let c, let d)): return a.map(\.name) == c.map(\.name) && a.map(\.hash) == c.map(\.hash) && b == d
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
        var writer = ByteWriter()
        writer.write(version)
        writer.writeBytes(credential)
        switch request {
        case .read(let hash, let groups):
            writer.write(1)
            writer.writeRaw(hash.bytes)
            writer.writeVarint(groups.lowerBound)
            writer.writeVarint(groups.upperBound)
        case .uploadBegin(let size, let replicas, let tag, let expected):
            writer.write(2)
            writer.writeVarint(size)
            writer.writeVarint(UInt64(max(0, replicas)))
            writer.writeOptionalBytes(tag.map { Array($0.utf8) })
            writer.writeOptionalBytes(expected?.bytes)
        case .uploadData(let id, let offset, let bytes):
            writer.write(3)
            writer.writeVarint(id)
            writer.writeVarint(offset)
            writer.writeBytes(bytes)
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
        case .tagSet(let name, let hash):
            writer.write(7)
            writer.writeString(name)
            writer.writeRaw(hash.bytes)
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
        }
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
            let expected = try reader.readOptionalBytes(limit: BlobHash.byteCount).map { bytes throws(DecodingError) in
                guard let hash = BlobHash(bytes: bytes) else { throw .invalid("a blob hash is 32 bytes, got \(bytes.count)") }
                return hash
            }
            request = .uploadBegin(size: size, replicas: Int(replicas), tag: tag, expected: expected)
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
            request = .tagSet(name: name, hash: try readHash(&reader))
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
            writer.writeVarint(signed: stat.createdAtMs)
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
            response = .stat(BlobStat(hash: hash, size: size, createdAtMs: created, holders: holders, tags: tags))
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
