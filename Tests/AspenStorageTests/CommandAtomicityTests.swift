import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Testing

@testable import AspenStorage

/// A command applies whole or not at all, on every backend: one that fails part-way leaves no
/// row, no index entry, no lease and no counter behind, and the next command is unaffected.
@Suite("Command atomicity")
struct CommandAtomicityTests {
    static let everything = KeyBounds(start: [], end: nil)

    /// The case that took whole clusters down: a transaction whose put ran before a read that
    /// fails. Its put must not surface under the next command's revision, and the next write of
    /// the same key must not collide with it.
    @Test("a transaction that fails after a put leaves nothing behind", arguments: BackendKind.allCases)
    func failedTransactionLeavesNoTrace(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let storage = try kind.make(directory)
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let poisoned = KVCommand.transaction(
            Transaction(
                compares: [],
                success: [
                    .put(Put(key: Array("b".utf8), value: Array("lost".utf8))),
                    .get(RangeRequest(.prefix([]), continuation: [0xFF, 0x01])),
                ],
                failure: []))
        let commands: [KVCommand] = [
            .put(Put(key: Array("a".utf8), value: Array("1".utf8))),
            poisoned,
            .put(Put(key: Array("b".utf8), value: Array("kept".utf8))),
        ]
        let entries = commands.enumerated().map { offset, command in
            Raft.Entry(term: 1, index: Raft.Index(offset + 1), payload: .command(command.encoded()))
        }
        let applied = try storage.commit(
            StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: 3), committedEntries: entries))
        guard case .failure(let error) = applied[1].result else {
            Issue.record("the transaction with a continuation token was applied: \(String(describing: applied[1].result))")
            return
        }
        #expect("\(error)".contains("continuation"))
        #expect(applied[1].events.isEmpty)
        guard case .success(.put(let put)) = applied[2].result else {
            Issue.record("the put after the failed transaction failed: \(String(describing: applied[2].result))")
            return
        }
        #expect(put.revision == 2)
        let b = try #require(try storage.read(RangeRequest(.key(Array("b".utf8)))).get().kvs.first)
        #expect(b.value == Array("kept".utf8) && b.version == 1 && b.createRevision == 2 && b.modRevision == 2)
        #expect(try storage.revisions().current == 2)
        // History holds exactly the two puts that succeeded.
        let replay = try storage.changes(in: Self.everything, from: 1, through: 2, withPrevious: false, limit: 10).get()
        #expect(replay.events.map { String(decoding: $0.keyValue.key, as: UTF8.self) } == ["a", "b"])
    }

    @Test("the validator refuses a continuation token inside a transaction before it is proposed")
    func validatorRefusesTokensInTransactions() {
        let nested = Transaction(compares: [], success: [.get(RangeRequest(.prefix([]), continuation: [1]))], failure: [])
        let outer = KVCommand.transaction(Transaction(compares: [], success: [.transaction(nested)], failure: []))
        #expect(throws: KVError.self) { try KVValidator.validate(outer, limits: .standard) }
        let plain = KVCommand.transaction(Transaction(compares: [], success: [.get(RangeRequest(.prefix([])))], failure: []))
        #expect(throws: Never.self) { try KVValidator.validate(plain, limits: .standard) }
    }

    /// Random command streams, with failures injected at random writes inside commands (and
    /// commands that fail on their own): after every command the backend's whole state —
    /// counters, leases, current keys, every version in history, reads at past revisions — equals
    /// a reference that applied only the commands that succeeded.
    @Test("random commands failing at random writes leave the state of a model that skipped them", arguments: [11, 12, 13] as [UInt64])
    func injectedFailures(seed: UInt64) throws {
        let directory = TempDirectory()
        var subjects: [any AtomicitySubject] = [MemorySubject(), try SQLiteSubject(directory)]
        for position in subjects.indices {
            var random = SplitMix64(seed: seed)
            var model = MemoryKVBackend()
            var failures = 0
            var now: Int64 = 0
            for step in 1...250 {
                now += Int64(random.next(in: 0...5))
                let command = StateMachineDeterminismTests.randomCommand(&random, now: now, compactBelow: Int64(step) / 2)
                // A client's command that fails records its failure (every retry gets it): only a
                // storage failure, which rolls the whole batch back, leaves nothing there.
                let sessioned = if case .sessioned = command { true } else { false }
                let fault = random.chance(0.7) ? Fault(afterWrites: Int(random.next(in: 0...2)), storage: sessioned || random.chance(0.2)) : nil
                let before = try subjects[position].dump()
                let outcome = Result { try subjects[position].apply(command, fault: fault) }
                let context = "\(subjects[position].name), seed \(seed), step \(step), \(command), fault \(String(describing: fault))"
                switch outcome {
                case .failure(let error):
                    #expect(error is InjectedStorageFailure, "\(context): \(error)")
                    #expect(try subjects[position].dump() == before, "\(context): a storage failure left a trace")
                    failures += 1
                case .success(.failure(let error)):
                    // Nothing of it stays but, for a client's command, its recorded failure.
                    var after = try subjects[position].dump()
                    if sessioned { after.sessions = before.sessions }
                    #expect(after == before, "\(context): the failed command (\(error)) left a trace")
                    if case .invalidCommand("injected") = error { failures += 1; continue }
                    let expected = try KVStateMachine.apply(command, to: &model)
                    #expect(expected == .failure(error), "\(context): the model says \(expected)")
                    #expect(try subjects[position].dump() == StateDump(model), "\(context): states differ")
                case .success(let result):
                    let expected = try KVStateMachine.apply(command, to: &model)
                    #expect(result == expected, "\(context): results differ")
                    #expect(try subjects[position].dump() == StateDump(model), "\(context): states differ")
                }
            }
            #expect(failures > 40, "seed \(seed): only \(failures) commands failed part-way; the test checks too little")
        }
    }
}

