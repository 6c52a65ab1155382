import AspenCore
import AspenForge
import AspenKV
import Testing

/// Values of every forge wire type, with their decoders: what the tests below encode, cut short,
/// extend and corrupt.
enum ForgeSamples {
    static let sha1 = String(repeating: "3b18e512", count: 5)
    static let sha256 = String(repeating: "0123456789abcdef", count: 4)
    static let zero = String(repeating: "0", count: 40)
    static let zero256 = String(repeating: "0", count: 64)

    static let record = RepoRecord(name: "team/app", description: "ünïcode description", defaultBranch: "trunk", createdMs: 1_796_000_000_000)
    static let records = [record, RepoRecord(name: "demo"), RepoRecord(name: "a.b_c-d", description: "", defaultBranch: "dev/next", createdMs: -1)]

    static let updates = [
        RefUpdate(old: zero, new: sha1, name: "refs/heads/main"), RefUpdate(old: sha256, new: zero256, name: "refs/tags/v1.0"),
        RefUpdate(old: sha1, new: String(repeating: "f", count: 40), name: "refs/heads/ünïcode/x"),
    ]
    static let pushes = [
        PushRecord(
            updates: updates, packs: ["pack-" + sha1, "pack-" + sha256], pusher: String(repeating: "c0", count: 32), nowMs: 1_796_000_000_000,
            node: 3),
        PushRecord(updates: [], packs: [], pusher: "", nowMs: -5, node: .max),
    ]

    /// Every case of `ForgeCall`.
    static let calls: [ForgeCall] = [.create(record), .create(RepoRecord(name: "demo")), .list(prefix: ""), .list(prefix: "team/"), .show("demo"), .delete("team/app"), .refs("a.b_c-d")]
    /// Every case of `ForgeAnswer`.
    static let answers: [ForgeAnswer] = [
        .done, .repos([]), .repos(records), .refs([]), .refs([(name: "refs/heads/main", id: sha1), (name: "refs/tags/v1.0", id: sha256)]),
    ]
    static let tunnels = [
        GitTunnelRequest(
            repo: "team/app", service: .uploadPack, protocolVersion: 2, proof: Array(repeating: 0xC0, count: 32),
            credential: Array(repeating: 7, count: 300)),
        GitTunnelRequest(repo: "demo", service: .receivePack, protocolVersion: 0),
        GitTunnelRequest(repo: "demo", service: .uploadPack, protocolVersion: 1, proof: [1], credential: []),
    ]
    static let hooks = [
        ForgeHookRequest(token: "t0k3n", quarantine: "/var/lib/aspen/forge/cache/incoming-1", updates: updates, pushOptions: ["ci.skip", ""]),
        ForgeHookRequest(token: "", quarantine: "", updates: []),
    ]
    static let hookAnswers = [
        ForgeHookAnswer(accepted: true, message: ""),
        ForgeHookAnswer(accepted: false, message: "rejected: a ref changed while this push ran; fetch first"),
    ]

    /// Each wire type's valid encodings and its decoder (with the standard limits).
    static func decoders() -> [(kind: String, encodings: [[UInt8]], decode: ([UInt8]) throws -> Void)] {
        [
            ("RepoRecord", records.map(\.encoded), { _ = try RepoRecord(decoding: $0) }),
            ("PushRecord", pushes.map(\.encoded), { _ = try PushRecord(decoding: $0) }),
            ("ForgeCall", calls.map(\.encoded), { _ = try ForgeCall(decoding: $0) }),
            ("ForgeAnswer", answers.map(\.encoded), { _ = try ForgeAnswer(decoding: $0) }),
            ("GitTunnelRequest", tunnels.map(\.encoded), { _ = try GitTunnelRequest(decoding: $0) }),
            ("ForgeHookRequest", hooks.map(\.encoded), { _ = try ForgeHookRequest(decoding: $0) }),
            ("ForgeHookAnswer", hookAnswers.map(\.encoded), { _ = try ForgeHookAnswer(decoding: $0) }),
        ]
    }

