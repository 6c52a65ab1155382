import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenTesting
import AspenTransport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The processes on this machine whose command line (arguments joined by spaces) satisfies
/// `matches`, read from /proc so that no procps is needed. A zombie's command line is empty, so
/// zombies never match.
func processes(where matches: (String) -> Bool) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap(Int32.init).filter { pid in
        guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !raw.isEmpty else { return false }
        let arguments = raw.split(separator: 0, omittingEmptySubsequences: false).dropLast(raw.last == 0 ? 1 : 0)
        return matches(arguments.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " "))
    }
}

/// Waits until `check` passes, or records an issue saying what was awaited and throws.
func eventually(_ what: String, seconds: Double = 30, _ check: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? await check()) == true { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    Issue.record("timed out waiting until \(what)")
    throw ClientError.unavailable(what)
}

/// Real `aspen-node` processes on loopback ports, killed and restarted like real machines.
final class ProcessCluster: @unchecked Sendable {
    // @unchecked: mutated only from the test's own task.
    let directory: URL
    let basePort: Int
    var entries: [String] = []
    var processes: [Int: Process] = [:]

    static var binaryDirectory: URL { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent() }
    static func binary(_ name: String) -> String {
        [binaryDirectory, binaryDirectory.deletingLastPathComponent()].map { $0.appendingPathComponent(name).path }
            .first { FileManager.default.isExecutableFile(atPath: $0) } ?? binaryDirectory.appendingPathComponent(name).path
    }

