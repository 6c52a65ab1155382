import AspenCore
import AspenRaft
import Foundation
import Testing

@testable import AspenStorage

/// The log's fsync discipline, checked against a disk that loses power (`PowerLossDisk`): a
/// writer appends batches, hard states, resets and compactions over small segments until the
/// power goes at a random call; after each loss the log must reopen with every acknowledged
/// entry and the last acknowledged hard state, and a flipped bit in an acknowledged batch must
/// make opening fail, naming file, byte and index, without cutting anything.
///
/// A SIGKILL (`CrashSafetyTests`) cannot show this: the page cache survives it.
/// `ASPEN_POWERLOSS_SEED` replays a run (`ASPEN_POWERLOSS_TRACE=1` prints every operation);
/// `ASPEN_POWERLOSS_ITERATIONS` soaks longer.
@Suite("Power loss")
struct PowerLossTests {
    static let directory = "/data/aspen.db-log"

    /// The log as acknowledged: what must come back.
    struct Expected {
        var base: Raft.Index?
        var entries: [Raft.Entry] = []
        var hardState: Raft.HardState?
        /// Entries through this index may be gone (compacted, or before a reset).
        var compactedThrough: Raft.Index = 0
        var term: Raft.Term = 1

        var lastIndex: Raft.Index? { base.map { $0 + Raft.Index(entries.count) } }

        func entry(_ index: Raft.Index) -> Raft.Entry? {
            guard let base, index > base, index <= base + Raft.Index(entries.count) else { return nil }
            return entries[Int(index - base - 1)]
        }
    }

    enum Operation {
        case append([Raft.Entry], Raft.HardState?)
        case reset(after: Raft.Index, term: Raft.Term, Raft.HardState?)
        case compact(through: Raft.Index)
    }

    static let trace = ProcessInfo.processInfo.environment["ASPEN_POWERLOSS_TRACE"] != nil

