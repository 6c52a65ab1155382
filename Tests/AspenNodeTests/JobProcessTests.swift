import AspenClient
import AspenCore
import AspenJobs
import Foundation
import Testing

extension ClusterSuites {
    /// The job system against real node processes: through the CLI, with node kills.
    @Suite("Jobs on a real cluster", .serialized, .timeLimit(.minutes(6)))
    struct JobProcessTests {
        static func json(_ text: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
        }

        static func submit(_ cluster: ProcessCluster, _ arguments: [String]) async throws -> UInt64 {
            let (status, printed) = try await cluster.aspen(["job", "submit"] + arguments, withErrors: true)
            #expect(status == 0, "\(printed)")
            return try #require(UInt64(printed), "not a job id: \(printed)")
        }

        static func history(_ cluster: ProcessCluster, _ id: UInt64) async throws -> [[String: Any]] {
            let (status, text) = try await cluster.aspen(["job", "history", "\(id)", "--json"], withErrors: true)
            #expect(status == 0, "\(text)")
            return try #require(try json(text)["history"] as? [[String: Any]])
        }

        /// Kills every process whose command line is exactly `commandLine` (space-separated).
        static func kill(commandLine: String) {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = Int32(entry), let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
                let arguments = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                if arguments.joined(separator: " ") == commandLine { Foundation.kill(pid, SIGKILL) }
            }
        }

        @Test("a shell job runs on a node's worker; its result, status and history come back through the CLI; bad input is refused")
        func roundTrip() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let id = try await Self.submit(cluster, ["--", "sh", "-c", "echo hello from $ASPEN_JOB_ID"])
            let (status, result) = try await cluster.aspen(["job", "result", "\(id)", "--wait", "30s"], withErrors: true)
            #expect(status == 0, "\(result)")
            #expect(result == "hello from \(id)")
            let history = try await Self.history(cluster, id)
            #expect(history.map { $0["state"] as? String } == ["pending", "running", "succeeded"])
            #expect((1...3).contains(history[1]["node"] as? Int ?? 0), "\(history)")
            #expect(history[2]["exit_code"] as? Int == 0, "\(history)")

            // A failing job: dead after exactly its attempts, with the reason; then redriven.
            let failing = try await Self.submit(cluster, ["--max-attempts", "2", "--backoff", "fixed:100ms", "--", "sh", "-c", "echo oops >&2; exit 3"])
            let (failed, said) = try await cluster.aspen(["job", "result", "\(failing)", "--wait", "30s"], withErrors: true)
            #expect(failed == 2, "\(said)")
            #expect(said.contains("dead") && said.contains("exit code 3: oops"), "\(said)")
            let (_, dlq) = try await cluster.aspen(["job", "dlq", "list", "--json"])
            #expect((try Self.json(dlq)["jobs"] as? [[String: Any]])?.map { $0["id"] as? Int } == [Int(failing)], "\(dlq)")
            let states = try await Self.history(cluster, failing).compactMap { $0["state"] as? String }
            #expect(states == ["pending", "running", "scheduled", "pending", "running", "dead"], "\(states)")

