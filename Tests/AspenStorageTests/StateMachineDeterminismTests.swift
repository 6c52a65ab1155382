import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Testing

/// Applying a command is a pure function of the state and the command: random command sequences
/// give identical results, revisions and states whether the state machine runs over memory or
/// SQLite.
@Suite("State machine determinism")
struct StateMachineDeterminismTests {
    static func randomCommand(_ generator: inout SplitMix64, now: Int64, compactBelow: Int64 = 30) -> KVCommand {
        let command = randomPlainCommand(&generator, now: now, compactBelow: compactBelow)
        if case .expireLeases = command { return command }
        guard generator.chance(0.3) else { return command }
        // A client's command, now and then a retry of one sent before (few sessions, few sequences).
        let sequence = generator.next(in: 1...6)
        let stamp = ClientStamp(
            session: generator.next(in: 1...3), sequence: sequence, acknowledgedThrough: generator.next(in: 0...(sequence - 1)))
        return .sessioned(stamp, nowMs: now, command)
    }

    static func randomPlainCommand(_ generator: inout SplitMix64, now: Int64, compactBelow: Int64) -> KVCommand {
        func key() -> Bytes { Array("k\(generator.next(in: 0...12))".utf8) }
        func value() -> Bytes { Array("v\(generator.next(in: 0...5))".utf8) }
        let lease = LeaseID(generator.next(in: 0...3))
        switch generator.next(in: 0...9) {
        case 0, 1:
            let keep = generator.chance(0.1)
            return .put(
                Put(
                    key: key(), value: keep ? [] : value(), lease: generator.chance(0.3) ? lease : 0, returnPrevious: true,
                    ignoreValue: keep, ignoreLease: generator.chance(0.1)))
        case 2: return .delete(Delete(generator.chance(0.5) ? .key(key()) : .prefix(Array("k1".utf8)), returnPrevious: true))
        case 3:
            var compare: Compare
            switch generator.next(in: 0...3) {
            case 0: compare = Compare(key: key(), .value(value()))
            case 1: compare = Compare(key: key(), .version(Int64(generator.next(in: 0...3))), .greater)
            case 2: compare = Compare(key: key(), .modRevision(Int64(generator.next(in: 0...40))), .less)
            default: compare = .absent(key())
            }
            // Now and then over a range of keys instead of one.
            if generator.chance(0.3) { compare.extent = .range(end: generator.chance(0.5) ? nil : Array("k5".utf8)) }
            return .transaction(
                Transaction(
                    compares: [compare], success: [.put(Put(key: key(), value: value())), .get(RangeRequest(.prefix([])))],
                    failure: [.delete(Delete(.key(key())))]))
        case 4: return .batch([.put(Put(key: Array("a\(generator.next(in: 0...3))".utf8), value: value())), .delete(Delete(.key(key())))])
        case 5: return .leaseGrant(LeaseGrant(id: generator.chance(0.5) ? lease : 0, ttlMs: Int64(generator.next(in: 1...50)), nowMs: now))
        case 6: return .leaseKeepAlive(max(1, lease), nowMs: now)
        case 7: return .leaseRevoke(max(1, lease))
        case 8: return .expireLeases(nowMs: now)
        default: return .compact(Int64(generator.next(in: 1...UInt64(max(1, compactBelow)))))
        }
    }

