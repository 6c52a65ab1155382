import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import Testing

/// Damage to acknowledged records of the live segment: a bad sector is not a torn write, and
/// opening must refuse the log instead of cutting what was acknowledged.
@Suite("Log corruption")
struct LogCorruptionTests {
    @Test("a flipped bit in an early record of the last segment, with later batches behind it, is refused at open")
    func corruptionInLastSegmentIsRefused() throws {
        let directory = TempDirectory()
        let path = directory.path()
        do {
            let storage = try SQLiteNodeStorage(path: path)
            try storage.bootstrap(.bootstrap(SegmentedLogTests.membership))
            for index in Raft.Index(1)...30 {
                _ = try storage.commit(
                    StorageBatch(entries: SegmentedLogTests.entries(index...index), hardState: Raft.HardState(term: 1, vote: NodeID(1), commit: index)))
            }
            try storage.close()
        }
        let file = try #require(try SegmentedLogTests.segments(path).last)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        // A third of the way into what the batches wrote: an acknowledged entry, 20 batches behind it.
        let records = try SegmentedLogTests.records(file)
        let target = try #require(records.last).offset / 3
        try SegmentedLogTests.flipByte(file, at: target)
        let error = #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path) }
        guard case .corruptedLog(let named, let offset, let lastGoodIndex, _) = error else {
            Issue.record("expected the damaged batch to be refused, got \(String(describing: error))")
            return
        }
        // The batch that holds the flipped byte, and the entry before it.
        let batch = try #require(records.last { $0.batch <= target }).batch
        let before = records.filter { $0.batch < batch && $0.kind == 1 }.count
        #expect(named == file && offset == batch && lastGoodIndex == Raft.Index(before))
        #expect(error?.description.contains(file) == true && error?.description.contains("byte \(batch)") == true)
        let after = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        #expect(after == size, "the segment was cut from \(size) to \(after) bytes")
    }

    @Test("inspecting a log never writes: it reports the torn tail that opening would cut, and refuses a damaged one")
    func inspectionIsReadOnly() throws {
        let directory = TempDirectory()
        let path = directory.path()
        do {
            let storage = try SQLiteNodeStorage(path: path)
            try storage.bootstrap(.bootstrap(SegmentedLogTests.membership))
            _ = try storage.commit(StorageBatch(entries: SegmentedLogTests.entries(1...5), hardState: Raft.HardState(term: 1, vote: NodeID(1))))
            _ = try storage.commit(StorageBatch(entries: SegmentedLogTests.entries(6...8), hardState: Raft.HardState(term: 1, vote: NodeID(1))))
            try storage.close()
        }
        let file = try #require(try SegmentedLogTests.segments(path).last)
        let records = try SegmentedLogTests.records(file)
        let torn = try #require(records.last).batch
        // The last batch torn: its last record's body never reached the disk.
        try SegmentedLogTests.flipByte(file, at: try #require(records.last).body)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        let inspection = try SQLiteNodeStorage.inspectLog(path: path)
        #expect(inspection.lastIndex == 5 && inspection.hardState == Raft.HardState(term: 1, vote: NodeID(1)))
        #expect(inspection.cut?.file == file && inspection.cut?.offset == torn && inspection.cut?.bytes == bytes.count - torn)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == bytes, "inspecting wrote to the log")
        // Damage to the first batch, which the second one follows: refused, read-only or not.
        try SegmentedLogTests.flipByte(file, at: try #require(records.first { $0.kind == 1 }).body + 3)
        #expect(throws: StorageError.self) { try SQLiteNodeStorage.inspectLog(path: path) }
        #expect(throws: StorageError.self) { try SQLiteNodeStorage(path: path) }
    }
}
