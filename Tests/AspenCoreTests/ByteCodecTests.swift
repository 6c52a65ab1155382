import AspenCore
import Testing

@Suite("Byte codec")
struct ByteCodecTests {
    @Test("values round-trip")
    func roundTrip() throws {
        var writer = ByteWriter()
        writer.writeVarint(0)
        writer.writeVarint(300)
        writer.writeVarint(.max)
        writer.writeVarint(signed: -5)
        writer.writeVarint(signed: .min)
        writer.writeFixed(UInt64(0x0102_0304_0506_0708))
        writer.writeBytes([1, 2, 3])
        writer.writeOptionalBytes(nil)
        writer.writeString("héllo")
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readVarint() == 0)
        #expect(try reader.readVarint() == 300)
        #expect(try reader.readVarint() == .max)
        #expect(try reader.readSignedVarint() == -5)
        #expect(try reader.readSignedVarint() == .min)
        #expect(try reader.readFixed64() == 0x0102_0304_0506_0708)
        #expect(try reader.readBytes(limit: 10) == [1, 2, 3])
        #expect(try reader.readOptionalBytes(limit: 10) == nil)
        #expect(try reader.readString(limit: 10) == "héllo")
        try reader.expectEnd()
    }

    @Test("a declared length above the bound is refused before anything is allocated")
    func boundedLength() {
        var writer = ByteWriter()
        writer.writeVarint(1 << 40)
        var reader = ByteReader(writer.bytes)
        #expect(throws: DecodingError.lengthTooLarge(length: 1 << 40, limit: 1024)) { try reader.readBytes(limit: 1024) }
    }

    @Test("truncated input and overlong varints are errors, not crashes")
    func garbage() {
        var reader = ByteReader([0x05, 1, 2])
        #expect(throws: DecodingError.truncated(needed: 5, remaining: 2)) { try reader.readBytes(limit: 100) }
        var overlong = ByteReader(Array(repeating: 0xFF, count: 11))
        #expect(throws: DecodingError.varintOverflow) { try overlong.readVarint() }
        var generator = SplitMix64(seed: 3)
        for _ in 0..<2000 {
            let length = Int(generator.next(in: 0...40))
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            var fuzz = ByteReader(bytes)
            _ = try? fuzz.readBytes(limit: 16)
            _ = try? fuzz.readString(limit: 16)
            _ = try? fuzz.readSignedVarint()
        }
    }

    @Test("CRC-32C matches the standard check value")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
    }
}
