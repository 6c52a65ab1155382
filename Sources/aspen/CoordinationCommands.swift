import AspenClient
import AspenCoordination
import AspenLayer
import AspenCore
import ArgumentParser
import Foundation

/// `aspen lock`: distributed locks with fencing tokens. Every command here is one coordination
/// call that the leader runs next to the log (`CoordinationCall`), one round trip each.
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
                let grant = try await cluster.grant(.lockAcquire(name: name, holder: who, ttlMs: ttlMs, waitMs: waitMs))
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
                _ = try await cluster.grant(.lockRenew(name: name, holder: holder, token: token))
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
                try await cluster.done(.lockRelease(name: name, holder: holder, token: token))
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
                guard case .holder(let found) = try await cluster.coordinate(.lockHolder(name: name)) else { throw CLIError.unexpectedAnswer }
                guard let current = found else { throw CLIError.notFound("lock \(name) is free") }
                output(cluster.json, ["holder": current.name, "token": current.token], text: "\(current.name) \(current.token)")
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
            func amount() throws -> Int64 {
                guard let value else { throw CLIError.badInput("\(verb.rawValue) needs a value") }
                return value
            }
            let operation: CoordinationCall.CounterOperation
            switch verb {
            case .get: operation = .get
            case .incr: operation = .add(1)
            case .add: operation = .add(try amount())
            case .sub: operation = .subtract(try amount())
            case .set: operation = .set(try amount())
            case .cas:
                guard let expected else { throw CLIError.badInput("cas needs --expected") }
                operation = .compareAndSet(expected: expected, new: try amount())
            }
            let result: Int64
            switch try await cluster.coordinate(.counter(name: name, signed: signed, operation)) {
            case .value(let value): result = value
            case .flag(true): result = try amount()
            case .flag(false): throw CLIError.conditionFailed("counter \(name) is not \(expected ?? 0)")
            default: throw CLIError.unexpectedAnswer
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
            guard case .range(let range) = try await cluster.coordinate(.sequenceReserve(name: name, count: reserve)) else {
                throw CLIError.unexpectedAnswer
            }
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
                let term = try await cluster.grant(.campaign(name: name, candidate: candidate, ttlMs: ttlMs, waitMs: waitMs))
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
                guard case .holder(let found) = try await cluster.coordinate(.electionLeader(name: name)) else { throw CLIError.unexpectedAnswer }
                guard let current = found else { throw CLIError.notFound("\(name) has no leader") }
                output(cluster.json, ["leader": current.name, "term": current.token], text: "\(current.name) \(current.token)")
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
                try await cluster.done(.resign(name: name, candidate: candidate, term: term))
                output(cluster.json, ["resigned": true], text: "OK, resigned")
            }
        }
    }
}

/// `aspen queue`: work queues with visibility timeouts.
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "Work queues: enqueue, dequeue, peek, ack, nack, extend, status, redrive.",
        subcommands: [Enqueue.self, Dequeue.self, Peek.self, Ack.self, Nack.self, Extend.self, Status.self, Redrive.self])

    struct Peek: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the oldest visible item without taking it (exit 1 if none).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String

        func run() async throws {
            try await runReporting {
                guard case .peeked(let found) = try await cluster.coordinate(.peek(queue: queue)) else { throw CLIError.unexpectedAnswer }
                guard let item = found else { throw CLIError.notFound("queue \(queue) has no visible item") }
                let payload = String(decoding: item.payload, as: UTF8.self)
                output(cluster.json, ["id": item.id, "payload": payload], text: "\(item.id) \(payload)")
            }
        }
    }

    struct Extend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep a delivered item invisible for longer; prints the new receipt (exit 2 if the receipt is stale).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Option var id: Int64
        @Option var receipt: Int64
        @Option(help: "Milliseconds to add, from now.") var byMs: Int64

        func run() async throws {
            try await runReporting {
                let delivery = QueueDelivery(queue: queue, id: id, payload: [], deliveries: 0, receipt: receipt, visibleAtMs: 0)
                guard case .delivery(let extended?) = try await cluster.coordinate(.extend(delivery, byMs: byMs)) else { throw CLIError.unexpectedAnswer }
                output(cluster.json, ["id": extended.id, "receipt": extended.receipt, "visibleAtMs": extended.visibleAtMs], text: "\(extended.receipt)")
            }
        }
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
                guard case .ids(let ids) = try await cluster.coordinate(.enqueue(queue: queue, payloads: [Array(payload.utf8)], dedupID: dedup, delayMs: delayMs)),
                    let id = ids.first
                else { throw CLIError.unexpectedAnswer }
                output(cluster.json, ["id": id], text: "\(id)")
            }
        }
    }

    struct Dequeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take the oldest visible item: prints id, receipt and payload (exit 1 if none).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var queue: String
        @Option var visibilityMs: Int64 = 30_000
        @Option(help: "An item delivered this many times goes to the dead-letter queue instead.") var maxDeliveries: Int64 = 5

        func run() async throws {
            try await runReporting {
                guard case .delivery(let found) = try await cluster.coordinate(.dequeue(queue: queue, visibilityMs: visibilityMs, maxDeliveries: maxDeliveries))
                else { throw CLIError.unexpectedAnswer }
                guard let item = found else { throw CLIError.notFound("queue \(queue) has no visible item") }
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
                try await cluster.done(.ack(QueueDelivery(queue: queue, id: id, payload: [], deliveries: 0, receipt: receipt, visibleAtMs: 0)))
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
                try await cluster.done(
                    .nack(QueueDelivery(queue: queue, id: id, payload: [], deliveries: 0, receipt: receipt, visibleAtMs: 0), delayMs: delayMs))
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
                guard case .queueStatus(let status) = try await cluster.coordinate(.queueStatus(queue: queue)) else { throw CLIError.unexpectedAnswer }
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
                guard case .value(let moved) = try await cluster.coordinate(.redrive(queue: queue)) else { throw CLIError.unexpectedAnswer }
                output(cluster.json, ["moved": moved], text: "OK, \(moved) items back in the queue")
            }
        }
    }
}

