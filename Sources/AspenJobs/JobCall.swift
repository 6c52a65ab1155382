import AspenCore

/// A request to the job system, as a client sends it to a node (which runs it on the leader,
/// next to the log).
public enum JobCall: Sendable, Equatable {
    case submit(JobSpec)
    case job(UInt64)
    case history(UInt64)
    case list(state: JobState?, type: String?, after: UInt64, limit: Int)
    /// A worker asks for its next job of one of its types, waiting up to `waitMs` for one.
    /// Claims up to `max` ready jobs at once (one transaction for all): answered `claimed` when
    /// `max` is 1, else `jobs` (empty when none came within the wait).
    /// `claim` names the request (0: none): repeated, it answers the jobs it took the first time.
    case claim(WorkerInfo, leaseMs: Int64, waitMs: Int64, max: Int = 1, claim: UInt64 = 0)
    /// Calls of the attempt's holder, fenced by its token; `type` is the job's type (what the
    /// worker's credential must cover), checked against the job.
    case renew(UInt64, type: String, token: UInt64, leaseMs: Int64)
    case finish(UInt64, type: String, token: UInt64, outcome: JobOutcome, exitCode: Int32?)
    /// Several attempts' ends at once (each a `finish`), written together: one answer per report.
    case finishMany([JobReport])
    case cancel(UInt64)
    case retry(UInt64, deadOnly: Bool)
    /// Creates (or with `replace`, changes) a schedule.
    case scheduleCreate(CronRecord, replace: Bool)
    case schedules
    case schedulePause(String, paused: Bool)
    case scheduleHistory(String, limit: Int)
    case scheduleRemove(String)
    /// A piece of the running attempt's output, fenced by its token.
    case appendOutput(UInt64, type: String, token: UInt64, chunk: JobOutputChunk)
    /// An attempt's output from an offset (nil attempt: the latest).
    case output(UInt64, attempt: Int?, from: Int64)
    case sagaStart(name: String, steps: [SagaStep], type: String, maxAttempts: Int)
    case saga(UInt64)
    /// Pub/sub: a batch of messages, published all or none.
    case publish([TopicMessage])
    /// Messages from a cursor whose subject the pattern selects (nil: every subject).
    case read(pattern: String?, from: UInt64, limit: Int)
    case retentionSet(TopicRetention)
    case retentions
    /// Consumer groups: create (from a cursor; nil: new messages), fetch, settle a delivery, status.
    case groupCreate(ConsumerGroup, from: UInt64?)
    case fetch(group: String, consumer: String, max: Int, waitMs: Int64)
    case settle(group: String, cursor: UInt64, receipt: UInt64, action: GroupAction)
    case groupStatus(String)
    /// Hooks: a pattern whose messages each run a job.
    case hookCreate(HookRecord)
    case hooks
    case hookRemove(String)

    /// Whether sending it again after an unknown outcome is harmless. A submit is when it carries
    /// an idempotency key (the client always gives one); renewals and finishes are fenced and
    /// answer a replay as the first; a claim is not (a lost claim's job waits out its lease).
    public var isRepeatable: Bool {
        switch self {
        case .submit(let spec): spec.idempotencyKey != nil
        case .job, .history, .list, .renew, .finish, .finishMany, .cancel, .schedules, .schedulePause, .scheduleHistory, .scheduleCreate(_, true), .appendOutput, .output, .saga, .read, .retentionSet, .retentions, .groupCreate, .groupStatus, .hooks, .hookRemove: true
        // A claim is when it names itself: repeated, it answers the jobs it took.
        case .claim(_, _, _, _, let claim): claim != 0
        case .retry, .scheduleCreate(_, false), .scheduleRemove, .sagaStart, .fetch, .hookCreate: false
        // An ack or extend repeated is refused as stale at worst; a nak moves the wait again.
        case .settle: true
        // With an id on every message, a repeated publish returns the first cursors.
        case .publish(let messages): messages.allSatisfy { $0.messageID != nil }
        }
    }

