import Foundation
import AspenCore
import AspenKV
import Synchronization
import Testing

@testable import AspenJobs

/// The job store over an in-memory store, on a clock the test moves.
final class JobClock: Sendable {
    private let now = Mutex<Int64>(1_000_000)
    var ms: Int64 { now.withLock { $0 } }
    func advance(_ ms: Int64) { now.withLock { $0 += ms } }
}

func jobStore(_ clock: JobClock) -> JobStore {
    let tokens = Mutex<UInt64>(0x1000)
    return JobStore(
        store: MemoryKeyValueStore(nowMs: { clock.ms }), nowMs: { clock.ms },
        random: { tokens.withLock { $0 += 0x111; return $0 } })
}

let shellWorker = WorkerInfo(name: "w1", node: 1, types: ["shell"])

@Suite("Job store")
struct JobStoreTests {
    @Test("a job goes pending, running, succeeded, and its history tells each step with the attempt")
    func roundTrip() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let (id, created) = try await jobs.submit(JobSpec(type: "shell", command: ["true"]))
        #expect(created)
        #expect(try await jobs.job(id).state == .pending)
        let claimed = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
        #expect(claimed.id == id && claimed.state == .running && claimed.attempt?.number == 1)
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
        let done = try await jobs.finish(id, token: claimed.attempt!.token, outcome: .succeeded(result: [7]), exitCode: 0)
        #expect(done.state == .succeeded && done.result == [7])
        let history = try await jobs.history(id)
        #expect(history.map(\.state) == [.pending, .running, .succeeded])
        #expect(history[1].worker == "w1" && history[1].node == 1 && history[2].exitCode == 0)
        #expect(history[1].token == claimed.attempt!.token)
    }

    @Test("workers take higher priorities first, oldest first within one, and a long wait lifts a low job (aging)")
    func priorities() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        var ids: [JobPriority: UInt64] = [:]
        for priority in [JobPriority.low, .normal, .high, .critical] {
            ids[priority] = try await jobs.submit(JobSpec(type: "shell", command: ["true"], priority: priority)).id
            clock.advance(10)
        }
        let second = try await jobs.submit(JobSpec(type: "shell", command: ["true"], priority: .critical)).id
        var order: [UInt64] = []
        while let claimed = try await jobs.claim(shellWorker, leaseMs: 30_000) { order.append(claimed.id) }
        #expect(order == [ids[.critical]!, second, ids[.high]!, ids[.normal]!, ids[.low]!])

        // A low job that waited three minutes ranks with critical ones, and is older.
        let old = try await jobs.submit(JobSpec(type: "shell", command: ["true"], priority: .low)).id
        clock.advance(3 * JobPriority.agingMs)
        let urgent = try await jobs.submit(JobSpec(type: "shell", command: ["true"], priority: .critical)).id
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000)?.id == old)
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000)?.id == urgent)
    }

    @Test("a batched claim takes several jobs in priority order in one write; racing batches from two leaders take each job once")
    func batchedClaims() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let stores = (0..<2).map { _ in JobStore(store: memory, nowMs: { clock.ms }) }
        var ids: [UInt64] = []
        for priority in [JobPriority.low, .critical, .normal] {
            ids.append(try await stores[0].submit(JobSpec(type: "shell", command: ["true"], priority: priority)).id)
        }
        let before = try await memory.revisions().current
        let batch = try await stores[0].claim(shellWorker, leaseMs: 30_000, max: 5)
        #expect(batch.map(\.id) == [ids[1], ids[2], ids[0]])
        #expect(try await memory.revisions().current == before + 1, "three claims in one write")
        #expect(Set(batch.compactMap(\.attempt?.token)).count == 3)
        for job in batch { #expect(try await stores[1].history(job.id).map(\.state) == [.pending, .running]) }

        for _ in 0..<120 { _ = try await stores[1].submit(JobSpec(type: "shell", command: ["true"])) }
        let all = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for index in 0..<6 {
                group.addTask {
                    let store = stores[index % 2]
                    var taken: [UInt64] = []
                    while true {
                        let jobs = try await store.claim(shellWorker, leaseMs: 30_000, max: 7)
                        if jobs.isEmpty { return taken }
                        taken += jobs.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }
        }
        #expect(all.count == 120 && Set(all).count == 120, "\(all.count) claims of \(Set(all).count) jobs")
        await #expect(throws: JobError.invalid("a claim takes 1 to 64 jobs, not 65")) {
            try await stores[0].run(.claim(shellWorker, leaseMs: 30_000, waitMs: 0, max: 65))
        }
        let call = JobCall.claim(shellWorker, leaseMs: 30_000, waitMs: 0, max: 9)
        #expect(try JobCall(decoding: call.encoded) == call)
    }

    /// A store that runs `hook` once, after the first read of an index (a keys-only page read
    /// from the applied state), before that read answers.
    final class HookedStore: KeyValueStore {
        let inner: MemoryKeyValueStore
        let hook = Mutex<(@Sendable () async throws -> Void)?>(nil)
        init(_ inner: MemoryKeyValueStore) { self.inner = inner }
        func write(_ request: KVWriteRequest) async throws -> KVResult { try await inner.write(request) }
        func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult {
            let result = try await inner.read(request, consistency: consistency)
            if request.keysOnly, consistency == .stale, let hook = hook.withLock({ $0.take() }) { try await hook() }
            return result
        }
        func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus { try await inner.leaseStatus(id, withKeys: withKeys) }
        func leases() async throws -> [Lease] { try await inner.leases() }
    }

    @Test("a job made ready after a waiting claim read the index, before it waits, ends the wait (the wake is not lost)")
    func wakeBetweenLookAndWait() async throws {
        let clock = JobClock()
        let store = HookedStore(MemoryKeyValueStore(nowMs: { clock.ms }))
        let jobs = JobStore(store: store, nowMs: { clock.ms })
        // The claim reads the critical jobs' index first: a critical job submitted then is one it
        // has already looked for, and only the submit's signal can tell it.
        store.hook.withLock { $0 = { _ = try await jobs.submit(JobSpec(type: "shell", command: ["true"], priority: .critical)) } }
        let claimed = try await jobs.claim(shellWorker, leaseMs: 30_000, waitMs: 30_000, max: 1)
        #expect(claimed.count == 1)
        // A lost signal leaves the claim asleep until its next look, 2 s later: a wait that
        // runs its whole time (counted, not timed: a busy machine may delay any task).
        #expect(await jobs.signals.timedOut == 0, "the claim slept through the signal of a job made ready as it looked")
    }

    @Test("an ended attempt's output moves to the blob store in one piece: read the same from it, gone from the store, once, and purged with the job")
    func outputArchived() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let blobs = Mutex<[[UInt8]: (bytes: [UInt8], name: String)]>([:])
        let forgotten = Mutex<[String]>([])
        let archive = JobOutputArchive(
            keep: { bytes, name in
                // A stand-in for the content hash: what names a blob in this store.
                let hash = Array("blob-\(bytes.count)-\(bytes.reduce(0) { $0 &* 31 &+ Int($1) })".utf8)
                blobs.withLock { $0[hash] = (bytes, name) }
                return hash
            },
            load: { hash in try #require(blobs.withLock { $0[hash]?.bytes }) },
            forget: { name in forgotten.withLock { $0.append(name) } })
        let jobs = JobStore(store: memory, nowMs: { clock.ms }, retentionMs: 60_000, outputArchive: archive)
        // Twenty attempts still running, with output, ahead of the one that ends: it moves all the same.
        for _ in 0..<20 {
            let (running, _) = try await jobs.submit(JobSpec(type: "long", command: ["sleep", "9"]))
            let claimed = try #require(try await jobs.claim(WorkerInfo(name: "w2", types: ["long"]), leaseMs: 600_000)?.attempt)
            try await jobs.appendOutput(running, token: claimed.token, chunk: JobOutputChunk(offset: 0, isError: false, bytes: [1]))
        }
        // A hook's job keeps its output in the store.
        let (hooked, _) = try await jobs.submit(JobSpec(type: "hooked", command: ["true"]), origin: "hook:h")
        let hookAttempt = try #require(try await jobs.claim(WorkerInfo(name: "w3", types: ["hooked"]), leaseMs: 30_000)?.attempt)
        try await jobs.appendOutput(hooked, token: hookAttempt.token, chunk: JobOutputChunk(offset: 0, isError: false, bytes: [2]))
        _ = try await jobs.finish(hooked, token: hookAttempt.token, outcome: .succeeded(result: []), exitCode: 0)
        let (id, _) = try await jobs.submit(JobSpec(type: "shell", command: ["true"]))
        let attempt = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000)?.attempt)
        let pieces = [
            JobOutputChunk(offset: 0, isError: false, bytes: Array("out".utf8)), JobOutputChunk(offset: 3, isError: true, bytes: Array("err".utf8)),
            JobOutputChunk(offset: 6, isError: false, bytes: Array(repeating: 7, count: 5000)),
        ]
        for piece in pieces { try await jobs.appendOutput(id, token: attempt.token, chunk: piece) }
        // A running attempt's output stays where its worker appends to it.
        #expect(try await jobs.archiveOutputs().moved == 0)
        #expect(try await jobs.output(id, attempt: nil, from: 0, bytesMax: 1 << 20).chunks == pieces)
        _ = try await jobs.finish(id, token: attempt.token, outcome: .succeeded(result: []), exitCode: 0)
        #expect(try await jobs.archiveOutputs() == (1, []))
        #expect(blobs.withLock { $0.values.map(\.name) } == ["aspen/job-output/\(id)/1"])
        #expect(try await jobs.output(hooked, attempt: 1, from: 0, bytesMax: 100).chunks.map(\.bytes) == [[2]])
        let kept = JobStore.space.subspace(["o", .int(Int64(id))])
        #expect(try await memory.scan(.range(start: kept.range.start, end: kept.range.end)).kvs.isEmpty)
        #expect(try await jobs.output(id, attempt: nil, from: 0, bytesMax: 1 << 20).chunks == pieces)
        #expect(try await jobs.output(id, attempt: 1, from: 3, bytesMax: 1 << 20).chunks == Array(pieces.dropFirst()))
        #expect(try await jobs.output(id, attempt: 1, from: 0, bytesMax: 4).chunks == Array(pieces.prefix(1)))
        #expect(try await jobs.archiveOutputs().moved == 0)
        // Purged with the job: its blob let go, and nothing of it left in the store.
        clock.advance(120_000)
        #expect(try await jobs.purge(finishedBefore: clock.ms - 60_000) == 2)
        #expect(forgotten.withLock { $0 } == ["aspen/job-output/\(id)/1"])
        let everything = JobStore.space
        let left = try await memory.scan(.range(start: everything.range.start, end: everything.range.end)).kvs.map { try everything.unpack($0.key) }
        #expect(left.allSatisfy { ![.string("oa"), .string("o"), .string("om")].contains($0.elements.first) || $0.elements.dropFirst().first != .int(Int64(id)) }, "\(left)")
    }

    @Test("an archive of job output is read back only when whole, in order and within the limits")
    func outputArchiveDecoding() throws {
        let pieces = [JobOutputChunk(offset: 0, isError: false, bytes: [1, 2]), JobOutputChunk(offset: 2, isError: true, bytes: [3])]
        let encoded = JobOutputArchive.encode(pieces)
        #expect(try JobOutputArchive.decode(encoded, limits: .standard) == pieces)
        #expect(throws: DecodingError.self) { try JobOutputArchive.decode(Array(encoded.dropLast()), limits: .standard) }
        #expect(throws: DecodingError.self) { try JobOutputArchive.decode(Array(encoded.dropFirst()), limits: .standard) }
        #expect(throws: DecodingError.self) { try JobOutputArchive.decode(JobOutputArchive.encode(pieces.reversed()), limits: .standard) }
        var small = Limits.standard
        small.jobOutputBytesMax = 2
        #expect(throws: DecodingError.self) { try JobOutputArchive.decode(encoded, limits: small) }
    }

    @Test("a claim repeated with its id (its answer was lost) gets the jobs it took, not others; they leave its index when they end")
    func repeatedClaim() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let jobs = JobStore(store: memory, nowMs: { clock.ms })
        // A schedule beside the claims' index: the manager's pass and the schedule list read both.
        _ = try await jobs.createSchedule(CronRecord(name: "ten", expression: "0 0 * * *", spec: JobSpec(type: "shell", command: ["true"])), replace: false)
        for _ in 0..<5 { _ = try await jobs.submit(JobSpec(type: "shell", command: ["true"])) }
        let call = JobCall.claim(shellWorker, leaseMs: 30_000, waitMs: 0, max: 2, claim: 0xC1A1)
        #expect(try JobCall(decoding: call.encoded) == call)
        #expect(call.isRepeatable && !JobCall.claim(shellWorker, leaseMs: 30_000, waitMs: 0, max: 2).isRepeatable)
        guard case .jobs(let first) = try await jobs.run(call) else { throw JobError.invalid("not jobs") }
        guard case .jobs(let again) = try await jobs.run(call) else { throw JobError.invalid("not jobs") }
        #expect(first.count == 2 && again == first, "the repeat took other jobs")
        #expect(first.allSatisfy { $0.attempt?.claim == 0xC1A1 })
        _ = try await jobs.tick()
        #expect(try await jobs.schedules().map(\.name) == ["ten"])
        #expect(try JobRecord(decoding: first[0].encoded) == first[0])
        // Another worker repeating the id gets nothing of them.
        let other = WorkerInfo(name: "w2", node: 2, types: ["shell"])
        guard case .jobs(let others) = try await jobs.run(.claim(other, leaseMs: 30_000, waitMs: 0, max: 2, claim: 0xC1A1)) else { return }
        #expect(Set(others.map(\.id)).isDisjoint(with: first.map(\.id)))
        _ = try await jobs.finish(first[0].id, token: first[0].attempt!.token, outcome: .succeeded(result: []))
        guard case .jobs(let left) = try await jobs.run(call) else { return }
        #expect(left.map(\.id) == [first[1].id])
        _ = try await jobs.finish(first[1].id, token: first[1].attempt!.token, outcome: .failed(message: "x", retryable: false))
        let index = JobStore.space.subspace(["cl", .int(Int64(bitPattern: 0xC1A1))])
        let indexed = try await memory.scan(.range(start: index.range.start, end: index.range.end)).kvs.compactMap { kv -> UInt64? in
            guard case .int(let id)? = try? index.unpack(kv.key).elements.first else { return nil }
            return UInt64(id)
        }
        #expect(Set(indexed) == Set(others.map(\.id)), "only the jobs still running under the id are indexed")
    }

    @Test("jobs in a live state are listed through its index, however many finished jobs come before them")
    func listByState() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        for _ in 0..<30 { _ = try await jobs.submit(JobSpec(type: "shell", command: ["true"])) }
        for _ in 0..<28 {
            let job = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
            _ = try await jobs.finish(job.id, token: job.attempt!.token, outcome: .succeeded(result: []))
        }
        let running = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
        _ = try await jobs.submit(JobSpec(type: "other", command: ["x"]))
        // A scan of the records from the first would stop after 10 of the finished ones.
        #expect(try await jobs.list(state: .running, scanMax: 10).map(\.id) == [running.id])
        #expect(try await jobs.list(state: .pending, scanMax: 10).map(\.id) == [30, 31])
        #expect(try await jobs.list(state: .pending, type: "other", scanMax: 10).map(\.id) == [31])
        #expect(try await jobs.list(state: .pending, after: 30).map(\.id) == [31])
        #expect(try await jobs.list(state: .succeeded, limit: 3).map(\.id) == [1, 2, 3])
    }

    @Test("batched reports: several ends in one write, each answered; a stale token refused, a replay answered as it is")
    func batchedReports() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let jobs = JobStore(store: memory, nowMs: { clock.ms })
        for _ in 0..<4 { _ = try await jobs.submit(JobSpec(type: "shell", command: ["true"], maxAttempts: 1)) }
        let claimed = try await jobs.claim(shellWorker, leaseMs: 30_000, max: 4)
        #expect(claimed.count == 4)
        func report(_ job: JobRecord, _ outcome: JobOutcome, token: UInt64? = nil) -> JobReport {
            JobReport(id: job.id, type: "shell", token: token ?? job.attempt!.token, outcome: outcome, exitCode: 0)
        }
        let before = try await memory.revisions().current
        let first = try await jobs.finish([
            report(claimed[0], .succeeded(result: [1])), report(claimed[1], .failed(message: "no", retryable: true)),
            report(claimed[2], .succeeded(result: []), token: 0xBAD),
        ])
        #expect(try await memory.revisions().current == before + 1, "the two good reports in one write")
        #expect(try first[0].get().state == .succeeded && first[0].get().result == [1])
        #expect(try first[1].get().state == .dead)
        guard case .failure(.staleAttempt(let job, _, _)) = first[2] else { throw JobError.invalid("a stale token was not refused: \(first[2])") }
        #expect(job == claimed[2].id)
        // Replayed with the fourth: the ended ones answered as they are, the fourth ended now.
        let again = try await jobs.finish([report(claimed[0], .succeeded(result: [1])), report(claimed[3], .succeeded(result: []))])
        #expect(try again.map { try $0.get().state } == [.succeeded, .succeeded])
        let call = JobCall.finishMany([report(claimed[0], .succeeded(result: [1])), report(claimed[1], .failed(message: "x", retryable: false))])
        #expect(try JobCall(decoding: call.encoded) == call)
        let answer = JobAnswer.reported([nil, .staleAttempt(job: 3, token: 4, reason: "r")])
        #expect(try JobAnswer(decoding: answer.encoded) == answer)
        // A batch inside a batch is refused before it is decoded (it could recurse without end).
        var nested = JobCall.finishMany([report(claimed[0], .succeeded(result: []))]).encoded
        for _ in 0..<3 {
            var writer = ByteWriter()
            writer.write(29)
            writer.writeVarint(1)
            writer.writeBytes(nested)
            nested = writer.bytes
        }
        #expect(throws: DecodingError.invalid("a report is a finish (call 6), not call 29")) { try JobCall(decoding: nested) }
    }

    @Test("a failing job is retried after its backoff, goes to the dead letters after exactly max attempts, and redrives")
    func retriesAndDeadLetters() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let spec = JobSpec(type: "shell", command: ["false"], maxAttempts: 3, backoff: .fixed(ms: 5000))
        let id = try await jobs.submit(spec).id
        for attempt in 1...3 {
            let claimed = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
            #expect(claimed.attempt?.number == attempt)
            let after = try await jobs.finish(id, token: claimed.attempt!.token, outcome: .failed(message: "exit 1", retryable: true), exitCode: 1)
            if attempt < 3 {
                #expect(after.state == .scheduled)
                // Jittered within [half, whole] of the 5 s backoff.
                let wait = after.readyAtMs - clock.ms
                #expect((2500...5000).contains(wait))
                clock.advance(wait - 1)
                _ = try await jobs.tick()
                #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
                clock.advance(1)
                #expect(try await jobs.tick().promoted == 1)
            } else {
                #expect(after.state == .dead && after.lastError == "exit 1")
            }
        }
        #expect(try await jobs.list(state: .dead).map(\.id) == [id])
        let history = try await jobs.history(id)
        #expect(history.last?.message.hasPrefix("dead, out of attempts (3)") == true)
        await #expect(throws: JobError.wrongState(job: id, state: .dead, wanted: "only an unfinished job can be cancelled")) {
            try await jobs.cancel(id)
        }
        let redriven = try await jobs.retry(id, deadOnly: true)
        #expect(redriven.state == .pending && redriven.attemptsLeft == 3)
        #expect(try await jobs.list(state: .dead).isEmpty)
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000)?.attempt?.number == 4)
    }

    @Test("an attempt whose lease ran out is re-queued and its token is dead: renewals and completions with it are refused")
    func fencing() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let id = try await jobs.submit(JobSpec(type: "shell", command: ["true"], backoff: .none)).id
        let first = try #require(try await jobs.claim(shellWorker, leaseMs: 1000))
        clock.advance(600)
        _ = try await jobs.renew(id, token: first.attempt!.token, leaseMs: 1000)
        clock.advance(999)
        #expect(try await jobs.tick().expired == 0)
        clock.advance(1)
        #expect(try await jobs.tick().expired == 1)
        #expect(try await jobs.job(id).state == .pending)
        let second = try #require(try await jobs.claim(WorkerInfo(name: "w2", node: 2, types: ["shell"]), leaseMs: 1000))
        #expect(second.attempt!.token != first.attempt!.token && second.attempt!.number == 2)

        let oldToken = first.attempt!.token
        await #expect(throws: JobError.self) { try await jobs.renew(id, token: oldToken, leaseMs: 1000) }
        // Output: only the current attempt writes; each attempt's is kept apart.
        await #expect(throws: JobError.self) {
            try await jobs.appendOutput(id, token: oldToken, chunk: JobOutputChunk(offset: 0, isError: false, bytes: Array("zombie".utf8)))
        }
        try await jobs.appendOutput(id, token: second.attempt!.token, chunk: JobOutputChunk(offset: 0, isError: false, bytes: Array("out".utf8)))
        try await jobs.appendOutput(id, token: second.attempt!.token, chunk: JobOutputChunk(offset: 3, isError: true, bytes: Array("err".utf8)))
        let (shown, chunks) = try await jobs.output(id, attempt: nil, from: 0, bytesMax: 1 << 20)
        #expect(shown == 2 && chunks.map(\.bytes) == [Array("out".utf8), Array("err".utf8)] && chunks.map(\.isError) == [false, true])
        #expect(try await jobs.output(id, attempt: 1, from: 0, bytesMax: 1 << 20).chunks.isEmpty)
        #expect(try await jobs.output(id, attempt: nil, from: 3, bytesMax: 1 << 20).chunks.map(\.offset) == [3])
        do {
            _ = try await jobs.finish(id, token: oldToken, outcome: .succeeded(result: [1]))
            Issue.record("a completion with a dead token was accepted")
        } catch let error as JobError {
            guard case .staleAttempt(let job, let token, let reason) = error else { throw error }
            #expect(job == id && token == oldToken && reason.contains("attempt 2"))
        }
        #expect(try await jobs.job(id).state == .running)
        let done = try await jobs.finish(id, token: second.attempt!.token, outcome: .succeeded(result: [2]))
        // Replaying the same report answers the job as it is; the old token stays refused.
        #expect(try await jobs.finish(id, token: second.attempt!.token, outcome: .succeeded(result: [2])) == done)
        await #expect(throws: JobError.self) { try await jobs.finish(id, token: oldToken, outcome: .succeeded(result: [1])) }
        let history = try await jobs.history(id)
        #expect(history.filter { $0.state == .running }.map(\.token) == [first.attempt!.token, second.attempt!.token])
        #expect(history.contains { $0.message.hasPrefix("failed, retry in 0ms: lease expired: worker w1 on node 1") })
        #expect(try await jobs.job(id).result == [2])
    }

    @Test("50 concurrent submits with one idempotency key make one job")
    func idempotencyRace() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let ids = try await withThrowingTaskGroup(of: (UInt64, Bool).self) { group in
            for _ in 0..<50 {
                group.addTask { try await jobs.submit(JobSpec(type: "shell", command: ["true"], idempotencyKey: "build-42")) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(ids.map(\.0)).count == 1)
        #expect(ids.filter(\.1).count == 1)
        #expect(try await jobs.list().count == 1)
    }

    @Test("dependencies: a job waits for them, is cancelled when one dies, or runs anyway under continue; unknown ones are refused")
    func dependencies() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let a = try await jobs.submit(JobSpec(type: "shell", command: ["a"])).id
        let b = try await jobs.submit(JobSpec(type: "shell", command: ["b"], maxAttempts: 1)).id
        let afterA = try await jobs.submit(JobSpec(type: "shell", command: ["c"], dependsOn: [a])).id
        let afterBoth = try await jobs.submit(JobSpec(type: "shell", command: ["d"], dependsOn: [a, b])).id
        let anyway = try await jobs.submit(JobSpec(type: "shell", command: ["e"], dependsOn: [a, b], onDependencyFailure: .continue)).id
        await #expect(throws: JobError.invalid("unknown dependency: no job 999")) {
            try await jobs.submit(JobSpec(type: "shell", command: ["f"], dependsOn: [999]))
        }
        #expect(try await jobs.tick().resolved == 0)
        let first = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
        let second = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
        #expect([first.id, second.id] == [a, b])
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
        _ = try await jobs.finish(a, token: first.attempt!.token, outcome: .succeeded(result: []))
        #expect(try await jobs.tick().resolved == 1)
        #expect(try await jobs.job(afterA).state == .pending)
        _ = try await jobs.finish(b, token: second.attempt!.token, outcome: .failed(message: "boom", retryable: true))
        #expect(try await jobs.job(b).state == .dead)
        #expect(try await jobs.tick().resolved == 2)
        #expect(try await jobs.job(afterBoth).state == .cancelled)
        #expect(try await jobs.history(afterBoth).last?.message == "dependency \(b) is dead")
        #expect(try await jobs.job(anyway).state == .pending)
    }

    @Test("cancel: a waiting job ends at once; a running one is asked to stop and ends cancelled when its attempt ends")
    func cancel() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let later = try await jobs.submit(JobSpec(type: "shell", command: ["x"], runAtMs: clock.ms + 60_000)).id
        #expect(try await jobs.job(later).state == .scheduled)
        #expect(try await jobs.cancel(later).state == .cancelled)
        clock.advance(60_000)
        #expect(try await jobs.tick().promoted == 0)

        let id = try await jobs.submit(JobSpec(type: "shell", command: ["sleep", "9"])).id
        let claimed = try #require(try await jobs.claim(shellWorker, leaseMs: 30_000))
        #expect(try await jobs.cancel(id).cancelRequested)
        #expect(try await jobs.renew(id, token: claimed.attempt!.token, leaseMs: 30_000).cancelRequested)
        let ended = try await jobs.finish(id, token: claimed.attempt!.token, outcome: .failed(message: "stopped", retryable: true))
        #expect(ended.state == .cancelled)
        #expect(try await jobs.retry(id).state == .pending)
    }

    @Test("a job that needs worker tags waits for a worker that has them; an avoided node never gets it")
    func affinity() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let gpu = try await jobs.submit(JobSpec(type: "shell", command: ["train"], requiredTags: ["gpu": "true"])).id
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
        let tagged = WorkerInfo(name: "g", node: 3, types: ["shell"], tags: ["gpu": "true", "region": "eu"])
        #expect(try await jobs.claim(tagged, leaseMs: 30_000)?.id == gpu)

        let avoid = try await jobs.submit(JobSpec(type: "shell", command: ["x"], avoidNode: 1)).id
        clock.advance(10 * JobStore.preferenceGraceMs)
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
        #expect(try await jobs.claim(WorkerInfo(name: "w2", node: 2, types: ["shell"]), leaseMs: 30_000)?.id == avoid)

        // A preferred node gets the job first; others only once the grace has passed.
        let prefer = try await jobs.submit(JobSpec(type: "shell", command: ["x"], preferNode: 2)).id
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000) == nil)
        clock.advance(JobStore.preferenceGraceMs)
        #expect(try await jobs.claim(shellWorker, leaseMs: 30_000)?.id == prefer)
    }

    @Test("a finished job is removed after the retention with its history, output and key; a live one never")
    func retention() async throws {
        let clock = JobClock()
        let jobs = JobStore(store: MemoryKeyValueStore(nowMs: { clock.ms }), nowMs: { clock.ms }, retentionMs: 60_000)
        let done = try await jobs.submit(JobSpec(type: "shell", command: ["true"], idempotencyKey: "once")).id
        let running = try await jobs.submit(JobSpec(type: "shell", command: ["sleep"])).id
        let claimed = try #require(try await jobs.claim(shellWorker, leaseMs: 600_000))
        try await jobs.appendOutput(done, token: claimed.attempt!.token, chunk: JobOutputChunk(offset: 0, isError: false, bytes: [1]))
        _ = try await jobs.finish(done, token: claimed.attempt!.token, outcome: .succeeded(result: []))
        _ = try #require(try await jobs.claim(shellWorker, leaseMs: 600_000))
        clock.advance(59_999)
        #expect(try await jobs.tick().purged == 0)
        clock.advance(2)
        #expect(try await jobs.tick().purged == 1)
        await #expect(throws: JobError.notFound(done)) { try await jobs.history(done) }
        #expect(try await jobs.job(running).state == .running)
        #expect(try await jobs.store.count(.prefix(jobs.space.subspace(["o"]).prefix)) == 0)
        // The key is free again: a submit with it makes a new job.
        let again = try await jobs.submit(JobSpec(type: "shell", command: ["true"], idempotencyKey: "once"))
        #expect(again.created && again.id != done)
    }

    @Test("a waiting claim is woken by a submit instead of sleeping out its wait")
    func wakeups() async throws {
        let clock = JobClock()
        let jobs = jobStore(clock)
        let waiter = Task { try await jobs.claim(shellWorker, leaseMs: 30_000, waitMs: 60_000) }
        try await Task.sleep(for: .milliseconds(50))
        let id = try await jobs.submit(JobSpec(type: "shell", command: ["true"])).id
        // The test clock stands still, so only the wakeup can end the wait.
        #expect(try await waiter.value?.id == id)
    }

    @Test("records, history entries and errors survive their encodings; truncated ones are refused")
    func encodings() throws {
        var record = JobRecord(id: 9, spec: JobSpecTests.full, state: .running, submittedAtMs: 5, readyAtMs: 6, origin: "cron:nightly")
        record.attempts = 2
        record.attempt = JobAttempt(number: 2, token: 0xFEED, worker: "w", node: 3, startedAtMs: 7, leaseExpiresAtMs: 8)
        record.attempt?.exitCode = -9
        record.lastError = "boom"
        record.result = [1, 2]
        #expect(try JobRecord(decoding: record.encoded) == record)
        for cut in [1, 10, record.encoded.count - 1] {
            #expect(throws: DecodingError.self) { try JobRecord(decoding: Array(record.encoded.prefix(cut))) }
        }
        let entry = JobHistoryEntry(atMs: 1, state: .dead, attempt: 3, token: 4, worker: "w", node: 5, exitCode: 2, message: "m")
        #expect(try JobHistoryEntry(decoding: entry.encoded) == entry)
        for error in [JobError.invalid("x"), .notFound(3), .staleAttempt(job: 1, token: 2, reason: "r"), .wrongState(job: 1, state: .dead, wanted: "w"),
            .contention(attempts: 4)]
        {
            #expect(try JobError(decoding: error.encoded) == error)
        }
    }
}

