import AspenCore
import AspenKV

/// Base64 exactly as Go's `encoding/base64` reads and writes it for Vault: `StdEncoding` (padded;
/// carriage returns and newlines in the input are skipped; bits after the last byte need not be
/// zero) and `RawURLEncoding` (the JWS form: URL alphabet, no padding). The HTTP layer decodes
/// plaintexts, contexts and inputs with it so that a bad one is refused with Go's own message.
public enum TransitBase64 {
    private static let standard = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let url = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let padding = UInt8(ascii: "=")
    private static let standardValues = values(of: standard)
    private static let urlValues = values(of: url)

    public static func encode(_ bytes: Bytes) -> String { encode(bytes, alphabet: standard, padded: true) }

    /// Go's `base64.StdEncoding.DecodeString`, refused with its message ("illegal base64 data at
    /// input byte N", N as Go counts it).
    public static func decode(validating text: String) throws(SecretsError) -> Bytes {
        switch decode(Array(text.utf8), values: standardValues, padded: true) {
        case .success(let bytes): return bytes
        case .failure(let error): throw .badRequest("illegal base64 data at input byte \(error.offset)")
        }
    }

    static func encodeRawURL(_ bytes: Bytes) -> String { encode(bytes, alphabet: url, padded: false) }
    static func decode(_ text: String) -> Bytes? { try? decode(Array(text.utf8), values: standardValues, padded: true).get() }
    static func decodeRawURL(_ text: String) -> Bytes? { try? decode(Array(text.utf8), values: urlValues, padded: false).get() }

    /// Each symbol's value, 0xFF for bytes outside the alphabet.
    private static func values(of alphabet: [UInt8]) -> [UInt8] {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, symbol) in alphabet.enumerated() { table[Int(symbol)] = UInt8(value) }
        return table
    }

    private static func encode(_ bytes: Bytes, alphabet: [UInt8], padded: Bool) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value: UInt32 = 0
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * UInt32(offset)) }
            for position in 0..<(chunk.count + 1) { out.append(alphabet[Int((value >> (18 - 6 * UInt32(position))) & 0x3F)]) }
            if padded { out.append(contentsOf: Array(repeating: padding, count: 3 - chunk.count)) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    struct Corrupt: Error { let offset: Int }

    /// Quantum by quantum, as Go's decoder goes, so that an error names the byte Go would name.
    private static func decode(_ source: [UInt8], values: [UInt8], padded: Bool) -> Result<Bytes, Corrupt> {
        var out: Bytes = []
        out.reserveCapacity(source.count / 4 * 3)
        var index = 0
        func isNewline(_ byte: UInt8) -> Bool { byte == 0x0A || byte == 0x0D }
        func skipNewlines() { while index < source.count && isNewline(source[index]) { index += 1 } }
        while true {
            var quantum: [UInt32] = [0, 0, 0, 0]
            var count = 0
            var finished = false
            while count < 4 {
                if index == source.count {
                    if count == 0 { return .success(out) }
                    if count == 1 || padded { return .failure(Corrupt(offset: index - count)) }
                    finished = true
                    break
                }
                let byte = source[index]
                index += 1
                if values[Int(byte)] != 0xFF {
                    quantum[count] = UInt32(values[Int(byte)])
                    count += 1
                    continue
                }
                if isNewline(byte) { continue }
                guard padded, byte == padding, count >= 2 else { return .failure(Corrupt(offset: index - 1)) }
                if count == 2 {
                    // "==": the second sign must follow, newlines aside.
                    skipNewlines()
                    if index == source.count { return .failure(Corrupt(offset: source.count)) }
                    if source[index] != padding { return .failure(Corrupt(offset: index - 1)) }
                    index += 1
                }
                skipNewlines()
                if index < source.count { return .failure(Corrupt(offset: index)) }
                finished = true
                break
            }
            let value = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3]
            for position in 0..<(count - 1) { out.append(UInt8(truncatingIfNeeded: value >> (16 - 8 * UInt32(position)))) }
            if finished { return .success(out) }
        }
    }
}

