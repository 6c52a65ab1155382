import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation

/// The writer half of the crash test: appends and applies batches of puts to a real database
/// until it is killed, printing `committed INDEX BATCH` after each commit returns. The checker
/// (the test) kills it with SIGKILL at random points, reopens the database and verifies it.
enum CrashWriter {
    /// The value a batch writes under each of its keys: derived, so the checker can recompute it.
    static func value(batch: Int, item: Int) -> Bytes {
        var generator = SplitMix64(seed: UInt64(batch) &* 1_000_003 &+ UInt64(item))
        let length = Int(generator.next(in: 8...600))
        return (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    }

    static func itemCount(batch: Int) -> Int {
        var generator = SplitMix64(seed: UInt64(batch) &+ 77)
        return Int(generator.next(in: 1...40))
    }

    static func key(batch: Int, item: Int) -> Bytes { Array("b\(batch)/i\(item)".utf8) }

    static func run(path: String, batches: Int) throws {
        let storage = try SQLiteNodeStorage(path: path)
        var state = try storage.load()
        if state == nil {
            try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
            state = try storage.load()
        }
        guard let loaded = state else { return }
        // A kill between a batch's log write and its apply leaves entries to apply, as a node
        // applies the committed entries it finds after a restart.
        let applied = try storage.appliedIndex
        _ = try storage.commit(StorageBatch(committedEntries: loaded.entries.filter { $0.index > applied }))
        var index = loaded.entries.last?.index ?? loaded.snapshot.index
        // Batches are numbered by the index of their first entry's batch marker: resume after the last.
        var batch = try lastBatch(storage) + 1
        for _ in 0..<batches {
            var entries: [Raft.Entry] = []
            for item in 0..<itemCount(batch: batch) {
                index += 1
                let put = KVCommand.put(Put(key: key(batch: batch, item: item), value: value(batch: batch, item: item)))
                entries.append(Raft.Entry(term: 1, index: index, payload: .command(put.encoded())))
            }
            // A marker that makes the batch count part of the state too.
            index += 1
            let marker = KVCommand.put(Put(key: Array("last-batch".utf8), value: Array(String(batch).utf8)))
            entries.append(Raft.Entry(term: 1, index: index, payload: .command(marker.encoded())))
            _ = try storage.commit(
                StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, vote: 1, commit: index), committedEntries: entries))
            // Unbuffered: the line must be out before the next batch, or a kill could lose it.
            FileHandle.standardOutput.write(Data("committed \(index) \(batch)\n".utf8))
            batch += 1
        }
    }

    static func lastBatch(_ storage: SQLiteNodeStorage) throws -> Int {
        let result = try storage.read(RangeRequest(.key(Array("last-batch".utf8)))).get()
        guard let value = result.kvs.first?.value, let text = String(validating: value, as: UTF8.self) else { return 0 }
        return Int(text) ?? 0
    }
}

