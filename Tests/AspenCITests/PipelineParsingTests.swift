import AspenCore
import Testing

@testable import AspenCI

/// `.aspen/ci.yml` read into the normalized pipeline, and refused with the exact place of
/// what is wrong.
struct PipelineParsingTests {
    @Test("the documented example parses to the expected normalized pipeline")
    func example() throws {
        let pipeline = try Pipeline(yaml: examplePipeline)
        let expectedTriggers = Triggers(
            push: PushTrigger(branches: [try glob("main"), try glob("release/*")], tags: [try glob("v*")], paths: [try glob("src/**")], pathsIgnore: [try glob("docs/**")]),
            patch: PatchTrigger(branches: [.everything]), manual: false)
        let build = Job(
            name: "build", run: "swift build -c release", timeoutMs: 1_200_000, artifacts: [".build/release/app"],
            cache: Cache(key: "spm-${hash:Package.resolved}", paths: [".build"]), tags: ["linux"])
        let test = Job(
            name: "test", run: "swift test -c ${matrix.config}", needs: ["build"], timeoutMs: 1_800_000,
            matrix: [MatrixAxis(name: "config", values: ["debug", "release"])], failFast: true, maxParallel: 2,
            retry: RetryPolicy(retriesMax: 2, onExitCodes: [137]), env: ["A": "b"])
        let deploy = Job(
            name: "deploy", run: "./deploy.sh", needs: ["test"], condition: .compare(.ref, .equal, "refs/heads/main"),
            secrets: ["DEPLOY_TOKEN"], continueOnError: false)
        let expected = try Pipeline(
            triggers: expectedTriggers, concurrency: Concurrency(group: "${ref}", cancelInProgress: true), jobs: [build, test, deploy])
        #expect(pipeline == expected)
        #expect(pipeline.triggers == expectedTriggers)
        #expect(pipeline.jobs.map(\.name) == ["build", "test", "deploy"])
        #expect(pipeline.plan.map(\.name) == ["build", "test (config=debug)", "test (config=release)", "deploy"])
        #expect(pipeline.plan[1].needs == ["build"])
        #expect(pipeline.plan[3].needs == ["test (config=debug)", "test (config=release)"])
        #expect(pipeline.plan[2].matrix == [MatrixBinding(axis: "config", value: "release")])
    }

    @Test("defaults: no triggers means pushes to any branch and manual runs; timeouts 30 minutes; fail fast")
    func defaults() throws {
        let pipeline = try Pipeline(yaml: pipelineFile(jobs: "  lint:\n    run: make lint\n"))
        #expect(pipeline.triggers == Triggers(push: PushTrigger(branches: [.everything], tags: []), manual: true))
        #expect(pipeline.concurrency == nil)
        #expect(pipeline.jobs == [Job(name: "lint", run: "make lint", timeoutMs: 1_800_000)])
        #expect(pipeline.jobs[0].failFast && !pipeline.jobs[0].continueOnError && pipeline.jobs[0].maxParallel == nil)
    }

    @Test("a push trigger naming only tags runs on no branch; `patch:` and `manual:` alone turn those on")
    func triggerForms() throws {
        let pipeline = try Pipeline(
            yaml: "version: 1\ntriggers:\n  push:\n    tags: [\"v*\"]\n  patch:\n  manual:\njobs:\n  a: {run: x}\n")
        #expect(pipeline.triggers.push == PushTrigger(branches: [], tags: [try glob("v*")]))
        #expect(pipeline.triggers.patch == PatchTrigger())
        #expect(pipeline.triggers.manual)
    }

    @Test("block scalars, durations, paths with a trailing slash, numbers as environment values")
    func fieldForms() throws {
        let yaml = pipelineFile(
            jobs: """
                  build:
                    run: |
                      swift build
                      swift test
                    timeout: 1h30m
                    artifacts: [out/]
                    env:
                      PORT: 8080
                      QUOTED: "true"
                """)
        let job = try #require(try Pipeline(yaml: yaml).jobs.first)
        #expect(job.run == "swift build\nswift test\n")
        #expect(job.timeoutMs == 5_400_000)
        #expect(job.artifacts == ["out"])
        #expect(job.env == ["PORT": "8080", "QUOTED": "true"])
    }