    /// The error `decode` refuses `bytes` with, or nil if it accepts them.
    static func refusal(_ bytes: [UInt8], _ decode: ([UInt8]) throws -> Void) -> (any Error)? {
        do {
            try decode(bytes)
            return nil
        } catch {
            return error
        }
    }

    /// A tunnel header written field by field, so that any field can hold what the encoder would not write.
    static func tunnelHeader(
        header: UInt8 = GitTunnelFrame.header, version: UInt8 = 1, repo: String = "demo", service: String = "git-upload-pack",
        protocolVersion: UInt8 = 2, proof: [UInt8] = [], credential: [UInt8] = []
    ) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(header)
        writer.write(version)
        writer.writeString(repo)
        writer.writeString(service)
        writer.write(protocolVersion)
        writer.writeBytes(proof)
        writer.writeBytes(credential)
        return writer.bytes
    }

    /// A hook request written by hand with `count` ref updates (the encoder takes any number).
    static func hookRequest(updates count: Int) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeString("t0k3n")
        writer.writeString("/tmp/quarantine")
        writer.writeVarint(UInt64(count))
        for index in 0..<count {
            writer.writeString(zero)
            writer.writeString(sha1)
            writer.writeString("refs/heads/b\(index)")
        }
        writer.writeVarint(0)
        return writer.bytes
    }

    /// UInt64.max as a varint: a count no bound admits.
    static let hugeVarint: [UInt8] = Array(repeating: 0xFF, count: 9) + [0x01]
    /// A varint of more than 64 bits.
    static let overlongVarint: [UInt8] = Array(repeating: 0xFF, count: 10) + [0x01]
}

