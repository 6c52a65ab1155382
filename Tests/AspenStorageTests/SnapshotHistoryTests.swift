import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Testing

/// A member that catches up by snapshot is indistinguishable from one that applied the log:
/// the snapshot carries the history back to the compacted revision.
@Suite("Snapshots carry history")
struct SnapshotHistoryTests {
    static let membership = Raft.Membership(voters: [1, 2, 3])

    @Test(
        "after installing a snapshot, past-revision reads, history replay and state hashes match the source",
        arguments: BackendKind.allCases, BackendKind.allCases)
    func installKeepsHistory(source sourceKind: BackendKind, target targetKind: BackendKind) throws {
        let sourceDirectory = TempDirectory()
        let source = try sourceKind.make(sourceDirectory)
        try source.bootstrap(.bootstrap(Self.membership))
        // Sixty writes to a few keys, a deletion, a lease, then a compaction at revision 20.
        var commands: [KVCommand] = (1...50).map { .put(Put(key: Array("hot".utf8), value: Array("v\($0)".utf8))) }
        commands += [.delete(Delete(.key(Array("hot".utf8)))), .leaseGrant(LeaseGrant(id: 7, ttlMs: 60_000, nowMs: 0))]
        commands += (1...8).map { .put(Put(key: Array("k\($0)".utf8), value: Array("w\($0)".utf8), lease: $0 % 2 == 0 ? 7 : 0)) }
        commands.append(.compact(20))
        let entries = commands.enumerated().map { Raft.Entry(term: 1, index: Raft.Index($0.offset + 1), payload: .command($0.element.encoded())) }
        _ = try source.commit(
            StorageBatch(entries: entries, hardState: Raft.HardState(term: 1, commit: entries.last!.index), committedEntries: entries))
        let targetDirectory = TempDirectory()
        let target = try targetKind.make(targetDirectory)
        try target.bootstrap(.joining)
        try transferSnapshot(from: source, to: target, term: 1, membership: Self.membership, chunkBytes: 100)

        #expect(try target.revisions() == source.revisions())
        #expect(try target.revisions().compacted == 20)
        for revision in [20, 21, 35, 50, 51, 55, 59] as [Revision] {
            for request in [RangeRequest(.key(Array("hot".utf8)), revision: revision), RangeRequest(.prefix([]), revision: revision)] {
                #expect(try target.read(request) == source.read(request), "reads at revision \(revision) differ")
            }
        }
        #expect(try target.read(RangeRequest(.key(Array("hot".utf8)), revision: 30)).get().kvs.first?.value == Array("v30".utf8))
        let all = KeySelection.prefix([]).bounds
        let (current, _) = try source.revisions()
        #expect(
            try target.changes(in: all, from: 21, through: current, withPrevious: true, limit: 1_000).get().events
                == source.changes(in: all, from: 21, through: current, withPrevious: true, limit: 1_000).get().events)
        #expect(try target.stateHash().get() == source.stateHash().get())
        #expect(try target.stateHash(at: 30).get() == source.stateHash(at: 30).get())
        // The leases (and which keys they hold) came along too.
        #expect(try target.leases() == source.leases())
        // And the target, snapshotted in turn, hands on the same state.
        #expect(try target.wholeImage().data == source.wholeImage().data)
    }

    @Test("a snapshot whose history is out of order, or whose compacted revision is past its revision, is refused")
    func malformedSnapshots() throws {
        let change = { (key: String, revision: Revision) in
            KVChange(key: Array(key.utf8), revision: revision, keyValue: KeyValue(key: Array(key.utf8), value: [1], createRevision: revision, modRevision: revision, version: 1, lease: 0))
        }
        let unordered = KVSnapshot(revision: 5, compactedRevision: 0, leaseSequence: 0, changes: [change("b", 3), change("a", 3)], leases: [])
        #expect(throws: DecodingError.self) { try KVSnapshot(decoding: unordered.encoded()) }
        let backwards = KVSnapshot(revision: 5, compactedRevision: 6, leaseSequence: 0, changes: [], leases: [])
        #expect(throws: DecodingError.self) { try KVSnapshot(decoding: backwards.encoded()) }
        let fine = KVSnapshot(revision: 5, compactedRevision: 2, leaseSequence: 0, changes: [change("a", 3), change("b", 3), change("a", 4)], leases: [])
        #expect(try KVSnapshot(decoding: fine.encoded()) == fine)
    }
}
