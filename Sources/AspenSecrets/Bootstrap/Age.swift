import Crypto
import Foundation

/// age v1 (age-encryption.org/v1) with X25519 recipients, on swift-crypto: enough to open the data
/// key a SOPS file wraps for a node's `--age-identity-file`, and to make files the real `age` opens.
///
/// A file is a text header — the version line, one stanza per recipient, and a MAC line — then a
/// binary payload: a 16-byte nonce and the plaintext in 64 KiB ChaCha20-Poly1305 chunks (STREAM).
/// Everything read is bounded (`stanzasMax`, `headerLineBytesMax`, `stanzaBodyBytesMax`, the
/// caller's file size) and every refusal is an `AgeError`, so hostile input costs an error, never
/// a crash. Only X25519 identities are supported; other stanza types are skipped when an X25519
/// stanza matches (passphrase-only and post-quantum files are refused with a message saying so).
public enum Age {
    /// Most recipient stanzas a header may hold.
    public static let stanzasMax = 64
    /// Most arguments on one stanza line.
    public static let stanzaArgumentsMax = 16
    /// Longest header line, newline excluded (post-quantum stanza lines run to about 1,500).
    public static let headerLineBytesMax = 4096
    /// Largest stanza body, decoded.
    public static let stanzaBodyBytesMax = 16 * 1024
    /// Plaintext bytes per payload chunk (the spec's 64 KiB).
    public static let chunkBytes = 64 * 1024
    /// Largest identity file `AgeIdentity.parseFile` reads, and most identities in it.
    public static let identityFileBytesMax = 1024 * 1024
    public static let identitiesMax = 1024

    static let intro = Array("age-encryption.org/v1".utf8)
    static let versionPrefix = Array("age-encryption.org/".utf8)
    static let x25519Label = Array("age-encryption.org/v1/X25519".utf8)
    static let armorBegin = Array("-----BEGIN AGE ENCRYPTED FILE-----".utf8)
    static let armorEnd = Array("-----END AGE ENCRYPTED FILE-----".utf8)
    /// Whitespace allowed around an armored file (age's own bound).
    static let armorWhitespaceBytesMax = 1024
    static let tagBytes = 16
    static let fileKeyBytes = 16

