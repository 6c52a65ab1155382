import AspenCore
@testable import AspenKV
import AspenStorage
import Foundation
import Synchronization
import Testing

/// A clock the test moves by hand.
final class TestClock: Sendable {
    private let now = Mutex<Int64>(1_000_000)
    func read() -> Int64 { now.withLock { $0 } }
    func advance(ms: Int64) { now.withLock { $0 += ms } }
}

func bytes(_ text: String) -> Bytes { Array(text.utf8) }

/// The behaviour every `KeyValueStore` must have. Each implementation runs the whole suite.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible {
    case memory
    case memoryNodeStorage
    case sqlite

    var testDescription: String { rawValue }

    /// Where the SQLite stores of this test process go; removed when the process exits.
    static let directory: String = {
        let path = Self.directoryPath
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: StoreKind.directoryPath) }
        return path
    }()

    static var directoryPath: String { NSTemporaryDirectory() + "aspen-kv-suite-\(getpid())" }

    func make(_ clock: TestClock, limits: Limits = .standard) -> any KeyValueStore {
        switch self {
        case .memory: return MemoryKeyValueStore(limits: limits, nowMs: { clock.read() })
        case .memoryNodeStorage:
            return try! LocalKeyValueStore(storage: MemoryNodeStorage(limits: limits), limits: limits, nowMs: { clock.read() })
        case .sqlite:
            let path = Self.directory + "/\(UUID().uuidString).db"
            return try! LocalKeyValueStore(storage: SQLiteNodeStorage(path: path, limits: limits), limits: limits, nowMs: { clock.read() })
        }
    }
}

@Suite("KeyValueStore behaviour")
struct KeyValueStoreSuite {
    @Test("put and get carry revisions and versions", arguments: StoreKind.allCases)
    func putGet(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let first = try await store.put(bytes("a"), bytes("1"))
        #expect(first.revision == 1)
        let second = try await store.put(bytes("a"), bytes("2"), returnPrevious: true)
        #expect(second.revision == 2)
        #expect(second.previous?.value == bytes("1"))
        try await store.put(bytes("b"), bytes("x"))
        let a = try #require(try await store.get(bytes("a")))
        #expect(a.value == bytes("2"))
        #expect(a.createRevision == 1)
        #expect(a.modRevision == 2)
        #expect(a.version == 2)
        #expect(try await store.get(bytes("missing")) == nil)
    }

    @Test("deletes remove one key, a range or a prefix, and report how many", arguments: StoreKind.allCases)
    func deletes(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        for key in ["app/1", "app/2", "app/3", "b", "c", "d"] { try await store.put(bytes(key), bytes("v")) }
        #expect(try await store.delete(bytes("b")).deleted == 1)
        let range = try await store.delete(.range(start: bytes("c"), end: bytes("e")), returnPrevious: true)
        #expect(range.deleted == 2)
        #expect(range.previous.map(\.key) == [bytes("c"), bytes("d")])
        #expect(try await store.delete(.prefix(bytes("app/"))).deleted == 3)
        let before = try await store.scan(.prefix([]), countOnly: ()).revision
        let nothing = try await store.delete(bytes("zzz"))
        #expect(nothing.deleted == 0)
        #expect(nothing.revision == before, "deleting nothing must not create a revision")
        #expect(try await store.count(.prefix([])) == 0)
        // A deleted key starts over: version 1, new create revision.
        try await store.put(bytes("b"), bytes("again"))
        #expect(try await store.get(bytes("b"))?.version == 1)
    }

