import AspenCore
import AspenKV
import AspenLayer

/// A delivered queue item: ack it (or nack, or extend) with its receipt before the visibility
/// timeout, or it is delivered again.
public struct QueueDelivery: Sendable, Equatable {
    public var queue: String
    public var id: Int64
    public var payload: [UInt8]
    /// How many times the item has been delivered, this time included.
    public var deliveries: Int64
    /// Names this delivery; a receipt from an earlier delivery is refused.
    public var receipt: Int64
    public var visibleAtMs: Int64

    public init(queue: String, id: Int64, payload: [UInt8], deliveries: Int64, receipt: Int64, visibleAtMs: Int64) {
        self.queue = queue
        self.id = id
        self.payload = payload
        self.deliveries = deliveries
        self.receipt = receipt
        self.visibleAtMs = visibleAtMs
    }
}

public struct QueueStatus: Sendable, Equatable {
    public var visible: Int
    public var inFlight: Int
    public var delayed: Int
    public var deadLetters: Int

    public init(visible: Int, inFlight: Int, delayed: Int, deadLetters: Int) {
        self.visible = visible
        self.inFlight = inFlight
        self.delayed = delayed
        self.deadLetters = deadLetters
    }
}

/// A work queue as a layer over `KeyValueStore`: FIFO among visible items, at-least-once delivery
/// with a visibility timeout, ack/nack/extend by receipt, optional deduplication ids and delays,
/// and a dead-letter queue for items delivered too many times (with redrive). An acked item is
/// never delivered again. Times are the caller's clock in milliseconds.
public struct WorkQueue: Sendable {
    public let store: any KeyValueStore
    let space: Subspace
    let sequence: SequenceGenerator
    let limits: CoordinationLimits
    /// Deliveries after which an item goes to the dead-letter queue instead.
    public let maxDeliveries: Int64
    public var payloadBytesMax: Int { limits.queuePayloadBytesMax }
    public var visibilityMsMax: Int64 { limits.queueVisibilityMsMax }
    let nowMs: @Sendable () -> Int64

    public init(
        store: any KeyValueStore, maxDeliveries: Int64 = 5, limits: CoordinationLimits = .standard, nowMs: @escaping @Sendable () -> Int64
    ) {
        self.store = store
        self.space = Subspace(["aspen", "queue"])
        self.sequence = SequenceGenerator(store: store, limits: limits)
        self.limits = limits
        self.maxDeliveries = maxDeliveries
        self.nowMs = nowMs
    }

    struct Item {
        var payload: [UInt8]
        var visibleAtMs: Int64
        var deliveries: Int64
        var dedup: String?

        var encoded: [UInt8] {
            Tuple([.bytes(payload), .int(visibleAtMs), .int(deliveries), dedup.map { .string($0) } ?? .null]).encoded
        }

        init(payload: [UInt8], visibleAtMs: Int64, deliveries: Int64, dedup: String?) {
            self.payload = payload
            self.visibleAtMs = visibleAtMs
            self.deliveries = deliveries
            self.dedup = dedup
        }

        init?(_ bytes: [UInt8]) {
            guard let tuple = try? Tuple(decoding: bytes), tuple.elements.count == 4, case .bytes(let payload) = tuple.elements[0],
                case .int(let visible) = tuple.elements[1], case .int(let deliveries) = tuple.elements[2]
            else { return nil }
            let dedup: String? = if case .string(let id) = tuple.elements[3] { id } else { nil }
            self.init(payload: payload, visibleAtMs: visible, deliveries: deliveries, dedup: dedup)
        }
    }

    func items(_ queue: String) -> Subspace { space.subspace([.string(queue), "item"]) }
    func deadLetters(_ queue: String) -> Subspace { space.subspace([.string(queue), "dead"]) }
    func dedupKey(_ queue: String, _ id: String) -> [UInt8] { space.pack([.string(queue), "dedup", .string(id)]) }

    func check(_ queue: String) throws(CoordinationError) {
        guard !queue.isEmpty, queue.utf8.count <= limits.nameBytesMax else {
            throw .invalidArgument("a queue name must have 1 to \(limits.nameBytesMax) bytes")
        }
    }

    // MARK: Enqueue

