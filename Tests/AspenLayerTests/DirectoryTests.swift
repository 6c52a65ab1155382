import AspenCore
import AspenKV
import AspenLayer
import Testing

@Suite("Directory layer")
struct DirectoryTests {
    static func store() -> MemoryKeyValueStore { MemoryKeyValueStore(nowMs: { 0 }) }

    @Test("create, open, list, move and remove directories; contents follow their directory")
    func lifecycle() async throws {
        let store = Self.store()
        let directories = DirectoryLayer(store: store)
        let users = try await directories.createOrOpen(["app", "users"])
        let orders = try await directories.create(["app", "orders"])
        #expect(users.prefix != orders.prefix)
        #expect(users.prefix.count <= 3, "allocated prefixes are short")
        #expect(try await directories.open(["app", "users"]) == users)
        #expect(try await directories.list() == ["app"])
        #expect(try await directories.list(["app"]) == ["orders", "users"])
        await #expect(throws: DirectoryError.alreadyExists(["app", "orders"])) { try await directories.create(["app", "orders"]) }
        await #expect(throws: DirectoryError.notFound(["nope"])) { try await directories.open(["nope"]) }
        await #expect(throws: DirectoryError.self) { try await directories.open([]) }

        // Data written in a directory's subspace stays there when the directory moves.
        try await store.put(users.subspace.pack([.int(1)]), Array("ada".utf8))
        _ = try await directories.createOrOpen(["app", "users", "archive"])
        let moved = try await directories.move(["app", "users"], to: ["app", "people"])
        #expect(moved.prefix == users.prefix)
        #expect(try await directories.list(["app"]) == ["orders", "people"])
        #expect(try await directories.list(["app", "people"]) == ["archive"])
        #expect(try await directories.exists(["app", "people", "archive"]))
        #expect(!(try await directories.exists(["app", "users"])))
        #expect(try await store.get(moved.subspace.pack([.int(1)]))?.value == Array("ada".utf8))
        await #expect(throws: DirectoryError.moveIntoItself(from: ["app"], to: ["app", "x"])) {
            try await directories.move(["app"], to: ["app", "x"])
        }
        await #expect(throws: DirectoryError.parentMissing(["none", "x"])) { try await directories.move(["app", "orders"], to: ["none", "x"]) }

        // Removing a directory removes its subtree and all their contents, nothing else.
        try await store.put(orders.subspace.pack([.int(7)]), [1])
        try await directories.remove(["app", "people"])
        #expect(try await directories.list(["app"]) == ["orders"])
        #expect(try await store.get(moved.subspace.pack([.int(1)])) == nil)
        #expect(try await store.get(orders.subspace.pack([.int(7)])) != nil)
        // A removed name can be created again, with a fresh prefix.
        let again = try await directories.create(["app", "people"])
        #expect(again.prefix != users.prefix)
    }

    @Test("concurrent creators get distinct prefixes, and racing on one name agree on it")
    func concurrentAllocation() async throws {
        let store = Self.store()
        let directories = DirectoryLayer(store: store)
        let created = try await withThrowingTaskGroup(of: DirectorySubspace.self) { group in
            for index in 0..<150 { group.addTask { try await directories.createOrOpen(["tenants", "t\(index)"]) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(created.map(\.prefix)).count == 150, "every directory has its own prefix")
        // No allocated prefix is a prefix of another: their key ranges never overlap.
        let prefixes = created.map(\.prefix)
        for a in prefixes { for b in prefixes where a != b { #expect(!b.starts(with: a)) } }
        let same = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<10 { group.addTask { try await directories.createOrOpen(["shared"]).prefix } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(same).count == 1)
        #expect(try await directories.list(["tenants"]).count == 150)
    }
}
