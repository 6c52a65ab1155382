import AspenCore
import AspenRaft
import Testing

/// The node shell's pure policy, which `RaftNode` and the simulator both run.
@Suite("Node core: writers")
struct WriterBookTests {
    typealias Book = Raft.WriterBook<String>

    @Test("a writer is answered by the entry at its index only when that entry has its term")
    func termDecides() {
        var book = Book()
        #expect(book.wait("a", term: 2, at: 10) == nil)
        #expect(book.wait("b", term: 2, at: 11) == nil)
        let a = book.applied(at: 10, term: 2)
        #expect(a?.waiter == "a" && a?.isItsEntry == true)
        let b = book.applied(at: 11, term: 3)
        #expect(b?.waiter == "b" && b?.isItsEntry == false)
        #expect(book.applied(at: 12, term: 2) == nil)
        #expect(book.isEmpty)
    }

    @Test("a writer waiting at an index that another term's proposal takes is handed back, never forgotten")
    func displaced() {
        var book = Book()
        _ = book.wait("old", term: 2, at: 5)
        #expect(book.wait("new", term: 3, at: 5) == "old")
        #expect(book.count == 1)
    }

    @Test("a forwarded command waits where the leader put it, unless that index was handed out, it was refused, or its fate is unknown")
    func placements() {
        var book = Book()
        for (context, name) in [(1, "placed"), (2, "late"), (3, "refused"), (4, "silent")] as [(UInt64, String)] {
            book.forwarded(name, context: context)
        }
        guard case .waiting(nil) = book.place(.init(context: 1, result: .appended(term: 4, index: 21)), handedOut: 20) else {
            Issue.record("an index beyond the handed-out ones waits")
            return
        }
        #expect(book.applied(at: 21, term: 4)?.waiter == "placed")
        guard case .unknown("late") = book.place(.init(context: 2, result: .appended(term: 4, index: 20)), handedOut: 20) else {
            Issue.record("an index already handed out to apply is unknown")
            return
        }
        guard case .refused("refused") = book.place(.init(context: 3, result: .refused), handedOut: 20) else {
            Issue.record("a refusal ends the writer")
            return
        }
        guard case .unknown("silent") = book.place(.init(context: 4, result: .unknown), handedOut: 20) else {
            Issue.record("a leader that cannot say leaves the outcome unknown")
            return
        }
        #expect(book.isEmpty)
    }

    @Test("an answer for a context no writer waits on changes nothing")
    func strayAnswer() {
        var book = Book()
        book.forwarded("w", context: 1)
        guard case .none = book.place(.init(context: 2, result: .refused), handedOut: 0) else {
            Issue.record("a stray answer ended a writer")
            return
        }
        #expect(book.count == 1)
    }

    @Test("a snapshot ends the writers at or below its index, in index order; the rest wait on")
    func snapshotOver() {
        var book = Book()
        for index in [7, 3, 9, 5] as [Raft.Index] { _ = book.wait("w\(index)", term: 1, at: index) }
        #expect(book.takeThrough(7) == ["w3", "w5", "w7"])
        #expect(book.count == 1)
        book.forwarded("f", context: 1)
        let all = book.takeAll()
        #expect(all.waiting == ["w9"] && all.forwarded == ["f"])
        #expect(book.isEmpty)
    }

    @Test("a writer taken for an early answer and not answered is put back")
    func putBack() throws {
        var book = Book()
        _ = book.wait("w", term: 1, at: 4)
        let taken = book.take(at: 4)
        let pending = try #require(taken)
        #expect(book.isEmpty)
        book.putBack(pending, at: 4)
        #expect(book.applied(at: 4, term: 1)?.waiter == "w")
    }
}

@Suite("Node core: compaction policy")
struct CompactionPolicyTests {
    typealias Policy = Raft.CompactionPolicy

    static func view(applied: Raft.Index, snapshot: Raft.Index = 0, last: Raft.Index? = nil, leader: Bool = false, followers: [(Raft.Index, Raft.Index)] = []) -> Policy.View {
        Policy.View(applied: applied, snapshotIndex: snapshot, lastIndex: last ?? applied, isLeader: leader, followers: followers.map { ($0.0, $0.1) })
    }

    @Test("a follower compacts through its applied index once a threshold of entries is past its snapshot, one compaction at a time")
    func follower() {
        var policy = Policy(threshold: 100, waitMs: 10_000)
        #expect(policy.decide(Self.view(applied: 99), nowMs: 0) == .nothing)
        #expect(policy.decide(Self.view(applied: 150), nowMs: 0) == .compact(through: 150, followerBehind: false))
        #expect(policy.decide(Self.view(applied: 300), nowMs: 1) == .nothing, "a second compaction started while one ran")
        policy.compacted()
        #expect(policy.decide(Self.view(applied: 300, snapshot: 150), nowMs: 2) == .compact(through: 300, followerBehind: false))
    }

