import AspenClient
import AspenCoordination
import AspenLayer
import AspenCore
import ArgumentParser
import Foundation

/// `aspen lock`: distributed locks with fencing tokens (the layer runs in the CLI over the
/// cluster's key-value API).
struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock", abstract: "Distributed locks with fencing tokens.",
        subcommands: [Acquire.self, Renew.self, Release.self, Holder.self])

    struct Acquire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a lock (waiting up to --wait-ms) and print its fencing token.",
            discussion: "Exit 2 if it is still held by someone else after the wait.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option(help: "Who holds it (default: this host and process).") var holder: String?
        @Option(help: "The lock expires unless renewed within this many milliseconds.") var ttlMs: Int64 = 30_000
        @Option(help: "Wait this long for the lock to be free (0: fail at once).") var waitMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let who = holder ?? "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)"
                let grant = try await DistributedLock(store: try cluster.client()).acquire(name, holder: who, ttlMs: ttlMs, waitMs: waitMs)
                output(
                    cluster.json, ["token": grant.token, "holder": grant.holder, "lease": grant.lease, "ttlMs": grant.ttlMs],
                    text: "\(grant.token)")
            }
        }
    }

    struct Renew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Extend a held lock; a stale token is refused (exit 2).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var holder: String
        @Option var token: Int64

        func run() async throws {
            try await runReporting {
                _ = try await DistributedLock(store: try cluster.client()).renew(name, holder: holder, token: token)
                output(cluster.json, ["renewed": true, "token": token], text: "OK, renewed")
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Free a lock; a stale token is refused (exit 2).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var holder: String
        @Option var token: Int64

        func run() async throws {
            try await runReporting {
                try await DistributedLock(store: try cluster.client()).release(name, holder: holder, token: token)
                output(cluster.json, ["released": true], text: "OK, released")
            }
        }
    }

    struct Holder: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Who holds the lock (exit 1 if nobody).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runReporting {
                guard let current = try await DistributedLock(store: try cluster.client()).holder(name) else {
                    throw CLIError.notFound("lock \(name) is free")
                }
                output(cluster.json, ["holder": current.holder, "token": current.token], text: "\(current.holder) \(current.token)")
            }
        }
    }
}

/// `aspen counter`: atomic counters.
struct CounterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "counter",
        abstract: "Atomic counters: get, incr, add, sub (unsigned ones stop at 0), set, cas.",
        discussion: "Counters are unsigned unless --signed is given; signed and unsigned counters are separate namespaces.")

    enum Verb: String, ExpressibleByArgument, CaseIterable { case get, incr, add, sub, set, cas }

    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "get, incr, add, sub, set or cas.") var verb: Verb
    @Argument var name: String
    @Argument(help: "The amount (add, sub), value (set) or new value (cas).") var value: Int64?
    @Option(help: "With cas: the value expected.") var expected: Int64?
    @Flag(help: "A signed counter.") var signed = false

    func run() async throws {
        try await runReporting {
            let counter = Counter(store: try cluster.client(), signed: signed)
            func amount() throws -> Int64 {
                guard let value else { throw CLIError.badInput("\(verb.rawValue) needs a value") }
                return value
            }
            let result: Int64
            switch verb {
            case .get: result = try await counter.get(name)
            case .incr: result = try await counter.increment(name)
            case .add: result = try await counter.add(name, try amount())
            case .sub: result = try await counter.subtract(name, try amount())
            case .set: result = try await counter.set(name, try amount())
            case .cas:
                guard let expected else { throw CLIError.badInput("cas needs --expected") }
                guard try await counter.compareAndSet(name, expected: expected, new: try amount()) else {
                    throw CLIError.conditionFailed("counter \(name) is not \(expected)")
                }
                result = try amount()
            }
            output(cluster.json, ["name": name, "value": result], text: "\(result)")
        }
    }
}

/// `aspen sequence`: unique, strictly increasing ids.
struct SequenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sequence", abstract: "Unique, strictly increasing ids.")

    @OptionGroup var cluster: ClusterOptions
    @Argument var name: String
    @Option(help: "Reserve this many consecutive ids and print the range.") var reserve: Int64 = 1

    func run() async throws {
        try await runReporting {
            let range = try await SequenceGenerator(store: try cluster.client()).reserve(name, count: reserve)
            output(
                cluster.json, ["first": range.lowerBound, "last": range.upperBound],
                text: reserve == 1 ? "\(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)")
        }
    }
}

