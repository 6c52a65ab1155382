import AspenCore
import Foundation
import Testing

@testable import AspenSecrets

/// The real tools the bootstrap tests check against. A missing tool fails the test with a message
/// saying what to install; nothing is skipped.
enum BootstrapTools {
    static let ageInstall = "install age (Debian: apt-get update && apt-get install -y age)"

    /// The executable `name` on PATH, if any.
    static func program(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func require(_ name: String, _ install: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try #require(program(name), "\(name) is not on PATH: \(install)", sourceLocation: sourceLocation)
    }

    struct Output {
        var status: Int32
        var stdout: [UInt8]
        var stderr: String
    }

    /// Runs `executable` to completion, its standard input `input`, its output through files (so a
    /// large output cannot fill a pipe and stall it).
    static func run(_ executable: String, _ arguments: [String], input: [UInt8] = []) throws -> Output {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let inputURL = directory.appendingPathComponent("stdin")
        let outputURL = directory.appendingPathComponent("stdout")
        let errorURL = directory.appendingPathComponent("stderr")
        try Data(input).write(to: inputURL)
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = try FileHandle(forReadingFrom: inputURL)
        process.standardOutput = try FileHandle(forWritingTo: outputURL)
        process.standardError = try FileHandle(forWritingTo: errorURL)
        try process.run()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, stdout: Array(try Data(contentsOf: outputURL)),
            stderr: String(decoding: try Data(contentsOf: errorURL), as: UTF8.self))
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-bootstrap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A fresh identity from the real `age-keygen`: its file's text and its recipient.
    static func keygen() throws -> (file: String, recipient: String) {
        let keygen = try require("age-keygen", ageInstall)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyPath = directory.appendingPathComponent("key.txt").path
        let made = try run(keygen, ["-o", keyPath])
        try #require(made.status == 0, "age-keygen failed: \(made.stderr)")
        let file = try String(contentsOfFile: keyPath, encoding: .utf8)
        let shown = try run(keygen, ["-y", keyPath])
        try #require(shown.status == 0, "age-keygen -y failed: \(shown.stderr)")
        return (file, String(decoding: shown.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `plaintext` encrypted by the real `age` to `recipients`.
    static func ageEncrypt(_ plaintext: [UInt8], to recipients: [String], armored: Bool = false) throws -> [UInt8] {
        let age = try require("age", ageInstall)
        var arguments = recipients.flatMap { ["-r", $0] }
        if armored { arguments.append("-a") }
        let output = try run(age, arguments, input: plaintext)
        try #require(output.status == 0, "age failed: \(output.stderr)")
        return output.stdout
    }

    /// The real `age -d` run on `file` with the identity file `identityFile`.
    static func ageDecrypt(_ file: [UInt8], identityFile: String) throws -> Output {
        let age = try require("age", ageInstall)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyPath = directory.appendingPathComponent("key.txt").path
        try identityFile.write(toFile: keyPath, atomically: true, encoding: .utf8)
        return try run(age, ["-d", "-i", keyPath], input: file)
    }

    static func pattern(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }
}

@Suite struct AgeTests {
    // MARK: Bech32

    @Test func bech32ReadsBIP173Vectors() throws {
        let valid = [
            "A12UEL5L", "a12uel5l",
            "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
            "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
            "11" + String(repeating: "q", count: 82) + "c8247j",
            "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
        ]
        for text in valid {
            let (prefix, _) = try Bech32.decode(text)
            #expect(prefix == String(text[..<text.lastIndex(of: "1")!]).lowercased(), "\(text)")
        }
        #expect(throws: Bech32.Failure.mixedCase) { try Bech32.decode("A12uEL5L") }
        #expect(throws: Bech32.Failure.badChecksum) { try Bech32.decode("a12uel5m") }
        #expect(throws: Bech32.Failure.emptyHumanReadablePart) { try Bech32.decode("1qzzfhee") }
        #expect(throws: Bech32.Failure.missingSeparator) { try Bech32.decode("pzry9x0s0muk") }
        #expect(throws: Bech32.Failure.tooShort) { try Bech32.decode("li1dgmt3") }
        #expect(throws: (any Error).self) { try Bech32.decode("x1b4n0q5v") }
        #expect(throws: Bech32.Failure.tooLong(length: 5000, limit: Bech32.lengthMax)) {
            try Bech32.decode(String(repeating: "q", count: 5000))
        }
        // bech32m's constant is not accepted.
        #expect(throws: Bech32.Failure.badChecksum) { try Bech32.decode("a1lqfn3a") }
    }

    @Test func bech32RoundTripsAndRefusesNonzeroPadding() throws {
        for count in [0, 1, 5, 31, 32, 33, 100] {
            let data = BootstrapTools.pattern(count, seed: UInt64(count))
            let text = try Bech32.encode(humanReadablePart: "age", data: data)
            let decoded = try Bech32.decode(text.uppercased())
            #expect(decoded.humanReadablePart == "age")
            #expect(decoded.data == data)
        }
        // One 5-bit group too many: leftover bits that are not padding.
        let text = try Bech32.encode(humanReadablePart: "x", data: [0xFF])
        let values = try Bech32.regroup([0xFF][...], from: 8, to: 5, pad: true)
        #expect(values == [31, 28])
        #expect(throws: Bech32.Failure.badPadding) { try Bech32.regroup([31, 29][...], from: 5, to: 8, pad: false) }
        #expect(try Bech32.decode(text).data == [0xFF])
    }

    // MARK: Keys

    @Test func identityFromAgeKeygenGivesItsRecipient() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        #expect(identities.count == 1)
        #expect(identities[0].recipient.encoded == recipient)
        #expect(AgeRecipient(identity: identities[0]) == (try AgeRecipient(parsing: recipient)))
        #expect(identities[0].encoded == file.split(separator: "\n").last.map(String.init))
        #expect(!identities[0].description.contains("AGE-SECRET-KEY"))
    }

    @Test func identityFileWithCommentsBlankLinesCRLFAndSeveralKeys() throws {
        let first = try BootstrapTools.keygen()
        let second = try BootstrapTools.keygen()
        let text = "# first\r\n" + first.file.replacingOccurrences(of: "\n", with: "\r\n") + "\r\n\n"
            + "# second, in lowercase\n" + second.file.lowercased()
        let identities = try AgeIdentity.parseFile(text)
        #expect(identities.map(\.recipient.encoded) == [first.recipient, second.recipient])
    }

    @Test func malformedIdentitiesAreRefused() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let key = String(file.split(separator: "\n").last!)
        var broken = Array(key)
        broken[20] = broken[20] == "Q" ? "P" : "Q"
        #expect(throws: AgeError.self) { try AgeIdentity(parsing: String(broken)) }
        #expect(throws: AgeError.self) { try AgeIdentity(parsing: recipient) }
        #expect(throws: AgeError.self) { try AgeRecipient(parsing: key) }
        do {
            _ = try AgeIdentity.parseFile("# only a comment\n\nAGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR\n")
            Issue.record("a post-quantum identity was accepted")
        } catch {
            #expect(error.message.contains("post-quantum"))
            #expect(error.message.contains("line 3"))
        }
        #expect(throws: AgeError.self) { try AgeIdentity.parseFile("# nothing here\n\n") }
    }

    // MARK: Interoperability with the real age

    @Test(arguments: [0, 1, 65_536, 65_537, 200_000])
    func decryptsWhatAgeEncrypts(size: Int) throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        let plaintext = BootstrapTools.pattern(size)
        for armored in [false, true] {
            let encrypted = try BootstrapTools.ageEncrypt(plaintext, to: [recipient], armored: armored)
            #expect(Age.isArmored(encrypted) == armored)
            let decrypted = try Age.decrypt(encrypted, identities: identities, fileBytesMax: 1 << 20)
            #expect(decrypted == plaintext, "size \(size), armored \(armored)")
        }
    }