@Suite("Job schedules")
struct CronStoreTests {
    static let every10s = "*/10 * * * * *"

    func jobs(_ store: JobStore) async throws -> [JobRecord] { try await store.list(limit: 1000) }

    @Test("each tick makes exactly one job, however many managers (an old leader and a new one) fire it")
    func onceAcrossManagers() async throws {
        let clock = JobClock()  // 1 000 000 ms: 16:40 past the epoch, on a multiple of 10 s
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let old = JobStore(store: memory, nowMs: { clock.ms })
        let new = JobStore(store: memory, nowMs: { clock.ms })
        _ = try await old.createSchedule(CronRecord(name: "ten", expression: Self.every10s, spec: JobSpec(type: "shell", command: ["true"])), replace: false)
        for _ in 0..<7 {
            clock.advance(5000)
            async let first = old.tick()
            async let second = new.tick()
            _ = try await (first, second)
            _ = try await new.tick()
        }
        let made = try await jobs(old)
        #expect(made.count == 3)
        #expect(Set(made.map(\.spec.idempotencyKey)) == ["cron:ten:1010000", "cron:ten:1020000", "cron:ten:1030000"])
        #expect(made.allSatisfy { $0.origin == "cron:ten" })
        let ticks = try await old.ticks("ten")
        #expect(ticks.map(\.tickMs) == [1_010_000, 1_020_000, 1_030_000] && ticks.allSatisfy { $0.job != nil })
    }

