/// A blob's BLAKE3 tree seen in chunk groups: 16 chunks (16 KiB) are one leaf. Every whole group is a
/// subtree of BLAKE3's tree (its groups are aligned powers of two of chunks), so the tree over groups
/// has the same parent nodes as BLAKE3's above them, and a group is checked against its parent alone.
///
/// The **outboard** keeps, beside the data, each parent node's two children (64 bytes) — the pair
/// whose left subtree ends at group i goes in slot i (the tree's in-order numbering: one parent falls
/// between any two neighbouring groups). A blob of n groups has n - 1 slots, 1/256 of its size.
public struct BlobTree: Sendable, Equatable {
    public static let groupByteCount = 16 * 1024
    /// Chunks per group: a group starting at group index g starts at chunk 16 g.
    static let groupChunkCount: UInt64 = 16
    /// The size of one outboard slot: a parent's left and right chaining values.
    public static let pairByteCount = 64

    public let size: UInt64

    public init(size: UInt64) {
        self.size = size
    }

    /// At least one: the empty blob is one empty group.
    public var groupCount: UInt64 {
        size == 0 ? 1 : (size + UInt64(BlobTree.groupByteCount) - 1) / UInt64(BlobTree.groupByteCount)
    }

    public var outboardByteCount: UInt64 { (groupCount - 1) * UInt64(BlobTree.pairByteCount) }

    /// The blob's bytes in group `index`.
    public func byteRange(ofGroup index: UInt64) -> Range<UInt64> {
        let start = index * UInt64(BlobTree.groupByteCount)
        return start..<min(size, start + UInt64(BlobTree.groupByteCount))
    }

    /// The groups holding any of `bytes` (clamped to the blob); never empty for a non-empty range.
    public func groups(covering bytes: Range<UInt64>) -> Range<UInt64> {
        let group = UInt64(BlobTree.groupByteCount)
        let lower = min(bytes.lowerBound / group, groupCount)
        let upper = bytes.isEmpty ? lower : min((bytes.upperBound + group - 1) / group, groupCount)
        return lower..<max(upper, lower)
    }

    /// The left child's share of a parent over `count` groups: the largest power of two below it.
    static func leftCount(_ count: UInt64) -> UInt64 {
        precondition(count >= 2, "only a node of two or more groups has children")
        return 1 << (63 - UInt64((count - 1).leadingZeroBitCount))
    }
}

/// The items a slice of a blob is sent as: depth first, each parent before its children, the pairs
/// of every parent whose subtree meets the wanted groups, and the wanted groups themselves. The
/// receiver knows the order too, so nothing in the stream says what comes next.
public enum BlobSliceItem: Sendable, Equatable {
    /// The outboard pair in this slot (64 bytes).
    case parent(slot: UInt64)
    /// The bytes of this group (`BlobTree.byteRange(ofGroup:)`).
    case group(index: UInt64)
}

/// Walks a slice's items in order. Memory is the depth of the tree, at most 64 nodes.
public struct BlobSliceCursor: IteratorProtocol, Sendable {
    struct Node: Sendable {
        var start: UInt64
        var count: UInt64
    }

    public let tree: BlobTree
    public let groups: Range<UInt64>
    var stack: [Node] = []

    /// Nil when `groups` reaches past the blob.
    public init?(tree: BlobTree, groups: Range<UInt64>) {
        guard groups.upperBound <= tree.groupCount else { return nil }
        self.tree = tree
        self.groups = groups
        if !groups.isEmpty { stack.append(Node(start: 0, count: tree.groupCount)) }
    }

    /// The next item without moving past it.
    public var peek: BlobSliceItem? {
        guard let node = stack.last else { return nil }
        return node.count == 1 ? .group(index: node.start) : .parent(slot: node.start + BlobTree.leftCount(node.count) - 1)
    }