    /// Adds an item at the tail; with `dedupID`, an item with the same id already in the queue
    /// makes this a no-op returning that item's id. `delayMs` keeps it invisible for a while.
    @discardableResult
    public func enqueue(_ queue: String, _ payload: [UInt8], dedupID: String? = nil, delayMs: Int64 = 0) async throws -> Int64 {
        try check(queue)
        guard payload.count <= payloadBytesMax else {
            throw CoordinationError.invalidArgument("a queue item of \(payload.count) bytes exceeds payloadBytesMax (\(payloadBytesMax))")
        }
        guard (0...visibilityMsMax).contains(delayMs) else { throw CoordinationError.invalidArgument("a delay must be 0 to \(visibilityMsMax) ms") }
        let id = try await sequence.next("queue/\(queue)")
        let item = Item(payload: payload, visibleAtMs: nowMs() + delayMs, deliveries: 0, dedup: dedupID)
        var operations: [TransactionOperation] = [.put(Put(key: items(queue).pack([.int(id)]), value: item.encoded))]
        var compares: [Compare] = []
        if let dedupID {
            compares.append(.absent(dedupKey(queue, dedupID)))
            operations.append(.put(Put(key: dedupKey(queue, dedupID), value: Tuple([.int(id)]).encoded)))
        }
        let outcome = try await store.transaction(
            Transaction(compares: compares, success: operations, failure: dedupID.map { [.get(RangeRequest(.key(dedupKey(queue, $0))))] } ?? []))
        if outcome.succeeded { return id }
        if case .get(let range)? = outcome.results.first, let existing = range.kvs.first,
            case .int(let existingID)? = (try? Tuple(decoding: existing.value))?.elements.first
        {
            return existingID
        }
        throw CoordinationError.contention(attempts: 1)
    }

    public func enqueueBatch(_ queue: String, _ payloads: [[UInt8]]) async throws -> [Int64] {
        var ids: [Int64] = []
        for payload in payloads { ids.append(try await enqueue(queue, payload)) }
        return ids
    }

    // MARK: Dequeue

    /// The oldest visible item, made invisible for `visibilityMs`; nil if none is visible. Items
    /// delivered `maxDeliveries` times already go to the dead-letter queue instead.
    public func dequeue(_ queue: String, visibilityMs: Int64) async throws -> QueueDelivery? {
        try check(queue)
        guard (1...visibilityMsMax).contains(visibilityMs) else {
            throw CoordinationError.invalidArgument("a visibility timeout must be 1 to \(visibilityMsMax) ms")
        }
        var attempts = 0
        while attempts < limits.casRetriesMax {
            // The oldest few visible items: when another consumer takes one first, the next is
            // tried at once instead of every consumer racing for the head again.
            let candidates = try await visible(queue, upTo: 8)
            guard !candidates.isEmpty else { return nil }
            for (kv, id, item) in candidates {
                attempts += 1
                let now = nowMs()
                if item.deliveries >= maxDeliveries {
                    _ = try await store.transaction(
                        Transaction(
                            compares: [Compare(key: kv.key, .modRevision(kv.modRevision))],
                            success: [.delete(Delete(.key(kv.key))), .put(Put(key: deadLetters(queue).pack([.int(id)]), value: item.encoded))]))
                    continue
                }
                var delivered = item
                delivered.deliveries += 1
                delivered.visibleAtMs = now + visibilityMs
                let outcome = try await store.transaction(
                    Transaction(
                        compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: [.put(Put(key: kv.key, value: delivered.encoded))]))
                if outcome.succeeded {
                    return QueueDelivery(
                        queue: queue, id: id, payload: item.payload, deliveries: delivered.deliveries, receipt: outcome.revision,
                        visibleAtMs: delivered.visibleAtMs)
                }
            }
        }
        throw CoordinationError.contention(attempts: limits.casRetriesMax)
    }

    /// The oldest visible item without delivering it.
    public func peek(_ queue: String) async throws -> (id: Int64, payload: [UInt8])? {
        try await firstVisible(queue).map { ($0.id, $0.item.payload) }
    }

    func firstVisible(_ queue: String) async throws -> (kv: KeyValue, id: Int64, item: Item)? {
        try await visible(queue, upTo: 1).first
    }

    /// The oldest visible items, at most `most` of them, oldest first.
    func visible(_ queue: String, upTo most: Int) async throws -> [(kv: KeyValue, id: Int64, item: Item)] {
        var found: [(kv: KeyValue, id: Int64, item: Item)] = []
        let now = nowMs()
        let range = items(queue).range
        var continuation: Bytes?
        repeat {
            let page = try await store.read(
                RangeRequest(.range(start: range.start, end: range.end), limit: 100, continuation: continuation), consistency: .linearizable)
            for kv in page.kvs {
                guard let item = Item(kv.value), item.visibleAtMs <= now,
                    case .int(let id)? = try items(queue).unpack(kv.key).elements.first
                else { continue }
                found.append((kv, id, item))
                if found.count == most { return found }
            }
            continuation = page.more ? page.continuation : nil
        } while continuation != nil
        return found
    }

