import AspenCore

/// How a job of a run ended (or that it has not).
public enum JobOutcome: String, Sendable, CaseIterable {
    case success
    case failure
    /// Not run: a job it needs did not succeed, its `if` was false, or its paths were ignored.
    case skipped
    case cancelled

    /// Whether jobs that need this one may go on as after a success: a success, or a failure
    /// of a job marked `continue_on_error`.
    func letsDependentsRun(_ job: Job?) -> Bool {
        self == .success || (self == .failure && job?.continueOnError == true)
    }
}

/// Whether a job whose needs have all ended runs.
public enum JobDecision: Sendable, Equatable {
    case run
    case skip(reason: String)
}

extension Pipeline {
    /// Decides a planned job once every job it needs has ended (`ended` holds their outcomes by
    /// planned name). The same rule for a run on the cluster and `aspen ci run --local`: the
    /// run's status is `failure` if a needed job failed (unless it may fail) or was skipped,
    /// `cancelled` if one was cancelled. A job runs on `success` when its `if` (if any) holds;
    /// an `if` that looks at `status` decides alone (`if: status == "failure"` runs after a
    /// failure), so that `if: ref == "refs/heads/main"` never deploys after failed tests.
    public func decide(_ planned: PlannedJob, ended: [String: JobOutcome], ref: String, event: TriggerKind) -> JobDecision {
        var failed: String?
        var cancelled: String?
        var skipped: String?
        for need in planned.needs {
            let outcome = ended[need] ?? .cancelled
            let neededJob = plan.first { $0.name == need }.flatMap { job(named: $0.jobName) }
            if outcome.letsDependentsRun(neededJob) { continue }
            switch outcome {
            case .failure: failed = failed ?? need
            case .cancelled: cancelled = cancelled ?? need
            case .skipped: skipped = skipped ?? need
            case .success: break
            }
        }
        // A failure outranks the cancellations it caused (a failed expansion cancels its
        // siblings under fail_fast); a skipped need is neither.
        let status: RunStatus = failed != nil ? .failure : cancelled != nil ? .cancelled : .success
        let condition = job(named: planned.jobName)?.condition
        if let condition, condition.looksAtStatus || (status == .success && skipped == nil) {
            return condition.evaluate(in: ConditionContext(ref: ref, event: event, status: status)) ? .run : .skip(reason: "its condition (\(condition)) is false")
        }
        if let failed { return .skip(reason: "'\(failed)' did not succeed") }
        if let cancelled { return .skip(reason: "'\(cancelled)' was cancelled") }
        if let skipped { return .skip(reason: "'\(skipped)' was skipped") }
        return .run
    }
}

extension Condition {
    /// Whether the condition compares `status` anywhere.
    var looksAtStatus: Bool {
        switch self {
        case .constant: false
        case .compare(let field, _, _): field == .status
        case .all(let conditions), .any(let conditions): conditions.contains { $0.looksAtStatus }
        }
    }
}
