import AspenCore
import AspenKV
import AspenLayer
import Synchronization

/// A durable message: a subject, headers and a payload, at a cursor of the stream.
public struct TopicMessage: Sendable, Equatable {
    /// Its place in the stream (assigned at publish; 0 before).
    public var cursor: UInt64
    public var subject: String
    public var headers: [String: String]
    public var payload: [UInt8]
    /// Publishes with an id already published within the dedup window return that message's cursor.
    public var messageID: String?
    public var publishedAtMs: Int64

    public init(subject: String, payload: [UInt8], headers: [String: String] = [:], messageID: String? = nil) {
        self.cursor = 0
        self.subject = subject
        self.headers = headers
        self.payload = payload
        self.messageID = messageID
        self.publishedAtMs = 0
    }

    /// Refuses a message past a bound or with an invalid subject, naming it.
    public func validate(limits: Limits) throws(JobError) {
        do throws(SubjectError) {
            try SubjectPattern.validate(subject: subject, limits: limits)
        } catch {
            throw .invalid(error.description)
        }
        guard payload.count <= limits.topicPayloadBytesMax else {
            throw .invalid("a payload of \(payload.count) bytes exceeds topicPayloadBytesMax (\(limits.topicPayloadBytesMax)); put it in the blob store")
        }
        guard headers.count <= limits.topicHeadersMax else {
            throw .invalid("\(headers.count) headers exceed topicHeadersMax (\(limits.topicHeadersMax))")
        }
        let headerBytes = headers.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard headerBytes <= limits.topicHeaderBytesMax else {
            throw .invalid("headers of \(headerBytes) bytes exceed topicHeaderBytesMax (\(limits.topicHeaderBytesMax))")
        }
        if let messageID, messageID.isEmpty || messageID.utf8.count > limits.jobNameBytesMax {
            throw .invalid("a message id must be 1 to \(limits.jobNameBytesMax) bytes")
        }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(cursor)
        writer.writeString(subject)
        writer.writeVarint(UInt64(headers.count))
        for (key, value) in headers.sorted(by: { $0.key < $1.key }) {
            writer.writeString(key)
            writer.writeString(value)
        }
        writer.writeBytes(payload)
        writer.writeOptionalBytes(messageID.map { Array($0.utf8) })
        writer.writeVarint(signed: publishedAtMs)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        cursor = try reader.readVarint()
        subject = try reader.readString(limit: limits.subjectBytesMax)
        var headers: [String: String] = [:]
        for _ in 0..<(try reader.readCount(limit: limits.topicHeadersMax)) {
            let key = try reader.readString(limit: limits.topicHeaderBytesMax)
            guard headers.updateValue(try reader.readString(limit: limits.topicHeaderBytesMax), forKey: key) == nil else {
                throw .invalid("header \(key) appears twice")
            }
        }
        self.headers = headers
        payload = try reader.readBytes(limit: limits.topicPayloadBytesMax)
        messageID = try reader.readOptionalBytes(limit: limits.jobNameBytesMax).map { String(decoding: $0, as: UTF8.self) }
        publishedAtMs = try reader.readSignedVarint()
        try reader.expectEnd()
    }
}

/// How long messages matching a pattern are kept.
public struct TopicRetention: Sendable, Equatable {
    public var pattern: String
    /// Messages older than this go (0: no age limit).
    public var maxAgeMs: Int64
    /// A message goes once this many newer messages are in the stream (0: no limit).
    public var maxMessages: UInt64

    public init(pattern: String, maxAgeMs: Int64 = 0, maxMessages: UInt64 = 0) {
        self.pattern = pattern
        self.maxAgeMs = maxAgeMs
        self.maxMessages = maxMessages
    }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeString(pattern)
        writer.writeVarint(signed: maxAgeMs)
        writer.writeVarint(maxMessages)
        return writer.bytes
    }

    init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        pattern = try reader.readString(limit: limits.subjectBytesMax)
        maxAgeMs = try reader.readSignedVarint()
        maxMessages = try reader.readVarint()
        try reader.expectEnd()
    }
}

/// What a read of the stream found.
public struct TopicPage: Sendable, Equatable {
    public var messages: [TopicMessage]
    /// Where the next read starts (the last cursor looked at + 1).
    public var next: UInt64
    /// The oldest cursor still kept, and the last one published.
    public var oldest: UInt64
    public var last: UInt64
    /// The store's revision the page was read at: a watch from `revision + 1` continues it.
    public var revision: Int64

    public init(messages: [TopicMessage], next: UInt64, oldest: UInt64, last: UInt64, revision: Int64) {
        self.messages = messages
        self.next = next
        self.oldest = oldest
        self.last = last
        self.revision = revision
    }
}

