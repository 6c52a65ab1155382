import AspenCore
import AspenJobs

extension AspenClient: JobCalling {
    /// Runs a job call on the leader. A submit without an idempotency key gets a random one, so
    /// that a retry after a lost answer returns the job the first attempt made instead of making
    /// a second; other calls that change state are sent again only when fenced or idempotent
    /// (`JobCall.isRepeatable`). Refusals come back as the `JobError` the node raised.
    public func job(_ call: JobCall) async throws -> JobAnswer {
        var call = call
        if case .submit(var spec) = call, spec.idempotencyKey == nil {
            spec.idempotencyKey = "auto:" + String(UInt64.random(in: 1...UInt64.max), radix: 36) + String(UInt64.random(in: 1...UInt64.max), radix: 36)
            call = .submit(spec)
        }
        // A claim names itself too: sent again after a lost answer, it gets the jobs it took.
        if case .claim(let worker, let leaseMs, let waitMs, let max, 0) = call {
            call = .claim(worker, leaseMs: leaseMs, waitMs: waitMs, max: max, claim: UInt64.random(in: 1...UInt64.max))
        }
        let body = try await self.call("job", "call", call.encoded, extraSeconds: Double(call.waitMs) / 1000, repeatable: call.isRepeatable)
        do {
            return try JobAnswer(decoding: body, limits: options.limits)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    /// Submits a job; returns its id, and whether this call made it (false: its idempotency key
    /// named an existing job).
    public func submitJob(_ spec: JobSpec) async throws -> (id: UInt64, created: Bool) {
        guard case .submitted(let id, let created) = try await job(.submit(spec)) else { throw ClientError.malformedResponse("not a submit answer") }
        return (id, created)
    }

    /// A call whose answer is one job.
    public func jobRecord(_ call: JobCall) async throws -> JobRecord {
        guard case .job(let record) = try await job(call) else { throw ClientError.malformedResponse("not a job answer") }
        return record
    }
}