/// `aspen election`: leader election on a name.
struct ElectionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "election", abstract: "Leader election: campaign, leader, resign.", subcommands: [Campaign.self, Leader.self, Resign.self])

    struct Campaign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Become the leader (waiting up to --wait-ms); prints the term's token.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var candidate: String
        @Option(help: "The office lapses unless renewed within this many milliseconds.") var ttlMs: Int64 = 30_000
        @Option var waitMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let term = try await LeaderElection(store: try cluster.client()).campaign(name, candidate: candidate, ttlMs: ttlMs, waitMs: waitMs)
                output(cluster.json, ["term": term.token, "leader": term.holder, "lease": term.lease], text: "\(term.token)")
            }
        }
    }

    struct Leader: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The current leader and term (exit 1 if none).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runReporting {
                guard let current = try await LeaderElection(store: try cluster.client()).leader(name) else {
                    throw CLIError.notFound("\(name) has no leader")
                }
                output(cluster.json, ["leader": current.leader, "term": current.term], text: "\(current.leader) \(current.term)")
            }
        }
    }

    struct Resign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Step down; a stale term is refused (exit 2).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var candidate: String
        @Option var term: Int64

        func run() async throws {
            try await runReporting {
                let election = LeaderElection(store: try cluster.client())
                try await election.resign(LockGrant(name: name, holder: candidate, token: term, lease: 0, ttlMs: 0))
                output(cluster.json, ["resigned": true], text: "OK, resigned")
            }
        }
    }
}

/// `aspen queue`: work queues with visibility timeouts.
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "Work queues: enqueue, dequeue, ack, nack, status, redrive.",
        subcommands: [Enqueue.self, Dequeue.self, Ack.self, Nack.self, Status.self, Redrive.self])

    static func queue(_ cluster: ClusterOptions) throws -> WorkQueue {
        WorkQueue(store: try cluster.client(), nowMs: { Int64(Date().timeIntervalSince1970 * 1000) })
    }

    struct Enqueue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add an item; prints its id.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Argument var payload: String
        @Option(help: "A deduplication id: enqueuing it again while the item is queued is a no-op.") var dedup: String?
        @Option var delayMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let id = try await QueueCommand.queue(cluster).enqueue(queue, Array(payload.utf8), dedupID: dedup, delayMs: delayMs)
                output(cluster.json, ["id": id], text: "\(id)")
            }
        }
    }

    struct Dequeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take the oldest visible item: prints id, receipt and payload (exit 1 if none).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Option var visibilityMs: Int64 = 30_000

        func run() async throws {
            try await runReporting {
                guard let item = try await QueueCommand.queue(cluster).dequeue(queue, visibilityMs: visibilityMs) else {
                    throw CLIError.notFound("queue \(queue) has no visible item")
                }
                let payload = String(decoding: item.payload, as: UTF8.self)
                output(
                    cluster.json, ["id": item.id, "receipt": item.receipt, "payload": payload, "deliveries": item.deliveries],
                    text: "\(item.id) \(item.receipt) \(payload)")
            }
        }
    }

    struct Ack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a delivered item for good (exit 2 if the receipt is stale).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Option var id: Int64
        @Option var receipt: Int64

        func run() async throws {
            try await runReporting {
                try await QueueCommand.queue(cluster).ack(
                    QueueDelivery(queue: queue, id: id, payload: [], deliveries: 0, receipt: receipt, visibleAtMs: 0))
                output(cluster.json, ["acked": id], text: "OK, acked")
            }
        }
    }

    struct Nack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a delivered item visible again (exit 2 if the receipt is stale).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Option var id: Int64
        @Option var receipt: Int64
        @Option var delayMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                try await QueueCommand.queue(cluster).nack(
                    QueueDelivery(queue: queue, id: id, payload: [], deliveries: 0, receipt: receipt, visibleAtMs: 0), delayMs: delayMs)
                output(cluster.json, ["nacked": id], text: "OK, visible again")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Counts of visible, in-flight, delayed and dead-letter items.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String

        func run() async throws {
            try await runReporting {
                let status = try await QueueCommand.queue(cluster).status(queue)
                output(
                    cluster.json,
                    ["visible": status.visible, "inFlight": status.inFlight, "delayed": status.delayed, "deadLetters": status.deadLetters],
                    text: "visible \(status.visible)  in flight \(status.inFlight)  delayed \(status.delayed)  dead letters \(status.deadLetters)")
            }
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move every dead letter back to the queue.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String

        func run() async throws {
            try await runReporting {
                let moved = try await QueueCommand.queue(cluster).redrive(queue)
                output(cluster.json, ["moved": moved], text: "OK, \(moved) items back in the queue")
            }
        }
    }
}

/// `aspen ratelimit`: shared token buckets.
struct RateLimitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ratelimit", abstract: "Take tokens from a shared token bucket (exit 2 when it is empty).")
    @OptionGroup var cluster: ClusterOptions
    @Argument var name: String
    @Option var capacity: Double
    @Option var perSecond: Double
    @Option var count: Double = 1
    @Option(help: "Wait this long for tokens.") var waitMs: Int64 = 0

    func run() async throws {
        try await runReporting {
            let limiter = RateLimiter(
                store: try cluster.client(), capacity: capacity, refillPerSecond: perSecond, nowMs: { Int64(Date().timeIntervalSince1970 * 1000) })
            guard try await limiter.acquire(name, count: count, waitMs: waitMs) else {
                throw CLIError.conditionFailed("rate limit \(name) has fewer than \(count) tokens")
            }
            output(cluster.json, ["acquired": count, "available": try await limiter.available(name)], text: "OK")
        }
    }
}

