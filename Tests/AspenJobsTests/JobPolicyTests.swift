import AspenCore
import AspenJobs
import Testing

@Suite("Job policies")
struct JobPolicyTests {
    @Test("durations read and print back; bad ones are refused with the reason")
    func durations() throws {
        let table: [(String, Int64)] = [("250ms", 250), ("0s", 0), ("30s", 30_000), ("10m", 600_000), ("2h", 7_200_000), ("7d", 604_800_000)]
        for (text, ms) in table {
            #expect(try JobDuration.parseMs(text) == ms, "\(text)")
            #expect(try JobDuration.parseMs(JobDuration.format(ms: ms)) == ms)
        }
        for bad in ["", "s", "10", "1.5s", "-1s", "10 s", "3w", "366d", "١٠s"] {
            #expect(throws: JobPolicyError.self, "\(bad)") { try JobDuration.parseMs(bad) }
        }
    }

    @Test("backoffs parse, print back, grow by their factor up to their maximum, and jitter within [half, whole]")
    func backoff() throws {
        let policy = try JobBackoff(parsing: "exp:1s,x2,max:5m")
        #expect(policy == .exponential(initialMs: 1000, factor: 2, maxMs: 300_000))
        #expect(try JobBackoff(parsing: policy.description) == policy)
        #expect((1...12).map { policy.baseDelayMs(afterFailures: $0) }
            == [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000])
        // No overflow however many failures.
        #expect(try JobBackoff(parsing: "exp:1d,x100,max:365d").baseDelayMs(afterFailures: 1000) == 365 * 86_400_000)
        #expect(try JobBackoff(parsing: "fixed:10s").baseDelayMs(afterFailures: 7) == 10_000)
        #expect(try JobBackoff(parsing: "none").delayMs(afterFailures: 3, unit: 0.9) == 0)
        #expect(try JobBackoff(parsing: "exp:500ms") == .exponential(initialMs: 500, factor: 2, maxMs: 3_600_000))
        #expect(try JobBackoff(parsing: "exp:2h") == .exponential(initialMs: 7_200_000, factor: 2, maxMs: 7_200_000))
        var generator = SplitMix64(seed: 25)
        for failures in 1...10 {
            let base = policy.baseDelayMs(afterFailures: failures)
            for _ in 0..<100 {
                let delay = policy.delayMs(afterFailures: failures, unit: Double(generator.next() >> 11) / Double(1 << 53))
                #expect(delay >= base / 2 && delay <= base, "\(delay) outside [\(base / 2), \(base)]")
            }
        }
        #expect(policy.delayMs(afterFailures: 1, unit: 0) == 500 && policy.delayMs(afterFailures: 1, unit: 0.999_999) == 999)
        for bad in ["exp:", "exp:1s,x0", "exp:1s,x2,max:500ms", "exp:1s,y2", "linear:1s", "fixed:", "exp:0ms"] {
            #expect(throws: JobPolicyError.self, "\(bad)") { try JobBackoff(parsing: bad) }
        }
    }

    @Test("priorities order critical first; a waiting job climbs one step a minute, never past critical")
    func priorities() throws {
        #expect(JobPriority.allCases.sorted() == [.critical, .high, .normal, .low])
        #expect(try JobPriority(parsing: "HIGH") == .high)
        #expect(throws: JobPolicyError.self) { try JobPriority(parsing: "urgent") }
        #expect(JobPriority.low.effectiveRank(waitedMs: 0) == 3)
        #expect(JobPriority.low.effectiveRank(waitedMs: 59_999) == 3)
        #expect(JobPriority.low.effectiveRank(waitedMs: 60_000) == 2)
        #expect(JobPriority.low.effectiveRank(waitedMs: 10 * 60_000) == 0)
        #expect(JobPriority.critical.effectiveRank(waitedMs: .max) == 0)
        #expect(JobPriority.normal.effectiveRank(waitedMs: -5) == 2)
    }
}
