import AspenKV
import AspenNode
import Testing

@Suite("Automatic compaction")
struct AutoCompactionTests {
    @Test("periodic mode compacts to the revision of a retention ago, sampled every tenth of it")
    func periodic() {
        var policy = AutoCompaction(mode: .periodic(retentionMs: 10_000))
        // One write a second, a tick every 100 ms: revision r at time r seconds.
        var compactions: [(atMs: Int64, revision: Revision)] = []
        for tick in 0...400 {
            let nowMs = Int64(tick) * 100
            if let target = policy.due(nowMs: nowMs, revision: nowMs / 1000) { compactions.append((nowMs, target)) }
        }
        // Nothing before the retention has passed; then about every second, never keeping less
        // than ten seconds of history nor more than eleven.
        #expect(compactions.first?.atMs == 11_000)
        #expect(compactions.count >= 25)
        for (atMs, target) in compactions {
            #expect(atMs / 1000 - target >= 10 && atMs / 1000 - target <= 11)
        }
        #expect(zip(compactions, compactions.dropFirst()).allSatisfy { $0.revision < $1.revision })
    }

    @Test("revision mode keeps the last N revisions, looking once per check interval")
    func revision() {
        var policy = AutoCompaction(mode: .revision(revisions: 100), revisionCheckMs: 1_000)
        #expect(policy.due(nowMs: 0, revision: 500) == nil)
        #expect(policy.due(nowMs: 999, revision: 500) == nil)
        #expect(policy.due(nowMs: 1_000, revision: 500) == 400)
        #expect(policy.due(nowMs: 1_500, revision: 900) == nil)
        #expect(policy.due(nowMs: 2_000, revision: 90) == nil)
        #expect(policy.due(nowMs: 3_000, revision: 1_000) == 900)
    }

    @Test("a leader that steps down forgets its samples; a clock that goes back starts over")
    func resets() {
        var policy = AutoCompaction(mode: .periodic(retentionMs: 1_000))
        #expect(policy.due(nowMs: 10_000, revision: 5) == nil)
        policy.reset()
        #expect(policy.due(nowMs: 11_000, revision: 9) == nil)
        #expect(policy.due(nowMs: 12_000, revision: 12) == 9)
        #expect(policy.due(nowMs: 5_000, revision: 13) == nil)
        #expect(policy.due(nowMs: 5_500, revision: 14) == nil)
        #expect(policy.due(nowMs: 6_000, revision: 15) == 13)
    }

    @Test("durations in etcd's spellings")
    func parsing() throws {
        #expect(try AutoCompaction.Mode.parse(mode: "periodic", retention: "500ms").get() == .periodic(retentionMs: 500))
        #expect(try AutoCompaction.Mode.parse(mode: "periodic", retention: "5m").get().retention == "5m")
        #expect(try AutoCompaction.Mode.parse(mode: "periodic", retention: "36h").get() == .periodic(retentionMs: 129_600_000))
        #expect(throws: AutoCompaction.Mode.ParseError.self) { try AutoCompaction.Mode.parse(mode: "periodic", retention: "-5m").get() }
        #expect(throws: AutoCompaction.Mode.ParseError.self) { try AutoCompaction.Mode.parse(mode: "periodic", retention: "99999999999999999h").get() }
        #expect(throws: AutoCompaction.Mode.ParseError.self) { try AutoCompaction.Mode.parse(mode: "hourly", retention: "1").get() }
    }
}