    /// The plaintext of an age file (binary, or ASCII-armored), opened with the first identity
    /// that matches one of its X25519 stanzas.
    public static func decrypt(_ file: [UInt8], identities: [AgeIdentity], fileBytesMax: Int) throws(AgeError) -> [UInt8] {
        guard file.count <= fileBytesMax else { throw .fileTooLarge(sizeBytes: file.count, limitBytes: fileBytesMax) }
        guard !identities.isEmpty else { throw .noIdentities }
        let binary = isArmored(file) ? try dearmor(file) : file
        let header = try AgeHeader.parse(binary)
        let fileKey = try unwrapFileKey(header.stanzas, identities: identities)
        let macKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: [UInt8](), info: Array("header".utf8), outputByteCount: 32)
        guard HMAC<SHA256>.isValidAuthenticationCode(header.mac, authenticating: Array(binary[..<header.macInputEnd]), using: macKey) else {
            throw .headerMACMismatch
        }
        return try decryptPayload(binary[header.payloadStart...], fileKey: fileKey)
    }

    /// A new age file of `plaintext` for `recipients`, binary or armored; randomness (file key,
    /// ephemeral keys, payload nonce) comes from `random`, which must be a CSPRNG outside tests.
    public static func encrypt<R: RandomNumberGenerator>(
        _ plaintext: [UInt8], to recipients: [AgeRecipient], armored: Bool = false, using random: inout R
    ) throws(AgeError) -> [UInt8] {
        guard !recipients.isEmpty else { throw .noRecipients }
        guard recipients.count <= stanzasMax else { throw .tooManyStanzas(count: recipients.count, limit: stanzasMax) }
        let fileKey = randomBytes(fileKeyBytes, using: &random)
        var stanzas: [AgeStanza] = []
        for recipient in recipients { stanzas.append(try wrap(fileKey, for: recipient, using: &random)) }
        let binary = assemble(fileKey: fileKey, stanzas: stanzas, plaintext: plaintext, using: &random)
        return armored ? armor(binary) : binary
    }

    /// `encrypt(_:to:armored:using:)` with the system's CSPRNG.
    public static func encrypt(_ plaintext: [UInt8], to recipients: [AgeRecipient], armored: Bool = false) throws(AgeError) -> [UInt8] {
        var random = SystemRandomNumberGenerator()
        return try encrypt(plaintext, to: recipients, armored: armored, using: &random)
    }

    // MARK: Header

    /// The file key, from the first X25519 stanza an identity opens. A malformed X25519 stanza and an
    /// all-zero shared secret abort (as the spec requires); a stanza for someone else is skipped.
    static func unwrapFileKey(_ stanzas: [AgeStanza], identities: [AgeIdentity]) throws(AgeError) -> [UInt8] {
        // An scrypt stanza must be alone: a passphrase file is expected to be authenticated by it.
        if stanzas.contains(where: { $0.type == "scrypt" }) && stanzas.count > 1 { throw .scryptNotAlone }
        for identity in identities {
            for stanza in stanzas where stanza.type == "X25519" {
                if let fileKey = try identity.unwrap(stanza) { return fileKey }
            }
        }
        throw .noMatchingIdentity(stanzaTypes: stanzas.map(\.type))
    }

    static func wrap<R: RandomNumberGenerator>(_ fileKey: [UInt8], for recipient: AgeRecipient, using random: inout R) throws(AgeError) -> AgeStanza {
        let ephemeralSecret = randomBytes(32, using: &random)
        guard let ephemeral = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: ephemeralSecret) else {
            throw .invalidRecipient("could not make an ephemeral X25519 key")
        }
        let share = Array(ephemeral.publicKey.rawRepresentation)
        let shared = try x25519(ephemeral, recipient.publicKey)
        let wrapKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: shared), salt: share + recipient.publicKey, info: x25519Label, outputByteCount: 32)
        guard let body = seal(fileKey, key: wrapKey, nonce: [UInt8](repeating: 0, count: 12)) else {
            throw .invalidRecipient("could not wrap the file key")
        }
        return AgeStanza(type: "X25519", arguments: [String(decoding: BootstrapBase64.encode(share, padded: false), as: UTF8.self)], body: body)
    }

    /// X25519(secret, point), refusing the all-zero result a low-order point gives: swift-crypto
    /// does not check it (see its X25519 key agreement), and the age spec says to abort.
    static func x25519(_ secret: Curve25519.KeyAgreement.PrivateKey, _ point: [UInt8]) throws(AgeError) -> [UInt8] {
        guard let publicKey = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: point),
            let shared = try? secret.sharedSecretFromKeyAgreement(with: publicKey)
        else { throw .invalidStanza("an X25519 share is not a 32-byte point") }
        let bytes = shared.withUnsafeBytes { Array($0) }
        var accumulated: UInt8 = 0
        for byte in bytes { accumulated |= byte }
        guard accumulated != 0 else { throw .allZeroSharedSecret }
        return bytes
    }

    /// The binary file: header, MAC line, payload nonce and chunks.
    static func assemble<R: RandomNumberGenerator>(fileKey: [UInt8], stanzas: [AgeStanza], plaintext: [UInt8], using random: inout R) -> [UInt8] {
        var header = intro + [0x0A]
        for stanza in stanzas { header += stanza.encoded() }
        header += Array("---".utf8)
        let macKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: [UInt8](), info: Array("header".utf8), outputByteCount: 32)
        let mac = Array(HMAC<SHA256>.authenticationCode(for: header, using: macKey))
        header += [0x20] + BootstrapBase64.encode(mac, padded: false) + [0x0A]
        let nonce = randomBytes(16, using: &random)
        return header + nonce + encryptPayload(plaintext, fileKey: fileKey, nonce: nonce)
    }

    // MARK: Payload (STREAM)

    static func payloadKey(_ fileKey: [UInt8], nonce: some Sequence<UInt8>) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: fileKey), salt: Array(nonce), info: Array("payload".utf8), outputByteCount: 32)
    }

    /// The 12-byte chunk nonce: an 11-byte big-endian counter, then 1 on the final chunk.
    static func chunkNonce(_ counter: UInt64, last: Bool) -> [UInt8] {
        var nonce: [UInt8] = [0, 0, 0]
        for shift in stride(from: 56, through: 0, by: -8) { nonce.append(UInt8(truncatingIfNeeded: counter >> UInt64(shift))) }
        nonce.append(last ? 1 : 0)
        return nonce
    }

    static func encryptPayload(_ plaintext: [UInt8], fileKey: [UInt8], nonce: [UInt8]) -> [UInt8] {
        let key = payloadKey(fileKey, nonce: nonce)
        var output: [UInt8] = []
        output.reserveCapacity(plaintext.count + (plaintext.count / chunkBytes + 1) * tagBytes)
        var start = 0
        var counter: UInt64 = 0
        repeat {
            let end = min(start + chunkBytes, plaintext.count)
            let last = end == plaintext.count
            // Sealing with a 32-byte key and a 12-byte nonce cannot fail.
            output += seal(Array(plaintext[start..<end]), key: key, nonce: chunkNonce(counter, last: last)) ?? []
            start = end
            counter += 1
        } while start < plaintext.count
        return output
    }

    /// Every chunk must open, in order; the last one (and only it) carries the final flag; data
    /// after it, a missing final chunk, and an empty final chunk after full ones are refused.
    static func decryptPayload(_ payload: ArraySlice<UInt8>, fileKey: [UInt8]) throws(AgeError) -> [UInt8] {
        guard payload.count >= 16 else { throw .payload("the payload is shorter than its 16-byte nonce (truncated)") }
        let key = payloadKey(fileKey, nonce: payload.prefix(16))
        var rest = payload.dropFirst(16)
        let sealedChunkBytes = chunkBytes + tagBytes
        var plaintext: [UInt8] = []
        plaintext.reserveCapacity(rest.count)
        var counter: UInt64 = 0
        while rest.count > sealedChunkBytes {
            let chunk = rest.prefix(sealedChunkBytes)
            guard let opened = open(chunk, key: key, nonce: chunkNonce(counter, last: false)) else {
                if open(chunk, key: key, nonce: chunkNonce(counter, last: true)) != nil {
                    throw .payload("data follows the final chunk")
                }
                throw .payload("chunk \(counter) failed authentication (altered, or for another key)")
            }
            plaintext += opened
            rest = rest.dropFirst(sealedChunkBytes)
            counter += 1
        }
        guard rest.count >= tagBytes else { throw .payload("the last chunk is shorter than its 16-byte tag (truncated)") }
        guard let opened = open(rest, key: key, nonce: chunkNonce(counter, last: true)) else {
            if rest.count == sealedChunkBytes, open(rest, key: key, nonce: chunkNonce(counter, last: false)) != nil {
                throw .payload("the file ends without its final chunk (truncated)")
            }
            throw .payload("chunk \(counter) (the final one) failed authentication (altered, or truncated)")
        }
        guard !opened.isEmpty || counter == 0 else { throw .payload("the final chunk is empty, which only an empty file may have") }
        return plaintext + opened
    }

    static func seal(_ plaintext: [UInt8], key: SymmetricKey, nonce: [UInt8]) -> [UInt8]? {
        guard let nonce = try? ChaChaPoly.Nonce(data: nonce), let box = try? ChaChaPoly.seal(plaintext, using: key, nonce: nonce) else {
            return nil
        }
        return Array(box.ciphertext) + Array(box.tag)
    }

    static func open(_ sealed: ArraySlice<UInt8>, key: SymmetricKey, nonce: [UInt8]) -> [UInt8]? {
        guard sealed.count >= tagBytes, let nonce = try? ChaChaPoly.Nonce(data: nonce),
            let box = try? ChaChaPoly.SealedBox(nonce: nonce, ciphertext: Array(sealed.dropLast(tagBytes)), tag: Array(sealed.suffix(tagBytes))),
            let opened = try? ChaChaPoly.open(box, using: key)
        else { return nil }
        return Array(opened)
    }

    static func randomBytes<R: RandomNumberGenerator>(_ count: Int, using random: inout R) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count + 8)
        while bytes.count < count { withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) } }
        return Array(bytes.prefix(count))
    }
}

