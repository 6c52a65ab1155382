import AspenCore
import AspenKV
import AspenRaft
@testable import AspenStorage
import Foundation
import Synchronization
import Testing

/// The key index in memory must always agree with what a reader's snapshot of the file holds.
@Suite("Key index")
struct KeyIndexTests {
    static let membership = Raft.Membership(voters: [1])

    final class Store {
        let storage: SQLiteNodeStorage
        var index: Raft.Index = 0
        init(_ directory: TempDirectory) throws {
            storage = try SQLiteNodeStorage(path: directory.path())
            try storage.bootstrap(.bootstrap(KeyIndexTests.membership))
        }
        func entries(_ commands: [KVCommand]) -> [Raft.Entry] {
            commands.map { command in
                index += 1
                return Raft.Entry(term: 1, index: index, payload: .command(command.encoded()))
            }
        }
        func apply(_ commands: [KVCommand]) throws {
            let entries = entries(commands)
            _ = try storage.commit(StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: index), committedEntries: entries))
        }
        func value(_ key: String, at revision: Revision = 0) throws -> String? {
            let result = try storage.read(RangeRequest(.key(Array(key.utf8)), revision: revision)).get()
            return result.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
        }
    }

    static func put(_ key: String, _ value: String, lease: LeaseID = 0) -> KVCommand {
        .put(Put(key: Array(key.utf8), value: Array(value.utf8), lease: lease))
    }

    @Test(
        "scans and counts agree with every key's changes at any revision, as a queue's index fills with deletions",
        arguments: [UInt64(1), 2, 3, 4])
    func summariesAgreeWithChanges(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let index = KeyIndex(keptBytes: 0)
        var model: [Bytes: [KeyIndex.Change]] = [:]
        var revision: Revision = 0
        var compacted: Revision = 0
        var head = 0
        var tail = 0
        func key(_ n: Int) -> Bytes { Array(String(format: "q/%06d", n).utf8) }
        func visible(_ key: Bytes, at revision: Revision) -> Bool {
            model[key]?.last(where: { $0.revision <= revision }).map { !$0.deleted } ?? false
        }
        for step in 0..<6_000 {
            revision += 1
            let choice = random.next(in: 0...99)
            if choice < 45 || head == tail {
                // Enqueue: a new key at the tail (most chunks fill at the end, as an index of times does).
                let change = KeyIndex.Change(revision: revision, lease: 0, deleted: false)
                index.record(key(tail), change, version: nil)
                model[key(tail), default: []].append(change)
                tail += 1
            } else if choice < 90 {
                // Dequeue: the head's key deleted.
                let change = KeyIndex.Change(revision: revision, lease: 0, deleted: true)
                index.record(key(head), change, version: nil)
                model[key(head), default: []].append(change)
                head += 1
            } else if choice < 97 {
                // A key anywhere rewritten or deleted (a chunk's summary changes in its middle).
                let target = key(Int(random.next(in: 0...UInt64(tail))))
                let change = KeyIndex.Change(revision: revision, lease: 0, deleted: random.next(in: 0...1) == 0)
                index.record(target, change, version: nil)
                model[target, default: []].append(change)
                if change.deleted == false, target == key(tail) { tail += 1 }
            } else if choice < 99, let (last, _) = model.max(by: { ($0.value.last?.revision ?? 0) < ($1.value.last?.revision ?? 0) }),
                let change = model[last]?.last, change.revision > compacted
            {
                // A failed command takes its last change back.
                index.unrecord(last, at: change.revision)
                model[last]!.removeLast()
                if model[last]!.isEmpty { model[last] = nil }
            } else if step % 3 == 0 {
                compacted = max(compacted, revision - Revision(random.next(in: 0...400)))
                index.compact(through: compacted)
                for (key, changes) in model {
                    let after = changes.firstIndex { $0.revision > compacted } ?? changes.count
                    var first = after
                    if after > 0, !changes[after - 1].deleted { first = after - 1 }
                    let kept = Array(changes[first...])
                    model[key] = kept.isEmpty ? nil : kept
                }
            }
            guard step % 50 == 0 || step == 5_999 else { continue }
            let keys = model.keys.sorted { KeyIndex.compare($0, $1) < 0 }
            for _ in 0..<8 {
                let at = Revision(random.next(in: UInt64(compacted)...UInt64(revision)))
                let low = key(Int(random.next(in: 0...UInt64(tail))))
                let high = random.next(in: 0...3) == 0 ? nil : key(Int(random.next(in: 0...UInt64(tail + 1))))
                let bounds = KeyBounds(start: low, end: high)
                let expected = keys.filter { bounds.contains($0) && visible($0, at: at) }
                #expect(try index.count(in: bounds, at: at) == expected.count, "count at \(at) of \(bounds)")
                let after = random.next(in: 0...1) == 0 ? nil : key(Int(random.next(in: 0...UInt64(tail))))
                let limit = Int(random.next(in: 1...300))
                let seen = try index.live(in: bounds, after: after, at: at, limit: limit).map(\.key)
                let wanted = expected.filter { key in after.map { KeyIndex.compare(key, $0) > 0 } ?? true }.prefix(limit)
                #expect(seen == Array(wanted), "scan at \(at) of \(bounds) after \(after.map { String(decoding: $0, as: UTF8.self) } ?? "-")")
            }
        }
    }

    @Test("a batch that fails part-way leaves no trace: its writes are not read, and the next batch applies")
    func failedBatchLeavesNoTrace() throws {
        let directory = TempDirectory()
        let store = try Store(directory)
        try store.apply([Self.put("a", "1")])
        // The first entry applies inside the transaction; the second skips an index, so the
        // batch fails and rolls back with the first one's writes.
        var entries = store.entries([Self.put("a", "2"), Self.put("b", "1")])
        entries[1].index += 1
        #expect(throws: StorageError.self) {
            try store.storage.commit(StorageBatch(entries: [], hardState: nil, committedEntries: entries))
        }
        #expect(try store.value("a") == "1")
        #expect(try store.value("b") == nil)
        #expect(try store.storage.read(RangeRequest(.prefix([]), countOnly: true)).get().count == 1)
        store.index = 1
        try store.apply([Self.put("a", "3"), Self.put("b", "2")])
        #expect(try store.value("a") == "3")
        #expect(try store.value("a", at: 1) == "1")
        #expect(try store.value("b") == "2")
    }

    @Test("lease revocation finds the keys attached now, not those moved to another lease or deleted")
    func leaseKeys() throws {
        let directory = TempDirectory()
        let store = try Store(directory)
        try store.apply([.leaseGrant(LeaseGrant(id: 7, ttlMs: 60_000, nowMs: 0)), .leaseGrant(LeaseGrant(id: 8, ttlMs: 60_000, nowMs: 0))])
        try store.apply([Self.put("a", "1", lease: 7), Self.put("b", "1", lease: 7), Self.put("c", "1", lease: 7)])
        try store.apply([Self.put("b", "2", lease: 8), .delete(Delete(.key(Array("c".utf8))))])
        #expect(try store.storage.lease(7)?.keys == [Array("a".utf8)])
        #expect(try store.storage.lease(8)?.keys == [Array("b".utf8)])
        try store.apply([.leaseRevoke(7)])
        #expect(try store.value("a") == nil)
        #expect(try store.value("b") == "2")
        #expect(try store.value("c") == nil)
    }

    @Test("readers running beside puts and compactions always see a whole, committed version")
    func readsBesideWritesAndCompactions() throws {
        let directory = TempDirectory()
        let store = try Store(directory)
        let keys = (0..<20).map { "key\($0)" }
        try store.apply(keys.map { Self.put($0, "0") })
        let done = Atomic<Bool>(false)
        let readCount = Atomic<Int>(0)
        let storage = store.storage
        // Each round writes round r to every key in one batch, so a snapshot sees one round
        // everywhere; every tenth round compacts up to the round before (20 revisions a round).
        // The reader is a thread of its own: tasks running beside it in the suite could hold
        // every thread of the shared pool.
        let outcome = Mutex<(reads: Int, problems: [String])?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let reader = Thread {
            var reads = 0
            var problems: [String] = []
            while !done.load(ordering: .relaxed) && problems.count < 5 {
                do {
                    let result = try storage.read(RangeRequest(.prefix(Array("key".utf8)))).get()
                    let values = Set(result.kvs.map { String(decoding: $0.value, as: UTF8.self) })
                    if result.kvs.count != keys.count || values.count != 1 {
                        problems.append("\(result.kvs.count) keys with values \(values.sorted())")
                    }
                    // A read at the oldest revision still readable finds the key, unless a
                    // compaction moved past it in between.
                    let past = try storage.revisions()
                    if past.compacted > 0 {
                        switch try storage.read(RangeRequest(.key(Array("key3".utf8)), revision: past.compacted)) {
                        case .success(let old) where old.kvs.count != 1: problems.append("key3 missing at \(past.compacted)")
                        case .success, .failure(.compacted): break
                        case .failure(let error): problems.append("\(error)")
                        }
                    }
                } catch {
                    problems.append("\(error)")
                }
                reads += 1
                readCount.add(1, ordering: .relaxed)
            }
            outcome.withLock { $0 = (reads, problems) }
            finished.signal()
        }
        reader.start()
        // At least 300 rounds, and on until the reader has read 300 times (at most 20,000 rounds).
        var rounds = 0
        while rounds < 300 || (readCount.load(ordering: .relaxed) < 300 && rounds < 20_000) {
            rounds += 1
            let round = rounds
            var commands = keys.map { Self.put($0, "\(round)") }
            if round % 10 == 0 { commands.append(.compact(Revision(20 * round))) }
            try store.apply(commands)
        }
        done.store(true, ordering: .relaxed)
        finished.wait()
        let (reads, problems) = try #require(outcome.withLock { $0 })
        #expect(problems.isEmpty, "\(problems)")
        #expect(reads >= 300)
        #expect(try store.value("key0") == "\(rounds)")
    }

    @Test("versions kept whole are served only for the revision they are, and the oldest go first past the budget")
    func keptVersions() throws {
        // Room for 64 versions of this size (a version may take a 64th of the budget).
        let value = Bytes(repeating: 7, count: 100)
        let index = KeyIndex(keptBytes: 64 * KeyIndex.cost(KeyValue(key: Array("k00".utf8), value: value, createRevision: 1, modRevision: 1, version: 1, lease: 0)))
        func version(_ key: String, _ revision: Revision) -> KeyValue {
            KeyValue(key: Array(key.utf8), value: value, createRevision: 1, modRevision: revision, version: 1, lease: 0)
        }
        func put(_ key: String, _ revision: Revision) {
            index.record(Array(key.utf8), KeyIndex.Change(revision: revision, lease: 0, deleted: false), version: version(key, revision))
        }
        put("a", 1)
        put("a", 2)
        #expect(try index.change(Array("a".utf8), at: 2)?.version == version("a", 2))
        // At revision 1 the change is known but its version must come from the file.
        #expect(try index.change(Array("a".utf8), at: 1)?.change.revision == 1)
        #expect(try index.change(Array("a".utf8), at: 1)?.version == nil)
        // A deletion forgets the version.
        index.record(Array("a".utf8), KeyIndex.Change(revision: 3, lease: 0, deleted: true), version: nil)
        #expect(try index.change(Array("a".utf8), at: 3) == nil)
        #expect(try index.change(Array("a".utf8), at: 2)?.version == nil)
        // Past the budget the first kept go first.
        let keys = (10..<80).map { "k\($0)" }
        for (offset, key) in keys.enumerated() { put(key, Revision(4 + offset)) }
        #expect(try index.change(Array("k10".utf8), at: 1_000)?.version == nil)
        #expect(try index.change(Array("k79".utf8), at: 1_000)?.version == version("k79", 73))
        let kept = try keys.filter { try index.change(Array($0.utf8), at: 1_000)?.version != nil }
        #expect((60...64).contains(kept.count) && kept == Array(keys.suffix(kept.count)), "\(kept)")
        // Every key still reads from the index, kept or not.
        #expect(try index.live(in: KeyBounds(start: [], end: nil), after: nil, at: 1_000, limit: 100).map { String(decoding: $0.key, as: UTF8.self) } == keys)
        // Replacing the index forgets every kept version.
        index.replace(with: [Array("k79".utf8): [KeyIndex.Change(revision: 73, lease: 0, deleted: false)]], compacted: 0)
        #expect(try index.change(Array("k79".utf8), at: 1_000)?.version == nil)
    }
}