    @Test(arguments: [0, 1, 65_536, 65_537, 200_000])
    func ageDecryptsWhatWeEncrypt(size: Int) throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let plaintext = BootstrapTools.pattern(size, seed: 11)
        for armored in [false, true] {
            let encrypted = try Age.encrypt(plaintext, to: [try AgeRecipient(parsing: recipient)], armored: armored)
            let output = try BootstrapTools.ageDecrypt(encrypted, identityFile: file)
            #expect(output.status == 0, "age -d refused our file: \(output.stderr)")
            #expect(output.stdout == plaintext, "size \(size), armored \(armored)")
            #expect(try Age.decrypt(encrypted, identities: try AgeIdentity.parseFile(file), fileBytesMax: 1 << 20) == plaintext)
        }
    }

    @Test func severalRecipientsAndIdentities() throws {
        let a = try BootstrapTools.keygen()
        let b = try BootstrapTools.keygen()
        let c = try BootstrapTools.keygen()
        let plaintext = Array("shared secret".utf8)
        let theirs = try BootstrapTools.ageEncrypt(plaintext, to: [a.recipient, b.recipient])
        #expect(try Age.decrypt(theirs, identities: try AgeIdentity.parseFile(c.file + b.file), fileBytesMax: 4096) == plaintext)
        let ours = try Age.encrypt(plaintext, to: [try AgeRecipient(parsing: a.recipient), try AgeRecipient(parsing: b.recipient)])
        let output = try BootstrapTools.ageDecrypt(ours, identityFile: b.file)
        #expect(output.status == 0 && output.stdout == plaintext, "\(output.stderr)")
    }

    @Test func unknownStanzasAreSkippedByUsAndByAge() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        var random = SplitMix64(seed: 3)
        let fileKey = Age.randomBytes(16, using: &random)
        let other = AgeStanza(type: "ssh-ed25519", arguments: ["Zm9vYg", "YmFy"], body: Age.randomBytes(32, using: &random))
        let mine = try Age.wrap(fileKey, for: try AgeRecipient(parsing: recipient), using: &random)
        let plaintext = Array("skipped".utf8)
        let encrypted = Age.assemble(fileKey: fileKey, stanzas: [other, mine], plaintext: plaintext, using: &random)
        #expect(try Age.decrypt(encrypted, identities: try AgeIdentity.parseFile(file), fileBytesMax: 4096) == plaintext)
        let output = try BootstrapTools.ageDecrypt(encrypted, identityFile: file)
        #expect(output.status == 0 && output.stdout == plaintext, "\(output.stderr)")
    }

    // MARK: Refusals

    @Test func wrongIdentityIsRefused() throws {
        let mine = try BootstrapTools.keygen()
        let theirs = try BootstrapTools.keygen()
        let encrypted = try BootstrapTools.ageEncrypt(Array("x".utf8), to: [theirs.recipient])
        do {
            _ = try Age.decrypt(encrypted, identities: try AgeIdentity.parseFile(mine.file), fileBytesMax: 4096)
            Issue.record("a file for another recipient opened")
        } catch {
            #expect(error == .noMatchingIdentity(stanzaTypes: ["X25519"]))
            #expect(error.message.contains("no identity matches any recipient of this file"))
        }
    }

    @Test func alteredFilesAreRefused() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        let encrypted = try BootstrapTools.ageEncrypt(BootstrapTools.pattern(70_000), to: [recipient])
        let payloadStart = try AgeHeader.parse(encrypted).payloadStart

        var payloadFlipped = encrypted
        payloadFlipped[payloadStart + 100] ^= 0x01
        #expect(throws: AgeError.payload("chunk 0 failed authentication (altered, or for another key)")) {
            try Age.decrypt(payloadFlipped, identities: identities, fileBytesMax: 1 << 20)
        }
        var lastChunkFlipped = encrypted
        lastChunkFlipped[lastChunkFlipped.count - 1] ^= 0x80
        #expect(throws: AgeError.self) { try Age.decrypt(lastChunkFlipped, identities: identities, fileBytesMax: 1 << 20) }

        // The stanza body (the wrapped file key) no longer opens: the stanza is not ours.
        let bodyLine = try #require(lineStart(of: 2, in: encrypted))
        var bodyFlipped = encrypted
        bodyFlipped[bodyLine] = bodyFlipped[bodyLine] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: AgeError.noMatchingIdentity(stanzaTypes: ["X25519"])) {
            try Age.decrypt(bodyFlipped, identities: identities, fileBytesMax: 1 << 20)
        }

        // The MAC line's first base64 character changed (still canonical base64).
        let macLine = try #require(lineStart(of: 3, in: encrypted))
        var macFlipped = encrypted
        macFlipped[macLine + 4] = macFlipped[macLine + 4] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: AgeError.headerMACMismatch) { try Age.decrypt(macFlipped, identities: identities, fileBytesMax: 1 << 20) }

        #expect(throws: AgeError.self) { try Age.decrypt(Array(encrypted.dropLast()), identities: identities, fileBytesMax: 1 << 20) }
        #expect(throws: AgeError.self) { try Age.decrypt(encrypted + [0], identities: identities, fileBytesMax: 1 << 20) }
        #expect(throws: AgeError.self) { try Age.decrypt(Array(encrypted.prefix(payloadStart + 10)), identities: identities, fileBytesMax: 1 << 20) }
    }

    @Test(arguments: [[UInt8](repeating: 0, count: 32), [1] + [UInt8](repeating: 0, count: 31)])
    func lowOrderEphemeralShareIsRefused(point: [UInt8]) throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let encrypted = try BootstrapTools.ageEncrypt(Array("x".utf8), to: [recipient])
        // Replace the stanza's ephemeral share (line 2 is "-> X25519 <share>").
        let start = try #require(lineStart(of: 1, in: encrypted))
        let end = try #require(encrypted[start...].firstIndex(of: 0x0A))
        let forged = Array(encrypted[..<start]) + Array("-> X25519 ".utf8) + BootstrapBase64.encode(point, padded: false)
            + Array(encrypted[end...])
        #expect(throws: AgeError.allZeroSharedSecret) {
            try Age.decrypt(forged, identities: try AgeIdentity.parseFile(file), fileBytesMax: 4096)
        }
    }

    @Test func fileOverTheLimitIsRefused() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let encrypted = try BootstrapTools.ageEncrypt(BootstrapTools.pattern(2000), to: [recipient])
        #expect(throws: AgeError.fileTooLarge(sizeBytes: encrypted.count, limitBytes: 1000)) {
            try Age.decrypt(encrypted, identities: try AgeIdentity.parseFile(file), fileBytesMax: 1000)
        }
    }

    @Test func scryptStanzaMustBeAlone() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        let encrypted = try BootstrapTools.ageEncrypt(Array("x".utf8), to: [recipient])
        let scrypt = Array("-> scrypt c2FsdHNhbHRzYWx0c2FsdA 18\nqRS0AMjdjPvZ/WT08U2KL4G+PIooA3hy38SvLpvaC1E\n".utf8)
        let afterIntro = try #require(lineStart(of: 1, in: encrypted))
        let mixed = Array(encrypted[..<afterIntro]) + scrypt + Array(encrypted[afterIntro...])
        #expect(throws: AgeError.scryptNotAlone) { try Age.decrypt(mixed, identities: identities, fileBytesMax: 4096) }
        let macLine = try #require(lineStart(of: 3, in: encrypted))
        let alone = Array(encrypted[..<afterIntro]) + scrypt + Array(encrypted[macLine...])
        do {
            _ = try Age.decrypt(alone, identities: identities, fileBytesMax: 4096)
            Issue.record("a passphrase file opened")
        } catch {
            #expect(error == .noMatchingIdentity(stanzaTypes: ["scrypt"]))
            #expect(error.message.contains("passphrase"))
        }
    }

    @Test func headerBoundsAndSyntax() throws {
        let (file, _) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        let stanza = "-> other arg\nqRS0AMjdjPvZ/WT08U2KL4G+PIooA3hy38SvLpvaC1E\n"
        let mac = "--- " + String(repeating: "A", count: 43) + "\n"
        let tooMany = "age-encryption.org/v1\n" + String(repeating: stanza, count: Age.stanzasMax + 1) + mac
        #expect(throws: AgeError.tooManyStanzas(count: Age.stanzasMax + 1, limit: Age.stanzasMax)) {
            try Age.decrypt(Array(tooMany.utf8), identities: identities, fileBytesMax: 1 << 20)
        }
        let cases: [(String, AgeError)] = [
            ("", .header("the file is empty")),
            ("age-encryption.org/v2\n" + stanza + mac, .unsupportedVersion("\"age-encryption.org/v2\"")),
            ("hello\n", .notAnAgeFile("it does not start with age-encryption.org/v1")),
            ("age-encryption.org/v1\n" + "-> X25519 " + String(repeating: "A", count: 5000) + "\n", .header("a header line is longer than 4096 bytes")),
            ("age-encryption.org/v1\n->  double-space\n\n" + mac, .invalidStanza("a stanza argument is empty or not printable ASCII: \"->  double-space\"")),
            ("age-encryption.org/v1\n-> X25519\n" + String(repeating: "A", count: 65) + "\n" + mac,
             .invalidStanza("the X25519 stanza's body line is not canonical unpadded base64 of at most 64 columns")),
            ("age-encryption.org/v1\n-> X25519 AAAA\nAB\n" + mac,
             .invalidStanza("the X25519 stanza's body line is not canonical unpadded base64 of at most 64 columns")),
            ("age-encryption.org/v1\n" + stanza + "--- short\n", .header("the MAC line is malformed: \"--- short\"")),
            ("age-encryption.org/v1\n" + stanza, .header("the header ends early (truncated)")),
        ]
        for (text, expected) in cases {
            #expect(throws: expected) { try Age.decrypt(Array(text.utf8), identities: identities, fileBytesMax: 1 << 20) }
        }
        // An X25519 stanza with the wrong shape aborts rather than being skipped.
        let badShare = "age-encryption.org/v1\n-> X25519 AAAA\n" + String(repeating: "A", count: 43) + "\n" + mac
        #expect(throws: AgeError.invalidStanza("an X25519 stanza needs exactly one argument, a 32-byte ephemeral share")) {
            try Age.decrypt(Array(badShare.utf8), identities: identities, fileBytesMax: 1 << 20)
        }
    }

    @Test func streamChunkRules() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        var random = SplitMix64(seed: 9)
        let fileKey = Age.randomBytes(16, using: &random)
        let stanza = try Age.wrap(fileKey, for: try AgeRecipient(parsing: recipient), using: &random)
        // The header of a file with an empty payload: drop its nonce and empty final chunk.
        let header = Array(Age.assemble(fileKey: fileKey, stanzas: [stanza], plaintext: [], using: &random).dropLast(32))
        let nonce = Age.randomBytes(16, using: &random)
        let key = Age.payloadKey(fileKey, nonce: nonce)
        let full = BootstrapTools.pattern(Age.chunkBytes)
        func chunk(_ plaintext: [UInt8], _ counter: UInt64, last: Bool) -> [UInt8] {
            Age.seal(plaintext, key: key, nonce: Age.chunkNonce(counter, last: last)) ?? []
        }
        func decrypt(_ chunks: [UInt8]) throws(AgeError) -> [UInt8] {
            try Age.decrypt(header + nonce + chunks, identities: identities, fileBytesMax: 1 << 20)
        }
        #expect(try decrypt(chunk([], 0, last: true)) == [])
        #expect(try decrypt(chunk(full, 0, last: true)) == full)
        #expect(try decrypt(chunk(full, 0, last: false) + chunk([7], 1, last: true)) == full + [7])
        #expect(throws: AgeError.payload("the final chunk is empty, which only an empty file may have")) {
            try decrypt(chunk(full, 0, last: false) + chunk([], 1, last: true))
        }
        #expect(throws: AgeError.payload("the file ends without its final chunk (truncated)")) { try decrypt(chunk(full, 0, last: false)) }
        #expect(throws: AgeError.payload("data follows the final chunk")) { try decrypt(chunk(full, 0, last: true) + [1, 2, 3]) }
        #expect(throws: AgeError.self) { try decrypt(chunk([1], 0, last: false)) }
        #expect(throws: AgeError.self) { try decrypt(chunk([1], 1, last: true)) }
        #expect(throws: AgeError.payload("the last chunk is shorter than its 16-byte tag (truncated)")) { try decrypt([]) }
    }

    // MARK: Armor

    @Test func armorIsStrict() throws {
        let (file, recipient) = try BootstrapTools.keygen()
        let identities = try AgeIdentity.parseFile(file)
        let plaintext = BootstrapTools.pattern(300)
        let armored = String(decoding: try BootstrapTools.ageEncrypt(plaintext, to: [recipient], armored: true), as: UTF8.self)
        func open(_ text: String) throws(AgeError) -> [UInt8] { try Age.decrypt(Array(text.utf8), identities: identities, fileBytesMax: 1 << 20) }
        #expect(try open("\n  \n" + armored + "\n\n") == plaintext)
        #expect(try open(armored.replacingOccurrences(of: "\n", with: "\r\n")) == plaintext)
        #expect(throws: AgeError.armor("data follows the armor's END line")) { try open(armored + "x") }
        #expect(throws: AgeError.armor("an empty line inside the armor")) {
            try open(armored.replacingOccurrences(of: "-----\n", with: "-----\n\n", options: [], range: armored.range(of: "-----\n")))
        }
        let lines = armored.split(separator: "\n").map(String.init)
        let joined = ([lines[0], lines[1] + lines[2]] + lines[3...]).joined(separator: "\n") + "\n"
        #expect(throws: AgeError.armor("an armor line is longer than 64 columns")) { try open(joined) }
        #expect(throws: AgeError.armor("a short armor line is not followed by the END line")) { try open(lines.dropLast().joined(separator: "\n") + "\n") }
        #expect(throws: AgeError.armor("the armor has no END line (truncated)")) { try open(lines.prefix(2).joined(separator: "\n") + "\n") }
        let badCharacter = ([lines[0], "*" + lines[1].dropFirst()] + lines[2...]).joined(separator: "\n") + "\n"
        #expect(throws: AgeError.armor("an armor line is not canonical padded base64")) { try open(badCharacter) }
        let ours = String(decoding: try Age.encrypt(plaintext, to: [try AgeRecipient(parsing: recipient)], armored: true), as: UTF8.self)
        #expect(ours.hasPrefix("-----BEGIN AGE ENCRYPTED FILE-----\n") && ours.hasSuffix("\n-----END AGE ENCRYPTED FILE-----\n"))
        #expect(ours.split(separator: "\n").allSatisfy { $0.count <= 64 || $0.hasPrefix("-----") })
    }

    @Test func noIdentitiesOrRecipients() throws {
        #expect(throws: AgeError.noIdentities) { try Age.decrypt(Array("age-encryption.org/v1\n".utf8), identities: [], fileBytesMax: 100) }
        #expect(throws: AgeError.noRecipients) { try Age.encrypt([1], to: []) }
    }

    /// Where line `index` (0-based) of `bytes` starts.
    func lineStart(of index: Int, in bytes: [UInt8]) -> Int? {
        var start = 0
        for _ in 0..<index {
            guard let newline = bytes[start...].firstIndex(of: 0x0A) else { return nil }
            start = newline + 1
        }
        return start
    }
}