    init(nodes: Int) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-processes-\(UUID().uuidString)")
        // Below Linux's ephemeral range (32768 and up): ports that servers bound to port 0 and
        // outgoing connections never take, so a node restarted after kill -9 finds its port free.
        basePort = 20_000 + Int.random(in: 0..<1_200) * 10
        for id in 1...nodes {
            let key = try Self.run(Self.binary("aspen-node"), ["key", "--data-dir", dataDirectory(id)])
            entries.append("\(id)=\(key.trimmingCharacters(in: .whitespacesAndNewlines))@127.0.0.1:\(basePort + id)")
        }
    }

    deinit {
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    func dataDirectory(_ id: Int) -> String { directory.appendingPathComponent("n\(id)").path }
    var endpointsText: String { entries.joined(separator: ",") }

    static func run(_ binary: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    func start(_ id: Int, environment: [String: String] = [:], adding extra: [String] = []) throws {
        let peers = entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
        try start(id, arguments: ["--peers", peers, "--bootstrap"] + extra, environment: environment)
    }

    /// The admin (HTTP) address node `id` listens on when started with `adminArguments(id)`.
    func adminURL(_ id: Int, _ path: String) -> String { "http://127.0.0.1:\(basePort + 50 + id)\(path)" }
    func adminArguments(_ id: Int) -> [String] { ["--http", "127.0.0.1:\(basePort + 50 + id)"] }

    /// Starts node `id` with its data directory, address and test timings plus `arguments`.
    /// With `output`, the node's standard output and error go to that file.
    func start(_ id: Int, arguments: [String], environment: [String: String] = [:], output: URL? = nil) throws {
        let process = Process()
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.executableURL = URL(fileURLWithPath: Self.binary("aspen-node"))
        process.arguments = [
            "run", "--node-id", "\(id)", "--data-dir", dataDirectory(id), "--listen", "127.0.0.1:\(basePort + id)",
            "--heartbeat-ms", "30", "--election-timeout-ms", "300-599", "--log-level", "warning",
        ] + arguments
        if let output {
            FileManager.default.createFile(atPath: output.path, contents: nil)
            let handle = try FileHandle(forWritingTo: output)
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        processes[id] = process
    }

    func startAll(environment: [String: String] = [:], admin: Bool = false) throws {
        for id in 1...entries.count { try start(id, environment: environment, adding: admin ? adminArguments(id) : []) }
    }

    func kill9(_ id: Int) {
        guard let process = processes[id] else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminateAll() {
        for process in processes.values where process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    func client(only id: Int? = nil, cookie: ClusterCookie? = nil) throws -> AspenClient {
        let text = id.map { entries[$0 - 1] } ?? endpointsText
        let peers = try PeerList.parse(text)
        return try AspenClient(
            endpoints: peers.keys.sorted().map { Endpoint(id: $0, host: peers[$0]!.host, port: peers[$0]!.port, key: peers[$0]!.key) },
            attemptsMax: 60, cookie: cookie)
    }

    /// Runs the `aspen` CLI against the cluster (or `endpoints`); returns its exit status and output.
    func aspen(
        _ arguments: [String], stdin: String? = nil, endpoints: String? = nil, withErrors: Bool = false, environment: [String: String] = [:]
    ) async throws -> (Int32, String) {
        let endpointsText = self.endpointsText
        // The CLI's own key lives with the cluster, not in the home directory of whoever runs the tests.
        let environment = ["ASPEN_IDENTITY_DIR": directory.appendingPathComponent("cli-identity").path].merging(environment) { $1 }
        return try await offThePool {
            try Self.runAspen(arguments, stdin: stdin, endpoints: endpoints ?? endpointsText, withErrors: withErrors, environment: environment)
        }
    }

    /// With `withErrors`, standard error is part of the output (for messages of failed expectations).
    static func runAspen(
        _ arguments: [String], stdin: String?, endpoints: String, withErrors: Bool = false, environment: [String: String] = [:]
    ) throws -> (Int32, String) {
        let process = Process()
        var environment = environment
        if environment["ASPEN_IDENTITY_DIR"] == nil {
            environment["ASPEN_IDENTITY_DIR"] = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-cli-identity-\(getpid())").path
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.executableURL = URL(fileURLWithPath: Self.binary("aspen"))
        // Before a `--`: what follows it is the command's own (a job's command line).
        var arguments = arguments
        arguments.insert(contentsOf: ["--endpoints", endpoints], at: arguments.firstIndex(of: "--") ?? arguments.endIndex)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = withErrors ? output : FileHandle.nullDevice
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Has node `via` add node `id` (started, knowing nobody) as a learner with the CLI,
    /// retried while node `id` is still starting.
    func addLearner(_ id: Int, via: Int = 1) async throws {
        let entry = entries[id - 1]
        let address = String(entry[entry.index(after: entry.firstIndex(of: "=")!)...])
        let endpoints = entries[via - 1]
        try await eventually("node \(id) is added as a learner") {
            try await self.aspen(["cluster", "add-learner", "--node-id", "\(id)", "--addr", address], endpoints: endpoints).0 == 0
        }
    }

    func leader(timeoutSeconds: Double = 30) async throws -> Int {
        let client = try client()
        defer { Task { await client.close() } }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            for (_, result) in await client.status() {
                if case .success(let status) = result, status.role == "leader" { return Int(status.id) }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClientError.unavailable("no leader")
    }
}

extension ClusterSuites {
    @Suite("Real aspen-node processes", .serialized, .timeLimit(.minutes(3)))
    struct ProcessClusterTests {
        @Test("kill -9 of the leader under load loses no acknowledged write; the killed node restarts and catches up; histories are linearizable")
        func killLeaderUnderLoad() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            let leader = try await cluster.leader()
            let client = try cluster.client()
            let history = HistoryRecorder()
            let clock = ContinuousClock()
            let start = clock.now
            // Microseconds since the start: the real-time order the checker needs.
            func now() -> UInt64 {
                let elapsed = (clock.now - start).components
                return UInt64(elapsed.seconds) * 1_000_000 + UInt64(elapsed.attoseconds / 1_000_000_000_000)
            }
            let writers = (0..<4).map { writer in
                Task {
                    for number in 0..<40 {
                        let key = UInt8(writer)
                        let value = UInt64(writer * 1000 + number)
                        let invoked = now()
                        await history.attempting(value)
                        do {
                            // The writer's register (for the linearizability check) and a key of the
                            // write's own (for the audit below), in one atomic write.
                            try await client.batch([
                                .put(Put(key: [UInt8(ascii: "r"), key], value: SimulatedCommandBytes.encode(value))),
                                .put(Put(key: WriteAudit.key(value), value: SimulatedCommandBytes.encode(value))),
                            ])
                            await history.add(key: key, value: value, invoked: invoked, completed: now())
                        } catch {
                            await history.add(key: key, value: value, invoked: invoked, completed: nil)
                        }
                        let readInvoked = now()
                        if let read = try? await client.get([UInt8(ascii: "r"), key]) {
                            await history.read(key: key, value: SimulatedCommandBytes.decode(read.value), invoked: readInvoked, completed: now())
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            cluster.kill9(leader)
            for writer in writers { await writer.value }
            let acknowledged = await history.acknowledgedWrites
            #expect(acknowledged.count > 100, "only \(acknowledged.count) writes were acknowledged")

            // Without the killed node, another member leads and answers.
            let newLeader = try await cluster.leader()
            #expect(newLeader != leader, "node \(leader) was killed, yet it is reported as the leader")
            let survivor = try cluster.client(only: newLeader)
            let members = try await survivor.members()
            #expect(members.voters.contains(NodeID(UInt64(newLeader))), "leader \(newLeader) is not a voter of \(members.voters)")
            #expect(try await survivor.put(Array("after-kill".utf8), [1]).revision > 0)
            await survivor.close()

            // The killed node restarts from its data directory and catches up.
            try cluster.start(leader)
            let final = try await client.put(Array("marker".utf8), [1])
            let attempted = await history.attempted
            let acknowledgedValues = acknowledged.compactMap { operation -> UInt64? in
                if case .put(let value) = operation.input { value } else { nil }
            }
            for id in 1...3 {
                let single = try cluster.client(only: id)
                let deadline = Date().addingTimeInterval(10)
                while Date() < deadline, (try? await single.get(Array("marker".utf8), consistency: .stale)) == nil {
                    try await Task.sleep(for: .milliseconds(50))
                }
                let page = try await single.scan(.prefix([UInt8(ascii: "r")]), consistency: .stale)
                #expect(page.revision >= final.revision, "node \(id) did not catch up")
                // Every acknowledged write is there, nothing that was never attempted is.
                let audit = WriteAudit(
                    found: try await single.scan(.prefix(WriteAudit.prefix), limit: 1000, consistency: .stale).kvs,
                    acknowledged: acknowledgedValues, attempted: attempted)
                #expect(audit.lost.isEmpty && audit.neverAttempted.isEmpty && audit.mismatched.isEmpty, "node \(id): \(audit)")
                // Each register ends at a value its writer attempted, no older than its last acknowledged one.
                for kv in page.kvs where kv.key.count == 2 {
                    let writer = Int(kv.key[1])
                    let value = SimulatedCommandBytes.decode(kv.value) ?? .max
                    let lastAcknowledged = acknowledgedValues.filter { Int($0) / 1000 == writer }.max()
                    #expect(attempted.contains(value) && value >= (lastAcknowledged ?? 0), "node \(id): register \(writer) ends at \(value), last acknowledged \(lastAcknowledged.map(String.init) ?? "none"); \(audit)")
                }
                await single.close()
            }
            // Every register's history through the failover is linearizable.
            let verdict = Linearizability.check(await history.operations)
            #expect(verdict == .linearizable, "\(verdict)")
            await client.close()
            cluster.terminateAll()
        }

        @Test("the CLI closes its TLS connections before it exits: the node sees no connection cut short")
        func cliClosesConnections() async throws {
            let cluster = try ProcessCluster(nodes: 1)
            let log = URL(fileURLWithPath: cluster.dataDirectory(1) + ".log")
            try cluster.start(1, arguments: ["--peers", "", "--bootstrap"], output: log)
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            #expect(try await cluster.aspen(["kv", "put", "k", "v"]).0 == 0)
            #expect(try await cluster.aspen(["kv", "get", "absent"]).0 == 1)
            #expect(try await cluster.aspen(["cluster", "status"]).0 == 0)
            try await Task.sleep(for: .milliseconds(300))
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            #expect(!text.contains("uncleanShutdown"), "\(text.split(separator: "\n").filter { $0.contains("uncleanShutdown") }.prefix(3))")
        }

        @Test("the aspen CLI against real nodes: values, JSON, and exit codes that tell failures apart")
        func commandLine() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            _ = try await cluster.leader()
            func aspen(_ arguments: [String], stdin: String? = nil) async throws -> (Int32, String) { try await cluster.aspen(arguments, stdin: stdin) }
            #expect(try await aspen(["kv", "put", "greeting", "hello"]).0 == 0)
            #expect(try await aspen(["kv", "get", "greeting"]) == (0, "hello"))
            let json = try await aspen(["kv", "get", "greeting", "--json"]).1
            #expect(json.contains("\"value\":\"hello\""))
            #expect(try await aspen(["kv", "get", "absent"]).0 == 1)
            #expect(try await aspen(["kv", "cas", "greeting", "--expected", "nope", "--new", "x"]).0 == 2)
            #expect(try await aspen(["kv", "cas", "greeting", "--expected", "hello", "--new", "hi"]).0 == 0)
            #expect(try await aspen(["kv", "put", String(repeating: "k", count: 1100), "v"]).0 == 4)
            let transaction = #"{"compare":[{"key":"greeting","value":"hi"}],"success":[{"put":{"key":"greeting","value":"bye"}}]}"#
            #expect(try await aspen(["kv", "txn"], stdin: transaction).0 == 0)
            #expect(try await aspen(["kv", "get", "greeting"]).1 == "bye")
            // A compare over every key with a prefix; a put that keeps the value.
            let overPrefix = #"{"compare":[{"key":"greet","prefix":true,"target":"version","op":"<","value":9}],"success":[{"put":{"key":"greeting","ignoreValue":true,"value":""}}]}"#
            #expect(try await aspen(["kv", "txn"], stdin: overPrefix).0 == 0)
            #expect(try await aspen(["kv", "put", "greeting", "--ignore-value"]).0 == 0)
            #expect(try await aspen(["kv", "get", "greeting"]).1 == "bye")
            #expect(try await aspen(["kv", "put", "nobody", "--ignore-value"]).0 != 0)
            #expect(try await aspen(["kv", "put", "greeting", "x", "--ignore-value"]).0 == 4)
            #expect(try await aspen(["kv", "scan", "", "--keys-only"]).1 == "greeting")
            // Watch replays the key's history from revision 1: three puts so far.
            let watched = try await aspen(["kv", "watch", "greeting", "--exact", "--from-revision", "1", "--count", "3", "--json"])
            #expect(watched.0 == 0)
            #expect(watched.1.split(separator: "\n").count == 3)
            #expect(watched.1.contains("\"value\":\"bye\""))
            let snapshot = try await aspen(["cluster", "snapshot", "--json"])
            #expect(snapshot.0 == 0)
            #expect(snapshot.1.contains("\"index\""))
            // Every member hashes the same state (etcd's hashkv); defragmenting keeps it.
            let hashed = try await aspen(["cluster", "hash", "--json"])
            #expect(hashed.0 == 0 && hashed.1.contains("\"agree\":true"), "\(hashed)")
            let defragmented = try await aspen(["cluster", "defrag"])
            #expect(defragmented.0 == 0 && defragmented.1.split(separator: "\n").filter { $0.hasPrefix("OK, ") }.count == 3, "\(defragmented)")
            #expect(try await aspen(["kv", "get", "greeting"]).1 == "bye")
            #expect(try await aspen(["cluster", "hash", "--revision", "999999"]).0 != 0)
            let metrics = try await aspen(["cluster", "metrics"])
            #expect(metrics.0 == 0)
            #expect(metrics.1.contains("aspen_raft_snapshot_index"))
            #expect(metrics.1.contains("aspen_request_seconds_bucket{op=\"kv.write\""))
            // Coordination layers through the CLI: a lock with fencing tokens, a counter, a sequence.
            let token = try await aspen(["lock", "acquire", "jobs", "--holder", "me", "--ttl-ms", "10000"])
            #expect(token.0 == 0)
            #expect(try await aspen(["lock", "acquire", "jobs", "--holder", "you"]).0 == 2)
            #expect(try await aspen(["lock", "release", "jobs", "--holder", "me", "--token", "\((Int(token.1) ?? 0) + 1000)"]).0 == 2)
            #expect(try await aspen(["lock", "release", "jobs", "--holder", "me", "--token", token.1]).0 == 0)
            #expect(try await aspen(["counter", "add", "hits", "5"]).1 == "5")
            #expect(try await aspen(["counter", "sub", "hits", "9"]).1 == "0")
            #expect(try await aspen(["sequence", "orders", "--reserve", "3"]).1 == "1-3")
            #expect(try await aspen(["queue", "enqueue", "work", "job-1"]).0 == 0)
            #expect(try await aspen(["queue", "peek", "work"]).1.hasSuffix(" job-1"), "peek shows the item and leaves it")
            let taken = try await aspen(["queue", "dequeue", "work", "--visibility-ms", "60000"]).1.split(separator: " ")
            #expect(taken.count == 3 && taken[2] == "job-1", "\(taken)")
            #expect(try await aspen(["queue", "dequeue", "work"]).0 == 1, "nothing else is visible")
            #expect(try await aspen(["queue", "peek", "work"]).0 == 1, "an in-flight item is not visible to peek either")
            #expect(try await aspen(["queue", "ack", "work", "--id", String(taken[0]), "--receipt", "1"]).0 == 2, "a wrong receipt is refused")
            let extended = try await aspen(["queue", "extend", "work", "--id", String(taken[0]), "--receipt", String(taken[1]), "--by-ms", "60000"])
            #expect(extended.0 == 0, "\(extended)")
            #expect(try await aspen(["queue", "ack", "work", "--id", String(taken[0]), "--receipt", extended.1]).0 == 0, "the extended receipt acks")
            // Rate limits: the bucket empties, refuses, and is refilled by reset.
            let bucket = ["--capacity", "2", "--per-second", "0.001"]
            #expect(try await aspen(["ratelimit", "api", "--count", "2"] + bucket).0 == 0)
            #expect(try await aspen(["ratelimit", "api"] + bucket).0 == 2, "the bucket is empty")
            #expect(try await aspen(["ratelimit", "reset", "api"] + bucket).0 == 0)
            #expect(try await aspen(["ratelimit", "acquire", "api"] + bucket).0 == 0, "full again after the reset")
            #expect(try await aspen(["election", "campaign", "cron", "--candidate", "n1"]).0 == 0)
            #expect(try await aspen(["election", "leader", "cron"]).1.hasPrefix("n1 "))
            #expect(try await aspen(["semaphore", "acquire", "pool", "--capacity", "1", "--holder", "a"]).0 == 0)
            #expect(try await aspen(["semaphore", "acquire", "pool", "--capacity", "1", "--holder", "b"]).0 == 2, "the only permit is taken")
            #expect(try await aspen(["barrier", "enter", "go", "--participant", "p1", "--count", "1"]).1 == "1 entered, released")
            #expect(try await aspen(["service", "register", "web", "--instance", "w1", "--address", "10.0.0.1:80", "--tags", "eu"]).0 == 0)
            #expect(try await aspen(["service", "discover", "web", "--tags", "eu"]).1 == "w1 10.0.0.1:80 eu")
            // Lock sets: all or none; release refuses a stale token and frees nothing then.
            let set = try await aspen(["lockset", "acquire", "a", "b", "--holder", "s1"])
            #expect(set.0 == 0)
            #expect(try await aspen(["lockset", "acquire", "b", "c", "--holder", "s2"]).0 == 2, "b is held")
            #expect(try await aspen(["lock", "holder", "c"]).0 == 1, "none of a refused set is taken")
            #expect(try await aspen(["lockset", "release", "a", "b", "--holder", "s1", "--token", "1"]).0 == 2)
            #expect(try await aspen(["lockset", "release", "a", "b", "--holder", "s1", "--token", set.1]).0 == 0)
            #expect(try await aspen(["lock", "holder", "a"]).0 == 1)
            // Read-write locks: readers share, a writer waits for them; a hold name may contain '/'.
            let reader = try await aspen(["rwlock", "read", "docs/main", "--holder", "r1", "--json"])
            #expect(reader.0 == 0)
            #expect(try await aspen(["rwlock", "read", "docs/main", "--holder", "r2"]).0 == 0)
            #expect(try await aspen(["rwlock", "write", "docs/main", "--holder", "w", "--wait-ms", "200"]).0 == 2, "readers hold it")
            let hold = try JSONSerialization.jsonObject(with: Data(reader.1.utf8)) as? [String: Any] ?? [:]
            let released = try await aspen([
                "rwlock", "release-read", hold["hold"] as? String ?? "", "--holder", "r1", "--token", "\(hold["token"] as? Int ?? 0)",
                "--lease", "\(hold["lease"] as? Int ?? 0)",
            ])
            #expect(released.0 == 0, "\(released.1)")
            let members = try await aspen(["cluster", "members", "--json"])
            #expect(members.1.contains("\"role\":\"voter\""))
            let status = try await aspen(["cluster", "status", "--json"])
            #expect(status.0 == 0)
            #expect(status.1.contains("\"leaderId\""))
            // A broken ticket is bad input; nothing was sent.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = ["kv", "get", "greeting", "--ticket", "aspen1tooshort"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 4)
            cluster.terminateAll()
        }

        @Test("restarting the whole cluster keeps all data")
        func restartEverything() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            _ = try await cluster.leader()
            let client = try cluster.client()
            for number in 0..<30 { try await client.put(Array("k\(number)".utf8), Array("v\(number)".utf8)) }
            await client.close()
            cluster.terminateAll()
            try cluster.startAll()
            _ = try await cluster.leader()
            let again = try cluster.client()
            #expect(try await again.count(.prefix(Array("k".utf8))) == 30)
            #expect(try await again.get(Array("k7".utf8))?.value == Array("v7".utf8))
            await again.close()
            cluster.terminateAll()
        }
    }
}

/// Values as the simulator encodes them, so histories check with the same register model.
enum SimulatedCommandBytes {
    static func encode(_ value: UInt64) -> Bytes { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func decode(_ bytes: Bytes) -> UInt64? {
        guard bytes.count == 8 else { return nil }
        return bytes.reversed().reduce(0) { ($0 << 8) | UInt64($1) }
    }
}

/// The writes of a run, as found on one node, against those acknowledged and attempted. Each
/// write has a key of its own whose value is the write's number, so a lost write, one that was
/// never attempted, and one applied twice (version 2: a client retry after an unknown outcome;
/// allowed, and shown) all show.
struct WriteAudit: CustomStringConvertible {
    static let prefix = Array("w/".utf8)
    static func key(_ value: UInt64) -> Bytes { prefix + Array(String(value).utf8) }

    var lost: [UInt64]
    var neverAttempted: [UInt64]
    var mismatched: [String]
    var appliedTwice: [UInt64]
    var foundCount: Int

    init(found: [KeyValue], acknowledged: [UInt64], attempted: Set<UInt64>) {
        var present = Set<UInt64>()
        mismatched = []
        appliedTwice = []
        for kv in found {
            let number = UInt64(String(decoding: kv.key.dropFirst(Self.prefix.count), as: UTF8.self))
            let value = SimulatedCommandBytes.decode(kv.value)
            guard let number, value == number else {
                mismatched.append("\(String(decoding: kv.key, as: UTF8.self))=\(value.map(String.init) ?? "?")")
                continue
            }
            present.insert(number)
            if kv.version > 1 { appliedTwice.append(number) }
        }
        foundCount = found.count
        lost = acknowledged.filter { !present.contains($0) }.sorted()
        neverAttempted = present.subtracting(attempted).sorted()
        appliedTwice.sort()
    }

    var description: String {
        "\(foundCount) writes found; acknowledged but lost: \(lost); never attempted: \(neverAttempted); "
            + "key and value disagree: \(mismatched); applied more than once: \(appliedTwice)"
    }
}

actor HistoryRecorder {
    var operations: [Linearizability.Operation] = []
    var nextID: UInt64 = 1
    /// Every value a writer tried to write, recorded before it was sent.
    var attempted = Set<UInt64>()

    func attempting(_ value: UInt64) { attempted.insert(value) }

    var acknowledgedWrites: [Linearizability.Operation] {
        operations.filter { $0.output == .ok }
    }

    func add(key: UInt8, value: UInt64, invoked: UInt64, completed: UInt64?) {
        operations.append(
            Linearizability.Operation(
                id: nextID, client: Int(key), key: key, input: .put(value), output: completed == nil ? nil : .ok, invokedAt: invoked,
                completedAt: completed))
        nextID += 1
    }

    func read(key: UInt8, value: UInt64?, invoked: UInt64, completed: UInt64) {
        operations.append(
            Linearizability.Operation(
                id: nextID, client: 100 + Int(key), key: key, input: .get, output: .value(value), invokedAt: invoked,
                completedAt: completed))
        nextID += 1
    }
}

/// Runs blocking work (a child process, to its end) on a thread of its own: a test waiting for a
/// CLI must not hold one of the few threads that every test running at the same time needs (on
/// 2 cores, two such waits starve every other test's timers and renewals).
func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