    @Test("a leader waits for a follower behind the snapshot for waitMs, or until the log holds two thresholds")
    func leaderWaits() {
        var policy = Policy(threshold: 100, waitMs: 10_000)
        let behind = Self.view(applied: 120, last: 120, leader: true, followers: [(50, 0), (120, 0)])
        #expect(policy.decide(behind, nowMs: 1_000) == .nothing)
        #expect(policy.held?.index == 120)
        #expect(policy.decide(behind, nowMs: 10_999) == .nothing)
        #expect(policy.decide(behind, nowMs: 11_000) == .compact(through: 120, followerBehind: true))

        var long = Policy(threshold: 100, waitMs: 10_000)
        #expect(long.decide(Self.view(applied: 120, last: 150, leader: true, followers: [(50, 0)]), nowMs: 0) == .nothing)
        #expect(long.decide(Self.view(applied: 200, last: 200, leader: true, followers: [(50, 0)]), nowMs: 1) == .compact(through: 120, followerBehind: true))

        var caughtUp = Policy(threshold: 100, waitMs: 10_000)
        #expect(caughtUp.decide(Self.view(applied: 120, leader: true, followers: [(120, 0)]), nowMs: 0) == .compact(through: 120, followerBehind: false))
    }

    @Test("a leader holds no further than an image it streams, unless the log has grown past four thresholds")
    func streamingImage() {
        var policy = Policy(threshold: 100, waitMs: 0)
        #expect(policy.decide(Self.view(applied: 250, snapshot: 0, last: 250, leader: true, followers: [(260, 0), (0, 90)]), nowMs: 0) == .compact(through: 90, followerBehind: true))
        var near = Policy(threshold: 100, waitMs: 0)
        #expect(near.decide(Self.view(applied: 250, snapshot: 50, last: 250, leader: true, followers: [(250, 120)]), nowMs: 0) == .compact(through: 120, followerBehind: false))
        var long = Policy(threshold: 100, waitMs: 0)
        #expect(long.decide(Self.view(applied: 450, snapshot: 0, last: 450, leader: true, followers: [(450, 120)]), nowMs: 0) == .compact(through: 450, followerBehind: false))
    }

    @Test("after failures the next attempt waits, doubling from one second to a minute; a success starts over")
    func backoff() {
        var policy = Policy(threshold: 10, waitMs: 0)
        #expect(policy.decide(Self.view(applied: 10), nowMs: 0) == .compact(through: 10, followerBehind: false))
        #expect(policy.compactionFailed(nowMs: 0) == 1_000)
        #expect(!policy.mayAttempt(nowMs: 999))
        #expect(policy.decide(Self.view(applied: 10), nowMs: 999) == .nothing)
        #expect(policy.decide(Self.view(applied: 10), nowMs: 1_000) == .compact(through: 10, followerBehind: false))
        var waits: [Int64] = [policy.compactionFailed(nowMs: 1_000)]
        for _ in 0..<7 { waits.append(policy.failed(nowMs: 0)) }
        #expect(waits == [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000])
        policy.succeeded()
        #expect(policy.mayAttempt(nowMs: 0))
        #expect(policy.failed(nowMs: 0) == 1_000)
    }
}

@Suite("Node core: lease policy")
struct LeasePolicyTests {
    typealias Policy = Raft.LeasePolicy<Int64>

    static func leader(term: Raft.Term, commitTerm: Raft.Term? = nil, commit: Raft.Index = 10, applied: Raft.Index? = nil) -> Policy.View {
        Policy.View(isLeader: true, term: term, commitTerm: commitTerm ?? term, commitIndex: commit, appliedIndex: applied ?? commit)
    }

    static let follower = Policy.View(isLeader: false, term: 2, commitTerm: 2, commitIndex: 10, appliedIndex: 10)

