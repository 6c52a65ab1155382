import AspenCI
import AspenCore

/// CI pipeline files and stored pipelines: the strict YAML reading (a libyaml pre-pass, then
/// Yams) and the binary form a run keeps; the CI wire (`aspen ci …` on `aspen/client/1`, domain
/// `ci`) and the records a node keeps and hands its workers.
extension FuzzTarget {
    static let ciTargets: [FuzzTarget] = [ciPipeline, ciWire]

    static let ciPipeline = FuzzTarget(
        name: "ci-pipeline",
        summary: "`.aspen/ci.yml` through the strict parser, and stored pipelines through the bounded decoder",
        seeds: {
            let files = [
                """
                version: 1
                triggers:
                  push: { branches: [main, "release/*"], tags: ["v*"], paths_ignore: ["docs/**"] }
                  patch: {}
                concurrency: { group: "${ref}", cancel_in_progress: true }
                jobs:
                  build: { run: make, timeout: 20m, artifacts: [out/app], cache: { key: "k-${hash:Makefile}", paths: [.cache] } }
                  test: { needs: [build], matrix: { config: [debug, release] }, run: "make test C=${matrix.config}", retry: { max: 2, on_exit: [137] } }
                  deploy: { needs: [test], if: ref == "refs/heads/main" && event != "patch", secrets: [TOKEN], run: ./deploy.sh }
                """,
                "version: 1\njobs:\n  a: { run: x }\n  b: { run: y, needs: [a], env: { K: \"${sha}\" }, continue_on_error: true }\n",
            ].map { Array($0.utf8) }
            let stored = files.compactMap { try? Pipeline(yaml: $0) }.map { $0.encoded() }
            return selected(0, files) + selected(1, stored)
        }
    ) { input in
        let limits = Limits.standard
        return FuzzCheck.select(input, [
            { (bytes: [UInt8]) -> FuzzOutcome in
                // A file that parses is a pipeline whose stored form reads back to itself.
                let pipeline: Pipeline
                do throws(PipelineError) {
                    pipeline = try Pipeline(yaml: bytes, limits: limits)
                } catch {
                    return .rejected(shape: "\(error.code)")
                }
                guard pipeline.plan.count <= limits.ciJobsPerPipelineMax else { return .failed("a plan of \(pipeline.plan.count) jobs") }
                guard (try? Pipeline(decoding: pipeline.encoded(), limits: limits)) == pipeline else {
                    return .failed("a parsed pipeline does not decode from its own encoding")
                }
                return .decoded
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try Pipeline(decoding: $0, limits: limits) }, encode: { $0.encoded() },
                    bounds: { $0.plan.count > limits.ciJobsPerPipelineMax ? "a plan of \($0.plan.count) jobs" : nil })
            },
        ])
    }
}

