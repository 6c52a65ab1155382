import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The storage benchmarks, all in one run on one disk.
struct StorageBench {
    let directory: String
    let scale: Int
    let print: (String) -> Void

    struct Summary {
        var operations: Int
        var seconds: Double
        var samplesMicros: [Double]

        var perSecond: Double { Double(operations) / seconds }
        func percentile(_ p: Double) -> Double {
            guard !samplesMicros.isEmpty else { return 0 }
            let sorted = samplesMicros.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
    }

    static func measure(_ count: Int, _ body: (Int) throws -> Void) rethrows -> Summary {
        let clock = ContinuousClock()
        var samples: [Double] = []
        samples.reserveCapacity(count)
        let start = clock.now
        for iteration in 0..<count {
            let before = clock.now
            try body(iteration)
            samples.append(micros(clock.now - before))
        }
        return Summary(operations: count, seconds: micros(clock.now - start) / 1_000_000, samplesMicros: samples)
    }

    static func micros(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1_000_000 + Double(duration.components.attoseconds) * 1e-12
    }

    static func format(_ value: Double, digits: Int = 1) -> String {
        String(format: "%.\(digits)f", value)
    }

    func run() throws {
        print("aspen-storage-bench: directory \(directory)")
        let fsync = try rawFsync(count: 1000 * scale)
        print("raw write(4 KiB)+fsync: \(Self.format(fsync.perSecond, digits: 0))/s  p50 \(Self.format(fsync.percentile(0.5)))µs  p99 \(Self.format(fsync.percentile(0.99)))µs")
        print("")
        try commitTable("storage commits (256-byte puts: log append and its fsync, then the apply):", apply: true, fsync: fsync)
        try commitTable(
            "log appends only (entries and hard state, no apply: what a Ready of new entries costs):", apply: false, fsync: fsync)
        let memory = applyInMemory(puts: 100_000 * scale)
        print("state-machine apply, in memory: \(Self.format(memory.perSecond, digits: 0)) puts/s")
        let sqliteApply = try applyOnSQLite(puts: 50_000 * scale)
        print("state-machine apply, on SQLite (batches of 1000): \(Self.format(sqliteApply.perSecond * 1000, digits: 0)) puts/s")
        print("")
        try reads(keys: 100_000, gets: 20_000 * scale, scans: 500 * scale)
    }

    /// Commit rates for batches of 1, 10, 100 and 1 000 entries, against the raw fsync.
    func commitTable(_ title: String, apply: Bool, fsync: Summary) throws {
        print(title)
        print("batch   commits/s   entries/s   p50 µs   p99 µs   p50 vs raw fsync")
        for (batch, rounds) in [(1, 1000 * scale), (10, 500 * scale), (100, 200 * scale), (1000, 40 * scale)] {
            let summary = try commits(batch: batch, commits: rounds, apply: apply)
            let ratio = summary.percentile(0.5) / fsync.percentile(0.5)
            print(
                [
                    pad("\(batch)", 5), pad(Self.format(summary.perSecond, digits: 0), 11),
                    pad(Self.format(summary.perSecond * Double(batch), digits: 0), 11),
                    pad(Self.format(summary.percentile(0.5)), 8), pad(Self.format(summary.percentile(0.99)), 8),
                    pad(Self.format(ratio, digits: 2) + "x", 17),
                ].joined(separator: " "))
        }
        print("")
    }

    func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }

    func freshPath(_ name: String) -> String {
        let path = "\(directory)/\(name)-\(UUID().uuidString).db"
        return path
    }