@Suite("Forge wire")
struct ForgeWireTests {
    @Test("records, every call and answer, tunnel headers and hook messages survive their encodings")
    func roundTrips() throws {
        for record in ForgeSamples.records {
            let decoded = try RepoRecord(decoding: record.encoded)
            #expect(decoded == record)
            #expect(decoded.encoded == record.encoded)
        }
        for push in ForgeSamples.pushes {
            let decoded = try PushRecord(decoding: push.encoded)
            #expect(decoded == push)
            #expect(decoded.encoded == push.encoded)
        }
        for call in ForgeSamples.calls {
            let decoded = try ForgeCall(decoding: call.encoded)
            #expect(decoded == call)
            #expect(decoded.repo == call.repo)
        }
        for answer in ForgeSamples.answers {
            let decoded = try ForgeAnswer(decoding: answer.encoded)
            #expect(decoded == answer)
            #expect(decoded.encoded == answer.encoded)
        }
        for tunnel in ForgeSamples.tunnels { #expect(try GitTunnelRequest(decoding: tunnel.encoded) == tunnel) }
        for hook in ForgeSamples.hooks { #expect(try ForgeHookRequest(decoding: hook.encoded) == hook) }
        for answer in ForgeSamples.hookAnswers { #expect(try ForgeHookAnswer(decoding: answer.encoded) == answer) }

        // The samples hold every case: each call and answer tag, both services, every protocol version.
        #expect(Set(ForgeSamples.calls.map { $0.encoded[0] }) == [1, 2, 3, 4, 5])
        #expect(Set(ForgeSamples.answers.map { $0.encoded[0] }) == [1, 2, 3])
        #expect(Set(ForgeSamples.tunnels.map(\.service)) == [.uploadPack, .receivePack])
        #expect(Set(ForgeSamples.tunnels.map(\.protocolVersion)) == [0, 1, 2])
        #expect(ForgeSamples.tunnels.allSatisfy { $0.encoded.first == GitTunnelFrame.header })
        #expect(ForgeCall.list(prefix: "").repo == "")
        #expect(ForgeCall.create(ForgeSamples.record).repo == "team/app")
    }

    @Test("answers compare by every ref's name and id, in order")
    func answerEquality() {
        let refs: [(name: String, id: String)] = [(name: "refs/heads/main", id: ForgeSamples.sha1), (name: "refs/heads/dev", id: ForgeSamples.sha256)]
        #expect(ForgeAnswer.refs(refs) == .refs(refs))
        #expect(ForgeAnswer.refs(refs) != .refs(Array(refs.reversed())))
        #expect(ForgeAnswer.refs(refs) != .refs([(name: "refs/heads/main", id: ForgeSamples.sha256), refs[1]]))
        #expect(ForgeAnswer.refs([]) != .repos([]))
        #expect(ForgeAnswer.done != .repos([]))
    }

    @Test("every proper prefix of every valid encoding is refused with a decoding error, and so is a trailing byte")
    func truncatedAndTrailing() {
        for (kind, encodings, decode) in ForgeSamples.decoders() {
            for encoding in encodings {
                let refusal = ForgeSamples.refusal(encoding, decode)
                let accepted = refusal == nil
                #expect(accepted, "\(kind): a valid encoding of \(encoding.count) bytes is refused: \(String(describing: refusal))")
                let notRefused = (0..<encoding.count).filter { !(ForgeSamples.refusal(Array(encoding.prefix($0)), decode) is DecodingError) }
                #expect(notRefused.isEmpty, "\(kind): prefixes of \(notRefused) of \(encoding.count) bytes were not refused with a DecodingError")
                for extra: [UInt8] in [[0], [0xFF, 0xFF]] {
                    let error = ForgeSamples.refusal(encoding + extra, decode) as? DecodingError
                    #expect(error == DecodingError.trailingBytes(extra.count), "\(kind): \(extra.count) trailing bytes: \(String(describing: error))")
                }
            }
        }
    }

    @Test("unknown versions and tags are refused")
    func unknownVersionsAndTags() {
        func replacingFirst(_ bytes: [UInt8], with byte: UInt8) -> [UInt8] { [byte] + bytes.dropFirst() }
        for version: UInt8 in [0, 2, 0xFF] {
            #expect(throws: DecodingError.self) { try RepoRecord(decoding: replacingFirst(ForgeSamples.record.encoded, with: version)) }
            #expect(throws: DecodingError.self) { try PushRecord(decoding: replacingFirst(ForgeSamples.pushes[0].encoded, with: version)) }
            #expect(throws: DecodingError.self) { try ForgeHookRequest(decoding: replacingFirst(ForgeSamples.hooks[0].encoded, with: version)) }
            #expect(throws: DecodingError.self) { try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(version: version)) }
        }
        for tag: UInt8 in [0, 17, 0x7F, 0xFF] {
            #expect(throws: DecodingError.self) { try ForgeCall(decoding: [tag]) }
            #expect(throws: DecodingError.self) { try ForgeCall(decoding: replacingFirst(ForgeCall.show("demo").encoded, with: tag)) }
        }
        for tag: UInt8 in [0, 11, 0xFF] {
            #expect(throws: DecodingError.self) { try ForgeAnswer(decoding: [tag]) }
            #expect(throws: DecodingError.self) { try ForgeAnswer(decoding: replacingFirst(ForgeAnswer.refs([]).encoded, with: tag)) }
        }
        // A tunnel's first frame must be a header, not any other frame kind.
        for kind in [GitTunnelFrame.data, GitTunnelFrame.end, GitTunnelFrame.ready, GitTunnelFrame.refused, 0, 0xFF] {
            #expect(throws: DecodingError.self) { try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(header: kind)) }
        }
        // A hook answer's first byte is a boolean: 0 or 1.
        for byte: UInt8 in [2, 0xFF] {
            #expect(throws: DecodingError.self) { try ForgeHookAnswer(decoding: replacingFirst(ForgeSamples.hookAnswers[0].encoded, with: byte)) }
        }
    }

    @Test("a tunnel header is refused for git protocol version 3 and up, an unknown service, or strings that are not UTF-8")
    func tunnelRefusals() throws {
        // The hand-written header decodes when every field is right.
        let good = try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(proof: [1, 2], credential: [3]))
        #expect(good == GitTunnelRequest(repo: "demo", service: .uploadPack, protocolVersion: 2, proof: [1, 2], credential: [3]))
        #expect(try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(service: "git-receive-pack")).service == .receivePack)

        let version3 = GitTunnelRequest(repo: "demo", service: .uploadPack, protocolVersion: 3).encoded
        let error = #expect(throws: DecodingError.self) { try GitTunnelRequest(decoding: version3) }
        #expect(error?.description.contains("protocol version 3") == true, "\(String(describing: error))")
        for version: UInt8 in [3, 9, 0xFF] {
            #expect(throws: DecodingError.self) { try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(protocolVersion: version)) }
        }

        for service in ["git-upload-archive", "", "GIT-UPLOAD-PACK", "git-upload-pack ", "upload-pack"] {
            let refused = #expect(throws: DecodingError.self) { try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(service: service)) }
            #expect(refused?.description.contains("service") == true, "\(service): \(String(describing: refused))")
        }
        // A service string past its bound (32 bytes) is refused before it is compared.
        #expect(throws: DecodingError.lengthTooLarge(length: 33, limit: 32)) {
            try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(service: String(repeating: "g", count: 33)))
        }

        var writer = ByteWriter()
        writer.write(GitTunnelFrame.header)
        writer.write(UInt8(1))
        writer.writeBytes([0x64, 0xFF, 0x6F])
        let notUTF8 = writer.bytes
        #expect(throws: DecodingError.invalid("string is not UTF-8")) { try GitTunnelRequest(decoding: notUTF8) }
        #expect(throws: DecodingError.invalid("string is not UTF-8")) { try ForgeCall(decoding: [3, 2, 0xC3, 0x28]) }
    }

