import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Testing

@testable import AspenStorage

/// System records in the node stores: applied through the log like any command, durable, carried
/// by snapshot images, and out of reach of every key operation.
@Suite("System records in the node store")
struct SystemRecordStorageTests {
    static let membership = Raft.Membership(voters: [1])

    static func name(_ text: String) -> Bytes { Array(text.utf8) }

    static func set(_ name: String, _ value: String) -> SystemRecordChange { .set(name: Self.name(name), value: Array(value.utf8)) }

    static func system(_ changes: SystemRecordChange...) -> KVCommand { .system(SystemWrite(changes: changes)) }

    /// A store's records as text, by name.
    static func records(_ storage: any NodeStorage, prefix: String = "") throws -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: try storage.systemRecords(prefix: name(prefix)).map {
                (String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self))
            })
    }

    /// Commits `commands` as one batch after the entries already in `storage`; returns what they applied.
    @discardableResult
    static func commit(_ commands: [KVCommand], to storage: any NodeStorage) throws -> [AppliedEntry] {
        let after = try storage.appliedIndex
        let entries = commands.enumerated().map { offset, command in
            Raft.Entry(term: 1, index: after + 1 + Raft.Index(offset), payload: .command(command.encoded()))
        }
        return try storage.commit(
            StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: after + Raft.Index(commands.count)), committedEntries: entries))
    }

    static func make(_ kind: BackendKind, _ directory: TempDirectory, limits: Limits = .standard) throws -> any NodeStorage {
        let storage: any NodeStorage =
            switch kind {
            case .sqlite: try SQLiteNodeStorage(path: directory.path(), limits: limits)
            case .memory: MemoryNodeStorage(limits: limits)
            }
        try storage.bootstrap(.bootstrap(Self.membership))
        return storage
    }

    @Test("system writes apply through the log, read back by prefix in name order, and change no revision", arguments: BackendKind.allCases)
    func applyThroughTheLog(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try Self.make(kind, directory)
        let applied = try Self.commit(
            [
                .put(Put(key: Self.name("k"), value: [1])),
                Self.system(Self.set("auth/root/b", "B"), Self.set("auth/root/a", "A"), Self.set("auth/mode", "open")),
                Self.system(Self.set("auth/mode", "required"), Self.set("auth/revoked/1", "x"), .remove(name: Self.name("auth/root/b"))),
            ], to: storage)
        #expect(Array(applied.dropFirst().map(\.result)) == [.success(.systemWritten(changed: 3)), .success(.systemWritten(changed: 3))])
        #expect(applied.dropFirst().allSatisfy { $0.events.isEmpty })
        #expect(try Self.records(storage) == ["auth/mode": "required", "auth/revoked/1": "x", "auth/root/a": "A"])
        #expect(try storage.systemRecords(prefix: []).map(\.name) == [Self.name("auth/mode"), Self.name("auth/revoked/1"), Self.name("auth/root/a")])
        #expect(try Self.records(storage, prefix: "auth/r") == ["auth/revoked/1": "x", "auth/root/a": "A"])
        #expect(try Self.records(storage, prefix: "auth/x").isEmpty)
        #expect(try storage.revisions().current == 1)
        try Self.commit([Self.system(.removePrefix(Self.name("auth/r")))], to: storage)
        #expect(try Self.records(storage) == ["auth/mode": "required"])
    }

    @Test("a prefix of 0xFF bytes selects the names that start with it, up to the last", arguments: BackendKind.allCases)
    func prefixOfHighBytes(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try Self.make(kind, directory)
        let names: [Bytes] = [[0xFE, 0xFF], [0xFF], [0xFF, 0x00], [0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0x01]]
        try Self.commit([.system(SystemWrite(changes: names.map { .set(name: $0, value: $0) }))], to: storage)
        #expect(try storage.systemRecords(prefix: [0xFF, 0xFF]).map(\.name) == [[0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0x01]])
        #expect(try storage.systemRecords(prefix: [0xFF]).map(\.name) == Array(names.dropFirst()))
        #expect(try storage.systemRecords(prefix: []).map(\.name) == names)
    }

    @Test("a write past systemRecordsMax fails whole on both stores, naming the limit, and the next write applies", arguments: BackendKind.allCases)
    func countBound(_ kind: BackendKind) throws {
        var limits = Limits()
        limits.systemRecordsMax = 4
        let directory = TempDirectory()
        let storage = try Self.make(kind, directory, limits: limits)
        try Self.commit([Self.system(Self.set("a", "1"), Self.set("b", "2"), Self.set("c", "3"))], to: storage)
        let applied = try Self.commit(
            [Self.system(Self.set("a", "changed"), .remove(name: Self.name("b")), Self.set("d", "4"), Self.set("e", "5"), Self.set("f", "6"))], to: storage)
        #expect(applied.first?.result == .failure(.systemRecordsExceeded(count: 5, limit: 4)))
        if case .failure(let error)? = applied.first?.result { #expect(error.description.contains("systemRecordsMax (4)")) }
        #expect(try Self.records(storage) == ["a": "1", "b": "2", "c": "3"])
        #expect(try Self.commit([Self.system(Self.set("d", "4"))], to: storage).first?.result == .success(.systemWritten(changed: 1)))
        #expect(try Self.records(storage).count == 4)
    }

    @Test("a system write that fails part-way leaves no record behind, on both backends")
    func failsWhole() throws {
        let directory = TempDirectory()
        var subjects: [any AtomicitySubject] = [MemorySubject(), try SQLiteSubject(directory)]
        for position in subjects.indices {
            _ = try subjects[position].apply(Self.system(Self.set("kept", "1"), Self.set("gone", "2")), fault: nil)
            let before = try subjects[position].dump()
            let write = Self.system(Self.set("kept", "changed"), .remove(name: Self.name("gone")), Self.set("new", "3"), .removePrefix([]))
            for afterWrites in 0...4 {
                for storageFault in [false, true] {
                    let outcome = Result { try subjects[position].apply(write, fault: Fault(afterWrites: afterWrites, storage: storageFault)) }
                    let context = "\(subjects[position].name), fault after \(afterWrites) writes, storage \(storageFault)"
                    switch outcome {
                    case .failure(let error): #expect(error is InjectedStorageFailure, "\(context): \(error)")
                    case .success(let result): #expect(result == .failure(.invalidCommand("injected")), "\(context): \(result)")
                    }
                    #expect(try subjects[position].dump() == before, "\(context): the failed write left a trace")
                }
            }
            // Three changes, then the prefix removal takes the two records left.
            #expect(try subjects[position].apply(write, fault: nil) == .success(.systemWritten(changed: 5)))
            #expect(try subjects[position].dump().systemRecords.isEmpty)
        }
    }

    @Test("a delete of the whole keyspace, a scan, a transaction and a watch replay never see or remove system records", arguments: BackendKind.allCases)
    func outsideTheKeyspace(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try Self.make(kind, directory)
        try Self.commit(
            [
                Self.system(Self.set("auth/mode", "required"), .set(name: [0], value: [0]), .set(name: [0xFF, 0xFF, 0xFF], value: [1])),
                .put(Put(key: Self.name("auth/mode"), value: Self.name("a key"))), .put(Put(key: [0xFF, 0xFF, 0xFF], value: [2])),
            ], to: storage)
        let everything = try storage.read(RangeRequest(.range(start: [], end: nil))).get()
        #expect(everything.kvs.map(\.key) == [Self.name("auth/mode"), [0xFF, 0xFF, 0xFF]])
        #expect(try storage.read(RangeRequest(.prefix([]), countOnly: true)).get().count == 2)
        let transaction = Transaction(
            compares: [Compare(key: [0], .version(0), .greater, extent: .range(end: nil))],
            success: [.delete(Delete(.prefix([]), returnPrevious: true)), .get(RangeRequest(.prefix([])))])
        let applied = try Self.commit([.transaction(transaction), .delete(Delete(.range(start: [], end: nil)))], to: storage)
        guard case .success(.transaction(let result))? = applied.first?.result, case .delete(let deleted) = result.results.first else {
            Issue.record("the transaction did not run: \(String(describing: applied.first?.result))")
            return
        }
        #expect(deleted.previous.map(\.key) == [Self.name("auth/mode"), [0xFF, 0xFF, 0xFF]])
        #expect(applied[1].events.isEmpty)
        #expect(try storage.systemRecords(prefix: []).map(\.name) == [[0], Self.name("auth/mode"), [0xFF, 0xFF, 0xFF]])
        #expect(try Self.records(storage, prefix: "auth/") == ["auth/mode": "required"])
        let replay = try storage.changes(in: KeyBounds(start: [], end: nil), from: 1, through: 3, withPrevious: true, limit: 100).get()
        #expect(replay.events.count == 4)
        #expect(replay.events.allSatisfy { $0.keyValue.key == Self.name("auth/mode") || $0.keyValue.key == [0xFF, 0xFF, 0xFF] })
        #expect(try storage.read(RangeRequest(.prefix([]))).get().kvs.isEmpty)
    }

    @Test("system records survive closing and reopening the SQLite store")
    func survivesReopening() throws {
        let directory = TempDirectory()
        do {
            let storage = try Self.make(.sqlite, directory)
            try Self.commit([Self.system(Self.set("auth/mode", "required"), Self.set("auth/root/1", "key"))], to: storage)
            try storage.close()
        }
        let reopened = try SQLiteNodeStorage(path: directory.path())
        #expect(try Self.records(reopened) == ["auth/mode": "required", "auth/root/1": "key"])
        #expect(try reopened.appliedIndex == 1)
        try Self.commit([Self.system(.remove(name: Self.name("auth/root/1")))], to: reopened)
        #expect(try Self.records(reopened) == ["auth/mode": "required"])
        try reopened.close()
    }

    @Test("a file written before system records existed gets their table on opening, and keeps working")
    func tableAddedOnOpening() throws {
        let directory = TempDirectory()
        do {
            let storage = try Self.make(.sqlite, directory)
            try Self.commit([.put(Put(key: Self.name("k"), value: [1]))], to: storage)
            try storage.close()
        }
        try DatabaseQueue(path: directory.path()).write { try $0.execute(sql: "DROP TABLE system_records") }
        let storage = try SQLiteNodeStorage(path: directory.path())
        #expect(try storage.systemRecords(prefix: []).isEmpty)
        try Self.commit([Self.system(Self.set("auth/mode", "open"))], to: storage)
        #expect(try Self.records(storage) == ["auth/mode": "open"])
        #expect(try storage.read(RangeRequest(.key(Self.name("k")))).get().kvs.first?.value == [1])
        // Its images carry the records like any other store's.
        let target = try Self.make(.memory, TempDirectory())
        try transferSnapshot(from: storage, to: target, term: 1, membership: Self.membership)
        #expect(try Self.records(target) == ["auth/mode": "open"])
        try storage.close()
    }

    @Test("a snapshot image carries the system records and replaces the target's", arguments: BackendKind.allCases)
    func snapshotTransfer(_ kind: BackendKind) throws {
        let sourceDirectory = TempDirectory()
        let source = try Self.make(kind, sourceDirectory)
        let values = (0..<300).map { SystemRecordChange.set(name: Array("auth/revoked/\($0)".utf8), value: Array(repeating: UInt8($0 % 251), count: 100)) }
        try Self.commit(
            [
                .put(Put(key: Self.name("k"), value: [1])), .system(SystemWrite(changes: values)),
                Self.system(Self.set("auth/mode", "required"), .set(name: [0xFF], value: [])),
            ], to: source)
        let targetDirectory = TempDirectory()
        let target = try Self.make(kind, targetDirectory)
        try Self.commit([Self.system(Self.set("stale", "gone after the install"), Self.set("auth/mode", "open"))], to: target)
        try transferSnapshot(from: source, to: target, term: 1, membership: Self.membership, chunkBytes: 1000)
        #expect(try target.appliedIndex == 3)
        #expect(try target.systemRecords(prefix: []).elementsEqual(try source.systemRecords(prefix: [])) { $0.name == $1.name && $0.value == $1.value })
        #expect(try target.systemRecords(prefix: []).count == 302)
        #expect(try Self.records(target, prefix: "stale").isEmpty)
        #expect(try target.read(RangeRequest(.key(Self.name("k")))).get().kvs.first?.value == [1])
        // The images of the two are the same image.
        #expect(try target.wholeImage().data == source.wholeImage().data)
        if kind == .sqlite, let target = target as? SQLiteNodeStorage {
            try target.close()
            let reopened = try SQLiteNodeStorage(path: targetDirectory.path())
            #expect(try reopened.systemRecords(prefix: []).count == 302)
            try reopened.close()
        }
    }

    /// An image as builds before system records wrote it, framed by hand: a header, one change,
    /// no system records frame and an end frame of three totals.
    static func imageBeforeSystemRecords() -> Bytes {
        func frame(_ kind: UInt8, _ payload: Bytes) -> Bytes {
            var writer = ByteWriter()
            writer.write(kind)
            writer.writeFixed(UInt32(payload.count))
            writer.writeRaw(payload)
            writer.writeFixed(CRC32C.checksum(writer.bytes))
            return writer.bytes
        }
        var header = ByteWriter()
        for number: Int64 in [1, 0, 0] { header.writeVarint(signed: number) }
        var changes = ByteWriter()
        changes.writeVarint(1)
        changes.write(1)
        changes.writeBytes(Self.name("old"))
        changes.writeBytes(Self.name("value"))
        for number: Int64 in [1, 1, 1, 0] { changes.writeVarint(signed: number) }
        return Array("AKV3".utf8) + frame(1, header.bytes) + frame(2, changes.bytes) + frame(5, [1, 0, 0])
    }

    @Test("an image written before system records existed installs, with none", arguments: BackendKind.allCases)
    func imageWithoutRecords(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try Self.make(kind, directory)
        try Self.commit([Self.system(Self.set("auth/mode", "required"))], to: storage)
        let metadata = Raft.SnapshotMetadata(index: 10, term: 1, membership: Self.membership)
        try storage.install(snapshotChunks(of: Self.imageBeforeSystemRecords(), metadata: metadata, chunkBytes: 7), hardState: Raft.HardState(term: 1, commit: 10))
        #expect(try storage.appliedIndex == 10)
        #expect(try storage.systemRecords(prefix: []).isEmpty)
        #expect(try storage.read(RangeRequest(.key(Self.name("old")))).get().kvs.first?.value == Self.name("value"))
        // And what it prepares from that state is the same image.
        #expect(try storage.wholeImage().data == Self.imageBeforeSystemRecords())
        try Self.commit([Self.system(Self.set("auth/mode", "open"))], to: storage)
        #expect(try Self.records(storage) == ["auth/mode": "open"])
    }

    @Test("memory and SQLite agree on system writes mixed with key-value commands, and on the images they prepare", arguments: [21, 22] as [UInt64])
    func memoryAndSQLiteAgree(seed: UInt64) throws {
        var limits = Limits()
        limits.systemRecordsMax = 12
        let directory = TempDirectory()
        let stores = [try Self.make(.sqlite, directory, limits: limits), try Self.make(.memory, directory, limits: limits)]
        var random = SplitMix64(seed: seed)
        var now: Int64 = 0
        for step in 1...150 {
            now += Int64(random.next(in: 0...5))
            var commands: [KVCommand] = []
            for _ in 0..<random.next(in: 1...4) {
                if random.chance(0.4) {
                    let changes = (0..<random.next(in: 0...6)).map { _ -> SystemRecordChange in
                        let name = Array("r\(random.next(in: 0...15))".utf8)
                        switch random.next(in: 0...5) {
                        case 0: return .remove(name: name)
                        case 1: return .removePrefix(Array("r1".utf8))
                        default: return .set(name: name, value: Array("v\(random.next(in: 0...3))".utf8))
                        }
                    }
                    commands.append(.system(SystemWrite(changes: changes)))
                } else {
                    commands.append(StateMachineDeterminismTests.randomCommand(&random, now: now, compactBelow: Int64(step) / 2))
                }
            }
            let results = try stores.map { try Self.commit(commands, to: $0) }
            #expect(results[0] == results[1], "seed \(seed), step \(step): results differ")
        }
        let images = try stores.map { try $0.wholeImage().data }
        #expect(images[0] == images[1], "seed \(seed): the images differ")
        #expect(try !stores[0].systemRecords(prefix: []).isEmpty)
    }
}
