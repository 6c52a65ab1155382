import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Testing

/// A client's write applies once per (session, sequence), whoever sends it how often, through
/// restarts and snapshots; sessions are forgotten by the commands' own time, the same on every
/// member.
@Suite("Client sessions")
struct ClientSessionTests {
    /// Commits commands as one batch each and returns their results.
    final class Store {
        let storage: any NodeStorage
        var index: Raft.Index = 0

        init(_ storage: any NodeStorage, bootstrap: Bool = true, index: Raft.Index = 0) throws {
            self.storage = storage
            self.index = index
            if bootstrap { try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1]))) }
        }

        func apply(_ command: KVCommand) throws -> Result<KVResult, KVError>? {
            index += 1
            let entry = Raft.Entry(term: 1, index: index, payload: .command(command.encoded()))
            return try storage.commit(StorageBatch(entries: [entry], hardState: Raft.HardState(term: 1, commit: index), committedEntries: [entry]))
                .first?.result
        }

        func counter() throws -> Int {
            let found = try storage.read(RangeRequest(.key(Array("n".utf8)))).get().kvs.first
            return found.map { Int(String(decoding: $0.value, as: UTF8.self)) ?? -1 } ?? 0
        }
    }

    /// "Add one to n if it is still `seen`": what a counter increment sends.
    static func increment(from seen: Int) -> KVCommand {
        .transaction(
            Transaction(
                compares: [seen == 0 ? .absent(Array("n".utf8)) : Compare(key: Array("n".utf8), .value(Array("\(seen)".utf8)))],
                success: [.put(Put(key: Array("n".utf8), value: Array("\(seen + 1)".utf8)))], failure: []))
    }

    static func stamped(_ command: KVCommand, session: UInt64 = 7, sequence: UInt64, acknowledged: UInt64 = 0, nowMs: Int64 = 1_000) -> KVCommand {
        .sessioned(ClientStamp(session: session, sequence: sequence, acknowledgedThrough: acknowledged), nowMs: nowMs, command)
    }

    @Test("a retried write gets the recorded result and applies once; a new sequence applies", arguments: BackendKind.allCases)
    func retriesApplyOnce(_ kind: BackendKind) throws {
        let directory = TempDirectory()
        let store = try Store(try kind.make(directory))
        let put = KVCommand.put(Put(key: Array("k".utf8), value: Array("v".utf8)))
        let first = try store.apply(Self.stamped(put, sequence: 1))
        let retry = try store.apply(Self.stamped(put, sequence: 1))
        #expect(first == retry)
        #expect(try store.storage.read(RangeRequest(.key(Array("k".utf8)))).get().kvs.first?.version == 1)
        // A compare that held the first time reports success on a retry too, though it would
        // fail now: the retry is answered, not run.
        _ = try store.apply(Self.stamped(Self.increment(from: 0), sequence: 2, acknowledged: 1))
        guard case .success(.transaction(let again)) = try store.apply(Self.stamped(Self.increment(from: 0), sequence: 2, acknowledged: 1)) else {
            Issue.record("the retried increment failed")
            return
        }
        #expect(again.succeeded)
        #expect(try store.counter() == 1)
        // A failure is recorded too: the retry of a failed compare fails the same way.
        let stale = try store.apply(Self.stamped(Self.increment(from: 5), sequence: 3, acknowledged: 2))
        #expect(try store.apply(Self.stamped(Self.increment(from: 5), sequence: 3, acknowledged: 2)) == stale)
        // The revision moved once per applied write: the put and the increment.
        #expect(try store.storage.revisions().current == 2)
        // Acknowledged results are forgotten; asking for one again is an error, not a second application.
        _ = try store.apply(Self.stamped(put, sequence: 4, acknowledged: 3))
        guard case .failure(.sessionResultDiscarded) = try store.apply(Self.stamped(put, sequence: 2, acknowledged: 1)) else {
            Issue.record("an acknowledged sequence was applied or answered again")
            return
        }
        // Without a stamp the same write applies each time (etcd's clients send no session).
        _ = try store.apply(put)
        #expect(try store.storage.read(RangeRequest(.key(Array("k".utf8)))).get().kvs.first?.version == 3)
    }

    @Test("sessions survive a restart and a snapshot: a retry is still answered, not applied")
    func sessionsSurviveSnapshotsAndRestarts() throws {
        let directory = TempDirectory()
        do {
            let store = try Store(try BackendKind.sqlite.make(directory))
            _ = try store.apply(Self.stamped(Self.increment(from: 0), sequence: 1))
            try store.storage.close()
        }
        let store = try Store(try BackendKind.sqlite.make(directory), bootstrap: false, index: 1)
        guard case .success(.transaction(let retried)) = try store.apply(Self.stamped(Self.increment(from: 0), sequence: 1)) else {
            Issue.record("the retry after a restart was not answered with the recorded success")
            return
        }
        #expect(retried.succeeded && retried.revision == 1)
        #expect(try store.counter() == 1)

        let data = try store.storage.wholeImage().data
        for kind in BackendKind.allCases {
            let targetDirectory = TempDirectory()
            let target = try kind.make(targetDirectory)
            try target.bootstrap(.joining)
            let metadata = try transferSnapshot(from: store.storage, to: target, term: 1, membership: Raft.Membership(voters: [1]), chunkBytes: 16)
            let installed = try Store(target, bootstrap: false, index: metadata.index)
            _ = try installed.apply(Self.stamped(Self.increment(from: 0), sequence: 1))
            #expect(try installed.counter() == 1, "\(kind): the retry applied again after the snapshot")
            #expect(try target.wholeImage().data == data, "\(kind): the installed sessions differ")
        }
    }

    @Test("idle sessions are forgotten by the commands' clock, a full table evicts the least recently seen, and a forgotten session is told so")
    func expiryAndEviction() throws {
        var limits = Limits()
        limits.clientSessionsMax = 3
        limits.clientSessionIdleMsMax = 10_000
        limits.clientSessionResultsMax = 4
        var backend = MemoryKVBackend()
        let put = KVCommand.put(Put(key: Array("k".utf8), value: [1]))
        func apply(_ command: KVCommand) throws -> Result<KVResult, KVError> { try KVStateMachine.apply(command, to: &backend, limits: limits) }
        for session in 1...3 as ClosedRange<UInt64> { _ = try apply(Self.stamped(put, session: session, sequence: 1, nowMs: Int64(session))) }
        #expect(backend.clientSessionCount() == 3)
        // A fourth session evicts the least recently seen (session 1).
        _ = try apply(Self.stamped(put, session: 4, sequence: 1, nowMs: 10))
        #expect(backend.clientSession(1) == nil && backend.clientSession(4) != nil)
        // Session 1 had its answer (it acknowledges sequence 1): it is told it was forgotten.
        #expect(try apply(Self.stamped(put, session: 1, sequence: 2, acknowledged: 1, nowMs: 11)) == .failure(.sessionExpired(session: 1)))
        // Past the idle limit, everything unseen since is forgotten when a new session comes.
        _ = try apply(Self.stamped(put, session: 4, sequence: 2, acknowledged: 1, nowMs: 10_009))
        _ = try apply(Self.stamped(put, session: 5, sequence: 1, nowMs: 10_010))
        #expect(backend.clientSessionStates().map(\.record.id) == [4, 5])
        // More unacknowledged requests than the window are refused, not recorded.
        guard case .failure(.sessionWindowExceeded) = try apply(Self.stamped(put, session: 5, sequence: 6, nowMs: 10_011)) else {
            Issue.record("a request past the window was accepted")
            return
        }
        #expect(backend.sessionResult(5, sequence: 6) == nil)
    }

    @Test("a stamp without a session or a sequence, or a stamp inside a stamp, is refused before the log")
    func malformedStamps() {
        let put = KVCommand.put(Put(key: Array("k".utf8), value: [1]))
        for bad in [
            Self.stamped(put, session: 0, sequence: 1), Self.stamped(put, sequence: 0), Self.stamped(put, sequence: 2, acknowledged: 2),
            Self.stamped(Self.stamped(put, sequence: 1), sequence: 2),
        ] {
            #expect(throws: KVError.self) { try KVValidator.validate(bad, limits: .standard) }
        }
        #expect(throws: DecodingError.self) {
            var bytes = Self.stamped(put, sequence: 1).encoded()
            bytes.append(contentsOf: Self.stamped(put, sequence: 1).encoded().dropFirst(0))
            _ = try KVCommand(decoding: bytes)
        }
    }
}