    @Test("memory and SQLite agree on every result and on the final state", arguments: [1, 2, 3, 4] as [UInt64])
    func memoryAndSQLiteAgree(seed: UInt64) throws {
        let directory = TempDirectory()
        let sqlite = try SQLiteNodeStorage(path: directory.path())
        let memory = MemoryNodeStorage()
        for storage in [sqlite, memory] as [any NodeStorage] { try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1]))) }
        var generator = SplitMix64(seed: seed)
        var now: Int64 = 0
        var entries: [Raft.Entry] = []
        var live: [WatchEvent] = []
        for index in 1...400 {
            now += Int64(generator.next(in: 0...5))
            entries.append(
                Raft.Entry(term: 1, index: Raft.Index(index), payload: .command(Self.randomCommand(&generator, now: now, compactBelow: Int64(index) / 2).encoded())))
        }
        for chunk in stride(from: 0, to: entries.count, by: 25) {
            let batch = Array(entries[chunk..<min(chunk + 25, entries.count)])
            let storageBatch = StorageBatch(entries: batch, hardState: Raft.HardState(term: 1, commit: batch.last!.index), committedEntries: batch)
            let fromSQLite = try sqlite.commit(storageBatch)
            let fromMemory = try memory.commit(storageBatch)
            #expect(fromSQLite == fromMemory, "seed \(seed): results differ in entries \(chunk + 1)...")
            live += fromMemory.flatMap(\.events)
        }
        #expect(try sqlite.wholeImage().data == memory.wholeImage().data, "seed \(seed): final states differ")
        let pastRevision = RangeRequest(.prefix([]), revision: 35)
        #expect(try sqlite.read(pastRevision) == memory.read(pastRevision))
        // Every readable revision: the whole space, a count of a range and one key read the
        // same (deleted and recreated keys, compacted history, all of it).
        let (latest, oldest) = try memory.revisions()
        for revision in max(1, oldest)...latest {
            for request in [
                RangeRequest(.prefix([]), revision: revision),
                RangeRequest(.range(start: Array("k1".utf8), end: Array("k5".utf8)), revision: revision, countOnly: true),
                RangeRequest(.key(Array("k\(revision % 13)".utf8)), revision: revision),
            ] {
                #expect(try sqlite.read(request) == memory.read(request), "seed \(seed): reads at revision \(revision) differ")
            }
        }
        // Watch replay from history gives exactly the events that were published live (after
        // the last compaction), previous values included, in pages that end on whole revisions.
        let (current, compacted) = try memory.revisions()
        #expect(try sqlite.revisions() == (current, compacted))
        for storage in [sqlite, memory] as [any NodeStorage] {
            var replayed: [WatchEvent] = []
            var next = compacted + 1
            while next <= current {
                let page = try storage.changes(in: KeySelection.prefix([]).bounds, from: next, through: current, withPrevious: true, limit: 7).get()
                replayed += page.events
                next = page.nextRevision
            }
            #expect(replayed == live.filter { $0.revision > compacted }, "seed \(seed): replay differs from the live events")
            #expect(throws: KVError.self) {
                try storage.changes(in: KeySelection.prefix([]).bounds, from: compacted, through: current, withPrevious: false, limit: 7).get()
            }
        }
        // The state hash (etcd's HashKV) is the same over either store, whatever the page size,
        // at the current revision and at an earlier one; a revision outside history is refused.
        let hash = try memory.stateHash().get()
        #expect(hash.revision == current && hash.compactedRevision == compacted)
        #expect(try sqlite.stateHash(page: 3).get() == hash)
        let middle = (compacted + current) / 2
        #expect(try sqlite.stateHash(at: middle).get() == memory.stateHash(at: middle, page: 5).get())
        if middle < current { #expect(try memory.stateHash(at: middle).get().hash != hash.hash) }
        #expect(throws: KVError.self) { try memory.stateHash(at: current + 1).get() }
        if compacted > 1 { #expect(throws: KVError.self) { try sqlite.stateHash(at: compacted - 1).get() } }
        // Defragmenting rewrites the file and keeps the state.
        let sizes = try #require(try sqlite.defragment())
        #expect(sizes.after > 0)
        #expect(try sqlite.stateHash().get() == hash)
        #expect(try sqlite.wholeImage().data == memory.wholeImage().data)
        // One more change on one store only: the hashes differ.
        let extra = Raft.Entry(
            term: 1, index: Raft.Index(entries.count + 1), payload: .command(KVCommand.put(Put(key: Array("extra".utf8), value: [1])).encoded()))
        _ = try sqlite.commit(StorageBatch(entries: [extra], hardState: Raft.HardState(term: 1, commit: extra.index), committedEntries: [extra]))
        #expect(try sqlite.stateHash().get().hash != hash.hash)
    }
}