    public var waitMs: Int64 {
        if case .claim(_, _, let wait, _, _) = self { return wait }
        if case .fetch(_, _, _, let wait) = self { return wait }
        return 0
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .submit(let spec):
            writer.write(0)
            writer.writeBytes(spec.encoded)
        case .job(let id):
            writer.write(1)
            writer.writeVarint(id)
        case .history(let id):
            writer.write(2)
            writer.writeVarint(id)
        case .list(let state, let type, let after, let limit):
            writer.write(3)
            writer.writeOptionalBytes(state.map { Array($0.rawValue.utf8) })
            writer.writeOptionalBytes(type.map { Array($0.utf8) })
            writer.writeVarint(after)
            writer.writeVarint(UInt64(max(0, limit)))
        case .claim(let worker, let leaseMs, let waitMs, let max, let claim):
            writer.write(4)
            writer.writeString(worker.name)
            writer.writeVarint(worker.node)
            writer.writeVarint(UInt64(worker.types.count))
            for type in worker.types { writer.writeString(type) }
            writer.writeVarint(UInt64(worker.tags.count))
            for (key, value) in worker.tags.sorted(by: { $0.key < $1.key }) {
                writer.writeString(key)
                writer.writeString(value)
            }
            writer.writeVarint(signed: leaseMs)
            writer.writeVarint(signed: waitMs)
            if max != 1 || claim != 0 { writer.writeVarint(UInt64(Swift.max(0, max))) }
            if claim != 0 { writer.writeFixed(claim) }
        case .renew(let id, let type, let token, let leaseMs):
            writer.write(5)
            writer.writeVarint(id)
            writer.writeString(type)
            writer.writeFixed(token)
            writer.writeVarint(signed: leaseMs)
        case .finish(let id, let type, let token, let outcome, let exitCode):
            writer.write(6)
            writer.writeVarint(id)
            writer.writeString(type)
            writer.writeFixed(token)
            switch outcome {
            case .succeeded(let result):
                writer.write(0)
                writer.writeBytes(result)
            case .failed(let message, let retryable):
                writer.write(retryable ? 1 : 2)
                writer.writeString(message)
            }
            writer.write(exitCode != nil)
            if let exitCode { writer.writeVarint(signed: Int64(exitCode)) }
        case .finishMany(let reports):
            writer.write(29)
            writer.writeVarint(UInt64(reports.count))
            for report in reports { writer.writeBytes(report.call.encoded) }
        case .cancel(let id):
            writer.write(7)
            writer.writeVarint(id)
        case .retry(let id, let deadOnly):
            writer.write(8)
            writer.writeVarint(id)
            writer.write(deadOnly)
        case .scheduleCreate(let record, let replace):
            writer.write(9)
            writer.writeBytes(record.encoded)
            writer.write(replace)
        case .schedules:
            writer.write(10)
        case .schedulePause(let name, let paused):
            writer.write(11)
            writer.writeString(name)
            writer.write(paused)
        case .scheduleHistory(let name, let limit):
            writer.write(12)
            writer.writeString(name)
            writer.writeVarint(UInt64(max(0, limit)))
        case .scheduleRemove(let name):
            writer.write(13)
            writer.writeString(name)
        case .appendOutput(let id, let type, let token, let chunk):
            writer.write(14)
            writer.writeVarint(id)
            writer.writeString(type)
            writer.writeFixed(token)
            writer.writeVarint(signed: chunk.offset)
            writer.write(chunk.isError)
            writer.writeBytes(chunk.bytes)
        case .output(let id, let attempt, let offset):
            writer.write(15)
            writer.writeVarint(id)
            writer.writeVarint(UInt64(max(0, attempt ?? 0)))
            writer.writeVarint(signed: offset)
        case .sagaStart(let name, let steps, let type, let maxAttempts):
            writer.write(16)
            // A saga's own encoding carries its steps (id and times are the node's).
            writer.writeBytes(SagaRecord(id: 0, name: name, steps: steps, type: type, maxAttempts: maxAttempts, startedAtMs: 0).encoded)
        case .saga(let id):
            writer.write(17)
            writer.writeVarint(id)
        case .publish(let messages):
            writer.write(18)
            writer.writeVarint(UInt64(messages.count))
            for message in messages { writer.writeBytes(message.encoded) }
        case .read(let pattern, let from, let limit):
            writer.write(19)
            writer.writeOptionalBytes(pattern.map { Array($0.utf8) })
            writer.writeVarint(from)
            writer.writeVarint(UInt64(max(0, limit)))
        case .retentionSet(let rule):
            writer.write(20)
            writer.writeBytes(rule.encoded)
        case .retentions:
            writer.write(21)
        case .groupCreate(let group, let from):
            writer.write(22)
            writer.writeBytes(group.encoded)
            writer.write(from != nil)
            if let from { writer.writeVarint(from) }
        case .fetch(let group, let consumer, let max, let waitMs):
            writer.write(23)
            writer.writeString(group)
            writer.writeString(consumer)
            writer.writeVarint(UInt64(Swift.max(0, max)))
            writer.writeVarint(signed: waitMs)
        case .settle(let group, let cursor, let receipt, let action):
            writer.write(24)
            writer.writeString(group)
            writer.writeVarint(cursor)
            writer.writeFixed(receipt)
            switch action {
            case .ack: writer.write(0)
            case .nak(let delayMs):
                writer.write(1)
                writer.writeVarint(signed: delayMs)
            case .extend: writer.write(2)
            }
        case .groupStatus(let name):
            writer.write(25)
            writer.writeString(name)
        case .hookCreate(let hook):
            writer.write(26)
            writer.writeBytes(hook.encoded)
        case .hooks:
            writer.write(27)
        case .hookRemove(let name):
            writer.write(28)
            writer.writeString(name)
        }
        return writer.bytes
    }

    /// Decodes a call, every count and length bounded by `limits`.
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let name = limits.jobNameBytesMax
        switch try reader.readByte() {
        case 0: self = .submit(try JobSpec(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits)), limits: limits))
        case 1: self = .job(try reader.readVarint())
        case 2: self = .history(try reader.readVarint())
        case 3:
            let stateName = try reader.readOptionalBytes(limit: 32).map { String(decoding: $0, as: UTF8.self) }
            var state: JobState?
            if let stateName {
                guard let known = JobState(rawValue: stateName) else { throw .invalid("unknown job state \(stateName)") }
                state = known
            }
            let type = try reader.readOptionalBytes(limit: name).map { String(decoding: $0, as: UTF8.self) }
            self = .list(state: state, type: type, after: try reader.readVarint(), limit: try reader.readCount(limit: JobCall.listLimitMax))
        case 4:
            let worker = try reader.readString(limit: name)
            let node = try reader.readVarint()
            var types: [String] = []
            for _ in 0..<(try reader.readCount(limit: 64)) { types.append(try reader.readString(limit: name)) }
            var tags: [String: String] = [:]
            for _ in 0..<(try reader.readCount(limit: limits.jobTagsMax)) {
                let key = try reader.readString(limit: name)
                guard tags.updateValue(try reader.readString(limit: name), forKey: key) == nil else { throw .invalid("tag \(key) appears twice") }
            }
            let leaseMs = try reader.readSignedVarint()
            let waitMs = try reader.readSignedVarint()
            // The batch size is left out for one job (so a single claim reads as it always did).
            let max = reader.isAtEnd ? 1 : try reader.readCount(limit: JobCall.claimBatchMax)
            let claim = reader.isAtEnd ? 0 : try reader.readFixed64()
            self = .claim(WorkerInfo(name: worker, node: node, types: types, tags: tags), leaseMs: leaseMs, waitMs: waitMs, max: max, claim: claim)
        case 5:
            self = .renew(
                try reader.readVarint(), type: try reader.readString(limit: name), token: try reader.readFixed64(), leaseMs: try reader.readSignedVarint())
        case 6:
            let id = try reader.readVarint()
            let type = try reader.readString(limit: name)
            let token = try reader.readFixed64()
            let outcome: JobOutcome
            switch try reader.readByte() {
            case 0: outcome = .succeeded(result: try reader.readBytes(limit: limits.jobResultBytesMax))
            case let kind where kind == 1 || kind == 2:
                outcome = .failed(message: try reader.readString(limit: limits.jobMessageBytesMax * 4), retryable: kind == 1)
            case let other: throw .invalid("unknown job outcome \(other)")
            }
            var exitCode: Int32?
            if try reader.readBool() {
                guard let code = Int32(exactly: try reader.readSignedVarint()) else { throw .invalid("an exit code out of range") }
                exitCode = code
            }
            self = .finish(id, type: type, token: token, outcome: outcome, exitCode: exitCode)
        case 7: self = .cancel(try reader.readVarint())
        case 8: self = .retry(try reader.readVarint(), deadOnly: try reader.readBool())
        case 9:
            self = .scheduleCreate(
                try CronRecord(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits) + 1024), limits: limits), replace: try reader.readBool())
        case 10: self = .schedules
        case 11: self = .schedulePause(try reader.readString(limit: name), paused: try reader.readBool())
        case 12: self = .scheduleHistory(try reader.readString(limit: name), limit: try reader.readCount(limit: JobCall.listLimitMax))
        case 13: self = .scheduleRemove(try reader.readString(limit: name))
        case 14:
            let id = try reader.readVarint()
            let type = try reader.readString(limit: name)
            let token = try reader.readFixed64()
            let offset = try reader.readSignedVarint()
            let isError = try reader.readBool()
            self = .appendOutput(
                id, type: type, token: token,
                chunk: JobOutputChunk(offset: offset, isError: isError, bytes: try reader.readBytes(limit: limits.jobOutputChunkBytesMax)))
        case 15:
            let id = try reader.readVarint()
            let attempt = try reader.readCount(limit: limits.jobAttemptsMax * 1000)
            self = .output(id, attempt: attempt == 0 ? nil : attempt, from: try reader.readSignedVarint())
        case 16:
            let saga = try SagaRecord(decoding: try reader.readBytes(limit: SagaRecord.encodedBytesMax(limits)), limits: limits)
            self = .sagaStart(name: saga.name, steps: saga.steps, type: saga.type, maxAttempts: saga.maxAttempts)
        case 17: self = .saga(try reader.readVarint())
        case 18:
            var messages: [TopicMessage] = []
            for _ in 0..<(try reader.readCount(limit: limits.topicBatchMax)) {
                messages.append(try TopicMessage(decoding: try reader.readBytes(limit: TopicMessage.encodedBytesMax(limits)), limits: limits))
            }
            self = .publish(messages)
        case 19:
            let pattern = try reader.readOptionalBytes(limit: limits.subjectBytesMax).map { String(decoding: $0, as: UTF8.self) }
            self = .read(pattern: pattern, from: try reader.readVarint(), limit: try reader.readCount(limit: JobCall.listLimitMax))
        case 20: self = .retentionSet(try TopicRetention(decoding: try reader.readBytes(limit: limits.subjectBytesMax + 32), limits: limits))
        case 21: self = .retentions
        case 22:
            let group = try ConsumerGroup(decoding: try reader.readBytes(limit: 1024), limits: limits)
            self = .groupCreate(group, from: try reader.readBool() ? try reader.readVarint() : nil)
        case 23:
            self = .fetch(
                group: try reader.readString(limit: name), consumer: try reader.readString(limit: 256), max: try reader.readCount(limit: 1000),
                waitMs: try reader.readSignedVarint())
        case 24:
            let group = try reader.readString(limit: name)
            let cursor = try reader.readVarint()
            let receipt = try reader.readFixed64()
            let action: GroupAction
            switch try reader.readByte() {
            case 0: action = .ack
            case 1: action = .nak(delayMs: try reader.readSignedVarint())
            case 2: action = .extend
            case let other: throw .invalid("unknown group action \(other)")
            }
            self = .settle(group: group, cursor: cursor, receipt: receipt, action: action)
        case 25: self = .groupStatus(try reader.readString(limit: name))
        case 26: self = .hookCreate(try HookRecord(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits) + 1024), limits: limits))
        case 27: self = .hooks
        case 28: self = .hookRemove(try reader.readString(limit: name))
        case 29:
            var reports: [JobReport] = []
            for _ in 0..<(try reader.readCount(limit: JobCall.claimBatchMax)) {
                let bytes = try reader.readBytes(limit: limits.jobResultBytesMax + 4 * limits.jobMessageBytesMax + 2 * name + 64)
                // Checked before decoding: a batch inside a batch would recurse as deep as its bytes allow.
                guard bytes.first == 6 else { throw .invalid("a report is a finish (call 6), not call \(bytes.first.map(String.init) ?? "none")") }
                guard case .finish(let id, let type, let token, let outcome, let exitCode) = try JobCall(decoding: bytes, limits: limits) else {
                    throw .invalid("a report that is not a finish")
                }
                reports.append(JobReport(id: id, type: type, token: token, outcome: outcome, exitCode: exitCode))
            }
            self = .finishMany(reports)
        case let other: throw .invalid("unknown job call \(other)")
        }
        try reader.expectEnd()
    }

    /// Most jobs one list returns.
    public static let listLimitMax = 1000
    /// Most jobs one claim takes.
    public static let claimBatchMax = 64
}

