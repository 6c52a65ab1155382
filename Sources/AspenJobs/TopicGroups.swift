import AspenCore
import AspenKV
import AspenLayer

/// A consumer group: competing consumers share the messages of a subject pattern, each message
/// delivered to one of them at a time until acknowledged.
public struct ConsumerGroup: Sendable, Equatable {
    public var name: String
    public var pattern: String
    /// A delivery not acknowledged (or extended) within this goes to another consumer.
    public var ackWaitMs: Int64
    /// Deliveries after which a message goes to the group's dead letters instead.
    public var maxDeliveries: Int
    /// Unacknowledged deliveries one consumer may hold; past it, fetches are refused.
    public var maxPending: Int
    /// The next stream cursor the group has not looked at.
    public var next: UInt64

    public init(name: String, pattern: String, ackWaitMs: Int64 = 30_000, maxDeliveries: Int = 5, maxPending: Int = 1000, next: UInt64 = 0) {
        self.name = name
        self.pattern = pattern
        self.ackWaitMs = ackWaitMs
        self.maxDeliveries = maxDeliveries
        self.maxPending = maxPending
        self.next = next
    }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeString(name)
        writer.writeString(pattern)
        writer.writeVarint(signed: ackWaitMs)
        writer.writeVarint(UInt64(maxDeliveries))
        writer.writeVarint(UInt64(maxPending))
        writer.writeVarint(next)
        return writer.bytes
    }

    init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        name = try reader.readString(limit: limits.jobNameBytesMax)
        pattern = try reader.readString(limit: limits.subjectBytesMax)
        ackWaitMs = try reader.readSignedVarint()
        maxDeliveries = try reader.readCount(limit: limits.jobAttemptsMax)
        maxPending = try reader.readCount(limit: 1_000_000)
        next = try reader.readVarint()
        try reader.expectEnd()
    }
}

/// A message handed to one consumer of a group: acknowledge it with its receipt.
public struct GroupDelivery: Sendable, Equatable {
    public var message: TopicMessage
    /// Names this delivery; a receipt of an earlier delivery of the message is refused.
    public var receipt: UInt64
    /// Deliveries of the message so far, this one included.
    public var deliveries: Int

    public init(message: TopicMessage, receipt: UInt64, deliveries: Int) {
        self.message = message
        self.receipt = receipt
        self.deliveries = deliveries
    }
}

/// A delivery waiting for its acknowledgement.
struct PendingDelivery: Sendable, Equatable {
    var consumer: String
    var deliveries: Int
    var receipt: UInt64
    var visibleAtMs: Int64

    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.writeString(consumer)
        writer.writeVarint(UInt64(deliveries))
        writer.writeFixed(receipt)
        writer.writeVarint(signed: visibleAtMs)
        return writer.bytes
    }

    init(consumer: String, deliveries: Int, receipt: UInt64, visibleAtMs: Int64) {
        self.consumer = consumer
        self.deliveries = deliveries
        self.receipt = receipt
        self.visibleAtMs = visibleAtMs
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        consumer = try reader.readString(limit: 256)
        deliveries = try reader.readCount(limit: 1_000_000)
        receipt = try reader.readFixed64()
        visibleAtMs = try reader.readSignedVarint()
        try reader.expectEnd()
    }
}

extension TopicLog {
    func groupKey(_ name: String) -> Bytes { space.pack(["g", .string(name)]) }
    func pendingSpace(_ name: String) -> Subspace { space.subspace(["gp", .string(name)]) }
    func deadSpace(_ name: String) -> Subspace { space.subspace(["gd", .string(name)]) }

