import AspenClient
import AspenCoordination
import AspenCore
import AspenKV
import Foundation
import Synchronization
import Testing

extension ClusterSuites {
    /// Coordination layers against a real 3-node cluster, through `AspenClient`, with faults.
    @Suite("Coordination on a real cluster", .serialized, .timeLimit(.minutes(3)))
    struct CoordinationProcessTests {
        final class Log: Sendable {
            let inside = Atomic<Int>(0)
            let overlaps = Atomic<Int>(0)
            let tokens = Mutex<[Int64]>([])
            let acked = Mutex<[Int64: Date]>([:])
            let deliveredAfterAck = Mutex<[Int64]>([])
            let ackAttempted = Mutex<Set<Int64>>([])
        }

        @Test("contending clients never hold a lock together, and tokens only grow")
        func lockContention() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let log = Log()
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Half the clients run the layer themselves over the key-value API, half ask the
                // leader to run it (one call per operation): the same layer, the same keys.
                for client in 0..<6 {
                    group.addTask {
                        let remote = try cluster.client()
                        let lock = DistributedLock(store: remote)
                        for _ in 0..<5 {
                            let grant: LockGrant
                            if client.isMultiple(of: 2) {
                                grant = try await lock.acquire("shared", holder: "c\(client)", ttlMs: 10_000, waitMs: 60_000)
                            } else {
                                guard case .grant(let granted) = try await remote.coordinate(
                                    .lockAcquire(name: "shared", holder: "c\(client)", ttlMs: 10_000, waitMs: 60_000))
                                else { throw CoordinationError.invalidArgument("not a grant") }
                                grant = granted
                            }
                            if log.inside.add(1, ordering: .relaxed).newValue > 1 { log.overlaps.add(1, ordering: .relaxed) }
                            log.tokens.withLock { $0.append(grant.token) }
                            try await Task.sleep(for: .milliseconds(2))
                            log.inside.subtract(1, ordering: .relaxed)
                            if client.isMultiple(of: 2) {
                                try await lock.release("shared", holder: grant.holder, token: grant.token)
                            } else {
                                _ = try await remote.coordinate(.lockRelease(name: "shared", holder: grant.holder, token: grant.token))
                            }
                        }
                        await remote.close()
                    }
                }
                try await group.waitForAll()
            }
            #expect(log.overlaps.load(ordering: .relaxed) == 0)
            let tokens = log.tokens.withLock { $0 }
            #expect(tokens.count == 30)
            #expect(tokens == tokens.sorted() && Set(tokens).count == 30)
        }

        @Test("an election survives SIGKILL of the node its leader's client talks to: same leader, same term, and the next term is greater")
        func electionThroughNodeKill() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            let raftLeader = try await cluster.leader()
            // The office holder's client talks to the Raft leader (every coordination call goes there).
            let holder = try cluster.client()
            let rival = try cluster.client()
            guard case .grant(let term) = try await holder.coordinate(.campaign(name: "office", candidate: "a", ttlMs: 5000, waitMs: 0)) else {
                Issue.record("no grant")
                return
            }
            let lost = Mutex<CoordinationError?>(nil)
            let problems = Mutex<[String]>([])
            let started = Date()
            let renewals = Atomic<Int>(0)
            let keeper = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(1000))
                    do {
                        _ = try await holder.coordinate(.electionRenew(name: "office", candidate: "a", term: term.token))
                        renewals.add(1, ordering: .relaxed)
                        problems.withLock { $0.append("\(Date().timeIntervalSince(started)): renewed") }
                    } catch let error as CoordinationError {
                        lost.withLock { $0 = error }
                        return
                    } catch {
                        problems.withLock { $0.append("\(Date().timeIntervalSince(started)): \(error)") }
                        continue  // failover under way
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            cluster.kill9(raftLeader)
            problems.withLock { $0.append("\(Date().timeIntervalSince(started)): killed \(raftLeader)") }
            // Through the failover and well past the office's TTL, the rival never gets it.
            let until = Date().addingTimeInterval(8)
            var rivalWon = false
            while Date() < until {
                do {
                    _ = try await rival.coordinate(.campaign(name: "office", candidate: "b", ttlMs: 5000, waitMs: 0))
                    rivalWon = true
                    break
                } catch CoordinationError.held(_, let current, let token) {
                    #expect(current == "a" && token == term.token)
                } catch {
                    // The cluster was electing a new Raft leader.
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            keeper.cancel()
            _ = await keeper.result
            #expect(!rivalWon, "the rival took an office that was being renewed")
            #expect(lost.withLock { $0 } == nil, "the holder lost the office: \(String(describing: lost.withLock { $0 })) after \(problems.withLock { $0 })")
            #expect(renewals.load(ordering: .relaxed) >= 4, "renewals failed: \(problems.withLock { $0 })")
            guard case .holder(let current) = try await rival.coordinate(.electionLeader(name: "office")) else { return }
            #expect(current?.name == "a" && current?.token == term.token)
            // Resigning hands it over at once, with a greater term.
            _ = try await holder.coordinate(.resign(name: "office", candidate: "a", term: term.token))
            guard case .grant(let next) = try await rival.coordinate(.campaign(name: "office", candidate: "b", ttlMs: 5000, waitMs: 2000)) else {
                Issue.record("the rival did not get the office after the resignation")
                return
            }
            #expect(next.token > term.token)
            await holder.close()
            await rival.close()
        }

        @Test("queue items are neither lost nor delivered after their ack when the Raft leader is killed mid-run")
        func queueThroughLeaderKill() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            let leader = try await cluster.leader()
            let now: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
            let producer = WorkQueue(store: try cluster.client(), nowMs: now)
            let count = 60
            for index in 0..<count { try await producer.enqueue("jobs", Array(String(index).utf8)) }
            let log = Log()
            let killer = Task {
                try await Task.sleep(for: .milliseconds(300))
                cluster.kill9(leader)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let queue = WorkQueue(store: try cluster.client(), nowMs: now)
                        var idle = 0
                        while idle < 30 {
                            let delivery: QueueDelivery?
                            do {
                                delivery = try await queue.dequeue("jobs", visibilityMs: 1500)
                            } catch {
                                try await Task.sleep(for: .milliseconds(50))  // failover under way
                                continue
                            }
                            guard let delivery else {
                                idle += 1
                                try await Task.sleep(for: .milliseconds(100))
                                continue
                            }
                            idle = 0
                            if log.acked.withLock({ $0[delivery.id] != nil }) { log.deliveredAfterAck.withLock { $0.append(delivery.id) } }
                            try await Task.sleep(for: .milliseconds(20))  // the work
                            log.ackAttempted.withLock { _ = $0.insert(delivery.id) }
                            do {
                                try await queue.ack(delivery)
                                log.acked.withLock { $0[delivery.id] = Date() }
                            } catch {
                                // Stale receipt (redelivered meanwhile) or an unknown outcome: the
                                // item comes back after its visibility timeout if it was not acked.
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            _ = await killer.result
            let acked = log.acked.withLock { $0 }
            let attempted = log.ackAttempted.withLock { $0 }
            let status = try await producer.status("jobs")
            // Nothing lost: the queue drained, and every item was delivered and acked (an ack whose
            // answer was lost in the failover leaves an item acked without the client knowing, so
            // attempted acks count too).
            #expect(status == QueueStatus(visible: 0, inFlight: 0, delayed: 0, deadLetters: 0), "\(status)")
            #expect(attempted.count == count, "\(attempted.count) items delivered")
            #expect(acked.count >= count - 5, "only acks whose answer was lost in the failover may be unconfirmed: \(acked.count)")
            #expect(log.deliveredAfterAck.withLock { $0 }.isEmpty, "an acked item was delivered again")
        }
    }
}

extension ClusterSuites {
    @Suite("Clock skew", .serialized, .timeLimit(.minutes(3)))
    struct ClockSkewTests {
        @Test("a lock does not expire early when leadership moves to a node whose clock runs 30 s ahead")
        func leaderClockAhead() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            // Node 3's clock reads 30 s ahead of the others.
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(id, arguments: ["--peers", peers, "--bootstrap"], environment: id == 3 ? ["ASPEN_TEST_CLOCK_SKEW_MS": "30000"] : [:])
            }
            defer { cluster.terminateAll() }
            let client = try cluster.client()
            /// Moves leadership to `target` (retrying through elections on a loaded machine).
            func lead(_ target: Int) async throws {
                let deadline = Date().addingTimeInterval(30)
                while Date() < deadline {
                    if (try? await cluster.leader()) == target { return }
                    try? await client.transferLeadership(to: NodeID(UInt64(target)))
                    try await Task.sleep(for: .milliseconds(300))
                }
                Issue.record("node \(target) did not become the leader")
            }
            try await lead(1)
            let lock = DistributedLock(store: client)
            let grant = try await lock.tryAcquire("skewed", holder: "a", ttlMs: 20_000)
            // Hand leadership to the node whose clock is ahead by more than the TTL.
            try await lead(3)
            // By node 3's clock the lease was due long ago; it must still be held (extended by the
            // new leader's clock), and its holder can renew it.
            try await Task.sleep(for: .milliseconds(1000))
            #expect(try await lock.holder("skewed")?.token == grant.token)
            try await lock.renew(grant)
            // Leases still expire under the new leader, by its clock: a short one granted now goes.
            let short = try await lock.tryAcquire("short", holder: "b", ttlMs: 1000)
            let expiry = Date().addingTimeInterval(10)
            while try await lock.holder("short") != nil, Date() < expiry { try await Task.sleep(for: .milliseconds(100)) }
            #expect(try await lock.holder("short") == nil, "lease \(short.lease) did not expire")
            #expect(try await lock.holder("skewed")?.token == grant.token)
            await client.close()
        }
    }
}
