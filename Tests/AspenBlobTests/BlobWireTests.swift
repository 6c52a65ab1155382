import AspenBlob
import AspenCore
import Testing

@Suite("Blob wire")
struct BlobWireTests {
    @Test("an upload frame encoded from a buffer has the protocol's layout and decodes to the same request")
    func uploadFrameFromBuffer() throws {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let credential: [UInt8] = [1, 2, 3]
        let direct = bytes.withUnsafeBytes { BlobWire.encodeUploadData(id: 9, offset: 1 << 33, bytes: $0, credential: credential) }
        // Version 1, the credential (length 3), kind 3, id 9, offset 2^33 and the length 70 000 as
        // varints, then the bytes.
        #expect(Array(direct.prefix(16)) == [1, 3, 1, 2, 3, 3, 9, 0x80, 0x80, 0x80, 0x80, 0x20, 0xF0, 0xA2, 0x04] + [bytes[0]])
        #expect(Array(direct.suffix(bytes.count)) == bytes && direct.count == 15 + bytes.count)
        let decoded = try BlobWire.decodeRequest(direct, limits: .standard)
        #expect(decoded.request == .uploadData(id: 9, offset: 1 << 33, bytes: bytes) && decoded.credential == credential)
    }

    @Test("a key's reference to a blob round-trips, and nothing but an exact reference decodes as one")
    func reference() throws {
        let reference = BlobReference(hash: .of([1, 2, 3]), size: 5 << 30)
        #expect(BlobReference(decoding: reference.encoded) == reference)
        var trailing = reference.encoded
        trailing.append(0)
        #expect(BlobReference(decoding: trailing) == nil)
        #expect(BlobReference(decoding: Array(reference.encoded.dropLast())) == nil)
        #expect(BlobReference(decoding: Array("aspen-blob".utf8)) == nil)
        var otherVersion = reference.encoded
        otherVersion[BlobReference.marker.count] = 2
        #expect(BlobReference(decoding: otherVersion) == nil)
    }
}