    /// Creates a group that starts at `from` (nil: with the messages published from now on), or
    /// returns the existing one if it has the same pattern.
    public func createGroup(_ group: ConsumerGroup, from: UInt64?) async throws -> ConsumerGroup {
        guard !group.name.isEmpty, group.name.utf8.count <= limits.jobNameBytesMax else {
            throw JobError.invalid("a group name must be 1 to \(limits.jobNameBytesMax) bytes")
        }
        do throws(SubjectError) {
            _ = try SubjectPattern(group.pattern, limits: limits)
        } catch {
            throw JobError.invalid(error.description)
        }
        guard (100...43_200_000).contains(group.ackWaitMs), (1...limits.jobAttemptsMax).contains(group.maxDeliveries), (1...100_000).contains(group.maxPending)
        else {
            throw JobError.invalid(
                "ack wait 100 ms to 12 h, max deliveries 1 to \(limits.jobAttemptsMax), max pending 1 to 100000 (not \(group.ackWaitMs) ms, \(group.maxDeliveries), \(group.maxPending))")
        }
        if let existing = try await store.get(groupKey(group.name)) {
            let current = try ConsumerGroup(decoding: existing.value, limits: limits)
            guard current.pattern == group.pattern else {
                throw JobError.invalid("group \(group.name) exists with pattern \(current.pattern), not \(group.pattern)")
            }
            return current
        }
        var made = group
        if let from {
            made.next = max(1, from)
        } else {
            let last = try await store.get(lastKey).map { try Self.decodeCursor($0.value) } ?? 0
            made.next = last + 1
        }
        let outcome = try await store.transaction(
            Transaction(compares: [.absent(groupKey(group.name))], success: [.put(Put(key: groupKey(group.name), value: made.encoded))]))
        guard outcome.succeeded else { return try await createGroup(group, from: from) }
        return made
    }

    func group(_ name: String) async throws -> (ConsumerGroup, KeyValue) {
        guard let kv = try await store.get(groupKey(name)) else { throw JobError.invalid("no consumer group \(name)") }
        return (try ConsumerGroup(decoding: kv.value, limits: limits), kv)
    }

    /// Up to `max` deliveries for `consumer`: first messages whose delivery expired (another
    /// consumer died or let its ack wait pass), then new ones; waits up to `waitMs` for one.
    /// A consumer already holding `maxPending` unacknowledged deliveries is refused.
    ///
    /// The deliveries' messages stay within `bytesMax` (at least one is given): a fetch answers in
    /// one frame whatever the messages' sizes.
    public func fetch(
        group name: String, consumer: String, max: Int, waitMs: Int64, bytesMax: Int = Int.max, random: @Sendable () -> UInt64
    ) async throws -> [GroupDelivery] {
        guard !consumer.isEmpty, consumer.utf8.count <= 256 else { throw JobError.invalid("a consumer name must be 1 to 256 bytes") }
        guard (1...1000).contains(max) else { throw JobError.invalid("a fetch takes 1 to 1000 messages, not \(max)") }
        let deadline = nowMs() + Swift.min(Swift.max(0, waitMs), 60_000)
        // Counted before the first look: a publish committed after a look sees this fetch waiting.
        fetchesWaiting.add(1, ordering: .sequentiallyConsistent)
        defer { fetchesWaiting.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            // Taken before looking: a publish after the look still ends the wait.
            let seen = await arrivals.generation
            let delivered = try await fetchOnce(name, consumer: consumer, max: max, bytesMax: bytesMax, random: random)
            if !delivered.isEmpty { return delivered }
            guard nowMs() < deadline else { return [] }
            // A publish here ends the wait at once; deliveries coming due again (an ack wait
            // passed, a nak's delay) are looked for every 100 ms.
            await arrivals.wait(upToMs: Swift.min(100, Swift.max(1, deadline - nowMs())), since: seen)
            try Task.checkCancellation()
        }
    }