    @Test("after an outage: skip runs only recent ticks, latest runs one, all runs each (bounded)")
    func catchUp() async throws {
        for (policy, expected) in [(CronRecord.CatchUp.skip, 7), (.latest, 1), (.all, 30)] {
            let clock = JobClock()
            let store = jobStore(clock)
            _ = try await store.createSchedule(
                CronRecord(name: "c", expression: Self.every10s, spec: JobSpec(type: "shell", command: ["true"]), catchUp: policy), replace: false)
            // Five minutes without a pass: 30 ticks, 7 of them within the last minute (both ends in).
            clock.advance(300_000)
            _ = try await store.tick()
            #expect(try await jobs(store).count == expected, "\(policy)")
            #expect(try await store.ticks("c").count == 30, "every missed tick is recorded, fired or not")
        }
    }

    @Test("overlap: skip leaves a tick out while the last job runs; queue makes it wait for that job")
    func overlap() async throws {
        for policy in [CronRecord.Overlap.skip, .queue] {
            let clock = JobClock()
            let store = jobStore(clock)
            _ = try await store.createSchedule(
                CronRecord(name: "o", expression: Self.every10s, spec: JobSpec(type: "shell", command: ["true"]), overlap: policy), replace: false)
            clock.advance(10_000)
            _ = try await store.tick()
            let first = try #require(try await store.claim(shellWorker, leaseMs: 60_000))
            clock.advance(10_000)
            _ = try await store.tick()
            let made = try await jobs(store)
            if policy == .skip {
                #expect(made.count == 1)
                #expect(try await store.ticks("o").last?.message.hasPrefix("skipped: job \(first.id)") == true)
            } else {
                #expect(made.count == 2 && made[1].state == .waiting && made[1].spec.dependsOn == [first.id])
            }
        }
    }

