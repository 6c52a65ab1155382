import AspenCI
import AspenCore

/// CI pipeline files and stored pipelines: the strict YAML reading (a libyaml pre-pass, then
/// Yams) and the binary form a run keeps.
extension FuzzTarget {
    static let ciTargets: [FuzzTarget] = [ciPipeline]

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
