import AspenCore
import AspenForge
import AspenKV
import Foundation
import Synchronization
import Testing

@testable import AspenJobs

/// A store whose every `failEvery`-th transaction is applied and then reported lost, as when
/// the leader that sent it dies before it hears the outcome.
final class LossyStore: KeyValueStore, ChangeHistory {
    let inner: MemoryKeyValueStore
    let failEvery: Int
    private let count = Mutex(0)

    init(_ inner: MemoryKeyValueStore, failEvery: Int) {
        self.inner = inner
        self.failEvery = failEvery
    }

    struct Lost: Error {}

    func write(_ request: KVWriteRequest) async throws -> KVResult {
        let result = try await inner.write(request)
        let lost = count.withLock { count in
            count += 1
            return failEvery > 0 && count % failEvery == 0
        }
        if lost { throw Lost() }
        return result
    }
    func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult { try await inner.read(request, consistency: consistency) }
    func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus { try await inner.leaseStatus(id, withKeys: withKeys) }
    func leases() async throws -> [Lease] { try await inner.leases() }
    func revisions() async throws -> (current: Revision, compacted: Revision) { try await inner.revisions() }
    func changes(from: Revision, through: Revision, limit: Int) async throws -> Result<(events: [WatchEvent], nextRevision: Revision), KVError> {
        try await inner.changes(from: from, through: through, limit: limit)
    }
}

@Suite("Cluster events")
struct ClusterEventsTests {
    let leadership = ClusterEvents.Leadership(node: 1, term: 2, voters: [1, 2, 3], learners: [])

    func events(_ store: some KeyValueStore & ChangeHistory, _ clock: JobClock) -> ClusterEvents {
        ClusterEvents(topics: TopicLog(store: store, nowMs: { clock.ms }), history: store)
    }

    func read(_ events: ClusterEvents, _ pattern: String = ">") async throws -> [TopicMessage] {
        try await events.topics.read(pattern: SubjectPattern(pattern), from: 1, limit: 100_000).messages
    }