/// A node's answer to a `JobCall`.
public enum JobAnswer: Sendable, Equatable {
    case submitted(id: UInt64, created: Bool)
    case job(JobRecord)
    /// A claim that found nothing within its wait answers `job` with none.
    case claimed(JobRecord?)
    case jobs([JobRecord])
    case history([JobHistoryEntry])
    case schedules([CronRecord])
    case ticks([CronTick])
    case done
    case output(attempt: Int, chunks: [JobOutputChunk])
    case saga(SagaRecord)
    case published([UInt64])
    case page(TopicPage)
    case retentions([TopicRetention])
    case group(ConsumerGroup)
    case deliveries([GroupDelivery])
    case groupStatus(ConsumerGroup, pending: Int, dead: [UInt64])
    case hooks([HookStatus])
    /// One per report of a `finishMany`, in order: nil when recorded (or a replay of what was),
    /// else why it was refused. (Not the records: 64 of them could pass a frame.)
    case reported([JobError?])

    /// Bytes of records one answer carries at most: a list stops early rather than pass the frame limit.
    public static let bytesMax = 8 << 20

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .submitted(let id, let created):
            writer.write(0)
            writer.writeVarint(id)
            writer.write(created)
        case .job(let record):
            writer.write(1)
            writer.writeBytes(record.encoded)
        case .claimed(let record):
            writer.write(2)
            writer.writeOptionalBytes(record?.encoded)
        case .jobs(let records):
            writer.write(3)
            writer.writeVarint(UInt64(records.count))
            for record in records { writer.writeBytes(record.encoded) }
        case .history(let entries):
            writer.write(4)
            writer.writeVarint(UInt64(entries.count))
            for entry in entries { writer.writeBytes(entry.encoded) }
        case .schedules(let records):
            writer.write(5)
            writer.writeVarint(UInt64(records.count))
            for record in records { writer.writeBytes(record.encoded) }
        case .ticks(let ticks):
            writer.write(6)
            writer.writeVarint(UInt64(ticks.count))
            for tick in ticks { writer.writeBytes(tick.encoded) }
        case .done:
            writer.write(7)
        case .output(let attempt, let chunks):
            writer.write(8)
            writer.writeVarint(UInt64(attempt))
            writer.writeVarint(UInt64(chunks.count))
            for chunk in chunks {
                writer.writeVarint(signed: chunk.offset)
                writer.write(chunk.isError)
                writer.writeBytes(chunk.bytes)
            }
        case .saga(let saga):
            writer.write(9)
            writer.writeBytes(saga.encoded)
        case .published(let cursors):
            writer.write(10)
            writer.writeVarint(UInt64(cursors.count))
            for cursor in cursors { writer.writeVarint(cursor) }
        case .page(let page):
            writer.write(11)
            writer.writeVarint(UInt64(page.messages.count))
            for message in page.messages { writer.writeBytes(message.encoded) }
            writer.writeVarint(page.next)
            writer.writeVarint(page.oldest)
            writer.writeVarint(page.last)
            writer.writeVarint(signed: page.revision)
        case .retentions(let rules):
            writer.write(12)
            writer.writeVarint(UInt64(rules.count))
            for rule in rules { writer.writeBytes(rule.encoded) }
        case .group(let group):
            writer.write(13)
            writer.writeBytes(group.encoded)
        case .deliveries(let deliveries):
            writer.write(14)
            writer.writeVarint(UInt64(deliveries.count))
            for delivery in deliveries {
                writer.writeBytes(delivery.message.encoded)
                writer.writeFixed(delivery.receipt)
                writer.writeVarint(UInt64(delivery.deliveries))
            }
        case .groupStatus(let group, let pending, let dead):
            writer.write(15)
            writer.writeBytes(group.encoded)
            writer.writeVarint(UInt64(pending))
            writer.writeVarint(UInt64(dead.count))
            for cursor in dead { writer.writeVarint(cursor) }
        case .hooks(let hooks):
            writer.write(16)
            writer.writeVarint(UInt64(hooks.count))
            for status in hooks {
                writer.writeBytes(status.hook.encoded)
                writer.writeVarint(status.next)
                writer.writeVarint(UInt64(status.pending))
                writer.writeVarint(UInt64(status.dead))
            }
        case .reported(let results):
            writer.write(17)
            writer.writeVarint(UInt64(results.count))
            for result in results {
                writer.write(result != nil)
                if let result { writer.writeBytes(result.encoded) }
            }
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let recordMax = JobRecord.encodedBytesMax(limits)
        switch try reader.readByte() {
        case 0: self = .submitted(id: try reader.readVarint(), created: try reader.readBool())
        case 1: self = .job(try JobRecord(decoding: try reader.readBytes(limit: recordMax), limits: limits))
        case 2: self = .claimed(try reader.readOptionalBytes(limit: recordMax).map { bytes throws(DecodingError) in try JobRecord(decoding: bytes, limits: limits) })
        case 3:
            var records: [JobRecord] = []
            for _ in 0..<(try reader.readCount(limit: JobCall.listLimitMax)) {
                records.append(try JobRecord(decoding: try reader.readBytes(limit: recordMax), limits: limits))
            }
            self = .jobs(records)
        case 4:
            var entries: [JobHistoryEntry] = []
            for _ in 0..<(try reader.readCount(limit: 1_000_000)) {
                entries.append(try JobHistoryEntry(decoding: try reader.readBytes(limit: limits.jobMessageBytesMax + 512), limits: limits))
            }
            self = .history(entries)
        case 5:
            var records: [CronRecord] = []
            for _ in 0..<(try reader.readCount(limit: 1_000_000)) {
                records.append(try CronRecord(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits) + 1024), limits: limits))
            }
            self = .schedules(records)
        case 6:
            var ticks: [CronTick] = []
            for _ in 0..<(try reader.readCount(limit: JobCall.listLimitMax)) { ticks.append(try CronTick(decoding: try reader.readBytes(limit: 8192))) }
            self = .ticks(ticks)
        case 7: self = .done
        case 8:
            let attempt = try reader.readCount(limit: Int(Int32.max))
            var chunks: [JobOutputChunk] = []
            for _ in 0..<(try reader.readCount(limit: 256)) {
                let offset = try reader.readSignedVarint()
                let isError = try reader.readBool()
                chunks.append(JobOutputChunk(offset: offset, isError: isError, bytes: try reader.readBytes(limit: limits.jobOutputChunkBytesMax)))
            }
            self = .output(attempt: attempt, chunks: chunks)
        case 9: self = .saga(try SagaRecord(decoding: try reader.readBytes(limit: SagaRecord.encodedBytesMax(limits)), limits: limits))
        case 10:
            var cursors: [UInt64] = []
            for _ in 0..<(try reader.readCount(limit: limits.topicBatchMax)) { cursors.append(try reader.readVarint()) }
            self = .published(cursors)
        case 11:
            var messages: [TopicMessage] = []
            for _ in 0..<(try reader.readCount(limit: JobCall.listLimitMax)) {
                messages.append(try TopicMessage(decoding: try reader.readBytes(limit: TopicMessage.encodedBytesMax(limits)), limits: limits))
            }
            self = .page(
                TopicPage(
                    messages: messages, next: try reader.readVarint(), oldest: try reader.readVarint(), last: try reader.readVarint(),
                    revision: try reader.readSignedVarint()))
        case 12:
            var rules: [TopicRetention] = []
            for _ in 0..<(try reader.readCount(limit: 1000)) {
                rules.append(try TopicRetention(decoding: try reader.readBytes(limit: limits.subjectBytesMax + 32), limits: limits))
            }
            self = .retentions(rules)
        case 13: self = .group(try ConsumerGroup(decoding: try reader.readBytes(limit: 1024), limits: limits))
        case 14:
            var deliveries: [GroupDelivery] = []
            for _ in 0..<(try reader.readCount(limit: 1000)) {
                let message = try TopicMessage(decoding: try reader.readBytes(limit: TopicMessage.encodedBytesMax(limits)), limits: limits)
                deliveries.append(GroupDelivery(message: message, receipt: try reader.readFixed64(), deliveries: try reader.readCount(limit: 1_000_000)))
            }
            self = .deliveries(deliveries)
        case 15:
            let group = try ConsumerGroup(decoding: try reader.readBytes(limit: 1024), limits: limits)
            let pending = try reader.readCount(limit: Int(Int32.max))
            var dead: [UInt64] = []
            for _ in 0..<(try reader.readCount(limit: 1000)) { dead.append(try reader.readVarint()) }
            self = .groupStatus(group, pending: pending, dead: dead)
        case 16:
            var hooks: [HookStatus] = []
            for _ in 0..<(try reader.readCount(limit: 1000)) {
                let hook = try HookRecord(decoding: try reader.readBytes(limit: JobSpec.encodedBytesMax(limits) + 1024), limits: limits)
                hooks.append(
                    HookStatus(
                        hook: hook, next: try reader.readVarint(), pending: try reader.readCount(limit: Int(Int32.max)),
                        dead: try reader.readCount(limit: Int(Int32.max))))
            }
            self = .hooks(hooks)
        case 17:
            var results: [JobError?] = []
            for _ in 0..<(try reader.readCount(limit: JobCall.claimBatchMax)) {
                results.append(try reader.readBool() ? try JobError(decoding: try reader.readBytes(limit: 16_384)) : nil)
            }
            self = .reported(results)
        case let other: throw .invalid("unknown job answer \(other)")
        }
        try reader.expectEnd()
    }
}