    @Test("a new leader expires nothing before an entry of its term has committed and applied, then extends every lease first")
    func refreshFirst() {
        var policy = Policy(extensionsInFlightMax: 8)
        let due: () -> Int64? = { 0 }
        #expect(policy.next(Self.leader(term: 2, commitTerm: 1), nowMs: 100, earliestExpiry: due) == [], "judged leases before its term committed")
        #expect(policy.next(Self.leader(term: 2, commit: 10, applied: 9), nowMs: 100, earliestExpiry: due) == [], "judged leases before applying")
        #expect(policy.next(Self.leader(term: 2), nowMs: 100, earliestExpiry: due) == [.readLeases(term: 2)])
        policy.leasesRead([7, 8], term: 2)
        #expect(policy.next(Self.leader(term: 2), nowMs: 100, earliestExpiry: due) == [.extend([7, 8], term: 2)])
        #expect(policy.next(Self.leader(term: 2), nowMs: 100, earliestExpiry: due) == [], "expired while extending")
        policy.extended(7, term: 2)
        policy.extended(8, term: 2)
        #expect(policy.next(Self.leader(term: 2), nowMs: 100, earliestExpiry: due) == [.refreshed(term: 2, extended: 2)])
        #expect(policy.refreshedTerm == 2)
        #expect(policy.next(Self.leader(term: 2), nowMs: 100, earliestExpiry: due) == [.expire(nowMs: 100)])
        #expect(policy.next(Self.leader(term: 2), nowMs: 101, earliestExpiry: due) == [], "a second expiry while one is under way")
        policy.expiryFinished()
        #expect(policy.next(Self.leader(term: 2), nowMs: 102, earliestExpiry: { 103 }) == [], "expired leases not yet due")
        #expect(policy.next(Self.leader(term: 2), nowMs: 103, earliestExpiry: { 103 }) == [.expire(nowMs: 103)])
    }

    @Test("extensions go out at most extensionsInFlightMax at a time")
    func bounded() {
        var policy = Policy(extensionsInFlightMax: 2)
        _ = policy.next(Self.leader(term: 3), nowMs: 0) { nil }
        policy.leasesRead([1, 2, 3, 4, 5], term: 3)
        #expect(policy.next(Self.leader(term: 3), nowMs: 0) { nil } == [.extend([1, 2], term: 3)])
        #expect(policy.next(Self.leader(term: 3), nowMs: 0) { nil } == [])
        policy.extended(2, term: 3)
        #expect(policy.next(Self.leader(term: 3), nowMs: 0) { nil } == [.extend([3], term: 3)])
        policy.extended(1, term: 3)
        policy.extended(3, term: 3)
        #expect(policy.next(Self.leader(term: 3), nowMs: 0) { nil } == [.extend([4, 5], term: 3)])
        policy.extended(4, term: 3)
        policy.extended(5, term: 3)
        #expect(policy.next(Self.leader(term: 3), nowMs: 0) { nil } == [.refreshed(term: 3, extended: 5)])
    }

    @Test("a failed extension is reported and tried again; nothing expires until every lease is extended")
    func failuresRetry() {
        var policy = Policy(extensionsInFlightMax: 8)
        _ = policy.next(Self.leader(term: 4), nowMs: 0) { 0 }
        #expect(policy.leasesUnreadable(term: 4, problem: "disk") == .refreshFailed(term: 4, leases: 1, problem: "disk"))
        #expect(policy.next(Self.leader(term: 4), nowMs: 0) { 0 } == [.readLeases(term: 4)], "an unreadable store was not read again")
        policy.leasesRead([1, 2], term: 4)
        _ = policy.next(Self.leader(term: 4), nowMs: 0) { 0 }
        policy.extended(1, term: 4)
        policy.extensionFailed(2, term: 4, problem: "not leader")
        #expect(policy.next(Self.leader(term: 4), nowMs: 0) { 0 } == [.refreshFailed(term: 4, leases: 1, problem: "not leader")])
        #expect(policy.next(Self.leader(term: 4), nowMs: 0) { 0 } == [.extend([2], term: 4)])
        policy.extended(2, term: 4)
        #expect(policy.next(Self.leader(term: 4), nowMs: 0) { 0 } == [.refreshed(term: 4, extended: 2)])
        #expect(policy.next(Self.leader(term: 4), nowMs: 0) { 0 } == [.expire(nowMs: 0)])
    }

    @Test("leadership lost ends the refresh; reports from an older term change nothing; a later term refreshes again")
    func stepDown() {
        var policy = Policy(extensionsInFlightMax: 8)
        _ = policy.next(Self.leader(term: 5), nowMs: 0) { 0 }
        policy.leasesRead([1], term: 5)
        #expect(policy.next(Self.leader(term: 5), nowMs: 0) { 0 } == [.extend([1], term: 5)])
        #expect(policy.next(Self.follower, nowMs: 0) { 0 } == [])
        policy.extended(1, term: 5)
        #expect(policy.refreshedTerm == 0)
        #expect(policy.next(Self.leader(term: 6), nowMs: 0) { 0 } == [.readLeases(term: 6)])
        policy.leasesRead([1], term: 5)  // A stale report: ignored.
        #expect(policy.next(Self.leader(term: 6), nowMs: 0) { 0 } == [.readLeases(term: 6)])
        policy.leasesRead([], term: 6)
        #expect(policy.next(Self.leader(term: 6), nowMs: 0) { 0 } == [.refreshed(term: 6, extended: 0)])
        #expect(policy.next(Self.leader(term: 7), nowMs: 0) { 0 } == [.readLeases(term: 7)], "a new term expired before refreshing")
    }
}
