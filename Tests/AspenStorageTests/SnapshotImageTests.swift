import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import Synchronization
import Testing

/// A state streamed as an image from one store to another, a chunk at a time, is the same state
/// on arrival; a chunk that does not fit, or a damaged image, is refused and leaves the target
/// serving what it had.
@Suite("Snapshot images")
struct SnapshotImageTests {
    static let membership = Raft.Membership(voters: [1, 2, 3])
    static let all = KeyBounds(start: [], end: nil)
    /// Session ids on both sides of 2^63, whose order SQLite sees differently (signed).
    static let sessions: [UInt64] = [7, 1 << 63 + 5, UInt64.max - 1]

    /// Commits commands one entry each, as a single-member cluster would.
    final class Writer {
        let storage: any NodeStorage
        var index: Raft.Index = 0

        /// `index`: the entries the store holds already (it is bootstrapped then).
        init(_ storage: any NodeStorage, index: Raft.Index? = nil) throws {
            self.storage = storage
            if let index { self.index = index } else { try storage.bootstrap(.bootstrap(SnapshotImageTests.membership)) }
        }

        @discardableResult
        func apply(_ commands: [KVCommand]) throws -> [Result<KVResult, KVError>?] {
            let entries = commands.map { command in
                index += 1
                return Raft.Entry(term: 1, index: index, payload: .command(command.encoded()))
            }
            return try storage.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: index), committedEntries: entries))
                .map(\.result)
        }
    }

    static func put(_ key: String, _ value: Bytes, lease: LeaseID = 0) -> KVCommand {
        .put(Put(key: Array(key.utf8), value: value, lease: lease))
    }

    /// A read of `key` inside a session's transaction: its recorded result holds the value.
    static func sessionRead(_ key: String, session: UInt64, sequence: UInt64) -> KVCommand {
        .sessioned(
            ClientStamp(session: session, sequence: sequence, acknowledgedThrough: 0), nowMs: 1_000,
            .transaction(Transaction(compares: [], success: [.get(RangeRequest(.key(Array(key.utf8))))])))
    }

    /// History over several revisions of each key, deletions, a compaction, leases with keys,
    /// and client sessions, one of them keeping more result bytes than a frame holds. With
    /// `bulk`, over a megabyte of values, so the image has many frames of each kind.
    static func fill(_ writer: Writer, bulk: Bool) throws {
        var random = SplitMix64(seed: 42)
        let valueBytes = bulk ? 3_000 : 40
        let value = { (seed: Int) in (0..<valueBytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }
        try writer.apply([.leaseGrant(LeaseGrant(id: 11, ttlMs: 60_000, nowMs: 0)), .leaseGrant(LeaseGrant(id: 12, ttlMs: 90_000, nowMs: 0))])
        for round in 0..<(bulk ? 6 : 2) {
            try writer.apply((0..<60).map { key in
                put("key/\(key)", value(round * 100 + key), lease: key % 5 == 0 ? 11 : key % 7 == 0 ? 12 : 0)
            })
            try writer.apply((0..<5).map { _ in .delete(Delete(.key(Array("key/\(random.next(in: 0...59))".utf8)))) })
        }
        let (current, _) = try writer.storage.revisions()
        try writer.apply([.compact(current / 2)])
        try writer.apply((0..<60).map { put("key/\($0)", value(1000 + $0)) })
        try writer.apply([.delete(Delete(.prefix(Array("key/1".utf8))))])
        // Sessions: a few results each; the big value makes one session's results outgrow a frame.
        try writer.apply([put("big", (0..<(bulk ? 120_000 : 500)).map { UInt8(truncatingIfNeeded: $0) })])
        for (number, session) in sessions.enumerated() {
            try writer.apply((1...UInt64(number + 3)).map { sessionRead(number == 0 ? "big" : "key/2", session: session, sequence: $0) })
        }
    }

    @Test("a state with history, deletions, leases and sessions arrives whole through 4 KiB chunks",
        arguments: BackendKind.allCases, BackendKind.allCases)
    func transfer(source sourceKind: BackendKind, target targetKind: BackendKind) throws {
        let sourceDirectory = TempDirectory()
        let targetDirectory = TempDirectory()
        let source = try Writer(try sourceKind.make(sourceDirectory))
        try Self.fill(source, bulk: sourceKind == .sqlite && targetKind == .sqlite)
        let target = try targetKind.make(targetDirectory)
        try target.bootstrap(.joining)
        let metadata = try transferSnapshot(from: source.storage, to: target, term: 1, membership: Self.membership, chunkBytes: 4096)
        #expect(metadata.index == source.index)
        #expect(try target.appliedIndex == source.index)
        try Self.expectSameState(target, source.storage)
        if sourceKind == .sqlite && targetKind == .sqlite {
            // Big enough that every section spans frames, one session included.
            let kinds = try KVSnapshotImage.frameOffsets(source.storage.wholeImage().data).map(\.kind)
            #expect(kinds.filter { $0 == 2 }.count > 3 && kinds.filter { $0 == 4 }.count >= 2, "\(kinds)")
        }
        // The sessions came along: after the key changes, a retry on the target is answered
        // from its record (the value read then), as on the source, not applied again.
        let targetWriter = try Writer(target, index: metadata.index)
        let retry = Self.sessionRead("key/2", session: Self.sessions[1], sequence: 1)
        for writer in [source, targetWriter] { try writer.apply([Self.put("key/2", Array("changed".utf8))]) }
        #expect(try targetWriter.apply([retry]) == source.apply([retry]))
    }

    /// Everything a client or a member can see of the two states is the same.
    static func expectSameState(_ target: any NodeStorage, _ source: any NodeStorage) throws {
        let (current, compacted) = try source.revisions()
        #expect(try target.revisions() == (current, compacted))
        #expect(compacted > 0, "the state should have compacted history")
        // Every key at every readable revision, and every change with its previous version.
        for revision in compacted...current {
            let request = RangeRequest(.prefix([]), revision: revision, limit: 10_000)
            #expect(try target.read(request) == source.read(request), "reads at revision \(revision) differ")
        }
        var from = compacted + 1
        while from <= current {
            let expected = try source.changes(in: all, from: from, through: current, withPrevious: true, limit: 100).get()
            #expect(try target.changes(in: all, from: from, through: current, withPrevious: true, limit: 100).get() == expected)
            from = expected.nextRevision
        }
        #expect(try target.stateHash().get() == source.stateHash().get())
        // Leases, with the keys each holds.
        let leases = try source.leases()
        #expect(leases.count == 2)
        #expect(try target.leases() == leases)
        for lease in leases { #expect(try target.lease(lease.id)?.keys == source.lease(lease.id)?.keys) }
        // The sessions and their results (read back through the image each store writes now).
        let sessions = try KVSnapshot(decoding: source.wholeImage().data).sessions
        #expect(sessions.map(\.record.id).sorted() == SnapshotImageTests.sessions.sorted())
        #expect(try KVSnapshot(decoding: target.wholeImage().data).sessions == sessions)
        // And the image the target writes is the source's, byte for byte.
        #expect(try target.wholeImage().data == source.wholeImage().data)
    }

    @Test("a chunk that does not continue the staged image, or an install of a partial one, is refused and changes nothing",
        arguments: BackendKind.allCases)
    func misfitChunks(_ kind: BackendKind) throws {
        let targetDirectory = TempDirectory()
        let source = try Writer(MemoryNodeStorage())
        try Self.fill(source, bulk: false)
        let (index, data) = try source.storage.wholeImage()
        let metadata = Raft.SnapshotMetadata(index: index, term: 2, membership: Self.membership)
        let chunks = snapshotChunks(of: data, metadata: metadata, chunkBytes: 512)
        #expect(chunks.count >= 4)
        let target = try Writer(try kind.make(targetDirectory))
        try target.apply([Self.put("mine", Array("kept".utf8))])

        func refused(_ batch: StorageBatch, _ expected: String) {
            do {
                _ = try target.storage.commit(batch)
                Issue.record("accepted: \(expected)")
            } catch StorageError.invalidBatch(let reason) {
                #expect(reason.contains(expected), "\(reason)")
            } catch {
                Issue.record("\(expected): \(error)")
            }
        }
        refused(StorageBatch(snapshotChunks: [chunks[1]]), "does not continue the staged image (nothing is staged)")
        _ = try target.storage.commit(StorageBatch(snapshotChunks: [chunks[0]]))
        refused(StorageBatch(snapshotChunks: [chunks[2]]), "at byte 1024 of snapshot \(index)")
        var another = chunks[1]
        another.metadata.index += 1
        refused(StorageBatch(snapshotChunks: [another]), "of snapshot \(index + 1)")
        // A batch whose second chunk is wrong stages neither.
        refused(StorageBatch(snapshotChunks: [chunks[1], chunks[3]]), "at byte 1536")
        refused(StorageBatch(snapshot: metadata, snapshotChunks: [chunks[1]]), "not staged whole")
        #expect(try target.storage.read(RangeRequest(.key(Array("mine".utf8)))).get().kvs.first?.value == Array("kept".utf8))
        #expect(try target.storage.appliedIndex == 1)
        // The staging is intact: the right chunks go on from where it stood.
        try target.storage.install(Array(chunks.dropFirst()), hardState: Raft.HardState(term: 2, commit: index))
        #expect(try target.storage.appliedIndex == index)
        #expect(try target.storage.read(RangeRequest(.key(Array("mine".utf8)))).get().kvs.isEmpty)
        try Self.expectSameState(target.storage, source.storage)
    }

    @Test("a damaged image is refused naming the snapshot; the transaction that had begun to install it rolls back, and the next image installs",
        arguments: BackendKind.allCases)
    func damagedImage(_ kind: BackendKind) throws {
        let sourceDirectory = TempDirectory()
        let targetDirectory = TempDirectory()
        let source = try Writer(try BackendKind.sqlite.make(sourceDirectory))
        try Self.fill(source, bulk: true)
        let (index, data) = try source.storage.wholeImage()
        let frames = try KVSnapshotImage.frameOffsets(data)
        #expect(frames.count > 6, "the image should have several frames")
        let target = try Writer(try kind.make(targetDirectory))
        try target.apply([Self.put("mine", Array("kept".utf8)), Self.put("key/3", Array("old".utf8))])
        let before = try target.storage.stateHash().get()

        // A byte of the last changes frame: the frames before it were installed when it fails.
        var damaged = data
        let last = try #require(frames.last { $0.kind == 2 })
        damaged[last.offset + 20] ^= 0x40
        let metadata = Raft.SnapshotMetadata(index: index, term: 2, membership: Self.membership)
        do {
            try target.storage.install(snapshotChunks(of: damaged, metadata: metadata, chunkBytes: 4096), hardState: Raft.HardState(term: 2, commit: index))
            Issue.record("a damaged image was installed")
        } catch StorageError.imageRefused(let refused, let detail) {
            #expect(refused == index)
            #expect(detail.contains("frame at byte \(last.offset): checksum mismatch"), "\(detail)")
        }
        #expect(try target.storage.appliedIndex == 2)
        #expect(try target.storage.read(RangeRequest(.key(Array("key/3".utf8)))).get().kvs.first?.value == Array("old".utf8))
        #expect(try target.storage.read(RangeRequest(.key(Array("key/4".utf8)))).get().kvs.isEmpty)
        #expect(try target.storage.stateHash().get() == before)
        #expect(try target.storage.load()?.entries.count == 2)
        if kind == .sqlite {
            // As it is on disk.
            try target.storage.close()
            let reopened = try SQLiteNodeStorage(path: targetDirectory.path())
            #expect(try reopened.stateHash().get() == before)
            #expect(try reopened.read(RangeRequest(.key(Array("mine".utf8)))).get().kvs.first?.value == Array("kept".utf8))
            // The refused staging is gone: the leader's next image installs from its first byte.
            try reopened.install(snapshotChunks(of: data, metadata: metadata, chunkBytes: 4096), hardState: Raft.HardState(term: 2, commit: index))
            try Self.expectSameState(reopened, source.storage)
        } else {
            try target.storage.install(snapshotChunks(of: data, metadata: metadata, chunkBytes: 4096), hardState: Raft.HardState(term: 2, commit: index))
            try Self.expectSameState(target.storage, source.storage)
        }
    }

    @Test("an image reflects the applied index it was prepared at while writes go on; a newer one replaces it")
    func preparedImages() throws {
        let directory = TempDirectory()
        let writer = try Writer(try SQLiteNodeStorage(path: directory.path()))
        try writer.apply([Self.put("a", [1]), Self.put("b", [2])])
        let first = try writer.storage.prepareSnapshotImage()
        #expect(first.index == 2)
        let snapshotsDirectory = SQLiteNodeStorage.snapshotDirectory(directory.path())
        #expect(try FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory) == ["image-2.akv3"])
        try writer.apply([Self.put("a", [3])])
        // Still served as it was prepared, at index 2, after the write.
        let bytes = try #require(try writer.storage.snapshotImageBytes(index: 2, offset: 0, length: first.bytes + 100))
        #expect(bytes.count == first.bytes)
        let image = try KVSnapshot(decoding: bytes)
        #expect(image.revision == 2 && image.changes.map(\.keyValue?.value) == [[1], [2]])
        #expect(try writer.storage.snapshotImageBytes(index: 2, offset: first.bytes - 3, length: 10)?.count == 3)
        let second = try writer.storage.prepareSnapshotImage()
        #expect(second.index == 3)
        #expect(try writer.storage.snapshotImageBytes(index: 2, offset: 0, length: 10) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory) == ["image-3.akv3"])
        // Staged chunks and images do not outlive the store: opening again removes them.
        _ = try writer.storage.commit(
            StorageBatch(snapshotChunks: snapshotChunks(of: Array(bytes.prefix(10)), metadata: Raft.SnapshotMetadata(index: 9, term: 1, membership: Self.membership), chunkBytes: 4)))
        #expect(FileManager.default.fileExists(atPath: snapshotsDirectory + "/staging.akv3"))
        let reopened = try SQLiteNodeStorage(path: directory.path())
        #expect(try FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory).isEmpty)
        #expect(try reopened.snapshotImageBytes(index: 3, offset: 0, length: 10) == nil)
    }

    @Test("images prepared while commits go on are each the state at the applied index they report")
    func prepareDuringCommits() throws {
        let directory = TempDirectory()
        let storage = try SQLiteNodeStorage(path: directory.path())
        try storage.bootstrap(.bootstrap(Self.membership))
        // Each entry is one put, so the state at applied index i is at revision i. The commits
        // run on a thread of their own while images are prepared here, however the two interleave.
        let failure = Mutex<String?>(nil)
        let committed = DispatchGroup()
        committed.enter()
        Thread {
            defer { committed.leave() }
            do {
                for index in 1...300 as ClosedRange<Raft.Index> {
                    let put = Self.put("k\(index % 7)", Array(repeating: 1, count: 100))
                    let entry = Raft.Entry(term: 1, index: index, payload: .command(put.encoded()))
                    _ = try storage.commit(StorageBatch(entries: [entry], hardState: Raft.HardState(term: 1, commit: index), committedEntries: [entry]))
                }
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
        }.start()
        func check() throws -> Raft.Index {
            let (index, data) = try storage.wholeImage(chunkBytes: 1 << 20)
            let image = try KVSnapshot(decoding: data)
            #expect(image.revision == Revision(index), "the image prepared at index \(index) holds revision \(image.revision)")
            #expect(image.changes.count == Int(index))
            return index
        }
        while committed.wait(timeout: .now()) == .timedOut { _ = try check() }
        #expect(failure.withLock { $0 } == nil)
        #expect(try check() == 300)
    }
}