// MARK: - ASCII armor

extension Age {
    /// Whether `file` is ASCII-armored (its first non-blank line is the armor's BEGIN line).
    public static func isArmored(_ file: [UInt8]) -> Bool {
        var index = 0
        while index < file.count, index < armorWhitespaceBytesMax, isWhitespace(file[index]) { index += 1 }
        return file[index...].starts(with: armorBegin)
    }

    /// The binary file inside strict PEM armor (RFC 7468): blank lines allowed only before and after
    /// (≤ 1 KiB each), lines of 64 columns of padded canonical base64, the last one shorter or full,
    /// then the END line. LF or CRLF line ends.
    public static func dearmor(_ file: [UInt8]) throws(AgeError) -> [UInt8] {
        var lines = ArmorLines(bytes: file)
        var skipped = 0
        var line = lines.next()
        while let current = line, current.allSatisfy(isWhitespace) {
            skipped += current.count + 1
            guard skipped <= armorWhitespaceBytesMax else { throw .armor("more than \(armorWhitespaceBytesMax) bytes of whitespace before the armor") }
            line = lines.next()
        }
        guard let first = line, first.elementsEqual(armorBegin) else { throw .armor("the first line is not \(String(decoding: armorBegin, as: UTF8.self))") }
        var binary: [UInt8] = []
        binary.reserveCapacity(file.count * 3 / 4)
        while true {
            guard let current = lines.next() else { throw .armor("the armor has no END line (truncated)") }
            if current.elementsEqual(armorEnd) { break }
            guard !current.isEmpty else { throw .armor("an empty line inside the armor") }
            guard current.count <= 64 else { throw .armor("an armor line is longer than 64 columns") }
            guard let decoded = BootstrapBase64.decode(current, padded: true) else { throw .armor("an armor line is not canonical padded base64") }
            binary += decoded
            if decoded.count < 48 {
                guard let end = lines.next(), end.elementsEqual(armorEnd) else { throw .armor("a short armor line is not followed by the END line") }
                break
            }
        }
        let trailing = lines.remaining
        guard trailing.allSatisfy(isWhitespace) else { throw .armor("data follows the armor's END line") }
        guard trailing.count < armorWhitespaceBytesMax else { throw .armor("more than \(armorWhitespaceBytesMax) bytes of whitespace after the armor") }
        return binary
    }

