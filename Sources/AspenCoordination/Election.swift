import AspenCore
import AspenKV
import AspenLayer

/// Leader election on a key: at most one leader at a time, each term's fencing token greater
/// than the last; a leader that stops renewing loses the office when its lease expires (by the
/// leader's clock), and one that resigns hands it over at once.
public struct LeaderElection: Sendable {
    let lock: DistributedLock

    public init(store: any KeyValueStore, limits: CoordinationLimits = .standard) {
        lock = DistributedLock(store: store, space: Subspace(["aspen", "election"]), limits: limits)
    }

    /// Becomes the leader of `name`, waiting up to `waitMs` for the office to be free.
    public func campaign(_ name: String, candidate: String, ttlMs: Int64, waitMs: Int64) async throws -> LockGrant {
        try await lock.acquire(name, holder: candidate, ttlMs: ttlMs, waitMs: waitMs)
    }

    /// The current leader and its term token, if there is one.
    public func leader(_ name: String) async throws -> (leader: String, term: Int64)? {
        try await lock.holder(name).map { ($0.holder, $0.token) }
    }

    /// Keeps the office (call well within the TTL); fails if the term is over.
    public func renew(_ term: LockGrant) async throws { try await lock.renew(term) }

    /// Steps down; another candidate can take over without waiting for the TTL.
    public func resign(_ term: LockGrant) async throws { try await lock.release(term.name, holder: term.holder, token: term.token) }

    /// Keeps renewing in the background every third of the TTL until cancelled or the term is
    /// lost; returns the task (its value says why it stopped).
    public func keepOffice(_ term: LockGrant) -> Task<CoordinationError?, Never> {
        Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(max(10, term.ttlMs / 3)))
                do {
                    try await renew(term)
                } catch let error as CoordinationError {
                    return error
                } catch {
                    continue  // The cluster was briefly unreachable; try again within the TTL.
                }
            }
            return nil
        }
    }
}
