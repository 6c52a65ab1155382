import AspenCore
import Testing

@testable import AspenCI

/// The CI wire (`aspen ci …` calls and answers) and the records a node keeps: every value reads
/// back to itself, and a decoder refuses what it did not write.
struct CIWireTests {
    static let sha = String(repeating: "3b18e512", count: 5)

    static let run = CIRun(
        id: 42, repo: "team/app", ref: "refs/heads/main", sha: sha, event: .push, creator: String(repeating: "c0", count: 32),
        createdMs: 1_796_000_000_000, endedMs: 1_796_000_083_000, state: .failure, message: "ci.yml:3:5: é ✓",
        jobs: [
            CIRunJob(
                name: "build", state: .success, attempts: [CIAttempt(number: 1, jobID: 17, exitCode: 0, endedMs: 1_796_000_030_000)],
                startedMs: 1_796_000_001_000, endedMs: 1_796_000_030_000),
            CIRunJob(
                name: "test (config=debug)", state: .failure, detail: "exit 1 after 2 tries",
                attempts: [
                    CIAttempt(number: 1, jobID: 18, exitCode: 137, endedMs: 1_796_000_050_000, detail: "worker lost"),
                    CIAttempt(number: 2, jobID: 19, exitCode: -1, endedMs: 1_796_000_080_000),
                    CIAttempt(number: 3, jobID: 20),
                ],
                startedMs: 1_796_000_031_000),
            CIRunJob(name: "deploy", state: .skipped, detail: "needs test, which failed"),
        ],
        cancelRequested: true, group: "ci-refs/heads/main", rerunOf: 41)

    static let plainRun = CIRun(id: 0, repo: "demo", ref: "refs/for/main", sha: "", event: .patch, createdMs: -5)

    static let calls: [CICall] = [
        .list(repo: "team/app", limit: 20), .list(repo: "demo", limit: CICall.listMax), .show(run: 42), .show(run: .max),
        .logs(run: 42, job: "test (config=debug)", attempt: 0, offset: 0, waitMs: 0),
        .logs(run: 7, job: "build", attempt: 3, offset: 1 << 40, waitMs: CICall.logWaitMsMax), .status(repo: "team/app", sha: sha),
        .cancel(run: 42), .rerun(run: 42, failedOnly: true), .rerun(run: 1, failedOnly: false),
        .start(repo: "team/app", ref: "refs/heads/main", request: "5C1D1B5E-8A6B-4F57-9F0A-6E1B2C3D4E5F"),
        .secretSet(repo: "team/app", name: "DEPLOY_TOKEN", value: [0, 0xFF, 10]), .secretSet(repo: "demo", name: "EMPTY", value: []),
        .secretList(repo: "team/app"), .secretDelete(repo: "team/app", name: "DEPLOY_TOKEN"),
        .artifacts(run: 42, job: "build"), .artifacts(run: 1, job: nil),
        .caches(repo: "team/app"), .cacheDelete(repo: "team/app", key: "spm-é-3b18"), .cacheDelete(repo: "demo", key: nil),
    ]

    static let page = CILogPage(
        attempts: [CILogAttempt(jobID: 18, number: 1, bytes: 4096, ended: true), CILogAttempt(jobID: 19, number: 2, bytes: 12, ended: false)],
        attempt: 2, offset: 4, bytes: Array("ok\n\u{1B}[0m\n".utf8), complete: false)

    static let answers: [CIAnswer] = [
        .runs([run, plainRun]), .runs([]), .run(run), .run(plainRun), .log(page),
        .log(CILogPage(attempts: [], attempt: 0, offset: 0, bytes: [], complete: true)),
        .statuses([
            CommitStatus(context: "ci/ci", state: .failure, description: "1 of 3 jobs failed", run: 42, updatedMs: 1_796_000_083_000),
            CommitStatus(context: "ci/ci/test (config=debug)", state: .skipped, run: 42, updatedMs: -1),
        ]),
        .statuses([]), .names(["DEPLOY_TOKEN", "NPM_TOKEN"]), .names([]),
        .artifacts([CIArtifact(job: "build", path: ".build/release/app", hash: Array(repeating: 1, count: 32), size: 12)]), .artifacts([]),
        .caches([
            CICache(key: "spm-3b18", hash: Array(repeating: 7, count: 32), size: 1 << 30, revision: 99),
            CICache(key: "", hash: [], size: 0, revision: 0),
        ]),
        .caches([]),
    ]

    @Test("every call reads back to itself")
    func callsRoundTrip() throws {
        for call in Self.calls {
            #expect(try CICall(decoding: call.encoded) == call, "\(call)")
        }
    }

    @Test("every answer reads back to itself")
    func answersRoundTrip() throws {
        for answer in Self.answers {
            #expect(try CIAnswer(decoding: answer.encoded) == answer)
        }
    }

    @Test("a run reads back with its jobs, its tries and every optional field, set or not")
    func runRoundTrip() throws {
        for run in [Self.run, Self.plainRun] {
            #expect(try CIRun(decoding: run.encoded) == run)
        }
        let decoded = try CIRun(decoding: Self.run.encoded)
        #expect(decoded.job("test (config=debug)")?.attempts.map(\.exitCode) == [137, -1, nil])
        #expect(decoded.job("deploy")?.attempts.isEmpty == true)
    }

