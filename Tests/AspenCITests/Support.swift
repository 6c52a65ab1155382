import AspenCI
import AspenCore

/// The example of the pipeline format's documentation, line for line.
let examplePipeline = """
    version: 1
    triggers:
      push: { branches: [main, "release/*"], tags: ["v*"], paths: ["src/**"], paths_ignore: ["docs/**"] }
      patch: {}                                  # refs/for/* pushes: untrusted, no secrets
    concurrency: { group: "${ref}", cancel_in_progress: true }
    jobs:
      build:  { run: swift build -c release, timeout: 20m, artifacts: [.build/release/app], cache: { key: "spm-${hash:Package.resolved}", paths: [.build] }, tags: [linux] }
      test:   { needs: [build], matrix: { config: [debug, release] }, fail_fast: true, max_parallel: 2, run: "swift test -c ${matrix.config}", retry: { max: 2, on_exit: [137] }, env: { A: b } }
      deploy: { needs: [test], if: ref == "refs/heads/main", secrets: [DEPLOY_TOKEN], continue_on_error: false, run: ./deploy.sh }
    """

/// The error a file is refused with, or nil if it parses.
func parseError(_ yaml: String, limits: Limits = .standard) -> PipelineError? {
    do {
        _ = try Pipeline(yaml: yaml, limits: limits)
        return nil
    } catch {
        return error
    }
}

/// A file with `body` as its `jobs` section (indented by the caller).
func pipelineFile(jobs body: String) -> String {
    "version: 1\njobs:\n" + body
}

func glob(_ pattern: String) throws -> Glob { try Glob(pattern) }
