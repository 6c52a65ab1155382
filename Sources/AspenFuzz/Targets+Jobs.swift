import AspenCore
import AspenJobs
import Foundation

/// What users type for jobs and pub/sub: cron expressions and subjects.
extension FuzzTarget {
    static let jobTargets: [FuzzTarget] = [cronAndSubject, jobSpec]

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
}