/// Where a test makes a command fail: after this many of its writes, with a command's own
/// error or with a storage error.
struct Fault: CustomStringConvertible {
    var afterWrites: Int
    var storage: Bool
    var description: String { "after \(afterWrites) writes (\(storage ? "storage" : "command") error)" }
}

struct InjectedStorageFailure: Error {}

/// A backend that fails at its Nth write, after making it: what a command that throws part-way
/// through looks like to the state machine.
struct FaultyBackend<Base: KVBackend>: KVBackend {
    var base: Base
    let fault: Fault?
    var writes = 0

    mutating func wrote() throws {
        guard let fault else { return }
        writes += 1
        guard writes > fault.afterWrites else { return }
        if fault.storage { throw InjectedStorageFailure() }
        throw KVError.invalidCommand("injected")
    }

    func revision() throws -> Revision { try base.revision() }
    func compactedRevision() throws -> Revision { try base.compactedRevision() }
    mutating func setRevision(_ revision: Revision) throws { try base.setRevision(revision); try wrote() }
    mutating func setCompactedRevision(_ revision: Revision) throws { try base.setCompactedRevision(revision); try wrote() }
    func get(_ key: Bytes, at revision: Revision?) throws -> KeyValue? { try base.get(key, at: revision) }
    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int) throws -> [KeyValue] {
        try base.scan(bounds, at: revision, after: after, limit: limit)
    }
    func scan(_ bounds: KeyBounds, at revision: Revision?, after: Bytes?, limit: Int, bytesMax: Int) throws -> (found: [KeyValue], cut: Bool) {
        try base.scan(bounds, at: revision, after: after, limit: limit, bytesMax: bytesMax)
    }
    func count(_ bounds: KeyBounds, at revision: Revision?) throws -> Int { try base.count(bounds, at: revision) }
    func history(in bounds: KeyBounds, from: Revision, through: Revision, limit: Int) throws -> [KVChange] {
        try base.history(in: bounds, from: from, through: through, limit: limit)
    }
    mutating func write(_ keyValue: KeyValue) throws { try base.write(keyValue); try wrote() }
    mutating func remove(_ key: Bytes, at revision: Revision) throws { try base.remove(key, at: revision); try wrote() }
    mutating func compactHistory(before revision: Revision) throws { try base.compactHistory(before: revision); try wrote() }
    func lease(_ id: LeaseID) throws -> Lease? { try base.lease(id) }
    func leases() throws -> [Lease] { try base.leases() }
    mutating func saveLease(_ lease: Lease) throws { try base.saveLease(lease); try wrote() }
    mutating func deleteLease(_ id: LeaseID) throws { try base.deleteLease(id); try wrote() }
    func keys(attachedTo id: LeaseID) throws -> [Bytes] { try base.keys(attachedTo: id) }
    func expiredLeases(atMs nowMs: Int64) throws -> [LeaseID] { try base.expiredLeases(atMs: nowMs) }
    func leaseSequence() throws -> LeaseID { try base.leaseSequence() }
    mutating func setLeaseSequence(_ id: LeaseID) throws { try base.setLeaseSequence(id); try wrote() }
    func clientSession(_ id: UInt64) throws -> ClientSessionRecord? { try base.clientSession(id) }
    mutating func saveClientSession(_ session: ClientSessionRecord, previous: ClientSessionRecord?) throws {
        try base.saveClientSession(session, previous: previous)
        try wrote()
    }
    mutating func removeClientSession(_ id: UInt64) throws { try base.removeClientSession(id); try wrote() }
    func clientSessionCount() throws -> Int { try base.clientSessionCount() }
    func clientSessions(lastSeenBeforeMs ms: Int64, limit: Int) throws -> [UInt64] { try base.clientSessions(lastSeenBeforeMs: ms, limit: limit) }
    func sessionResult(_ id: UInt64, sequence: UInt64) throws -> Bytes? { try base.sessionResult(id, sequence: sequence) }
    mutating func saveSessionResult(_ id: UInt64, sequence: UInt64, _ result: Bytes) throws {
        try base.saveSessionResult(id, sequence: sequence, result)
        try wrote()
    }
    mutating func dropSessionResults(_ id: UInt64, through sequence: UInt64) throws { try base.dropSessionResults(id, through: sequence); try wrote() }
    func clientSessionStates() throws -> [ClientSessionState] { try base.clientSessionStates() }
    func systemRecord(_ name: Bytes) throws -> Bytes? { try base.systemRecord(name) }
    func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] { try base.systemRecords(prefix: prefix) }
    mutating func setSystemRecord(_ name: Bytes, to value: Bytes) throws { try base.setSystemRecord(name, to: value); try wrote() }
    mutating func removeSystemRecord(_ name: Bytes) throws { try base.removeSystemRecord(name); try wrote() }
    func systemRecordCount() throws -> Int { try base.systemRecordCount() }
    mutating func beginCommand() throws { try base.beginCommand() }
    mutating func endCommand(keepingWrites: Bool) throws { try base.endCommand(keepingWrites: keepingWrites) }
}