/// The durable message stream of pub/sub, as a layer over `KeyValueStore`: one totally ordered
/// log of every subject, each message at a cursor (`("m", cursor)` under `("aspen", "topic")`),
/// read by subject pattern from any kept cursor, and followed live by watching its keys.
///
/// Publishes on one node are committed in groups: whatever arrived while the last write was
/// under way goes in the next, one transaction that takes consecutive cursors, conditioned on
/// the stream's last cursor (`("n")`). A publish batch is one message list: all of it or none.
/// With a message id, a publish repeated within the dedup window returns the first cursor.
public final class TopicLog: Sendable {
    /// Woken when messages are published here (the leader), so that waiting group fetches look
    /// again at once; signalled only while some fetch waits (`fetchesWaiting`), so a stream
    /// nobody fetches from pays nothing for it.
    public let arrivals = JobSignals()
    let fetchesWaiting = Atomic<Int>(0)
    public let store: any KeyValueStore
    let limits: Limits
    let nowMs: @Sendable () -> Int64
    public static let space = Subspace(["aspen", "topic"])
    var space: Subspace { Self.space }
    /// How long a message id is remembered.
    public let dedupWindowMs: Int64
    private let queue = Mutex<(waiting: [Pending], flushing: Bool)>(([], false))
    /// Fetches refused at a consumer's max pending, by group (on this node).
    let maxPendingRefusals = Mutex<[String: UInt64]>([:])

    struct Pending {
        var messages: [TopicMessage]
        /// The messages' encoded bytes, counted once at publish.
        var bytes: Int
        var continuation: CheckedContinuation<[UInt64], any Error>
    }

    public init(store: any KeyValueStore, limits: Limits = .standard, dedupWindowMs: Int64 = 120_000, nowMs: @escaping @Sendable () -> Int64) {
        self.store = store
        self.limits = limits
        self.dedupWindowMs = dedupWindowMs
        self.nowMs = nowMs
    }

    /// The key prefix of the messages, for a watch.
    public static var messagesPrefix: [UInt8] { space.subspace(["m"]).prefix }
    public static func cursor(ofKey key: [UInt8]) -> UInt64? {
        guard let tuple = try? space.subspace(["m"]).unpack(key), case .int(let cursor)? = tuple.elements.first else { return nil }
        return UInt64(cursor)
    }

    func messageKey(_ cursor: UInt64) -> Bytes { space.pack(["m", .int(Int64(cursor))]) }
    var lastKey: Bytes { space.pack(["n"]) }
    func dedupKey(_ id: String) -> Bytes { space.pack(["d", .string(id)]) }

    // MARK: Publish

    /// Publishes messages as one batch (all or none); returns their cursors in order.
    public func publish(_ messages: [TopicMessage]) async throws -> [UInt64] {
        guard !messages.isEmpty, messages.count <= limits.topicBatchMax else {
            throw JobError.invalid("a publish batch has 1 to topicBatchMax (\(limits.topicBatchMax)) messages, not \(messages.count)")
        }
        for message in messages { try message.validate(limits: limits) }
        let bytes = messages.reduce(0) { $0 + $1.encoded.count }
        guard bytes <= limits.topicBatchBytesMax else {
            throw JobError.invalid("a publish batch of \(bytes) bytes exceeds topicBatchBytesMax (\(limits.topicBatchBytesMax))")
        }
        return try await withCheckedThrowingContinuation { continuation in
            let lead = queue.withLock { queue -> Bool in
                queue.waiting.append(Pending(messages: messages, bytes: bytes, continuation: continuation))
                defer { queue.flushing = true }
                return !queue.flushing
            }
            if lead { Task { await self.flush() } }
        }
    }

    /// Writes queued publishes in groups until none is left.
    func flush() async {
        while true {
            let group = queue.withLock { queue -> [Pending] in
                var taken: [Pending] = []
                var count = 0
                var bytes = 0
                while let first = queue.waiting.first {
                    guard taken.isEmpty || (count + first.messages.count <= limits.topicBatchMax && bytes + first.bytes <= limits.topicBatchBytesMax)
                    else { break }
                    taken.append(queue.waiting.removeFirst())
                    count += first.messages.count
                    bytes += first.bytes
                }
                if taken.isEmpty { queue.flushing = false }
                return taken
            }
            guard !group.isEmpty else { return }
            do {
                let cursors = try await write(group.map(\.messages))
                for (pending, assigned) in zip(group, cursors) { pending.continuation.resume(returning: assigned) }
            } catch {
                for pending in group { pending.continuation.resume(throwing: error) }
            }
        }
    }

    /// Writes batches in one transaction: consecutive cursors after the stream's last.
    func write(_ batches: [[TopicMessage]]) async throws -> [[UInt64]] {
        for round in 0..<16 {
            if let assigned = try await write(batches, consistency: round == 0 ? .stale : .linearizable) { return assigned }
        }
        throw JobError.contention(attempts: 16)
    }

