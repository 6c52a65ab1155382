import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Kills a real writer process with SIGKILL at random moments, many times, and checks after each
/// kill that the database holds every acknowledged batch, nothing half-applied, and a log and a
/// key-value state that agree.
@Suite("Crash safety")
struct CrashSafetyTests {
    static var writerPath: String {
        // The test bundle sits beside the package's executables.
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [bundle, bundle.deletingLastPathComponent()].map { $0.appendingPathComponent("aspen-storage-bench").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    /// Runs the writer until a random number of acknowledgements (or time) has passed, then kills it.
    static func runAndKill(path: String, acknowledgements: Int, generator: inout SplitMix64) throws -> [(index: UInt64, batch: Int)] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: writerPath)
        process.arguments = ["crash-writer", "--path", path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        var acknowledged: [(UInt64, Int)] = []
        var buffer = Data()
        let reader = pipe.fileHandleForReading
        let deadline = Date().addingTimeInterval(10)
        while acknowledged.count < acknowledgements && Date() < deadline {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            while let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                let parts = line.split(separator: " ")
                if parts.count == 3, parts[0] == "committed", let index = UInt64(parts[1]), let batch = Int(parts[2]) {
                    acknowledged.append((index, batch))
                }
            }
        }
        // A little more time, at random, so the kill lands anywhere inside a commit.
        usleep(UInt32(generator.next(in: 0...3000)))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // Lines that were written before the kill count as acknowledged too.
        buffer.append(reader.readDataToEndOfFile())
        for line in String(decoding: buffer, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 3, parts[0] == "committed", let index = UInt64(parts[1]), let batch = Int(parts[2]) {
                acknowledged.append((index, batch))
            }
        }
        return acknowledged
    }

    static func verify(path: String, acknowledged: (index: UInt64, batch: Int)?) throws {
        let storage = try SQLiteNodeStorage(path: path)
        let state = try #require(try storage.load())
        let lastEntry = state.entries.last?.index ?? state.snapshot.index
        // The log is written first and the state machine after: a kill in between leaves the
        // state behind the log, never ahead, and applying the rest (as a restarted node does)
        // brings them together.
        let before = try storage.appliedIndex
        #expect(before <= lastEntry && before >= state.snapshot.index)
        _ = try storage.commit(StorageBatch(committedEntries: state.entries.filter { $0.index > before }))
        let applied = try storage.appliedIndex
        #expect(applied == lastEntry, "applied \(applied) but the log ends at \(lastEntry)")
        #expect(state.hardState.commit == applied)
        if let acknowledged {
            #expect(applied >= acknowledged.index, "acknowledged index \(acknowledged.index) lost (applied \(applied))")
        }
        // Every batch up to the last one present is whole, with the exact values written.
        let marker = try storage.read(RangeRequest(.key(Array("last-batch".utf8)))).get().kvs.first
        let lastBatch = marker.flatMap { Int(String(decoding: $0.value, as: UTF8.self)) } ?? 0
        if let acknowledged { #expect(lastBatch >= acknowledged.batch) }
        var all: [KeyValue] = []
        var token: Bytes?
        repeat {
            let page = try storage.read(RangeRequest(.prefix(Array("b".utf8)), limit: 10_000, continuation: token)).get()
            all += page.kvs
            token = page.continuation
        } while token != nil
        var perBatch: [Int: Int] = [:]
        for kv in all {
            let text = String(decoding: kv.key, as: UTF8.self)
            let parts = text.dropFirst().split(separator: "/i")
            guard parts.count == 2, let batch = Int(parts[0]), let item = Int(parts[1]) else {
                Issue.record("unexpected key \(text)")
                continue
            }
            #expect(batch <= lastBatch, "batch \(batch) is visible but the marker says \(lastBatch)")
            #expect(kv.value == expectedValue(batch: batch, item: item), "batch \(batch) item \(item) has a wrong value")
            perBatch[batch, default: 0] += 1
        }
        for batch in 1...max(1, lastBatch) where lastBatch > 0 {
            #expect(perBatch[batch] == expectedCount(batch: batch), "batch \(batch) is partly applied: \(perBatch[batch] ?? 0) keys")
        }
    }

    // The writer's deterministic contents (same formulas as `CrashWriter`).
    static func expectedValue(batch: Int, item: Int) -> Bytes {
        var generator = SplitMix64(seed: UInt64(batch) &* 1_000_003 &+ UInt64(item))
        let length = Int(generator.next(in: 8...600))
        return (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    }

    static func expectedCount(batch: Int) -> Int {
        var generator = SplitMix64(seed: UInt64(batch) &+ 77)
        return Int(generator.next(in: 1...40))
    }

    @Test("SIGKILL at random points never loses an acknowledged batch nor exposes half of one")
    func killRepeatedly() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.writerPath), "writer not built at \(Self.writerPath)")
        let directory = TempDirectory()
        let path = directory.path()
        let rounds = Int(ProcessInfo.processInfo.environment["ASPEN_CRASH_ROUNDS"] ?? "") ?? 25
        let seed = UInt64(ProcessInfo.processInfo.environment["ASPEN_CRASH_SEED"] ?? "") ?? UInt64(Date().timeIntervalSince1970 * 1000)
        print("crash-safety test: \(rounds) rounds, seed \(seed) (replay the kill timing with ASPEN_CRASH_SEED=\(seed))")
        var generator = SplitMix64(seed: seed)
        var lastAcknowledged: (index: UInt64, batch: Int)?
        for _ in 0..<rounds {
            let acknowledged = try Self.runAndKill(
                path: path, acknowledgements: Int(generator.next(in: 1...30)), generator: &generator)
            if let last = acknowledged.last { lastAcknowledged = last }
            try Self.verify(path: path, acknowledged: lastAcknowledged)
        }
        #expect(lastAcknowledged != nil, "the writer never acknowledged a batch")
    }
}