/// `aspen ratelimit`: shared token buckets.
struct RateLimitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ratelimit", abstract: "Shared token buckets: acquire (the default), reset.",
        subcommands: [Acquire.self, Reset.self], defaultSubcommand: Acquire.self)

    struct Acquire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take tokens (exit 2 when there are too few); prints how many are left. --count 0 only reads them.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var capacity: Double
        @Option var perSecond: Double
        @Option var count: Double = 1
        @Option(help: "Wait this long for tokens.") var waitMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let call = CoordinationCall.rateAcquire(name: name, capacity: capacity, perSecond: perSecond, count: count, waitMs: waitMs)
                guard case .rate(let acquired, let available) = try await cluster.coordinate(call) else { throw CLIError.unexpectedAnswer }
                guard acquired else { throw CLIError.conditionFailed("rate limit \(name) has fewer than \(count) tokens (\(available) available)") }
                output(cluster.json, ["acquired": count, "available": available], text: "OK, \(available) left")
            }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refill the bucket to its capacity.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Option var capacity: Double
        @Option var perSecond: Double

        func run() async throws {
            try await runReporting {
                try await cluster.done(.rateReset(name: name, capacity: capacity, perSecond: perSecond))
                output(cluster.json, ["reset": name], text: "OK, full again")
            }
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
                let permit = try await cluster.grant(
                    .semaphoreAcquire(name: name, capacity: Int64(capacity), holder: holder, ttlMs: ttlMs, waitMs: waitMs))
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
                try await cluster.done(.semaphoreRelease(permit: permit, holder: holder, token: token))
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
                guard case .holders(let holders) = try await cluster.coordinate(.semaphoreHolders(name: name, capacity: Int64(capacity))) else {
                    throw CLIError.unexpectedAnswer
                }
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
            let call: CoordinationCall
            switch verb {
            case .enter:
                guard let participant else { throw CLIError.badInput("enter needs --participant") }
                call = .barrierEnter(name: name, participant: participant, count: Int64(count), waitMs: waitMs)
            case .leave:
                guard let participant else { throw CLIError.badInput("leave needs --participant") }
                try await cluster.done(.barrierLeave(name: name, participant: participant))
                call = .barrierStatus(name: name)
            case .status: call = .barrierStatus(name: name)
            }
            guard case .barrier(let status) = try await cluster.coordinate(call) else { throw CLIError.unexpectedAnswer }
            if verb == .enter && !status.released { throw CLIError.conditionFailed("barrier \(name) is not released yet (\(status.entered) of \(count) entered)") }
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
                let wanted = ServiceInstance(service: service, instance: instance, address: address, tags: tags.split(separator: ",").map(String.init))
                guard case .instance(let entry) = try await cluster.coordinate(.register(wanted, ttlMs: ttlMs)) else { throw CLIError.unexpectedAnswer }
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
                let call = CoordinationCall.discover(service: service, tags: tags.split(separator: ",").map(String.init))
                guard case .instances(let found) = try await cluster.coordinate(call) else { throw CLIError.unexpectedAnswer }
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
                try await cluster.done(.deregister(service: service, instance: instance))
                output(cluster.json, ["deregistered": instance], text: "OK, deregistered")
            }
        }
    }
}

