import AspenCore
import AspenKV
import Testing

@testable import AspenSecrets

/// kv-v2 against the in-memory store: the same engine the node runs.
struct KV2EngineTests {
    /// The engine of a mount recorded in `store` (every change compares the mount's record).
    static func engine(_ store: MemoryKeyValueStore, key: DataKey = .random(), config: KV2Config = KV2Config()) async throws -> KV2Engine {
        let mount = MountRecord(path: "secret", type: .kv2, id: Array(repeating: 7, count: 16), createdMs: 0, kv: config)
        try await store.put(SecretsKeys.mount(mount.path), mount.encoded())
        return KV2Engine(store: store, mount: mount, key: key, limits: .standard, nowMs: { 1_000_000 })
    }

    static func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("versions count up; check-and-set is decided against the current version")
    func checkAndSet() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        #expect(try await kv.write("a", data: Self.json(#"{"v":1}"#), cas: 0).version == 1)
        await #expect(throws: SecretsError.badRequest("check-and-set parameter did not match the current version")) {
            try await kv.write("a", data: Self.json(#"{"v":2}"#), cas: 0)
        }
        #expect(try await kv.write("a", data: Self.json(#"{"v":2}"#), cas: 1).version == 2)
        guard case .found(let data, let version, _) = try await kv.read("a", version: 1) else { Issue.record("version 1 readable"); return }
        #expect(data == Self.json(#"{"v":1}"#) && version == 1)
    }