    func fields(_ message: TopicMessage) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any] ?? [:]
    }

    @Test("a key's subject is its '/'-separated parts, with what a token cannot hold written %XX")
    func keySubjects() {
        let table: [(String, String)] = [
            ("config/db/url", "hooks.kv.put.config.db.url"),
            ("/config//db/", "hooks.kv.put.config.db"),
            ("a.b/c*d/e>f/50%", "hooks.kv.put.a%2Eb.c%2Ad.e%3Ef.50%25"),
            ("with space/tab\t", "hooks.kv.put.with%20space.tab%09"),
            ("café", "hooks.kv.put.caf%C3%A9"),
            ("/", "hooks.kv.put.%2F"),
        ]
        for (key, subject) in table {
            #expect(ClusterEvents.keySubject(kind: "put", key: Array(key.utf8)) == subject, "\(key)")
        }
        let deep = ClusterEvents.keySubject(kind: "delete", key: Array((0..<100).map { "p\($0)" }.joined(separator: "/").utf8))
        #expect(deep.split(separator: ".").count == Limits.standard.subjectTokensMax)
        #expect(deep.hasPrefix("hooks.kv.delete.p0.p1."))
        let long = ClusterEvents.keySubject(kind: "put", key: Array(repeating: UInt8(ascii: "k"), count: 1000))
        #expect(long.utf8.count == Limits.standard.subjectBytesMax)
        for subject in [deep, long] { #expect(throws: Never.self) { try SubjectPattern.validate(subject: subject) } }
    }

    @Test("nobody asked: a pass writes nothing; a group on a key pattern gets that pattern's writes and no others")
    func onlyWhatIsAskedFor() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let events = events(memory, clock)
        _ = try await memory.put(Array("config/a".utf8), Array("1".utf8))
        let before = try await memory.revisions().current
        #expect(try await events.pass(leadership) == 0)
        #expect(try await memory.revisions().current == before, "a pass with nobody asking wrote")

        _ = try await events.topics.createGroup(ConsumerGroup(name: "watch-config", pattern: "hooks.kv.*.config.>"), from: nil)
        clock.advance(2000)
        #expect(try await events.pass(leadership) == 0, "events start when asked for, not with the writes before")
        _ = try await memory.put(Array("config/db/url".utf8), Array("postgres://x".utf8))
        _ = try await memory.put(Array("other/key".utf8), Array("2".utf8))
        _ = try await memory.delete(Array("config/db/url".utf8))
        _ = try await memory.put(Array("config/blob".utf8), [0xFF, 0x00])
        #expect(try await events.pass(leadership) == 3)
        let found = try await read(events, "hooks.kv.>")
        #expect(found.map(\.subject) == ["hooks.kv.put.config.db.url", "hooks.kv.delete.config.db.url", "hooks.kv.put.config.blob"])
        let put = try fields(found[0])
        #expect(put["key"] as? String == "config/db/url")
        #expect(put["value"] as? String == "postgres://x")
        #expect(put["version"] as? Int == 1)
        #expect(try fields(found[2])["value"] == nil, "bytes that are not text travel only as a size")
        #expect(try fields(found[2])["value_bytes"] as? Int == 2)
        // The stream's own writes are no key events: a second pass finds nothing new.
        #expect(try await events.pass(leadership) == 0)
    }

    @Test("a hook removed stops the recording; one made again later starts from then, not with the writes in between")
    func askingAgainStartsAfresh() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let topics = TopicLog(store: memory, nowMs: { clock.ms })
        let events = ClusterEvents(topics: topics, history: memory)
        let jobs = JobStore(store: memory, nowMs: { clock.ms }, topics: topics)
        let hook = HookRecord(name: "on-config", pattern: "hooks.kv.put.config.>", job: JobSpec(type: "shell", command: ["./reload.sh"]))
        _ = try await jobs.createHook(hook)
        _ = try await events.pass(leadership)
        _ = try await memory.put(Array("config/a".utf8), [1])
        #expect(try await events.pass(leadership) == 1)
        try await jobs.removeHook("on-config")
        clock.advance(2000)
        _ = try await events.pass(leadership)
        let cursor = ClusterEvents.space.pack(["kv"])
        #expect(try await memory.get(cursor) == nil, "the cursor stayed with nobody asking")
        _ = try await memory.put(Array("config/b".utf8), [2])
        _ = try await events.pass(leadership)
        _ = try await jobs.createHook(hook)
        clock.advance(2000)
        _ = try await events.pass(leadership)
        _ = try await memory.put(Array("config/c".utf8), [3])
        #expect(try await events.pass(leadership) == 1)
        let keys = try await read(events, "hooks.kv.>").map { try fields($0)["key"] as? String }
        #expect(keys == ["config/a", "config/c"])
    }

    @Test("job state changes are events; a hook's own jobs make none")
    func jobEvents() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let topics = TopicLog(store: memory, nowMs: { clock.ms })
        let events = ClusterEvents(topics: topics, history: memory)
        let jobs = JobStore(store: memory, nowMs: { clock.ms }, topics: topics)
        try await topics.setRetention(TopicRetention(pattern: "hooks.job.>", maxAgeMs: 86_400_000, maxMessages: 0))
        _ = try await jobs.createHook(HookRecord(name: "on-dead", pattern: "hooks.job.dead", job: JobSpec(type: "shell", command: ["./page.sh"])))
        _ = try await events.pass(leadership)
        let (id, _) = try await jobs.submit(JobSpec(type: "shell", command: ["false"], maxAttempts: 1))
        let claimed = try #require(try await jobs.claim(shellWorker, leaseMs: 10_000))
        _ = try await jobs.finish(id, token: claimed.attempt!.token, outcome: .failed(message: "exit 1", retryable: true), exitCode: 1)
        #expect(try await events.pass(leadership) == 3)
        #expect(try await read(events, "hooks.job.>").map(\.subject) == ["hooks.job.pending", "hooks.job.running", "hooks.job.dead"])
        let dead = try fields(try await read(events, "hooks.job.dead")[0])
        #expect(dead["id"] as? Int == Int(id))
        #expect(dead["previous_state"] as? String == "running")
        #expect(dead["error"] as? String == "exit 1")
        // The hook turns the dead job's event into a job; that job's own changes are no events.
        _ = try await jobs.tick()
        #expect(try await jobs.list().map(\.origin).contains("hook:on-dead"))
        #expect(try await events.pass(leadership) == 0)
    }

    @Test("a committed push is a hooks.forge.push event naming the repository and its ref updates; other forge keys make none")
    func forgePushEvents() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let events = self.events(memory, clock)
        try await events.topics.setRetention(TopicRetention(pattern: "hooks.forge.>", maxAgeMs: 86_400_000, maxMessages: 0))
        _ = try await events.pass(leadership)
        let update = RefUpdate(old: String(repeating: "0", count: 40), new: String(repeating: "ab", count: 20), name: "refs/heads/main")
        let push = PushRecord(updates: [update], packs: ["pack-1"], pusher: "c0ffee", nowMs: 5, node: 2)
        try await memory.put(ForgeKeys.ref("team/app.web", update.name), Array(update.new.utf8))
        try await memory.put(ForgeKeys.push("team/app.web"), push.encoded)
        try await memory.put(ForgeKeys.repo("other"), RepoRecord(name: "other").encoded)
        #expect(try await events.pass(leadership) == 1)
        let published = try await read(events, "hooks.forge.push.team.>")
        #expect(published.map(\.subject) == ["hooks.forge.push.team.app%2Eweb"])
        let payload = try fields(try #require(published.first))
        #expect(payload["repo"] as? String == "team/app.web")
        #expect(payload["pusher"] as? String == "c0ffee")
        let refs = try #require(payload["refs"] as? [[String: Any]])
        #expect(refs.first?["name"] as? String == "refs/heads/main" && refs.first?["new"] as? String == update.new)
    }

    @Test("a new term and a membership change are each published once, whichever leader's pass sees them")
    func leaderAndMembers() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let first = events(memory, clock)
        try await first.topics.setRetention(TopicRetention(pattern: "hooks.cluster.>", maxAgeMs: 0, maxMessages: 1000))
        _ = try await first.pass(leadership)
        _ = try await first.pass(leadership)
        // Another node that led the same term (a restarted process) publishes nothing again.
        _ = try await events(memory, clock).pass(leadership)
        var next = leadership
        next.node = 3
        next.term = 5
        next.learners = [4]
        _ = try await events(memory, clock).pass(next)
        let found = try await read(first)
        #expect(found.map(\.subject) == ["hooks.cluster.leader", "hooks.cluster.membership", "hooks.cluster.leader", "hooks.cluster.membership"])
        #expect(try fields(found[2])["node"] as? Int == 3)
        #expect(try fields(found[3])["learners"] as? [Int] == [4])
    }

    @Test("two leaders racing and leaders dying after their writes commit: every write is published exactly once, in order")
    func exactlyOnce() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let setup = events(memory, clock)
        try await setup.topics.setRetention(TopicRetention(pattern: "hooks.kv.>", maxAgeMs: 0, maxMessages: 0))
        _ = try await setup.pass(leadership)
        var written: [String] = []
        var leaders = [events(LossyStore(memory, failEvery: 3), clock), events(LossyStore(memory, failEvery: 5), clock)]
        var losses = 0
        for round in 0..<40 {
            for index in 0..<(round % 7 + 1) {
                let key = "k/\(round)/\(index)"
                _ = try await memory.put(Array(key.utf8), [1])
                written.append(key)
            }
            if round % 9 == 4 {
                // One transaction with more changes than a publish batch holds.
                let keys = (0..<(Limits.standard.topicBatchMax + 30)).map { "big/\(round)/\($0)" }
                _ = try await memory.batch(keys.map { .put(Put(key: Array($0.utf8), value: [2])) })
                written += keys.sorted()
            }
            clock.advance(1500)
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for leader in leaders {
                    group.addTask {
                        do {
                            _ = try await leader.pass(leadership)
                            return false
                        } catch is LossyStore.Lost {
                            return true
                        }
                    }
                }
                for (index, lost) in try await group.reduce(into: [Bool]()) { $0.append($1) }.enumerated() where lost {
                    // That leader died: another process takes its place.
                    losses += 1
                    leaders[index] = events(LossyStore(memory, failEvery: index == 0 ? 3 : 5), clock)
                }
            }
        }
        for _ in 0..<5 { _ = try await events(memory, clock).pass(leadership) }
        let keys = try await read(setup, "hooks.kv.>").map { try fields($0)["key"] as? String ?? "?" }
        #expect(losses > 0, "no leader died after a commit: the test did not test that")
        let first = zip(keys, written).enumerated().first { $1.0 != $1.1 }
        #expect(keys.count == written.count && first == nil, "\(keys.count) events for \(written.count) writes; first difference: \(String(describing: first))")
    }
}