    @Test("names, strings and counts past their bounds are refused, naming the length and the bound")
    func lengthLimits() throws {
        let limits = Limits.standard
        let nameMax = limits.forgeRepoNameBytesMax
        let atLimit = String(repeating: "a", count: nameMax)
        let overLimit = String(repeating: "a", count: nameMax + 1)
        let tooLong = DecodingError.lengthTooLarge(length: UInt64(nameMax + 1), limit: nameMax)
        for call in [ForgeCall.show(atLimit), .delete(atLimit), .refs(atLimit), .create(RepoRecord(name: atLimit))] {
            #expect(try ForgeCall(decoding: call.encoded) == call)
        }
        #expect(throws: tooLong) { try ForgeCall(decoding: ForgeCall.show(overLimit).encoded) }
        #expect(throws: tooLong) { try ForgeCall(decoding: ForgeCall.delete(overLimit).encoded) }
        #expect(throws: tooLong) { try ForgeCall(decoding: ForgeCall.refs(overLimit).encoded) }
        #expect(throws: tooLong) { try ForgeCall(decoding: ForgeCall.create(RepoRecord(name: overLimit)).encoded) }
        #expect(throws: tooLong) { try RepoRecord(decoding: RepoRecord(name: overLimit).encoded) }
        #expect(throws: tooLong) { try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(repo: overLimit)) }
        // A smaller bound is the caller's to give.
        var tight = Limits()
        tight.forgeRepoNameBytesMax = 3
        #expect(throws: DecodingError.lengthTooLarge(length: 4, limit: 3)) { try ForgeCall(decoding: ForgeCall.show("demo").encoded, limits: tight) }

        let description = String(repeating: "d", count: limits.forgeDescriptionBytesMax + 1)
        #expect(throws: DecodingError.self) { try RepoRecord(decoding: RepoRecord(name: "demo", description: description).encoded) }
        let branch = String(repeating: "b", count: limits.forgeRefNameBytesMax + 1)
        #expect(throws: DecodingError.self) { try RepoRecord(decoding: RepoRecord(name: "demo", defaultBranch: branch).encoded) }
        // A create's record is bounded as a whole before it is read.
        #expect(throws: DecodingError.lengthTooLarge(length: 5000, limit: 4096)) { try ForgeCall(decoding: [1, 0x88, 0x27]) }

        // Tunnel proofs and credentials.
        #expect(throws: DecodingError.lengthTooLarge(length: 65, limit: 64)) {
            try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(proof: Array(repeating: 1, count: 65)))
        }
        #expect(throws: DecodingError.self) {
            try GitTunnelRequest(decoding: ForgeSamples.tunnelHeader(credential: Array(repeating: 1, count: 64 * 1024 + 1)))
        }

        // A hook request may carry as many updates as a repository has refs (the node refuses a
        // push over forgeRefUpdatesMax by name); more is refused while decoding.
        let updatesMax = limits.forgeRefUpdatesMax
        let hookMax = limits.forgeRefsMax
        #expect(try ForgeHookRequest(decoding: ForgeSamples.hookRequest(updates: 2)).updates.count == 2)
        #expect(try ForgeHookRequest(decoding: ForgeSamples.hookRequest(updates: updatesMax + 1)).updates.count == updatesMax + 1)
        #expect(throws: DecodingError.lengthTooLarge(length: UInt64(hookMax + 1), limit: hookMax)) {
            try ForgeHookRequest(decoding: ForgeSamples.hookRequest(updates: hookMax + 1))
        }
        let options = ForgeHookRequest(token: "t", quarantine: "q", updates: [], pushOptions: Array(repeating: "o", count: 65))
        #expect(throws: DecodingError.lengthTooLarge(length: 65, limit: 64)) { try ForgeHookRequest(decoding: options.encoded) }

        // A push record holds at most forgeRefUpdatesMax updates.
        let update = RefUpdate(old: ForgeSamples.zero, new: ForgeSamples.sha1, name: "refs/heads/main")
        let full = PushRecord(updates: Array(repeating: update, count: updatesMax), packs: [], pusher: "", nowMs: 0, node: 1)
        #expect(try PushRecord(decoding: full.encoded) == full)
        var over = full
        over.updates.append(update)
        #expect(throws: DecodingError.lengthTooLarge(length: UInt64(updatesMax + 1), limit: updatesMax)) { try PushRecord(decoding: over.encoded) }
        // An object id longer than SHA-256's 64 hex digits.
        var longID = full
        longID.updates = [RefUpdate(old: ForgeSamples.zero256 + "0", new: ForgeSamples.sha256, name: "refs/heads/main")]
        #expect(throws: DecodingError.lengthTooLarge(length: 65, limit: 64)) { try PushRecord(decoding: longID.encoded) }

        // An answer holds at most forgeRefsMax refs.
        var refsAnswer = ByteWriter()
        refsAnswer.write(UInt8(3))
        refsAnswer.writeVarint(UInt64(limits.forgeRefsMax + 1))
        let refsBytes = refsAnswer.bytes
        #expect(throws: DecodingError.lengthTooLarge(length: UInt64(limits.forgeRefsMax + 1), limit: limits.forgeRefsMax)) {
            try ForgeAnswer(decoding: refsBytes)
        }
    }

    @Test("a huge count or length is refused before anything is allocated, and a varint past 64 bits is malformed")
    func hugeCounts() {
        let huge = ForgeSamples.hugeVarint
        let limits = Limits.standard
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: 100_000)) { try ForgeAnswer(decoding: [2] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRefsMax)) { try ForgeAnswer(decoding: [3] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRefUpdatesMax)) { try PushRecord(decoding: [1] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRefsMax)) {
            try ForgeHookRequest(decoding: [1, 0, 0] + huge)
        }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: 64)) { try ForgeHookRequest(decoding: [1, 0, 0, 0] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRepoNameBytesMax)) { try ForgeCall(decoding: [3] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: 4096)) { try ForgeCall(decoding: [1] + huge) }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRepoNameBytesMax)) {
            try RepoRecord(decoding: [1] + huge)
        }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: limits.forgeRepoNameBytesMax)) {
            try GitTunnelRequest(decoding: [GitTunnelFrame.header, 1] + huge)
        }
        #expect(throws: DecodingError.lengthTooLarge(length: .max, limit: 64 * 1024)) { try ForgeHookAnswer(decoding: [1] + huge) }
        // A count that claims more entries than there are bytes ends as truncated input, not a trap.
        #expect(throws: DecodingError.self) { try ForgeAnswer(decoding: [3, 0x90, 0x4E]) }
        #expect(throws: DecodingError.self) { try PushRecord(decoding: [1, 0xF4, 0x03]) }

        let overlong = ForgeSamples.overlongVarint
        #expect(throws: DecodingError.varintOverflow) { try ForgeAnswer(decoding: [3] + overlong) }
        #expect(throws: DecodingError.varintOverflow) { try PushRecord(decoding: [1] + overlong) }
        #expect(throws: DecodingError.varintOverflow) { try ForgeCall(decoding: [4] + overlong) }
        // A record's time and a push's node: varints past 64 bits.
        var record = ByteWriter()
        record.write(UInt8(1))
        for _ in 0..<3 { record.writeString("") }
        let recordBytes = record.bytes + overlong
        #expect(throws: DecodingError.varintOverflow) { try RepoRecord(decoding: recordBytes) }
    }
}

