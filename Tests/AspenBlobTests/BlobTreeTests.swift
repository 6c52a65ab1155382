import AspenBlob
import AspenCore
import Testing

@Suite("Blob tree: outboard and verified slices")
struct BlobTreeTests {
    static let group = BlobTree.groupByteCount

    /// A blob's bytes and its outboard as the builder produced it (slot → pair).
    struct Built {
        var bytes: [UInt8]
        var hash: BlobHash
        var outboard: [UInt64: [UInt8]]
    }

    static func build(size: Int, seed: UInt64, pieceMax: Int = 100_000) -> Built {
        var generator = SplitMix64(seed: seed)
        let bytes = BLAKE3Tests.randomBytes(count: size, using: &generator)
        var builder = BlobOutboardBuilder()
        var outboard: [UInt64: [UInt8]] = [:]
        var offset = 0
        while offset < size {
            let piece = min(Int(generator.next(in: 1...UInt64(pieceMax))), size - offset)
            bytes.withUnsafeBytes { buffer in
                builder.update(UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + piece)])) { slot, pair in
                    #expect(outboard[slot] == nil, "slot \(slot) written twice")
                    outboard[slot] = pair
                }
            }
            offset += piece
        }
        let hash = builder.finish { slot, pair in
            #expect(outboard[slot] == nil, "slot \(slot) written twice")
            outboard[slot] = pair
        }
        return Built(bytes: bytes, hash: hash, outboard: outboard)
    }

    /// Sends the slice the way a node does: each item's bytes from the outboard or the data.
    static func send(_ built: Built, groups: Range<UInt64>) -> [(BlobSliceItem, [UInt8])] {
        let tree = BlobTree(size: UInt64(built.bytes.count))
        var cursor = BlobSliceCursor(tree: tree, groups: groups)!
        var items: [(BlobSliceItem, [UInt8])] = []
        while let item = cursor.next() {
            switch item {
            case .parent(let slot): items.append((item, built.outboard[slot] ?? []))
            case .group(let index):
                let range = tree.byteRange(ofGroup: index)
                items.append((item, Array(built.bytes[Int(range.lowerBound)..<Int(range.upperBound)])))
            }
        }
        return items
    }

    /// Feeds items to a verifier; returns the groups it accepted, or the error that stopped it.
    static func receive(
        _ items: [(BlobSliceItem, [UInt8])], hash: BlobHash, size: Int, groups: Range<UInt64>
    ) -> Result<[UInt64], BlobError> {
        do {
            var verifier = try BlobSliceVerifier(hash: hash, size: UInt64(size), groups: groups)
            var accepted: [UInt64] = []
            for (item, bytes) in items {
                guard verifier.next == item else {
                    return .failure(.malformed("the verifier wants \(String(describing: verifier.next)), the sender sent \(item)"))
                }
                switch item {
                case .parent: try bytes.withUnsafeBytes { try verifier.verifyParent($0) }
                case .group:
                    let index = try bytes.withUnsafeBytes { try verifier.verifyGroup($0) }
                    accepted.append(index)
                }
            }
            #expect(verifier.next == nil, "the verifier wants more than was sent")
            return .success(accepted)
        } catch let error as BlobError {
            return .failure(error)
        } catch {
            return .failure(.malformed("unexpected \(error)"))
        }
    }

    static let sizes = [0, 1, 1024, group - 1, group, group + 1, 2 * group, 3 * group + 5, 16 * group, 37 * group + 1000]

    @Test("the builder's hash is BLAKE3's, and it fills every outboard slot once", arguments: sizes)
    func builderMatchesHash(size: Int) {
        let built = Self.build(size: size, seed: 0xB10B + UInt64(size))
        #expect(built.hash.bytes == BLAKE3.hash(built.bytes))
        let tree = BlobTree(size: UInt64(size))
        #expect(UInt64(built.outboard.count) * 64 == tree.outboardByteCount)
        #expect(Set(built.outboard.keys) == Set(0..<(tree.groupCount - 1)))
        #expect(built.outboard.values.allSatisfy { $0.count == 64 })
    }

    @Test("the builder gives the same outboard however the input is split")
    func builderSplitsAgree() {
        let small = Self.build(size: 21 * Self.group + 77, seed: 5, pieceMax: 300)
        let large = Self.build(size: 21 * Self.group + 77, seed: 5, pieceMax: 1 << 20)
        #expect(small.bytes == large.bytes)
        #expect(small.hash == large.hash)
        #expect(small.outboard == large.outboard)
    }

    @Test("every slice of a blob verifies and yields exactly its groups", arguments: [0, 1, group + 1, 5 * group, 13 * group - 3])
    func everySliceVerifies(size: Int) {
        let built = Self.build(size: size, seed: 0x511CE + UInt64(size))
        let count = BlobTree(size: UInt64(size)).groupCount
        for lower in 0..<count {
            for upper in (lower + 1)...count {
                let items = Self.send(built, groups: lower..<upper)
                let result = Self.receive(items, hash: built.hash, size: size, groups: lower..<upper)
                #expect(result == .success(Array(lower..<upper)), "groups \(lower)..<\(upper) of \(size) bytes")
            }
        }
    }

    @Test("a slice moves only the parents on the way to its groups")
    func sliceIsSmall() {
        let size = 1024 * Self.group  // 16 MiB: 1024 groups, a tree of depth 10
        let tree = BlobTree(size: UInt64(size))
        var cursor = BlobSliceCursor(tree: tree, groups: 500..<501)!
        var parents = 0
        var groups: [UInt64] = []
        while let item = cursor.next() {
            switch item {
            case .parent: parents += 1
            case .group(let index): groups.append(index)
            }
        }
        #expect(parents == 10)
        #expect(groups == [500])
        #expect(tree.groups(covering: 1_048_576..<2_097_152) == 64..<128)
        #expect(tree.groups(covering: 0..<1) == 0..<1)
        #expect(tree.groups(covering: UInt64(size - 1)..<UInt64(size)) == 1023..<1024)
    }

    @Test("a flipped byte in any group or pair is refused at that item, and nothing after it is accepted")
    func corruptionIsCaughtWhereItIs() {
        let size = 9 * Self.group + 333
        let built = Self.build(size: size, seed: 77)
        let count = BlobTree(size: UInt64(size)).groupCount
        let clean = Self.send(built, groups: 0..<count)
        for position in clean.indices {
            var items = clean
            let byte = position * 7 % max(items[position].1.count, 1)
            items[position].1[byte] ^= 0x01
            let result = Self.receive(items, hash: built.hash, size: size, groups: 0..<count)
            guard case .failure(.verificationFailed) = result else {
                Issue.record("a flipped byte in item \(position) (\(items[position].0)) was not caught: \(result)")
                continue
            }
        }
    }

    @Test("a slice against the wrong hash, the wrong size, or cut short is refused")
    func wrongHashSizeOrTruncation() {
        let size = 4 * Self.group
        let built = Self.build(size: size, seed: 91)
        let items = Self.send(built, groups: 0..<4)
        let other = BlobHash.of([1, 2, 3])
        guard case .failure(.verificationFailed) = Self.receive(items, hash: other, size: size, groups: 0..<4) else {
            Issue.record("a slice verified against another blob's hash")
            return
        }
        // One byte more claimed: the last group's length no longer matches what was sent.
        guard case .failure = Self.receive(items, hash: built.hash, size: size + 1, groups: 0..<4) else {
            Issue.record("a slice verified with a wrong size")
            return
        }
        #expect(throws: BlobError.self) { try BlobSliceVerifier(hash: built.hash, size: UInt64(size), groups: 0..<5) }
        // The empty blob and a one-group blob are their own root.
        let empty = Self.build(size: 0, seed: 1)
        #expect(Self.receive(Self.send(empty, groups: 0..<1), hash: empty.hash, size: 0, groups: 0..<1) == .success([0]))
        let whole = Self.build(size: Self.group, seed: 2)
        #expect(Self.receive(Self.send(whole, groups: 0..<1), hash: whole.hash, size: Self.group, groups: 0..<1) == .success([0]))
    }

    @Test("hashes parse from 64 hex digits only, with errors that say why")
    func hashParsing() throws {
        let hash = BlobHash.of(Array("abc".utf8))
        #expect(try BlobHash.parse(hash.hex) == hash)
        #expect(try BlobHash.parse(" \(hash.hex.uppercased())\n") == hash)
        #expect(throws: BlobError.malformedHash("a blob hash is 64 hexadecimal digits, got 63 characters")) {
            try BlobHash.parse(String(hash.hex.dropLast()))
        }
        #expect(throws: BlobError.self) { try BlobHash.parse(String(hash.hex.dropLast()) + "g") }
        #expect(BlobHash(bytes: [UInt8](repeating: 0, count: 31)) == nil)
    }
}