/// PEM as Go's `pem.EncodeToMemory` writes it: 64-character lines, each ending in a newline.
enum TransitPEM {
    static func encode(type: String, der: Bytes) -> String {
        let body = Array(TransitBase64.encode(der).utf8)
        var text = "-----BEGIN \(type)-----\n"
        var index = 0
        while index < body.count {
            text += String(decoding: body[index..<min(index + 64, body.count)], as: UTF8.self) + "\n"
            index += 64
        }
        return text + "-----END \(type)-----\n"
    }
}

/// The little DER the transit engine reads and writes itself: ECDSA signatures (Vault's
/// `asn1.Unmarshal` into two integers, with its two distinct refusals) and SEC 1 keys.
/// Strict: definite, minimal lengths; single-byte tags.
enum TransitDER {
    static let sequenceTag: UInt8 = 0x30
    static let integerTag: UInt8 = 0x02

    static func element(_ tag: UInt8, _ content: Bytes) -> Bytes {
        [tag] + length(content.count) + content
    }

    static func length(_ count: Int) -> Bytes {
        if count < 0x80 { return [UInt8(count)] }
        var bytes: Bytes = []
        var remaining = count
        while remaining > 0 {
            bytes.insert(UInt8(remaining & 0xFF), at: 0)
            remaining >>= 8
        }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    /// One element at the front of `bytes`: its tag, its content and what follows it.
    static func readElement(_ bytes: ArraySlice<UInt8>) -> (tag: UInt8, content: ArraySlice<UInt8>, rest: ArraySlice<UInt8>)? {
        var index = bytes.startIndex
        guard index < bytes.endIndex else { return nil }
        let tag = bytes[index]
        guard tag & 0x1F != 0x1F else { return nil }  // multi-byte tags: never in what this reads
        index += 1
        guard index < bytes.endIndex else { return nil }
        let first = bytes[index]
        index += 1
        var count = 0
        if first < 0x80 {
            count = Int(first)
        } else {
            let lengthBytes = Int(first & 0x7F)
            guard lengthBytes >= 1, lengthBytes <= 4, bytes.endIndex - index >= lengthBytes else { return nil }
            guard bytes[index] != 0 else { return nil }  // leading zero: not minimal
            for _ in 0..<lengthBytes {
                count = count << 8 | Int(bytes[index])
                index += 1
            }
            guard count >= 0x80 else { return nil }  // long form for a short length: not minimal
        }
        guard bytes.endIndex - index >= count else { return nil }
        return (tag, bytes[index..<index + count], bytes[(index + count)...])
    }

    static func isSingleElement(_ bytes: Bytes, tag: UInt8) -> Bool {
        guard let element = readElement(bytes[...]) else { return false }
        return element.tag == tag && element.rest.isEmpty
    }

    enum ECDSASignature {
        /// Not a SEQUENCE of two well-formed INTEGERs.
        case invalid
        /// A well-formed signature followed by more bytes.
        case extraData
        /// The two INTEGERs' contents, big-endian two's complement.
        case integers(r: ArraySlice<UInt8>, s: ArraySlice<UInt8>)
    }

    /// An ECDSA-Sig-Value as Go's `asn1.Unmarshal` reads it into `struct{ R, S *big.Int }`:
    /// extra elements inside the SEQUENCE are allowed, bytes after it are reported apart.
    static func parseECDSASignature(_ der: Bytes) -> ECDSASignature {
        guard let outer = readElement(der[...]), outer.tag == sequenceTag,
            let r = readElement(outer.content), r.tag == integerTag, isMinimalInteger(r.content),
            let s = readElement(r.rest), s.tag == integerTag, isMinimalInteger(s.content)
        else { return .invalid }
        guard outer.rest.isEmpty else { return .extraData }
        return .integers(r: r.content, s: s.content)
    }

    /// Go refuses an empty INTEGER and one with a redundant leading byte.
    static func isMinimalInteger(_ content: ArraySlice<UInt8>) -> Bool {
        guard let first = content.first else { return false }
        guard content.count > 1 else { return true }
        let second = content[content.startIndex + 1]
        return !(first == 0x00 && second & 0x80 == 0) && !(first == 0xFF && second & 0x80 != 0)
    }
}