    /// `binary` in the armor `dearmor` reads.
    public static func armor(_ binary: [UInt8]) -> [UInt8] {
        let encoded = BootstrapBase64.encode(binary, padded: true)
        var output = armorBegin + [0x0A]
        output.reserveCapacity(encoded.count + encoded.count / 64 + 80)
        var start = 0
        while start < encoded.count {
            let end = min(start + 64, encoded.count)
            output += encoded[start..<end]
            output.append(0x0A)
            start = end
        }
        return output + armorEnd + [0x0A]
    }

    static func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
}

/// Lines of an armored file, each without its LF or CRLF.
struct ArmorLines {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    var remaining: ArraySlice<UInt8> { bytes[offset...] }

    mutating func next() -> ArraySlice<UInt8>? {
        guard offset < bytes.count else { return nil }
        let end = bytes[offset...].firstIndex(of: 0x0A) ?? bytes.count
        var line = bytes[offset..<end]
        if line.last == 0x0D { line = line.dropLast() }
        offset = min(end + 1, bytes.count)
        return line
    }
}

// MARK: - Header parsing

/// One recipient stanza: `-> type args…` and its body.
struct AgeStanza: Sendable, Equatable {
    var type: String
    var arguments: [String]
    var body: [UInt8]

    /// The stanza's lines: the argument line, then the body in unpadded base64 wrapped at 64
    /// columns, ending with a line shorter than 64 (empty when the body fills whole lines).
    func encoded() -> [UInt8] {
        var output = Array("->".utf8)
        for argument in [type] + arguments { output += [0x20] + Array(argument.utf8) }
        output.append(0x0A)
        let text = BootstrapBase64.encode(body, padded: false)
        var start = 0
        while text.count - start >= 64 {
            output += text[start..<(start + 64)]
            output.append(0x0A)
            start += 64
        }
        output += text[start...]
        output.append(0x0A)
        return output
    }
}

struct AgeHeader {
    var stanzas: [AgeStanza]
    var mac: [UInt8]
    /// Bytes the header MAC covers: the file up to and including `---`.
    var macInputEnd: Int
    var payloadStart: Int

