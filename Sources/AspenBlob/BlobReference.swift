import AspenCore

/// The value a key holds when its value lives in the blob store (a value above
/// `Limits.valueBytesMax`, put with `aspen kv put --value-file`): a marker no text value starts
/// with, a version, the blob's hash and its size. Reading the key follows it to the blob; garbage
/// collection keeps every blob a key refers to.
public struct BlobReference: Sendable, Equatable {
    /// NUL, "aspen-blob", NUL.
    public static let marker: [UInt8] = [0] + Array("aspen-blob".utf8) + [0]
    static let version: UInt8 = 1

    public var hash: BlobHash
    public var size: UInt64

    public init(hash: BlobHash, size: UInt64) {
        self.hash = hash
        self.size = size
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeRaw(Self.marker)
        writer.write(Self.version)
        writer.writeRaw(hash.bytes)
        writer.writeVarint(size)
        return writer.bytes
    }

    /// Nil unless `value` is exactly a reference: the marker, version 1, 32 bytes and a size.
    public init?(decoding value: [UInt8]) {
        let headerCount = Self.marker.count + 1 + BlobHash.byteCount
        guard value.count > headerCount, value.count <= headerCount + 10, value.starts(with: Self.marker),
            value[Self.marker.count] == Self.version
        else { return nil }
        var reader = ByteReader(Array(value[(Self.marker.count + 1)...]))
        guard let bytes = try? reader.readRaw(BlobHash.byteCount), let hash = BlobHash(bytes: bytes),
            let size = try? reader.readVarint(), reader.isAtEnd
        else { return nil }
        self.init(hash: hash, size: size)
    }
}