    @Test("a paused schedule fires nothing, and resumes at the next tick without catching up")
    func pause() async throws {
        let clock = JobClock()
        let store = jobStore(clock)
        _ = try await store.createSchedule(CronRecord(name: "p", expression: Self.every10s, spec: JobSpec(type: "shell", command: ["true"])), replace: false)
        #expect(try await store.setPaused("p", true).paused)
        clock.advance(30_000)
        _ = try await store.tick()
        #expect(try await jobs(store).isEmpty)
        #expect(try await store.setPaused("p", false).paused == false)
        clock.advance(5000)
        _ = try await store.tick()
        #expect(try await jobs(store).isEmpty)
        clock.advance(5000)
        _ = try await store.tick()
        #expect(try await jobs(store).count == 1)
        await #expect(throws: JobError.invalid("a schedule named p exists (aspen cron rm, or --replace)")) {
            try await store.createSchedule(CronRecord(name: "p", expression: "@daily", spec: JobSpec(type: "shell", command: ["x"])), replace: false)
        }
        await #expect(throws: JobError.invalid("unknown time zone Mars/Olympus (an IANA name: UTC, Europe/Paris)")) {
            try await store.createSchedule(
                CronRecord(name: "q", expression: "@daily", timeZone: "Mars/Olympus", spec: JobSpec(type: "shell", command: ["x"])), replace: false)
        }
        try await store.removeSchedule("p")
        #expect(try await store.schedules().isEmpty)
    }
}