    static func parse(_ file: [UInt8]) throws(AgeError) -> AgeHeader {
        var reader = HeaderLines(bytes: file)
        let first = try reader.next()
        if !first.elementsEqual(Age.intro) {
            if first.starts(with: Age.versionPrefix) {
                throw .unsupportedVersion(printable(first))
            }
            throw .notAnAgeFile("it does not start with age-encryption.org/v1")
        }
        var stanzas: [AgeStanza] = []
        while true {
            let lineStart = reader.offset
            let line = try reader.next()
            if line.starts(with: Array("---".utf8)) {
                let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].elementsEqual(Array("---".utf8)), let mac = BootstrapBase64.decode(parts[1], padded: false),
                    mac.count == 32
                else { throw .header("the MAC line is malformed: \(printable(line))") }
                return AgeHeader(stanzas: stanzas, mac: mac, macInputEnd: lineStart + 3, payloadStart: reader.offset)
            }
            guard line.starts(with: Array("->".utf8)) else { throw .header("expected a stanza (->) or the MAC line (---): \(printable(line))") }
            guard stanzas.count < Age.stanzasMax else { throw .tooManyStanzas(count: stanzas.count + 1, limit: Age.stanzasMax) }
            stanzas.append(try parseStanza(line, reader: &reader))
        }
    }

    static func parseStanza(_ line: ArraySlice<UInt8>, reader: inout HeaderLines) throws(AgeError) -> AgeStanza {
        let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].elementsEqual(Array("->".utf8)) else { throw .invalidStanza("malformed stanza line: \(printable(line))") }
        guard parts.count - 1 <= Age.stanzaArgumentsMax else {
            throw .invalidStanza("a stanza has \(parts.count - 1) arguments, over the limit of \(Age.stanzaArgumentsMax)")
        }
        for argument in parts.dropFirst() where argument.isEmpty || !argument.allSatisfy({ $0 >= 33 && $0 <= 126 }) {
            throw .invalidStanza("a stanza argument is empty or not printable ASCII: \(printable(line))")
        }
        let arguments = parts.dropFirst().map { String(decoding: $0, as: UTF8.self) }
        var body: [UInt8] = []
        while true {
            let bodyLine = try reader.next()
            guard bodyLine.count <= 64, let decoded = BootstrapBase64.decode(bodyLine, padded: false) else {
                throw .invalidStanza("the \(arguments[0]) stanza's body line is not canonical unpadded base64 of at most 64 columns")
            }
            body += decoded
            guard body.count <= Age.stanzaBodyBytesMax else {
                throw .invalidStanza("a stanza body is over the limit of \(Age.stanzaBodyBytesMax) bytes")
            }
            if decoded.count < 48 { break }
        }
        return AgeStanza(type: arguments[0], arguments: Array(arguments.dropFirst()), body: body)
    }

    /// A header line for an error message: printable ASCII, at most 60 characters.
    static func printable(_ line: ArraySlice<UInt8>) -> String {
        let shown = line.prefix(60).map { $0 >= 32 && $0 <= 126 ? $0 : UInt8(ascii: "?") }
        return "\"" + String(decoding: shown, as: UTF8.self) + (line.count > 60 ? "…" : "") + "\""
    }
}

/// Header lines, each ending in LF (no CR allowed: the header is exact bytes under a MAC).
struct HeaderLines {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func next() throws(AgeError) -> ArraySlice<UInt8> {
        let limit = min(bytes.count, offset + Age.headerLineBytesMax + 1)
        guard let end = bytes[offset..<limit].firstIndex(of: 0x0A) else {
            if limit == bytes.count { throw .header(offset == 0 && bytes.isEmpty ? "the file is empty" : "the header ends early (truncated)") }
            throw .header("a header line is longer than \(Age.headerLineBytesMax) bytes")
        }
        defer { offset = end + 1 }
        return bytes[offset..<end]
    }
}

// MARK: - Base64

