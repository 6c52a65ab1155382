import AspenCore
import AspenKV
import AspenLayer

/// A token bucket shared by every client: `capacity` tokens, refilled at `refillPerSecond`. State
/// (tokens, last refill time) lives in one key changed by compare-and-swap; time is the caller's
/// clock, so clients should agree on time within the precision they need.
public struct RateLimiter: Sendable {
    public let store: any KeyValueStore
    let space: Subspace
    let limits: CoordinationLimits
    public let capacity: Double
    public let refillPerSecond: Double
    let nowMs: @Sendable () -> Int64

    public init(
        store: any KeyValueStore, capacity: Double, refillPerSecond: Double, limits: CoordinationLimits = .standard,
        nowMs: @escaping @Sendable () -> Int64
    ) {
        self.store = store
        self.space = Subspace(["aspen", "ratelimit"])
        self.limits = limits
        self.capacity = capacity
        self.refillPerSecond = refillPerSecond
        self.nowMs = nowMs
    }

    struct Bucket {
        var tokens: Double
        var atMs: Int64

        var encoded: [UInt8] { Tuple([.double(tokens), .int(atMs)]).encoded }

        init(tokens: Double, atMs: Int64) {
            self.tokens = tokens
            self.atMs = atMs
        }

        init?(_ bytes: [UInt8]) {
            guard let tuple = try? Tuple(decoding: bytes), tuple.elements.count == 2,
                case .double(let tokens) = tuple.elements[0], case .int(let atMs) = tuple.elements[1]
            else { return nil }
            self.init(tokens: tokens, atMs: atMs)
        }
    }

    func refilled(_ bucket: Bucket?, now: Int64) -> Bucket {
        guard let bucket else { return Bucket(tokens: capacity, atMs: now) }
        let elapsed = Double(max(0, now - bucket.atMs)) / 1000
        return Bucket(tokens: min(capacity, bucket.tokens + elapsed * refillPerSecond), atMs: max(now, bucket.atMs))
    }

    /// Takes `count` tokens if they are there; never lets more through than the bucket allows.
    public func tryAcquire(_ name: String, count: Double = 1) async throws -> Bool {
        guard count > 0, count <= capacity else { throw CoordinationError.invalidArgument("ask for 1 to \(capacity) tokens, not \(count)") }
        let key = space.pack([.string(name)])
        for _ in 0..<limits.casRetriesMax {
            let current = try await store.get(key)
            var bucket = refilled(current.flatMap { Bucket($0.value) }, now: nowMs())
            guard bucket.tokens >= count else { return false }
            bucket.tokens -= count
            let compare = current.map { Compare(key: key, .modRevision($0.modRevision)) } ?? .absent(key)
            if try await store.transaction(Transaction(compares: [compare], success: [.put(Put(key: key, value: bucket.encoded))])).succeeded {
                return true
            }
        }
        throw CoordinationError.contention(attempts: limits.casRetriesMax)
    }

    /// Tokens available now.
    public func available(_ name: String) async throws -> Double {
        let current = try await store.get(space.pack([.string(name)]))
        return refilled(current.flatMap { Bucket($0.value) }, now: nowMs()).tokens
    }

    /// Waits (polling, up to `waitMs`) until the tokens can be taken.
    public func acquire(_ name: String, count: Double = 1, waitMs: Int64) async throws -> Bool {
        var waited: Int64 = 0
        while true {
            if try await tryAcquire(name, count: count) { return true }
            guard waited < waitMs else { return false }
            let pause = min(waitMs - waited, max(1, Int64(1000 * count / max(refillPerSecond, 0.001))))
            try await Task.sleep(for: .milliseconds(pause))
            waited += pause
        }
    }

    /// Refills the bucket completely.
    public func reset(_ name: String) async throws {
        _ = try await store.put(space.pack([.string(name)]), Bucket(tokens: capacity, atMs: nowMs()).encoded)
    }
}