/// `aspen semaphore`: bounded holders.
struct SemaphoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "semaphore", abstract: "Counting semaphores: acquire (prints the permit), release, holders.",
        subcommands: [Acquire.self, Release.self, Holders.self])

    struct Acquire: AsyncParsableCommand {
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var capacity: Int
        @Option var holder: String
        @Option var ttlMs: Int64 = 30_000
        @Option var waitMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let permit = try await DistributedSemaphore(store: try cluster.client(), capacity: capacity)
                    .acquire(name, holder: holder, ttlMs: ttlMs, waitMs: waitMs)
                output(cluster.json, ["permit": permit.name, "token": permit.token], text: "\(permit.name) \(permit.token)")
            }
        }
    }

    struct Release: AsyncParsableCommand {
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The permit acquire printed.") var permit: String
        @Option var holder: String
        @Option var token: Int64

        func run() async throws {
            try await runReporting {
                try await DistributedLock(store: try cluster.client(), space: Subspace(["aspen", "semaphore"]))
                    .release(permit, holder: holder, token: token)
                output(cluster.json, ["released": true], text: "OK, released")
            }
        }
    }

    struct Holders: AsyncParsableCommand {
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var capacity: Int

        func run() async throws {
            try await runReporting {
                let holders = try await DistributedSemaphore(store: try cluster.client(), capacity: capacity).holders(name)
                output(cluster.json, ["holders": holders], text: holders.joined(separator: "\n"))
            }
        }
    }
}

/// `aspen barrier`: release everyone once a count is reached.
struct BarrierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "barrier", abstract: "Barriers: enter (waiting up to --wait-ms for the release), leave, status.")

    enum Verb: String, ExpressibleByArgument, CaseIterable { case enter, leave, status }

    @OptionGroup var cluster: ClusterOptions
    @Argument var verb: Verb
    @Argument var name: String
    @Option var participant: String?
    @Option var count: Int = 1
    @Option var waitMs: Int64 = 0

    func run() async throws {
        try await runReporting {
            let barrier = DistributedBarrier(store: try cluster.client())
            switch verb {
            case .enter:
                guard let participant else { throw CLIError.badInput("enter needs --participant") }
                try await barrier.enter(name, participant: participant, count: count)
                guard try await barrier.wait(name, waitMs: waitMs) else { throw CLIError.conditionFailed("barrier \(name) is not released yet") }
            case .leave:
                guard let participant else { throw CLIError.badInput("leave needs --participant") }
                try await barrier.leave(name, participant: participant)
            case .status: break
            }
            let status = try await barrier.status(name)
            output(
                cluster.json, ["entered": status.entered, "released": status.released],
                text: "\(status.entered) entered, \(status.released ? "released" : "waiting")")
        }
    }
}

/// `aspen service`: service discovery.
struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Service registry: register (then heartbeat), discover, deregister.",
        subcommands: [Register.self, Discover.self, Deregister.self])

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register an instance; it stays listed while the lease printed is kept alive (aspen lease keepalive).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var service: String
        @Option var instance: String
        @Option var address: String
        @Option(help: "Comma-separated tags.") var tags: String = ""
        @Option var ttlMs: Int64 = 30_000

        func run() async throws {
            try await runReporting {
                let entry = try await ServiceRegistry(store: try cluster.client()).register(
                    service, instance: instance, address: address, tags: tags.split(separator: ",").map(String.init), ttlMs: ttlMs)
                output(cluster.json, ["lease": entry.lease], text: "\(entry.lease)")
            }
        }
    }

    struct Discover: AsyncParsableCommand {
        @OptionGroup var cluster: ClusterOptions
        @Argument var service: String
        @Option(help: "Comma-separated tags every instance must carry.") var tags: String = ""

        func run() async throws {
            try await runReporting {
                let found = try await ServiceRegistry(store: try cluster.client()).discover(service, tags: tags.split(separator: ",").map(String.init))
                output(
                    cluster.json, ["instances": found.map { ["instance": $0.instance, "address": $0.address, "tags": $0.tags] }],
                    text: found.map { "\($0.instance) \($0.address) \($0.tags.joined(separator: ","))" }.joined(separator: "\n"))
            }
        }
    }

    struct Deregister: AsyncParsableCommand {
        @OptionGroup var cluster: ClusterOptions
        @Argument var service: String
        @Option var instance: String

        func run() async throws {
            try await runReporting {
                try await ServiceRegistry(store: try cluster.client()).deregister(service, instance: instance)
                output(cluster.json, ["deregistered": instance], text: "OK, deregistered")
            }
        }
    }
}