@Suite("Sagas")
struct SagaTests {
    /// Runs every job the store hands out with the given outcome per command's first argument,
    /// passing managers in between, until the saga finishes; returns the commands in the order run.
    func drive(_ stores: [JobStore], _ id: UInt64, clock: JobClock, failing: Set<String>) async throws -> [String] {
        var ran: [String] = []
        for _ in 0..<100 {
            // The managers' passes race, as an old leader's and a new one's may.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in stores { group.addTask { _ = try await store.tick() } }
                try await group.waitForAll()
            }
            if try await stores[0].saga(id).state.isFinal { return ran }
            while let job = try await stores[0].claim(shellWorker, leaseMs: 60_000) {
                let name = job.spec.command[0]
                ran.append(name)
                let outcome: JobOutcome = failing.contains(name) ? .failed(message: "no", retryable: true) : .succeeded(result: [])
                _ = try await stores[0].finish(job.id, token: job.attempt!.token, outcome: outcome)
            }
            clock.advance(10)
        }
        Issue.record("the saga did not finish")
        return ran
    }

    static let steps = [
        SagaStep(name: "reserve", run: ["reserve"], compensate: ["release"]),
        SagaStep(name: "charge", run: ["charge"], compensate: ["refund"]),
        SagaStep(name: "note", run: ["note"]),
        SagaStep(name: "ship", run: ["ship"], compensate: ["unship"]),
    ]

    @Test("a saga whose steps all succeed runs them in order and ends succeeded")
    func succeeds() async throws {
        let clock = JobClock()
        let store = jobStore(clock)
        let saga = try await store.startSaga(name: "order", steps: Self.steps, maxAttempts: 1)
        #expect(try await drive([store], saga.id, clock: clock, failing: []) == ["reserve", "charge", "note", "ship"])
        #expect(try await store.saga(saga.id).state == .succeeded)
    }

    @Test("when a step fails, the steps done are undone once each in reverse order, however many managers race")
    func compensates() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let tokens = Mutex<UInt64>(1)
        let stores = (0..<3).map { _ in
            JobStore(store: memory, nowMs: { clock.ms }, random: { tokens.withLock { $0 += 1; return $0 } })
        }
        let saga = try await stores[0].startSaga(name: "order", steps: Self.steps, maxAttempts: 1)
        let ran = try await drive(stores, saga.id, clock: clock, failing: ["ship"])
        #expect(ran == ["reserve", "charge", "note", "ship", "refund", "release"])
        let done = try await stores[0].saga(saga.id)
        #expect(done.state == .compensated && done.reason?.hasPrefix("step ship") == true)
        #expect(done.compensationJobs.compactMap { $0 }.count == 2)
    }

    @Test("a compensation that fails stops the saga as failed, with both reasons")
    func compensationFails() async throws {
        let clock = JobClock()
        let store = jobStore(clock)
        let saga = try await store.startSaga(name: "order", steps: Self.steps, maxAttempts: 1)
        #expect(try await drive([store], saga.id, clock: clock, failing: ["ship", "refund"]) == ["reserve", "charge", "note", "ship", "refund"])
        let done = try await store.saga(saga.id)
        #expect(done.state == .failed && done.reason?.contains("the compensation of charge") == true)
    }

    @Test("sagas past their bounds are refused, naming them; records survive their encoding")
    func bounds() async throws {
        let store = jobStore(JobClock())
        await #expect(throws: JobError.invalid("a saga has 1 to sagaStepsMax (64) steps, not 0")) { try await store.startSaga(name: "x", steps: []) }
        await #expect(throws: JobError.invalid("two steps of the saga have one name")) {
            try await store.startSaga(name: "x", steps: [SagaStep(name: "a", run: ["a"]), SagaStep(name: "a", run: ["b"])])
        }
        let saga = try await store.startSaga(name: "order", steps: Self.steps)
        #expect(try SagaRecord(decoding: saga.encoded) == saga)
    }
}