/// RFC 4648 standard-alphabet base64, strict: no whitespace, and by default canonical (the bits
/// past the last byte are zero), so each byte string has exactly one text form — age requires it.
enum BootstrapBase64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
        return table
    }()

    static func encode(_ bytes: [UInt8], padded: Bool) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group: UInt32 = 0
            for offset in 0..<3 { group = (group << 8) | UInt32(offset < count ? bytes[index + offset] : 0) }
            for position in 0..<(count + 1) { output.append(alphabet[Int((group >> UInt32(18 - 6 * position)) & 63)]) }
            if padded { for _ in 0..<(3 - count) { output.append(UInt8(ascii: "=")) } }
            index += count
        }
        return output
    }

    /// The bytes of `text`, or nil when it is not (canonical, with exactly the right padding
    /// when `padded`, none otherwise) base64.
    static func decode(_ text: some Collection<UInt8>, padded: Bool, canonical: Bool = true) -> [UInt8]? {
        var characters = Array(text)
        if padded {
            guard characters.count % 4 == 0 else { return nil }
            var padding = 0
            while padding < 2, characters.last == UInt8(ascii: "=") {
                characters.removeLast()
                padding += 1
            }
            guard padding == 0 || characters.count % 4 == 4 - padding else { return nil }
        }
        guard characters.count % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(characters.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for character in characters {
            let value = values[Int(character)]
            guard value != 0xFF else { return nil }
            accumulator = (accumulator << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        guard !canonical || accumulator == 0 else { return nil }
        return output
    }
}

// MARK: - Keys

/// An age X25519 identity (`AGE-SECRET-KEY-1…`): the secret that opens stanzas addressed to its
/// recipient. Its description shows the recipient, never the secret.
public struct AgeIdentity: Sendable, CustomStringConvertible {
    let secretKey: [UInt8]
    /// The public side, `age1…`.
    public let recipient: AgeRecipient

    /// An identity from its 32 secret bytes.
    public init(secretKey: [UInt8]) throws(AgeError) {
        guard secretKey.count == 32, let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secretKey) else {
            throw .invalidIdentity("an X25519 secret key is 32 bytes, not \(secretKey.count)")
        }
        self.secretKey = secretKey
        recipient = AgeRecipient(validatedPublicKey: Array(key.publicKey.rawRepresentation))
    }

    /// An identity from its `AGE-SECRET-KEY-1…` text (either case).
    public init(parsing text: String) throws(AgeError) {
        if text.uppercased().hasPrefix("AGE-SECRET-KEY-PQ-") {
            throw .invalidIdentity("post-quantum identities (AGE-SECRET-KEY-PQ-1…) are not supported; use an X25519 identity from age-keygen")
        }
        let decoded: (humanReadablePart: String, data: [UInt8])
        do { decoded = try Bech32.decode(text) } catch { throw .invalidIdentity("a malformed age secret key: \(error)") }
        guard decoded.humanReadablePart == "age-secret-key-" else {
            throw .invalidIdentity("not an age secret key (AGE-SECRET-KEY-1…); its prefix is \(decoded.humanReadablePart)")
        }
        try self.init(secretKey: decoded.data)
    }

    /// A fresh identity; `random` must be a CSPRNG outside tests.
    public static func generate<R: RandomNumberGenerator>(using random: inout R) -> AgeIdentity {
        while true {
            if let identity = try? AgeIdentity(secretKey: Age.randomBytes(32, using: &random)) { return identity }
        }
    }

    /// The identities in an identity file's text, as `age-keygen` writes it: one
    /// `AGE-SECRET-KEY-1…` per line, `#` comments and blank lines skipped, LF or CRLF.
    public static func parseFile(_ text: String) throws(AgeError) -> [AgeIdentity] {
        let bytes = Array(text.utf8)
        guard bytes.count <= Age.identityFileBytesMax else {
            throw .invalidIdentity("the identity file is \(bytes.count) bytes, over the limit of \(Age.identityFileBytesMax)")
        }
        var identities: [AgeIdentity] = []
        for (index, rawLine) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.last == 0x0D ? rawLine.dropLast() : rawLine
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            guard identities.count < Age.identitiesMax else {
                throw .invalidIdentity("the identity file holds more than \(Age.identitiesMax) identities")
            }
            do {
                identities.append(try AgeIdentity(parsing: String(decoding: line, as: UTF8.self)))
            } catch {
                throw .invalidIdentity("line \(index + 1) of the identity file: \(error.message)")
            }
        }
        guard !identities.isEmpty else { throw .invalidIdentity("the identity file holds no AGE-SECRET-KEY-1… line") }
        return identities
    }

    /// The `AGE-SECRET-KEY-1…` text (secret: for writing an identity file, never for logs).
    public var encoded: String {
        // 32 bytes under a short prefix always encode.
        ((try? Bech32.encode(humanReadablePart: "AGE-SECRET-KEY-", data: secretKey)) ?? "").uppercased()
    }

    public var description: String { "AgeIdentity(\(recipient))" }

    /// The file key in `stanza` (an X25519 stanza), or nil when it is addressed to someone else.
    func unwrap(_ stanza: AgeStanza) throws(AgeError) -> [UInt8]? {
        guard stanza.arguments.count == 1, let share = BootstrapBase64.decode(Array(stanza.arguments[0].utf8), padded: false),
            share.count == 32
        else { throw .invalidStanza("an X25519 stanza needs exactly one argument, a 32-byte ephemeral share") }
        guard stanza.body.count == 32 else { throw .invalidStanza("an X25519 stanza's body is \(stanza.body.count) bytes, not 32") }
        guard let secret = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secretKey) else {
            throw .invalidIdentity("an X25519 secret key is not usable")
        }
        let shared = try Age.x25519(secret, share)
        let wrapKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: shared), salt: share + recipient.publicKey, info: Age.x25519Label, outputByteCount: 32)
        return Age.open(stanza.body[...], key: wrapKey, nonce: [UInt8](repeating: 0, count: 12))
    }
}

