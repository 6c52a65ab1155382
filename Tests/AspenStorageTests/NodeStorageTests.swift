import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import GRDB
import Testing

/// A fresh database path in a directory removed when the test ends.
final class TempDirectory {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-storage-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String = "node.db") -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

func command(_ key: String, _ value: String) -> Raft.Payload {
    .command(KVCommand.put(Put(key: Array(key.utf8), value: Array(value.utf8))).encoded())
}

/// `prefix` and then `letters` random lowercase letters.
func randomKey(_ prefix: String, letters: Int, _ random: inout SplitMix64) -> String {
    prefix + (0..<letters).map { _ in String(UnicodeScalar(UInt8(97 + random.next() % 26))) }.joined()
}

enum BackendKind: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, memory
    var testDescription: String { rawValue }
    func make(_ directory: TempDirectory) throws -> any NodeStorage {
        switch self {
        case .sqlite: return try SQLiteNodeStorage(path: directory.path())
        case .memory: return MemoryNodeStorage()
        }
    }
}

@Suite("Node storage")
struct NodeStorageTests {
    static let membership = Raft.Membership(voters: [1, 2, 3])

    @Test("a Ready's entries, hard state and applies commit together and load back", arguments: BackendKind.allCases)
    func commitAndLoad(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        #expect(try storage.load() == nil)
        try storage.bootstrap(.bootstrap(Self.membership))
        let entries = [
            Raft.Entry(term: 1, index: 1, payload: .noop),
            Raft.Entry(term: 1, index: 2, payload: command("a", "1")),
            Raft.Entry(term: 1, index: 3, payload: command("b", "2")),
        ]
        let applied = try storage.commit(
            StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, vote: 1, commit: 2), committedEntries: Array(entries.prefix(2))))
        #expect(applied.map(\.index) == [1, 2])
        #expect(applied[0].result == nil)
        guard case .success(.put(let put))? = applied[1].result else {
            Issue.record("expected a put result, got \(String(describing: applied[1].result))")
            return
        }
        #expect(put.revision == 1)
        #expect(try storage.appliedIndex == 2)
        let state = try #require(try storage.load())
        #expect(state.hardState == Raft.HardState(term: 1, vote: 1, commit: 2))
        #expect(state.entries == entries)
        #expect(state.appliedIndex == 2)
        #expect(try storage.read(RangeRequest(.key(Array("a".utf8)))).get().kvs.first?.value == Array("1".utf8))
        #expect(try storage.read(RangeRequest(.key(Array("b".utf8)))).get().kvs.isEmpty)
    }

    @Test("the first lease expiry is known, and follows grants, keep-alives and revocations", arguments: BackendKind.allCases)
    func earliestLeaseExpiry(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        try storage.bootstrap(.bootstrap(Self.membership))
        #expect(try storage.earliestLeaseExpiry() == nil)
        let commands: [KVCommand] = [
            .leaseGrant(LeaseGrant(id: 1, ttlMs: 5_000, nowMs: 1_000)),
            .leaseGrant(LeaseGrant(id: 2, ttlMs: 2_000, nowMs: 1_000)),
            .leaseGrant(LeaseGrant(id: 3, ttlMs: 9_000, nowMs: 1_000)),
        ]
        var index: Raft.Index = 0
        func apply(_ command: KVCommand) throws {
            index += 1
            let entry = Raft.Entry(term: 1, index: index, payload: .command(command.encoded()))
            _ = try storage.commit(StorageBatch(entries: [entry], hardState: Raft.HardState(term: 1, vote: 1, commit: index), committedEntries: [entry]))
        }
        for command in commands { try apply(command) }
        #expect(try storage.earliestLeaseExpiry() == 3_000)
        try apply(.leaseKeepAlive(2, nowMs: 4_000))
        #expect(try storage.earliestLeaseExpiry() == 6_000)
        try apply(.leaseRevoke(1))
        #expect(try storage.earliestLeaseExpiry() == 6_000)
        try apply(.leaseRevoke(2))
        #expect(try storage.earliestLeaseExpiry() == 10_000)
        try apply(.leaseRevoke(3))
        #expect(try storage.earliestLeaseExpiry() == nil)
    }

    @Test("only a batch that applies entries already durable in the log commits without waiting for the disk")
    func applyOnlyCommitsSkipTheDisk() throws {
        let directory = TempDirectory()
        let storage = try SQLiteNodeStorage(path: directory.path())
        try storage.bootstrap(.bootstrap(Self.membership))
        let entries = [Raft.Entry(term: 1, index: 1, payload: command("a", "1")), Raft.Entry(term: 1, index: 2, payload: command("b", "2"))]
        let applyFirst = StorageBatch(hardState: Raft.HardState(term: 1, vote: 1, commit: 1), committedEntries: [entries[0]])
        // Nothing durable is known yet after opening: the first commit with a hard state fsyncs.
        #expect(!storage.commitsWithoutDisk(applyFirst))
        _ = try storage.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, vote: 1, commit: 0)))
        #expect(storage.commitsWithoutDisk(applyFirst))
        #expect(!storage.commitsWithoutDisk(StorageBatch(hardState: Raft.HardState(term: 2, vote: 1, commit: 1), committedEntries: [entries[0]])))
        #expect(!storage.commitsWithoutDisk(StorageBatch(entries: [Raft.Entry(term: 1, index: 3, payload: .noop)])))
        let applied = try storage.commit(applyFirst)
        #expect(applied.map(\.index) == [1])
        #expect(try storage.read(RangeRequest(.key(Array("a".utf8)))).get().kvs.first?.value == Array("1".utf8))
        // And what it applied is there after a reopen.
        try storage.close()
        let reopened = try SQLiteNodeStorage(path: directory.path())
        #expect(try reopened.appliedIndex == 1)
        #expect(try reopened.read(RangeRequest(.key(Array("a".utf8)))).get().kvs.first?.value == Array("1".utf8))
    }

    @Test("new entries replace stored ones from their first index on", arguments: BackendKind.allCases)
    func truncation(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        try storage.bootstrap(.bootstrap(Self.membership))
        _ = try storage.commit(StorageBatch(entries: (1...5).map { Raft.Entry(term: 1, index: $0, payload: .noop) }))
        _ = try storage.commit(StorageBatch(entries: [Raft.Entry(term: 2, index: 3, payload: command("x", "y"))]))
        let state = try #require(try storage.load())
        #expect(state.entries.map(\.index) == [1, 2, 3])
        #expect(state.entries.last?.term == 2)
    }

    @Test("a snapshot from one store installs atomically in another", arguments: BackendKind.allCases)
    func snapshotInstall(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let source = try kind.make(directory)
        try source.bootstrap(.bootstrap(Self.membership))
        let entries = (1...50).map { Raft.Entry(term: 1, index: Raft.Index($0), payload: command("key\($0 % 10)", "v\($0)")) }
        _ = try source.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: 50), committedEntries: entries))
        let (index, data) = try source.wholeImage()
        #expect(index == 50)

        let targetDirectory = TempDirectory()
        let target = try BackendKind.sqlite.make(targetDirectory)
        try target.bootstrap(.joining)
        _ = try target.commit(StorageBatch(entries: [Raft.Entry(term: 1, index: 1, payload: command("stale", "x"))]))
        let metadata = Raft.SnapshotMetadata(index: 50, term: 1, membership: Self.membership)
        try target.install(snapshotChunks(of: data, metadata: metadata, chunkBytes: 64), hardState: Raft.HardState(term: 1, commit: 50))
        #expect(try target.appliedIndex == 50)
        let all = try target.read(RangeRequest(.prefix([]))).get()
        #expect(all.kvs.count == 10)
        #expect(all.kvs.first { $0.key == Array("key3".utf8) }?.value == Array("v43".utf8))
        let state = try #require(try target.load())
        #expect(state.entries.isEmpty)
        #expect(state.snapshot.index == 50)

        // A damaged snapshot is refused whole: the old state stays.
        var damaged = data
        damaged[damaged.count / 2] ^= 0xFF
        let later = Raft.SnapshotMetadata(index: 60, term: 2, membership: Self.membership)
        #expect(throws: StorageError.self) {
            try target.install(snapshotChunks(of: damaged, metadata: later, chunkBytes: 64), hardState: Raft.HardState(term: 2, commit: 60))
        }
        #expect(try target.appliedIndex == 50)
        #expect(try target.read(RangeRequest(.prefix([]))).get().kvs.count == 10)
    }

    @Test("after compaction a restart resumes from the compaction point, and an image is of the applied state", arguments: BackendKind.allCases)
    func compactionAndReload(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        try storage.bootstrap(.bootstrap(Self.membership))
        let joint = Raft.Membership(voters: [1, 2, 4], outgoingVoters: [1, 2, 3], learners: [], learnersNext: [])
        var entries = (1...20).map { Raft.Entry(term: 1, index: Raft.Index($0), payload: command("k\($0)", "v")) }
        entries.append(Raft.Entry(term: 2, index: 21, payload: .membership(joint)))
        entries.append(contentsOf: (22...30).map { Raft.Entry(term: 2, index: Raft.Index($0), payload: command("k\($0)", "v")) })
        _ = try storage.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 2, commit: 25), committedEntries: Array(entries.prefix(25))))
        try storage.compacted(Raft.SnapshotMetadata(index: 10, term: 1, membership: Self.membership))
        let state = try #require(try storage.load())
        // The compaction point as recorded; the entries after it (the joint membership among
        // them); the applied index as stored.
        #expect(state.snapshot == Raft.SnapshotMetadata(index: 10, term: 1, membership: Self.membership))
        #expect(state.entries.map(\.index) == Array(11...30))
        #expect(state.entries.contains { $0.payload == .membership(joint) })
        #expect(state.appliedIndex == 25)
        // An image made now is of the applied state, at the applied index.
        let (index, image) = try storage.wholeImage()
        #expect(index == 25)
        let restored = try KVSnapshot(decoding: image)
        #expect(MemoryKVBackend(snapshot: restored).count(KeyBounds(start: [], end: nil), at: nil) == 24)
    }

    @Test("compaction drops a long log prefix in pieces and never moves the snapshot back", arguments: BackendKind.allCases)
    func longCompaction(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        try storage.bootstrap(.bootstrap(Self.membership))
        let entries = (1...10_000).map { Raft.Entry(term: 1, index: Raft.Index($0), payload: command("k\($0 % 100)", "v\($0)")) }
        _ = try storage.commit(
            StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: 9_500), committedEntries: Array(entries.prefix(9_500))))
        try storage.compacted(Raft.SnapshotMetadata(index: 9_000, term: 1, membership: Self.membership))
        // A compaction finishing late, after a newer one, changes nothing.
        try storage.compacted(Raft.SnapshotMetadata(index: 5_000, term: 1, membership: Self.membership))
        let state = try #require(try storage.load())
        #expect(state.snapshot.index == 9_000 && state.appliedIndex == 9_500)
        #expect(state.entries.map(\.index) == Array(9_001...10_000))
        #expect(try storage.read(RangeRequest(.key(Array("k7".utf8)))).get().kvs.first?.value == Array("v9407".utf8))
    }

    /// A fresh SQLite store after `commits` commits of `perCommit` 1 KiB values each, under keys
    /// of `prefix` and `letters` random letters, every one applied in the commit that writes it.
    static func kilobyteValues(commits: Int, perCommit: Int, prefix: String, letters: Int, seed: UInt64) throws
        -> (directory: TempDirectory, storage: SQLiteNodeStorage)
    {
        let directory = TempDirectory()
        let storage = try SQLiteNodeStorage(path: directory.path())
        try storage.bootstrap(.bootstrap(Self.membership))
        var random = SplitMix64(seed: seed)
        let value = String(repeating: "v", count: 1024)
        var index: Raft.Index = 0
        for _ in 0..<commits {
            let entries = (0..<perCommit).map { _ -> Raft.Entry in
                index += 1
                return Raft.Entry(term: 1, index: index, payload: command(randomKey(prefix, letters: letters, &random), value))
            }
            _ = try storage.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: index), committedEntries: entries))
        }
        return (directory, storage)
    }

    @Test("writes of 1 KiB values take little more disk than their two copies (log, history)")
    func kilobyteValuesStayCompact() throws {
        let count = 2000
        let (directory, storage) = try Self.kilobyteValues(commits: count / 100, perCommit: 100, prefix: "/check-perf/", letters: 244, seed: 7)
        let path = directory.path()
        try storage.close()
        let copies = count * 2 * (1024 + 256)
        let bytes = SQLiteNodeStorage.fileBytes(at: path)
        print("\(count) writes of 1 KiB values with 256-byte keys: \(bytes) bytes of database, \(Double(bytes) / Double(copies)) × their two copies")
        #expect(Double(bytes) < 1.4 * Double(copies))
    }

    @Test("the WAL is copied into the database in the background: commits copy only its last frames, and it stays bounded")
    func backgroundCheckpoints() throws {
        let commits = 3000
        let (directory, storage) = try Self.kilobyteValues(commits: commits, perCommit: 1, prefix: "/k/", letters: 64, seed: 11)
        let path = directory.path()
        let wal = ((try? FileManager.default.attributesOfItem(atPath: path + "-wal"))?[.size] as? Int64) ?? 0
        let checkpoints = storage.checkpoints
        print("\(commits) commits: WAL \(wal / 8216) frames long at most, \(checkpoints) checkpoints")
        #expect(checkpoints.background >= 1)
        #expect(checkpoints.finishedByWriter >= 1)
        #expect(checkpoints.wholeByWriter == 0)
        #expect(wal < 2 * 4096 * 8216)
        // Everything is there after a reopen.
        try storage.close()
        let reopened = try SQLiteNodeStorage(path: path)
        #expect(try reopened.appliedIndex == Raft.Index(commits))
        #expect(try reopened.revisions().current == Revision(commits))
    }

    @Test("a file that is not a database, or a truncated one, is refused at open with a clear error")
    func garbageAndTruncation() throws {
        let directory = TempDirectory()
        let garbage = directory.path("garbage.db")
        var generator = SplitMix64(seed: 5)
        let bytes = (0..<8192).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        FileManager.default.createFile(atPath: garbage, contents: Data(bytes))
        let garbageError = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: garbage) }
        #expect(garbageError?.description.contains(garbage) == true)

        let truncated = directory.path("truncated.db")
        do {
            let storage = try SQLiteNodeStorage(path: truncated)
            try storage.bootstrap(.bootstrap(Self.membership))
            let payload = String(repeating: "x", count: 2000)
            for batch in 0..<20 {
                let entries = (1...20).map { Raft.Entry(term: 1, index: Raft.Index(batch * 20 + $0), payload: command("k\($0)", payload)) }
                _ = try storage.commit(StorageBatch(entries: entries))
            }
        }
        // Fold the WAL into the main file, then cut the file in half.
        try DatabaseQueue(path: truncated).writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        let size = try FileManager.default.attributesOfItem(atPath: truncated)[.size] as! Int
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: truncated))
        try handle.truncate(atOffset: UInt64(size / 2))
        try handle.close()
        let error = #expect(throws: (any Error).self) {
            let storage = try SQLiteNodeStorage(path: truncated)
            _ = try storage.load()
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains(truncated))
    }

    @Test("a key with thousands of versions, deletions among them, reads right at every revision before and after compaction and after reopening")
    func longVersionChains() throws {
        let directory = TempDirectory()
        var sqlite = try SQLiteNodeStorage(path: directory.path())
        let memory = MemoryNodeStorage()
        for store in [sqlite, memory] as [any NodeStorage] { try store.bootstrap(.bootstrap(Self.membership)) }
        var index: Raft.Index = 0
        func apply(_ commands: [KVCommand]) throws {
            let entries = commands.map { command -> Raft.Entry in
                index += 1
                return Raft.Entry(term: 1, index: index, payload: .command(command.encoded()))
            }
            for store in [sqlite, memory] as [any NodeStorage] {
                _ = try store.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: index), committedEntries: entries))
            }
        }
        let hot = Array("hot".utf8)
        for round in 0..<30 {
            try apply((0..<100).map { step in
                let number = round * 100 + step
                if number % 97 == 96 { return .delete(Delete(.key(hot))) }
                return .put(Put(key: number % 5 == 0 ? Array("cold\(number % 7)".utf8) : hot, value: Array("v\(number)".utf8)))
            })
        }
        func expectSameReads(from oldest: Revision, through latest: Revision) throws {
            for revision in stride(from: max(1, oldest), through: latest, by: 7) {
                for request in [RangeRequest(.key(hot), revision: revision), RangeRequest(.prefix([]), revision: revision, countOnly: true)] {
                    #expect(try sqlite.read(request) == memory.read(request), "revision \(revision)")
                }
            }
        }
        var (latest, oldest) = try memory.revisions()
        try expectSameReads(from: oldest, through: latest)
        try apply([.compact(latest / 2)])
        (latest, oldest) = try memory.revisions()
        try expectSameReads(from: oldest, through: latest)
        try apply((0..<500).map { .put(Put(key: hot, value: Array("w\($0)".utf8))) })
        (latest, oldest) = try memory.revisions()
        try expectSameReads(from: oldest, through: latest)
        #expect(try sqlite.stateHash().get() == memory.stateHash().get())
        // The index of versions is rebuilt from the file on opening.
        try sqlite.close()
        sqlite = try SQLiteNodeStorage(path: directory.path())
        try expectSameReads(from: oldest, through: latest)
        #expect(try sqlite.stateHash().get() == memory.stateHash().get())
    }

    @Test("a file of the first schema opens with its history intact, and a newer schema is refused by name")
    func firstSchemaMigrates() throws {
        let directory = TempDirectory()
        let path = directory.path()
        // Schema 1 as earlier releases wrote it: history keyed by (key, revision), no current row
        // for a deleted key. a: put at 1 and 2; b: put at 3, deleted at 4; c: put at 5.
        try DatabaseQueue(path: path).write { db in
            try db.execute(
                sql: """
                    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    CREATE TABLE raft_log (grp INTEGER NOT NULL, idx INTEGER NOT NULL, term INTEGER NOT NULL,
                        payload BLOB NOT NULL, checksum INTEGER NOT NULL, PRIMARY KEY (grp, idx)) WITHOUT ROWID;
                    CREATE TABLE raft_state (grp INTEGER PRIMARY KEY, term INTEGER NOT NULL, vote INTEGER, commit_index INTEGER NOT NULL,
                        applied_index INTEGER NOT NULL, snapshot_index INTEGER NOT NULL, snapshot_term INTEGER NOT NULL,
                        snapshot_membership BLOB NOT NULL, revision INTEGER NOT NULL DEFAULT 0,
                        compacted_revision INTEGER NOT NULL DEFAULT 0, lease_sequence INTEGER NOT NULL DEFAULT 0);
                    CREATE TABLE kv_current (key BLOB PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
                        mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE INDEX kv_current_lease ON kv_current(lease) WHERE lease != 0;
                    CREATE TABLE kv_history (key BLOB NOT NULL, revision INTEGER NOT NULL, value BLOB, create_revision INTEGER NOT NULL,
                        version INTEGER NOT NULL, lease INTEGER NOT NULL, PRIMARY KEY (key, revision)) WITHOUT ROWID;
                    CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL);
                    INSERT INTO meta VALUES ('schema_version', 1);
                    INSERT INTO kv_current VALUES (CAST('a' AS BLOB), CAST('a2' AS BLOB), 1, 2, 2, 0), (CAST('c' AS BLOB), CAST('c5' AS BLOB), 5, 5, 1, 0);
                    INSERT INTO kv_history VALUES (CAST('a' AS BLOB), 1, CAST('a1' AS BLOB), 1, 1, 0), (CAST('a' AS BLOB), 2, CAST('a2' AS BLOB), 1, 2, 0),
                        (CAST('b' AS BLOB), 3, CAST('b3' AS BLOB), 3, 1, 0), (CAST('b' AS BLOB), 4, NULL, 0, 0, 0),
                        (CAST('c' AS BLOB), 5, CAST('c5' AS BLOB), 5, 1, 0);
                    """)
            try db.execute(
                sql: "INSERT INTO raft_state VALUES (0, 1, NULL, 5, 5, 5, 1, ?, 5, 0, 0)",
                arguments: [Data(Raft.encode(Self.membership))])
        }
        let expected = MemoryNodeStorage()
        try expected.bootstrap(.bootstrap(Self.membership))
        let commands: [KVCommand] = [
            .put(Put(key: Array("a".utf8), value: Array("a1".utf8))), .put(Put(key: Array("a".utf8), value: Array("a2".utf8))),
            .put(Put(key: Array("b".utf8), value: Array("b3".utf8))), .delete(Delete(.key(Array("b".utf8)))),
            .put(Put(key: Array("c".utf8), value: Array("c5".utf8))),
        ]
        let entries = commands.enumerated().map { Raft.Entry(term: 1, index: Raft.Index($0.offset + 1), payload: .command($0.element.encoded())) }
        _ = try expected.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: 5), committedEntries: entries))
        do {
            let storage = try SQLiteNodeStorage(path: path)
            for revision in 1...5 as ClosedRange<Revision> {
                let request = RangeRequest(.prefix([]), revision: revision)
                #expect(try storage.read(request) == expected.read(request), "revision \(revision)")
            }
            // It keeps working in the new layout: compaction, then a read at the compacted revision.
            let compact = Raft.Entry(term: 1, index: 6, payload: .command(KVCommand.compact(4).encoded()))
            for store in [storage, expected] as [any NodeStorage] {
                _ = try store.commit(StorageBatch(entries: [compact], hardState: Raft.HardState(term: 1, commit: 6), committedEntries: [compact]))
            }
            let request = RangeRequest(.prefix([]), revision: 4)
            #expect(try storage.read(request) == expected.read(request))
            #expect(try storage.stateHash().get() == expected.stateHash().get())
            try storage.close()
        }
        try DatabaseQueue(path: path).write { try $0.execute(sql: "UPDATE meta SET value = 99 WHERE name = 'schema_version'") }
        let error = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path) }
        #expect(error?.description.contains("version 99 is newer") == true)
    }
}