/// Everything a reader can learn of a backend's state.
struct StateDump: Equatable, CustomStringConvertible {
    struct Change: Equatable {
        var key: Bytes
        var revision: Revision
        var keyValue: KeyValue?
    }

    var revision: Revision
    var compacted: Revision
    var leaseSequence: LeaseID
    var leases: [Lease]
    var history: [Change]
    /// Every key at each of the last few revisions, the current one first.
    var recent: [[KeyValue]]
    var attached: [[Bytes]]
    var sessions: [ClientSessionState]
    var systemRecords: [SystemRecord]

    init<Backend: KVBackend>(_ backend: Backend) throws {
        let all = KeyBounds(start: [], end: nil)
        revision = try backend.revision()
        compacted = try backend.compactedRevision()
        leaseSequence = try backend.leaseSequence()
        leases = try backend.leases()
        history = try backend.history(in: all, from: 0, through: .max, limit: .max).map {
            Change(key: $0.key, revision: $0.revision, keyValue: $0.keyValue)
        }
        recent = [try backend.scan(all, at: nil, after: nil, limit: .max)]
        for past in stride(from: revision, through: max(compacted, revision - 3), by: -1) where past > 0 {
            recent.append(try backend.scan(all, at: past, after: nil, limit: .max))
        }
        attached = try (0...4).map { try backend.keys(attachedTo: LeaseID($0)) }
        sessions = try backend.clientSessionStates()
        systemRecords = try backend.systemRecords(prefix: []).map { SystemRecord(name: $0.name, value: $0.value) }
    }

    var description: String { "revision \(revision), compacted \(compacted), \(history.count) changes, \(leases.count) leases" }
}

protocol AtomicitySubject {
    var name: String { get }
    mutating func apply(_ command: KVCommand, fault: Fault?) throws -> Result<KVResult, KVError>
    func dump() throws -> StateDump
}