            // Refusals name the problem and change nothing.
            let huge = String(repeating: "x", count: Limits.standard.jobCommandBytesMax + 1)
            let (refused, why) = try await cluster.aspen(["job", "submit", "--", "echo", huge], withErrors: true)
            #expect(refused == 4 && why.contains("jobCommandBytesMax"), "\(why)")
            let (unknown, whyUnknown) = try await cluster.aspen(["job", "submit", "--depends-on", "999999", "--", "true"], withErrors: true)
            #expect(unknown == 4 && whyUnknown.contains("unknown dependency"), "\(whyUnknown)")
            let (missing, _) = try await cluster.aspen(["job", "status", "999999"])
            #expect(missing == 1)
            let (listed, list) = try await cluster.aspen(["job", "list", "--json"])
            #expect(listed == 0)
            #expect((try Self.json(list)["jobs"] as? [[String: Any]])?.count == 2, "\(list)")
        }

        @Test("SIGKILL of the node running a job: the job runs again elsewhere after its lease, and the dead attempt's token is refused")
        func workerNodeKilled() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: ["ASPEN_JOB_LEASE_MS": "1500"])
            defer { cluster.terminateAll() }
            let leader = try await cluster.leader()
            let victim = leader == 1 ? 2 : 1
            let marker = cluster.directory.appendingPathComponent("ran").path
            // The first attempt (on the victim, preferred) hangs; a later one succeeds at once. A
            // killed node leaves its job's processes behind: the unique sleep finds them afterwards.
            let hang = "sleep \(600_000 + Int.random(in: 0..<100_000))"
            defer { Self.kill(commandLine: hang) }
            let script = "echo $ASPEN_JOB_ATTEMPT >> \(marker); [ $ASPEN_JOB_ATTEMPT -gt 1 ] || \(hang)"
            let id = try await Self.submit(cluster, ["--prefer-node", "\(victim)", "--backoff", "none", "--", "sh", "-c", script])
            let client = try cluster.client()
            defer { Task { await client.close() } }
            var first: JobAttempt?
            try await eventually("the job runs on node \(victim)") {
                let record = try await client.jobRecord(.job(id))
                first = record.attempt
                return record.state == .running && record.attempt?.node == UInt64(victim)
            }
            cluster.kill9(victim)
            let (status, result) = try await cluster.aspen(["job", "result", "\(id)", "--wait", "60s", "--json"], withErrors: true)
            #expect(status == 0, "\(result)")
            let record = try await client.jobRecord(.job(id))
            let second = try #require(record.attempt)
            let old = try #require(first)
            #expect(record.state == .succeeded && second.number == 2 && second.node != UInt64(victim))
            #expect(second.token != old.token)
            let history = try await Self.history(cluster, id)
            let running = history.filter { $0["state"] as? String == "running" && $0["attempt"] != nil }
            #expect(running.map { $0["token"] as? String } == [String(old.token, radix: 16), String(second.token, radix: 16)], "\(history)")
            #expect(history.contains { ($0["message"] as? String)?.contains("lease expired: worker node-\(victim)") == true }, "\(history)")

            // The killed attempt's report, replayed with its token, is refused and changes nothing.
            do {
                _ = try await client.job(.finish(id, type: "shell", token: old.token, outcome: .failed(message: "late", retryable: true), exitCode: 1))
                Issue.record("a report with a dead attempt's token was accepted")
            } catch let error as JobError {
                guard case .staleAttempt = error else { throw error }
            }
            #expect(try await client.jobRecord(.job(id)) == record)
        }

        /// Starts `aspen worker run` against the cluster; its log goes to `log`.
        static func worker(_ cluster: ProcessCluster, _ arguments: [String], log: URL) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = ["worker", "run", "--endpoints", cluster.endpointsText] + arguments
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return process
        }

        @Test("a cron schedule every 2 s with the leader killed once: every tick makes one job, none twice, none skipped; each runs once")
        func cronAcrossLeaderKill() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            // The jobs run on a worker process that no kill touches, so each job's effect can be counted.
            try cluster.startAll(environment: ["ASPEN_JOB_WORKERS": "0"])
            defer { cluster.terminateAll() }
            let leader = try await cluster.leader()
            let worker = try Self.worker(cluster, ["--concurrency", "2"], log: cluster.directory.appendingPathComponent("worker.log"))
            defer {
                worker.terminate()
                worker.waitUntilExit()
            }
            let effects = cluster.directory.appendingPathComponent("effects").path
            let (made, said) = try await cluster.aspen(
                ["job", "submit", "--cron", "*/2 * * * * *", "--name", "tick", "--", "sh", "-c", "echo $ASPEN_JOB_ID >> \(effects)"], withErrors: true)
            #expect(made == 0, "\(said)")
            try await Task.sleep(for: .seconds(6))
            cluster.kill9(leader)
            try await Task.sleep(for: .seconds(8))
            let (paused, _) = try await cluster.aspen(["cron", "pause", "tick"])
            #expect(paused == 0)
            let client = try cluster.client()
            defer { Task { await client.close() } }
            var jobs: [JobRecord] = []
            try await eventually("every tick's job has finished") {
                guard case .jobs(let listed) = try await client.job(.list(state: nil, type: nil, after: 0, limit: 1000)) else { return false }
                jobs = listed
                return listed.allSatisfy { $0.state.isFinal }
            }
            let ticks = jobs.compactMap { $0.spec.idempotencyKey?.split(separator: ":").last.flatMap { Int64($0) } }
            #expect(ticks.count == jobs.count && Set(ticks).count == ticks.count, "two jobs for one tick: \(ticks.sorted())")
            #expect(ticks.count >= 5, "\(ticks.sorted())")
            let sorted = ticks.sorted()
            #expect(zip(sorted, sorted.dropFirst()).allSatisfy { $1 - $0 == 2000 }, "a tick was skipped: \(sorted)")
            #expect(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.map { ($0.id, $0.state, $0.lastError ?? "") })")
            let ran = try String(contentsOfFile: effects, encoding: .utf8).split(separator: "\n").map(String.init)
            #expect(ran.sorted() == jobs.map { String($0.id) }.sorted(), "each job's effect once: ran \(ran), jobs \(jobs.map(\.id))")
            let (_, history) = try await cluster.aspen(["cron", "history", "tick", "--json"])
            let recorded = try #require(try Self.json(history)["ticks"] as? [[String: Any]])
            #expect(recorded.count == jobs.count, "\(history)")
        }
    }
}