@Suite("Durable pub/sub stream")
struct TopicLogTests {
    func stream(_ clock: JobClock) -> TopicLog { TopicLog(store: MemoryKeyValueStore(nowMs: { clock.ms }), dedupWindowMs: 10_000, nowMs: { clock.ms }) }
    func message(_ subject: String, _ text: String = "", id: String? = nil) -> TopicMessage {
        TopicMessage(subject: subject, payload: Array(text.utf8), messageID: id)
    }

    @Test("reads select subjects as NATS does: '*' one token, '>' one or more, never the bare prefix")
    func wildcards() async throws {
        let log = stream(JobClock())
        _ = try await log.publish(["orders", "orders.created", "orders.us.created", "billing.created"].map { message($0) })
        func subjects(_ pattern: String) async throws -> [String] {
            try await log.read(pattern: try SubjectPattern(pattern), from: 0, limit: 100).messages.map(\.subject)
        }
        #expect(try await subjects("orders.*") == ["orders.created"])
        #expect(try await subjects("orders.>") == ["orders.created", "orders.us.created"])
        #expect(try await subjects(">") == ["orders", "orders.created", "orders.us.created", "billing.created"])
        #expect(try await subjects("*.created") == ["orders.created", "billing.created"])
        #expect(try await subjects("orders") == ["orders"])
    }