@Suite("In-process hooks")
struct InProcessHookTests {
    @Test("events go to the runner and are acknowledged, whether it takes them or drops them; no job is made")
    func runnerGetsEvents() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let jobs = JobStore(store: memory, nowMs: { clock.ms }, topics: TopicLog(store: memory, nowMs: { clock.ms }))
        let taken = Mutex<[String]>([])
        jobs.inProcessRunner.withLock { runner in
            runner = { hook, event in
                let subject = (try? JSONSerialization.jsonObject(with: Data(event)) as? [String: Any])?["subject"] as? String ?? "?"
                return taken.withLock { taken in
                    guard taken.count < 2 else { return false }
                    taken.append("\(hook.name) \(subject)")
                    return true
                }
            }
        }
        _ = try await jobs.createHook(
            HookRecord(name: "quick", pattern: "ping.>", job: JobSpec(type: "shell", command: ["./x"]), inProcess: InProcessHook(timeoutMs: 500, concurrency: 2)))
        for number in 0..<3 { _ = try await jobs.topics!.publish([TopicMessage(subject: "ping.n\(number)", payload: [])]) }
        _ = try await jobs.tick()
        #expect(taken.withLock { $0 } == ["quick ping.n0", "quick ping.n1"])
        let status = try #require(try await jobs.hooks().first)
        #expect(status.pending == 0 && status.dead == 0 && status.next == 4, "dropped events are acknowledged too")
        #expect(try await jobs.list().isEmpty)
        #expect(status.hook.inProcess == InProcessHook(timeoutMs: 500, concurrency: 2))
    }

    @Test("bounds are refused by name; the record survives its encoding and a bad handler tag is refused")
    func bounds() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let jobs = JobStore(store: memory, nowMs: { clock.ms }, topics: TopicLog(store: memory, nowMs: { clock.ms }))
        let shell = JobSpec(type: "shell", command: ["./x"])
        for (handler, type, message) in [
            (InProcessHook(timeoutMs: 1000, concurrency: 0), "shell", "an in-process hook's concurrency is 1 to 64, not 0"),
            (InProcessHook(timeoutMs: 1000, concurrency: 65), "shell", "an in-process hook's concurrency is 1 to 64, not 65"),
            (InProcessHook(timeoutMs: 0, concurrency: 1), "shell", "an in-process hook's timeout is 1 ms to 1 h, not 0 ms"),
            (InProcessHook(timeoutMs: 1000, concurrency: 1), "build", "an in-process hook runs a shell command, not a build job"),
        ] {
            var spec = shell
            spec.type = type
            await #expect(throws: JobError.invalid(message)) {
                try await jobs.createHook(HookRecord(name: "h", pattern: "a.>", job: spec, inProcess: handler))
            }
        }
        let hook = HookRecord(name: "h", pattern: "a.>", job: shell, inProcess: InProcessHook(timeoutMs: 1500, concurrency: 3))
        #expect(try HookRecord(decoding: hook.encoded) == hook)
        var bytes = hook.encoded
        bytes[bytes.count - 4] = 2  // the tag, before the timeout (2 bytes) and the concurrency (1)
        #expect(throws: DecodingError.self) { try HookRecord(decoding: bytes) }
        let reliable = HookRecord(name: "h", pattern: "a.>", job: shell)
        #expect(try HookRecord(decoding: reliable.encoded) == reliable)
    }
}
