import AspenClient
import AspenCoordination
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