struct MemorySubject: AtomicitySubject {
    var backend = MemoryKVBackend()
    var name: String { "memory" }

    mutating func apply(_ command: KVCommand, fault: Fault?) throws -> Result<KVResult, KVError> {
        var faulty = FaultyBackend(base: backend, fault: fault)
        defer { backend = faulty.base }
        return try KVStateMachine.apply(command, to: &faulty)
    }

    func dump() throws -> StateDump { try StateDump(backend) }
}

/// Each command in a SQLite transaction of its own, as the store applies a batch of one.
struct SQLiteSubject: AtomicitySubject {
    let storage: SQLiteNodeStorage
    var name: String { "sqlite" }

    init(_ directory: TempDirectory) throws {
        storage = try SQLiteNodeStorage(path: directory.path())
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
    }

    mutating func apply(_ command: KVCommand, fault: Fault?) throws -> Result<KVResult, KVError> {
        let storage = self.storage
        let (result, compacted) = try storage.pool.write { db in
            var faulty = FaultyBackend(
                base: try SQLiteKVBackend(db, file: storage.path, index: storage.index, writer: true), fault: fault)
            let result = try KVStateMachine.apply(command, to: &faulty)
            try faulty.base.flush()
            return (result, faulty.base.compactedInTransaction)
        }
        if let compacted { storage.index.compact(through: compacted) }
        return result
    }

    func dump() throws -> StateDump {
        let storage = self.storage
        return try storage.pool.read { db in try StateDump(SQLiteKVBackend(db, file: storage.path, index: storage.index)) }
    }
}

@Suite("Stored state integrity")
struct StoredStateIntegrityTests {
    /// The membership is what decides who votes: one that cannot be read is damage to stop on,
    /// never something to replace with an empty membership at the next commit.
    @Test("a stored membership that does not decode stops commits instead of being overwritten")
    func undecodableMembership() throws {
        let directory = TempDirectory()
        do {
            let storage = try SQLiteNodeStorage(path: directory.path())
            try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1, 2, 3])))
            try storage.close()
        }
        let damaged: [UInt8] = [0xFF, 0xFF, 0xFF]
        do {
            let queue = try DatabaseQueue(path: directory.path())
            try queue.write { try $0.execute(sql: "UPDATE raft_state SET snapshot_membership = ?", arguments: [Data(damaged)]) }
            try queue.close()
        }
        let storage = try SQLiteNodeStorage(path: directory.path())
        let entry = Raft.Entry(term: 1, index: 1, payload: command("k", "v"))
        #expect(throws: StorageError.self) {
            _ = try storage.commit(StorageBatch(entries: [entry], hardState: Raft.HardState(term: 1, commit: 1), committedEntries: [entry]))
        }
        try storage.close()
        let queue = try DatabaseQueue(path: directory.path())
        let stored = try queue.read { try Data.fetchOne($0, sql: "SELECT snapshot_membership FROM raft_state") }
        #expect(stored.map { Array($0) } == damaged)
    }
}

@Suite("Reads during a snapshot install")
struct ReadsDuringInstallTests {
    /// A read may run on the node's event loop: while an image is being installed it fails at
    /// once with `busy` rather than wait (it used to retry every millisecond for up to 30 s).
    @Test("a read that meets an install under way fails at once with busy, and reads work again after it")
    func busyDuringInstall() throws {
        let directory = TempDirectory()
        let storage = try SQLiteNodeStorage(path: directory.path())
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let put = KVCommand.put(Put(key: Array("a".utf8), value: Array("1".utf8)))
        _ = try storage.commit(
            StorageBatch(
                entries: [Raft.Entry(term: 1, index: 1, payload: .command(put.encoded()))], hardState: Raft.HardState(term: 1, commit: 1),
                committedEntries: [Raft.Entry(term: 1, index: 1, payload: .command(put.encoded()))]))
        storage.index.beginReplacement()
        do {
            _ = try storage.read(RangeRequest(.key(Array("a".utf8))))
            Issue.record("a read during an install was served")
        } catch StorageError.busy(_, let detail) {
            #expect(detail.contains("snapshot image is being installed"))
        }
        storage.index.endReplacement()
        #expect(try storage.read(RangeRequest(.key(Array("a".utf8)))).get().kvs.first?.value == Array("1".utf8))
    }
}