    static func environment(_ name: String) -> UInt64? {
        ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) }
    }

    @Test("every acknowledged entry and hard state survives hundreds of power losses; damage to an acknowledged batch is refused")
    func powerLoss() throws {
        let seed = Self.environment("ASPEN_POWERLOSS_SEED") ?? UInt64.random(in: 1...UInt64.max)
        let iterations = Int(Self.environment("ASPEN_POWERLOSS_ITERATIONS") ?? 300)
        print("power-loss test: seed \(seed) (replay: ASPEN_POWERLOSS_SEED=\(seed)), \(iterations) power losses")
        var random = SplitMix64(seed: seed)
        let disk = PowerLossDisk()
        var expected = Expected()
        var inFlight: Operation?
        var refused = 0
        for iteration in 0..<iterations {
            let log = try reopen(disk, expected: &expected, inFlight: inFlight, seed: seed, iteration: iteration)
            if random.next(in: 0...2) == 0, try corruptionIsRefused(disk, &random, seed: seed) { refused += 1 }
            disk.losePower(afterCalls: Int(random.next(in: 0...40)))
            inFlight = try write(log, &expected, &random)
            log.close()
            disk.powerCycle(&random)
        }
        print("power-loss test: seed \(seed): \(refused) damaged logs refused, last index \(expected.lastIndex ?? 0)")
        #expect(refused > 0 || iterations < 20)
    }

    static func open(_ disk: PowerLossDisk, mode: SegmentedLog.Mode = .readWrite) throws -> SegmentedLog {
        try SegmentedLog(
            directory: directory, group: .root, limits: .standard, segmentBytes: 2048, mode: mode, files: disk, zeroChunkBytes: 1024)
    }

    /// Opens read-only (which must not change a byte), then read-write (which must cut what the
    /// read-only open said it would), and checks what the log holds.
    func reopen(
        _ disk: PowerLossDisk, expected: inout Expected, inFlight: Operation?, seed: UInt64, iteration: Int
    ) throws -> SegmentedLog {
        let context = "seed \(seed), power loss \(iteration)"
        let before = disk.files()
        let inspected = try Self.open(disk, mode: .readOnly)
        let read = try inspected.contents()
        #expect(disk.files() == before, "a read-only open wrote (\(context))")
        if Self.trace { print("power-loss test: power loss \(iteration), \(inspected.cut.map(String.init(describing:)) ?? "nothing cut")") }
        let log = try Self.open(disk)
        #expect(log.cut == inspected.cut, "\(context)")
        let contents = try log.contents()
        #expect(contents.entries == read.entries && contents.hardState == read.hardState, "\(context)")
        var candidates = [expected]
        if let inFlight { candidates.insert(Self.applying(inFlight, to: expected), at: 0) }
        guard let match = candidates.first(where: { Self.holds(contents, $0) }) else {
            let held = "\(String(describing: contents.base))+\(contents.entries.count) entries, \(String(describing: contents.hardState))"
            let acknowledged = "\(String(describing: expected.base))+\(expected.entries.count), \(String(describing: expected.hardState))"
            Issue.record("\(context): the log holds \(held); acknowledged: \(acknowledged); in flight: \(String(describing: inFlight))")
            throw PowerLossDisk.PowerLost()
        }
        expected = match
        return log
    }

    /// Whether the log read back holds everything `expected` says was acknowledged, and nothing else.
    static func holds(_ contents: SegmentedLog.Contents, _ expected: Expected) -> Bool {
        guard contents.hardState == expected.hardState else { return false }
        // The log ends where the acknowledged one does, unless compaction deleted all of it.
        if let last = contents.lastIndex {
            guard last == expected.lastIndex else { return false }
        } else {
            guard (expected.lastIndex ?? 0) <= expected.compactedThrough else { return false }
        }
        for entry in contents.entries where expected.entry(entry.index) != entry { return false }
        let kept = Set(contents.entries.map(\.index))
        return expected.entries.allSatisfy { $0.index <= expected.compactedThrough || kept.contains($0.index) }
    }

    static func applying(_ operation: Operation, to expected: Expected) -> Expected {
        var next = expected
        switch operation {
        case .append(let entries, let hardState):
            if let first = entries.first {
                if let base = next.base, first.index > base {
                    next.entries.removeLast(Int(base + Raft.Index(next.entries.count) + 1 - first.index))
                } else {
                    next.base = first.index - 1
                    next.entries = []
                }
                next.entries += entries
                next.term = max(next.term, entries.last!.term)
            }
            if let hardState { next.hardState = hardState }
        case .reset(let index, let term, let hardState):
            next.base = index
            next.entries = []
            next.compactedThrough = index
            next.term = max(next.term, term)
            if let hardState { next.hardState = hardState }
        case .compact(let index):
            next.compactedThrough = max(next.compactedThrough, index)
        }
        return next
    }

    // MARK: The writer

    /// Runs operations until the power goes; returns the one it interrupted.
    func write(_ log: SegmentedLog, _ expected: inout Expected, _ random: inout SplitMix64) throws -> Operation? {
        for _ in 0..<1000 {
            let operation = Self.operation(expected, &random)
            if Self.trace { print("power-loss test: \(Self.describe(operation))") }
            do {
                switch operation {
                case .append(let entries, let hardState): try log.append(entries, hardState: hardState)
                case .reset(let index, let term, let hardState): try log.reset(after: index, term: term, hardState: hardState)
                case .compact(let index): try log.compact(through: index)
                }
            } catch is PowerLossDisk.PowerLost {
                return operation
            }
            expected = Self.applying(operation, to: expected)
        }
        return nil
    }

    static func operation(_ expected: Expected, _ random: inout SplitMix64) -> Operation {
        let last = expected.lastIndex ?? expected.base ?? 0
        let floor = max(expected.compactedThrough, expected.base ?? 0)
        switch random.next(in: 0...99) {
        case 0..<60:
            // A new leader's entries replace a suffix now and then (never below the compaction point).
            let replaces = last > floor && random.next(in: 0...6) == 0
            let term = expected.term + (replaces ? 1 : 0)
            let first = replaces ? random.next(in: (floor + 1)...last) : last + 1
            let count = random.next(in: 0...9) == 0 ? random.next(in: 1...40) : random.next(in: 1...6)
            let entries = (first..<(first + count)).map { Raft.Entry(term: term, index: $0, payload: payload(&random)) }
            let hardState = random.next(in: 0...3) == 0 ? nil : hardState(term: term, commit: first - 1, &random)
            return .append(entries, hardState)
        case 60..<80:
            return .append([], hardState(term: expected.term + random.next(in: 0...1), commit: last, &random))
        case 80..<95:
            return .compact(through: random.next(in: floor...last))
        default:
            let term = expected.term + 1
            return .reset(after: last + random.next(in: 0...5), term: term, random.next(in: 0...1) == 0 ? nil : hardState(term: term, commit: last, &random))
        }
    }

    static func describe(_ operation: Operation) -> String {
        switch operation {
        case .append(let entries, let hardState):
            let range = entries.first.map { "entries \($0.index)...\(entries.last!.index) of term \($0.term)" } ?? "no entry"
            return "append \(range), hard state \(hardState.map(String.init(describing:)) ?? "-")"
        case .reset(let index, let term, let hardState): return "reset after \(index) (term \(term)), hard state \(hardState.map(String.init(describing:)) ?? "-")"
        case .compact(let index): return "compact through \(index)"
        }
    }

    static func payload(_ random: inout SplitMix64) -> Raft.Payload {
        guard random.next(in: 0...7) != 0 else { return .noop }
        return .command((0..<random.next(in: 0...300)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
    }

    static func hardState(term: Raft.Term, commit: Raft.Index, _ random: inout SplitMix64) -> Raft.HardState {
        Raft.HardState(term: term, vote: random.next(in: 0...2) == 0 ? nil : NodeID(random.next(in: 1...5)), commit: commit)
    }

    // MARK: Damage

    /// Flips a bit in an acknowledged batch that another batch follows (a damaged last batch is
    /// indistinguishable from a torn write), expects both opens to refuse the log naming file,
    /// batch and index and to leave every byte alone, then flips it back. False: no such batch.
    func corruptionIsRefused(_ disk: PowerLossDisk, _ random: inout SplitMix64, seed: UInt64) throws -> Bool {
        let files = disk.files().filter { $0.key.hasSuffix(".seg") }.sorted { $0.key < $1.key }
        var targets: [(file: Int, batch: Range<Int>)] = []
        for (position, file) in files.enumerated() {
            let batches = Self.batches(file.value)
            targets += batches.dropLast(position == files.count - 1 ? 1 : 0).map { (position, $0) }
        }
        guard !targets.isEmpty else { return false }
        let target = targets[Int(random.next(in: 0...UInt64(targets.count - 1)))]
        let path = files[target.file].key
        let offset = Int(random.next(in: UInt64(target.batch.lowerBound)...UInt64(target.batch.upperBound - 1)))
        let bit = Int(random.next(in: 0...7))
        let lastGood = try Self.lastIndex(before: target.batch.lowerBound, in: target.file, of: files)
        disk.flipBit(in: path, at: offset, bit: bit)
        let damaged = disk.files()
        let context = "seed \(seed): bit \(bit) of byte \(offset) of \(path), in the batch at \(target.batch.lowerBound)"
        for mode in [SegmentedLog.Mode.readOnly, .readWrite] {
            let error = #expect(throws: StorageError.self, "\(context)") { try Self.open(disk, mode: mode) }
            #expect(error == .corruptedLog(file: path, offset: target.batch.lowerBound, lastGoodIndex: lastGood, detail: error?.detail ?? ""), "\(context)")
            #expect(error?.description.contains("\(path) is corrupted at byte \(target.batch.lowerBound), after log entry \(lastGood)") == true)
        }
        #expect(disk.files() == damaged, "opening a damaged log changed it (\(context))")
        disk.flipBit(in: path, at: offset, bit: bit)
        return true
    }

    /// The batches of a segment in the current format, as byte ranges (header included).
    static func batches(_ bytes: [UInt8]) -> [Range<Int>] {
        let reader = SegmentReader(path: "", bytes: bytes, group: .root, limits: .standard, isLast: true)
        guard reader.isLegacyFormat == false else { return [] }
        var ranges: [Range<Int>] = []
        var offset = SegmentedLog.magic.count
        while case .records(_, let end) = reader.batchFrame(at: offset) {
            ranges.append(offset..<end)
            offset = end
        }
        return ranges
    }

    /// The last entry index the segments hold before byte `offset` of segment `file`.
    static func lastIndex(before offset: Int, in file: Int, of files: [(key: String, value: [UInt8])]) throws -> Raft.Index {
        var scan = SegmentedLog.Scan()
        for (position, segment) in files.prefix(file + 1).enumerated() {
            let bytes = position == file ? Array(segment.value.prefix(offset)) : segment.value
            try SegmentReader(path: segment.key, bytes: bytes, group: .root, limits: .standard, isLast: position == file)
                .read(sequence: UInt64(position), into: &scan)
        }
        return scan.contents.lastIndex ?? 0
    }
}

extension StorageError {
    fileprivate var detail: String? {
        if case .corruptedLog(_, _, _, let detail) = self { return detail }
        return nil
    }
}
