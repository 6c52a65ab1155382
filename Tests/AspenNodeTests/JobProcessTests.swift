import AspenClient
import AspenCore
import AspenJobs
import Foundation
import Synchronization
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
            for pid in processes(where: { $0 == commandLine }) { Foundation.kill(pid, SIGKILL) }
        }

        @Test("the leader's automatic history compaction runs as maintenance jobs, each listed with the revision it compacted to")
        func historyCompactionJobs() async throws {
            // Three nodes: the job may run on a follower's maintenance worker.
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: ["ASPEN_AUTO_COMPACTION_RETENTION": "1s"])
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            #expect(try await cluster.aspen(["kv", "put", "k", "first"]).0 == 0)
            let first = try #require(try Self.json(try await cluster.aspen(["kv", "get", "k", "--json"]).1)["modRevision"] as? Int)
            // A compaction past the first write, run as a job (the policy samples every 100 ms).
            var past: [String: Any]?
            let deadline = Date().addingTimeInterval(30)
            var writes = 0
            while Date() < deadline, past == nil {
                writes += 1
                #expect(try await cluster.aspen(["kv", "put", "k", "v\(writes)"]).0 == 0)
                let (_, listed) = try await cluster.aspen(["job", "list", "--type", "maintenance", "--state", "succeeded", "--json"])
                past = (try Self.json(listed)["jobs"] as? [[String: Any]] ?? []).first { job in
                    guard let command = job["command"] as? [String], command.first == "kv-compact", let revision = Int(command.last ?? "") else { return false }
                    return revision > first
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            let job = try #require(past, "no kv-compact job past revision \(first) succeeded in 30 s")
            let revision = try #require(Int((job["command"] as? [String])?.last ?? ""), "\(job)")
            let (_, result) = try await cluster.aspen(["job", "result", "\(job["id"] as? Int ?? 0)"])
            #expect(try Self.json(result)["revision"] as? Int == revision, "\(result)")
            // The history before that revision is gone: a read there is refused as compacted.
            let (refused, said) = try await cluster.aspen(["kv", "get", "k", "--revision", "\(first)"], withErrors: true)
            #expect(refused != 0 && said.contains("compacted"), "\(said)")
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
            let (logged, logs) = try await cluster.aspen(["job", "logs", "\(id)", "--follow"], withErrors: true)
            #expect(logged == 0 && logs == "hello from \(id)", "\(logs)")
            // The ended attempt's output moves to the blob store, tagged, and is read from there.
            var archived = ""
            for _ in 0..<80 where !archived.contains("aspen/job-output/\(id)/1") {
                try await Task.sleep(for: .milliseconds(250))
                archived = try await cluster.aspen(["blob", "list", "--tag", "aspen/job-output/\(id)/"], withErrors: true).1
            }
            #expect(archived.contains("aspen/job-output/\(id)/1"), "\(archived)")
            let (reread, fromBlob) = try await cluster.aspen(["job", "logs", "\(id)"], withErrors: true)
            #expect(reread == 0 && fromBlob == "hello from \(id)", "\(fromBlob)")
            // Followed from before it starts: the output as it comes, to the attempt's end.
            let slow = try await Self.submit(cluster, ["--", "sh", "-c", "echo one; sleep 1; echo two >&2; echo three"])
            let (followed, live) = try await cluster.aspen(["job", "logs", "\(slow)", "--follow"], withErrors: true)
            // The streams are read apart: their lines may interleave either way.
            let slowHistory = try await Self.history(cluster, slow)
            #expect(followed == 0 && live.split(separator: "\n").sorted() == ["one", "three", "two"], "\(live)\n\(slowHistory)")

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
            #expect((try Self.json(list)["jobs"] as? [[String: Any]])?.count == 3, "\(list)")
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
            try await eventually("the first attempt's process runs") { !Self.alive(commandLine: hang).isEmpty }
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

            // The killed node's job process ran on, orphaned; restarted, the node kills it first.
            #expect(!Self.alive(commandLine: hang).isEmpty, "the first attempt's process should have outlived its node")
            try cluster.start(victim, environment: ["ASPEN_JOB_LEASE_MS": "1500"])
            try await eventually("the restarted node killed its old job's process") { Self.alive(commandLine: hang).isEmpty }
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

        /// A cluster whose nodes run no jobs, its leader, and one `aspen worker run` process that
        /// no node kill touches (so each job's effect can be counted). Stop both with `stop`.
        static func withWorker(_ arguments: [String]) async throws -> (cluster: ProcessCluster, leader: Int, worker: Process) {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: ["ASPEN_JOB_WORKERS": "0"])
            let leader = try await cluster.leader()
            return (cluster, leader, try worker(cluster, arguments, log: cluster.directory.appendingPathComponent("worker.log")))
        }

        static func stop(_ cluster: ProcessCluster, _ worker: Process) {
            worker.terminate()
            worker.waitUntilExit()
            cluster.terminateAll()
        }

        @Test("a cron schedule every 2 s with the leader killed once: every tick makes one job, none twice, none skipped; each runs once")
        func cronAcrossLeaderKill() async throws {
            let (cluster, leader, worker) = try await Self.withWorker(["--concurrency", "2"])
            defer { Self.stop(cluster, worker) }
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
                // The schedule's jobs (not the cluster's maintenance, should an interval end meanwhile).
                jobs = listed.filter { $0.origin == "cron:tick" }
                return jobs.allSatisfy { $0.state.isFinal }
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

        final class Submitted: Sendable {
            let count = Mutex(0)
        }

        /// Lines of a file, or none if it does not exist yet.
        static func lines(_ path: String) -> [String] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        @Test("idempotency under a leader kill: 4 clients submit 600 jobs with distinct keys, the leader dies; one job per key, each run once")
        func submitsAcrossLeaderKill() async throws {
            let total = Int(ProcessInfo.processInfo.environment["ASPEN_JOB_SUBMITS"] ?? "") ?? 600
            let (cluster, leader, worker) = try await Self.withWorker(["--concurrency", "4", "--lease", "3s"])
            defer { Self.stop(cluster, worker) }
            let effects = cluster.directory.appendingPathComponent("effects").path
            let clients = try (0..<4).map { _ in try cluster.client() }
            defer { for client in clients { Task { await client.close() } } }
            let progress = Submitted()
            let submitting = Task {
                try await withThrowingTaskGroup(of: [(String, UInt64)].self) { group in
                    for (index, client) in clients.enumerated() {
                        group.addTask {
                            var made: [(String, UInt64)] = []
                            for number in stride(from: index, to: total, by: 4) {
                                let key = "k\(number)"
                                let spec = JobSpec(type: "shell", command: ["sh", "-c", "echo \(key) >> \(effects)"], idempotencyKey: key)
                                made.append((key, try await client.submitJob(spec).id))
                                progress.count.withLock { $0 += 1 }
                            }
                            return made
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
            }
            try await eventually("a third of the jobs are submitted") { progress.count.withLock { $0 } >= total / 3 }
            cluster.kill9(leader)
            let made = try await submitting.value
            #expect(made.count == total)
            #expect(Set(made.map(\.0)).count == total && Set(made.map(\.1)).count == total, "a key answered with two jobs or two keys with one")
            let client = clients[0]
            var jobs: [JobRecord] = []
            try await eventually("every job has finished", seconds: 120) {
                var all: [JobRecord] = []
                var after: UInt64 = 0
                while case .jobs(let page) = try await client.job(.list(state: nil, type: nil, after: after, limit: 1000)), let last = page.last {
                    all += page
                    after = last.id
                }
                jobs = all
                return all.count >= total && all.allSatisfy { $0.state.isFinal }
            }
            #expect(jobs.count == total, "\(jobs.count) jobs for \(total) keys")
            #expect(Dictionary(made, uniquingKeysWith: { $1 }) == Dictionary(uniqueKeysWithValues: jobs.map { ($0.spec.idempotencyKey!, $0.id) }))
            // A claim whose answer the leader's death lost leaves its job claimed for nobody until
            // the lease runs out: such a job has a second attempt, and still one effect.
            #expect(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.filter { $0.state != .succeeded }.map(\.id))")
            let ran = Self.lines(effects)
            #expect(ran.count == total && Set(ran).count == total, "\(ran.count) effects, \(Set(ran).count) distinct, for \(total) jobs")
        }

        @Test("50 concurrent submits with one idempotency key from three clients make one job")
        func idempotencyRace() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: ["ASPEN_JOB_WORKERS": "0"])
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let clients = try (0..<3).map { _ in try cluster.client() }
            defer { for client in clients { Task { await client.close() } } }
            let answers = try await withThrowingTaskGroup(of: (UInt64, Bool).self) { group in
                for index in 0..<50 {
                    group.addTask {
                        try await clients[index % 3].submitJob(JobSpec(type: "shell", command: ["true"], idempotencyKey: "deploy-7"))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(answers.map(\.0)).count == 1 && answers.filter(\.1).count == 1, "\(answers)")
            guard case .jobs(let jobs) = try await clients[0].job(.list(state: nil, type: nil, after: 0, limit: 100)) else { throw JobError.invalid("") }
            #expect(jobs.count == 1)
        }

        @Test("priorities with the worker away: critical, high, normal, low; a job needing tags waits for a worker with them")
        func prioritiesAndAffinity() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: ["ASPEN_JOB_WORKERS": "0"])
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let order = cluster.directory.appendingPathComponent("order").path
            for priority in ["low", "normal", "high", "critical"] {
                _ = try await Self.submit(cluster, ["--priority", priority, "--", "sh", "-c", "echo \(priority) >> \(order)"])
            }
            let gpu = try await Self.submit(cluster, ["--tags", "gpu=true", "--", "sh", "-c", "echo gpu >> \(order)"])
            let plain = try Self.worker(cluster, ["--concurrency", "1", "--name", "plain"], log: cluster.directory.appendingPathComponent("plain.log"))
            defer {
                plain.terminate()
                plain.waitUntilExit()
            }
            try await eventually("the untagged jobs ran") { Self.lines(order).count >= 4 }
            #expect(Self.lines(order) == ["critical", "high", "normal", "low"])
            try await Task.sleep(for: .seconds(1))
            let (_, waiting) = try await cluster.aspen(["job", "status", "\(gpu)", "--json"])
            #expect(try Self.json(waiting)["state"] as? String == "pending", "\(waiting)")
            let tagged = try Self.worker(
                cluster, ["--tags", "gpu=true", "--name", "tagged"], log: cluster.directory.appendingPathComponent("tagged.log"))
            defer {
                tagged.terminate()
                tagged.waitUntilExit()
            }
            let (status, _) = try await cluster.aspen(["job", "result", "\(gpu)", "--wait", "30s"], withErrors: true)
            #expect(status == 0)
            let (_, done) = try await cluster.aspen(["job", "status", "\(gpu)", "--json"])
            #expect((try Self.json(done)["attempt"] as? [String: Any])?["worker"] as? String == "tagged", "\(done)")
        }

        @Test("a timer survives a whole-cluster stop, and a shell job past its timeout leaves no process behind; one with --no-network reaches no port of the node")
        func timerAcrossRestartAndTimeout() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let hang = "sleep \(700_000 + Int.random(in: 0..<100_000))"
            defer { Self.kill(commandLine: hang) }
            let stuck = try await Self.submit(
                cluster, ["--timeout", "1s", "--max-attempts", "1", "--", "sh", "-c", "setsid \(hang) & \(hang)"])
            let (failed, why) = try await cluster.aspen(["job", "result", "\(stuck)", "--wait", "30s"], withErrors: true)
            #expect(failed == 2 && why.contains("timed out after 1s"), "\(why)")
            let alive = Self.alive(commandLine: hang)
            #expect(alive.isEmpty, "processes of a timed-out job survive: \(alive)")

            let later = try await Self.submit(cluster, ["--run-at", "+6s", "--", "echo", "late"])
            let due = Int(Date().timeIntervalSince1970 * 1000) + 5000
            cluster.terminateAll()
            try cluster.startAll()
            let (status, result) = try await cluster.aspen(["job", "result", "\(later)", "--wait", "60s"], withErrors: true)
            #expect(status == 0 && result == "late", "\(result)")
            let history = try await Self.history(cluster, later)
            #expect(history.first?["state"] as? String == "scheduled", "\(history)")
            let started = history.first { $0["state"] as? String == "running" }?["at_ms"] as? Int ?? 0
            #expect(started >= due, "the timer fired early: \(history)")

            // A shell job submitted with --no-network reaches no port of the node; the same job
            // without it does. (It needs a worker that can make the namespace, root: none here
            // otherwise, and the job waits.)
            let port = try #require(cluster.entries[0].split(separator: ":").last.flatMap { Int($0) })
            let probe = "(exec 3<>/dev/tcp/127.0.0.1/\(port)) 2>/dev/null && echo reached || echo unreachable"
            let open = try await Self.submit(cluster, ["--", "bash", "-c", probe])
            #expect(try await cluster.aspen(["job", "result", "\(open)", "--wait", "30s"], withErrors: true) == (0, "reached"))
            let closed = try await Self.submit(cluster, ["--no-network", "--max-attempts", "1", "--", "bash", "-c", probe])
            let (closedStatus, closedResult) = try await cluster.aspen(["job", "result", "\(closed)", "--wait", getuid() == 0 ? "30s" : "2s"], withErrors: true)
            if getuid() == 0 {
                #expect(closedStatus == 0 && closedResult == "unreachable", "\(closedResult)")
            } else {
                #expect(closedStatus != 0 && closedResult.contains("still pending"), "\(closedResult)")
            }
            let (refused, refusal) = try await cluster.aspen(["job", "submit", "--type", "resize", "--no-network"], withErrors: true)
            #expect(refused != 0 && refusal.contains("--no-network is for shell jobs"), "\(refusal)")
        }

        /// Living processes whose command line is exactly `commandLine`.
        static func alive(commandLine: String) -> [Int32] { processes { $0 == commandLine } }

        @Test("a saga whose last step fails is undone in reverse, each compensation once, across a leader kill mid-compensation")
        func sagaAcrossLeaderKill() async throws {
            let (cluster, leader, worker) = try await Self.withWorker(["--concurrency", "2"])
            defer { Self.stop(cluster, worker) }
            let log = cluster.directory.appendingPathComponent("saga.log").path
            let file = cluster.directory.appendingPathComponent("saga.json").path
            let definition: [String: Any] = [
                "name": "order", "max_attempts": 1,
                "steps": [
                    ["name": "reserve", "run": "echo run:reserve >> \(log)", "compensate": "sleep 1; echo undo:reserve >> \(log)"],
                    ["name": "charge", "run": "echo run:charge >> \(log)", "compensate": "sleep 2; echo undo:charge >> \(log)"],
                    ["name": "ship", "run": "echo run:ship >> \(log); exit 1"],
                ],
            ]
            try JSONSerialization.data(withJSONObject: definition).write(to: URL(fileURLWithPath: file))
            let (started, said) = try await cluster.aspen(["saga", "run", file], withErrors: true)
            #expect(started == 0, "\(said)")
            let id = try #require(UInt64(said))
            let client = try cluster.client()
            defer { Task { await client.close() } }
            try await eventually("the saga is undoing charge") {
                guard case .saga(let saga) = try await client.job(.saga(id)) else { return false }
                return saga.state == .compensating && saga.compensationJobs[1] != nil
            }
            cluster.kill9(leader)
            let (ended, status) = try await cluster.aspen(["saga", "status", "\(id)", "--wait", "60s", "--json"], withErrors: true)
            #expect(ended == 2, "\(status)")
            #expect(Self.lines(log) == ["run:reserve", "run:charge", "run:ship", "undo:charge", "undo:reserve"], "\(Self.lines(log))")
        }

        @Test("a hook across a leader kill: every event published runs its job at least once, with the event in ASPEN_EVENT")
        func hookAcrossLeaderKill() async throws {
            let (cluster, leader, worker) = try await Self.withWorker(["--concurrency", "2"])
            defer { Self.stop(cluster, worker) }
            let seen = cluster.directory.appendingPathComponent("seen").path
            let (made, said) = try await cluster.aspen(
                ["hook", "create", "on-order", "--on", "orders.>", "--", "sh", "-c", "echo \"$ASPEN_EVENT\" >> \(seen)"], withErrors: true)
            #expect(made == 0, "\(said)")
            let client = try cluster.client()
            defer { Task { await client.close() } }
            var cursors: [UInt64] = []
            for number in 0..<30 {
                if number == 15 { cluster.kill9(leader) }
                // Each with an id: a publish retried across the leader's death is published once.
                guard case .published(let at) = try await client.job(
                    .publish([TopicMessage(subject: "orders.n\(number)", payload: Array("\(number)".utf8), messageID: "order-\(number)")]))
                else { throw JobError.invalid("not published") }
                cursors += at
            }
            try await eventually("every event's job has run", seconds: 60) {
                let lines = Self.lines(seen)
                return Set(cursors).isSubset(of: Set(lines.compactMap { line in
                    (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["cursor"] as? Int
                }.map(UInt64.init)))
            }
            let (_, metrics) = try await cluster.aspen(["hook", "metrics", "--json"])
            let hooks = (try JSONSerialization.jsonObject(with: Data(metrics.utf8)) as? [String: Any])?["hooks"] as? [[String: Any]]
            #expect(hooks?.first?["dead"] as? Int == 0, "\(metrics)")
        }

        @Test("cluster events across a leader kill: each write under config/ is published once and runs its hook; the new leader's term is an event")
        func clusterEventsAcrossLeaderKill() async throws {
            let (cluster, leader, worker) = try await Self.withWorker(["--concurrency", "2"])
            defer { Self.stop(cluster, worker) }
            let seen = cluster.directory.appendingPathComponent("seen").path
            // Leader events asked for first: a pass of the leader's manager between the two would
            // record the current term unpublished (events are not retroactive) and this test
            // would wait for an event that was never due.
            for arguments in [
                ["topic", "retention", "hooks.cluster.>", "--max-msgs", "1000"],
                ["hook", "create", "on-config", "--on", "hooks.kv.put.config.>", "--", "sh", "-c", "echo \"$ASPEN_EVENT\" >> \(seen)"],
            ] {
                let (status, said) = try await cluster.aspen(arguments, withErrors: true)
                #expect(status == 0, "\(said)")
            }
            // Events start once asked for: the leader's manager reads what is asked at most a second late.
            try await Task.sleep(for: .seconds(2))
            let client = try cluster.client()
            defer { Task { await client.close() } }
            for number in 0..<40 {
                if number == 20 { cluster.kill9(leader) }
                _ = try await client.put(Array("config/k\(number)".utf8), Array("v\(number)".utf8))
                _ = try await client.put(Array("other/k\(number)".utf8), Array("v".utf8))
            }
            let expected = (0..<40).map { "config/k\($0)" }
            var keys: [String] = []
            try await eventually("every config write is in the stream", seconds: 60) {
                let (_, text) = try await cluster.aspen(["sub", "hooks.kv.>", "--from-cursor", "0", "--idle", "1s", "--json"])
                keys = text.split(separator: "\n").compactMap { line in
                    guard let message = try? Self.json(String(line)), let data = message["data"] as? String else { return nil }
                    return (try? Self.json(data))?["key"] as? String
                }
                return keys.count >= expected.count
            }
            #expect(keys == expected, "published once each, in order, and nothing outside config/")
            try await eventually("every config write's hook job has run", seconds: 60) {
                let events = Self.lines(seen).compactMap { line -> String? in
                    guard let event = try? Self.json(line), let data = event["data"] as? String else { return nil }
                    return (try? Self.json(data))?["key"] as? String
                }
                return Set(expected).isSubset(of: Set(events))
            }
            let (_, text) = try await cluster.aspen(["sub", "hooks.cluster.leader", "--from-cursor", "0", "--idle", "1s", "--json"])
            let leaders = text.split(separator: "\n").compactMap { line in
                (try? Self.json(String(line))).flatMap { $0["data"] as? String }.flatMap { try? Self.json($0) }
            }.compactMap { event in (event["node"] as? Int).flatMap { node in (event["term"] as? Int).map { (node, $0) } } }
            // The first leader's term, published once asked for, and the term of the one after the kill.
            #expect(leaders.count >= 2 && leaders.first?.0 == leader && leaders.last!.0 != leader, "leader events \(leaders)")
            #expect(leaders.map(\.1) == leaders.map(\.1).sorted() && Set(leaders.map(\.1)).count == leaders.count, "leader events \(leaders)")
        }

        @Test("a blob added and collected, and snapshots on the leader and a follower, are events on hooks.blob and hooks.cluster.snapshot, once each")
        func blobAndSnapshotEvents() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: BlobUpkeepProcessTests.environment(graceMs: 0))
            defer { cluster.terminateAll() }
            let leader = try await cluster.leader()
            for arguments in [["topic", "retention", "hooks.blob.>", "--max-msgs", "100"], ["topic", "retention", "hooks.cluster.snapshot", "--max-msgs", "100"]] {
                let (status, said) = try await cluster.aspen(arguments, withErrors: true)
                #expect(status == 0, "\(said)")
            }
            // Each node reads what is asked for at most a second late.
            try await Task.sleep(for: .seconds(2))
            let added = try await BlobUpkeepProcessTests.add(cluster, bytes: Array(repeating: 5, count: 3000))
            let hash = String(added.split(separator: " ").first ?? "")
            let follower = leader % 3 + 1
            for endpoints in [cluster.entries[leader - 1], cluster.entries[follower - 1]] {
                let (status, said) = try await cluster.aspen(["cluster", "snapshot"], endpoints: endpoints, withErrors: true)
                #expect(status == 0, "\(said)")
            }
            let (collected, said) = try await cluster.aspen(["blob", "gc", "--json"], withErrors: true)
            #expect(collected == 0 && said.contains(hash), "\(said)")
            func events(_ pattern: String) async throws -> [(subject: String, data: [String: Any])] {
                let (_, text) = try await cluster.aspen(["sub", pattern, "--from-cursor", "0", "--idle", "1s", "--json"])
                return text.split(separator: "\n").compactMap { line in
                    guard let message = try? Self.json(String(line)), let subject = message["subject"] as? String, let data = message["data"] as? String,
                        let fields = try? Self.json(data)
                    else { return nil }
                    return (subject, fields)
                }
            }
            var blobs: [(subject: String, data: [String: Any])] = []
            var snapshots: [(subject: String, data: [String: Any])] = []
            try await eventually("the blob's and the snapshots' events are published", seconds: 30) {
                blobs = try await events("hooks.blob.>")
                snapshots = try await events("hooks.cluster.snapshot")
                return blobs.count >= 2 && snapshots.count >= 2
            }
            #expect(blobs.map(\.subject) == ["hooks.blob.added", "hooks.blob.deleted"], "\(blobs)")
            #expect(blobs.allSatisfy { $0.data["hash"] as? String == hash && $0.data["size"] as? Int == 3000 }, "\(blobs)")
            #expect(Set(snapshots.compactMap { $0.data["node"] as? Int }) == [leader, follower], "\(snapshots)")
            #expect(snapshots.allSatisfy { ($0.data["index"] as? Int ?? 0) > 0 }, "\(snapshots)")
        }

        @Test("in-process hooks run on the leader without jobs; one at its concurrency drops events and counts them; a timeout leaves no process")
        func inProcessHooks() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(admin: true)
            defer { cluster.terminateAll() }
            let leader = try await cluster.leader()
            let seen = cluster.directory.appendingPathComponent("seen").path
            for arguments in [
                // Room for all five pings at once: a slow pass may take them in one batch, and at
                // the default concurrency (4) the fifth would be dropped, as designed.
                ["hook", "create", "fast", "--on", "ping.>", "--in-process", "--concurrency", "8", "--", "sh", "-c", "echo \"$ASPEN_HOOK $ASPEN_EVENT\" >> \(seen)"],
                ["hook", "create", "slow", "--on", "slow.>", "--in-process", "--concurrency", "1", "--timeout", "1s", "--", "sleep", "31"],
            ] {
                let (status, said) = try await cluster.aspen(arguments, withErrors: true)
                #expect(status == 0, "\(said)")
            }
            let (refused, said) = try await cluster.aspen(
                ["hook", "create", "bad", "--on", "x", "--in-process", "--concurrency", "0", "--", "true"], withErrors: true)
            #expect(refused != 0 && said.contains("concurrency is 1 to 64"), "\(said)")
            let client = try cluster.client()
            defer { Task { await client.close() } }
            for number in 0..<5 {
                _ = try await client.job(.publish([TopicMessage(subject: "ping.n\(number)", payload: Array("\(number)".utf8))]))
            }
            // One batch: the leader's manager takes all five in one pass, with room for one.
            _ = try await client.job(.publish((0..<5).map { TopicMessage(subject: "slow.n\($0)", payload: []) }))
            try await eventually("every ping ran its command", seconds: 30) { Self.lines(seen).count >= 5 }
            #expect(Set(Self.lines(seen).map { $0.split(separator: " ")[0] }) == ["fast"])
            let (_, jobs) = try await cluster.aspen(["job", "list", "--json"])
            #expect(!jobs.contains("\"id\""), "an in-process hook made jobs: \(jobs)")
            var metrics = ""
            try await eventually("the slow hook ran one command, timed it out and dropped four events", seconds: 30) {
                metrics = try await AdminServerTests.get(cluster.adminURL(leader, "/metrics")).1
                return metrics.contains("aspen_hook_inprocess_timeouts_total{hook=\"slow\"} 1")
            }
            #expect(metrics.contains("aspen_hook_inprocess_dropped_total{hook=\"slow\"} 4"), "\(metrics.split(separator: "\n").filter { $0.contains("inprocess") })")
            #expect(metrics.contains("aspen_hook_inprocess_runs_total{hook=\"fast\"} 5"))
            #expect(Self.alive(commandLine: "sleep 31").isEmpty, "the timed-out command is still running")
            // The hooks' consumer groups are in the leader's metrics (read every 5 s).
            try await eventually("the groups' figures are in /metrics", seconds: 20) {
                metrics = try await AdminServerTests.get(cluster.adminURL(leader, "/metrics")).1
                return metrics.contains("aspen_group_next_cursor{group=\"hook:slow\"} 11")
            }
            #expect(metrics.contains("aspen_group_pending{group=\"hook:fast\"} 0"))
        }
    }
}