    @Test("3 publishers, 3000 messages: cursors 1…3000 with no gap or duplicate, read in order, resumed by cursor")
    func ordered() async throws {
        let log = stream(JobClock())
        let cursors = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for publisher in 0..<3 {
                group.addTask {
                    var mine: [UInt64] = []
                    for number in 0..<1000 { mine += try await log.publish([message("p\(publisher).n", "\(number)")]) }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(cursors.sorted() == Array(1...3000))
        var seen: [TopicMessage] = []
        var from: UInt64 = 0
        while true {
            let page = try await log.read(pattern: nil, from: from, limit: 700)
            seen += page.messages
            from = page.next
            if page.messages.isEmpty { break }
        }
        #expect(seen.count == 3000 && seen.map(\.cursor) == Array(1...3000), "read \(seen.count) messages, ending at \(seen.last?.cursor ?? 0)")
        // Each publisher's messages in the order it published them.
        for publisher in 0..<3 {
            let numbers = seen.filter { $0.subject == "p\(publisher).n" }.map { Int(String(decoding: $0.payload, as: UTF8.self))! }
            #expect(numbers == Array(0..<1000), "publisher \(publisher): \(numbers.count) messages, in order: \(numbers == numbers.sorted())")
        }
        let resumed = try await log.read(pattern: try SubjectPattern("p1.*"), from: 2001, limit: 5000)
        #expect(resumed.messages.allSatisfy { $0.cursor >= 2001 && $0.subject == "p1.n" } && resumed.next == 3001)
    }

    @Test("a batch is published whole or not at all; bounds are named")
    func batches() async throws {
        let log = stream(JobClock())
        await #expect(throws: JobError.invalid("'bad..subject' has an empty token (a leading, trailing or doubled '.')")) {
            try await log.publish([message("good.one"), message("bad..subject")])
        }
        await #expect(throws: JobError.self) { try await log.publish([message("orders.*")]) }
        let big = TopicMessage(subject: "big", payload: Array(repeating: 1, count: Limits.standard.topicPayloadBytesMax + 1))
        do {
            _ = try await log.publish([big])
            Issue.record("an oversized payload was published")
        } catch let error as JobError {
            #expect(error.description.contains("topicPayloadBytesMax"))
        }
        #expect(try await log.read(pattern: nil, from: 0, limit: 10).last == 0)
        #expect(try await log.publish([message("a"), message("b"), message("c")]) == [1, 2, 3])
    }

    @Test("a message id publishes once within the dedup window; after it, again")
    func dedup() async throws {
        let clock = JobClock()
        let log = stream(clock)
        let first = try await log.publish([message("orders.created", "7", id: "order-7")])
        #expect(try await log.publish([message("orders.created", "7", id: "order-7")]) == first)
        #expect(try await log.read(pattern: nil, from: 0, limit: 10).messages.count == 1)
        clock.advance(10_001)
        _ = try await log.prune()
        #expect(try await log.publish([message("orders.created", "7", id: "order-7")]) == [2])
    }

    @Test("retention removes old messages of matching subjects; reading from a removed cursor names the oldest")
    func retention() async throws {
        let clock = JobClock()
        let log = stream(clock)
        try await log.setRetention(TopicRetention(pattern: "logs.>", maxMessages: 5))
        try await log.setRetention(TopicRetention(pattern: "audit", maxAgeMs: 60_000))
        _ = try await log.publish([message("audit"), message("logs.a"), message("keep")])
        for _ in 0..<10 { _ = try await log.publish([message("logs.b")]) }
        #expect(try await log.prune() == 6)  // cursors 2 and 4…8: five newer ones are in the stream
        clock.advance(60_001)
        #expect(try await log.prune() == 1)  // the audit message, now too old
        let left = try await log.read(pattern: nil, from: 0, limit: 100)
        #expect(left.messages.map(\.cursor) == [3, 9, 10, 11, 12, 13] && left.oldest == 3)
        await #expect(throws: JobError.cursorExpired(cursor: 2, oldest: 3)) { try await log.read(pattern: nil, from: 2, limit: 10) }
    }
}

@Suite("Consumer groups")
struct ConsumerGroupTests {
    func setUp(_ clock: JobClock, group: ConsumerGroup) async throws -> TopicLog {
        let log = TopicLog(store: MemoryKeyValueStore(nowMs: { clock.ms }), nowMs: { clock.ms })
        _ = try await log.createGroup(group, from: 0)
        return log
    }
    let receipts: @Sendable () -> UInt64 = { UInt64.random(in: 1...UInt64.max) }

