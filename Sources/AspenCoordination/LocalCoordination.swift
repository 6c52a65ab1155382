/// What a node running coordination calls shares between them, to spare the log work that
/// would fail anyway: calls that change the same counter or sequence run one at a time (in
/// arrival order) instead of racing compare-and-swaps, and a waiter for a lock, office or
/// permit is woken when a call on this node frees it instead of sleeping out its backoff.
/// Correctness never depends on it: every change is still a compare-and-swap in the log, and a
/// resource freed elsewhere (another node, a client running the layer, an expired lease) is
/// found by the waiter's next bounded backoff.
public final class LocalCoordination: Sendable {
    let turns = Turns()
    let wakeups = Wakeups()

    public init() {}
}

/// A first-in-first-out turn per name.
actor Turns {
    private var taken: Set<String> = []
    private var queued: [String: [CheckedContinuation<Void, Never>]] = [:]

    private func enter(_ name: String) async {
        guard taken.contains(name) else {
            taken.insert(name)
            return
        }
        await withCheckedContinuation { queued[name, default: []].append($0) }
    }

    private func leave(_ name: String) {
        guard var waiting = queued[name], !waiting.isEmpty else {
            taken.remove(name)
            return
        }
        let next = waiting.removeFirst()
        queued[name] = waiting.isEmpty ? nil : waiting
        next.resume()  // The turn passes straight to the next in line.
    }

    nonisolated func inTurn<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        await enter(name)
        do {
            let value = try await body()
            await leave(name)
            return value
        } catch {
            await leave(name)
            throw error
        }
    }
}

/// Sleeps that end early when woken by name, oldest sleeper first.
actor Wakeups {
    private var sleeping: [String: [(id: UInt64, continuation: CheckedContinuation<Void, Never>)]] = [:]
    private var nextID: UInt64 = 0

    /// Sleeps up to `ms`, or until `wakeOne(name)` picks this sleeper.
    func sleep(_ name: String, upToMs ms: Int64) async {
        let id = nextID
        nextID += 1
        let timer = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(ms))
            await self?.resume(name, id)
        }
        await withCheckedContinuation { sleeping[name, default: []].append((id, $0)) }
        timer.cancel()
    }

    private func resume(_ name: String, _ id: UInt64) {
        guard let index = sleeping[name]?.firstIndex(where: { $0.id == id }) else { return }
        sleeping[name]!.remove(at: index).continuation.resume()
        if sleeping[name]!.isEmpty { sleeping[name] = nil }
    }

    func hasSleepers(_ name: String) -> Bool { !(sleeping[name]?.isEmpty ?? true) }

    /// Wakes the longest sleeper on `name`, if any.
    func wakeOne(_ name: String) {
        guard let first = sleeping[name]?.first else { return }
        resume(name, first.id)
    }
}
