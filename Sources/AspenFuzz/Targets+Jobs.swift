import AspenCore
import AspenJobs
import Foundation

/// What users type for jobs and pub/sub (cron expressions, subjects) and the job system's wire
/// and stored forms.
extension FuzzTarget {
    static let jobTargets: [FuzzTarget] = [cronAndSubject, jobSpec, jobWire]

    static let jobSpec = FuzzTarget(
        name: "job-spec", summary: "JobSpec(decoding:): a job's stored request",
        seeds: {
            [
                JobSpec(
                    type: "shell", command: ["./build.sh", "--release"], priority: .high, maxAttempts: 5, timeoutMs: 600_000,
                    idempotencyKey: "build-42", dependsOn: [7, 9], onDependencyFailure: .continue, runAtMs: 5,
                    requiredTags: ["gpu": "true", "region": "eu"], preferNode: 2, avoidNode: 3, nearBlob: Array(repeating: 1, count: 32)
                ).encoded,
                JobSpec(type: "resize", payload: [1, 2, 3], backoff: .none).encoded,
            ]
        }
    ) { input in
        FuzzCheck.roundTrip(
            input, decode: { try JobSpec(decoding: $0) }, encode: { $0.encoded },
            bounds: { spec in
                let limits = Limits.standard
                if spec.dependsOn.count > limits.jobDependenciesMax { return "\(spec.dependsOn.count) dependencies" }
                if spec.requiredTags.count > limits.jobTagsMax { return "\(spec.requiredTags.count) tags" }
                if spec.payload.count > limits.jobPayloadBytesMax { return "a payload of \(spec.payload.count) bytes" }
                return nil
            })
    }

    static let cronAndSubject = FuzzTarget(
        name: "cron-subject",
        summary: "CronSchedule(_:) with its next fire time, SubjectPattern(_:) with validate(subject:) and matching, JobBackoff(parsing:)",
        seeds: {
            let crons = ["*/5 * * * *", "0 30 2 * * MON-FRI", "@hourly", "0 0 13 * FRI", "15,45 8-9 1/3 JAN-MAR,DEC 0-7/2"]
            let subjects = ["orders.eu.created", "orders.*.created", "orders.>", ">", "a.b.c.d.e"]
            let backoffs = ["exp:1s,x2,max:5m", "fixed:250ms", "none", "exp:7d"]
            return selected(0, crons.map { Array($0.utf8) }) + selected(1, subjects.map { Array($0.utf8) })
                + selected(2, backoffs.map { Array($0.utf8) })
        }
    ) { input in
        let start = Date(timeIntervalSince1970: 1_796_000_000)
        return FuzzCheck.select(input, [
            { bytes in
                let text = String(decoding: bytes, as: UTF8.self)
                let schedule: CronSchedule
                do {
                    schedule = try CronSchedule(text)
                } catch {
                    return .rejected(shape: FuzzCheck.shape(of: error))
                }
                if let next = schedule.nextFire(after: start), next <= start {
                    return .failed("\(text): the next fire \(next) is not after \(start)")
                }
                return .decoded
            },
            { bytes in
                let text = String(decoding: bytes, as: UTF8.self)
                let pattern: SubjectPattern
                do {
                    pattern = try SubjectPattern(text)
                } catch {
                    return .rejected(shape: FuzzCheck.shape(of: error))
                }
                // A pattern without wildcards is a subject, and selects exactly itself.
                if (try? SubjectPattern.validate(subject: text)) != nil {
                    guard pattern.matches(text), !pattern.matches(text + ".x") else {
                        return .failed("the subject \(text) does not select exactly itself")
                    }
                }
                return .decoded
            },
            { bytes in
                FuzzCheck.roundTrip(
                    bytes, decode: { try JobBackoff(parsing: String(decoding: $0, as: UTF8.self)) }, encode: { Array($0.description.utf8) })
            },
        ])
    }

