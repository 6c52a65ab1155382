import AspenCore
import AspenKV
import AspenLayer

/// One coordination operation as a value, so it can run where the data is: a client sends it
/// to the leader, whose node executes it against its own store (`CoordinationExecutor`); one
/// round trip per operation, and the retries of a contended compare-and-swap happen next to the
/// log instead of across the network. Encoded as a tuple (`AspenLayer`), verb first.
public enum CoordinationCall: Sendable, Equatable {
    case lockAcquire(name: String, holder: String, ttlMs: Int64, waitMs: Int64)
    case lockRenew(name: String, holder: String, token: Int64)
    case lockRelease(name: String, holder: String, token: Int64)
    case lockHolder(name: String)
    case lockSetAcquire(names: [String], holder: String, ttlMs: Int64, waitMs: Int64)
    case lockSetRelease(names: [String], holder: String, token: Int64)
    case campaign(name: String, candidate: String, ttlMs: Int64, waitMs: Int64)
    case electionLeader(name: String)
    case electionRenew(name: String, candidate: String, term: Int64)
    case resign(name: String, candidate: String, term: Int64)
    case counter(name: String, signed: Bool, CounterOperation)
    case sequenceReserve(name: String, count: Int64)
    case rateAcquire(name: String, capacity: Double, perSecond: Double, count: Double, waitMs: Int64)
    case rateReset(name: String, capacity: Double, perSecond: Double)
    case enqueue(queue: String, payloads: [[UInt8]], dedupID: String?, delayMs: Int64)
    case dequeue(queue: String, visibilityMs: Int64, maxDeliveries: Int64)
    case peek(queue: String)
    case ack(QueueDelivery)
    case nack(QueueDelivery, delayMs: Int64)
    case extend(QueueDelivery, byMs: Int64)
    case queueStatus(queue: String)
    case redrive(queue: String)
    case semaphoreAcquire(name: String, capacity: Int64, holder: String, ttlMs: Int64, waitMs: Int64)
    case semaphoreRelease(permit: String, holder: String, token: Int64)
    case semaphoreHolders(name: String, capacity: Int64)
    case barrierEnter(name: String, participant: String, count: Int64, waitMs: Int64)
    case barrierLeave(name: String, participant: String)
    case barrierStatus(name: String)
    case readLock(name: String, holder: String, ttlMs: Int64, waitMs: Int64)
    case writeLock(name: String, holder: String, ttlMs: Int64, waitMs: Int64)
    case readUnlock(LockGrant)
    case writeUnlock(LockGrant)
    case downgrade(LockGrant)
    case register(ServiceInstance, ttlMs: Int64)
    case heartbeat(lease: LeaseID)
    case deregister(service: String, instance: String)
    case discover(service: String, tags: [String])

    public enum CounterOperation: Sendable, Equatable {
        case get
        case add(Int64)
        case subtract(Int64)
        case set(Int64)
        case compareAndSet(expected: Int64, new: Int64)
    }

    /// How long the node may take on it beyond an ordinary request: the wait it was asked for.
    public var waitMs: Int64 {
        switch self {
        case .lockAcquire(_, _, _, let wait), .lockSetAcquire(_, _, _, let wait), .campaign(_, _, _, let wait),
            .rateAcquire(_, _, _, _, let wait), .semaphoreAcquire(_, _, _, _, let wait), .barrierEnter(_, _, _, let wait),
            .readLock(_, _, _, let wait), .writeLock(_, _, _, let wait):
            return max(0, wait)
        default: return 0
        }
    }

    /// Whether the call only reads, and so may be sent again after an unknown outcome.
    public var isReadOnly: Bool {
        switch self {
        case .lockHolder, .electionLeader, .peek, .queueStatus, .semaphoreHolders, .barrierStatus, .discover: return true
        case .counter(_, _, .get): return true
        default: return false
        }
    }

    public var encoded: [UInt8] { Tuple(elements).encoded }

