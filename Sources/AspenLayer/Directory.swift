import AspenCore
import AspenKV

/// Why a directory operation failed.
public enum DirectoryError: Error, Sendable, Equatable, CustomStringConvertible {
    case alreadyExists([String])
    case notFound([String])
    case parentMissing([String])
    case invalidPath(String)
    case moveIntoItself(from: [String], to: [String])
    /// Another client kept changing the same metadata; the bound on retries was reached.
    case contention(attempts: Int)
    case tooLarge(nodes: Int, limit: Int)

    public var description: String {
        func show(_ path: [String]) -> String { "/" + path.joined(separator: "/") }
        switch self {
        case .alreadyExists(let path): return "directory \(show(path)) already exists"
        case .notFound(let path): return "directory \(show(path)) does not exist"
        case .parentMissing(let path): return "the parent of \(show(path)) does not exist"
        case .invalidPath(let reason): return "invalid directory path: \(reason)"
        case .moveIntoItself(let from, let to): return "cannot move \(show(from)) into its own subtree \(show(to))"
        case .contention(let attempts): return "directory metadata kept changing under us; gave up after \(attempts) attempts (directoryRetriesMax)"
        case .tooLarge(let nodes, let limit): return "the subtree has \(nodes) directories; one move or remove handles at most \(limit)"
        }
    }
}

/// An opened directory: its path and the short prefix allocated to it.
public struct DirectorySubspace: Sendable, Hashable {
    public let path: [String]
    public let subspace: Subspace
    public var prefix: [UInt8] { subspace.prefix }
}

/// Named paths (`["app", "users"]`) mapped to short allocated key prefixes, so that layers and
/// users get isolated namespaces whose keys stay short and that can be moved without touching
/// their contents. Metadata lives under `nodes` (default: keys starting 0xFE); allocated prefixes
/// are tuple-encoded integers, handed out by a high-contention allocator that claims random slots
/// in a window rather than incrementing one counter. Every change is one transaction.
public struct DirectoryLayer: Sendable {
    public let store: any KeyValueStore
    let nodes: Subspace
    let allocator: Subspace
    let retriesMax: Int
    /// Most directories one move or remove may touch (one transaction's bound).
    let subtreeMax: Int

    public init(store: any KeyValueStore, nodePrefix: [UInt8] = [0xFE], limits: Limits = .standard, retriesMax: Int = 64) {
        self.store = store
        self.nodes = Subspace(prefix: nodePrefix)
        self.allocator = Subspace(prefix: nodePrefix).subspace(["hca"])
        self.retriesMax = retriesMax
        self.subtreeMax = limits.batchKeysMax / 4
    }

    func nodeKey(_ path: [String]) -> [UInt8] { nodes.pack(["node", .tuple(path.map { .string($0) })]) }
    func childKey(_ parent: [String], _ name: String) -> [UInt8] { nodes.pack(["child", .tuple(parent.map { .string($0) }), .string(name)]) }
    func childrenSubspace(_ parent: [String]) -> Subspace { nodes.subspace(["child", .tuple(parent.map { .string($0) })]) }

    static func validate(_ path: [String]) throws(DirectoryError) {
        guard !path.isEmpty else { throw .invalidPath("the root cannot be opened, created, moved or removed") }
        for name in path where name.isEmpty || name.utf8.count > 255 {
            throw .invalidPath("every name must have 1 to 255 bytes")
        }
    }

    // MARK: Reading

    public func open(_ path: [String]) async throws -> DirectorySubspace {
        try Self.validate(path)
        guard let node = try await store.get(nodeKey(path)) else { throw DirectoryError.notFound(path) }
        return DirectorySubspace(path: path, subspace: Subspace(prefix: node.value))
    }

    public func exists(_ path: [String]) async throws -> Bool {
        try Self.validate(path)
        return try await store.get(nodeKey(path)) != nil
    }