    /// Publishes `messages` in the same transaction as `operations`, if `compares` hold and
    /// the stream did not move since read: nil when either failed (the caller reads again).
    /// How a layer publishes events of its own changes exactly once.
    public func publish(
        _ messages: [TopicMessage], if compares: [Compare], with operations: [TransactionOperation]
    ) async throws -> [UInt64]? {
        guard messages.count <= limits.topicBatchMax else {
            throw JobError.invalid("a publish batch has at most topicBatchMax (\(limits.topicBatchMax)) messages, not \(messages.count)")
        }
        for message in messages { try message.validate(limits: limits) }
        return try await write([messages], consistency: .linearizable, compares: compares, operations: operations)?.first
    }

    /// One attempt at `write`: nil when the stream's last cursor (or a caller's compare) moved.
    func write(
        _ batches: [[TopicMessage]], consistency: ReadConsistency, compares extraCompares: [Compare] = [],
        operations extraOperations: [TransactionOperation] = []
    ) async throws -> [[UInt64]]? {
        let current = try await store.get(lastKey, consistency: consistency)
        var last = try current.map { try Self.decodeCursor($0.value) } ?? 0
        // Ids published within the window answer with their first cursor.
        var known: [String: UInt64] = [:]
        var seen: [String: Int64] = [:]
        let ids = Array(Set(batches.flatMap { $0.compactMap(\.messageID) }))
        if !ids.isEmpty {
            let found = try await store.getMany(ids.map(dedupKey), consistency: consistency)
            let now = nowMs()
            for (id, kv) in zip(ids, found) {
                seen[id] = kv?.modRevision ?? 0
                guard let kv, let (cursor, at) = try? Self.decodeDedup(kv.value), now - at <= dedupWindowMs else { continue }
                known[id] = cursor
            }
        }
        let now = nowMs()
        var operations: [TransactionOperation] = []
        var assigned: [[UInt64]] = []
        var compares: [Compare] = [current.map { Compare(key: lastKey, .modRevision($0.modRevision)) } ?? .absent(lastKey)]
        for batch in batches {
            var cursors: [UInt64] = []
            for var message in batch {
                if let id = message.messageID, let cursor = known[id] {
                    cursors.append(cursor)
                    continue
                }
                last += 1
                message.cursor = last
                message.publishedAtMs = now
                operations.append(.put(Put(key: messageKey(last), value: message.encoded)))
                if let id = message.messageID {
                    known[id] = last
                    let key = dedupKey(id)
                    operations.append(.put(Put(key: key, value: Self.encodeDedup(last, now))))
                    operations.append(.put(Put(key: space.pack(["dt", .int(now), .string(id)]), value: [])))
                    // The id's record unchanged since read: a racing publish of it fails this one.
                    compares.append(seen[id].map { $0 == 0 ? .absent(key) : Compare(key: key, .modRevision($0)) } ?? .absent(key))
                }
                cursors.append(last)
            }
            assigned.append(cursors)
        }
        guard !operations.isEmpty || !extraOperations.isEmpty else { return assigned }
        // The stream's conditions only when something is published: a caller's write with no
        // messages does not fail because someone else published meanwhile.
        if operations.isEmpty {
            compares = []
        } else {
            operations.append(.put(Put(key: lastKey, value: Self.encodeCursor(last))))
        }
        let outcome = try await store.transaction(
            Transaction(compares: compares + extraCompares, success: operations + extraOperations))
        if outcome.succeeded, !operations.isEmpty, fetchesWaiting.load(ordering: .sequentiallyConsistent) > 0 { await arrivals.notify() }
        return outcome.succeeded ? assigned : nil
    }

    static func encodeCursor(_ cursor: UInt64) -> [UInt8] { Tuple([.int(Int64(cursor))]).encoded }
    static func decodeCursor(_ bytes: [UInt8]) throws -> UInt64 {
        guard case .int(let value)? = try Tuple(decoding: bytes).elements.first, value >= 0 else { throw JobError.invalid("a corrupt stream counter") }
        return UInt64(value)
    }
    static func encodeDedup(_ cursor: UInt64, _ atMs: Int64) -> [UInt8] { Tuple([.int(Int64(cursor)), .int(atMs)]).encoded }
    static func decodeDedup(_ bytes: [UInt8]) throws -> (UInt64, Int64) {
        let elements = try Tuple(decoding: bytes).elements
        guard elements.count == 2, case .int(let cursor) = elements[0], case .int(let at) = elements[1] else {
            throw JobError.invalid("a corrupt dedup record")
        }
        return (UInt64(cursor), at)
    }

    // MARK: Read

