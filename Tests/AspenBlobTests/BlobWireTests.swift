import AspenBlob
import AspenCore
import Testing

@Suite("Blob wire")
struct BlobWireTests {
    @Test("an upload frame encoded from a buffer is the encoding of the same request, and decodes to it")
    func uploadFrameFromBuffer() throws {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let credential: [UInt8] = [1, 2, 3]
        let direct = bytes.withUnsafeBytes { BlobWire.encodeUploadData(id: 9, offset: 1 << 33, bytes: $0, credential: credential) }
        #expect(direct == BlobWire.encode(.uploadData(id: 9, offset: 1 << 33, bytes: bytes), credential: credential))
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