    /// The names directly under `path` (the root when empty), in order.
    public func list(_ path: [String] = []) async throws -> [String] {
        if !path.isEmpty, try await store.get(nodeKey(path)) == nil { throw DirectoryError.notFound(path) }
        let children = childrenSubspace(path)
        var names: [String] = []
        var continuation: Bytes?
        repeat {
            let page = try await store.read(
                RangeRequest(.range(start: children.range.start, end: children.range.end), keysOnly: true, continuation: continuation),
                consistency: .linearizable)
            for kv in page.kvs {
                if case .string(let name)? = try children.unpack(kv.key).elements.first { names.append(name) }
            }
            continuation = page.more ? page.continuation : nil
        } while continuation != nil
        return names
    }

    // MARK: Creating

    public func create(_ path: [String]) async throws -> DirectorySubspace {
        try await createOrOpen(path, mustCreate: true)
    }

    /// Opens the directory, creating it (and any missing parents) first if needed.
    public func createOrOpen(_ path: [String]) async throws -> DirectorySubspace {
        try await createOrOpen(path, mustCreate: false)
    }

    func createOrOpen(_ path: [String], mustCreate: Bool) async throws -> DirectorySubspace {
        try Self.validate(path)
        if path.count > 1 { _ = try await createOrOpen(Array(path.dropLast()), mustCreate: false) }
        for _ in 0..<retriesMax {
            if let node = try await store.get(nodeKey(path)) {
                if mustCreate { throw DirectoryError.alreadyExists(path) }
                return DirectorySubspace(path: path, subspace: Subspace(prefix: node.value))
            }
            let prefix = try await allocate()
            // Created only if nobody created it meanwhile and the parent still exists.
            var compares = [Compare.absent(nodeKey(path))]
            if path.count > 1 { compares.append(Compare(key: nodeKey(Array(path.dropLast())), .version(0), .greater)) }
            let outcome = try await store.transaction(
                Transaction(
                    compares: compares,
                    success: [.put(Put(key: nodeKey(path), value: prefix)), .put(Put(key: childKey(Array(path.dropLast()), path.last!), value: []))]))
            if outcome.succeeded { return DirectorySubspace(path: path, subspace: Subspace(prefix: prefix)) }
            if path.count > 1, try await store.get(nodeKey(Array(path.dropLast()))) == nil { throw DirectoryError.parentMissing(path) }
        }
        throw DirectoryError.contention(attempts: retriesMax)
    }

    /// A prefix no other directory has: a random free slot in the allocator's current window,
    /// claimed by a transaction; the window moves on once half of it is taken.
    func allocate() async throws -> [UInt8] {
        var generator = SplitMix64(seed: UInt64.random(in: 0...UInt64.max))
        for _ in 0..<retriesMax {
            let startKey = allocator.pack(["start"])
            let current = try await store.get(startKey)
            let start = current.map { Self.decodeInt($0.value) } ?? 0
            let window = Self.windowSize(start)
            let claims = allocator.subspace(["claimed"])
            let taken = try await store.count(
                .range(start: claims.pack([.int(start)]), end: claims.pack([.int(start + window)])))
            if taken * 2 >= window {
                // Move the window on (one client wins; the others see the new start).
                _ = try await store.transaction(
                    Transaction(
                        compares: [current.map { Compare(key: startKey, .modRevision($0.modRevision)) } ?? .absent(startKey)],
                        success: [.put(Put(key: startKey, value: Self.encodeInt(start + window)))]))
                continue
            }
            let candidate = start + Int64(generator.next(in: 0...UInt64(window - 1)))
            let claim = claims.pack([.int(candidate)])
            let outcome = try await store.transaction(
                Transaction(
                    compares: [.absent(claim), current.map { Compare(key: startKey, .modRevision($0.modRevision)) } ?? .absent(startKey)],
                    success: [.put(Put(key: claim, value: []))]))
            if outcome.succeeded { return Tuple([.int(candidate)]).encoded }
        }
        throw DirectoryError.contention(attempts: retriesMax)
    }

