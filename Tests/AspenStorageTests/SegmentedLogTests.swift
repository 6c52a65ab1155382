import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import GRDB
import Testing

/// The Raft log's segment files beside the database: what survives a torn write, corruption,
/// replaced suffixes, compaction and a database written before the log had files.
@Suite("Log segments")
struct SegmentedLogTests {
    static let membership = Raft.Membership(voters: [NodeID(1)])
    /// Small segments, so a few dozen entries span several files.
    static let segmentBytes = 1024

    static func entries(_ range: ClosedRange<Raft.Index>, term: Raft.Term = 1) -> [Raft.Entry] {
        range.map { Raft.Entry(term: term, index: $0, payload: command("k\($0)", "value\($0) of term \(term)")) }
    }

    /// A store whose log holds entries 1 through `count`, one batch each.
    static func store(_ directory: TempDirectory, count: Raft.Index) throws -> SQLiteNodeStorage {
        let storage = try SQLiteNodeStorage(path: directory.path(), logSegmentBytes: segmentBytes)
        try storage.bootstrap(.bootstrap(membership))
        for index in 1...count {
            _ = try storage.commit(StorageBatch(entries: entries(index...index), hardState: Raft.HardState(term: 1, commit: index - 1)))
        }
        return storage
    }

    static func segments(_ path: String) throws -> [String] {
        let directory = SQLiteNodeStorage.logDirectory(path)
        return try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".seg") }.sorted().map { directory + "/" + $0 }
    }

    /// The records in a segment file: where each starts and where its body starts, its kind, and
    /// the offset of the batch it belongs to.
    static func records(_ file: String) throws -> [(offset: Int, body: Int, kind: UInt8, batch: Int)] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        func uint32(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24 }
        var found: [(Int, Int, UInt8, Int)] = []
        var batch = 8
        while batch + 12 <= bytes.count, uint32(batch) != 0 {
            let end = batch + 12 + uint32(batch)
            var offset = batch + 12
            while offset < end {
                found.append((offset, offset + 5, bytes[offset + 4], batch))
                offset += 5 + uint32(offset)
            }
            batch = end
        }
        return found
    }

    static func flipByte(_ file: String, at offset: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file))
        try handle.seek(toOffset: UInt64(offset))
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: [byte ^ 0x5A])
        try handle.close()
    }

    @Test("entries, term and vote come back after a reopen, across several segment files")
    func reopenReadsEverything() throws {
        let directory = TempDirectory()
        let path = directory.path()
        do {
            let storage = try Self.store(directory, count: 40)
            _ = try storage.commit(StorageBatch(hardState: Raft.HardState(term: 2, vote: NodeID(1), commit: 39)))
        }
        #expect(try Self.segments(path).count > 3)
        let state = try #require(try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes).load())
        #expect(state.entries == Self.entries(1...40))
        #expect(state.hardState.term == 2 && state.hardState.vote == NodeID(1) && state.hardState.commit == 39)
    }

    @Test("a flipped bit in an entry of a closed segment is caught by its checksum, naming the file and index")
    func checksumCatchesCorruption() throws {
        let directory = TempDirectory()
        let path = directory.path()
        _ = try Self.store(directory, count: 40)
        let first = try #require(try Self.segments(path).first)
        let entry = try #require(try Self.records(first).filter { $0.kind == 1 }.dropFirst(2).first)
        try Self.flipByte(first, at: entry.body + 20)
        let error = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes) }
        guard case .corruptedLog(let file, let offset, let lastGoodIndex, _) = error else {
            Issue.record("expected the damaged batch to be refused, got \(String(describing: error))")
            return
        }
        #expect(file == first && offset == entry.batch && lastGoodIndex == 2)
        #expect(error?.description.contains(first) == true)
        #expect(error?.description.contains("after log entry 2") == true)
    }

    @Test("a missing segment is reported as a gap, not skipped")
    func gapIsReported() throws {
        let directory = TempDirectory()
        let path = directory.path()
        _ = try Self.store(directory, count: 40)
        let files = try Self.segments(path)
        try FileManager.default.removeItem(atPath: files[1])
        let error = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes) }
        guard case .logGap(let file, _, let expected, let found) = error else {
            Issue.record("expected a log gap, got \(String(describing: error))")
            return
        }
        #expect(file == files[2] && found > expected)
    }

    @Test("a torn write at the end is cut off, and what it left on disk never reappears behind later entries")
    func tornTailIsCut() throws {
        let directory = TempDirectory()
        let path = directory.path()
        do {
            let storage = try SQLiteNodeStorage(path: path, logSegmentBytes: 1 << 20)
            try storage.bootstrap(.bootstrap(Self.membership))
            _ = try storage.commit(StorageBatch(entries: Self.entries(1...7), hardState: Raft.HardState(term: 1)))
            _ = try storage.commit(StorageBatch(entries: Self.entries(8...10), hardState: Raft.HardState(term: 1)))
        }
        // The last write was torn at entry 8: its record is damaged, 9 and 10 reached the disk whole.
        let file = try #require(try Self.segments(path).last)
        let eighth = try #require(try Self.records(file).filter { $0.kind == 1 }.dropFirst(7).first)
        try Self.flipByte(file, at: eighth.body + 20)
        do {
            let storage = try SQLiteNodeStorage(path: path, logSegmentBytes: 1 << 20)
            #expect(storage.logCut?.file == file && storage.logCut?.offset == eighth.batch)
            #expect(try storage.load()?.entries == Self.entries(1...7))
            // A new leader's entry 8, shorter than the old one: the old 9 and 10 lay behind it.
            _ = try storage.commit(StorageBatch(entries: [Raft.Entry(term: 2, index: 8, payload: .noop)], hardState: Raft.HardState(term: 2)))
        }
        let state = try #require(try SQLiteNodeStorage(path: path, logSegmentBytes: 1 << 20).load())
        #expect(state.entries == Self.entries(1...7) + [Raft.Entry(term: 2, index: 8, payload: .noop)])
        #expect(state.hardState.term == 2)
    }

    @Test("entries that replace a suffix win over the ones they replace, across a reopen")
    func replacedSuffix() throws {
        for backend in BackendKind.allCases {
            let directory = TempDirectory()
            let storage = try backend.make(directory)
            try storage.bootstrap(.bootstrap(Self.membership))
            _ = try storage.commit(StorageBatch(entries: Self.entries(1...6), hardState: Raft.HardState(term: 1)))
            _ = try storage.commit(StorageBatch(entries: Self.entries(4...5, term: 2), hardState: Raft.HardState(term: 2)))
            let expected = Self.entries(1...3) + Self.entries(4...5, term: 2)
            #expect(try storage.load()?.entries == expected, "\(backend)")
            if backend == .sqlite {
                #expect(try SQLiteNodeStorage(path: directory.path()).load()?.entries == expected)
            }
        }
    }

    @Test("compaction deletes the segments that hold only compacted entries, and the rest still loads")
    func compactionDeletesSegments() throws {
        let directory = TempDirectory()
        let path = directory.path()
        let storage = try Self.store(directory, count: 60)
        let committed = Self.entries(1...60)
        _ = try storage.commit(StorageBatch(hardState: Raft.HardState(term: 1, commit: 60), committedEntries: committed))
        let before = try Self.segments(path).count
        try storage.compacted(Raft.SnapshotMetadata(index: 45, term: 1, membership: Self.membership))
        let after = try Self.segments(path).count
        #expect(after < before && after >= 1)
        try storage.close()
        let state = try #require(try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes).load())
        // Raft resumes from the compaction point, with the entries after it and the applied index.
        #expect(state.entries.first?.index == 46 && state.entries.last?.index == 60)
        #expect(state.appliedIndex == 60 && state.snapshot.index == 45)
        #expect(try SQLiteNodeStorage(path: path).revisions().current == 60)
    }

    @Test("an installed snapshot starts the log over after it; a crash before it did keeps no stale entry")
    func snapshotStartsLogOver() throws {
        let directory = TempDirectory()
        let path = directory.path()
        let source = MemoryNodeStorage()
        try source.bootstrap(.bootstrap(Self.membership))
        let leaderEntries = Self.entries(1...20, term: 3)
        _ = try source.commit(StorageBatch(entries: leaderEntries, hardState: Raft.HardState(term: 3, commit: 20), committedEntries: leaderEntries))
        do {
            // A follower with a divergent log (term 1) past the snapshot's index.
            let storage = try Self.store(directory, count: 30)
            let metadata = try transferSnapshot(from: source, to: storage, term: 3, membership: Self.membership)
            #expect(metadata.index == 20)
            #expect(try Self.segments(path).count == 1)
            _ = try storage.commit(StorageBatch(entries: Self.entries(21...22, term: 3)))
        }
        let state = try #require(try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes).load())
        #expect(state.snapshot.index == 20 && state.appliedIndex == 20)
        #expect(state.entries == Self.entries(21...22, term: 3))
        // The snapshot's keys, and none of the divergent log's.
        let everything = RangeRequest(.range(start: [], end: nil))
        #expect(try SQLiteNodeStorage(path: path).read(everything).get().kvs == source.read(everything).get().kvs)
    }

    @Test("a database that kept its log in a table moves it into segment files on opening")
    func legacyLogMoves() throws {
        let directory = TempDirectory()
        let path = directory.path()
        do {
            let storage = try SQLiteNodeStorage(path: path)
            try storage.bootstrap(.bootstrap(Self.membership))
            try storage.close()
        }
        // The log as schema 2 kept it: rows in raft_log, the term and vote in raft_state.
        try FileManager.default.removeItem(atPath: SQLiteNodeStorage.logDirectory(path))
        try DatabaseQueue(path: path).write { db in
            for entry in Self.entries(1...5, term: 2) {
                let payload = entry.payload.encoded()
                try db.execute(
                    sql: "INSERT INTO raft_log(grp, idx, term, payload, checksum) VALUES (0, ?, ?, ?, ?)",
                    arguments: [entry.index, entry.term, Data(payload), Raft.Entry.checksum(index: entry.index, term: entry.term, payload: payload)])
            }
            try db.execute(sql: "UPDATE raft_state SET term = 2, vote = 1, commit_index = 4")
            try db.execute(sql: "UPDATE meta SET value = 2 WHERE name = 'schema_version'")
        }
        let state = try #require(try SQLiteNodeStorage(path: path).load())
        #expect(state.entries == Self.entries(1...5, term: 2))
        #expect(state.hardState == Raft.HardState(term: 2, vote: NodeID(1), commit: 4))
        #expect(try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM raft_log") } == 0)
        #expect(try SQLiteNodeStorage(path: path).load()?.entries == Self.entries(1...5, term: 2))
    }

    @Test("a member's database without its log directory is refused at open, naming the directory")
    func missingLogDirectoryIsRefused() throws {
        let directory = TempDirectory()
        let path = directory.path()
        _ = try Self.store(directory, count: 5)
        let logDirectory = SQLiteNodeStorage.logDirectory(path)
        try FileManager.default.removeItem(atPath: logDirectory)
        let error = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path) }
        guard case .corrupted(let file, let detail) = error else {
            Issue.record("expected the missing log to be refused, got \(String(describing: error))")
            return
        }
        #expect(file == logDirectory && detail.contains("missing"))
    }

    @Test("after a power loss the database may lose applies it never fsynced, but the log has every entry and applying it again restores the state")
    func stateBehindLogCatchesUp() throws {
        let directory = TempDirectory()
        let path = directory.path()
        let reference = MemoryNodeStorage()
        try reference.bootstrap(.bootstrap(Self.membership))
        let storage = try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes)
        try storage.bootstrap(.bootstrap(Self.membership))
        func write(_ range: ClosedRange<Raft.Index>) throws {
            let entries = Self.entries(range)
            let batch = StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: range.upperBound), committedEntries: entries)
            _ = try storage.commit(batch)
            _ = try reference.commit(batch)
        }
        try write(1...10)
        // The database files as the disk held them at this point: later applies were never
        // fsynced (synchronous=NORMAL), so a power loss may take them back to here.
        let saved = directory.path("saved")
        try FileManager.default.createDirectory(atPath: saved, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.copyItem(atPath: path + suffix, toPath: saved + "/db" + suffix)
        }
        try write(11...30)
        try storage.close()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: saved + "/db" + suffix) {
            try FileManager.default.copyItem(atPath: saved + "/db" + suffix, toPath: path + suffix)
        }
        let reopened = try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes)
        let state = try #require(try reopened.load())
        #expect(state.appliedIndex == 10)
        #expect(state.entries.last?.index == 30 && state.hardState.commit == 30)
        // What a restarted node does: apply the committed entries after the applied index.
        _ = try reopened.commit(StorageBatch(committedEntries: state.entries.filter { $0.index > state.appliedIndex }))
        #expect(try reopened.appliedIndex == 30)
        #expect(try reopened.stateHash().get() == reference.stateHash().get())
    }

    @Test("a segment whose creation a crash cut short is started over, and the log goes on")
    func unfinishedSegmentStartsOver() throws {
        let directory = TempDirectory()
        let path = directory.path()
        _ = try Self.store(directory, count: 8)
        // The next segment's file exists, but its header never reached the disk.
        let last = try #require(try Self.segments(path).last)
        let sequence = try #require(UInt64(URL(fileURLWithPath: last).deletingPathExtension().lastPathComponent, radix: 16))
        let hex = String(sequence + 1, radix: 16)
        let next = SQLiteNodeStorage.logDirectory(path) + "/" + String(repeating: "0", count: 16 - hex.count) + hex + ".seg"
        #expect(FileManager.default.createFile(atPath: next, contents: Data("ASP".utf8)))
        do {
            let storage = try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes)
            #expect(try storage.load()?.entries == Self.entries(1...8))
            _ = try storage.commit(StorageBatch(entries: Self.entries(9...9), hardState: Raft.HardState(term: 1, commit: 8)))
        }
        #expect(try SQLiteNodeStorage(path: path, logSegmentBytes: Self.segmentBytes).load()?.entries == Self.entries(1...9))
    }
}