    @Test("a job's task and result read back to themselves")
    func taskAndResultRoundTrip() throws {
        let task = CIJobTask(
            run: 42, repo: "team/app", ref: "refs/heads/main", sha: Self.sha, event: .manual, job: "test (config=debug)", attempt: 2,
            script: "swift test -c debug", env: ["Z": "1", "A": "b"], timeoutMs: 1_200_000, secrets: ["DEPLOY_TOKEN"])
        #expect(try CIJobTask(decoding: task.encoded) == task)
        for result in [CIJobResult(exitCode: 0, outputBytes: 10, runMs: 5), CIJobResult(exitCode: nil, timedOut: true, cancelled: true, detail: "checkout failed")] {
            #expect(try CIJobResult(decoding: result.encoded) == result)
        }
    }

    @Test("every truncation of an encoding is refused")
    func truncated() {
        let encodings: [([UInt8], ([UInt8]) throws -> Void)] =
            Self.calls.map { ($0.encoded, { _ = try CICall(decoding: $0) }) } + Self.answers.map { ($0.encoded, { _ = try CIAnswer(decoding: $0) }) }
            + [Self.run, Self.plainRun].map { ($0.encoded, { _ = try CIRun(decoding: $0) }) }
        for (bytes, decode) in encodings {
            for length in 0..<bytes.count {
                #expect(throws: DecodingError.self, "\(length) of \(bytes.count) bytes") { try decode(Array(bytes[..<length])) }
            }
        }
    }

    @Test("a byte after an encoding is refused")
    func trailingByte() {
        for call in Self.calls {
            #expect(throws: DecodingError.self) { try CICall(decoding: call.encoded + [0]) }
        }
        for answer in Self.answers {
            #expect(throws: DecodingError.self) { try CIAnswer(decoding: answer.encoded + [0]) }
        }
        #expect(throws: DecodingError.self) { try CIRun(decoding: Self.run.encoded + [0]) }
    }

    @Test("a cache key longer than ciCacheKeyBytesMax, and a list of more than cachesListedMax caches, are refused")
    func cacheBounds() throws {
        let long = String(repeating: "k", count: Limits.standard.ciCacheKeyBytesMax + 1)
        #expect(throws: DecodingError.self) { try CICall(decoding: CICall.cacheDelete(repo: "demo", key: long).encoded) }
        let longest = String(long.dropLast())
        #expect(try CICall(decoding: CICall.cacheDelete(repo: "demo", key: longest).encoded) == .cacheDelete(repo: "demo", key: longest))
        let one = CICache(key: "k", hash: [], size: 0, revision: 0)
        #expect(throws: DecodingError.self) { try CIAnswer(decoding: CIAnswer.caches(Array(repeating: one, count: CIWire.cachesListedMax + 1)).encoded) }
        let most = CIAnswer.caches(Array(repeating: one, count: CIWire.cachesListedMax))
        #expect(try CIAnswer(decoding: most.encoded) == most)
    }

    @Test("a log request past its bounds is refused")
    func logBounds() {
        for call in [
            CICall.logs(run: 1, job: "a", attempt: 0, offset: -1, waitMs: 0), .logs(run: 1, job: "a", attempt: 0, offset: 0, waitMs: CICall.logWaitMsMax + 1),
            .logs(run: 1, job: "a", attempt: 0, offset: 0, waitMs: -1),
        ] {
            #expect(throws: DecodingError.self) { try CICall(decoding: call.encoded) }
        }
        #expect(throws: DecodingError.self) { try CICall(decoding: CICall.list(repo: "a", limit: CICall.listMax + 1).encoded) }
    }

    @Test("a long message is cut at messageBytesMax on a character boundary; a short one is kept")
    func messageCut() {
        let short = String(repeating: "é", count: CIWire.messageBytesMax / 2)
        #expect(CIWire.message(short) == short)
        // Characters of 1, 2, 4 and 8 bytes (a flag is two scalars): the cut falls inside one.
        for unit in ["a", "é", "😀", "🇫🇷", "e\u{301}"] {
            let long = "x" + String(repeating: unit, count: CIWire.messageBytesMax)
            let cut = CIWire.message(long)
            #expect(cut.utf8.count <= CIWire.messageBytesMax, "\(unit)")
            #expect(cut.utf8.count > CIWire.messageBytesMax - unit.utf8.count, "\(unit)")
            #expect(cut.hasSuffix("…"))
            let kept = cut.dropLast()
            #expect(long.hasPrefix(kept), "\(unit)")
            #expect(kept.dropFirst().allSatisfy { String($0) == unit }, "\(unit): a character was split")
        }
    }

    @Test("a refusal's code brings back the same error; an unknown code is a failure")
    func errorCodes() {
        for error in [CIError.badInput("b"), .notFound("n"), .conflict("c"), .unavailable("u"), .failed("f")] {
            #expect(CIError(code: error.code, message: error.description) == error)
        }
        #expect(CIError(code: "exists", message: "m") == .failed("m"))
    }
}