    @Test("concurrent cas=1 writers: exactly one wins")
    func concurrentWriters() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        _ = try await kv.write("race", data: Self.json("{}"), cas: 0)
        let wins = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<20 {
                group.addTask { (try? await kv.write("race", data: Self.json(#"{"n":\#(index)}"#), cas: 1)) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(wins == 1)
    }

    @Test("a flipped byte in a stored envelope fails that read only, with no plaintext; an envelope copied under another key does not open")
    func tamperedEnvelopes() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        _ = try await kv.write("a", data: Self.json(#"{"secret":"alpha"}"#), cas: nil)
        _ = try await kv.write("b", data: Self.json(#"{"secret":"beta"}"#), cas: nil)
        let versionA = kv.versionKey("a", 1)
        let versionB = kv.versionKey("b", 1)
        guard let stored = try await store.get(versionA) else { Issue.record("version record stored"); return }
        #expect(!String(decoding: stored.value, as: UTF8.self).contains("alpha"), "stored sealed")
        // Flip one byte of a's version: a fails, b still reads.
        var flipped = stored.value
        flipped[flipped.count / 2] ^= 0x01
        try await store.put(versionA, flipped)
        await #expect(throws: SecretsError.self) { try await kv.read("a", version: 1) }
        guard case .found(let data, _, _) = try await kv.read("b", version: nil) else { Issue.record("b still reads"); return }
        #expect(data == Self.json(#"{"secret":"beta"}"#))
        // Copy b's (valid) envelope under a's key: refused, not served as a's.
        try await store.put(versionA, try await store.get(versionB)!.value)
        await #expect(throws: SecretsError.self) { try await kv.read("a", version: 1) }
        // A value that is no envelope at all is never read as plaintext.
        try await store.put(versionA, Self.json(#"{"secret":"plain"}"#))
        await #expect(throws: SecretsError.self) { try await kv.read("a", version: 1) }
        // Another data key opens nothing.
        let other = try await Self.engine(store, key: .random())
        await #expect(throws: SecretsError.self) { try await other.read("b", version: nil) }
    }

    @Test("max_versions prunes the oldest; soft delete, undelete and destroy")
    func lifecycle() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store, config: KV2Config(maxVersions: 2))
        for index in 1...4 { _ = try await kv.write("a", data: Self.json(#"{"n":\#(index)}"#), cas: nil) }
        let (metadata, _) = try #require(try await kv.metadata("a"))
        #expect(metadata.versions.keys.sorted() == [3, 4] && metadata.oldestVersion == 3)
        #expect(try await store.get(kv.versionKey("a", 1)) == nil, "pruned versions' data is removed")
        try await kv.apply(.delete, "a", versions: [])
        guard case .gone(4, _) = try await kv.read("a", version: nil) else { Issue.record("deleted version is gone"); return }
        try await kv.apply(.undelete, "a", versions: [4])
        guard case .found = try await kv.read("a", version: nil) else { Issue.record("undeleted"); return }
        try await kv.apply(.destroy, "a", versions: [3])
        guard case .gone(3, let after) = try await kv.read("a", version: 3) else { Issue.record("destroyed version is gone"); return }
        #expect(after.versions[3]?.destroyed == true)
        #expect(try await store.get(kv.versionKey("a", 3)) == nil, "a destroyed version's data is removed")
    }

    @Test("a write racing a disable of its mount does not land; one made under changed mount settings is refused")
    func mountChangedUnderWrite() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        _ = try await kv.write("a", data: Self.json("{}"), cas: nil)
        var changed = kv.mount
        changed.kv.casRequired = true
        try await store.put(SecretsKeys.mount(kv.mount.path), changed.encoded())
        await #expect(throws: SecretsError.self) { try await kv.write("a", data: Self.json("{}"), cas: nil) }
        try await store.delete(SecretsKeys.mount(kv.mount.path))
        await #expect(throws: SecretsError.self) { try await kv.write("b", data: Self.json("{}"), cas: nil) }
        #expect(try await store.get(kv.versionKey("b", 1)) == nil)
    }

    @Test("listing: names and folders directly under a prefix, each folder once")
    func listing() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        for path in ["app/db", "app/cache", "app/sub/x", "app/sub/y", "app/sub/z/w", "apple", "top"] {
            _ = try await kv.write(path, data: Self.json("{}"), cas: nil)
        }
        #expect(try await kv.list("") == ["app/", "apple", "top"])
        #expect(try await kv.list("app/") == ["cache", "db", "sub/"])
        #expect(try await kv.list("app/sub/") == ["x", "y", "z/"])
        #expect(try await kv.list("none/") == [])
    }

    @Test("bounds: paths, size, depth and custom metadata are refused with the limit named")
    func bounds() async throws {
        let store = MemoryKeyValueStore(nowMs: { 0 })
        let kv = try await Self.engine(store)
        await #expect(throws: SecretsError.self) { try await kv.write("../x", data: Self.json("{}"), cas: nil) }
        await #expect(throws: SecretsError.self) { try await kv.write(String(repeating: "p", count: 600), data: Self.json("{}"), cas: nil) }
        do {
            _ = try await kv.write("big", data: Array(repeating: 0x20, count: Limits.standard.secretBytesMax + 1), cas: nil)
            Issue.record("an oversized secret is refused")
        } catch let error as SecretsError {
            #expect(error.message.contains("secretBytesMax"))
        }
        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        #expect(throws: SecretsError.self) { try SecretsJSON.parse(Array(deep.utf8), limits: .standard) }
        var update = KV2Engine.MetadataUpdate()
        update.customMetadata = Dictionary(uniqueKeysWithValues: (0..<70).map { ("k\($0)", "v") })
        await #expect(throws: SecretsError.self) { try await kv.updateMetadata("a", update) }
    }
}

struct ShamirTests {
    @Test("any threshold of the shares recovers the secret; fewer recover something else")
    func thresholds() throws {
        var random = SplitMix64(seed: 42)
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
        for (threshold, count) in [(1, 1), (2, 3), (3, 5), (4, 7)] {
            let shares = try Shamir.split(secret, threshold: threshold, count: count, using: &random)
            for _ in 0..<10 {
                let chosen = Array(shares.shuffled(using: &random).prefix(threshold))
                #expect(try Shamir.combine(chosen) == secret)
            }
            if threshold > 1 {
                #expect(try Shamir.combine(Array(shares.prefix(threshold - 1))) != secret)
            }
        }
    }

    @Test("GF(256): multiplication matches the AES field, every nonzero element has an inverse")
    func field() {
        #expect(Shamir.multiply(0x57, 0x83) == 0xC1)  // FIPS-197's worked example
        #expect(Shamir.multiply(0x57, 0x13) == 0xFE)
        for value in 1...255 { #expect(Shamir.multiply(UInt8(value), Shamir.inverse(UInt8(value))) == 1) }
    }

    @Test("malformed share sets are refused")
    func malformed() {
        #expect(throws: Shamir.Failure.self) { try Shamir.combine([]) }
        #expect(throws: Shamir.Failure.self) { try Shamir.combine([.init(x: 1, y: [1]), .init(x: 1, y: [2])]) }
        #expect(throws: Shamir.Failure.self) { try Shamir.combine([.init(x: 1, y: [1]), .init(x: 2, y: [2, 3])]) }
        #expect(throws: Shamir.Failure.self) { try Shamir.split([1], threshold: 3, count: 2) }
    }
}
