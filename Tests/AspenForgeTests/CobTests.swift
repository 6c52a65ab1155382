import AspenCore
import Crypto
import Testing

@testable import AspenForge

@Suite("Collaborative objects")
struct CobTests {
    let alice = Curve25519.Signing.PrivateKey()
    let bob = Curve25519.Signing.PrivateKey()

    func change(_ key: Curve25519.Signing.PrivateKey, object: CobID?, parents: [CobID], _ operations: [CobOperation], time: UInt64) -> CobChange {
        CobChange(type: .issue, object: object, parents: parents, operations: operations, author: Array(key.publicKey.rawRepresentation), time: time)
    }

    /// A small issue by alice: opened, then bob and alice comment from the same head, bob and
    /// alice retitle from the same heads, alice labels.
    func history() throws -> [CobID: CobChange] {
        let root = change(alice, object: nil, parents: [], [.open(title: "t0", body: "b")], time: 100)
        let id = root.id
        let c1 = change(bob, object: id, parents: [id], [.comment(body: "bob 1")], time: 200)
        let c2 = change(alice, object: id, parents: [id], [.comment(body: "alice 1")], time: 200)
        let t1 = change(bob, object: id, parents: [c1.id, c2.id], [.title("by bob")], time: 300)
        let t2 = change(alice, object: id, parents: [c1.id, c2.id], [.title("by alice"), .label(add: ["bug", "p1"], remove: [])], time: 301)
        let l = change(alice, object: id, parents: [t1.id, t2.id], [.label(add: [], remove: ["p1"]), .close], time: 400)
        return Dictionary(uniqueKeysWithValues: [root, c1, c2, t1, t2, l].map { ($0.id, $0) })
    }

    @Test("a change's id is the hash of its canonical encoding; the signature is checked, and any altered byte fails it")
    func signing() throws {
        let made = change(alice, object: nil, parents: [], [.open(title: "x", body: "y")], time: 1)
        let signed = try made.signed(by: alice)
        #expect(signed.id == made.id)
        #expect(try signed.verified() == made)
        #expect(try SignedCobChange(decoding: signed.encoded) == signed)
        for index in [0, 5, signed.body.count - 1] {
            var altered = signed
            altered.body[index] ^= 1
            #expect(throws: (any Error).self) { try altered.verified() }
        }
        var forged = signed
        forged.signature = Array(try bob.signature(for: CobChange.domain + signed.body))
        #expect(throws: ForgeError.self) { try forged.verified() }
    }

    @Test("the fold is the same whatever order the changes arrive in; the later (time, id) title wins; rights are checked in the fold")
    func fold() throws {
        let changes = try history()
        let first = try Issue.fold(changes, maintainers: [])
        var generator = SplitMix64(seed: 4)
        for _ in 0..<20 {
            let shuffled = Dictionary(uniqueKeysWithValues: changes.shuffled(using: &generator).map { ($0.key, $0.value) })
            #expect(try Issue.fold(shuffled, maintainers: []) == first)
        }
        // Bob is neither the author nor a maintainer: his title is ignored, alice's stands.
        #expect(first.title == "by alice")
        #expect(first.ignored.count == 1 && first.ignored[0].reason.contains("maintainer"))
        #expect(first.comments.map(\.body) == ["alice 1", "bob 1"] || first.comments.map(\.body) == ["bob 1", "alice 1"])
        #expect(first.labels == ["bug"])
        #expect(!first.open)
        #expect(first.heads.count == 1)
        // With bob a maintainer his title counts; alice's is later (301 > 300) and still wins.
        let withBob = try Issue.fold(changes, maintainers: [Hex.encode(Array(bob.publicKey.rawRepresentation))])
        #expect(withBob.title == "by alice" && withBob.ignored.isEmpty)
    }