/// An age X25519 recipient (`age1…`): the public key files are encrypted to.
public struct AgeRecipient: Sendable, Hashable, CustomStringConvertible {
    /// The 32-byte X25519 public key.
    public let publicKey: [UInt8]

    init(validatedPublicKey: [UInt8]) { publicKey = validatedPublicKey }

    /// The recipient of `identity`.
    public init(identity: AgeIdentity) { self = identity.recipient }

    /// A recipient from its 32-byte public key.
    public init(publicKey: [UInt8]) throws(AgeError) {
        guard publicKey.count == 32 else { throw .invalidRecipient("an X25519 public key is 32 bytes, not \(publicKey.count)") }
        self.publicKey = publicKey
    }

    /// A recipient from its `age1…` text.
    public init(parsing text: String) throws(AgeError) {
        let decoded: (humanReadablePart: String, data: [UInt8])
        do { decoded = try Bech32.decode(text) } catch { throw .invalidRecipient("a malformed age recipient: \(error)") }
        guard decoded.humanReadablePart == "age" else {
            throw .invalidRecipient("not an X25519 age recipient (age1…); its prefix is \(decoded.humanReadablePart)")
        }
        try self.init(publicKey: decoded.data)
    }

    /// The `age1…` text.
    public var encoded: String { (try? Bech32.encode(humanReadablePart: "age", data: publicKey)) ?? "" }

    public var description: String { encoded }
}

// MARK: - Errors

/// Why an age file, key or identity file was refused.
public enum AgeError: Error, Sendable, Equatable, CustomStringConvertible {
    case fileTooLarge(sizeBytes: Int, limitBytes: Int)
    case notAnAgeFile(String)
    case unsupportedVersion(String)
    case armor(String)
    case header(String)
    case tooManyStanzas(count: Int, limit: Int)
    case invalidStanza(String)
    case scryptNotAlone
    case noIdentities
    case noRecipients
    case noMatchingIdentity(stanzaTypes: [String])
    case allZeroSharedSecret
    case headerMACMismatch
    case payload(String)
    case invalidIdentity(String)
    case invalidRecipient(String)

    public var message: String {
        switch self {
        case .fileTooLarge(let size, let limit): "the age file is \(size) bytes, over the limit of \(limit) bytes"
        case .notAnAgeFile(let why): "not an age file: \(why)"
        case .unsupportedVersion(let line): "an age format version this reader does not know: \(line)"
        case .armor(let why): "invalid age armor: \(why)"
        case .header(let why): "invalid age header: \(why)"
        case .tooManyStanzas(let count, let limit): "the age header has \(count) recipient stanzas, over the limit of \(limit)"
        case .invalidStanza(let why): "invalid age recipient stanza: \(why)"
        case .scryptNotAlone: "the age header mixes a passphrase (scrypt) stanza with other stanzas, which the spec forbids"
        case .noIdentities: "no age identities were given to decrypt with"
        case .noRecipients: "an age file needs at least one recipient"
        case .noMatchingIdentity(let types):
            if types == ["scrypt"] {
                "no identity matches any recipient of this file: it is passphrase-encrypted (scrypt), and only X25519 identities are supported"
            } else {
                "no identity matches any recipient of this file (its stanzas: \(types.joined(separator: ", ")))"
            }
        case .allZeroSharedSecret: "an X25519 stanza's ephemeral share is a low-order point (all-zero shared secret); the file is refused"
        case .headerMACMismatch: "the age header's MAC does not match: the header was altered"
        case .payload(let why): "the age payload is invalid: \(why)"
        case .invalidIdentity(let why): "invalid age identity: \(why)"
        case .invalidRecipient(let why): "invalid age recipient: \(why)"
        }
    }

    public var description: String { message }
}