extension JobRecord {
    /// The most bytes a valid record encodes to.
    static func encodedBytesMax(_ limits: Limits) -> Int {
        JobSpec.encodedBytesMax(limits) + limits.jobResultBytesMax + limits.jobMessageBytesMax + 2 * limits.jobNameBytesMax + 256
    }
}

extension JobStore {
    /// Runs a call against the store.
    public func run(_ call: JobCall) async throws -> JobAnswer {
        switch call {
        case .submit(let spec):
            let (id, created) = try await submit(spec)
            return .submitted(id: id, created: created)
        case .job(let id): return .job(try await job(id))
        case .history(let id): return .history(try await history(id))
        case .list(let state, let type, let after, let limit):
            var records = try await list(state: state, type: type, after: after, limit: min(limit, JobCall.listLimitMax))
            var bytes = 0
            if let cut = records.firstIndex(where: { bytes += $0.encoded.count; return bytes > JobAnswer.bytesMax }) {
                records.removeSubrange(cut...)
            }
            return .jobs(records)
        case .claim(let worker, let leaseMs, let waitMs, let max, let claim):
            guard !worker.types.isEmpty else { throw JobError.invalid("a worker must name at least one job type") }
            guard (1...JobCall.claimBatchMax).contains(max) else {
                throw JobError.invalid("a claim takes 1 to \(JobCall.claimBatchMax) jobs, not \(max)")
            }
            let claimed = try await self.claim(worker, leaseMs: leaseMs, waitMs: waitMs, max: max, claim: claim)
            return max == 1 ? .claimed(claimed.first) : .jobs(claimed)
        case .renew(let id, let type, let token, let leaseMs): return .job(try await renew(id, type: type, token: token, leaseMs: leaseMs))
        case .finish(let id, let type, let token, let outcome, let exitCode):
            return .job(try await finish(id, type: type, token: token, outcome: outcome, exitCode: exitCode))
        case .finishMany(let reports):
            guard reports.count <= JobCall.claimBatchMax else {
                throw JobError.invalid("a batch of reports holds at most \(JobCall.claimBatchMax), not \(reports.count)")
            }
            return .reported(try await finish(reports).map { result in
                if case .failure(let error) = result { error } else { nil }
            })
        case .cancel(let id): return .job(try await cancel(id))
        case .retry(let id, let deadOnly): return .job(try await retry(id, deadOnly: deadOnly))
        case .scheduleCreate(let record, let replace): return .schedules([try await createSchedule(record, replace: replace)])
        case .schedules: return .schedules(try await schedules())
        case .schedulePause(let name, let paused): return .schedules([try await setPaused(name, paused)])
        case .scheduleHistory(let name, let limit): return .ticks(try await ticks(name, limit: min(limit, JobCall.listLimitMax)))
        case .scheduleRemove(let name):
            try await removeSchedule(name)
            return .done
        case .appendOutput(let id, let type, let token, let chunk):
            try await appendOutput(id, type: type, token: token, chunk: chunk)
            return .done
        case .output(let id, let attempt, let offset):
            let (number, chunks) = try await output(id, attempt: attempt, from: offset, bytesMax: 4 << 20)
            return .output(attempt: number, chunks: chunks)
        case .sagaStart(let name, let steps, let type, let maxAttempts):
            return .saga(try await startSaga(name: name, steps: steps, type: type, maxAttempts: maxAttempts))
        case .saga(let id): return .saga(try await saga(id))
        case .hookCreate(let hook):
            _ = try await createHook(hook)
            return .hooks(try await hooks().filter { $0.hook.name == hook.name })
        case .hooks: return .hooks(try await hooks())
        case .hookRemove(let name):
            try await removeHook(name)
            return .done
        case .publish, .read, .retentionSet, .retentions, .groupCreate, .fetch, .settle, .groupStatus:
            guard let topics else { throw JobError.invalid("this store has no message stream") }
            return try await topics.run(call)
        }
    }
}