    @Test("equal times are broken by id; a change naming a missing parent or another object fails the fold")
    func ties() throws {
        let root = change(alice, object: nil, parents: [], [.open(title: "t", body: "")], time: 1)
        let a = change(alice, object: root.id, parents: [root.id], [.title("a")], time: 5)
        let b = change(alice, object: root.id, parents: [root.id], [.title("b")], time: 5)
        let issue = try Issue.fold([root.id: root, a.id: a, b.id: b], maintainers: [])
        #expect(issue.title == (a.id < b.id ? "b" : "a"))
        #expect(issue.heads == [a.id, b.id].sorted())
        let orphan = change(alice, object: root.id, parents: [a.id], [.comment(body: "x")], time: 9)
        #expect(throws: ForgeError.self) { try Issue.fold([root.id: root, orphan.id: orphan], maintainers: []) }
    }

    @Test("the rules refuse empty changes, a second open, a first change that does more, bad titles and labels, naming the rule")
    func rules() throws {
        let root = change(alice, object: nil, parents: [], [.open(title: "t", body: "")], time: 1)
        try CobRules.validate(root)
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: nil, parents: [], [], time: 1)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: nil, parents: [], [.open(title: "t", body: ""), .close], time: 1)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: root.id, parents: [root.id], [.open(title: "t", body: "")], time: 2)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: root.id, parents: [], [.comment(body: "x")], time: 2)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: nil, parents: [], [.open(title: " ", body: "")], time: 1)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: root.id, parents: [root.id], [.title("a\nb")], time: 2)) }
        #expect(throws: ForgeError.self) { try CobRules.validate(change(alice, object: root.id, parents: [root.id], [.label(add: ["a,b"], remove: [])], time: 2)) }
        let long = String(repeating: "l", count: 65)
        do {
            try CobRules.validate(change(alice, object: root.id, parents: [root.id], [.label(add: [long], remove: [])], time: 2))
            Issue.record("a 65-byte label was taken")
        } catch {
            #expect("\(error)".contains("forgeLabelBytesMax"))
        }
        // Decoding bounds: a title past forgeTitleBytesMax is refused while decoding.
        let big = change(alice, object: nil, parents: [], [.open(title: String(repeating: "t", count: 257), body: "")], time: 1)
        #expect(throws: DecodingError.self) { try CobChange(decoding: big.encoded) }
        #expect(CobChange.time(nowMs: 10, after: 0) == 10 << 16)
        #expect(CobChange.time(nowMs: 10, after: 20 << 16) == (20 << 16) + 1)
    }

    @Test("every proper prefix of a signed change is refused, and parents out of order are malformed")
    func truncation() throws {
        let root = change(alice, object: nil, parents: [], [.open(title: "t", body: "b")], time: 1)
        let next = change(bob, object: root.id, parents: [root.id, CobID(bytes: Array(repeating: 0, count: 32))!], [.comment(body: "c")], time: 2)
        let encoded = try next.signed(by: bob).encoded
        for count in 0..<encoded.count { #expect(throws: DecodingError.self) { try SignedCobChange(decoding: Array(encoded.prefix(count))) } }
        var body = next.encoded
        // Swap the two parents: the encoding is no longer canonical.
        let start = 2 + 1 + 32 + 1
        let first = Array(body[start..<(start + 32)])
        body.replaceSubrange(start..<(start + 32), with: body[(start + 32)..<(start + 64)])
        body.replaceSubrange((start + 32)..<(start + 64), with: first)
        #expect(throws: DecodingError.self) { try CobChange(decoding: body) }
    }
}

@Suite("Patches and push preambles")
struct PatchTests {
    let alice = Curve25519.Signing.PrivateKey()
    let bob = Curve25519.Signing.PrivateKey()
    let base = String(repeating: "1", count: 40)

    func key(_ key: Curve25519.Signing.PrivateKey) -> [UInt8] { Array(key.publicKey.rawRepresentation) }

