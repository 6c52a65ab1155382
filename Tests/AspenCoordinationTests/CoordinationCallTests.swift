import AspenCoordination
import AspenCore
import AspenKV
import AspenLayer
import Testing

@Suite("Coordination calls")
struct CoordinationCallTests {
    static let grant = LockGrant(name: "a/b", holder: "h", token: 7, lease: 9, ttlMs: 1000)
    static let delivery = QueueDelivery(queue: "q", id: 3, payload: [1, 2], deliveries: 1, receipt: 44, visibleAtMs: 1234)
    static let instance = ServiceInstance(service: "web", instance: "w1", address: "10.0.0.1:80", tags: ["eu", "x"], metadata: ["v": "2"], lease: 5)

    static let calls: [CoordinationCall] = [
        .lockAcquire(name: "l", holder: "h", ttlMs: 100, waitMs: 5), .lockRenew(name: "l", holder: "h", token: 3),
        .lockRelease(name: "l", holder: "h", token: 3), .lockHolder(name: "l"),
        .lockSetAcquire(names: ["a", "b"], holder: "h", ttlMs: 100, waitMs: 0), .lockSetRelease(names: ["a"], holder: "h", token: 2),
        .campaign(name: "e", candidate: "c", ttlMs: 100, waitMs: 0), .electionLeader(name: "e"), .electionRenew(name: "e", candidate: "c", term: 4),
        .resign(name: "e", candidate: "c", term: 4), .counter(name: "n", signed: true, .get), .counter(name: "n", signed: false, .add(-3)),
        .counter(name: "n", signed: false, .subtract(2)), .counter(name: "n", signed: true, .set(9)),
        .counter(name: "n", signed: true, .compareAndSet(expected: 1, new: 2)), .sequenceReserve(name: "s", count: 10),
        .rateAcquire(name: "r", capacity: 2.5, perSecond: 0.5, count: 1, waitMs: 10), .rateReset(name: "r", capacity: 1, perSecond: 1),
        .enqueue(queue: "q", payloads: [[0], []], dedupID: nil, delayMs: 0), .enqueue(queue: "q", payloads: [[1]], dedupID: "d", delayMs: 5),
        .dequeue(queue: "q", visibilityMs: 10, maxDeliveries: 3), .peek(queue: "q"), .ack(delivery), .nack(delivery, delayMs: 4),
        .extend(delivery, byMs: 8), .queueStatus(queue: "q"), .redrive(queue: "q"),
        .semaphoreAcquire(name: "s", capacity: 2, holder: "h", ttlMs: 100, waitMs: 0), .semaphoreRelease(permit: "s\u{0}1", holder: "h", token: 3),
        .semaphoreHolders(name: "s", capacity: 2), .barrierEnter(name: "b", participant: "p", count: 2, waitMs: 0),
        .barrierLeave(name: "b", participant: "p"), .barrierStatus(name: "b"), .readLock(name: "w", holder: "h", ttlMs: 100, waitMs: 0),
        .writeLock(name: "w", holder: "h", ttlMs: 100, waitMs: 0), .readUnlock(grant), .writeUnlock(grant), .downgrade(grant),
        .register(instance, ttlMs: 100), .heartbeat(lease: 5), .deregister(service: "web", instance: "w1"), .discover(service: "web", tags: ["eu"]),
    ]