    @Test("reads at past revisions see the past; compacted and future revisions are clear errors", arguments: StoreKind.allCases)
    func mvcc(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let r1 = try await store.put(bytes("k"), bytes("one")).revision
        let r2 = try await store.put(bytes("k"), bytes("two")).revision
        let r3 = try await store.delete(bytes("k")).revision
        #expect(try await store.get(bytes("k"), revision: r1)?.value == bytes("one"))
        #expect(try await store.get(bytes("k"), revision: r2)?.value == bytes("two"))
        #expect(try await store.get(bytes("k"), revision: r3) == nil)
        #expect(try await store.scan(.prefix([]), revision: r1).kvs.count == 1)
        await #expect(throws: KVError.futureRevision(requested: r3 + 5, current: r3)) {
            try await store.get(bytes("k"), revision: r3 + 5)
        }
        try await store.compact(r2)
        await #expect(throws: KVError.compacted(requested: r1, oldestAvailable: r2)) {
            try await store.get(bytes("k"), revision: r1)
        }
        #expect(try await store.get(bytes("k"), revision: r2)?.value == bytes("two"))
        await #expect(throws: KVError.compacted(requested: r1, oldestAvailable: r2)) { try await store.compact(r1) }
    }

    @Test("a read inside a transaction at a past revision sees that revision, as etcd's does; without one it sees the transaction's own writes", arguments: StoreKind.allCases)
    func transactionReadAtRevision(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let r1 = try await store.put(bytes("k"), bytes("one")).revision
        _ = try await store.put(bytes("k"), bytes("two"))
        let transaction = Transaction(
            compares: [],
            success: [.put(Put(key: bytes("k"), value: bytes("three"))), .get(RangeRequest(.key(bytes("k")), revision: r1)), .get(RangeRequest(.key(bytes("k"))))])
        guard case .transaction(let result) = try await store.write(.transaction(transaction)) else {
            Issue.record("not a transaction result")
            return
        }
        guard result.results.count == 3, case .get(let past) = result.results[1], case .get(let now) = result.results[2] else {
            Issue.record("\(result.results)")
            return
        }
        #expect(past.kvs.map(\.value) == [bytes("one")])
        #expect(now.kvs.map(\.value) == [bytes("three")])
    }

    @Test("compare-and-swap and compare-and-delete", arguments: StoreKind.allCases)
    func conditionals(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let created = try await store.compareAndSwap(bytes("lock"), expected: nil, new: bytes("me"))
        #expect(created.succeeded)
        let again = try await store.compareAndSwap(bytes("lock"), expected: nil, new: bytes("you"))
        #expect(!again.succeeded)
        #expect(again.current?.value == bytes("me"))
        let wrong = try await store.compareAndSwap(bytes("lock"), expected: bytes("you"), new: bytes("x"))
        #expect(!wrong.succeeded)
        #expect(try await store.compareAndSwap(bytes("lock"), expected: bytes("me"), new: bytes("you")).succeeded)
        #expect(!(try await store.compareAndDelete(bytes("lock"), expected: bytes("me")).succeeded))
        #expect(try await store.compareAndDelete(bytes("lock"), expected: bytes("you")).succeeded)
        #expect(try await store.get(bytes("lock")) == nil)
    }

    @Test("transactions compare value, version, revisions and lease with every operator", arguments: StoreKind.allCases)
    func transactions(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let lease = try await store.grantLease(ttlMs: 60_000)
        try await store.put(bytes("k"), bytes("m"), lease: lease.id)
        try await store.put(bytes("k"), bytes("m2"), lease: lease.id)
        let kv = try #require(try await store.get(bytes("k")))
        let holds: [Compare] = [
            Compare(key: bytes("k"), .value(bytes("m2"))),
            Compare(key: bytes("k"), .value(bytes("a")), .greater),
            Compare(key: bytes("k"), .value(bytes("z")), .less),
            Compare(key: bytes("k"), .value(bytes("m")), .notEqual),
            Compare(key: bytes("k"), .version(2)),
            Compare(key: bytes("k"), .version(1), .greater),
            Compare(key: bytes("k"), .createRevision(kv.createRevision)),
            Compare(key: bytes("k"), .modRevision(kv.modRevision + 1), .less),
            Compare(key: bytes("k"), .lease(lease.id)),
            Compare(key: bytes("k"), .lease(0), .notEqual),
            Compare.absent(bytes("other")),
        ]
        for compare in holds {
            let result = try await store.transaction(Transaction(compares: [compare], success: [], failure: []))
            #expect(result.succeeded, "\(compare) should hold")
        }
        let fails: [Compare] = [
            Compare(key: bytes("k"), .value(bytes("m"))),
            Compare(key: bytes("k"), .version(2), .greater),
            Compare(key: bytes("missing"), .value(bytes("")), .notEqual),
            Compare.absent(bytes("k")),
        ]
        for compare in fails {
            let result = try await store.transaction(Transaction(compares: [compare], success: [], failure: []))
            #expect(!result.succeeded, "\(compare) should not hold")
        }
        // Operations and their results, in order; reads see the transaction's own writes.
        let result = try await store.transaction(
            Transaction(
                compares: [Compare(key: bytes("k"), .version(2))],
                success: [
                    .put(Put(key: bytes("n"), value: bytes("1"))), .get(RangeRequest(.prefix(bytes("")))),
                    .delete(Delete(.key(bytes("k")))),
                ],
                failure: [.get(RangeRequest(.key(bytes("k"))))]))
        #expect(result.succeeded)
        #expect(result.results.count == 3)
        guard case .get(let seen) = result.results[1], case .delete(let deleted) = result.results[2] else {
            Issue.record("unexpected results \(result.results)")
            return
        }
        #expect(seen.kvs.map(\.key) == [bytes("k"), bytes("n")])
        #expect(deleted.deleted == 1)
        #expect(deleted.revision == result.revision)
    }

    @Test("nested transactions: branches chosen against the state before any write, one revision, all or nothing", arguments: StoreKind.allCases)
    func nestedTransactions(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        try await store.put(bytes("flag"), bytes("on"))
        // The outer put changes "flag", but the nested compare sees it as it was before.
        let inner = Transaction(
            compares: [Compare(key: bytes("flag"), .value(bytes("on")))],
            success: [.put(Put(key: bytes("a"), value: bytes("1"))), .get(RangeRequest(.key(bytes("flag"))))],
            failure: [.put(Put(key: bytes("b"), value: bytes("1")))])
        let result = try await store.transaction(
            Transaction(compares: [], success: [.put(Put(key: bytes("flag"), value: bytes("off"))), .transaction(inner)]))
        #expect(result.succeeded)
        guard case .transaction(let nested)? = result.results.last, case .get(let seen)? = nested.results.last else {
            Issue.record("unexpected results \(result.results)")
            return
        }
        #expect(nested.succeeded)
        #expect(nested.revision == result.revision, "one revision for the whole command")
        #expect(seen.kvs.first?.value == bytes("off"), "reads still see earlier writes")
        #expect(try await store.get(bytes("a"))?.value == bytes("1"))
        #expect(try await store.get(bytes("b")) == nil)
        // A put on a missing lease anywhere on the chosen path fails the whole command first.
        let before = try await store.get(bytes("flag"))
        await #expect(throws: KVError.leaseNotFound(999)) {
            try await store.transaction(
                Transaction(
                    compares: [],
                    success: [
                        .put(Put(key: bytes("flag"), value: bytes("x"))),
                        .transaction(Transaction(compares: [], success: [.put(Put(key: bytes("c"), value: [], lease: 999))])),
                    ]))
        }
        #expect(try await store.get(bytes("flag")) == before)
        // A key written by the outer branch and by either nested branch is refused.
        await #expect(throws: KVError.duplicateKey(bytes("a"))) {
            try await store.transaction(
                Transaction(
                    compares: [],
                    success: [
                        .put(Put(key: bytes("a"), value: [])),
                        .transaction(Transaction(compares: [], success: [], failure: [.delete(Delete(.key(bytes("a"))))])),
                    ]))
        }
        // Nesting is bounded.
        var deep = Transaction(compares: [], success: [])
        for _ in 0..<Limits.standard.transactionDepthMax { deep = Transaction(compares: [], success: [.transaction(deep)]) }
        await #expect(throws: KVError.self) { try await store.transaction(deep) }
    }

    @Test("a put may keep the key's value or lease; on a missing key it fails, and fails its whole transaction", arguments: StoreKind.allCases)
    func ignoreValueAndLease(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let lease = try await store.grantLease(ttlMs: 60_000)
        try await store.put(bytes("k"), bytes("v1"), lease: lease.id)
        // A new value, the same lease.
        _ = try await store.write(.put(Put(key: bytes("k"), value: bytes("v2"), ignoreLease: true)))
        var kv = try #require(try await store.get(bytes("k")))
        #expect(kv.value == bytes("v2") && kv.lease == lease.id && kv.version == 2)
        // The same value, no lease.
        _ = try await store.write(.put(Put(key: bytes("k"), value: [], lease: 0, ignoreValue: true)))
        kv = try #require(try await store.get(bytes("k")))
        #expect(kv.value == bytes("v2") && kv.lease == 0 && kv.version == 3)
        await #expect(throws: KVError.keyNotFound(bytes("missing"))) {
            try await store.write(.put(Put(key: bytes("missing"), value: [], ignoreValue: true)))
        }
        await #expect(throws: KVError.keyNotFound(bytes("missing"))) {
            try await store.transaction(
                Transaction(
                    compares: [],
                    success: [.put(Put(key: bytes("k"), value: bytes("never"))), .put(Put(key: bytes("missing"), value: [1], ignoreLease: true))]))
        }
        #expect(try await store.get(bytes("k"))?.value == bytes("v2"), "nothing of the failed transaction was written")
        // Both flags survive the log's encoding; a flag byte from the future is refused.
        let command = KVCommand.put(Put(key: bytes("k"), value: [], returnPrevious: true, ignoreValue: true, ignoreLease: true))
        #expect(try KVCommand(decoding: command.encoded()) == command)
        var encoded = command.encoded()
        encoded[encoded.count - 1] |= 0x40
        #expect(throws: DecodingError.self) { try KVCommand(decoding: encoded) }
    }

    @Test("a compare over a range holds when every key in it passes; an empty range is judged as a missing key", arguments: StoreKind.allCases)
    func rangeCompares(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        for (key, value) in [("app/a", "1"), ("app/b", "1"), ("app/c", "2"), ("other", "9")] { try await store.put(bytes(key), bytes(value)) }
        func succeeds(_ compare: Compare) async throws -> Bool {
            try await store.transaction(Transaction(compares: [compare], success: [], failure: [])).succeeded
        }
        let prefixEnd = KeyBounds.prefixEnd(bytes("app/"))
        #expect(try await succeeds(Compare(key: bytes("app/"), .value(bytes("3")), .less, extent: .range(end: prefixEnd))))
        #expect(try await !succeeds(Compare(key: bytes("app/"), .value(bytes("1")), .equal, extent: .range(end: prefixEnd))))
        #expect(try await succeeds(Compare(key: bytes("app/a"), .value(bytes("1")), .equal, extent: .range(end: bytes("app/c")))))
        #expect(try await succeeds(Compare(key: bytes("app/"), .version(1), .equal, extent: .range(end: nil))), "to the last key")
        #expect(try await !succeeds(Compare(key: bytes("app/"), .modRevision(4), .less, extent: .range(end: nil))))
        // No key in the range: version 0, and no value to compare.
        #expect(try await succeeds(Compare(key: bytes("none/"), .version(0), .equal, extent: .range(end: bytes("none0")))))
        #expect(try await !succeeds(Compare(key: bytes("none/"), .value(bytes("")), .greater, extent: .range(end: bytes("none0")))))
        // The range survives the log's encoding, with an end and without one.
        for end in [prefixEnd, nil] as [Bytes?] {
            let command = KVCommand.transaction(
                Transaction(compares: [Compare(key: bytes("app/"), .lease(0), .notEqual, extent: .range(end: end)), .absent(bytes("x"))], success: []))
            #expect(try KVCommand(decoding: command.encoded()) == command)
        }
    }

    @Test("a nested transaction survives the log's encoding; too deep an encoding is refused")
    func nestedTransactionCodec() throws {
        let inner = Transaction(compares: [Compare(key: bytes("k"), .version(1))], success: [.delete(Delete(.prefix(bytes("p"))))])
        let command = KVCommand.transaction(Transaction(compares: [], success: [.transaction(inner)], failure: [.get(RangeRequest(.key(bytes("k"))))]))
        #expect(try KVCommand(decoding: command.encoded()) == command)
        var limits = Limits.standard
        limits.transactionDepthMax = 1
        #expect(throws: DecodingError.self) { try KVCommand(decoding: command.encoded(), limits: limits) }
        let result = KVResult.transaction(
            TransactionResult(succeeded: true, revision: 4, results: [.transaction(TransactionResult(succeeded: false, revision: 4, results: []))]))
        #expect(try KVWire.decodeResult(KVWire.encode(result)) == result)
    }

    @Test("a batch is atomic and bounded", arguments: StoreKind.allCases)
    func batches(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        let revision = try await store.batch((0..<100).map { .put(Put(key: bytes("k\($0)"), value: bytes("\($0)"))) })
        let page = try await store.scan(.prefix(bytes("k")))
        #expect(page.kvs.count == 100)
        #expect(page.kvs.allSatisfy { $0.modRevision == revision })
        let tooMany = (0..<1001).map { WriteOperation.put(Put(key: bytes("x\($0)"), value: [])) }
        await #expect(throws: KVError.tooManyOperations(count: 1001, limit: 1000)) { try await store.batch(tooMany) }
        // A batch whose last put names a missing lease writes nothing at all.
        let failing: [WriteOperation] = [.put(Put(key: bytes("y1"), value: [])), .put(Put(key: bytes("y2"), value: [], lease: 999))]
        await #expect(throws: KVError.leaseNotFound(999)) { try await store.batch(failing) }
        #expect(try await store.get(bytes("y1")) == nil)
        await #expect(throws: KVError.duplicateKey(bytes("d"))) {
            try await store.batch([.put(Put(key: bytes("d"), value: [])), .put(Put(key: bytes("d"), value: [1]))])
        }
    }

    @Test("leases: grant, attach, keep alive, expire by the leader's clock, revoke deletes keys", arguments: StoreKind.allCases)
    func leases(_ kind: StoreKind) async throws {
        let clock = TestClock()
        let store = kind.make(clock)
        let lease = try await store.grantLease(ttlMs: 10_000)
        let chosen = try await store.grantLease(ttlMs: 5_000, id: 4242)
        #expect(chosen.id == 4242)
        await #expect(throws: KVError.leaseExists(4242)) { try await store.grantLease(ttlMs: 5_000, id: 4242) }
        try await store.put(bytes("session/a"), bytes("1"), lease: lease.id)
        try await store.put(bytes("session/b"), bytes("2"), lease: chosen.id)
        let status = try await store.leaseStatus(lease.id, withKeys: true)
        #expect(status.keys == [bytes("session/a")])
        #expect(status.remainingMs == 10_000)
        #expect(Set(try await store.leases().map(\.id)) == [lease.id, 4242])

        clock.advance(ms: 6_000)
        // The chosen lease expired; its key is gone. The other is kept alive.
        #expect(try await store.get(bytes("session/b")) == nil)
        await #expect(throws: KVError.leaseNotFound(4242)) { try await store.keepAlive(4242) }
        try await store.keepAlive(lease.id)
        clock.advance(ms: 6_000)
        #expect(try await store.get(bytes("session/a")) != nil)
        #expect(try await store.revokeLease(lease.id) == 1)
        #expect(try await store.get(bytes("session/a")) == nil)
        await #expect(throws: KVError.leaseNotFound(lease.id)) { try await store.revokeLease(lease.id) }
        await #expect(throws: KVError.leaseNotFound(77)) { try await store.put(bytes("x"), [], lease: 77) }
        await #expect(throws: KVError.invalidTTL(ms: 0, reason: "it must be positive")) { try await store.grantLease(ttlMs: 0) }
    }

    @Test("scans paginate with a default page, clamp large pages, and continue at one revision", arguments: StoreKind.allCases)
    func pagination(_ kind: StoreKind) async throws {
        var limits = Limits()
        limits.scanPageDefault = 10
        limits.scanPageMax = 25
        let store = kind.make(TestClock(), limits: limits)
        try await store.batch((0..<60).map { .put(Put(key: bytes(String(format3($0))), value: bytes("v"))) })
        let first = try await store.scan(.prefix([]))
        #expect(first.kvs.count == 10)
        #expect(first.count == 60)
        #expect(first.more)
        let clamped = try await store.scan(.prefix([]), limit: 1000)
        #expect(clamped.kvs.count == 25)
        #expect(clamped.limitClamped)
        // Writes between pages do not leak into the paged view.
        try await store.put(bytes("005x"), bytes("new"))
        var keys = first.kvs.map(\.key)
        var token = first.continuation
        while let next = token {
            let page = try await store.scan(.prefix([]), continuation: next)
            keys += page.kvs.map(\.key)
            token = page.continuation
        }
        #expect(keys.count == 60)
        #expect(keys == (0..<60).map { bytes(format3($0)) })
        let keysOnly = try await store.scan(.prefix([]), limit: 3, keysOnly: true)
        #expect(keysOnly.kvs.allSatisfy { $0.value.isEmpty })
        #expect(try await store.count(.range(start: bytes("010"), end: bytes("020"))) == 10)
        await #expect(throws: KVError.self) { try await store.scan(.prefix([]), continuation: [9, 9, 9]) }
        await #expect(throws: KVError.invalidContinuation("the token belongs to another range")) {
            try await store.scan(.prefix(bytes("0")), continuation: first.continuation)
        }
    }

    @Test("a scan page stops at Limits.responseBytesMax and continues with a token; one value larger than it still comes alone", arguments: StoreKind.allCases)
    func pageBytes(_ kind: StoreKind) async throws {
        var limits = Limits()
        limits.responseBytesMax = 10_000
        let store = kind.make(TestClock(), limits: limits)
        // 30 keys of 1 KB values: at most 9 fit in a page of 10,000 bytes (key and value bytes).
        try await store.batch((0..<30).map { .put(Put(key: bytes(String(format3($0))), value: Array(repeating: 7, count: 1_000))) })
        try await store.put(bytes("big"), Array(repeating: 1, count: 20_000))
        var keys: [Bytes] = []
        var token: Bytes?
        var pages = 0
        repeat {
            let page = try await store.scan(.prefix([]), limit: 1_000, continuation: token)
            pages += 1
            let pageBytes = page.kvs.reduce(0) { $0 + $1.key.count + $1.value.count }
            #expect(pageBytes <= limits.responseBytesMax || page.kvs.count == 1, "a page of \(pageBytes) bytes")
            #expect(page.more == (page.continuation != nil))
            keys += page.kvs.map(\.key)
            token = page.continuation
        } while token != nil && pages < 100
        #expect(keys == (0..<30).map { bytes(format3($0)) } + [bytes("big")])
        #expect(pages >= 5, "\(pages) pages")
    }

    @Test("bad input is refused before anything is written, naming the limit", arguments: StoreKind.allCases)
    func validation(_ kind: StoreKind) async throws {
        let store = kind.make(TestClock())
        await #expect(throws: KVError.emptyKey) { try await store.put([], bytes("v")) }
        let bigKey = Bytes(repeating: 1, count: 1025)
        let error = await #expect(throws: KVError.self) { try await store.put(bigKey, bytes("v")) }
        #expect(error == .keyTooLarge(bytes: 1025, limit: 1024))
        #expect(error?.description.contains("keyBytesMax (1024)") == true)
        await #expect(throws: KVError.valueTooLarge(bytes: 1_048_577, limit: 1_048_576)) {
            try await store.put(bytes("k"), Bytes(repeating: 0, count: 1_048_577))
        }
        await #expect(throws: KVError.self) { try await store.delete(.range(start: bytes("z"), end: bytes("a"))) }
        #expect(try await store.count(.prefix([])) == 0)
    }
}

func format3(_ value: Int) -> String {
    value < 10 ? "00\(value)" : value < 100 ? "0\(value)" : "\(value)"
}

extension KeyValueStore {
    /// A count-only read, for its revision.
    func scan(_ selection: KeySelection, countOnly: Void) async throws -> RangeResult {
        try await read(RangeRequest(selection, countOnly: true), consistency: .linearizable)
    }
}