    public mutating func next() -> BlobSliceItem? {
        guard let node = stack.popLast() else { return nil }
        if node.count == 1 { return .group(index: node.start) }
        let (left, right) = children(of: node)
        if let right { stack.append(right) }
        if let left { stack.append(left) }
        return .parent(slot: node.start + BlobTree.leftCount(node.count) - 1)
    }

    /// The children of a parent that meet the wanted groups.
    func children(of node: Node) -> (left: Node?, right: Node?) {
        let leftCount = BlobTree.leftCount(node.count)
        let split = node.start + leftCount
        let left = groups.lowerBound < split ? Node(start: node.start, count: leftCount) : nil
        let right = groups.upperBound > split ? Node(start: split, count: node.count - leftCount) : nil
        return (left, right)
    }
}

/// Checks a slice as it arrives, item by item, against the blob's hash: a corrupt group or pair is
/// refused at that item, before anything after it is read. Memory is the tree's depth.
public struct BlobSliceVerifier: Sendable {
    public let hash: BlobHash
    var cursor: BlobSliceCursor
    /// The chaining value each node on the cursor's stack must have (nil for the root: its hash).
    var expected: [SIMD8<UInt32>?] = []

    /// Fails when the groups reach past a blob of `size` bytes.
    public init(hash: BlobHash, size: UInt64, groups: Range<UInt64>) throws(BlobError) {
        let tree = BlobTree(size: size)
        guard let cursor = BlobSliceCursor(tree: tree, groups: groups) else {
            throw .malformed("groups \(groups) reach past the \(tree.groupCount) groups of a \(size)-byte blob")
        }
        self.hash = hash
        self.cursor = cursor
        if !groups.isEmpty { expected.append(nil) }
    }

    public var tree: BlobTree { cursor.tree }

    /// What must arrive next; nil when the slice is complete.
    public var next: BlobSliceItem? { cursor.peek }

    /// Checks the pair of the parent that comes next.
    public mutating func verifyParent(_ pair: UnsafeRawBufferPointer) throws(BlobError) {
        guard case .parent(let slot)? = cursor.peek, let node = cursor.stack.last, let want = expected.last else {
            throw .malformed("a parent pair arrived where \(describe(cursor.peek)) was due")
        }
        guard pair.count == BlobTree.pairByteCount else {
            throw .malformed("a parent pair is \(BlobTree.pairByteCount) bytes, got \(pair.count)")
        }
        let left = BLAKE3Core.words(of: UnsafeRawBufferPointer(rebasing: pair[0..<32]))
        let right = BLAKE3Core.words(of: UnsafeRawBufferPointer(rebasing: pair[32..<64]))
        let output = BLAKE3Output.parent(left: left, right: right, key: BLAKE3Core.initialVector, flags: 0)
        guard matches(output, want) else {
            throw .verificationFailed("parent pair \(slot) of blob \(hash) does not hash to its parent")
        }
        _ = cursor.next()
        expected.removeLast()
        let (leftNode, rightNode) = cursor.children(of: node)
        if rightNode != nil { expected.append(right) }
        if leftNode != nil { expected.append(left) }
    }

    /// Checks the bytes of the group that comes next, and returns its index.
    @discardableResult
    public mutating func verifyGroup(_ bytes: UnsafeRawBufferPointer) throws(BlobError) -> UInt64 {
        guard case .group(let index)? = cursor.peek, let want = expected.last else {
            throw .malformed("a chunk group arrived where \(describe(cursor.peek)) was due")
        }
        let range = tree.byteRange(ofGroup: index)
        guard UInt64(bytes.count) == UInt64(range.count) else {
            throw .malformed("chunk group \(index) of blob \(hash) is \(range.count) bytes, got \(bytes.count)")
        }
        let output = BLAKE3.subtree(bytes, firstChunk: index * BlobTree.groupChunkCount, isRoot: want == nil)
        guard matches(output, want) else {
            throw .verificationFailed("chunk group \(index) (bytes \(range.lowerBound)..<\(range.upperBound)) of blob \(hash) does not match its hash")
        }
        _ = cursor.next()
        expected.removeLast()
        return index
    }