    // MARK: Settling

    /// Removes a delivered item for good; a receipt from an earlier delivery is refused.
    public func ack(_ delivery: QueueDelivery) async throws {
        let key = items(delivery.queue).pack([.int(delivery.id)])
        var operations: [TransactionOperation] = [.delete(Delete(.key(key)))]
        if let current = try await store.get(key), let item = Item(current.value), let dedup = item.dedup {
            operations.append(.delete(Delete(.key(dedupKey(delivery.queue, dedup)))))
        }
        let outcome = try await store.transaction(
            Transaction(compares: [Compare(key: key, .modRevision(delivery.receipt))], success: operations))
        guard outcome.succeeded else { throw CoordinationError.staleToken(name: "queue \(delivery.queue) item \(delivery.id)", token: delivery.receipt, current: nil) }
    }

    /// Makes a delivered item visible again at once (or after `delayMs`).
    public func nack(_ delivery: QueueDelivery, delayMs: Int64 = 0) async throws {
        _ = try await setVisibility(delivery, at: nowMs() + delayMs)
    }

    /// Keeps a delivered item invisible `byMs` longer; returns the delivery with its new receipt.
    public func extend(_ delivery: QueueDelivery, byMs: Int64) async throws -> QueueDelivery {
        guard (1...visibilityMsMax).contains(byMs) else { throw CoordinationError.invalidArgument("extend by 1 to \(visibilityMsMax) ms") }
        return try await setVisibility(delivery, at: max(delivery.visibleAtMs, nowMs()) + byMs)
    }

    func setVisibility(_ delivery: QueueDelivery, at visibleAtMs: Int64) async throws -> QueueDelivery {
        let key = items(delivery.queue).pack([.int(delivery.id)])
        guard let current = try await store.get(key), current.modRevision == delivery.receipt, var item = Item(current.value) else {
            throw CoordinationError.staleToken(name: "queue \(delivery.queue) item \(delivery.id)", token: delivery.receipt, current: nil)
        }
        item.visibleAtMs = visibleAtMs
        let outcome = try await store.transaction(
            Transaction(compares: [Compare(key: key, .modRevision(delivery.receipt))], success: [.put(Put(key: key, value: item.encoded))]))
        guard outcome.succeeded else {
            throw CoordinationError.staleToken(name: "queue \(delivery.queue) item \(delivery.id)", token: delivery.receipt, current: nil)
        }
        var updated = delivery
        updated.receipt = outcome.revision
        updated.visibleAtMs = visibleAtMs
        return updated
    }

    // MARK: Inspection and the dead-letter queue

    public func status(_ queue: String) async throws -> QueueStatus {
        let now = nowMs()
        var status = QueueStatus(visible: 0, inFlight: 0, delayed: 0, deadLetters: 0)
        for kv in try await scanAll(items(queue)) {
            guard let item = Item(kv.value) else { continue }
            if item.visibleAtMs <= now {
                status.visible += 1
            } else if item.deliveries > 0 {
                status.inFlight += 1
            } else {
                status.delayed += 1
            }
        }
        status.deadLetters = try await store.count(.range(start: deadLetters(queue).range.start, end: deadLetters(queue).range.end))
        return status
    }

    /// Moves every dead letter back to the tail of the queue, with its delivery count reset.
    @discardableResult
    public func redrive(_ queue: String) async throws -> Int {
        var moved = 0
        for kv in try await scanAll(deadLetters(queue)) {
            guard var item = Item(kv.value) else { continue }
            item.deliveries = 0
            item.visibleAtMs = nowMs()
            let id = try await sequence.next("queue/\(queue)")
            let outcome = try await store.transaction(
                Transaction(
                    compares: [Compare(key: kv.key, .modRevision(kv.modRevision))],
                    success: [.delete(Delete(.key(kv.key))), .put(Put(key: items(queue).pack([.int(id)]), value: item.encoded))]))
            if outcome.succeeded { moved += 1 }
        }
        return moved
    }

    func scanAll(_ subspace: Subspace) async throws -> [KeyValue] {
        var all: [KeyValue] = []
        var continuation: Bytes?
        repeat {
            let page = try await store.read(
                RangeRequest(.range(start: subspace.range.start, end: subspace.range.end), continuation: continuation), consistency: .linearizable)
            all += page.kvs
            continuation = page.more ? page.continuation : nil
        } while continuation != nil
        return all
    }
}