    var elements: [TupleElement] {
        switch self {
        case .lockAcquire(let name, let holder, let ttl, let wait): ["lock.acquire", .string(name), .string(holder), .int(ttl), .int(wait)]
        case .lockRenew(let name, let holder, let token): ["lock.renew", .string(name), .string(holder), .int(token)]
        case .lockRelease(let name, let holder, let token): ["lock.release", .string(name), .string(holder), .int(token)]
        case .lockHolder(let name): ["lock.holder", .string(name)]
        case .lockSetAcquire(let names, let holder, let ttl, let wait):
            ["lockset.acquire", .tuple(names.map { .string($0) }), .string(holder), .int(ttl), .int(wait)]
        case .lockSetRelease(let names, let holder, let token): ["lockset.release", .tuple(names.map { .string($0) }), .string(holder), .int(token)]
        case .campaign(let name, let candidate, let ttl, let wait): ["election.campaign", .string(name), .string(candidate), .int(ttl), .int(wait)]
        case .electionLeader(let name): ["election.leader", .string(name)]
        case .electionRenew(let name, let candidate, let term): ["election.renew", .string(name), .string(candidate), .int(term)]
        case .resign(let name, let candidate, let term): ["election.resign", .string(name), .string(candidate), .int(term)]
        case .counter(let name, let signed, let operation):
            ["counter", .string(name), .bool(signed)] + operation.elements
        case .sequenceReserve(let name, let count): ["sequence.reserve", .string(name), .int(count)]
        case .rateAcquire(let name, let capacity, let rate, let count, let wait):
            ["rate.acquire", .string(name), .double(capacity), .double(rate), .double(count), .int(wait)]
        case .rateReset(let name, let capacity, let rate): ["rate.reset", .string(name), .double(capacity), .double(rate)]
        case .enqueue(let queue, let payloads, let dedup, let delay):
            ["queue.enqueue", .string(queue), .tuple(payloads.map { .bytes($0) }), dedup.map { .string($0) } ?? .null, .int(delay)]
        case .dequeue(let queue, let visibility, let deliveries): ["queue.dequeue", .string(queue), .int(visibility), .int(deliveries)]
        case .peek(let queue): ["queue.peek", .string(queue)]
        case .ack(let delivery): ["queue.ack", .tuple(delivery.elements)]
        case .nack(let delivery, let delay): ["queue.nack", .tuple(delivery.elements), .int(delay)]
        case .extend(let delivery, let by): ["queue.extend", .tuple(delivery.elements), .int(by)]
        case .queueStatus(let queue): ["queue.status", .string(queue)]
        case .redrive(let queue): ["queue.redrive", .string(queue)]
        case .semaphoreAcquire(let name, let capacity, let holder, let ttl, let wait):
            ["semaphore.acquire", .string(name), .int(capacity), .string(holder), .int(ttl), .int(wait)]
        case .semaphoreRelease(let permit, let holder, let token): ["semaphore.release", .string(permit), .string(holder), .int(token)]
        case .semaphoreHolders(let name, let capacity): ["semaphore.holders", .string(name), .int(capacity)]
        case .barrierEnter(let name, let participant, let count, let wait):
            ["barrier.enter", .string(name), .string(participant), .int(count), .int(wait)]
        case .barrierLeave(let name, let participant): ["barrier.leave", .string(name), .string(participant)]
        case .barrierStatus(let name): ["barrier.status", .string(name)]
        case .readLock(let name, let holder, let ttl, let wait): ["rwlock.read", .string(name), .string(holder), .int(ttl), .int(wait)]
        case .writeLock(let name, let holder, let ttl, let wait): ["rwlock.write", .string(name), .string(holder), .int(ttl), .int(wait)]
        case .readUnlock(let grant): ["rwlock.read-release", .tuple(grant.elements)]
        case .writeUnlock(let grant): ["rwlock.write-release", .tuple(grant.elements)]
        case .downgrade(let grant): ["rwlock.downgrade", .tuple(grant.elements)]
        case .register(let instance, let ttl): ["service.register", .tuple(instance.elements), .int(ttl)]
        case .heartbeat(let lease): ["service.heartbeat", .int(lease)]
        case .deregister(let service, let instance): ["service.deregister", .string(service), .string(instance)]
        case .discover(let service, let tags): ["service.discover", .string(service), .tuple(tags.map { .string($0) })]
        }
    }