    @Test("revisions are numbered in the fold's order and only the author's count; approvals count maintainers' last verdicts on the latest revision")
    func fold() throws {
        let root = CobChange(
            type: .patch, object: nil, parents: [], operations: [.openPatch(title: "t", description: "", target: "main", topic: "x", base: base, head: String(repeating: "a", count: 40))],
            author: key(alice), time: 1)
        let r2 = CobChange(type: .patch, object: root.id, parents: [root.id], operations: [.revision(base: base, head: String(repeating: "b", count: 40))], author: key(alice), time: 2)
        let stranger = CobChange(type: .patch, object: root.id, parents: [r2.id], operations: [.revision(base: base, head: String(repeating: "c", count: 40))], author: key(bob), time: 3)
        let approve = CobChange(type: .patch, object: root.id, parents: [stranger.id], operations: [.review(revision: 2, verdict: .approve, comment: "")], author: key(bob), time: 4)
        let changes = Dictionary(uniqueKeysWithValues: [root, r2, stranger, approve].map { ($0.id, $0) })
        let patch = try Patch.fold(changes, maintainers: [])
        #expect(patch.revisions.map(\.head) == [String(repeating: "a", count: 40), String(repeating: "b", count: 40)])
        #expect(patch.ignored.count == 1)
        #expect(patch.approvals(maintainers: []) == 0)
        #expect(patch.approvals(maintainers: [Hex.encode(key(bob))]) == 1)
        // The author's own approval never counts.
        #expect(patch.approvals(maintainers: [Hex.encode(key(alice))]) == 0)
        // An issue's operations on a patch, or a patch's on an issue, are refused by the rules.
        #expect(throws: ForgeError.self) {
            try CobRules.validate(CobChange(type: .issue, object: root.id, parents: [root.id], operations: [.revision(base: base, head: base)], author: key(alice), time: 5))
        }
        try CobRules.validate(r2)
        #expect(throws: ForgeError.self) {
            try CobRules.validate(CobChange(type: .patch, object: root.id, parents: [root.id], operations: [.review(revision: 0, verdict: .approve, comment: "")], author: key(alice), time: 5))
        }
    }

    func pkt(_ text: String) -> [UInt8] { Array(String(format: "%04x", text.utf8.count + 4).utf8) + Array(text.utf8) }

    @Test("a push's preamble: commands with capabilities, shallow lines skipped, options after the first flush when asked for; partial input waits")
    func preamble() throws {
        let zero = String(repeating: "0", count: 40)
        let id = String(repeating: "ab", count: 20)
        var bytes = pkt("shallow \(id)\n") + pkt("\(zero) \(id) refs/for/main\0report-status push-options\n") + pkt("\(id) \(zero) refs/heads/old\n") + Array("0000".utf8)
        #expect(try PushPreamble.parse(bytes) == nil)
        bytes += pkt("topic=fix\n") + pkt("title=Fix it") + Array("0000".utf8) + Array("PACK".utf8)
        let preamble = try #require(try PushPreamble.parse(bytes))
        #expect(preamble.commands == [RefUpdate(old: zero, new: id, name: "refs/for/main"), RefUpdate(old: id, new: zero, name: "refs/heads/old")])
        #expect(preamble.option("topic") == "fix" && preamble.option("title") == "Fix it" && preamble.option("x") == nil)
        for cut in 0..<(bytes.count - 4) where cut < bytes.count - 8 {
            #expect((try? PushPreamble.parse(Array(bytes.prefix(cut)))) ?? nil == nil || cut >= bytes.count - 4)
        }
        // Without push-options the first flush ends it.
        let plain = pkt("\(zero) \(id) refs/heads/main\0report-status\n") + Array("0000".utf8)
        #expect(try PushPreamble.parse(plain)?.commands.count == 1)
        #expect(throws: DecodingError.self) { try PushPreamble.parse(Array("zzzz".utf8)) }
        #expect(throws: DecodingError.self) { try PushPreamble.parse(Array("0003".utf8)) }
        #expect(throws: DecodingError.self) { try PushPreamble.parse(pkt("not a command") + Array("0000".utf8)) }
    }
}