    /// Messages from `cursor` on whose subject `pattern` selects (nil: all), up to `limit`
    /// of them, looking at no more than `scanMax` messages. A cursor older than the oldest kept
    /// is refused: `cursorExpired`, naming the oldest.
    public func read(pattern: SubjectPattern?, from cursor: UInt64, limit: Int, scanMax: Int = 10_000) async throws -> TopicPage {
        let messages = space.subspace(["m"])
        let first = try await store.scan(.range(start: messages.range.start, end: messages.range.end), limit: 1, keysOnly: true)
        let oldest = first.kvs.first.flatMap { Self.cursor(ofKey: $0.key) }
        let lastRead = try await store.get(lastKey, revision: first.revision, consistency: .stale)
        let last = try lastRead.map { try Self.decodeCursor($0.value) } ?? 0
        let start = max(cursor, 1)
        if let oldest, start < oldest, cursor != 0 {
            throw JobError.cursorExpired(cursor: cursor, oldest: oldest)
        }
        if oldest == nil, start <= last, cursor != 0, last > 0 {
            throw JobError.cursorExpired(cursor: cursor, oldest: last + 1)
        }
        var found: [TopicMessage] = []
        var next = max(start, oldest ?? start)
        var scanned = 0
        while found.count < limit, scanned < scanMax {
            let page = try await store.scan(
                .range(start: messageKey(next), end: messages.range.end), limit: min(1000, scanMax - scanned), revision: first.revision,
                consistency: .stale)
            var full = false
            for kv in page.kvs {
                scanned += 1
                let message = try TopicMessage(decoding: kv.value, limits: limits)
                next = message.cursor + 1
                if pattern?.matches(message.subject) ?? true {
                    found.append(message)
                    if found.count == limit {
                        full = true
                        break
                    }
                }
            }
            if full { break }
            // The whole stream as of this read was looked at: the next read starts after its last.
            guard page.more else {
                next = max(next, last + 1)
                break
            }
        }
        return TopicPage(messages: found, next: next, oldest: oldest ?? last + 1, last: last, revision: first.revision)
    }

    // MARK: Retention

    public func setRetention(_ rule: TopicRetention) async throws {
        do throws(SubjectError) {
            _ = try SubjectPattern(rule.pattern, limits: limits)
        } catch {
            throw JobError.invalid(error.description)
        }
        guard rule.maxAgeMs >= 0 else { throw JobError.invalid("a maximum age must not be negative") }
        _ = try await store.put(space.pack(["r", .string(rule.pattern)]), rule.encoded)
    }

    public func retentions() async throws -> [TopicRetention] {
        let rules = space.subspace(["r"])
        return try await store.scan(.range(start: rules.range.start, end: rules.range.end), limit: 1000).kvs.map {
            try TopicRetention(decoding: $0.value, limits: limits)
        }
    }

    /// Removes the oldest messages that a retention rule matching their subject no longer
    /// keeps (at most `batch` looked at), and message ids past the dedup window. Returns how
    /// many messages went.
    public func prune(batch: Int = 1000) async throws -> Int {
        let now = nowMs()
        let expired = space.subspace(["dt"])
        let ids = try await store.scan(
            .range(start: expired.range.start, end: expired.pack([.int(now - dedupWindowMs)])), limit: batch, keysOnly: true, consistency: .stale)
        var operations: [TransactionOperation] = []
        for kv in ids.kvs {
            let elements = try expired.unpack(kv.key).elements
            guard elements.count == 2, case .string(let id) = elements[1] else { continue }
            operations += [.delete(Delete(.key(kv.key))), .delete(Delete(.key(dedupKey(id))))]
        }
        let rules = try await retentions().compactMap { rule in (try? SubjectPattern(rule.pattern, limits: limits)).map { ($0, rule) } }
        var removed = 0
        if !rules.isEmpty {
            let last = try await store.get(lastKey, consistency: .stale).map { try Self.decodeCursor($0.value) } ?? 0
            let messages = space.subspace(["m"])
            let page = try await store.scan(.range(start: messages.range.start, end: messages.range.end), limit: batch, consistency: .stale)
            for kv in page.kvs {
                let message = try TopicMessage(decoding: kv.value, limits: limits)
                let gone = rules.contains { pattern, rule in
                    pattern.matches(message.subject)
                        && ((rule.maxAgeMs > 0 && now - message.publishedAtMs > rule.maxAgeMs)
                            || (rule.maxMessages > 0 && last - message.cursor >= rule.maxMessages))
                }
                if gone {
                    operations.append(.delete(Delete(.key(kv.key))))
                    removed += 1
                }
            }
        }
        for chunk in stride(from: 0, to: operations.count, by: 500) {
            _ = try await store.transaction(Transaction(compares: [], success: Array(operations[chunk..<min(chunk + 500, operations.count)])))
        }
        return removed
    }
}