extension FuzzTarget {
    static let ciWire = FuzzTarget(
        name: "ci-wire",
        summary: "CICall, CIAnswer, CIRun, CIJobTask, CIJobResult: the CI wire (runs, logs, statuses, secrets), its runs and what a worker is given and reports",
        seeds: {
            let sha = String(repeating: "3b18e512", count: 5)
            let run = CIRun(
                id: 42, repo: "team/app", ref: "refs/heads/main", sha: sha, event: .push, creator: String(repeating: "c0", count: 32),
                createdMs: 1_796_000_000_000, endedMs: 1_796_000_083_000, state: .failure, message: "ci.yml:3:5: unknown key",
                jobs: [
                    CIRunJob(name: "build", state: .success, attempts: [CIAttempt(number: 1, jobID: 17, exitCode: 0, endedMs: 5)], startedMs: 1, endedMs: 5),
                    CIRunJob(
                        name: "test (config=debug)", state: .failure, detail: "exit 1",
                        attempts: [CIAttempt(number: 1, jobID: 18, exitCode: 137, endedMs: 9, detail: "worker lost"), CIAttempt(number: 2, jobID: 19)]),
                    CIRunJob(name: "deploy", state: .skipped, detail: "needs test"),
                ],
                cancelRequested: true, group: "ci-refs/heads/main", rerunOf: 41)
            let plain = CIRun(id: 1, repo: "demo", ref: "refs/for/main", sha: "", event: .patch, createdMs: -1)
            let calls: [CICall] = [
                .list(repo: "team/app", limit: 20), .show(run: 42), .logs(run: 42, job: "test (config=debug)", attempt: 0, offset: 0, waitMs: 10_000),
                .logs(run: 7, job: "build", attempt: 2, offset: 4096, waitMs: 0), .status(repo: "team/app", sha: sha), .cancel(run: 42),
                .rerun(run: 42, failedOnly: true), .start(repo: "team/app", ref: "refs/heads/main", request: "5C1D1B5E-8A6B-4F57-9F0A-6E1B2C3D4E5F"),
                .secretSet(repo: "team/app", name: "DEPLOY_TOKEN", value: [0, 0xFF, 10]), .secretList(repo: "team/app"),
                .secretDelete(repo: "team/app", name: "DEPLOY_TOKEN"), .caches(repo: "team/app"), .cacheDelete(repo: "demo", key: "spm-3b18"),
                .cacheDelete(repo: "demo", key: nil),
            ]
            let page = CILogPage(
                attempts: [CILogAttempt(jobID: 18, number: 1, bytes: 4096, ended: true), CILogAttempt(jobID: 19, number: 2, bytes: 3, ended: false)],
                attempt: 2, offset: 0, bytes: Array("ok\n".utf8), complete: false)
            let answers: [CIAnswer] = [
                .runs([run, plain]), .run(run), .log(page), .log(CILogPage(attempts: [], attempt: 0, offset: 0, bytes: [], complete: true)),
                .statuses([
                    CommitStatus(context: "ci/ci", state: .failure, description: "1 of 3 jobs failed", run: 42, updatedMs: 9),
                    CommitStatus(context: "ci/ci/deploy", state: .skipped, run: 42, updatedMs: 9),
                ]),
                .names(["DEPLOY_TOKEN", "NPM_TOKEN"]), .names([]),
                .caches([CICache(key: "spm-3b18", hash: Array(repeating: 7, count: 32), size: 1 << 20, revision: 99)]), .caches([]),
            ]
            let tasks = [
                CIJobTask(
                    run: 42, repo: "team/app", ref: "refs/heads/main", sha: sha, event: .push, job: "test (config=debug)", attempt: 1,
                    script: "swift test -c debug", env: ["CONFIG": "debug", "A": "b"], timeoutMs: 1_200_000, secrets: ["DEPLOY_TOKEN"]),
                CIJobTask(run: 1, repo: "demo", ref: "refs/for/main", sha: "", event: .patch, job: "a", attempt: 0, script: "", timeoutMs: 0),
            ]
            let results = [
                CIJobResult(exitCode: 0, outputBytes: 10, runMs: 5), CIJobResult(exitCode: nil, timedOut: true, cancelled: true, detail: "checkout failed"),
            ]
            return selected(0, calls.map(\.encoded)) + selected(1, answers.map(\.encoded)) + selected(2, [run.encoded, plain.encoded])
                + selected(3, tasks.map(\.encoded)) + selected(4, results.map(\.encoded))
        }
    ) { input in
        let limits = Limits.standard
        return FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try CICall(decoding: $0, limits: limits) }, encode: { $0.encoded }) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try CIAnswer(decoding: $0, limits: limits) }, encode: { $0.encoded }, bounds: { CIWireBounds.answer($0, limits) })
            },
            { FuzzCheck.roundTrip($0, decode: { try CIRun(decoding: $0, limits: limits) }, encode: { $0.encoded }, bounds: { CIWireBounds.run($0, limits) }) },
            { FuzzCheck.roundTrip($0, decode: { try CIJobTask(decoding: $0, limits: limits) }, encode: { $0.encoded }) },
            { FuzzCheck.roundTrip($0, decode: { try CIJobResult(decoding: $0) }, encode: { $0.encoded }) },
        ])
    }
}

/// The bounds a decoded CI value must keep, whatever its input.
enum CIWireBounds {
    static func run(_ run: CIRun, _ limits: Limits) -> String? {
        if run.jobs.count > limits.ciJobsPerPipelineMax { return "a run of \(run.jobs.count) jobs" }
        if let job = run.jobs.first(where: { $0.attempts.count > CIWire.attemptsMax(limits) }) { return "a job of \(job.attempts.count) tries" }
        if run.message.utf8.count > CIWire.messageBytesMax { return "a message of \(run.message.utf8.count) bytes" }
        return nil
    }

    static func answer(_ answer: CIAnswer, _ limits: Limits) -> String? {
        switch answer {
        case .runs(let runs): runs.count > CICall.listMax ? "\(runs.count) runs" : runs.lazy.compactMap { run($0, limits) }.first
        case .run(let one): run(one, limits)
        case .log(let page):
            page.bytes.count > CILogPage.bytesMax ? "a page of \(page.bytes.count) bytes"
                : page.attempt > page.attempts.count ? "page of try \(page.attempt) of \(page.attempts.count)" : nil
        case .statuses(let statuses): statuses.count > 4 * limits.ciJobsPerPipelineMax ? "\(statuses.count) statuses" : nil
        case .names(let names): names.count > limits.ciSecretsPerRepoMax ? "\(names.count) names" : nil
        case .artifacts(let artifacts): artifacts.count > CIWire.artifactsListedMax(limits) ? "\(artifacts.count) artifacts" : nil
        case .caches(let caches): caches.count > CIWire.cachesListedMax ? "\(caches.count) caches" : nil
        }
    }
}
