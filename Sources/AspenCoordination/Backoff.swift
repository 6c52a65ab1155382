/// A bounded wait with exponential backoff, shared by the primitives that wait for something to
/// become free: each `pause()` sleeps the next interval (doubling up to `capMs`) and answers
/// false, without sleeping, once `budgetMs` is spent.
struct Backoff {
    let budgetMs: Int64
    let capMs: Int64
    var nextMs: Int64
    private(set) var waitedMs: Int64 = 0
    let sleep: @Sendable (Int64) async throws -> Void

    init(
        budgetMs: Int64, firstMs: Int64, capMs: Int64,
        sleep: @escaping @Sendable (Int64) async throws -> Void = { try await Task.sleep(for: .milliseconds($0)) }
    ) {
        self.budgetMs = budgetMs
        self.nextMs = firstMs
        self.capMs = capMs
        self.sleep = sleep
    }

    mutating func pause() async throws -> Bool {
        guard waitedMs < budgetMs else { return false }
        let pause = min(nextMs, budgetMs - waitedMs)
        try await sleep(pause)
        waitedMs += pause
        nextMs = min(nextMs * 2, capMs)
        return true
    }
}