extension TopicLog {
    /// Runs a pub/sub call.
    public func run(_ call: JobCall) async throws -> JobAnswer {
        switch call {
        case .publish(let messages): return .published(try await publish(messages))
        case .read(let pattern, let from, let limit):
            var selector: SubjectPattern?
            if let pattern {
                do throws(SubjectError) {
                    selector = try SubjectPattern(pattern, limits: limits)
                } catch {
                    throw JobError.invalid(error.description)
                }
            }
            var page = try await read(pattern: selector, from: from, limit: min(limit, JobCall.listLimitMax))
            // An answer stays within the frame: a page of big messages ends early, and says where.
            var bytes = 0
            if let cut = page.messages.firstIndex(where: { bytes += $0.encoded.count; return bytes > JobAnswer.bytesMax }), cut > 0 {
                page.next = page.messages[cut].cursor
                page.messages.removeSubrange(cut...)
            }
            return .page(page)
        case .retentionSet(let rule):
            try await setRetention(rule)
            return .done
        case .retentions: return .retentions(try await retentions())
        case .groupCreate(let group, let from): return .group(try await createGroup(group, from: from))
        case .fetch(let group, let consumer, let max, let waitMs):
            return .deliveries(
                try await fetch(
                    group: group, consumer: consumer, max: max, waitMs: waitMs, bytesMax: JobAnswer.bytesMax,
                    random: { UInt64.random(in: 1...UInt64.max) }))
        case .settle(let group, let cursor, let receipt, let action):
            try await settle(group: group, cursor: cursor, receipt: receipt, action: action)
            return .done
        case .groupStatus(let name):
            let (group, pending, dead) = try await groupStatus(name)
            return .groupStatus(group, pending: pending, dead: dead)
        default: throw JobError.invalid("not a pub/sub call")
        }
    }
}