    static func windowSize(_ start: Int64) -> Int64 { start < 255 ? 64 : start < 65535 ? 1024 : 8192 }
    static func encodeInt(_ value: Int64) -> [UInt8] { Tuple([.int(value)]).encoded }
    static func decodeInt(_ bytes: [UInt8]) -> Int64 {
        if case .int(let value)? = (try? Tuple(decoding: bytes))?.elements.first { return value }
        return 0
    }

    // MARK: Moving and removing

    /// Every directory at or under `path`, with its node (prefix and revision).
    func subtree(_ path: [String]) async throws -> [(path: [String], node: KeyValue)] {
        guard let node = try await store.get(nodeKey(path)) else { throw DirectoryError.notFound(path) }
        var found = [(path, node)]
        for name in try await list(path) {
            found += try await subtree(path + [name])
            if found.count > subtreeMax { throw DirectoryError.tooLarge(nodes: found.count, limit: subtreeMax) }
        }
        return found
    }

    /// Renames `from` to `to`; the contents keep their prefix, so nothing but metadata moves.
    public func move(_ from: [String], to: [String]) async throws -> DirectorySubspace {
        try Self.validate(from)
        try Self.validate(to)
        guard !to.starts(with: from) else { throw DirectoryError.moveIntoItself(from: from, to: to) }
        for _ in 0..<retriesMax {
            let nodes = try await subtree(from)
            if try await store.get(nodeKey(to)) != nil { throw DirectoryError.alreadyExists(to) }
            var compares = nodes.map { Compare(key: nodeKey($0.path), .modRevision($0.node.modRevision)) } + [.absent(nodeKey(to))]
            if to.count > 1 {
                guard try await store.get(nodeKey(Array(to.dropLast()))) != nil else { throw DirectoryError.parentMissing(to) }
                compares.append(Compare(key: nodeKey(Array(to.dropLast())), .version(0), .greater))
            }
            var operations: [TransactionOperation] = [
                .delete(Delete(.key(childKey(Array(from.dropLast()), from.last!)))),
                .put(Put(key: childKey(Array(to.dropLast()), to.last!), value: [])),
            ]
            for (path, node) in nodes {
                let moved = to + path.dropFirst(from.count)
                operations.append(.delete(Delete(.key(nodeKey(path)))))
                operations.append(.put(Put(key: nodeKey(moved), value: node.value)))
                if path.count > from.count {
                    operations.append(.delete(Delete(.key(childKey(Array(path.dropLast()), path.last!)))))
                    operations.append(.put(Put(key: childKey(Array(moved.dropLast()), moved.last!), value: [])))
                }
            }
            if try await store.transaction(Transaction(compares: compares, success: operations)).succeeded {
                return DirectorySubspace(path: to, subspace: Subspace(prefix: nodes[0].node.value))
            }
        }
        throw DirectoryError.contention(attempts: retriesMax)
    }

    /// Removes the directory, everything under it, and all their contents, in one transaction.
    public func remove(_ path: [String]) async throws {
        try Self.validate(path)
        for _ in 0..<retriesMax {
            let nodes = try await subtree(path)
            var operations: [TransactionOperation] = [.delete(Delete(.key(childKey(Array(path.dropLast()), path.last!))))]
            for (member, node) in nodes {
                operations.append(.delete(Delete(.key(nodeKey(member)))))
                operations.append(.delete(Delete(.prefix(node.value))))
                if member.count > path.count { operations.append(.delete(Delete(.key(childKey(Array(member.dropLast()), member.last!))))) }
            }
            let compares = nodes.map { Compare(key: nodeKey($0.path), .modRevision($0.node.modRevision)) }
            if try await store.transaction(Transaction(compares: compares, success: operations)).succeeded { return }
        }
        throw DirectoryError.contention(attempts: retriesMax)
    }
}