    public init(decoding bytes: [UInt8]) throws {
        var fields = Fields(try Tuple(decoding: bytes).elements, what: "coordination call")
        let verb = try fields.string()
        switch verb {
        case "lock.acquire":
            self = .lockAcquire(name: try fields.string(), holder: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "lock.renew": self = .lockRenew(name: try fields.string(), holder: try fields.string(), token: try fields.int())
        case "lock.release": self = .lockRelease(name: try fields.string(), holder: try fields.string(), token: try fields.int())
        case "lock.holder": self = .lockHolder(name: try fields.string())
        case "lockset.acquire":
            self = .lockSetAcquire(names: try fields.strings(), holder: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "lockset.release": self = .lockSetRelease(names: try fields.strings(), holder: try fields.string(), token: try fields.int())
        case "election.campaign":
            self = .campaign(name: try fields.string(), candidate: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "election.leader": self = .electionLeader(name: try fields.string())
        case "election.renew": self = .electionRenew(name: try fields.string(), candidate: try fields.string(), term: try fields.int())
        case "election.resign": self = .resign(name: try fields.string(), candidate: try fields.string(), term: try fields.int())
        case "counter":
            let name = try fields.string()
            let signed = try fields.bool()
            self = .counter(name: name, signed: signed, try CounterOperation(&fields))
        case "sequence.reserve": self = .sequenceReserve(name: try fields.string(), count: try fields.int())
        case "rate.acquire":
            self = .rateAcquire(
                name: try fields.string(), capacity: try fields.double(), perSecond: try fields.double(), count: try fields.double(),
                waitMs: try fields.int())
        case "rate.reset": self = .rateReset(name: try fields.string(), capacity: try fields.double(), perSecond: try fields.double())
        case "queue.enqueue":
            self = .enqueue(queue: try fields.string(), payloads: try fields.list { try $0.bytes() }, dedupID: try fields.optionalString(), delayMs: try fields.int())
        case "queue.dequeue": self = .dequeue(queue: try fields.string(), visibilityMs: try fields.int(), maxDeliveries: try fields.int())
        case "queue.peek": self = .peek(queue: try fields.string())
        case "queue.ack": self = .ack(try fields.nested { try QueueDelivery(&$0) })
        case "queue.nack": self = .nack(try fields.nested { try QueueDelivery(&$0) }, delayMs: try fields.int())
        case "queue.extend": self = .extend(try fields.nested { try QueueDelivery(&$0) }, byMs: try fields.int())
        case "queue.status": self = .queueStatus(queue: try fields.string())
        case "queue.redrive": self = .redrive(queue: try fields.string())
        case "semaphore.acquire":
            self = .semaphoreAcquire(
                name: try fields.string(), capacity: try fields.int(), holder: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "semaphore.release": self = .semaphoreRelease(permit: try fields.string(), holder: try fields.string(), token: try fields.int())
        case "semaphore.holders": self = .semaphoreHolders(name: try fields.string(), capacity: try fields.int())
        case "barrier.enter":
            self = .barrierEnter(name: try fields.string(), participant: try fields.string(), count: try fields.int(), waitMs: try fields.int())
        case "barrier.leave": self = .barrierLeave(name: try fields.string(), participant: try fields.string())
        case "barrier.status": self = .barrierStatus(name: try fields.string())
        case "rwlock.read": self = .readLock(name: try fields.string(), holder: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "rwlock.write": self = .writeLock(name: try fields.string(), holder: try fields.string(), ttlMs: try fields.int(), waitMs: try fields.int())
        case "rwlock.read-release": self = .readUnlock(try fields.nested { try LockGrant(&$0) })
        case "rwlock.write-release": self = .writeUnlock(try fields.nested { try LockGrant(&$0) })
        case "rwlock.downgrade": self = .downgrade(try fields.nested { try LockGrant(&$0) })
        case "service.register": self = .register(try fields.nested { try ServiceInstance(&$0) }, ttlMs: try fields.int())
        case "service.heartbeat": self = .heartbeat(lease: try fields.int())
        case "service.deregister": self = .deregister(service: try fields.string(), instance: try fields.string())
        case "service.discover": self = .discover(service: try fields.string(), tags: try fields.strings())
        default: throw CoordinationError.invalidArgument("unknown coordination operation \(verb)")
        }
        try fields.end()
    }
}

extension CoordinationCall.CounterOperation {
    var elements: [TupleElement] {
        switch self {
        case .get: ["get"]
        case .add(let amount): ["add", .int(amount)]
        case .subtract(let amount): ["sub", .int(amount)]
        case .set(let value): ["set", .int(value)]
        case .compareAndSet(let expected, let new): ["cas", .int(expected), .int(new)]
        }
    }

    init(_ fields: inout Fields) throws {
        switch try fields.string() {
        case "get": self = .get
        case "add": self = .add(try fields.int())
        case "sub": self = .subtract(try fields.int())
        case "set": self = .set(try fields.int())
        case "cas": self = .compareAndSet(expected: try fields.int(), new: try fields.int())
        case let other: throw CoordinationError.invalidArgument("unknown counter operation \(other)")
        }
    }
}

/// What a coordination call returns.
public enum CoordinationAnswer: Sendable, Equatable {
    case done
    case grant(LockGrant)
    case grants([LockGrant])
    case holder((name: String, token: Int64)?)
    case value(Int64)
    case flag(Bool)
    case range(ClosedRange<Int64>)
    case ids([Int64])
    case delivery(QueueDelivery?)
    case peeked((id: Int64, payload: [UInt8])?)
    case queueStatus(QueueStatus)
    case holders([String])
    case barrier(DistributedBarrier.Status)
    case rate(acquired: Bool, available: Double)
    case instance(ServiceInstance)
    case instances([ServiceInstance])

    public var encoded: [UInt8] { Tuple(elements).encoded }

    var elements: [TupleElement] {
        switch self {
        case .done: ["done"]
        case .grant(let grant): ["grant", .tuple(grant.elements)]
        case .grants(let grants): ["grants", .tuple(grants.map { .tuple($0.elements) })]
        case .holder(let found): ["holder"] + (found.map { [.string($0.name), .int($0.token)] } ?? [])
        case .value(let value): ["value", .int(value)]
        case .flag(let flag): ["flag", .bool(flag)]
        case .range(let range): ["range", .int(range.lowerBound), .int(range.upperBound)]
        case .ids(let ids): ["ids", .tuple(ids.map { .int($0) })]
        case .delivery(let delivery): ["delivery"] + (delivery.map { [.tuple($0.elements)] } ?? [])
        case .peeked(let found): ["peeked"] + (found.map { [.int($0.id), .bytes($0.payload)] } ?? [])
        case .queueStatus(let status):
            ["queue-status", .int(Int64(status.visible)), .int(Int64(status.inFlight)), .int(Int64(status.delayed)), .int(Int64(status.deadLetters))]
        case .holders(let holders): ["holders", .tuple(holders.map { .string($0) })]
        case .barrier(let status): ["barrier", .int(Int64(status.entered)), .bool(status.released)]
        case .rate(let acquired, let available): ["rate", .bool(acquired), .double(available)]
        case .instance(let instance): ["instance", .tuple(instance.elements)]
        case .instances(let instances): ["instances", .tuple(instances.map { .tuple($0.elements) })]
        }
    }

    public init(decoding bytes: [UInt8]) throws {
        var fields = Fields(try Tuple(decoding: bytes).elements, what: "coordination answer")
        switch try fields.string() {
        case "done": self = .done
        case "grant": self = .grant(try fields.nested { try LockGrant(&$0) })
        case "grants": self = .grants(try fields.list { try LockGrant(&$0) })
        case "holder": self = .holder(fields.isAtEnd ? nil : (try fields.string(), try fields.int()))
        case "value": self = .value(try fields.int())
        case "flag": self = .flag(try fields.bool())
        case "range":
            let lower = try fields.int()
            let upper = try fields.int()
            guard lower <= upper else { throw CoordinationError.invalidArgument("malformed coordination answer: empty range") }
            self = .range(lower...upper)
        case "ids": self = .ids(try fields.list { try $0.int() })
        case "delivery": self = .delivery(fields.isAtEnd ? nil : try fields.nested { try QueueDelivery(&$0) })
        case "peeked": self = .peeked(fields.isAtEnd ? nil : (try fields.int(), try fields.bytes()))
        case "queue-status":
            self = .queueStatus(
                QueueStatus(visible: Int(try fields.int()), inFlight: Int(try fields.int()), delayed: Int(try fields.int()), deadLetters: Int(try fields.int())))
        case "holders": self = .holders(try fields.strings())
        case "barrier": self = .barrier(DistributedBarrier.Status(entered: Int(try fields.int()), released: try fields.bool()))
        case "rate": self = .rate(acquired: try fields.bool(), available: try fields.double())
        case "instance": self = .instance(try fields.nested { try ServiceInstance(&$0) })
        case "instances": self = .instances(try fields.list { try ServiceInstance(&$0) })
        case let other: throw CoordinationError.invalidArgument("malformed coordination answer: unknown kind \(other)")
        }
        try fields.end()
    }

    public static func == (a: Self, b: Self) -> Bool { a.elements == b.elements }
}

extension CoordinationError {
    /// The failure code a node answers with; its detail is `encoded`.
    public static let rpcCode = "coordination"

    /// The error as bytes, so a client gets back exactly the error the node's layer raised.
    public var encoded: [UInt8] {
        let elements: [TupleElement] =
            switch self {
            case .held(let name, let holder, let token): ["held", .string(name), .string(holder), .int(token)]
            case .staleToken(let name, let token, let current): ["stale", .string(name), .int(token), current.map { .int($0) } ?? .null]
            case .notHeld(let name): ["not-held", .string(name)]
            case .invalidArgument(let reason): ["invalid", .string(reason)]
            case .contention(let attempts): ["contention", .int(Int64(attempts))]
            }
        return Tuple(elements).encoded
    }

    public init?(decoding bytes: [UInt8]) {
        guard let tuple = try? Tuple(decoding: bytes) else { return nil }
        var fields = Fields(tuple.elements, what: "coordination error")
        do {
            switch try fields.string() {
            case "held": self = .held(name: try fields.string(), holder: try fields.string(), token: try fields.int())
            case "stale": self = .staleToken(name: try fields.string(), token: try fields.int(), current: try fields.optionalInt())
            case "not-held": self = .notHeld(name: try fields.string())
            case "invalid": self = .invalidArgument(try fields.string())
            case "contention": self = .contention(attempts: Int(try fields.int()))
            default: return nil
            }
        } catch {
            return nil
        }
    }
}

// MARK: Nested values

extension LockGrant {
    var elements: [TupleElement] { [.string(name), .string(holder), .int(token), .int(lease), .int(ttlMs)] }

    init(_ fields: inout Fields) throws {
        self.init(name: try fields.string(), holder: try fields.string(), token: try fields.int(), lease: try fields.int(), ttlMs: try fields.int())
    }
}

extension QueueDelivery {
    var elements: [TupleElement] { [.string(queue), .int(id), .bytes(payload), .int(deliveries), .int(receipt), .int(visibleAtMs)] }

    init(_ fields: inout Fields) throws {
        self.init(
            queue: try fields.string(), id: try fields.int(), payload: try fields.bytes(), deliveries: try fields.int(), receipt: try fields.int(),
            visibleAtMs: try fields.int())
    }
}

extension ServiceInstance {
    var elements: [TupleElement] {
        [
            .string(service), .string(instance), .string(address), .tuple(tags.map { .string($0) }),
            .tuple(metadata.keys.sorted().flatMap { [.string($0), .string(metadata[$0]!)] }), .int(lease),
        ]
    }

    init(_ fields: inout Fields) throws {
        let service = try fields.string()
        let instance = try fields.string()
        let address = try fields.string()
        let tags = try fields.strings()
        let pairs = try fields.strings()
        guard pairs.count.isMultiple(of: 2) else { throw CoordinationError.invalidArgument("malformed service metadata") }
        let metadata = Dictionary(stride(from: 0, to: pairs.count, by: 2).map { (pairs[$0], pairs[$0 + 1]) }, uniquingKeysWith: { $1 })
        self.init(service: service, instance: instance, address: address, tags: tags, metadata: metadata, lease: try fields.int())
    }
}

/// Reads a tuple's elements in order, naming what was expected when they do not fit.
struct Fields {
    private let elements: [TupleElement]
    private var position = 0
    let what: String

    init(_ elements: [TupleElement], what: String) {
        self.elements = elements
        self.what = what
    }

    var isAtEnd: Bool { position == elements.count }

    private mutating func next(_ expected: String) throws -> TupleElement {
        guard position < elements.count else { throw malformed("missing \(expected) at position \(position)") }
        defer { position += 1 }
        return elements[position]
    }

    private func malformed(_ detail: String) -> CoordinationError { .invalidArgument("malformed \(what): \(detail)") }

    mutating func string() throws -> String {
        guard case .string(let value) = try next("a string") else { throw malformed("expected a string at position \(position - 1)") }
        return value
    }

    mutating func int() throws -> Int64 {
        guard case .int(let value) = try next("an integer") else { throw malformed("expected an integer at position \(position - 1)") }
        return value
    }

    mutating func double() throws -> Double {
        switch try next("a number") {
        case .double(let value): return value
        case .int(let value): return Double(value)
        default: throw malformed("expected a number at position \(position - 1)")
        }
    }

    mutating func bool() throws -> Bool {
        guard case .bool(let value) = try next("a boolean") else { throw malformed("expected a boolean at position \(position - 1)") }
        return value
    }

    mutating func bytes() throws -> [UInt8] {
        guard case .bytes(let value) = try next("bytes") else { throw malformed("expected bytes at position \(position - 1)") }
        return value
    }

    mutating func optionalString() throws -> String? {
        if case .null = try next("a string or nothing") { return nil }
        position -= 1
        return try string()
    }

    mutating func optionalInt() throws -> Int64? {
        if case .null = try next("an integer or nothing") { return nil }
        position -= 1
        return try int()
    }

    /// A nested tuple, read by `body`, which must use all of it.
    mutating func nested<T>(_ body: (inout Fields) throws -> T) throws -> T {
        guard case .tuple(let inner) = try next("a tuple") else { throw malformed("expected a tuple at position \(position - 1)") }
        var fields = Fields(inner, what: what)
        let value = try body(&fields)
        try fields.end()
        return value
    }

    /// A nested tuple of values, each read by `body` from its own fields (or, for plain values,
    /// from the list itself one at a time).
    mutating func list<T>(_ body: (inout Fields) throws -> T) throws -> [T] {
        guard case .tuple(let inner) = try next("a list") else { throw malformed("expected a list at position \(position - 1)") }
        var values: [T] = []
        for element in inner {
            if case .tuple(let item) = element {
                var fields = Fields(item, what: what)
                values.append(try body(&fields))
                try fields.end()
            } else {
                var fields = Fields([element], what: what)
                values.append(try body(&fields))
                try fields.end()
            }
        }
        return values
    }

    mutating func strings() throws -> [String] { try list { try $0.string() } }

    func end() throws {
        guard position == elements.count else { throw malformed("\(elements.count - position) unexpected trailing values") }
    }
}
