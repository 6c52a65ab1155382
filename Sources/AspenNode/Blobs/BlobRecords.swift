import AspenBlob
import AspenCore

/// Blob metadata in system records (replicated through Raft, out of every client's keyspace):
/// `blob/m/<hash>` the size and when it was last added; `blob/h/<hash><node>` one holder and
/// when it verified its copy; `blob/t/<name>` a tag: the hash it names and, for a temporary tag,
/// when it expires; `blob/r/<hash><name>` the same tag indexed by hash, so that one condition
/// (`expectNone(prefix:)`) can say "nothing tags this blob" where a deletion applies.
enum BlobRecords {
    static let metaPrefix: [UInt8] = Array("blob/m/".utf8)
    static let holderRoot: [UInt8] = Array("blob/h/".utf8)
    static let tagPrefix: [UInt8] = Array("blob/t/".utf8)
    static let reverseRoot: [UInt8] = Array("blob/r/".utf8)

    static func reversePrefix(_ hash: BlobHash) -> [UInt8] { reverseRoot + hash.bytes }
    static func reverseName(_ hash: BlobHash, tag: String) -> [UInt8] { reversePrefix(hash) + Array(tag.utf8) }

    static func tag(fromReverseName name: [UInt8]) -> String {
        String(decoding: name.dropFirst(reverseRoot.count + BlobHash.byteCount), as: UTF8.self)
    }

    /// A tag's value: the hash, then (temporary tags only) the expiry as a signed varint.
    static func encodeTag(_ hash: BlobHash, expiresAtMs: Int64?) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeRaw(hash.bytes)
        if let expiresAtMs { writer.writeVarint(signed: expiresAtMs) }
        return writer.bytes
    }

    static func decodeTag(_ value: [UInt8]) -> (hash: BlobHash, expiresAtMs: Int64?)? {
        guard let hash = BlobHash(bytes: value.prefix(BlobHash.byteCount)) else { return nil }
        guard value.count > BlobHash.byteCount else { return (hash, nil) }
        var reader = ByteReader(Array(value.dropFirst(BlobHash.byteCount)))
        guard let expires = try? reader.readSignedVarint(), reader.remaining == 0 else { return nil }
        return (hash, expires)
    }

    static func metaName(_ hash: BlobHash) -> [UInt8] { metaPrefix + hash.bytes }
    static func holderPrefix(_ hash: BlobHash) -> [UInt8] { holderRoot + hash.bytes }
    static func tagName(_ tag: String) -> [UInt8] { tagPrefix + Array(tag.utf8) }

    static func holderName(_ hash: BlobHash, node: NodeID) -> [UInt8] {
        var name = holderPrefix(hash)
        withUnsafeBytes(of: node.rawValue.bigEndian) { name.append(contentsOf: $0) }
        return name
    }

    static func hash(fromMetaName name: [UInt8]) -> BlobHash? {
        BlobHash(bytes: name.dropFirst(metaPrefix.count))
    }

    static func tag(fromTagName name: [UInt8]) -> String {
        String(decoding: name.dropFirst(tagPrefix.count), as: UTF8.self)
    }

    /// The blob a holder record is about, from its name.
    static func hash(fromHolderName name: [UInt8]) -> BlobHash? {
        guard name.count == holderRoot.count + BlobHash.byteCount + 8 else { return nil }
        return BlobHash(bytes: name.dropFirst(holderRoot.count).prefix(BlobHash.byteCount))
    }

    /// The node a holder record names, from its name.
    static func node(fromHolderName name: [UInt8]) -> UInt64? {
        guard name.count == holderRoot.count + BlobHash.byteCount + 8 else { return nil }
        return name.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    static func holder(fromName name: [UInt8], value: [UInt8]) -> BlobHolder? {
        guard let node = node(fromHolderName: name) else { return nil }
        var reader = ByteReader(value)
        guard let verified = try? reader.readSignedVarint() else { return nil }
        return BlobHolder(node: node, verifiedAtMs: verified)
    }

    /// Every add rewrites the time, so that a collection decided before it no longer applies.
    static func encodeMeta(size: UInt64, addedAtMs: Int64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(size)
        writer.writeVarint(signed: addedAtMs)
        return writer.bytes
    }

    static func decodeMeta(_ value: [UInt8]) -> (size: UInt64, addedAtMs: Int64)? {
        var reader = ByteReader(value)
        guard let size = try? reader.readVarint(), let created = try? reader.readSignedVarint() else { return nil }
        return (size, created)
    }

    static func encodeHolder(verifiedAtMs: Int64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(signed: verifiedAtMs)
        return writer.bytes
    }

    /// A tag name: 1 to `blobTagBytesMax` bytes, no control characters.
    static func validate(tag: String, limits: Limits) throws(BlobServiceError) {
        let bytes = Array(tag.utf8)
        guard !bytes.isEmpty else { throw .badInput("a tag name must not be empty") }
        guard bytes.count <= limits.blobTagBytesMax else {
            throw .badInput("a tag name of \(bytes.count) bytes exceeds blobTagBytesMax (\(limits.blobTagBytesMax))")
        }
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw .badInput("a tag name must not contain control characters")
        }
    }
}