    private func matches(_ output: BLAKE3Output, _ want: SIMD8<UInt32>?) -> Bool {
        if let want { return output.chainingValue() == want }
        return output.rootBytes(count: BlobHash.byteCount) == hash.bytes
    }

    private func describe(_ item: BlobSliceItem?) -> String {
        switch item {
        case .parent(let slot)?: "parent pair \(slot)"
        case .group(let index)?: "chunk group \(index)"
        case nil: "the end of the slice"
        }
    }
}

/// Hashes a blob as it streams by and produces its outboard on the way: `parent(slot, pair)` is
/// called once for every slot, in the order parents complete (not slot order). Memory is one group
/// and the tree's depth, whatever the size.
public struct BlobOutboardBuilder: Sendable {
    struct Subtree: Sendable {
        var chainingValue: SIMD8<UInt32>
        var start: UInt64
        var count: UInt64
    }

    /// Bytes absorbed so far.
    public private(set) var size: UInt64 = 0
    private var pending: [UInt8] = []
    private var groupsDone: UInt64 = 0
    private var stack: [Subtree] = []

    public init() {
        pending.reserveCapacity(BlobTree.groupByteCount)
    }

    public mutating func update(
        _ bytes: UnsafeRawBufferPointer, parent: (UInt64, [UInt8]) throws -> Void
    ) rethrows {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        let group = BlobTree.groupByteCount
        while offset < bytes.count {
            // A full group is finished only once more input proves it is not the last one.
            if pending.count == group {
                let output = pending.withUnsafeBytes { BLAKE3.subtree($0, firstChunk: groupsDone * BlobTree.groupChunkCount) }
                try push(output.chainingValue(), parent: parent)
                pending.removeAll(keepingCapacity: true)
            }
            if pending.isEmpty {
                while bytes.count - offset > group {
                    let output = BLAKE3.subtree(
                        UnsafeRawBufferPointer(start: base + offset, count: group),
                        firstChunk: groupsDone * BlobTree.groupChunkCount)
                    try push(output.chainingValue(), parent: parent)
                    offset += group
                }
            }
            let take = min(group - pending.count, bytes.count - offset)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base + offset, count: take))
            offset += take
        }
        size += UInt64(bytes.count)
    }

    /// The blob's hash; every slot has been given to `parent` when it returns.
    public func finish(parent: (UInt64, [UInt8]) throws -> Void) rethrows -> BlobHash {
        var right = pending.withUnsafeBytes {
            BLAKE3.subtree($0, firstChunk: groupsDone * BlobTree.groupChunkCount, isRoot: stack.isEmpty)
        }
        for left in stack.reversed() {
            let rightValue = right.chainingValue()
            try parent(left.start + left.count - 1, BLAKE3Core.bytes(of: left.chainingValue) + BLAKE3Core.bytes(of: rightValue))
            right = BLAKE3Output.parent(
                left: left.chainingValue, right: rightValue, key: BLAKE3Core.initialVector, flags: 0)
        }
        return BlobHash(bytes: right.rootBytes(count: BlobHash.byteCount))!
    }

    private mutating func push(_ value: SIMD8<UInt32>, parent: (UInt64, [UInt8]) throws -> Void) rethrows {
        var merged = Subtree(chainingValue: value, start: groupsDone, count: 1)
        groupsDone += 1
        var count = groupsDone
        while count & 1 == 0 {
            let left = stack.removeLast()
            try parent(left.start + left.count - 1, BLAKE3Core.bytes(of: left.chainingValue) + BLAKE3Core.bytes(of: merged.chainingValue))
            merged = Subtree(
                chainingValue: BLAKE3Output.parent(
                    left: left.chainingValue, right: merged.chainingValue, key: BLAKE3Core.initialVector, flags: 0
                ).chainingValue(),
                start: left.start, count: left.count + merged.count)
            count >>= 1
        }
        stack.append(merged)
    }
}
