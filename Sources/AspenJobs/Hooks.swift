import AspenCore
import AspenKV
import AspenLayer
import Foundation

/// A hook: messages on a subject pattern each run a job (reliably: at least once, with the job
/// system's retries and dead letters), or a command on the leader itself (best effort). The
/// event reaches a shell command as JSON in `ASPEN_EVENT`.
public struct HookRecord: Sendable, Equatable {
    public var name: String
    public var pattern: String
    /// The job each event runs (its payload becomes the event); in process, its command.
    public var job: JobSpec
    /// Set: the command runs on the leader for each event, not as a job.
    public var inProcess: InProcessHook?

    public init(name: String, pattern: String, job: JobSpec, inProcess: InProcessHook? = nil) {
        self.name = name
        self.pattern = pattern
        self.job = job
        self.inProcess = inProcess
    }

    /// The consumer group that holds the hook's place in the stream.
    public var group: String { "hook:\(name)" }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeString(name)
        writer.writeString(pattern)
        writer.writeBytes(job.encoded)
        if let inProcess {
            writer.write(UInt8(1))
            writer.writeVarint(UInt64(inProcess.timeoutMs))
            writer.writeVarint(UInt64(inProcess.concurrency))
        }
        return writer.bytes
    }

    init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        name = try reader.readString(limit: limits.jobNameBytesMax)
        pattern = try reader.readString(limit: limits.subjectBytesMax)
        job = try JobSpec(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits)), limits: limits)
        if !reader.isAtEnd {
            let tag = try reader.readByte()
            guard tag == 1 else { throw .unknownTag(tag, context: "a hook's handler") }
            let timeoutMs = try reader.readVarint()
            let concurrency = try reader.readVarint()
            guard timeoutMs <= UInt64(InProcessHook.timeoutMsMax), (1...UInt64(InProcessHook.concurrencyMax)).contains(concurrency) else {
                throw .invalid("an in-process hook's timeout or concurrency out of bounds")
            }
            inProcess = InProcessHook(timeoutMs: Int64(timeoutMs), concurrency: Int(concurrency))
        }
        try reader.expectEnd()
    }
}

/// How a hook runs its command in process: on the leader, at most `concurrency` at once (an
/// event arriving when all are busy is dropped and counted), each stopped after `timeoutMs`.
/// Nothing is retried: a failure is counted and logged.
public struct InProcessHook: Sendable, Equatable {
    public var timeoutMs: Int64
    public var concurrency: Int
    public static let timeoutMsMax: Int64 = 3_600_000
    public static let concurrencyMax = 64

    public init(timeoutMs: Int64 = 30_000, concurrency: Int = 4) {
        self.timeoutMs = timeoutMs
        self.concurrency = concurrency
    }

    public func validate() throws(JobError) {
        guard (1...Self.concurrencyMax).contains(concurrency) else {
            throw JobError.invalid("an in-process hook's concurrency is 1 to \(Self.concurrencyMax), not \(concurrency)")
        }
        guard (1...Self.timeoutMsMax).contains(timeoutMs) else { throw JobError.invalid("an in-process hook's timeout is 1 ms to 1 h, not \(timeoutMs) ms") }
    }
}

/// Runs in-process hooks' commands: false when the hook is at its concurrency (the event is
/// dropped; the runner counts it).
public typealias InProcessHookRunner = @Sendable (_ hook: HookRecord, _ event: [UInt8]) -> Bool

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

    /// How long an event the manager took stays its own before another manager may take it.
    public static let hookAckWaitMs: Int64 = 3000

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
        if let inProcess = hook.inProcess {
            guard template.type == "shell" else { throw JobError.invalid("an in-process hook runs a shell command, not a \(template.type) job") }
            try inProcess.validate()
        }
        var made = hook
        made.job = template
        // Only the leader's manager takes the hook's events, and acknowledges each as soon as its
        // job is submitted: a short wait lets a new leader take over what a dead one held (a
        // second delivery makes no second job: the job's key is the event's cursor).
        _ = try await topics.createGroup(
            ConsumerGroup(name: made.group, pattern: made.pattern, ackWaitMs: Self.hookAckWaitMs, maxDeliveries: 10), from: nil)
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
        guard let kv = try await store.get(hookKey(name)) else { throw JobError.invalid("no hook named \(name)") }
        _ = try await store.delete(hookKey(name))
        // Its place in the stream goes too: a group left behind would keep events recorded for nobody.
        try await topics?.removeGroup(try HookRecord(decoding: kv.value, limits: limits).group)
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
                if hook.inProcess != nil {
                    // Best effort: handed to the runner (or dropped when it is full) and acknowledged.
                    let event = Self.eventJSON(delivery.message)
                    _ = inProcessRunner.withLock { $0 }?(hook, event)
                    try await topics.settle(group: hook.group, cursor: delivery.message.cursor, receipt: delivery.receipt, action: .ack)
                    continue
                }
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
