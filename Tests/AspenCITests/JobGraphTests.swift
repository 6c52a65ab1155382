import AspenCore
import Testing

@testable import AspenCI

/// Matrix expansion and the order of the plan.
struct JobGraphTests {
    @Test("a matrix expands to the cartesian product, the first axis varying slowest, named by its values")
    func expansionOrderAndNames() throws {
        let yaml = pipelineFile(jobs: "  test:\n    run: make ${matrix.os} ${matrix.config}\n    matrix: {os: [linux, mac], config: [debug, release, size]}\n")
        let plan = try Pipeline(yaml: yaml).plan
        #expect(
            plan.map(\.name) == [
                "test (os=linux, config=debug)", "test (os=linux, config=release)", "test (os=linux, config=size)",
                "test (os=mac, config=debug)", "test (os=mac, config=release)", "test (os=mac, config=size)",
            ])
        #expect(plan[4].matrix == [MatrixBinding(axis: "os", value: "mac"), MatrixBinding(axis: "config", value: "release")])
        #expect(plan.allSatisfy { $0.jobName == "test" && $0.needs.isEmpty })
    }

    @Test("each job comes after the jobs it needs; ties keep file order; needs on a matrix job mean all of it")
    func topologicalOrder() throws {
        let yaml = pipelineFile(
            jobs: """
                  deploy: {run: d, needs: [test, lint]}
                  test: {run: t, needs: [build], matrix: {v: [1, 2]}}
                  lint: {run: l}
                  build: {run: b}
                  docs: {run: o, needs: [build]}
                """)
        let plan = try Pipeline(yaml: yaml).plan
        #expect(plan.map(\.name) == ["lint", "build", "test (v=1)", "test (v=2)", "deploy", "docs"])
        #expect(plan[4].needs == ["lint", "test (v=1)", "test (v=2)"])
        #expect(plan[2].needs == ["build"])
        // The same file gives the same plan.
        #expect(try Pipeline(yaml: yaml).plan == plan)
    }

    @Test("a pipeline built in code is checked like a file, its errors without a place")
    func builtInCode() {
        #expect(throws: PipelineError(.cycle, "needs form a cycle: a → b → a")) {
            try Pipeline(jobs: [Job(name: "a", run: "x", needs: ["b"]), Job(name: "b", run: "y", needs: ["a"])])
        }
        #expect(throws: PipelineError(.unknownNeed, "job 'a' needs 'c', which is not a job (jobs: a)")) {
            try Pipeline(jobs: [Job(name: "a", run: "x", needs: ["c"])])
        }
        #expect(throws: PipelineError(.duplicateKey, "job 'a' is defined twice")) {
            try Pipeline(jobs: [Job(name: "a", run: "x"), Job(name: "a", run: "y")])
        }
        #expect(throws: PipelineError.self) { try Pipeline(jobs: []) }
        #expect(throws: PipelineError.self) { try Pipeline(jobs: [Job(name: "a b", run: "x")]) }
        #expect(throws: PipelineError.self) { try Pipeline(jobs: [Job(name: "a", run: "${nope}")]) }
        #expect(throws: PipelineError.self) { try Pipeline(jobs: [Job(name: "a", run: "x", timeoutMs: 0)]) }
    }

    @Test("a cycle is found wherever it starts, past jobs that are fine")
    func cycleAfterAcyclicPart() {
        let jobs = [
            Job(name: "ok", run: "x"), Job(name: "p", run: "x", needs: ["ok", "q"]), Job(name: "q", run: "x", needs: ["r"]),
            Job(name: "r", run: "x", needs: ["ok", "q"]),
        ]
        #expect(throws: PipelineError(.cycle, "needs form a cycle: q → r → q")) { try Pipeline(jobs: jobs) }
    }
}