    func rawFsync(count: Int) throws -> Summary {
        let path = "\(directory)/fsync-\(UUID().uuidString).bin"
        let descriptor = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw KVError.storage("cannot open \(path)") }
        defer {
            close(descriptor)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x5A, count: 4096)
        return try Self.measure(count) { _ in
            let written = block.withUnsafeBytes { write(descriptor, $0.baseAddress, 4096) }
            guard written == 4096, fsync(descriptor) == 0 else { throw KVError.storage("write or fsync failed") }
        }
    }

    func commits(batch: Int, commits: Int, apply: Bool = true) throws -> Summary {
        let path = freshPath("commits-\(batch)")
        defer { removeDatabase(path) }
        let storage = try SQLiteNodeStorage(path: path, verify: false)
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let value = [UInt8](repeating: 0xAB, count: 256)
        var index: Raft.Index = 0
        return try Self.measure(commits) { round in
            var entries: [Raft.Entry] = []
            entries.reserveCapacity(batch)
            for item in 0..<batch {
                index += 1
                let key = Array("key/\(round % 1000)/\(item)".utf8)
                entries.append(Raft.Entry(term: 1, index: index, payload: .command(KVCommand.put(Put(key: key, value: value)).encoded())))
            }
            _ = try storage.commit(
                StorageBatch(
                    entries: entries, hardState: Raft.HardState(term: 1, vote: 1, commit: apply ? index : 0),
                    committedEntries: apply ? entries : []))
        }
    }

    func applyInMemory(puts: Int) -> Summary {
        var backend = MemoryKVBackend()
        let value = [UInt8](repeating: 0xAB, count: 256)
        let commands = (0..<10_000).map { KVCommand.put(Put(key: Array("key/\($0)".utf8), value: value)) }
        let clock = ContinuousClock()
        let start = clock.now
        for iteration in 0..<puts {
            _ = try? KVStateMachine.apply(commands[iteration % commands.count], to: &backend)
        }
        return Summary(operations: puts, seconds: Self.micros(clock.now - start) / 1_000_000, samplesMicros: [])
    }

    /// Entries already in the log; only the apply (and the hard state) is timed, 1000 per transaction.
    func applyOnSQLite(puts: Int) throws -> Summary {
        let path = freshPath("apply")
        defer { removeDatabase(path) }
        let storage = try SQLiteNodeStorage(path: path, verify: false)
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let value = [UInt8](repeating: 0xAB, count: 256)
        let entries = (1...puts).map {
            Raft.Entry(term: 1, index: Raft.Index($0), payload: .command(KVCommand.put(Put(key: Array("key/\($0 % 10_000)".utf8), value: value)).encoded()))
        }
        for chunk in stride(from: 0, to: entries.count, by: 1000) {
            _ = try storage.commit(StorageBatch(entries: Array(entries[chunk..<min(chunk + 1000, entries.count)])))
        }
        return try Self.measure(puts / 1000) { round in
            let slice = Array(entries[(round * 1000)..<((round + 1) * 1000)])
            _ = try storage.commit(
                StorageBatch(hardState: Raft.HardState(term: 1, vote: 1, commit: slice.last!.index), committedEntries: slice))
        }
    }

    func reads(keys: Int, gets: Int, scans: Int) throws {
        let path = freshPath("reads")
        defer { removeDatabase(path) }
        do {
            let storage = try SQLiteNodeStorage(path: path, verify: false)
            let store = try LocalKeyValueStore(storage: storage, nowMs: { 0 })
            let value = [UInt8](repeating: 0xCD, count: 256)
            for chunk in stride(from: 0, to: keys, by: 1000) {
                try store.apply((chunk..<min(chunk + 1000, keys)).map { KVCommand.put(Put(key: Self.key($0), value: value)) })
            }
            try storage.close()
        }
        // Opening reads every key's changes into the index in memory.
        let clock = ContinuousClock()
        let opened = clock.now
        let storage = try SQLiteNodeStorage(path: path, verify: false)
        print("open (\(keys) keys, index rebuilt): \(Self.format(Self.micros(clock.now - opened) / 1000)) ms")
        defer { try? storage.close() }
        var generator = SplitMix64(seed: 1)
        let point = try Self.measure(gets) { _ in
            let key = Self.key(Int(generator.next(in: 0...UInt64(keys - 1))))
            guard try storage.read(RangeRequest(.key(key), limit: 1)).get().kvs.count == 1 else {
                throw KVError.storage("missing key")
            }
        }
        print("point get from SQLite (\(keys) keys): p50 \(Self.format(point.percentile(0.5)))µs  p99 \(Self.format(point.percentile(0.99)))µs  (\(Self.format(point.perSecond, digits: 0))/s, one thread)")
        // Keys are grouped 1000 to a prefix ("user/000xx..."): scan one whole group.
        let scan = try Self.measure(scans) { _ in
            let group = Int(generator.next(in: 0...UInt64(keys / 1000 - 1)))
            let prefix = Array(Self.key(group * 1000).dropLast(3))
            guard try storage.read(RangeRequest(.prefix(prefix), limit: 1000)).get().kvs.count == 1000 else {
                throw KVError.storage("short scan")
            }
        }
        print("1000-key prefix scan from SQLite (with its count): p50 \(Self.format(scan.percentile(0.5)))µs  p99 \(Self.format(scan.percentile(0.99)))µs")
    }

    static func key(_ number: Int) -> Bytes {
        let digits = String(number)
        return Array(("user/" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits).utf8)
    }

    func removeDatabase(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        try? FileManager.default.removeItem(atPath: SQLiteNodeStorage.logDirectory(path))
        try? FileManager.default.removeItem(atPath: SQLiteNodeStorage.snapshotDirectory(path))
    }
}