    @Test("every call and answer survives encoding")
    func roundTrips() throws {
        for call in Self.calls { #expect(try CoordinationCall(decoding: call.encoded) == call) }
        let answers: [CoordinationAnswer] = [
            .done, .grant(Self.grant), .grants([Self.grant, Self.grant]), .holder(nil), .holder(("h", 3)), .value(-4), .flag(true),
            .range(3...9), .ids([1, 2]), .delivery(nil), .delivery(Self.delivery), .peeked(nil), .peeked((2, [9])),
            .queueStatus(QueueStatus(visible: 1, inFlight: 2, delayed: 3, deadLetters: 4)), .holders(["a", "b"]),
            .barrier(DistributedBarrier.Status(entered: 2, released: true)), .rate(acquired: false, available: 0.25), .instance(Self.instance),
            .instances([Self.instance]),
        ]
        for answer in answers { #expect(try CoordinationAnswer(decoding: answer.encoded) == answer) }
        let errors: [CoordinationError] = [
            .held(name: "l", holder: "h", token: 3), .staleToken(name: "l", token: 2, current: nil), .staleToken(name: "l", token: 2, current: 5),
            .notHeld(name: "l"), .invalidArgument("why"), .contention(attempts: 7),
        ]
        for error in errors { #expect(CoordinationError(decoding: error.encoded) == error) }
    }

    @Test("a call of 100 KB of nested-tuple codes is refused, not followed down the stack")
    func deeplyNestedCall() {
        #expect(throws: TupleError.tooDeep(limit: Limits.standard.tupleDepthMax, offset: Limits.standard.tupleDepthMax - 1)) {
            try CoordinationCall(decoding: Array(repeating: 0x05, count: 100_000))
        }
    }

    @Test("malformed calls are refused with what was wrong, never misread")
    func malformed() throws {
        #expect(throws: (any Error).self) { try CoordinationCall(decoding: [0xff, 0x00, 0x13]) }
        let unknown = #expect(throws: CoordinationError.self) { try CoordinationCall(decoding: Tuple(["lock.steal", "x"]).encoded) }
        #expect(unknown?.description.contains("unknown coordination operation lock.steal") == true)
        let short = #expect(throws: CoordinationError.self) { try CoordinationCall(decoding: Tuple(["lock.acquire", "x"]).encoded) }
        #expect(short?.description.contains("missing a string at position 2") == true)
        let wrongType = #expect(throws: CoordinationError.self) {
            try CoordinationCall(decoding: Tuple(["lock.renew", "x", "h", "three"]).encoded)
        }
        #expect(wrongType?.description.contains("expected an integer at position 3") == true)
        let trailing = #expect(throws: CoordinationError.self) { try CoordinationCall(decoding: Tuple(["lock.holder", "x", 1]).encoded) }
        #expect(trailing?.description.contains("unexpected trailing") == true)
    }

    @Test("the executor runs the layers: a lock's token, a refused holder, a lock set all or none, a rw lock, a queue")
    func executes() async throws {
        let clock = TestClock()
        let executor = CoordinationExecutor(store: MemoryKeyValueStore(nowMs: clock.read), nowMs: clock.read)
        guard case .grant(let first) = try await executor.run(.lockAcquire(name: "l", holder: "a", ttlMs: 1000, waitMs: 0)) else {
            Issue.record("no grant")
            return
        }
        await #expect(throws: CoordinationError.held(name: "l", holder: "a", token: first.token)) {
            try await executor.run(.lockAcquire(name: "l", holder: "b", ttlMs: 1000, waitMs: 0))
        }
        #expect(try await executor.run(.lockHolder(name: "l")) == .holder(("a", first.token)))
        // A lock set is refused whole when one of its locks is taken, and released whole.
        await #expect(throws: CoordinationError.self) { try await executor.run(.lockSetAcquire(names: ["m", "l"], holder: "b", ttlMs: 1000, waitMs: 0)) }
        #expect(try await executor.run(.lockHolder(name: "m")) == .holder(nil))
        guard case .grants(let set) = try await executor.run(.lockSetAcquire(names: ["m", "n"], holder: "b", ttlMs: 1000, waitMs: 0)) else {
            Issue.record("no lock set")
            return
        }
        await #expect(throws: CoordinationError.self) { try await executor.run(.lockSetRelease(names: ["m", "n"], holder: "b", token: set[0].token + 1)) }
        #expect(try await executor.run(.lockHolder(name: "n")) == .holder(("b", set[0].token)), "a stale release frees nothing")
        #expect(try await executor.run(.lockSetRelease(names: ["m", "n"], holder: "b", token: set[0].token)) == .done)
        #expect(try await executor.run(.lockHolder(name: "m")) == .holder(nil))
        // Read-write lock over a name with a slash: readers share, the writer is refused until they go.
        guard case .grant(let reader) = try await executor.run(.readLock(name: "d/x", holder: "r", ttlMs: 1000, waitMs: 0)) else {
            Issue.record("no read hold")
            return
        }
        await #expect(throws: CoordinationError.self) { try await executor.run(.writeLock(name: "d/x", holder: "w", ttlMs: 1000, waitMs: 0)) }
        #expect(try await executor.run(.readUnlock(reader)) == .done)
        guard case .grant = try await executor.run(.writeLock(name: "d/x", holder: "w", ttlMs: 1000, waitMs: 0)) else {
            Issue.record("no write hold after the reader left")
            return
        }
        // A queue through calls: enqueue, dequeue, ack; then nothing is left.
        guard case .ids(let ids) = try await executor.run(.enqueue(queue: "q", payloads: [[1], [2]], dedupID: nil, delayMs: 0)) else { return }
        #expect(ids.count == 2)
        guard case .delivery(let taken?) = try await executor.run(.dequeue(queue: "q", visibilityMs: 1000, maxDeliveries: 5)) else { return }
        #expect(taken.payload == [1])
        #expect(try await executor.run(.ack(taken)) == .done)
        #expect(try await executor.run(.queueStatus(queue: "q")) == .queueStatus(QueueStatus(visible: 1, inFlight: 0, delayed: 0, deadLetters: 0)))
        // Waits beyond the bound are refused before anything happens.
        await #expect(throws: CoordinationError.self) { try await executor.run(.lockAcquire(name: "z", holder: "a", ttlMs: 1000, waitMs: 10_000_000)) }
    }
}
