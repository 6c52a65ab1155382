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
