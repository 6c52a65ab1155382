import AspenCore
import AspenKV
import AspenLayer

/// A read-write lock: many readers (at most `readersMax`) or one writer. A waiting writer first
/// posts its intent, which keeps new readers out, so a stream of readers cannot starve it. Every
/// hold is on a lease, so a holder that dies frees it by the leader's clock.
public struct ReadWriteLock: Sendable {
    public let store: any KeyValueStore
    let space: Subspace
    let limits: CoordinationLimits
    public let readersMax: Int

    /// `readersMax` defaults to, and is bounded by, `limits.readersMax`.
    public init(store: any KeyValueStore, readersMax: Int? = nil, limits: CoordinationLimits = .standard) {
        self.store = store
        self.space = Subspace(["aspen", "rwlock"])
        self.limits = limits
        self.readersMax = max(1, min(readersMax ?? limits.readersMax, limits.readersMax))
    }

    func writerKey(_ name: String) -> [UInt8] { space.pack([.string(name), "writer"]) }
    func intentKey(_ name: String) -> [UInt8] { space.pack([.string(name), "intent"]) }
    func readerKey(_ name: String, _ slot: Int) -> [UInt8] { space.pack([.string(name), "reader", .int(Int64(slot))]) }

    /// Takes a read hold if no writer holds or waits and a reader slot is free.
    public func tryRead(_ name: String, holder: String, ttlMs: Int64) async throws -> LockGrant? {
        let lease = try await store.grantLease(ttlMs: ttlMs)
        for slot in 0..<readersMax {
            let outcome = try await store.transaction(
                Transaction(
                    compares: [.absent(writerKey(name)), .absent(intentKey(name)), .absent(readerKey(name, slot))],
                    success: [.put(Put(key: readerKey(name, slot), value: Array(holder.utf8), lease: lease.id))],
                    failure: [.get(RangeRequest(.key(writerKey(name)))), .get(RangeRequest(.key(intentKey(name))))]))
            if outcome.succeeded { return LockGrant(name: "\(name)/reader/\(slot)", holder: holder, token: outcome.revision, lease: lease.id, ttlMs: ttlMs) }
            // A writer holds or waits: no point trying other slots.
            if outcome.results.contains(where: { if case .get(let range) = $0 { !range.kvs.isEmpty } else { false } }) { break }
        }
        _ = try? await store.revokeLease(lease.id)
        return nil
    }

    /// Takes the write hold: posts its intent (no new readers), then waits up to `waitMs` for the
    /// readers and any writer to finish.
    public func write(_ name: String, holder: String, ttlMs: Int64, waitMs: Int64) async throws -> LockGrant {
        let lease = try await store.grantLease(ttlMs: ttlMs)
        var backoff = Backoff(budgetMs: waitMs, firstMs: 2, capMs: 50)
        while true {
            // Post (or keep) the intent; another writer's intent makes us wait our turn.
            _ = try await store.transaction(
                Transaction(
                    compares: [.absent(intentKey(name))],
                    success: [.put(Put(key: intentKey(name), value: Array(holder.utf8), lease: lease.id))]))
            let intent = try await store.get(intentKey(name))
            if intent?.value == Array(holder.utf8) {
                var compares: [Compare] = [.absent(writerKey(name)), Compare(key: intentKey(name), .value(Array(holder.utf8)))]
                compares += (0..<readersMax).map { .absent(readerKey(name, $0)) }
                let outcome = try await store.transaction(
                    Transaction(
                        compares: compares,
                        success: [
                            .put(Put(key: writerKey(name), value: Array(holder.utf8), lease: lease.id)), .delete(Delete(.key(intentKey(name)))),
                        ]))
                if outcome.succeeded { return LockGrant(name: name, holder: holder, token: outcome.revision, lease: lease.id, ttlMs: ttlMs) }
            }
            guard try await backoff.pause() else {
                if intent?.value == Array(holder.utf8) { _ = try? await store.delete(intentKey(name)) }
                _ = try? await store.revokeLease(lease.id)
                throw CoordinationError.held(name: name, holder: "readers or another writer", token: 0)
            }
        }
    }

    /// Ends a read hold.
    public func releaseRead(_ grant: LockGrant) async throws {
        // The hold is named NAME/reader/SLOT; NAME itself may contain slashes.
        guard let marker = grant.name.ranges(of: "/reader/").last, let slot = Int(grant.name[marker.upperBound...]) else {
            throw CoordinationError.invalidArgument("not a read hold: \(grant.name)")
        }
        let key = readerKey(String(grant.name[..<marker.lowerBound]), slot)
        let outcome = try await store.transaction(
            Transaction(compares: [Compare(key: key, .createRevision(grant.token))], success: [.delete(Delete(.key(key)))]))
        guard outcome.succeeded else { throw CoordinationError.staleToken(name: grant.name, token: grant.token, current: nil) }
        _ = try? await store.revokeLease(grant.lease)
    }

    /// Ends the write hold.
    public func releaseWrite(_ grant: LockGrant) async throws {
        let key = writerKey(grant.name)
        let outcome = try await store.transaction(
            Transaction(compares: [Compare(key: key, .createRevision(grant.token))], success: [.delete(Delete(.key(key)))]))
        guard outcome.succeeded else { throw CoordinationError.staleToken(name: grant.name, token: grant.token, current: nil) }
        _ = try? await store.revokeLease(grant.lease)
    }

    /// Turns the write hold into a read hold atomically (no other writer can slip in between).
    public func downgrade(_ grant: LockGrant) async throws -> LockGrant {
        let outcome = try await store.transaction(
            Transaction(
                compares: [Compare(key: writerKey(grant.name), .createRevision(grant.token))],
                success: [
                    .delete(Delete(.key(writerKey(grant.name)))),
                    .put(Put(key: readerKey(grant.name, 0), value: Array(grant.holder.utf8), lease: grant.lease)),
                ]))
        guard outcome.succeeded else { throw CoordinationError.staleToken(name: grant.name, token: grant.token, current: nil) }
        return LockGrant(name: "\(grant.name)/reader/0", holder: grant.holder, token: outcome.revision, lease: grant.lease, ttlMs: grant.ttlMs)
    }
}
