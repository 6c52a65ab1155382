import AspenCore
import AspenKV
import AspenLayer

/// An atomic counter as a layer over `KeyValueStore`: every change is a compare-and-swap on the
/// key's revision, retried (bounded, with backoff) when another client changed it first.
/// Unsigned counters saturate at 0 when subtracting; overflow is refused.
public struct Counter: Sendable {
    public let store: any KeyValueStore
    let space: Subspace
    let limits: CoordinationLimits
    public let signed: Bool

    public init(
        store: any KeyValueStore, signed: Bool = false, space: Subspace = Subspace(["aspen", "counter"]),
        limits: CoordinationLimits = .standard
    ) {
        self.store = store
        self.signed = signed
        self.space = space.subspace([signed ? "signed" : "unsigned"])
        self.limits = limits
    }

    func key(_ name: String) throws(CoordinationError) -> [UInt8] {
        guard !name.isEmpty, name.utf8.count <= limits.nameBytesMax else {
            throw .invalidArgument("a counter name must have 1 to \(limits.nameBytesMax) bytes")
        }
        return space.pack([.string(name)])
    }

    static func decode(_ bytes: [UInt8]) -> Int64 {
        bytes.count == 8 ? Int64(bitPattern: bytes.reduce(0) { $0 << 8 | UInt64($1) }) : 0
    }

    static func encode(_ value: Int64) -> [UInt8] {
        (0..<8).reversed().map { UInt8(truncatingIfNeeded: UInt64(bitPattern: value) >> UInt64($0 * 8)) }
    }

    /// The value (0 for a counter never written). Unsigned counters hold values up to Int64.max.
    public func get(_ name: String) async throws -> Int64 {
        try await store.get(try key(name)).map { Self.decode($0.value) } ?? 0
    }

    /// Applies `change` to the current value atomically; returns the new value.
    @discardableResult
    public func update(_ name: String, _ change: @Sendable (Int64) throws -> Int64) async throws -> Int64 {
        let key = try key(name)
        var backoffMs: Int64 = 1
        for _ in 0..<limits.casRetriesMax {
            let current = try await store.get(key)
            let value = current.map { Self.decode($0.value) } ?? 0
            let next = try change(value)
            guard signed || next >= 0 else { throw CoordinationError.invalidArgument("an unsigned counter cannot go below 0") }
            let compare = current.map { Compare(key: key, .modRevision($0.modRevision)) } ?? .absent(key)
            let outcome = try await store.transaction(Transaction(compares: [compare], success: [.put(Put(key: key, value: Self.encode(next)))]))
            if outcome.succeeded { return next }
            try await Task.sleep(for: .milliseconds(backoffMs))
            backoffMs = min(backoffMs * 2, 50)
        }
        throw CoordinationError.contention(attempts: limits.casRetriesMax)
    }

    @discardableResult
    public func add(_ name: String, _ amount: Int64) async throws -> Int64 {
        try await update(name) { value in
            let (sum, overflow) = value.addingReportingOverflow(amount)
            guard !overflow else { throw CoordinationError.invalidArgument("counter \(name) would overflow") }
            return sum
        }
    }

    @discardableResult
    public func increment(_ name: String) async throws -> Int64 { try await add(name, 1) }

    /// Subtracts; an unsigned counter stops at 0 instead of going negative.
    @discardableResult
    public func subtract(_ name: String, _ amount: Int64) async throws -> Int64 {
        let signed = self.signed
        return try await update(name) { value in
            let (difference, overflow) = value.subtractingReportingOverflow(amount)
            guard !overflow else { throw CoordinationError.invalidArgument("counter \(name) would overflow") }
            return signed ? difference : max(0, difference)
        }
    }

    @discardableResult
    public func set(_ name: String, _ value: Int64) async throws -> Int64 { try await update(name) { _ in value } }

    /// Sets the value only if it is `expected`; returns whether it did.
    public func compareAndSet(_ name: String, expected: Int64, new: Int64) async throws -> Bool {
        do {
            try await update(name) { value in
                guard value == expected else { throw CompareFailed() }
                return new
            }
            return true
        } catch is CompareFailed {
            return false
        }
    }

    struct CompareFailed: Error {}
}

/// Strictly increasing unique ids: each call reserves a block from a shared counter.
public struct SequenceGenerator: Sendable {
    let counter: Counter

    public init(store: any KeyValueStore, limits: CoordinationLimits = .standard) {
        counter = Counter(store: store, space: Subspace(["aspen", "sequence"]), limits: limits)
    }

    /// The next id (the first is 1).
    public func next(_ name: String) async throws -> Int64 { try await reserve(name, count: 1).lowerBound }

    /// `count` consecutive ids no other caller gets.
    public func reserve(_ name: String, count: Int64) async throws -> ClosedRange<Int64> {
        guard (1...1_000_000).contains(count) else { throw CoordinationError.invalidArgument("reserve 1 to 1000000 ids at a time, not \(count)") }
        let end = try await counter.add(name, count)
        return (end - count + 1)...end
    }
}