extension TopicMessage {
    static func encodedBytesMax(_ limits: Limits) -> Int {
        limits.topicPayloadBytesMax + 2 * limits.topicHeaderBytesMax + 8 * limits.topicHeadersMax + limits.subjectBytesMax + limits.jobNameBytesMax + 64
    }
}

/// Something that runs job calls: a client of a cluster, or a store in this process.
public protocol JobCalling: Sendable {
    func job(_ call: JobCall) async throws -> JobAnswer
}

extension JobStore: JobCalling {
    public func job(_ call: JobCall) async throws -> JobAnswer { try await run(call) }
}

extension SagaRecord {
    /// The most bytes a valid saga encodes to.
    static func encodedBytesMax(_ limits: Limits) -> Int {
        limits.sagaStepsMax * (2 * limits.jobCommandBytesMax + limits.jobNameBytesMax + 64) + limits.jobMessageBytesMax + 1024
    }
}

/// An attempt's end as its worker reports it (one `finish`).
public struct JobReport: Sendable, Equatable {
    public var id: UInt64
    public var type: String
    public var token: UInt64
    public var outcome: JobOutcome
    public var exitCode: Int32?

    public init(id: UInt64, type: String, token: UInt64, outcome: JobOutcome, exitCode: Int32?) {
        self.id = id
        self.type = type
        self.token = token
        self.outcome = outcome
        self.exitCode = exitCode
    }

    public var call: JobCall { .finish(id, type: type, token: token, outcome: outcome, exitCode: exitCode) }
}
