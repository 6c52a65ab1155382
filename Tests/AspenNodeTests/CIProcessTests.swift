import AspenBlob
import AspenCI
import AspenClient
import AspenCore
import AspenJobs
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension ClusterSuites {
    @Suite("CI: pipelines run on push against real nodes", .serialized, .timeLimit(.minutes(6)))
    struct CIProcessTests {
        func started(environment: [String: String] = [:]) async throws -> (ProcessCluster, GitClient, AspenClient) {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: environment)
            _ = try await cluster.leader()
            let git = try GitClient(directory: cluster.directory)
            let (status, output) = try await cluster.aspen(["repo", "create", "demo"], withErrors: true)
            #expect(status == 0, "\(output)")
            return (cluster, git, try cluster.client())
        }

        /// Runs `body` against a 3-node cluster with repository `demo` (and the path of a working
        /// tree to make, `source`); stops the cluster after it, thrown or not.
        func withCluster(
            environment: [String: String] = [:], _ body: (ProcessCluster, GitClient, AspenClient, String) async throws -> Void
        ) async throws {
            let (cluster, git, client) = try await started(environment: environment)
            defer { cluster.terminateAll() }
            do {
                try await body(cluster, git, client, cluster.directory.appendingPathComponent("source").path)
            } catch {
                await client.close()
                throw error
            }
            await client.close()
        }

        /// A working tree with `files` committed on main; returns its path and head.
        func commit(_ git: GitClient, at path: String, _ files: [String: String], message: String = "change", new: Bool = true) throws -> String {
            if new { try git.check(["init", "-q", "-b", "main", path], endpoints: "") }
            for (name, text) in files {
                let file = (path as NSString).appendingPathComponent(name)
                try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try text.write(toFile: file, atomically: true, encoding: .utf8)
            }
            try git.check(["add", "-A"], in: path, endpoints: "")
            try git.check(["commit", "-q", "-m", message], in: path, endpoints: "")
            return try git.check(["rev-parse", "HEAD"], in: path, endpoints: "")
        }

        func runs(_ client: AspenClient, _ repo: String = "demo") async throws -> [CIRun] {
            guard case .runs(let runs) = try await client.ci(.list(repo: repo, limit: 50)) else { return [] }
            return runs
        }

        /// Waits for the runs of `sha` to have ended; returns them.
        func ended(_ client: AspenClient, sha: String, count: Int = 1, seconds: Double = 90) async throws -> [CIRun] {
            var found: [CIRun] = []
            try await eventually("\(count) run(s) of \(sha.prefix(12)) ended", seconds: seconds) {
                found = try await runs(client).filter { $0.sha == sha }
                return found.count >= count && found.allSatisfy { $0.state.ended }
            }
            return found
        }

        func log(_ cluster: ProcessCluster, _ run: UInt64, _ job: String, node: Int = 1) async throws -> String {
            let (status, output) = try await cluster.aspen(["ci", "logs", "\(run)", job], endpoints: cluster.entries[node - 1], withErrors: true)
            #expect(status == 0, "\(output)")
            return output
        }

        @Test("one push, one run: the exact commit checked out clean, jobs in DAG order, a failure with its log and exit code, its dependents skipped, per-job statuses")
        func pushRunsOnce() async throws {
            try await withCluster { cluster, git, client, source in
                let pipeline = """
                    version: 1
                    jobs:
                      build:
                        run: |
                          echo "head $(git rev-parse HEAD)"
                          echo "author $(git log -1 --format=%an)"
                          test -z "$(git status --porcelain)" && echo clean
                          echo "env $ASPEN_CI_SHA $ASPEN_CI_REF $CI"
                      test:
                        needs: [build]
                        matrix: { config: [debug, release] }
                        fail_fast: false
                        run: |
                          echo "testing $ASPEN_CI_MATRIX_CONFIG"
                          if [ "$ASPEN_CI_MATRIX_CONFIG" = release ]; then echo "release broke" >&2; exit 3; fi
                      deploy:
                        needs: [test]
                        run: echo deployed
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline, "README": "demo\n"])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
                let found = try await ended(client, sha: sha)
                #expect(found.count == 1, "\(found)")
                let run = try #require(found.first)
                #expect(run.state == .failure && run.event == .push && run.ref == "refs/heads/main", "\(run)")
                #expect(run.jobs.map(\.name) == ["build", "test (config=debug)", "test (config=release)", "deploy"])
                #expect(run.jobs.map(\.state) == [.success, .success, .failure, .skipped], "\(run.jobs)")
                #expect(run.job("test (config=release)")?.attempts.last?.exitCode == 3)
                // The job saw the pushed commit, clean, with its author.
                let build = try await log(cluster, run.id, "build", node: 3)
                #expect(build.contains("head \(sha)") && build.contains("author Test") && build.contains("clean"), "\(build)")
                #expect(build.contains("env \(sha) refs/heads/main true"), "\(build)")
                let failed = try await log(cluster, run.id, "test (config=release)", node: 2)
                #expect(failed.contains("testing release") && failed.contains("release broke"), "\(failed)")
                #expect(try await log(cluster, run.id, "test (config=debug)").contains("testing debug"))
                // The same pipeline run here with `ci run --local` ends each job the same way.
                let (localStatus, local) = try runProgram(ProcessCluster.binary("aspen"), ["ci", "run", "--local"], in: URL(fileURLWithPath: source), seconds: 120)
                #expect(localStatus == 2, "\(local)")
                for job in run.jobs { #expect(local.contains("== \(job.name): \(job.state) ("), "\(job.name) \(job.state): \(local)") }
                // Per-job statuses keyed by the commit; `ci status` fails.
                let (status, text) = try await cluster.aspen(["ci", "status", "demo", sha], withErrors: true)
                #expect(status != 0, "\(text)")
                guard case .statuses(let statuses) = try await client.ci(.status(repo: "demo", sha: sha)) else { Issue.record("no statuses"); return }
                let states = Dictionary(uniqueKeysWithValues: statuses.map { ($0.context, $0.state) })
                #expect(
                    states == [
                        "ci/ci": .failure, "ci/ci/build": .success, "ci/ci/test (config=debug)": .success, "ci/ci/test (config=release)": .failure,
                        "ci/ci/deploy": .skipped,
                    ], "\(states)")

                // A client cannot make a job of CI's type (it could name any repository's secrets).
                do {
                    _ = try await client.job(.submit(JobSpec(type: CIJobTask.jobType, payload: [1])))
                    Issue.record("a client submitted a ci job")
                } catch let error as JobError {
                    #expect("\(error)".contains("made by CI runs only"), "\(error)")
                }

                // Pushing the same commit again to the same ref starts nothing new; to another ref, one run.
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main:refs/heads/other"], in: source, endpoints: cluster.entries[0]) }
                _ = try await ended(client, sha: sha, count: 2)
                try await Task.sleep(for: .seconds(1))
                let all = try await runs(client).filter { $0.sha == sha }
                #expect(all.count == 2 && Set(all.map(\.ref)) == ["refs/heads/main", "refs/heads/other"], "\(all.map(\.ref))")

                // A commit asking to skip CI starts none; an invalid file makes a run in error with line and column.
                let skipped = try commit(git, at: source, ["README": "more\n"], message: "docs [skip ci]", new: false)
                let invalid = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  a: { run: x, colour: red }\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[2]) }
                let broken = try #require(try await ended(client, sha: invalid).first)
                #expect(broken.state == .error && broken.message.hasPrefix("ci.yml:3:"), "\(broken.message)")
                #expect(try await runs(client).filter { $0.sha == skipped }.isEmpty)
                let twice = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  a: { run: x }\n  a: { run: y }\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
                let doubled = try #require(try await ended(client, sha: twice).first)
                #expect(doubled.state == .error && doubled.message.hasPrefix("ci.yml:4:3: duplicate key 'a'"), "\(doubled.message)")

                // A manual run of main's commit, then a rerun of only what failed.
                let fixed = try commit(git, at: source, [".aspen/ci.yml": pipeline.replacingOccurrences(of: "exit 3", with: "exit 0")], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let pushed = try #require(try await ended(client, sha: fixed).first)
                #expect(pushed.state == .success, "\(pushed)")
                let (manualStatus, manualText) = try await cluster.aspen(["ci", "run", "demo", "--ref", "main", "--wait"], withErrors: true)
                #expect(manualStatus == 0, "\(manualText)")
                let manual = try await runs(client).filter { $0.sha == fixed && $0.event == .manual }
                #expect(manual.count == 1 && manual.first?.state == .success, "\(manual)")
                guard case .run(let again) = try await client.ci(.rerun(run: run.id, failedOnly: true)) else { Issue.record("no rerun"); return }
                #expect(again.rerunOf == run.id)
                let rerun = try #require(try await ended(client, sha: sha, count: 3).first { $0.id == again.id })
                #expect(rerun.job("build")?.state == .success && rerun.job("build")?.attempts.isEmpty == true, "\(rerun.jobs)")
                #expect(rerun.job("test (config=release)")?.state == .failure && rerun.job("deploy")?.state == .skipped, "\(rerun.jobs)")
            }
        }

        @Test("a job past its timeout and a cancelled run leave no process behind, setsid grandchildren included; the log of each is kept")
        func timeoutAndCancel() async throws {
            try await withCluster { cluster, git, client, source in
                let marker = "aspen-ci-test-\(UInt32.random(in: 0...UInt32.max))"
                let pipeline = """
                    version: 1
                    jobs:
                      hang:
                        timeout: 2s
                        run: |
                          echo started
                          setsid bash -c 'exec -a \(marker)-orphan sleep 600' &
                          bash -c 'exec -a \(marker)-child sleep 600'
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let run = try #require(try await ended(client, sha: sha).first)
                #expect(run.state == .failure && run.job("hang")?.detail.contains("timed out") == true, "\(run.jobs)")
                #expect(try await log(cluster, run.id, "hang").contains("started"))
                #expect(processes { $0.hasPrefix(marker) }.isEmpty, "left running: \(processes { $0.hasPrefix(marker) })")

                // Cancel a run whose job would run for ten minutes.
                let long = try commit(git, at: source, [".aspen/ci.yml": pipeline.replacingOccurrences(of: "timeout: 2s", with: "timeout: 10m")], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                var started: CIRun?
                try await eventually("the long job runs") {
                    started = try await runs(client).first { $0.sha == long }
                    return started?.job("hang")?.state == .running && !processes { $0.hasPrefix(marker) }.isEmpty
                }
                let id = try #require(started?.id)
                let (status, text) = try await cluster.aspen(["ci", "cancel", "\(id)"], endpoints: cluster.entries[2], withErrors: true)
                #expect(status == 0, "\(text)")
                // Within the stop's grace and a few scheduler passes, not a lease renewal (10 s here).
                let cancelled = try #require(try await ended(client, sha: long, seconds: 8).first)
                #expect(cancelled.state == .cancelled && cancelled.job("hang")?.state == .cancelled, "\(cancelled)")
                #expect(processes { $0.hasPrefix(marker) }.isEmpty, "left running: \(processes { $0.hasPrefix(marker) })")
            }
        }

        @Test("secrets: injected into the trusted run's job, masked in its log, withheld from a refs/for/* run (which, on a root node, runs as nobody with no network but its own loopback, seeing no other user's processes); a docs-only patch reports skipped and the merge gate takes it")
        func secretsPathsAndMergeGate() async throws {
            try await withCluster { cluster, git, client, source in
                let nodePort = try #require(cluster.entries[0].split(separator: ":").last.flatMap { Int($0) }, "\(cluster.entries[0])")
                let pipeline = """
                    version: 1
                    triggers:
                      push: { branches: [main], paths_ignore: ["docs/**"] }
                      patch: { paths_ignore: ["docs/**"] }
                    jobs:
                      deploy:
                        secrets: [DEPLOY_TOKEN]
                        artifacts: [kept.txt]
                        run: |
                          echo kept > kept.txt
                          echo "token=$DEPLOY_TOKEN"
                          if [ -n "$DEPLOY_TOKEN" ]; then echo has-token; else echo no-token; fi
                          echo "uid=$(id -u)"
                          if cat /proc/$PPID/environ > /dev/null 2>&1; then echo reads-the-node; else echo cannot-read-the-node; fi
                          (exec 3<>/dev/tcp/127.0.0.1/\(nodePort)) 2>/dev/null && echo reaches-the-node-port || echo cannot-reach-the-node-port
                          [ -e /proc/1/cmdline ] && echo sees-pid-1 || echo hides-pid-1
                    """
                var (status, text) = try await cluster.aspen(["ci", "secret", "set", "demo", "DEPLOY_TOKEN"], stdin: "s3cr3t-value-42\n", withErrors: true)
                #expect(status == 0, "\(text)")
                (status, text) = try await cluster.aspen(["ci", "secret", "list", "demo"], endpoints: cluster.entries[2], withErrors: true)
                #expect(status == 0 && text == "DEPLOY_TOKEN", "\(text)")
                (status, text) = try await cluster.aspen(["ci", "secret", "set", "demo", "1BAD"], stdin: "x", withErrors: true)
                #expect(status != 0 && text.contains("environment variable name"), "\(text)")

                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline, "src/app.txt": "v1\n"])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let run = try #require(try await ended(client, sha: sha).first)
                #expect(run.state == .success, "\(run)")
                let trusted = try await log(cluster, run.id, "deploy", node: 2)
                #expect(trusted.contains("token=***") && trusted.contains("has-token") && !trusted.contains("s3cr3t"), "\(trusted)")
                #expect(trusted.contains("reaches-the-node-port") && trusted.contains("sees-pid-1"), "\(trusted)")

                // A docs-only push: the run and its job report skipped.
                let docs = try commit(git, at: source, ["docs/guide.md": "words\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
                let skipped = try #require(try await ended(client, sha: docs).first)
                #expect(skipped.state == .skipped && skipped.job("deploy")?.state == .skipped, "\(skipped)")
                (status, text) = try await cluster.aspen(["ci", "status", "demo", docs], withErrors: true)
                #expect(status == 0 && text.contains("skipped"), "\(text)")

                // A patch changing code runs without the secret.
                try git.check(["checkout", "-q", "-b", "fix"], in: source, endpoints: "")
                let patchCode = try commit(git, at: source, ["src/app.txt": "v2\n"], message: "Fix the app", new: false)
                var pushed = try await offThePool { try git.run(["push", "aspen://demo", "HEAD:refs/for/main"], in: source, endpoints: cluster.entries[1]) }
                #expect(pushed.0 == 0, "\(pushed.1)")
                let untrusted = try #require(try await ended(client, sha: patchCode).first)
                #expect(untrusted.event == .patch && untrusted.state == .success, "\(untrusted)")
                let withheld = try await log(cluster, untrusted.id, "deploy")
                #expect(withheld.contains("no-token") && !withheld.contains("s3cr3t"), "\(withheld)")
                // As root, the node runs a patch's job as nobody: it cannot read the node's environment.
                if getuid() == 0 {
                    #expect(withheld.contains("uid=65534") && withheld.contains("cannot-read-the-node"), "\(withheld)")
                    // Nor reach the node's ports: it has no network but its own loopback.
                    #expect(withheld.contains("cannot-reach-the-node-port") && withheld.contains("with no network but its own loopback"), "\(withheld)")
                    // Nor see the node's or other jobs' command lines.
                    #expect(withheld.contains("hides-pid-1") && withheld.contains("seeing no other user's processes"), "\(withheld)")
                    // It keeps no artifacts: root would read them from a tree other untrusted jobs can change.
                    #expect(withheld.contains("untrusted run: artifacts are not kept"), "\(withheld)")
                    #expect(try await cluster.aspen(["ci", "artifact", "list", "\(untrusted.id)"]) == (0, ""))
                    #expect(try await cluster.aspen(["ci", "artifact", "list", "\(run.id)"]).1.contains("kept.txt"))
                    #expect(trusted.contains("uid=0"), "\(trusted)")
                }

                // main requires ci/ci/deploy: a docs-only patch reports it skipped, and the merge goes through.
                (status, text) = try await cluster.aspen(["repo", "protect", "demo", "main", "--require-status", "ci/ci/deploy"], withErrors: true)
                #expect(status == 0, "\(text)")
                try git.check(["checkout", "-q", "-b", "docs-fix", "main"], in: source, endpoints: "")
                let patchDocs = try commit(git, at: source, ["docs/guide.md": "better words\n"], message: "Improve the guide", new: false)
                pushed = try await offThePool { try git.run(["push", "aspen://demo", "HEAD:refs/for/main"], in: source, endpoints: cluster.entries[0]) }
                #expect(pushed.0 == 0, "\(pushed.1)")
                let docsRun = try #require(try await ended(client, sha: patchDocs).first)
                #expect(docsRun.state == .skipped, "\(docsRun)")
                (status, text) = try await cluster.aspen(["patch", "list", "demo", "--json"])
                let listed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                let patches = try #require(listed["patches"] as? [[String: Any]])
                let id = try #require(patches.first { $0["title"] as? String == "Improve the guide" }?["id"] as? String)
                (status, text) = try await cluster.aspen(["patch", "merge", "demo", id, "--strategy", "ff"], withErrors: true)
                #expect(status == 0, "\(text)")
            }
        }

        @Test("the worker's node SIGKILLed mid-job: the job runs again elsewhere, both tries' logs kept, one final status; pushes under leader kills start exactly one run each")
        func faults() async throws {
            // Short leases: a killed worker's job is given to another within seconds.
            let lease = ["ASPEN_JOB_LEASE_MS": "2000"]
            try await withCluster(environment: lease) { cluster, git, client, source in
                var (status, text) = (Int32(0), "")

                let slow = """
                    version: 1
                    jobs:
                      slow: { run: "echo start; sleep 4; echo done" }
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": slow])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                var jobID: UInt64 = 0
                var worker = 0
                try await eventually("the slow job runs") {
                    guard let run = try await runs(client).first(where: { $0.sha == sha }), let id = run.job("slow")?.attempts.last?.jobID,
                        case .job(let record) = try await client.job(.job(id)), record.state == .running, let node = record.attempt?.node
                    else { return false }
                    // Once its first line is stored: the first try's log is then not empty.
                    guard case .log(let page) = try await client.ci(.logs(run: run.id, job: "slow", attempt: 0, offset: 0, waitMs: 0)),
                        String(decoding: page.bytes, as: UTF8.self).contains("start")
                    else { return false }
                    (jobID, worker) = (id, Int(node))
                    return true
                }
                cluster.kill9(worker)
                let others = cluster.entries.enumerated().filter { $0.offset != worker - 1 }.map(\.element).joined(separator: ",")
                let survivor = try cluster.client(only: worker == 1 ? 2 : 1)
                defer { Task { await survivor.close() } }
                var run: CIRun?
                try await eventually("the run ends after its worker was killed", seconds: 60) {
                    run = try await runs(survivor).first { $0.sha == sha }
                    return run?.state.ended == true
                }
                let ended = try #require(run)
                #expect(ended.state == .success && ended.job("slow")?.attempts.map(\.jobID) == [jobID], "\(ended)")
                guard case .log(let page) = try await survivor.ci(.logs(run: ended.id, job: "slow", attempt: 0, offset: 0, waitMs: 0)) else {
                    Issue.record("no log")
                    return
                }
                #expect(page.attempts.count == 2 && page.attempts.allSatisfy { $0.jobID == jobID && $0.ended }, "\(page.attempts)")
                #expect(String(decoding: page.bytes, as: UTF8.self).contains("done"))
                (status, text) = try await cluster.aspen(["ci", "logs", "\(ended.id)", "slow", "--attempt", "1"], endpoints: others, withErrors: true)
                #expect(status == 0 && text.contains("start"), "\(text)")
                guard case .statuses(let statuses) = try await survivor.ci(.status(repo: "demo", sha: sha)) else { return }
                #expect(statuses.map(\.state) == [.success, .success], "\(statuses)")
                try cluster.start(worker, environment: lease)

                // Pushes while leaders are killed: each pushed commit gets exactly one run.
                let pushes = Int(ProcessInfo.processInfo.environment["ASPEN_CI_PUSHES"] ?? "") ?? 8
                let quick = "version: 1\njobs:\n  ok: { run: echo ok }\n"
                var pushed: [String] = []
                for round in 1...pushes {
                    let head = try commit(git, at: source, [".aspen/ci.yml": quick, "n.txt": "\(round)\n"], new: false)
                    pushed.append(head)
                    if round % 3 == 0 {
                        let leader = try await cluster.leader()
                        cluster.kill9(leader)
                        try cluster.start(leader, environment: lease)
                    }
                    // A push whose answer was lost is pushed again: it then changes nothing.
                    try await eventually("push \(round) lands", seconds: 60) {
                        let endpoint = cluster.entries[(round % 3)]
                        return try await offThePool { try git.run(["push", "-q", "aspen://demo", "main"], in: source, endpoints: endpoint).0 == 0 }
                    }
                }
                try await eventually("every pushed commit has one ended run", seconds: 120) {
                    let all = try await runs(client)
                    return pushed.allSatisfy { head in all.filter { $0.sha == head }.count == 1 && all.first { $0.sha == head }?.state == .success }
                }
                try await Task.sleep(for: .seconds(1))
                let all = try await runs(client)
                for head in pushed { #expect(all.filter { $0.sha == head }.count == 1, "\(head): \(all.filter { $0.sha == head })") }
            }
        }

        @Test("aspen ci logs --follow on another node sees each line within a second of the job printing it")
        func follow() async throws {
            try await withCluster { cluster, git, client, source in
                let pipeline = """
                    version: 1
                    jobs:
                      ticks: { run: "for i in $(seq 1 12); do echo \\"tick $(date +%s%N)\\"; sleep 0.3; done" }
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                var id: UInt64 = 0
                try await eventually("the run exists") {
                    id = try await runs(client).first { $0.sha == sha }?.id ?? 0
                    return id != 0
                }
                let arguments = ["ci", "logs", "\(id)", "ticks", "--follow"]
                let lines = try await offThePool { try Self.follow(cluster, arguments, endpoint: cluster.entries[2]) }
                let lags = lines.compactMap { line, seenNs -> Double? in
                    guard line.hasPrefix("tick "), let printed = UInt64(line.dropFirst(5)) else { return nil }
                    return Double(Int64(seenNs) - Int64(printed)) / 1e9
                }
                #expect(lags.count == 12, "\(lines)")
                let sorted = lags.sorted()
                #expect(sorted.count == 12 && sorted[sorted.count / 2] <= 1.0, "lags (s): \(lags)")
            }
        }

        /// Runs the CLI and notes when each line of its output arrived (wall clock, ns).
        static func follow(_ cluster: ProcessCluster, _ arguments: [String], endpoint: String) throws -> [(String, UInt64)] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = arguments + ["--endpoints", endpoint]
            process.environment = ProcessInfo.processInfo.environment.merging(["ASPEN_IDENTITY_DIR": cluster.directory.appendingPathComponent("cli-identity").path]) { $1 }
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            var lines: [(String, UInt64)] = []
            var pending = ""
            while true {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                let seen = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
                pending += String(decoding: data, as: UTF8.self)
                while let newline = pending.firstIndex(of: "\n") {
                    lines.append((String(pending[..<newline]), seen))
                    pending = String(pending[pending.index(after: newline)...])
                }
            }
            process.waitUntilExit()
            return lines
        }

        @Test("artifacts: kept byte-identical (BLAKE3), given to the jobs that need them, one past the limit fails its job naming it; a cache restored by key on the next run; past ci-caches-kept the least recently used cache goes; aspen ci cache lists and deletes them")
        func artifactsAndCaches() async throws {
            try await withCluster(environment: ["ASPEN_CI_ARTIFACT_MAX": "1MiB", "ASPEN_CI_CACHES_KEPT": "1"]) { cluster, git, client, source in
                var (status, text) = (Int32(0), "")

                let pipeline = """
                    version: 1
                    jobs:
                      build:
                        run: |
                          mkdir -p out .deps
                          head -c 300000 /dev/urandom > out/app.bin
                          echo hello > out/note.txt
                          if [ -f .deps/stamp ]; then echo "cache hit $(cat .deps/stamp)"; else echo "cache miss"; fi
                          echo "$ASPEN_CI_RUN" > .deps/stamp
                        artifacts: [out]
                        cache: { key: "deps-${hash:deps.lock}", paths: [.deps] }
                      use:
                        needs: [build]
                        run: |
                          cat out/note.txt
                          wc -c < out/app.bin
                      big:
                        run: head -c 2000000 /dev/zero > big.bin
                        artifacts: [big.bin]
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline, "deps.lock": "a 1.0\n"])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let run = try #require(try await ended(client, sha: sha).first)
                #expect(run.job("build")?.state == .success && run.job("use")?.state == .success, "\(run.jobs)")
                #expect(run.job("big")?.state == .failure && run.job("big")?.detail.contains("ciArtifactBytesMax") == true, "\(run.jobs)")
                #expect(try await log(cluster, run.id, "build").contains("cache miss"))
                let used = try await log(cluster, run.id, "use", node: 3)
                #expect(used.contains("hello") && used.contains("300000"), "\(used)")
                // The artifact fetched back is the job's file, byte for byte.
                guard case .artifacts(let kept) = try await client.ci(.artifacts(run: run.id, job: "build")) else { Issue.record("no artifacts"); return }
                #expect(Set(kept.map(\.path)) == ["out/app.bin", "out/note.txt"], "\(kept)")
                let file = cluster.directory.appendingPathComponent("app.bin").path
                // (From the nodes that hold it: two copies of three; the client knows every node.)
                (status, text) = try await cluster.aspen(["ci", "artifact", "get", "\(run.id)", "build", "out/app.bin", "-o", file], withErrors: true)
                #expect(status == 0, "\(text)")
                let bytes = try #require(FileManager.default.contents(atPath: file))
                let app = try #require(kept.first { $0.path == "out/app.bin" })
                #expect(bytes.count == 300_000 && Hex.encode(BLAKE3.hash(Array(bytes))) == Hex.encode(app.hash))
                (status, text) = try await cluster.aspen(["ci", "artifact", "get", "\(run.id)", "build", "out/none"], withErrors: true)
                #expect(status != 0 && text.contains("kept no out/none"), "\(text)")

                // The next commit with the same deps.lock restores the cache the first run saved.
                let next = try commit(git, at: source, ["README": "x\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
                let second = try #require(try await ended(client, sha: next).first)
                let restored = try await log(cluster, second.id, "build")
                #expect(restored.contains("cache hit \(run.id)") && restored.contains("cache deps-"), "\(restored)")

                // With ci-caches-kept 1, saving a second key deletes the least recently used one: the
                // first key's run afterwards restores the second (by prefix), not its own.
                let first = "deps-" + Hex.encode(BLAKE3.hash(Array("a 1.0\n".utf8)))
                let secondKey = "deps-" + Hex.encode(BLAKE3.hash(Array("a 2.0\n".utf8)))
                for (round, lock) in ["a 2.0\n", "a 1.0\n"].enumerated() {
                    let changed = try commit(git, at: source, ["deps.lock": lock], new: false)
                    try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                    let later = try #require(try await ended(client, sha: changed).first)
                    let text = try await log(cluster, later.id, "build")
                    let expected = round == 0 ? "cache \(first) restored" : "cache \(secondKey) restored"
                    #expect(text.contains(expected), "\(text)")
                }

                // The CLI lists the one cache kept and deletes it by its key; the next run of that
                // key then starts without a cache.
                (status, text) = try await cluster.aspen(["ci", "cache", "list", "demo", "--json"], withErrors: true)
                let listed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                let caches = try #require(listed?["caches"] as? [[String: Any]], "\(text)")
                #expect(caches.map { $0["key"] as? String } == [first] && (caches.first?["size"] as? Int ?? 0) > 0, "\(text)")
                (status, text) = try await cluster.aspen(["ci", "cache", "delete", "demo"], withErrors: true)
                #expect(status != 0 && text.contains("name one cache's key, or --all"), "\(text)")
                (status, text) = try await cluster.aspen(["ci", "cache", "delete", "demo", secondKey], withErrors: true)
                #expect(status != 0 && text.contains("has no cache '\(secondKey)'"), "\(text)")
                (status, text) = try await cluster.aspen(["ci", "cache", "delete", "demo", first], withErrors: true)
                #expect(status == 0 && text.contains("1 cache of demo deleted"), "\(text)")
                (status, text) = try await cluster.aspen(["ci", "cache", "list", "demo"], withErrors: true)
                #expect(status == 0 && text.isEmpty, "\(text)")
                let uncached = try commit(git, at: source, ["README": "y\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let cold = try #require(try await ended(client, sha: uncached).first)
                let coldLog = try await log(cluster, cold.id, "build")
                #expect(coldLog.contains("no cache for \(first)") && coldLog.contains("cache miss"), "\(coldLog)")
            }
        }

        @Test("an artifact is not restored through a symbolic link the commit holds: the node writes nothing outside the checkout")
        func artifactThroughLink() async throws {
            try await withCluster { cluster, git, client, source in
                let outside = cluster.directory.appendingPathComponent("outside").path
                try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
                let pipeline = """
                    version: 1
                    jobs:
                      make: { run: "rm out && mkdir out && echo planted > out/x", artifacts: [out/x] }
                      use: { needs: [make], run: "test -L out && echo still-a-link" }
                    """
                _ = try commit(git, at: source, [".aspen/ci.yml": pipeline])
                try FileManager.default.createSymbolicLink(atPath: (source as NSString).appendingPathComponent("out"), withDestinationPath: outside)
                let sha = try commit(git, at: source, [:], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let run = try #require(try await ended(client, sha: sha).first)
                #expect(run.state == .success, "\(run)")
                let used = try await log(cluster, run.id, "use")
                #expect(used.contains("artifact out/x of 'make' not restored: a part of its path is a symbolic link") && used.contains("still-a-link"), "\(used)")
                #expect(!FileManager.default.fileExists(atPath: outside + "/x"), "the node wrote through the link")
            }
        }

        @Test("a concurrency group with cancel_in_progress: a newer push's run cancels the older one, then starts once it has ended")
        func superseded() async throws {
            try await withCluster { cluster, git, client, source in
                let pipeline = """
                    version: 1
                    concurrency: { group: "${ref}", cancel_in_progress: true }
                    jobs:
                      long: { run: "echo begun; sleep 60" }
                    """
                let first = try commit(git, at: source, [".aspen/ci.yml": pipeline])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                try await eventually("the first run's job runs") { try await runs(client).first { $0.sha == first }?.job("long")?.state == .running }
                let second = try commit(git, at: source, ["n.txt": "2\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
                let older = try #require(try await ended(client, sha: first, seconds: 30).first)
                var newer: CIRun?
                try await eventually("the newer run's job runs") {
                    newer = try await runs(client).first { $0.sha == second }
                    return newer?.job("long")?.state == .running
                }
                let id = try #require(newer?.id)
                #expect(older.state == .cancelled && older.message.contains("superseded by run \(id)"), "\(older)")
                #expect(try #require(newer?.job("long")?.startedMs) >= (older.endedMs ?? .max), "\(String(describing: newer)) \(older)")
                _ = try await client.ci(.cancel(run: id))
                let cancelled = try #require(try await ended(client, sha: second, seconds: 30).first)
                #expect(cancelled.state == .cancelled)
            }
        }

        @Test("retention: a repository keeps its newest ci-runs-kept runs; an older one goes with its log and statuses; a push past ci-active-runs-per-repo makes a run in error naming the bound, a manual run is refused")
        func retention() async throws {
            try await withCluster(environment: ["ASPEN_CI_RUNS_KEPT": "2", "ASPEN_CI_ACTIVE_RUNS_PER_REPO": "1"]) { cluster, git, client, source in
                var shas: [String] = []
                var ids: [UInt64] = []
                for round in 1...4 {
                    let sha = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  ok: { run: echo round-\(round) }\n"], new: round == 1)
                    try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                    var found: CIRun?
                    try await eventually("run \(round) ended") {
                        found = try await client.ci(.list(repo: "demo", limit: 50)).runs?.first { $0.sha == sha }
                        return found?.state == .success
                    }
                    shas.append(sha)
                    ids.append(found?.id ?? 0)
                }
                try await eventually("only the newest two runs are left") { try await client.ci(.list(repo: "demo", limit: 50)).runs?.map(\.sha) == [shas[3], shas[2]] }
                do {
                    _ = try await client.ci(.show(run: ids[0]))
                    Issue.record("run \(ids[0]) is still there")
                } catch let error as CIError {
                    #expect(error == .notFound("no run \(ids[0])"))
                }
                guard case .statuses(let statuses) = try await client.ci(.status(repo: "demo", sha: shas[0])) else { return }
                #expect(statuses.isEmpty, "\(statuses)")
                #expect(try await log(cluster, ids[3], "ok").contains("round-4"))

                // One run not yet ended is the bound: a second push's run is made in error, naming it.
                let long = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  long: { run: sleep 120 }\n"], new: false)
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                var running: CIRun?
                try await eventually("the long run started") {
                    running = try await runs(client).first { $0.sha == long }
                    return running?.state == .running
                }
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main:side"], in: source, endpoints: cluster.entries[1]) }
                var side: CIRun?
                try await eventually("the side push's run was made") {
                    side = try await runs(client).first { $0.ref == "refs/heads/side" }
                    return side != nil
                }
                let refused = try #require(side)
                #expect(refused.state == .error && refused.message.contains("at ciActiveRunsPerRepoMax (1)"), "\(refused)")
                let (status, output) = try await cluster.aspen(["ci", "run", "demo", "--ref", "main"], withErrors: true)
                #expect(status != 0 && output.contains("ciActiveRunsPerRepoMax (1)"), "\(status) \(output)")
                // Once it ends, there is room again.
                _ = try await client.ci(.cancel(run: try #require(running?.id)))
                try await eventually("the long run was cancelled") { try await runs(client).first { $0.id == running?.id }?.state == .cancelled }
                let (again, againOutput) = try await cluster.aspen(["ci", "run", "demo", "--ref", "main", "--json"], withErrors: true)
                #expect(again == 0, "\(againOutput)")
                let manual = try await runs(client).first { $0.sha == long && $0.ref == "refs/heads/main" && $0.id != running?.id }
                #expect(manual != nil && manual?.state != .error, "\(String(describing: manual))")
                if let manual { _ = try await client.ci(.cancel(run: manual.id)) }
            }
        }

        @Test("with credentials required: ci capabilities by repository prefix — read sees runs, logs, statuses and caches; write starts runs and deletes caches; full manages secrets")
        func capabilities() async throws {
            let (cluster, _, _) = try AuthProcessTests.start()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let git = try GitClient(directory: cluster.directory)
            let key = cluster.directory.appendingPathComponent("root.key").path
            func credential(_ name: String, _ caps: [String]) throws -> String {
                let file = cluster.directory.appendingPathComponent("\(name).cred").path
                let created = try AuthProcessTests.offline(["token", "create", "--root-key-file", key, "--lifetime", "1h", "--out", file] + caps.flatMap { ["--cap", $0] })
                #expect(created.0 == 0, "\(created.1)")
                return file
            }
            let admin = try credential("admin", ["forge-full:team/", "ci-full:team/"])
            let reader = try credential("reader", ["ci-read:team/"])
            let runner = try credential("runner", ["ci-write:team/"])
            func aspen(_ credential: String, _ arguments: [String], stdin: String? = nil) async throws -> (Int32, String) {
                try await cluster.aspen(["--credential-file", credential] + arguments, stdin: stdin, withErrors: true)
            }
            var (status, text) = try await aspen(admin, ["repo", "create", "team/app"])
            #expect(status == 0, "\(text)")
            let source = cluster.directory.appendingPathComponent("source").path
            let sha = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  ok: { run: echo fine }\n"])
            let pushed = try await offThePool {
                try git.run(["push", "-q", "aspen://team/app", "main"], in: source, endpoints: cluster.endpointsText, environment: ["ASPEN_CREDENTIAL_FILE": admin])
            }
            #expect(pushed.0 == 0, "\(pushed.1)")
            var id = 0
            try await eventually("the run ended") {
                let (_, listed) = try await aspen(reader, ["ci", "list", "team/app", "--json"])
                let runs = (try? JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [String: Any])?["runs"] as? [[String: Any]] ?? []
                guard let run = runs.first(where: { $0["sha"] as? String == sha }), run["state"] as? String == "success" else { return false }
                id = run["id"] as? Int ?? 0
                return true
            }
            (status, text) = try await aspen(reader, ["ci", "logs", "\(id)", "ok"])
            #expect(status == 0 && text.contains("fine"), "\(text)")
            #expect(try await aspen(reader, ["ci", "status", "team/app", sha]).0 == 0)
            // The reader may not start, cancel or manage secrets, nor look outside team/.
            (status, text) = try await aspen(reader, ["ci", "run", "team/app", "--ref", "main"])
            #expect(status == 6 && text.contains("ci"), "\(text)")
            #expect(try await aspen(reader, ["ci", "secret", "list", "team/app"]).0 == 6)
            #expect(try await aspen(reader, ["ci", "list", "other"]).0 == 6)
            // The reader lists caches but may not delete them; the runner may.
            #expect(try await aspen(reader, ["ci", "cache", "list", "team/app"]).0 == 0)
            #expect(try await aspen(reader, ["ci", "cache", "delete", "team/app", "--all"]).0 == 6)
            (status, text) = try await aspen(runner, ["ci", "cache", "delete", "team/app", "--all"])
            #expect(status == 0 && text.contains("0 caches of team/app deleted"), "\(text)")
            // The runner may start a run, not manage secrets; the admin may.
            (status, text) = try await aspen(runner, ["ci", "run", "team/app", "--ref", "main"])
            #expect(status == 0, "\(text)")
            #expect(try await aspen(runner, ["ci", "secret", "set", "team/app", "TOKEN"], stdin: "abcdef").0 == 6)
            (status, text) = try await aspen(admin, ["ci", "secret", "set", "team/app", "TOKEN"], stdin: "abcdef")
            #expect(status == 0, "\(text)")
        }

        @Test("fail_fast: a failed matrix expansion stops its sibling that is running, within seconds")
        func failFast() async throws {
            try await withCluster { cluster, git, client, source in
                let pipeline = """
                    version: 1
                    jobs:
                      t:
                        matrix: { speed: [slow, fast] }
                        run: 'if [ "$ASPEN_CI_MATRIX_SPEED" = fast ]; then sleep 1; exit 1; fi; sleep 120'
                    """
                let sha = try commit(git, at: source, [".aspen/ci.yml": pipeline])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                let run = try #require(try await ended(client, sha: sha, seconds: 20).first)
                #expect(run.state == .failure, "\(run)")
                #expect(run.job("t (speed=fast)")?.state == .failure, "\(run.jobs)")
                let slow = run.job("t (speed=slow)")
                #expect(slow?.state == .cancelled && slow?.detail.contains("fail_fast: 't (speed=fast)' failed") == true, "\(run.jobs)")
            }
        }

        @Test("a node cut off from its peers stops on SIGTERM while it runs a CI job, and leaves no process of the job")
        func stopWhileCutOff() async throws {
            try await withCluster { cluster, git, client, source in
                let sha = try commit(git, at: source, [".aspen/ci.yml": "version: 1\njobs:\n  long: { run: sleep 120.25 }\n"])
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
                var job: Int32?
                try await eventually("the job's process is running") {
                    job = processes { $0.hasPrefix("sleep 120.25") }.first
                    return job != nil
                }
                // The node the job's process descends from.
                let pids = Dictionary(uniqueKeysWithValues: cluster.processes.map { ($0.value.processIdentifier, $0.key) })
                var ancestor = try #require(job)
                while pids[ancestor] == nil, ancestor > 1 { ancestor = Self.parent(of: ancestor) }
                let worker = try #require(pids[ancestor], "no node runs the job of \(sha.prefix(12))")
                await client.close()
                for (id, process) in cluster.processes where id != worker {
                    process.terminate()
                    process.waitUntilExit()
                }
                // Alone, the worker's node can store nothing; it must stop all the same, its job's process gone.
                let process = try #require(cluster.processes[worker])
                process.terminate()
                let deadline = ContinuousClock.now + .seconds(60)
                while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
                #expect(!process.isRunning, "node \(worker) did not stop within 60 s of SIGTERM")
                #expect(processes { $0.hasPrefix("sleep 120.25") }.isEmpty)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
        }

        /// The parent of process `pid` (1 when it cannot be read).
        static func parent(of pid: Int32) -> Int32 {
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return 1 }
            let text = String(decoding: data, as: UTF8.self)
            // After the command's closing parenthesis: state, then the parent's pid.
            guard let close = text.lastIndex(of: ")") else { return 1 }
            let fields = text[text.index(after: close)...].split(separator: " ")
            return fields.count > 1 ? Int32(fields[1]) ?? 1 : 1
        }
    }
}