/// `aspen lockset`: several locks taken and freed together, all or none.
struct LockSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockset", abstract: "Take or free several locks at once, all or none.", subcommands: [Acquire.self, Release.self])

    struct Acquire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take every named lock (waiting up to --wait-ms) on one lease; prints the shared fencing token.",
            discussion: "Exit 2 if any of them is still held by someone else after the wait; then none is taken.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var names: [String]
        @Option(help: "Who holds them (default: this host and process).") var holder: String?
        @Option var ttlMs: Int64 = 30_000
        @Option var waitMs: Int64 = 0

        func run() async throws {
            try await runReporting {
                let who = holder ?? "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)"
                guard case .grants(let grants) = try await cluster.coordinate(.lockSetAcquire(names: names, holder: who, ttlMs: ttlMs, waitMs: waitMs)),
                    let first = grants.first
                else { throw CLIError.unexpectedAnswer }
                output(
                    cluster.json, ["token": first.token, "holder": who, "lease": first.lease, "locks": grants.map(\.name)], text: "\(first.token)")
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Free every named lock; if any token is stale none is freed (exit 2).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var names: [String]
        @Option var holder: String
        @Option var token: Int64

        func run() async throws {
            try await runReporting {
                try await cluster.done(.lockSetRelease(names: names, holder: holder, token: token))
                output(cluster.json, ["released": names], text: "OK, released")
            }
        }
    }
}

/// `aspen rwlock`: many readers or one writer.
struct ReadWriteLockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rwlock", abstract: "Read-write locks: many readers or one writer; a waiting writer keeps new readers out.",
        subcommands: [Read.self, Write.self, ReleaseRead.self, ReleaseWrite.self, Downgrade.self])

    struct HoldOptions: ParsableArguments {
        @Argument var name: String
        @Option(help: "Who holds it (default: this host and process).") var holder: String?
        @Option var ttlMs: Int64 = 30_000
        @Option var waitMs: Int64 = 0

        var who: String { holder ?? "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)" }
    }

    /// The hold as a user passes it back: its name (NAME or NAME/reader/SLOT), token and lease.
    struct GrantOptions: ParsableArguments {
        @Argument(help: "The hold name printed when it was taken.") var hold: String
        @Option var holder: String
        @Option var token: Int64
        @Option var lease: Int64

        var grant: LockGrant { LockGrant(name: hold, holder: holder, token: token, lease: lease, ttlMs: 0) }
    }

    static func report(_ grant: LockGrant, _ json: Bool) {
        output(
            json, ["hold": grant.name, "holder": grant.holder, "token": grant.token, "lease": grant.lease],
            text: "\(grant.name) \(grant.token) \(grant.lease)")
    }

    struct Read: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a read hold (waiting up to --wait-ms); prints the hold, its token and lease (exit 2 if a writer holds or waits).")
        @OptionGroup var cluster: ClusterOptions
        @OptionGroup var options: HoldOptions

        func run() async throws {
            try await runReporting {
                let call = CoordinationCall.readLock(name: options.name, holder: options.who, ttlMs: options.ttlMs, waitMs: options.waitMs)
                report(try await cluster.grant(call), cluster.json)
            }
        }
    }

    struct Write: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take the write hold (waiting up to --wait-ms for readers to leave); prints the hold, its token and lease.")
        @OptionGroup var cluster: ClusterOptions
        @OptionGroup var options: HoldOptions

        func run() async throws {
            try await runReporting {
                let call = CoordinationCall.writeLock(name: options.name, holder: options.who, ttlMs: options.ttlMs, waitMs: options.waitMs)
                report(try await cluster.grant(call), cluster.json)
            }
        }
    }

    struct ReleaseRead: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "release-read", abstract: "End a read hold (exit 2 if it is stale).")
        @OptionGroup var cluster: ClusterOptions
        @OptionGroup var options: GrantOptions

        func run() async throws {
            try await runReporting {
                try await cluster.done(.readUnlock(options.grant))
                output(cluster.json, ["released": options.hold], text: "OK, released")
            }
        }
    }

    struct ReleaseWrite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "release-write", abstract: "End the write hold (exit 2 if it is stale).")
        @OptionGroup var cluster: ClusterOptions
        @OptionGroup var options: GrantOptions

        func run() async throws {
            try await runReporting {
                try await cluster.done(.writeUnlock(options.grant))
                output(cluster.json, ["released": options.hold], text: "OK, released")
            }
        }
    }

    struct Downgrade: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Turn the write hold into a read hold atomically; prints the read hold.")
        @OptionGroup var cluster: ClusterOptions
        @OptionGroup var options: GrantOptions

        func run() async throws {
            try await runReporting { report(try await cluster.grant(.downgrade(options.grant)), cluster.json) }
        }
    }
}

extension ClusterOptions {
    /// Runs one coordination call on the leader.
    func coordinate(_ call: CoordinationCall) async throws -> CoordinationAnswer {
        try await client().coordinate(call)
    }

    func grant(_ call: CoordinationCall) async throws -> LockGrant {
        guard case .grant(let grant) = try await coordinate(call) else { throw CLIError.unexpectedAnswer }
        return grant
    }

    func done(_ call: CoordinationCall) async throws {
        guard case .done = try await coordinate(call) else { throw CLIError.unexpectedAnswer }
    }
}
