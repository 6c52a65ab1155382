import AspenClient
import AspenCore
import AspenJobs
import AspenWorker
import Foundation
import Logging
import Synchronization

/// `aspen bench job` and `aspen bench job-latency`: the job system end to end on a running
/// cluster. Jobs are of a type of their own, run by workers in this process whose handler does
/// nothing, so what is measured is the job system: submit, claim, renew, report.
enum JobBench {
    /// A count shared by tasks.
    final class Tally: Sendable {
        private let value = Atomic<Int>(0)
        var count: Int { value.load(ordering: .relaxed) }
        func add() { value.add(1, ordering: .relaxed) }
    }

    /// Values and error counts recorded by several tasks.
    final class Samples: Sendable {
        let values = Mutex<[Double]>([])
        let errors = Mutex<[String: Int]>([:])
    }

    /// Start instants of jobs, and submitters waiting for theirs.
    final class Starts: Sendable {
        enum Entry {
            case started(ContinuousClock.Instant)
            case waiting(CheckedContinuation<ContinuousClock.Instant, Never>)
        }
        private let entries = Mutex<[UInt64: Entry]>([:])

        func started(_ id: UInt64, at instant: ContinuousClock.Instant) {
            let waiter: CheckedContinuation<ContinuousClock.Instant, Never>? = entries.withLock { entries in
                if case .waiting(let continuation) = entries.removeValue(forKey: id) { return continuation }
                entries[id] = .started(instant)
                return nil
            }
            waiter?.resume(returning: instant)
        }

        /// When job `id` started (waiting for it), forgetting it.
        func start(of id: UInt64) async -> ContinuousClock.Instant {
            await withCheckedContinuation { continuation in
                let instant: ContinuousClock.Instant? = entries.withLock { entries in
                    if case .started(let instant) = entries.removeValue(forKey: id) { return instant }
                    entries[id] = .waiting(continuation)
                    return nil
                }
                if let instant { continuation.resume(returning: instant) }
            }
        }

        /// When job `id` started, if it has, forgetting it.
        func take(_ id: UInt64) -> ContinuousClock.Instant? {
            entries.withLock { entries in
                guard case .started(let instant) = entries[id] else { return nil }
                entries[id] = nil
                return instant
            }
        }
    }

    /// Throughput (`idle` false): `clients` submitters, at most `backlogMax` jobs outstanding,
    /// and a worker with `workers` claim loops; jobs finished per second. Idle latency (`idle`):
    /// one job at a time; submit-to-start, measured on this machine's clock.
    static func run(client: AspenClient, clients: Int, workers: Int, seconds: Double, idle: Bool, json: Bool) async throws {
        let type = "bench-\(UInt32.random(in: 0...UInt32.max))"
        let clock = ContinuousClock()
        let starts = Starts()
        func micros(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
        }
        var logger = Logger(label: "aspen.bench")
        logger.logLevel = .warning
        let worker = JobWorker(
            calls: client,
            options: JobWorkerOptions(name: "bench-\(getpid())", types: [type], concurrency: idle ? 1 : workers, leaseMs: 30_000, claimWaitMs: 1000),
            handlers: [
                type: { job in
                    starts.started(job.id, at: clock.now)
                    return []
                }
            ],
            logger: logger)
        let working = Task { await worker.run() }
        let samples = Samples()
        let submitted = Tally()
        let begin = clock.now
        let deadline = begin + .milliseconds(Int64(seconds * 1000))
        let backlogMax = 2000
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<(idle ? 1 : clients) {
                group.addTask {
                    while clock.now < deadline {
                        if !idle, submitted.count - worker.finished.succeeded > backlogMax {
                            try? await Task.sleep(for: .milliseconds(2))
                            continue
                        }
                        let before = clock.now
                        do {
                            let (id, _) = try await client.submitJob(
                                JobSpec(type: type, maxAttempts: 1, idempotencyKey: "bench:\(UInt64.random(in: 1...UInt64.max))"))
                            submitted.add()
                            if idle {
                                let start = await starts.start(of: id)
                                samples.values.withLock { $0.append(micros(start - before)) }
                            } else if let start = starts.take(id) {
                                samples.values.withLock { $0.append(micros(start - before)) }
                            }
                        } catch {
                            samples.errors.withLock { $0["\(error)".prefix(60).description, default: 0] += 1 }
                        }
                    }
                }
            }
        }
        // The backlog drains (bounded) before the clock stops: the figure is of jobs run.
        let drainUntil = clock.now + .seconds(30)
        while worker.finished.succeeded < submitted.count, clock.now < drainUntil {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let wall = micros(clock.now - begin) / 1e6
        working.cancel()
        await working.value
        let done = worker.finished.succeeded
        let sorted = samples.values.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let name = idle ? "job-latency" : "job"
        let object: [String: Any] = [
            "workload": name, "clients": idle ? 1 : clients, "workers": idle ? 1 : workers, "seconds": wall, "jobs": done,
            "jobsPerSecond": Double(done) / wall, "startP50Us": percentile(0.5), "startP99Us": percentile(0.99),
            "startMaxUs": sorted.last ?? 0, "startSamples": sorted.count, "errors": samples.errors.withLock { $0 },
            "submitted": submitted.count, "failed": worker.finished.failed, "lost": worker.finished.lost,
        ]
        let text = String(
            format: "%@ clients=%d workers=%d jobs=%d jobs/s=%.0f submit-to-start p50=%.0fµs p99=%.0fµs max=%.0fµs errors=%@", name,
            idle ? 1 : clients, idle ? 1 : workers, done, Double(done) / wall, percentile(0.5), percentile(0.99), sorted.last ?? 0,
            "\(samples.errors.withLock { $0 })")
        output(json, object, text: text)
    }
}