    @Test("an unknown key is refused at its place, listing the keys allowed there")
    func unknownKey() {
        let error = parseError(pipelineFile(jobs: "  build:\n    rnu: make\n"))
        #expect(
            error?.description
                == "ci.yml:4:5: unknown key 'rnu' in job 'build' (expected one of: run, needs, if, timeout, artifacts, cache, tags, matrix, "
                + "fail_fast, max_parallel, retry, env, secrets, continue_on_error)")
        #expect(error?.code == .unknownKey)
        let top = parseError("version: 1\nstages: []\njobs:\n  a: {run: x}\n")
        #expect(top?.description == "ci.yml:2:1: unknown key 'stages' in the file (expected one of: version, triggers, concurrency, jobs)")
        let trigger = parseError("version: 1\ntriggers:\n  push: {branch: [main]}\njobs:\n  a: {run: x}\n")
        #expect(trigger?.code == .unknownKey)
        #expect((trigger?.line, trigger?.column) == (3, 10))
    }

    @Test("a duplicate key is refused at its second occurrence, naming the first")
    func duplicateKey() {
        let error = parseError(pipelineFile(jobs: "  build:\n    run: make\n    timeout: 5m\n    run: make test\n"))
        #expect(error?.description == "ci.yml:6:5: duplicate key 'run' in jobs.build (first at 4:5)")
        #expect(error?.code == .duplicateKey)
        let job = parseError(pipelineFile(jobs: "  a: {run: x}\n  b: {run: y}\n  a: {run: z}\n"))
        #expect(job?.description == "ci.yml:5:3: duplicate key 'a' in jobs (first at 3:3)")
        // Quoting does not make a key another key.
        let quoted = parseError("version: 1\n\"version\": 1\njobs:\n  a: {run: x}\n")
        #expect((quoted?.code, quoted?.line, quoted?.column) == (.duplicateKey, 2, 1))
    }

    @Test("a value of the wrong type is refused at the value")
    func wrongType() {
        let sequenceForScalar = parseError(pipelineFile(jobs: "  build:\n    run: [make, test]\n"))
        #expect(sequenceForScalar?.description == "ci.yml:4:10: run in job 'build' must be a string, not a sequence")
        let yes = parseError(pipelineFile(jobs: "  build:\n    run: make\n    fail_fast: yes\n"))
        #expect(yes?.description == "ci.yml:5:16: fail_fast in job 'build' must be true or false, not 'yes'")
        let quotedNumber = parseError(pipelineFile(jobs: "  build:\n    run: make\n    max_parallel: \"2\"\n"))
        #expect((quotedNumber?.code, quotedNumber?.line, quotedNumber?.column) == (.wrongType, 5, 19))
        let scalarForList = parseError(pipelineFile(jobs: "  build:\n    run: make\n    needs: lint\n"))
        #expect(scalarForList?.description == "ci.yml:5:12: needs in job 'build' must be a sequence, not a scalar")
        let nullRun = parseError(pipelineFile(jobs: "  build:\n    run:\n"))
        #expect((nullRun?.code, nullRun?.line) == (.wrongType, 4))
        let jobs = parseError("version: 1\njobs: [a, b]\n")
        #expect(jobs?.description == "ci.yml:2:7: jobs must be a mapping, not a sequence")
    }

    @Test("missing run, version other than 1, no jobs")
    func requiredParts() {
        #expect(parseError(pipelineFile(jobs: "  build:\n    timeout: 5m\n"))?.description == "ci.yml:3:3: missing key 'run' in job 'build'")
        #expect(parseError("version: 2\njobs:\n  a: {run: x}\n")?.description == "ci.yml:1:10: version must be 1, not 2")
        #expect(parseError("jobs:\n  a: {run: x}\n")?.code == .missingKey)
        #expect(parseError("version: 1\njobs: {}\n")?.description == "ci.yml:2:7: jobs must define at least one job")
        #expect(parseError("")?.code == .missingKey)
        #expect(parseError("# only a comment\n")?.code == .missingKey)
        #expect(parseError("just text")?.code == .wrongType)
    }

    @Test("job names: a safe set of characters, bounded length")
    func jobNames() {
        #expect(parseError(pipelineFile(jobs: "  unit-tests_2.x: {run: x}\n")) == nil)
        let spaced = parseError(pipelineFile(jobs: "  \"two words\": {run: x}\n"))
        #expect((spaced?.code, spaced?.line, spaced?.column) == (.invalidValue, 3, 3))
        #expect(parseError(pipelineFile(jobs: "  -lead: {run: x}\n"))?.code == .invalidValue)
        let long = String(repeating: "a", count: 65)
        #expect(parseError(pipelineFile(jobs: "  \(long): {run: x}\n"))?.code == .overLimit)
    }

    @Test("durations: units required, above zero, at most 24 hours")
    func durations() {
        func timeoutError(_ text: String) -> PipelineError? { parseError(pipelineFile(jobs: "  a:\n    run: x\n    timeout: \(text)\n")) }
        #expect(timeoutError("30s") == nil)
        #expect(timeoutError("24h") == nil)
        #expect(timeoutError("30")?.description == "ci.yml:5:14: timeout in job 'a' must be a duration such as 30s, 20m, 2h or 1h30m, not '30'")
        #expect(timeoutError("25h")?.code == .overLimit)
        #expect(timeoutError("0s")?.code == .overLimit)
        #expect(timeoutError("30m2h")?.code == .invalidValue)
        #expect(timeoutError("1.5h")?.code == .invalidValue)
        #expect(CIDuration.parseMs("2h") == 7_200_000)
        #expect(CIDuration.parseMs("1h1m1s") == 3_661_000)
        #expect(CIDuration.parseMs("9999999999s") == nil)
    }

    @Test("an oversize file is refused before it is parsed, naming the bound")
    func oversize() {
        var limits = Limits()
        limits.ciPipelineFileBytesMax = 64
        let error = parseError(examplePipeline, limits: limits)
        #expect(error?.description == "ci.yml: the file is \(examplePipeline.utf8.count) bytes, over ciPipelineFileBytesMax (64)")
        #expect(error?.code == .overLimit)
        let big = "version: 1\njobs:\n  a:\n    run: x\n" + String(repeating: "# padding\n", count: 110_000)
        #expect(parseError(big)?.code == .overLimit)
    }

    @Test("matrix bounds: axes, values, the safe characters of values, no value twice")
    func matrixBounds() {
        var limits = Limits()
        limits.ciMatrixAxesMax = 2
        limits.ciMatrixValuesMax = 3
        let axes = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: [1], b: [2], c: [3]}\n"), limits: limits)
        #expect((axes?.code, axes?.line, axes?.column) == (.overLimit, 5, 5))
        let values = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: [1, 2, 3, 4]}\n"), limits: limits)
        #expect((values?.code, values?.line, values?.column) == (.overLimit, 5, 17))
        // Two axes whose values would land in one ASPEN_CI_MATRIX_ variable.
        let shared = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {os-name: [a], os_name: [b]}\n"))
        #expect(shared?.code == .invalidValue && shared?.message.contains("ASPEN_CI_MATRIX_OS_NAME") == true, "\(String(describing: shared))")
        let shell = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: [ok, \"$(rm -rf /)\"]}\n"))
        #expect((shell?.code, shell?.line, shell?.column) == (.invalidValue, 5, 22))
        let twice = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: [x, y, x]}\n"))
        #expect((twice?.code, twice?.line, twice?.column) == (.invalidValue, 5, 24))
        let empty = parseError(pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: []}\n"))
        #expect(empty?.code == .invalidValue)
    }

    @Test("more jobs than ciJobsPerPipelineMax after matrix expansion are refused at the job that passes the bound")
    func expansionBound() {
        var limits = Limits()
        limits.ciJobsPerPipelineMax = 9
        let yaml = pipelineFile(jobs: "  a: {run: x}\n  t:\n    run: x\n    matrix: {os: [l, m, w], v: [1, 2, 3]}\n")
        let error = parseError(yaml, limits: limits)
        #expect(error?.description == "ci.yml:4:3: job 't' expands to 9 jobs, which brings the pipeline over ciJobsPerPipelineMax (9)")
        let huge = pipelineFile(jobs: "  t:\n    run: x\n    matrix: {a: [1, 2, 3, 4, 5, 6, 7, 8], b: [1, 2, 3, 4, 5, 6, 7, 8], c: [1, 2, 3, 4, 5, 6, 7, 8]}\n")
        #expect(parseError(huge)?.description == "ci.yml:3:3: job 't' expands to more than 256 jobs, which brings the pipeline over ciJobsPerPipelineMax (256)")
    }

    @Test("a bad interpolation is refused at the value that holds it, naming it")
    func badInterpolation() {
        let unknown = parseError(pipelineFile(jobs: "  a:\n    run: echo ${foo}\n"))
        #expect(unknown?.line == 4 && unknown?.column == 10)
        #expect(unknown?.message.hasPrefix("unknown interpolation '${foo}'") == true)
        let unterminated = parseError(pipelineFile(jobs: "  a:\n    run: x\n    env: {A: \"${ref\"}\n"))
        #expect((unterminated?.code, unterminated?.line, unterminated?.column) == (.interpolation, 5, 14))
        let axis = parseError(pipelineFile(jobs: "  a:\n    run: echo ${matrix.os}\n"))
        #expect(axis?.description == "ci.yml:4:10: ${matrix.os} in run names no axis (there is no matrix here)")
        let group = parseError("version: 1\nconcurrency: {group: \"${matrix.x}\"}\njobs:\n  a: {run: x}\n")
        #expect((group?.code, group?.line, group?.column) == (.interpolation, 2, 22))
        let escape = parseError(pipelineFile(jobs: "  a:\n    run: echo $${HOME} $PATH\n"))
        #expect(escape == nil)
    }

    @Test("a bad condition is refused at the `if`")
    func badCondition() {
        let error = parseError(pipelineFile(jobs: "  a:\n    run: x\n    if: ref = \"main\"\n"))
        #expect((error?.code, error?.line, error?.column) == (.condition, 5, 9))
    }

    @Test("needs naming no job are refused at the entry")
    func unknownNeed() {
        let error = parseError(pipelineFile(jobs: "  build: {run: x}\n  test:\n    run: y\n    needs: [build, tset]\n"))
        #expect(error?.description == "ci.yml:6:20: job 'test' needs 'tset', which is not a job (jobs: build, test)")
        #expect(error?.code == .unknownNeed)
    }

    @Test("a cycle of needs is refused at the entry that closes it, naming the cycle")
    func cycle() {
        let yaml = pipelineFile(
            jobs: """
                  a:
                    run: x
                    needs: [c]
                  b:
                    run: x
                    needs: [a]
                  c:
                    run: x
                    needs: [b]
                """)
        let error = parseError(yaml)
        #expect(error?.description == "ci.yml:8:13: needs form a cycle: a → c → b → a")
        #expect(error?.code == .cycle)
        let selfNeed = parseError(pipelineFile(jobs: "  a: {run: x, needs: [a]}\n"))
        #expect(selfNeed?.description == "ci.yml:3:23: needs form a cycle: a → a")
    }

    @Test("other bounds and checks of job fields")
    func fieldChecks() {
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, artifacts: [/etc/passwd]}\n"))?.code == .invalidValue)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, artifacts: [../up]}\n"))?.code == .invalidValue)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, secrets: [A, A]}\n"))?.column == 28)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, env: {1A: b}}\n"))?.code == .invalidValue)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, retry: {max: 11}}\n"))?.code == .invalidValue)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, retry: {max: 1, on_exit: [0]}}\n"))?.code == .invalidValue)
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, cache: {key: k}}\n"))?.description == "ci.yml:3:15: missing key 'paths' in cache in job 'a'")
        #expect(parseError(pipelineFile(jobs: "  a: {run: x, max_parallel: 0}\n"))?.code == .invalidValue)
        #expect(parseError("version: 1\ntriggers: {push: {branches: [\"a//b\"]}}\njobs:\n  a: {run: x}\n")?.column == 30)
    }
}