@Suite("Forge names and keys")
struct ForgeNamesTests {
    /// What validating `name` as a repository name says: "accepted" or the refusal.
    static func repoRefusal(_ name: String) -> String {
        do {
            try ForgeNames.validate(repo: name)
            return "accepted"
        } catch {
            return error.description
        }
    }

    static func refRefusal(_ name: String) -> String {
        do {
            try ForgeNames.validate(ref: name)
            return "accepted"
        } catch {
            return error.description
        }
    }

    @Test("repository names: segments of letters, digits, '.', '_' and '-', each refusal naming its rule or bound")
    func repositoryNames() {
        for name in ["demo", "team/app", "a.b_c-d", "A9", "team/sub/app", "x.gitx", "a-", String(repeating: "a", count: 100)] {
            #expect(Self.repoRefusal(name) == "accepted", "\(name)")
        }
        let refusals: [(name: String, rule: String)] = [
            ("", "must not be empty"),
            ("a//b", "empty segment"),
            ("/a", "empty segment"),
            ("a/", "empty segment"),
            ("/", "empty segment"),
            (".hidden", "must not start with '.' or '-'"),
            ("team/.x", "must not start with '.' or '-'"),
            ("..", "must not start with '.' or '-'"),
            ("-x", "must not start with '.' or '-'"),
            ("x.git", "must not end in .git or .lock"),
            ("x.lock", "must not end in .git or .lock"),
            ("team/app.git", "must not end in .git or .lock"),
            ("a b", "only letters, digits"),
            ("ä", "only letters, digits"),
            ("a\u{0}b", "only letters, digits"),
            ("a\\b", "only letters, digits"),
            ("a:b", "only letters, digits"),
        ]
        for (name, rule) in refusals {
            let message = Self.repoRefusal(name)
            #expect(message.contains(rule), "\(name): \(message)")
        }
        let long = Self.repoRefusal(String(repeating: "a", count: 101))
        #expect(long.contains("forgeRepoNameBytesMax (100)") && long.contains("101 bytes"), "\(long)")
        // The bound is counted in bytes: 51 two-byte letters are 102.
        #expect(Self.repoRefusal(String(repeating: "é", count: 51)).contains("forgeRepoNameBytesMax"))
        var tight = Limits()
        tight.forgeRepoNameBytesMax = 3
        #expect(throws: ForgeError.self) { try ForgeNames.validate(repo: "demo", limits: tight) }
    }