    func fetchOnce(_ name: String, consumer: String, max: Int, bytesMax: Int, random: @Sendable () -> UInt64) async throws -> [GroupDelivery] {
        let (group, groupKV) = try await self.group(name)
        let now = nowMs()
        let pending = pendingSpace(name)
        let page = try await store.scan(.range(start: pending.range.start, end: pending.range.end), limit: 10_000)
        var entries: [(cursor: UInt64, kv: KeyValue, entry: PendingDelivery)] = []
        for kv in page.kvs {
            guard case .int(let cursor)? = try pending.unpack(kv.key).elements.first else { continue }
            entries.append((UInt64(cursor), kv, try PendingDelivery(decoding: kv.value)))
        }
        let held = entries.filter { $0.entry.consumer == consumer && $0.entry.visibleAtMs > now }.count
        guard held < group.maxPending else {
            maxPendingRefusals.withLock { $0[name, default: 0] += 1 }
            throw JobError.invalid("max pending reached: consumer \(consumer) holds \(held) unacknowledged messages of group \(name) (max pending \(group.maxPending))")
        }
        let room = Swift.min(max, group.maxPending - held)
        var delivered: [GroupDelivery] = []
        var bytes = 0
        // Expired deliveries first: to this consumer again, or to the dead letters.
        for (cursor, kv, entry) in entries where entry.visibleAtMs <= now && delivered.count < room && bytes < bytesMax {
            guard let messageKV = try await store.get(messageKey(cursor)) else {
                _ = try await store.transaction(Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: [.delete(Delete(.key(kv.key)))]))
                continue
            }
            if entry.deliveries >= group.maxDeliveries {
                _ = try await store.transaction(
                    Transaction(
                        compares: [Compare(key: kv.key, .modRevision(kv.modRevision))],
                        success: [.delete(Delete(.key(kv.key))), .put(Put(key: deadSpace(name).pack([.int(Int64(cursor))]), value: kv.value))]))
                continue
            }
            let next = PendingDelivery(consumer: consumer, deliveries: entry.deliveries + 1, receipt: random(), visibleAtMs: now + group.ackWaitMs)
            let outcome = try await store.transaction(
                Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: [.put(Put(key: kv.key, value: next.encoded))]))
            if outcome.succeeded {
                delivered.append(GroupDelivery(message: try TopicMessage(decoding: messageKV.value, limits: limits), receipt: next.receipt, deliveries: next.deliveries))
                bytes += messageKV.value.count
            }
        }
        guard delivered.count < room, bytes < bytesMax else { return delivered }
        // New messages: taken from the group's cursor on, by a write conditioned on the group.
        let selector = try SubjectPattern(group.pattern, limits: limits)
        let fresh: TopicPage
        do {
            fresh = try await read(pattern: selector, from: group.next, limit: room - delivered.count)
        } catch JobError.cursorExpired(_, let oldest) {
            // Retention removed messages the group had not reached: it goes on from the oldest kept.
            var moved = group
            moved.next = oldest
            _ = try await store.transaction(
                Transaction(compares: [Compare(key: groupKV.key, .modRevision(groupKV.modRevision))], success: [.put(Put(key: groupKV.key, value: moved.encoded))]))
            return delivered
        }
        guard fresh.next > group.next else { return delivered }
        var advanced = group
        advanced.next = fresh.next
        var taking = fresh.messages
        // Within the byte budget: the group goes on after the last message taken.
        for (index, message) in fresh.messages.enumerated() {
            bytes += message.encoded.count
            if bytes > bytesMax, index > 0 || !delivered.isEmpty {
                taking = Array(fresh.messages[..<index])
                advanced.next = message.cursor
                break
            }
        }
        var operations: [TransactionOperation] = [.put(Put(key: groupKV.key, value: advanced.encoded))]
        var taken: [GroupDelivery] = []
        for message in taking {
            let entry = PendingDelivery(consumer: consumer, deliveries: 1, receipt: random(), visibleAtMs: now + group.ackWaitMs)
            operations.append(.put(Put(key: pending.pack([.int(Int64(message.cursor))]), value: entry.encoded)))
            taken.append(GroupDelivery(message: message, receipt: entry.receipt, deliveries: 1))
        }
        let outcome = try await store.transaction(
            Transaction(compares: [Compare(key: groupKV.key, .modRevision(groupKV.modRevision))], success: operations))
        return outcome.succeeded ? delivered + taken : delivered
    }

    /// Acknowledges (`ack`), hands back after `delayMs` (`nak`) or extends (`extend`) a delivery.
    /// A receipt of any but the message's current delivery is refused.
    public func settle(group name: String, cursor: UInt64, receipt: UInt64, action: GroupAction) async throws {
        let (group, _) = try await self.group(name)
        let key = pendingSpace(name).pack([.int(Int64(cursor))])
        guard let kv = try await store.get(key), var entry = try? PendingDelivery(decoding: kv.value), entry.receipt == receipt else {
            throw JobError.staleAttempt(job: cursor, token: receipt, reason: "the receipt is not message \(cursor)'s current delivery in group \(name)")
        }
        let operation: TransactionOperation
        switch action {
        case .ack: operation = .delete(Delete(.key(key)))
        case .nak(let delayMs):
            entry.visibleAtMs = nowMs() + Swift.max(0, delayMs)
            operation = .put(Put(key: key, value: entry.encoded))
        case .extend:
            entry.visibleAtMs = nowMs() + group.ackWaitMs
            operation = .put(Put(key: key, value: entry.encoded))
        }
        let outcome = try await store.transaction(Transaction(compares: [Compare(key: key, .modRevision(kv.modRevision))], success: [operation]))
        guard outcome.succeeded else {
            throw JobError.staleAttempt(job: cursor, token: receipt, reason: "message \(cursor) was delivered again in group \(name)")
        }
    }

    /// The group, its pending count and its dead letters' cursors.
    /// Removes a group with its deliveries and dead letters (the messages stay in the stream).
    public func removeGroup(_ name: String) async throws {
        let pending = pendingSpace(name)
        let dead = deadSpace(name)
        _ = try await store.transaction(
            Transaction(compares: [], success: [
                .delete(Delete(.key(groupKey(name)))), .delete(Delete(.range(start: pending.range.start, end: pending.range.end))),
                .delete(Delete(.range(start: dead.range.start, end: dead.range.end))),
            ]))
    }

    /// Every group's place, deliveries waiting for an acknowledgement and dead letters, with the
    /// fetches refused at max pending on this node (for `/metrics`).
    public func groupMetrics() async throws -> [String] {
        let groups = space.subspace(["g"])
        var rows: [(name: String, next: UInt64, pending: Int, dead: Int)] = []
        for kv in try await store.scan(.range(start: groups.range.start, end: groups.range.end), limit: 1000, consistency: .stale).kvs {
            guard let group = try? ConsumerGroup(decoding: kv.value, limits: limits) else { continue }
            let pending = pendingSpace(group.name)
            let dead = deadSpace(group.name)
            rows.append((
                group.name, group.next, try await store.count(.range(start: pending.range.start, end: pending.range.end), consistency: .stale),
                try await store.count(.range(start: dead.range.start, end: dead.range.end), consistency: .stale)
            ))
        }
        guard !rows.isEmpty else { return [] }
        let refusals = maxPendingRefusals.withLock { $0 }
        var text = MetricsText()
        text.add("aspen_group_next_cursor", .gauge, "The next stream cursor a consumer group has not taken.", label: "group", rows.map { ($0.name, "\($0.next)") })
        text.add(
            "aspen_group_pending", .gauge, "Messages delivered to a group's consumers and not yet acknowledged.", label: "group",
            rows.map { ($0.name, "\($0.pending)") })
        text.add("aspen_group_dead", .gauge, "Messages in a group's dead letters.", label: "group", rows.map { ($0.name, "\($0.dead)") })
        text.add(
            "aspen_group_max_pending_refusals_total", .counter, "Fetches refused because the consumer held max pending (on this node).",
            label: "group", rows.map { ($0.name, "\(refusals[$0.name] ?? 0)") })
        return text.lines
    }

    public func groupStatus(_ name: String) async throws -> (group: ConsumerGroup, pending: Int, dead: [UInt64]) {
        let (group, _) = try await self.group(name)
        let pending = pendingSpace(name)
        let count = try await store.count(.range(start: pending.range.start, end: pending.range.end))
        let dead = deadSpace(name)
        let deadPage = try await store.scan(.range(start: dead.range.start, end: dead.range.end), limit: 1000, keysOnly: true)
        let cursors = try deadPage.kvs.compactMap { kv -> UInt64? in
            guard case .int(let cursor)? = try dead.unpack(kv.key).elements.first else { return nil }
            return UInt64(cursor)
        }
        return (group, count, cursors)
    }
}

/// What a consumer does with a delivery.
public enum GroupAction: Sendable, Equatable {
    case ack
    /// Hand it back: deliverable again after the delay.
    case nak(delayMs: Int64)
    /// Still working on it: the ack wait starts again.
    case extend
}
