import AspenCore
import AspenKV
import AspenLayer
import Foundation

/// A hook: messages on a subject pattern each run a job (reliably: at least once, with the job
/// system's retries and dead letters). The event reaches a shell job as JSON in `ASPEN_EVENT`.
public struct HookRecord: Sendable, Equatable {
    public var name: String
    public var pattern: String
    /// The job each event runs (its payload becomes the event).
    public var job: JobSpec

    public init(name: String, pattern: String, job: JobSpec) {
        self.name = name
        self.pattern = pattern
        self.job = job
    }

    /// The consumer group that holds the hook's place in the stream.
    public var group: String { "hook:\(name)" }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeString(name)
        writer.writeString(pattern)
        writer.writeBytes(job.encoded)
        return writer.bytes
    }

    init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        name = try reader.readString(limit: limits.jobNameBytesMax)
        pattern = try reader.readString(limit: limits.subjectBytesMax)
        job = try JobSpec(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits)), limits: limits)
        try reader.expectEnd()
    }
}

/// A hook with how far behind it is.
public struct HookStatus: Sendable, Equatable {
    public var hook: HookRecord
    /// The next stream cursor it has not looked at, events delivered but not yet turned into
    /// jobs, and events it gave up on.
    public var next: UInt64
    public var pending: Int
    public var dead: Int

    public init(hook: HookRecord, next: UInt64, pending: Int, dead: Int) {
        self.hook = hook
        self.next = next
        self.pending = pending
        self.dead = dead
    }
}

extension JobStore {
    func hookKey(_ name: String) -> Bytes { space.pack(["hook", .string(name)]) }

    /// Creates a hook that runs `job` for every message published on `pattern` from now on.
    public func createHook(_ hook: HookRecord) async throws -> HookRecord {
        guard let topics else { throw JobError.invalid("this store has no message stream") }
        try validateName(hook.name, "a hook name")
        var template = hook.job
        template.idempotencyKey = nil
        template.runAtMs = nil
        template.payload = []
        do throws(JobPolicyError) {
            try template.validate(limits: limits)
        } catch {
            throw JobError.invalid(error.description)
        }
        guard template.dependsOn.isEmpty else { throw JobError.invalid("a hook's job cannot depend on other jobs") }
        var made = hook
        made.job = template
        _ = try await topics.createGroup(ConsumerGroup(name: made.group, pattern: made.pattern, ackWaitMs: 60_000, maxDeliveries: 10), from: nil)
        let outcome = try await store.transaction(
            Transaction(compares: [.absent(hookKey(made.name))], success: [.put(Put(key: hookKey(made.name), value: made.encoded))]))
        guard outcome.succeeded else { throw JobError.invalid("a hook named \(made.name) exists (aspen hook rm first)") }
        return made
    }

    public func hooks() async throws -> [HookStatus] {
        guard let topics else { return [] }
        let all = space.subspace(["hook"])
        var statuses: [HookStatus] = []
        for kv in try await store.scan(.range(start: all.range.start, end: all.range.end), limit: 1000).kvs {
            let hook = try HookRecord(decoding: kv.value, limits: limits)
            let (group, pending, dead) = try await topics.groupStatus(hook.group)
            statuses.append(HookStatus(hook: hook, next: group.next, pending: pending, dead: dead.count))
        }
        return statuses
    }

    public func removeHook(_ name: String) async throws {
        guard try await store.get(hookKey(name)) != nil else { throw JobError.invalid("no hook named \(name)") }
        _ = try await store.delete(hookKey(name))
    }

    /// Turns the hooks' new events into jobs: each event's job has the idempotency key
    /// `hook:NAME:CURSOR`, so an event whose acknowledgement was lost (a leader died between)
    /// and that is delivered again makes no second job.
    func runHooks() async throws -> Int {
        guard let topics else { return 0 }
        let all = space.subspace(["hook"])
        var made = 0
        for kv in try await store.scan(.range(start: all.range.start, end: all.range.end), limit: 1000, consistency: .stale).kvs {
            let hook = try HookRecord(decoding: kv.value, limits: limits)
            let deliveries = try await topics.fetch(
                group: hook.group, consumer: "manager", max: 100, waitMs: 0, random: { UInt64.random(in: 1...UInt64.max) })
            for delivery in deliveries {
                var spec = hook.job
                spec.idempotencyKey = "hook:\(hook.name):\(delivery.message.cursor)"
                spec.payload = Self.eventJSON(delivery.message)
                if spec.payload.count > limits.jobPayloadBytesMax { spec.payload = [] }
                let (_, created) = try await submit(spec, origin: "hook:\(hook.name)")
                if created { made += 1 }
                try await topics.settle(group: hook.group, cursor: delivery.message.cursor, receipt: delivery.receipt, action: .ack)
            }
        }
        return made
    }

    /// An event as its handler sees it.
    static func eventJSON(_ message: TopicMessage) -> [UInt8] {
        let object: [String: Any] = [
            "subject": message.subject, "cursor": message.cursor, "headers": message.headers, "published_ms": message.publishedAtMs,
            "data": String(decoding: message.payload, as: UTF8.self),
        ]
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }
}