    @Test("ref names as git takes them: under refs/, within forgeRefNameBytesMax")
    func refNames() {
        let accepted = [
            "refs/heads/main", "refs/tags/v1.0", "refs/heads/feature/x-1", "refs/heads/ünïcode", "refs/heads/a.b", "refs/heads/@",
            "refs/heads/a@b", "refs/heads/x.lockx", "refs/x", "refs/heads/" + String(repeating: "x", count: 255 - 11),
        ]
        for name in accepted { #expect(Self.refRefusal(name) == "accepted", "\(name)") }
        let refused = [
            "main", "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/a b", "refs/heads/a~1", "refs/heads/", "refs/heads/a//b",
            "refs/heads/@{x}", "", "refs", "refs/", "heads/refs/x", "/refs/heads/x", "refs/heads/a^", "refs/heads/a:b", "refs/heads/a?",
            "refs/heads/a*", "refs/heads/a[b", "refs/heads/a\\b", "refs/heads/a\tb", "refs/heads/a\u{7F}", "refs/heads/a\u{0}",
        ]
        for name in refused {
            let message = Self.refRefusal(name)
            #expect(message.contains("is not a valid ref name"), "\(name): \(message)")
        }
        let long = Self.refRefusal("refs/heads/" + String(repeating: "x", count: 255 - 10))
        #expect(long.contains("forgeRefNameBytesMax (255)") && long.contains("256 bytes"), "\(long)")
    }

    @Test("ref names: git's component rules, applied to bytes as git applies them")
    func refNameComponents() {
        // git check-ref-format: no component starts with '.' or ends in .lock, and the name does
        // not end in '.'; a combining mark after ".." does not make the dots something else.
        for name in [
            "refs/heads/.hidden", "refs/heads/a/.b", "refs/.x/y", "refs/heads/x.lock/y", "refs/heads/main.", "refs/heads/a..\u{301}b",
            "refs/heads/a//\u{301}b", "refs/heads/a@{\u{301}",
        ] {
            let message = Self.refRefusal(name)
            #expect(message.contains("is not a valid ref name"), "\(name): \(message)")
        }
    }

    @Test("object ids are 40 or 64 lower-case hex digits; zero ids of either length are zero")
    func objectIDs() {
        for id in [ForgeSamples.sha1, ForgeSamples.sha256, ForgeSamples.zero, ForgeSamples.zero256, String(repeating: "f", count: 40)] {
            #expect(ForgeNames.isObjectID(id), "\(id)")
        }
        for id in [
            "", String(ForgeSamples.sha1.dropLast()), ForgeSamples.sha1 + "0", String(ForgeSamples.sha256.dropLast()), ForgeSamples.sha256 + "0",
            ForgeSamples.sha1.uppercased(), String(repeating: "g", count: 40), String(repeating: "0", count: 39) + " ",
            String(repeating: "0", count: 38) + "é",
        ] {
            #expect(!ForgeNames.isObjectID(id), "\(id)")
        }
        #expect(ForgeNames.isZero(ForgeSamples.zero))
        #expect(ForgeNames.isZero(ForgeSamples.zero256))
        #expect(!ForgeNames.isZero(ForgeSamples.sha1))
        #expect(!ForgeNames.isZero(String(repeating: "0", count: 39) + "1"))
    }

    @Test("a ref update needs two object ids of one length and a valid ref name")
    func refUpdates() {
        func refusal(_ update: RefUpdate) -> String {
            do {
                try update.validate()
                return "accepted"
            } catch {
                return error.description
            }
        }
        for update in ForgeSamples.updates + [RefUpdate(old: ForgeSamples.sha256, new: ForgeSamples.sha256, name: "refs/tags/v1.0")] {
            #expect(refusal(update) == "accepted", "\(update)")
        }
        let bad = [
            RefUpdate(old: ForgeSamples.zero, new: ForgeSamples.sha256, name: "refs/heads/main"),
            RefUpdate(old: ForgeSamples.sha256, new: ForgeSamples.zero, name: "refs/heads/main"),
            RefUpdate(old: ForgeSamples.zero, new: "not-hex", name: "refs/heads/main"),
            RefUpdate(old: String(repeating: "z", count: 40), new: ForgeSamples.sha1, name: "refs/heads/main"),
            RefUpdate(old: ForgeSamples.zero, new: ForgeSamples.sha1.uppercased(), name: "refs/heads/main"),
            RefUpdate(old: "", new: "", name: "refs/heads/main"),
        ]
        for update in bad {
            #expect(refusal(update).contains("is not a git object id"), "\(update): \(refusal(update))")
        }
        let badName = refusal(RefUpdate(old: ForgeSamples.zero, new: ForgeSamples.sha1, name: "refs/heads/a..b"))
        #expect(badName.contains("is not a valid ref name"), "\(badName)")
    }

    @Test("forge errors carry their code across the wire")
    func errorCodes() {
        let errors: [ForgeError] = [.badInput("b"), .notFound("n"), .exists("e"), .conflict("c"), .unavailable("u"), .failed("f")]
        #expect(Set(errors.map(\.code)).count == errors.count)
        for error in errors {
            #expect(ForgeError(code: error.code, message: error.description) == error)
        }
        #expect(ForgeError(code: "no-such-code", message: "m") == .failed("m"))
    }

    /// The keys `name`'s contents range spans, as a key range.
    static func contentsBounds(_ name: String) -> KeyBounds {
        let range = ForgeKeys.contents(name).range
        return KeyBounds(start: range.start, end: range.end)
    }

    @Test("a repository's refs, packs and push lie in its contents range, and in no other repository's")
    func contentsRanges() {
        #expect(!Self.contentsBounds("a").contains(ForgeKeys.ref("ab", "refs/heads/main")))
        #expect(!Self.contentsBounds("ab").contains(ForgeKeys.ref("a", "refs/heads/main")))
        #expect(Self.contentsBounds("a").contains(ForgeKeys.ref("a", "refs/heads/main")))

        let names = ["a", "ab", "a/b", "a.b", "team", "team/app", "team/app2", "b", "a\u{0}", "a\u{0}b"]
        for name in names {
            let own = [
                ForgeKeys.ref(name, "refs/heads/main"), ForgeKeys.ref(name, "refs/tags/v1.0"), ForgeKeys.pack(name, "pack-" + ForgeSamples.sha1),
                ForgeKeys.push(name),
            ]
            let bounds = Self.contentsBounds(name)
            for key in own {
                #expect(bounds.contains(key), "\(name): its own key \(key) is outside its contents range")
                #expect(ForgeKeys.contents(name).contains(key))
            }
            // The record is not among the contents (deleting the contents leaves it), but among the records.
            #expect(!bounds.contains(ForgeKeys.repo(name)))
            let repos = ForgeKeys.repos.range
            #expect(KeyBounds(start: repos.start, end: repos.end).contains(ForgeKeys.repo(name)))
            for key in own { #expect(!KeyBounds(start: repos.start, end: repos.end).contains(key)) }
            for other in names where other != name {
                let otherBounds = Self.contentsBounds(other)
                for key in own {
                    #expect(!otherBounds.contains(key), "\(name)'s key \(key) lies in \(other)'s contents range")
                    // A subspace's `contains` is a byte-prefix test, wider than its range: "a"'s
                    // prefix starts the keys of "a\0" (a NUL is 00 FF). Names with a NUL are
                    // refused, and the range is what reads and deletes use.
                    if !other.contains("\u{0}") && !name.contains("\u{0}") {
                        #expect(!ForgeKeys.contents(other).contains(key), "\(name)'s key lies under \(other)'s prefix")
                    }
                }
                #expect(ForgeKeys.repo(name) != ForgeKeys.repo(other))
            }
        }
    }

    @Test("the name of a ref or pack comes back from its key, and only from a key of that kind and repository")
    func namesFromKeys() {
        for ref in ["refs/heads/main", "refs/tags/v1.0", "refs/heads/ünïcode/x", "refs/heads/a\u{0}b"] {
            #expect(ForgeKeys.name(in: ForgeKeys.refs("team/app"), ForgeKeys.ref("team/app", ref)) == ref)
            #expect(Self.contentsBounds("team/app").contains(ForgeKeys.ref("team/app", ref)))
        }
        let pack = "pack-" + ForgeSamples.sha1
        #expect(ForgeKeys.name(in: ForgeKeys.packs("demo"), ForgeKeys.pack("demo", pack)) == pack)
        #expect(ForgeKeys.name(in: ForgeKeys.refs("demo"), ForgeKeys.pack("demo", pack)) == nil)
        #expect(ForgeKeys.name(in: ForgeKeys.packs("demo"), ForgeKeys.ref("demo", "refs/heads/main")) == nil)
        #expect(ForgeKeys.name(in: ForgeKeys.refs("demo"), ForgeKeys.push("demo")) == nil)
        #expect(ForgeKeys.name(in: ForgeKeys.refs("a"), ForgeKeys.ref("ab", "refs/heads/main")) == nil)
        #expect(ForgeKeys.name(in: ForgeKeys.refs("demo"), ForgeKeys.refs("demo").prefix) == nil)
        #expect(ForgeKeys.name(in: ForgeKeys.refs("demo"), ForgeKeys.refs("demo").prefix + [0xFF]) == nil)
    }
}
