import AspenCI
import AspenCore
import Testing

/// When a job whose needs ended runs: the rule the cluster's runs and `ci run --local` share.
struct JobDecisionTests {
    let pipeline: Pipeline

    init() throws {
        pipeline = try Pipeline(
            yaml: """
                version: 1
                jobs:
                  lint: { run: x, continue_on_error: true }
                  build: { run: x }
                  test: { needs: [build, lint], run: x }
                  cleanup: { needs: [test], if: status == "failure" || status == "cancelled", run: x }
                  release: { needs: [test], if: ref == "refs/heads/main", run: x }
                """)
    }

    func decide(_ name: String, _ ended: [String: JobOutcome], ref: String = "refs/heads/main") -> JobDecision {
        pipeline.decide(pipeline.plan.first { $0.name == name }!, ended: ended, ref: ref, event: .push)
    }

    @Test("needs that succeeded, or failed where failing is allowed, let a job run; any other end skips it")
    func needs() {
        #expect(decide("test", ["build": .success, "lint": .success]) == .run)
        #expect(decide("test", ["build": .success, "lint": .failure]) == .run, "lint may fail")
        #expect(decide("test", ["build": .failure, "lint": .success]) == .skip(reason: "'build' did not succeed"))
        #expect(decide("test", ["build": .skipped, "lint": .success]) == .skip(reason: "'build' was skipped"))
        #expect(decide("test", ["build": .cancelled, "lint": .failure]) == .skip(reason: "'build' was cancelled"))
        // A failure outranks a cancellation (fail_fast cancels a failed expansion's siblings).
        #expect(decide("test", ["build": .failure, "lint": .cancelled]) == .skip(reason: "'build' did not succeed"))
    }

    @Test("an if on the status decides alone (it can run a job after a failure); any other if applies only after success")
    func conditions() {
        #expect(decide("cleanup", ["test": .success]) != .run)
        #expect(decide("cleanup", ["test": .failure]) == .run)
        #expect(decide("cleanup", ["test": .cancelled]) == .run)
        // A need skipped (its own if was false) is not a failure: the failure handler stays out.
        #expect(decide("cleanup", ["test": .skipped]) != .run)
        #expect(decide("release", ["test": .success]) == .run)
        #expect(decide("release", ["test": .success], ref: "refs/heads/dev") != .run)
        // An if that does not look at the status does not run a job after a failure.
        #expect(decide("release", ["test": .failure]) == .skip(reason: "'test' did not succeed"))
    }
}