    static let jobWire = FuzzTarget(
        name: "job-wire",
        summary:
            "JobCall(decoding:), JobAnswer(decoding:), JobRecord(decoding:), CronRecord(decoding:), JobOutputArchive.decode: what a node reads from clients, its store and its blobs",
        seeds: {
            let spec = JobSpec(type: "shell", command: ["./build.sh"], idempotencyKey: "k", dependsOn: [3], requiredTags: ["gpu": "true"])
            var record = JobRecord(id: 7, spec: spec, state: .running, submittedAtMs: 1, readyAtMs: 2, origin: "cron:n")
            record.attempts = 1
            record.attempt = JobAttempt(number: 1, token: 0xABCD, worker: "w", node: 2, startedAtMs: 3, leaseExpiresAtMs: 4)
            record.lastError = "boom"
            let schedule = CronRecord(name: "n", expression: "*/5 * * * *", timeZone: "Europe/Paris", spec: spec, catchUp: .all, overlap: .queue)
            let calls: [JobCall] = [
                .submit(spec), .job(7), .history(7), .list(state: .dead, type: "shell", after: 3, limit: 10),
                .claim(WorkerInfo(name: "w", node: 1, types: ["shell"], tags: ["a": "b"]), leaseMs: 30_000, waitMs: 5000),
                .claim(WorkerInfo(name: "w", node: 1, types: ["shell"]), leaseMs: 30_000, waitMs: 0, max: 16),
                .renew(7, type: "shell", token: 9, leaseMs: 1000), .finish(7, type: "shell", token: 9, outcome: .succeeded(result: [1]), exitCode: 0),
                .finish(7, type: "shell", token: 9, outcome: .failed(message: "m", retryable: false), exitCode: nil), .cancel(7),
                .retry(7, deadOnly: true), .scheduleCreate(schedule, replace: true), .schedules, .schedulePause("n", paused: true),
                .scheduleHistory("n", limit: 5), .scheduleRemove("n"),
                .appendOutput(7, type: "shell", token: 9, chunk: JobOutputChunk(offset: 3, isError: true, bytes: [1, 2])),
                .output(7, attempt: 2, from: 3), .output(7, attempt: nil, from: 0),
                .sagaStart(name: "s", steps: [SagaStep(name: "a", run: ["a"], compensate: ["b"]), SagaStep(name: "c", run: ["c"])], type: "shell", maxAttempts: 2),
                .saga(4), .publish([TopicMessage(subject: "orders.eu", payload: [1], headers: ["k": "v"], messageID: "m")]),
                .read(pattern: "orders.>", from: 3, limit: 10), .read(pattern: nil, from: 0, limit: 1),
                .retentionSet(TopicRetention(pattern: "logs.>", maxAgeMs: 5, maxMessages: 6)), .retentions,
                .groupCreate(ConsumerGroup(name: "g", pattern: "work.>", ackWaitMs: 2000, maxPending: 100), from: nil),
                .groupCreate(ConsumerGroup(name: "g", pattern: ">"), from: 7), .fetch(group: "g", consumer: "c", max: 16, waitMs: 1000),
                .settle(group: "g", cursor: 3, receipt: 9, action: .ack), .settle(group: "g", cursor: 3, receipt: 9, action: .nak(delayMs: 5)),
                .settle(group: "g", cursor: 3, receipt: 9, action: .extend), .groupStatus("g"),
                .finishMany([
                    JobReport(id: 7, type: "shell", token: 9, outcome: .succeeded(result: [1]), exitCode: 0),
                    JobReport(id: 8, type: "gpu", token: 10, outcome: .failed(message: "m", retryable: true), exitCode: nil),
                ]),
            ]
            let answers: [JobAnswer] = [
                .submitted(id: 7, created: true), .job(record), .claimed(nil), .claimed(record), .jobs([record, record]),
                .history([JobHistoryEntry(atMs: 1, state: .dead, attempt: 1, token: 2, worker: "w", node: 3, exitCode: 1, message: "m")]),
                .schedules([schedule]), .ticks([CronTick(tickMs: 5, job: 7, message: "fired")]), .done,
                .output(attempt: 2, chunks: [JobOutputChunk(offset: 0, isError: false, bytes: [1])]), .published([1, 2]),
                .page(TopicPage(messages: [TopicMessage(subject: "a.b", payload: [2])], next: 3, oldest: 1, last: 2, revision: 9)),
                .retentions([TopicRetention(pattern: ">", maxMessages: 3)]), .group(ConsumerGroup(name: "g", pattern: ">")),
                .deliveries([GroupDelivery(message: TopicMessage(subject: "a", payload: [1]), receipt: 5, deliveries: 2)]),
                .groupStatus(ConsumerGroup(name: "g", pattern: ">"), pending: 3, dead: [1, 2]),
                .reported([nil, .staleAttempt(job: 1, token: 2, reason: "r")]),
            ]
            return selected(0, calls.map(\.encoded)) + selected(1, answers.map(\.encoded)) + selected(2, [record.encoded])
                + selected(3, [schedule.encoded])
                + selected(
                    4,
                    [
                        JobOutputArchive.encode([
                            JobOutputChunk(offset: 0, isError: false, bytes: [1, 2]), JobOutputChunk(offset: 2, isError: true, bytes: [3]),
                        ])
                    ])
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try JobCall(decoding: $0) }, encode: { $0.encoded }) },
            { FuzzCheck.roundTrip($0, decode: { try JobAnswer(decoding: $0) }, encode: { $0.encoded }) },
            { FuzzCheck.roundTrip($0, decode: { try JobRecord(decoding: $0) }, encode: { $0.encoded }) },
            { FuzzCheck.roundTrip($0, decode: { try CronRecord(decoding: $0) }, encode: { $0.encoded }) },
            { FuzzCheck.roundTrip($0, decode: { try JobOutputArchive.decode($0, limits: .standard) }, encode: { JobOutputArchive.encode($0) }) },
        ])
    }
}
