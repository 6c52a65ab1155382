import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A snapshot streamed between two stores on this disk, as a leader and a follower do: the
/// source writes an image of its state, the target stages it in Raft-sized chunks and installs
/// it. Prints the rates and the most heap the process held meanwhile, which must stay far below
/// the image's size: beyond SQLite's page caches and the key index's kept versions (bounded),
/// only the key index grows with the state.
extension StorageBench {
    func snapshotTransfer(keys: Int, valueBytes: Int, rounds: Int) throws {
        let sourcePath = freshPath("snapshot-source")
        let targetPath = freshPath("snapshot-target")
        defer {
            removeDatabase(sourcePath)
            removeDatabase(targetPath)
        }
        let source = try SQLiteNodeStorage(path: sourcePath, verify: false)
        let filled = try Self.fill(source, keys: keys, valueBytes: valueBytes, rounds: rounds)
        print("state: \(keys) keys x \(rounds) versions of \(valueBytes) bytes, database \(SQLiteNodeStorage.fileBytes(at: sourcePath) >> 20) MiB")
        let clock = ContinuousClock()
        let memoryBefore = Self.anonymousMemoryBytes()
        let sampler = PeakMemory()

        var started = clock.now
        let (index, size) = try source.prepareSnapshotImage()
        let prepareSeconds = Self.micros(clock.now - started) / 1_000_000
        print("prepare image: \(size >> 20) MiB at index \(index) in \(Self.format(prepareSeconds, digits: 2)) s (\(Self.format(Double(size >> 20) / prepareSeconds)) MiB/s)")

        let target = try SQLiteNodeStorage(path: targetPath, verify: false)
        try target.bootstrap(.joining)
        let metadata = Raft.SnapshotMetadata(index: index, term: 1, membership: Raft.Membership(voters: [1]))
        let chunkBytes = Limits.standard.raftSnapshotChunkBytes
        started = clock.now
        var offset = 0
        while offset < size {
            guard let data = try source.snapshotImageBytes(index: index, offset: offset, length: chunkBytes), !data.isEmpty else {
                throw KVError.storage("the prepared image ended at byte \(offset) of \(size)")
            }
            let chunk = Raft.SnapshotChunk(metadata: metadata, totalBytes: size, offset: offset, data: data)
            offset += data.count
            let last = offset == size
            _ = try target.commit(
                StorageBatch(snapshot: last ? metadata : nil, snapshotChunks: [chunk], hardState: last ? Raft.HardState(term: 1, commit: index) : nil))
        }
        let transferSeconds = Self.micros(clock.now - started) / 1_000_000
        print("stage and install in \(chunkBytes >> 10) KiB chunks: \(Self.format(transferSeconds, digits: 2)) s (\(Self.format(Double(size >> 20) / transferSeconds)) MiB/s)")
        print("heap: \(memoryBefore >> 20) MiB before, at most \(sampler.stop() >> 20) MiB during the transfer (SQLite's page caches and the key index included)")
        guard try target.stateHash().get() == source.stateHash().get(), try target.appliedIndex == filled else {
            throw KVError.storage("the installed state differs from the source's")
        }
        print("installed state hash matches the source's")
    }

    /// Writes `rounds` versions of every key; returns the last index applied.
    static func fill(_ storage: SQLiteNodeStorage, keys: Int, valueBytes: Int, rounds: Int) throws -> Raft.Index {
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        var generator = SplitMix64(seed: 7)
        var index: Raft.Index = 0
        for _ in 0..<rounds {
            for start in stride(from: 0, to: keys, by: 1000) {
                let entries = (start..<min(start + 1000, keys)).map { number in
                    index += 1
                    let value = (0..<valueBytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                    let put = KVCommand.put(Put(key: key(number), value: value, lease: 0))
                    return Raft.Entry(term: 1, index: index, payload: .command(put.encoded()))
                }
                _ = try storage.commit(
                    StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, vote: 1, commit: index), committedEntries: entries))
            }
        }
        return index
    }

    /// The process's anonymous memory (heap, not the database's memory-mapped pages) now, in
    /// bytes, from /proc (0 where there is none).
    static func anonymousMemoryBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }
}

/// The highest anonymous memory seen while it runs, sampled every few milliseconds.
final class PeakMemory: Sendable {
    private let peak = Mutex(0)
    private let running = Atomic<Bool>(true)

    init() {
        let thread = Thread { [self] in
            while running.load(ordering: .relaxed) {
                let now = StorageBench.anonymousMemoryBytes()
                peak.withLock { $0 = max($0, now) }
                usleep(5_000)
            }
        }
        thread.start()
    }

    /// Stops sampling; the peak seen.
    func stop() -> Int {
        running.store(false, ordering: .relaxed)
        return peak.withLock { max($0, StorageBench.anonymousMemoryBytes()) }
    }
}