    @Test("group calls survive their encoding")
    func wire() throws {
        let call = JobCall.groupCreate(ConsumerGroup(name: "g", pattern: "work.>", ackWaitMs: 2000, maxPending: 100), from: nil)
        #expect(try JobCall(decoding: call.encoded) == call)
    }

    @Test("competing consumers share the messages: each delivered to one, none acknowledged twice")
    func competing() async throws {
        let clock = JobClock()
        let log = try await setUp(clock, group: ConsumerGroup(name: "billing", pattern: "orders.>"))
        for number in 0..<60 { _ = try await log.publish([TopicMessage(subject: number % 3 == 0 ? "other" : "orders.created", payload: Array("\(number)".utf8))]) }
        let acked = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for consumer in ["a", "b", "c"] {
                group.addTask {
                    var mine: [UInt64] = []
                    while true {
                        let got = try await log.fetch(group: "billing", consumer: consumer, max: 3, waitMs: 0, random: receipts)
                        if got.isEmpty { return mine }
                        for delivery in got {
                            try await log.settle(group: "billing", cursor: delivery.message.cursor, receipt: delivery.receipt, action: .ack)
                            mine.append(delivery.message.cursor)
                        }
                    }
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(acked.count == 40 && Set(acked).count == 40)
        #expect(try await log.groupStatus("billing").pending == 0)
    }

    @Test("a consumer that dies holding deliveries: all redelivered after the ack wait; its late acks are refused")
    func redelivery() async throws {
        let clock = JobClock()
        let log = try await setUp(clock, group: ConsumerGroup(name: "g", pattern: ">", ackWaitMs: 1000))
        for _ in 0..<100 { _ = try await log.publish([TopicMessage(subject: "e", payload: [])]) }
        let dead = try await log.fetch(group: "g", consumer: "dies", max: 100, waitMs: 0, random: receipts)
        #expect(dead.count == 100)
        #expect(try await log.fetch(group: "g", consumer: "lives", max: 100, waitMs: 0, random: receipts).isEmpty)
        clock.advance(1000)
        let again = try await log.fetch(group: "g", consumer: "lives", max: 100, waitMs: 0, random: receipts)
        #expect(Set(again.map(\.message.cursor)) == Set(dead.map(\.message.cursor)) && again.allSatisfy { $0.deliveries == 2 })
        await #expect(throws: JobError.self) {
            try await log.settle(group: "g", cursor: dead[0].message.cursor, receipt: dead[0].receipt, action: .ack)
        }
        try await log.settle(group: "g", cursor: again[0].message.cursor, receipt: again[0].receipt, action: .ack)
    }

    @Test("after max deliveries a message goes to the group's dead letters; a full consumer is told so")
    func deadLettersAndBackpressure() async throws {
        let clock = JobClock()
        let log = try await setUp(clock, group: ConsumerGroup(name: "g", pattern: ">", ackWaitMs: 1000, maxDeliveries: 2, maxPending: 2))
        for _ in 0..<3 { _ = try await log.publish([TopicMessage(subject: "e", payload: [])]) }
        #expect(try await log.fetch(group: "g", consumer: "c", max: 10, waitMs: 0, random: receipts).count == 2)
        do {
            _ = try await log.fetch(group: "g", consumer: "c", max: 10, waitMs: 0, random: receipts)
            Issue.record("a consumer at its pending limit got more")
        } catch let error as JobError {
            #expect(error.description.hasPrefix("max pending reached"))
        }
        // The backpressure is visible in the metrics, as are the deliveries waiting.
        let metrics = try await log.groupMetrics()
        for line in [
            "aspen_group_pending{group=\"g\"} 2", "aspen_group_max_pending_refusals_total{group=\"g\"} 1", "aspen_group_next_cursor{group=\"g\"} 3",
            "aspen_group_dead{group=\"g\"} 0",
        ] {
            #expect(metrics.contains(line), "\(line) not in \(metrics)")
        }
        // Each round hands every delivery back; the third message is first delivered in the second.
        for _ in 0..<3 {
            clock.advance(1000)
            for delivery in try await log.fetch(group: "g", consumer: "d", max: 10, waitMs: 0, random: receipts) {
                try await log.settle(group: "g", cursor: delivery.message.cursor, receipt: delivery.receipt, action: .nak(delayMs: 0))
            }
        }
        clock.advance(1000)
        _ = try await log.fetch(group: "g", consumer: "d", max: 10, waitMs: 0, random: receipts)
        let status = try await log.groupStatus("g")
        #expect(status.dead == [1, 2, 3], "\(status)")
    }
}

@Suite("Hooks")
struct HookTests {
    @Test("each message on a hook's pattern makes one job carrying the event, however many managers race")
    func eventsMakeJobs() async throws {
        let clock = JobClock()
        let memory = MemoryKeyValueStore(nowMs: { clock.ms })
        let stores = (0..<2).map { _ in JobStore(store: memory, nowMs: { clock.ms }, topics: TopicLog(store: memory, nowMs: { clock.ms })) }
        _ = try await stores[0].createHook(HookRecord(name: "on-order", pattern: "orders.>", job: JobSpec(type: "shell", command: ["./notify.sh"])))
        for subject in ["orders.eu.created", "billing.x", "orders.us.created"] {
            _ = try await stores[0].topics!.publish([TopicMessage(subject: subject, payload: Array("{\"at\":\"\(subject)\"}".utf8))])
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for store in stores { group.addTask { _ = try await store.tick() } }
            try await group.waitForAll()
        }
        _ = try await stores[1].tick()
        let jobs = try await stores[0].list()
        #expect(jobs.map(\.origin) == ["hook:on-order", "hook:on-order"])
        let events = try jobs.map { try JSONSerialization.jsonObject(with: Data($0.spec.payload)) as? [String: Any] }
        #expect(events.map { $0?["subject"] as? String } == ["orders.eu.created", "orders.us.created"])
        #expect(try await stores[0].hooks().first?.pending == 0)
        await #expect(throws: JobError.invalid("a hook named on-order exists (aspen hook rm first)")) {
            try await stores[0].createHook(HookRecord(name: "on-order", pattern: "orders.>", job: JobSpec(type: "shell", command: ["x"])))
        }
    }
}
