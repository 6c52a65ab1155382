import AspenCoordination
import AspenCore
import AspenLayer
import Foundation

/// The tuple layer, and the coordination calls, answers and errors encoded as tuples.
extension FuzzTarget {
    static let layerTargets: [FuzzTarget] = [tuple, coordination]

    static let tuple = FuzzTarget(
        name: "tuple", summary: "Tuple(decoding:depthMax:): the tuple layer's keys, nested at most Limits.tupleDepthMax deep",
        nestingTokens: [[0x05], [0x05, 0x00, 0xFF]],
        seeds: { LayerSeeds.tuples.map(\.encoded) }
    ) { input in
        FuzzCheck.roundTrip(input, decode: { try Tuple(decoding: $0) }, encode: \.encoded, canonical: true) { tuple in
            let depth = LayerSeeds.depth(of: tuple.elements)
            return depth > Limits.standard.tupleDepthMax ? "a tuple nested \(depth) deep (Limits.tupleDepthMax is \(Limits.standard.tupleDepthMax))" : nil
        }
    }

    static let coordination = FuzzTarget(
        name: "coordination",
        summary: "CoordinationCall(decoding:), CoordinationAnswer(decoding:) and CoordinationError(decoding:): coordination over the wire",
        nestingTokens: [[0x05]],
        seeds: {
            selected(0, LayerSeeds.calls.map(\.encoded)) + selected(1, LayerSeeds.answers.map(\.encoded))
                + selected(2, LayerSeeds.errors.map(\.encoded))
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try CoordinationCall(decoding: $0) }, encode: \.encoded) },
            { FuzzCheck.roundTrip($0, decode: { try CoordinationAnswer(decoding: $0) }, encode: \.encoded) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { bytes throws(CoordinationError) in
                        guard let error = CoordinationError(decoding: bytes) else { throw .invalidArgument("not a coordination error") }
                        return error
                    }, encode: \.encoded)
            },
        ])
    }
}

enum LayerSeeds {
    /// Nesting of `elements` as a tuple (1: no nested tuple).
    static func depth(of elements: [TupleElement]) -> Int {
        var deepest = 0
        for case .tuple(let inner) in elements { deepest = max(deepest, depth(of: inner)) }
        return deepest + 1
    }

    static var tuples: [Tuple] {
        var deepest: TupleElement = .string("bottom")
        for level in 1..<Limits.standard.tupleDepthMax { deepest = .tuple([.int(Int64(level)), deepest, .null]) }
        let uuid = UUID(uuid: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xFF))
        return [
            [], [.null], ["a\u{0}b", .bytes([0, 0xFF, 0]), .int(0), .int(1), .int(-1), .int(.max), .int(.min), .int(256), .int(-65536)],
            [.double(0), .double(-0.0), .double(.infinity), .double(-.greatestFiniteMagnitude), .double(.nan), .bool(true), .bool(false)],
            [.uuid(uuid), .tuple([]), .tuple([.null, .tuple([.null, .bytes([])])]), "é"], Tuple([deepest]),
        ]
    }

    static let grant = LockGrant(name: "orders", holder: "worker-1", token: 42, lease: 7, ttlMs: 30_000)
    static let delivery = QueueDelivery(queue: "jobs", id: 9, payload: [0, 1, 0xFF], deliveries: 2, receipt: 77, visibleAtMs: 1_000)
    static let instance = ServiceInstance(
        service: "api", instance: "api-1", address: "10.0.0.1:80", tags: ["blue", ""], metadata: ["zone": "a", "": "b"], lease: 3)

    static let calls: [CoordinationCall] = [
        .lockAcquire(name: "l", holder: "h", ttlMs: 1000, waitMs: 0), .lockRenew(name: "l", holder: "h", token: 1),
        .lockRelease(name: "l", holder: "h", token: .max), .lockHolder(name: ""),
        .lockSetAcquire(names: ["a", "b", "é"], holder: "h", ttlMs: 5, waitMs: -1), .lockSetRelease(names: [], holder: "h", token: 3),
        .campaign(name: "e", candidate: "c", ttlMs: 10, waitMs: 20), .electionLeader(name: "e"), .electionRenew(name: "e", candidate: "c", term: 2),
        .resign(name: "e", candidate: "c", term: 2), .counter(name: "n", signed: true, .get), .counter(name: "n", signed: false, .add(5)),
        .counter(name: "n", signed: true, .subtract(.min)), .counter(name: "n", signed: true, .set(0)),
        .counter(name: "n", signed: false, .compareAndSet(expected: 1, new: 2)), .sequenceReserve(name: "s", count: 100),
        .rateAcquire(name: "r", capacity: 10, perSecond: 0.5, count: 1, waitMs: 0), .rateReset(name: "r", capacity: .infinity, perSecond: 0),
        .enqueue(queue: "q", payloads: [[1], [], [0, 0xFF]], dedupID: "d", delayMs: 0), .enqueue(queue: "q", payloads: [], dedupID: nil, delayMs: 5),
        .dequeue(queue: "q", visibilityMs: 100, maxDeliveries: 3), .peek(queue: "q"), .ack(delivery), .nack(delivery, delayMs: 10),
        .extend(delivery, byMs: 5), .queueStatus(queue: "q"), .redrive(queue: "q"),
        .semaphoreAcquire(name: "s", capacity: 3, holder: "h", ttlMs: 9, waitMs: 0), .semaphoreRelease(permit: "p", holder: "h", token: 1),
        .semaphoreHolders(name: "s", capacity: 3), .barrierEnter(name: "b", participant: "p", count: 2, waitMs: 1),
        .barrierLeave(name: "b", participant: "p"), .barrierStatus(name: "b"), .readLock(name: "rw", holder: "h", ttlMs: 1, waitMs: 1),
        .writeLock(name: "rw", holder: "h", ttlMs: 1, waitMs: 1), .readUnlock(grant), .writeUnlock(grant), .downgrade(grant),
        .register(instance, ttlMs: 10), .heartbeat(lease: 3), .deregister(service: "api", instance: "api-1"),
        .discover(service: "api", tags: ["blue"]),
    ]

    static let answers: [CoordinationAnswer] = [
        .done, .grant(grant), .grants([grant, grant]), .grants([]), .holder(("l", 4)), .holder(nil), .value(-3), .flag(true), .range(1...10),
        .ids([1, 2, .max]), .delivery(delivery), .delivery(nil), .peeked((5, [1, 2])), .peeked(nil),
        .queueStatus(QueueStatus(visible: 1, inFlight: 2, delayed: 3, deadLetters: 4)), .holders(["a", "b"]),
        .barrier(DistributedBarrier.Status(entered: 2, released: true)), .rate(acquired: false, available: 0.25), .instance(instance),
        .instances([instance]),
    ]

    static let errors: [CoordinationError] = [
        .held(name: "l", holder: "h", token: 3), .staleToken(name: "l", token: 2, current: 5), .staleToken(name: "l", token: 2, current: nil),
        .notHeld(name: "l"), .invalidArgument("why"), .contention(attempts: 64),
    ]
}
