import AspenCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The stock git client against real node processes, through git-remote-aspen.
struct GitClient: Sendable {
    let home: String
    let binaries: String

    init(directory: URL) throws {
        home = directory.appendingPathComponent("git-home").path
        binaries = ProcessCluster.binaryDirectory.path
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
    }

    /// Runs `git ARGUMENTS` in `directory` against the nodes of `endpoints`; returns its status
    /// and its output and errors together.
    func run(_ arguments: [String], in directory: String? = nil, endpoints: String, input: String? = nil, environment extra: [String: String] = [:]) throws -> (Int32, String) {
        let process = Process()
        var environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        environment["ASPEN_TICKET"] = nil
        environment["ASPEN_ENDPOINTS"] = endpoints
        environment["PATH"] = binaries + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["HOME"] = home
        environment["GIT_CONFIG_NOSYSTEM"] = "1"
        environment["GIT_TERMINAL_PROMPT"] = "0"
        for (name, value) in ["GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com"] {
            environment[name] = value
        }
        process.environment = environment
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs git and records an issue (with git's output) unless it exits 0; returns its output.
    @discardableResult
    func check(_ arguments: [String], in directory: String? = nil, endpoints: String, input: String? = nil) throws -> String {
        let (status, output) = try run(arguments, in: directory, endpoints: endpoints, input: input)
        #expect(status == 0, "git \(arguments.joined(separator: " ")): \(output)")
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A repository of `commits` commits made with `git fast-import`, seeded: each commit changes
    /// a few of 20 files. Returns its path.
    func generate(at path: String, commits: Int, seed: UInt64) throws -> String {
        try check(["init", "-q", "-b", "main", path], endpoints: "")
        var generator = SplitMix64(seed: seed)
        var stream = ""
        for commit in 1...commits {
            stream += "commit refs/heads/main\nmark :\(commit)\ncommitter Test <t@example.com> \(1_700_000_000 + commit) +0000\n"
            let message = "commit \(commit)"
            stream += "data \(message.utf8.count)\n\(message)\n"
            if commit > 1 { stream += "from :\(commit - 1)\n" }
            for _ in 0..<3 {
                let file = generator.next() % 20
                let body = (0..<(1 + Int(generator.next() % 40))).map { _ in String(generator.next(), radix: 36) }.joined(separator: "\n") + "\n"
                stream += "M 100644 inline dir\(file % 4)/file\(file).txt\ndata \(body.utf8.count)\n\(body)"
            }
            stream += "\n"
        }
        try check(["fast-import", "--quiet"], in: path, endpoints: "", input: stream)
        try check(["reset", "-q", "--hard", "main"], in: path, endpoints: "")
        return path
    }
}

extension ClusterSuites {
    @Suite("The forge: git push and clone against real nodes", .serialized, .timeLimit(.minutes(6)))
    struct ForgeProcessTests {
        func started() async throws -> (ProcessCluster, GitClient) {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            _ = try await cluster.leader()
            let git = try GitClient(directory: cluster.directory)
            let (status, output) = try await cluster.aspen(["repo", "create", "demo", "--description", "test"], withErrors: true)
            #expect(status == 0, "\(output)")
            return (cluster, git)
        }

        func path(_ cluster: ProcessCluster, _ name: String) -> String { cluster.directory.appendingPathComponent(name).path }

        @Test("a generated repository pushed through node 1 clones from nodes 2 and 3 identical and fsck-clean; tags and deletes are visible at once")
        func roundTrip() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            // 300 commits by default; ASPEN_FORGE_COMMITS=1000 for the issue's full size.
            let commits = Int(ProcessInfo.processInfo.environment["ASPEN_FORGE_COMMITS"] ?? "") ?? 300
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: commits, seed: 26) }
            let head = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            let objects = try git.check(["rev-list", "--all", "--objects"], in: source, endpoints: "")
            for node in [2, 3] {
                let clone = path(cluster, "clone\(node)")
                try await offThePool { try git.check(["clone", "-q", "aspen://demo", clone], endpoints: cluster.entries[node - 1]) }
                #expect(try git.check(["rev-parse", "HEAD"], in: clone, endpoints: "") == head)
                #expect(try git.check(["rev-list", "--all", "--objects"], in: clone, endpoints: "") == objects)
                try git.check(["fsck", "--full", "--strict"], in: clone, endpoints: "")
            }
            // Protocol version 0 and a shallow clone, from node 3; then --unshallow.
            let old = path(cluster, "v0")
            try await offThePool { try git.check(["-c", "protocol.version=0", "clone", "-q", "aspen://demo", old], endpoints: cluster.entries[2]) }
            #expect(try git.check(["rev-parse", "HEAD"], in: old, endpoints: "") == head)
            let shallow = path(cluster, "shallow")
            try await offThePool { try git.check(["clone", "-q", "--depth", "1", "aspen://demo", shallow], endpoints: cluster.entries[2]) }
            #expect(try git.check(["rev-list", "--count", "HEAD"], in: shallow, endpoints: "") == "1")
            try await offThePool { try git.check(["fetch", "-q", "--unshallow"], in: shallow, endpoints: cluster.entries[1]) }
            #expect(try git.check(["rev-list", "--count", "HEAD"], in: shallow, endpoints: "") == "\(commits)")
            let partial = path(cluster, "partial")
            try await offThePool { try git.check(["clone", "-q", "--filter=blob:none", "aspen://demo", partial], endpoints: cluster.entries[1]) }
            #expect(try git.check(["rev-parse", "HEAD"], in: partial, endpoints: "") == head)

            // A tag and a branch pushed through node 1 are listed by node 3 as soon as the push
            // returns; so is the branch's deletion.
            try await offThePool {
                try git.check(["push", "-q", "aspen://demo", "main:refs/heads/feature", "main:refs/tags/v1"], in: source, endpoints: cluster.entries[0])
            }
            var listed = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[2]) }
            #expect(listed.contains("\(head)\trefs/heads/feature") && listed.contains("\(head)\trefs/tags/v1"), "\(listed)")
            try await offThePool { try git.check(["push", "-q", "aspen://demo", ":feature"], in: source, endpoints: cluster.entries[0]) }
            listed = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[2]) }
            #expect(!listed.contains("refs/heads/feature") && listed.contains("refs/tags/v1"), "\(listed)")
            let (_, refs) = try await cluster.aspen(["repo", "refs", "demo"], endpoints: cluster.entries[1])
            #expect(refs.contains("\(head)\trefs/heads/main"), "\(refs)")
        }

        @Test("concurrent non-fast-forward pushes through two nodes: exactly one wins each time and its commit is kept")
        func concurrentPushes() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let trials = Int(ProcessInfo.processInfo.environment["ASPEN_FORGE_TRIALS"] ?? "") ?? 8
            // Each committed push is one event, which a hook turns into a job (what CI does).
            let seen = path(cluster, "pushes.log")
            let (made, said) = try await cluster.aspen(
                ["hook", "create", "on-push", "--on", "hooks.forge.push.>", "--", "sh", "-c", "echo \"$ASPEN_EVENT\" >> \(seen)"], withErrors: true)
            #expect(made == 0, "\(said)")
            // The leader reads what is asked for at most a second late.
            try await Task.sleep(for: .seconds(2))
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 5, seed: 3) }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            var pushed = [try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")]
            let clones = [path(cluster, "a"), path(cluster, "b")]
            for (index, clone) in clones.enumerated() {
                try await offThePool { try git.check(["clone", "-q", "aspen://demo", clone], endpoints: cluster.entries[index]) }
            }
            for trial in 1...trials {
                var commits: [String] = []
                for (index, clone) in clones.enumerated() {
                    try git.check(["commit", "-q", "--allow-empty", "-m", "trial \(trial) from \(index)"], in: clone, endpoints: "")
                    commits.append(try git.check(["rev-parse", "HEAD"], in: clone, endpoints: ""))
                }
                let entries = cluster.entries
                let results = try await withThrowingTaskGroup(of: (Int, Int32, String).self) { group in
                    for (index, clone) in clones.enumerated() {
                        group.addTask {
                            let (status, output) = try await offThePool { try git.run(["push", "aspen://demo", "main"], in: clone, endpoints: entries[index]) }
                            return (index, status, output)
                        }
                    }
                    var results: [(Int, Int32, String)] = []
                    for try await result in group { results.append(result) }
                    return results.sorted { $0.0 < $1.0 }
                }
                let winners = results.filter { $0.1 == 0 }
                #expect(winners.count == 1, "trial \(trial): \(results.map { "\($0.0): \($0.1) \($0.2)" })")
                let listed = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/main"], endpoints: entries[2]) }
                if let winner = winners.first {
                    pushed.append(commits[winner.0])
                    #expect(listed.hasPrefix(commits[winner.0]), "trial \(trial): main is \(listed), the winner pushed \(commits[winner.0])")
                    #expect(results[1 - winner.0].2.contains("rejected"), "\(results[1 - winner.0].2)")
                }
                // Both start the next trial from what the cluster holds.
                for (index, clone) in clones.enumerated() {
                    try await offThePool { try git.check(["fetch", "-q", "aspen://demo", "main"], in: clone, endpoints: entries[index]) }
                    try git.check(["reset", "-q", "--hard", "FETCH_HEAD"], in: clone, endpoints: "")
                }
            }
            // Exactly one event per committed push, each naming the commit it put on main.
            var news: [String] = []
            try await eventually("every push's event ran its hook's job") {
                let lines = ((try? String(contentsOfFile: seen, encoding: .utf8)) ?? "").split(separator: "\n")
                // Each line is the message (cursor, subject, data): the data is the push's event.
                news = lines.compactMap { line in
                    guard let message = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                        let data = message["data"] as? String,
                        let event = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
                    else { return nil }
                    return (event["refs"] as? [[String: Any]])?.first?["new"] as? String
                }
                return news.count >= pushed.count
            }
            try await Task.sleep(for: .seconds(1))
            let lines = ((try? String(contentsOfFile: seen, encoding: .utf8)) ?? "").split(separator: "\n")
            #expect(lines.count == pushed.count, "\(lines)")
            #expect(Set(news) == Set(pushed), "events \(news), pushes \(pushed)")
        }

        @Test("--force-with-lease with a stale lease and --atomic with one stale ref change nothing; the right lease is accepted")
        func leasesAndAtomic() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 3, seed: 5) }
            let endpoints = cluster.entries[0]
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main", "main:refs/heads/other"], in: source, endpoints: endpoints) }
            let base = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            try git.check(["commit", "-q", "--allow-empty", "-m", "rewrite"], in: source, endpoints: "")
            try git.check(["reset", "-q", "--soft", "HEAD~2"], in: source, endpoints: "")
            try git.check(["commit", "-q", "--allow-empty", "-m", "rewritten"], in: source, endpoints: "")
            let rewritten = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            let stale = String(repeating: "1", count: 40)
            var (status, output) = try await offThePool {
                try git.run(["push", "--force-with-lease=main:\(stale)", "aspen://demo", "main"], in: source, endpoints: endpoints)
            }
            #expect(status != 0 && output.contains("stale info"), "\(output)")
            // --atomic: main (with the right lease) and other (with a stale one): neither moves.
            (status, output) = try await offThePool {
                try git.run(
                    ["push", "--atomic", "--force-with-lease=main:\(base)", "--force-with-lease=other:\(stale)", "aspen://demo", "main", "main:other"],
                    in: source, endpoints: endpoints)
            }
            #expect(status != 0, "\(output)")
            var listed = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[1]) }
            #expect(listed.contains("\(base)\trefs/heads/main") && listed.contains("\(base)\trefs/heads/other"), "\(listed)")
            (status, output) = try await offThePool {
                try git.run(["push", "--force-with-lease=main:\(base)", "aspen://demo", "main"], in: source, endpoints: endpoints)
            }
            #expect(status == 0, "\(output)")
            listed = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/main"], endpoints: cluster.entries[2]) }
            #expect(listed.hasPrefix(rewritten), "\(listed)")
        }

        @Test("a push acknowledged by git survives SIGKILL of the leader, and of the follower that took it; with that node down, pushes go on")
        func pushSurvivesKill() async throws {
            for victim in ["leader", "receiving follower"] {
                let (cluster, git) = try await started()
                defer { cluster.terminateAll() }
                let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 20, seed: 9) }
                let leader = try await cluster.leader()
                let through = victim == "leader" ? leader : (leader % 3) + 1
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[through - 1]) }
                cluster.kill9(through)
                let head = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
                let survivors = (1...3).filter { $0 != through }.map { cluster.entries[$0 - 1] }.joined(separator: ",")
                let clone = path(cluster, "clone")
                try await offThePool { try git.check(["clone", "-q", "aspen://demo", clone], endpoints: survivors) }
                #expect(try git.check(["rev-parse", "HEAD"], in: clone, endpoints: "") == head, "after SIGKILL of the \(victim)")
                try git.check(["fsck", "--full"], in: clone, endpoints: "")
                // With that node still down, pushes go on: the pack is acknowledged with two of
                // its three copies.
                try git.check(["commit", "-q", "--allow-empty", "-m", "while a node is down"], in: clone, endpoints: "")
                try await offThePool { try git.check(["push", "-q", "origin", "main"], in: clone, endpoints: survivors) }
                let later = path(cluster, "later")
                try await offThePool { try git.check(["clone", "-q", "aspen://demo", later], endpoints: survivors) }
                #expect(try git.check(["log", "-1", "--format=%s"], in: later, endpoints: "") == "while a node is down")
            }
        }

        @Test("a repack swaps the pack set for one pack: old packs retired, clones from cold and warm nodes complete and fsck-clean, pushes go on")
        func repack() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 30, seed: 11) }
            // Three pushes through node 1: three packs.
            for step in ["HEAD~20", "HEAD~10", "HEAD"] {
                try await offThePool { try git.check(["push", "-q", "aspen://demo", "\(step):refs/heads/main"], in: source, endpoints: cluster.entries[0]) }
            }
            var (status, listed) = try await cluster.aspen(["repo", "packs", "demo"], endpoints: cluster.entries[1])
            #expect(status == 0 && listed.split(separator: "\n").count == 3, "\(listed)")
            // A clone through node 2 before the repack: its cache holds the three packs.
            let warm = path(cluster, "warm")
            try await offThePool { try git.check(["clone", "-q", "aspen://demo", warm], endpoints: cluster.entries[1]) }
            (status, listed) = try await cluster.aspen(["repo", "repack", "demo"], endpoints: cluster.entries[1], withErrors: true)
            #expect(status == 0, "\(listed)")
            (status, listed) = try await cluster.aspen(["repo", "packs", "demo"], endpoints: cluster.entries[2])
            let lines = listed.split(separator: "\n")
            #expect(lines.filter { !$0.hasSuffix("retired") }.count == 1 && lines.filter { $0.hasSuffix("retired") }.count == 3, "\(listed)")
            let head = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            for (node, name) in [(3, "cold"), (2, "again"), (1, "first")] {
                let clone = path(cluster, name)
                try await offThePool { try git.check(["clone", "-q", "aspen://demo", clone], endpoints: cluster.entries[node - 1]) }
                #expect(try git.check(["rev-parse", "HEAD"], in: clone, endpoints: "") == head, "clone \(name) through node \(node)")
                try git.check(["fsck", "--full", "--strict"], in: clone, endpoints: "")
            }
            try git.check(["commit", "-q", "--allow-empty", "-m", "after the repack"], in: warm, endpoints: "")
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: warm, endpoints: cluster.entries[2]) }
            let after = try git.check(["rev-parse", "HEAD"], in: warm, endpoints: "")
            let remote = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/main"], endpoints: cluster.entries[0]) }
            #expect(remote.hasPrefix(after), "\(remote)")
        }

        @Test("a protected branch refuses deletes and force pushes, takes fast-forwards, and with approvals required refuses direct pushes")
        func protection() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 4, seed: 13) }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "HEAD~1:refs/heads/main"], in: source, endpoints: cluster.entries[0]) }
            var (status, said) = try await cluster.aspen(["repo", "protect", "demo", "main"], withErrors: true)
            #expect(status == 0, "\(said)")
            (status, said) = try await cluster.aspen(["repo", "protections", "demo"], endpoints: cluster.entries[2])
            #expect(said.hasPrefix("main\tapprovals 0"), "\(said)")
            // A fast-forward is taken; a rewrite and a delete are refused, naming the rule.
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
            let head = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            var pushed = try await offThePool {
                try git.run(["push", "--force", "aspen://demo", "HEAD~2:refs/heads/main"], in: source, endpoints: cluster.entries[2])
            }
            #expect(pushed.0 != 0 && pushed.1.contains("must fast-forward"), "\(pushed.1)")
            pushed = try await offThePool { try git.run(["push", "aspen://demo", ":main"], in: source, endpoints: cluster.entries[0]) }
            #expect(pushed.0 != 0 && pushed.1.contains("cannot be deleted"), "\(pushed.1)")
            // Approvals required: no direct push at all.
            (status, said) = try await cluster.aspen(["repo", "protect", "demo", "main", "--require-approvals", "1", "--require-status", "ci/build"], withErrors: true)
            #expect(status == 0, "\(said)")
            try git.check(["commit", "-q", "--allow-empty", "-m", "direct"], in: source, endpoints: "")
            pushed = try await offThePool { try git.run(["push", "aspen://demo", "main"], in: source, endpoints: cluster.entries[1]) }
            #expect(pushed.0 != 0 && pushed.1.contains("requires 1 approval(s), status ci/build"), "\(pushed.1)")
            var listed = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/main"], endpoints: cluster.entries[2]) }
            #expect(listed.hasPrefix(head), "\(listed)")
            // Unprotected, the same rewrite goes through.
            (status, said) = try await cluster.aspen(["repo", "unprotect", "demo", "main"], withErrors: true)
            #expect(status == 0, "\(said)")
            pushed = try await offThePool {
                try git.run(["push", "--force", "aspen://demo", "HEAD~3:refs/heads/main"], in: source, endpoints: cluster.entries[2])
            }
            #expect(pushed.0 == 0, "\(pushed.1)")
            let rewound = try git.check(["rev-parse", "HEAD~3"], in: source, endpoints: "")
            listed = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/main"], endpoints: cluster.entries[0]) }
            #expect(listed.hasPrefix(rewound), "\(listed)")
        }

        @Test("a push killed mid-transfer leaves the refs, the pack set and the cache as they were; the node goes on serving")
        func killedMidTransfer() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 3, seed: 2) }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            let before = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[1]) }
            // A large push: 8 MiB of random blobs, so that it is still sending when it is killed
            // (debug builds hash and copy blobs at a few MB/s: more would outlast the timeouts).
            try git.check(["checkout", "-q", "-b", "big"], in: source, endpoints: "")
            var generator = SplitMix64(seed: 9)
            for file in 0..<8 {
                var bytes = [UInt8]()
                bytes.reserveCapacity(1 << 20)
                while bytes.count < 1 << 20 { withUnsafeBytes(of: generator.next()) { bytes += $0 } }
                try Data(bytes).write(to: URL(fileURLWithPath: source + "/blob\(file).bin"))
            }
            try git.check(["add", "."], in: source, endpoints: "")
            try git.check(["commit", "-q", "-m", "big"], in: source, endpoints: "")
            let cache = cluster.dataDirectory(1) + "/forge/repos/demo.git/objects"
            let pushing = Task { try await offThePool { try git.run(["push", "aspen://demo", "big"], in: source, endpoints: cluster.entries[0]) } }
            // Killed once the node's receive-pack has begun taking the pack into quarantine.
            var seen = false
            for _ in 0..<2000 where !seen {
                seen = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).contains { $0.hasPrefix("tmp_objdir-incoming") }
                if !seen { try await Task.sleep(for: .milliseconds(5)) }
            }
            _ = try? ProcessCluster.run("/usr/bin/pkill", ["-9", "-f", "git-remote-helper"])
            let (status, said) = try await pushing.value
            #expect(seen, "the push ended before its pack reached the node's quarantine: nothing was killed mid-transfer")
            #expect(status != 0, "the killed push reported success: \(said)")
            // Nothing changed, on any node; the quarantine is gone; the node still takes pushes.
            let after = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[2]) }
            #expect(after == before)
            let (_, packs) = try await cluster.aspen(["repo", "packs", "demo"])
            #expect(packs.split(separator: "\n").count == 1, "\(packs)")
            try await eventually("receive-pack removed its quarantine") {
                !((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).contains { $0.hasPrefix("tmp_objdir-incoming") }
            }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "big"], in: source, endpoints: cluster.entries[0]) }
            let listed = try await offThePool { try git.check(["ls-remote", "aspen://demo", "refs/heads/big"], endpoints: cluster.entries[1]) }
            #expect(listed.hasPrefix(try git.check(["rev-parse", "big"], in: source, endpoints: "")))
        }

        @Test("a push to refs/for/main opens a patch, a second adds revision 2, the interdiff and reviews follow; merges wait for the approval and the status, then squash, fast-forward and merge")
        func patches() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 3, seed: 21) }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            let base = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            try git.check(["checkout", "-q", "-b", "fix"], in: source, endpoints: "")
            try "first try\n".write(toFile: source + "/fix.txt", atomically: true, encoding: .utf8)
            try git.check(["add", "fix.txt"], in: source, endpoints: "")
            try git.check(["commit", "-q", "-m", "Fix the crash"], in: source, endpoints: "")
            let first = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            var pushed = try await offThePool {
                try git.run(["push", "aspen://demo", "HEAD:refs/for/main", "-o", "topic=fix-crash"], in: source, endpoints: cluster.entries[1])
            }
            #expect(pushed.0 == 0, "\(pushed.1)")
            var (status, text) = try await cluster.aspen(["patch", "list", "demo", "--json"], endpoints: cluster.entries[2])
            var listed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            var patches = try #require(listed["patches"] as? [[String: Any]])
            #expect(status == 0 && patches.count == 1, "\(text)")
            let id = try #require(patches.first?["id"] as? String)
            #expect(patches.first?["title"] as? String == "Fix the crash" && patches.first?["topic"] as? String == "fix-crash")
            // main did not move, and no refs/for ref appeared.
            let refs = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[0]) }
            #expect(refs == "\(base)\tHEAD\n\(base)\trefs/heads/main", "\(refs)")
            // A second try, amended, with the same topic: revision 2 of the same patch.
            try "second try\n".write(toFile: source + "/fix.txt", atomically: true, encoding: .utf8)
            try git.check(["commit", "-q", "-a", "--amend", "-m", "Fix the crash"], in: source, endpoints: "")
            let second = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
            pushed = try await offThePool {
                try git.run(["push", "aspen://demo", "HEAD:refs/for/main", "-o", "topic=fix-crash"], in: source, endpoints: cluster.entries[0])
            }
            #expect(pushed.0 == 0, "\(pushed.1)")
            (status, text) = try await cluster.aspen(["patch", "show", "demo", String(id.prefix(10)), "--json"], endpoints: cluster.entries[1])
            let patch = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            let revisions = try #require(patch["revisions"] as? [[String: Any]])
            #expect(revisions.compactMap { $0["head"] as? String } == [first, second], "\(text)")
            #expect(revisions.allSatisfy { $0["base"] as? String == base })
            // The interdiff: the file's line changed from the first try to the second, nothing else.
            (status, text) = try await cluster.aspen(["patch", "diff", "demo", id, "--range", "1..2"], endpoints: cluster.entries[2], withErrors: true)
            #expect(status == 0 && text.contains("-first try") && text.contains("+second try") && !text.contains("dir0/"), "\(text)")
            (status, text) = try await cluster.aspen(["patch", "diff", "demo", id], endpoints: cluster.entries[2], withErrors: true)
            #expect(status == 0 && text.contains("+second try") && text.contains("new file"), "\(text)")
            // A review by the maintainer (the CLI's key made the repository).
            (status, text) = try await cluster.aspen(["patch", "review", "demo", id, "--approve", "--comment", "looks right"], withErrors: true)
            #expect(status == 0, "\(text)")
            (status, text) = try await cluster.aspen(["patch", "show", "demo", id, "--json"])
            let reviewed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            let reviews = try #require(reviewed["reviews"] as? [[String: Any]])
            #expect(reviews.count == 1 && reviews.first?["verdict"] as? String == "approve" && reviews.first?["revision"] as? Int == 2, "\(text)")
            // A push to refs/for/ without git-remote-aspen's signed change is refused: not possible
            // here (every push goes through it); a range past the last revision is named.
            (status, text) = try await cluster.aspen(["patch", "diff", "demo", id, "--range", "2..3"], withErrors: true)
            #expect(status == 4 && text.contains("revisions 1 to 2"), "\(text)")
            listed = [:]
            patches = []

            // main protected: an approval by a maintainer and ci/build. The merge is refused,
            // naming what is missing, until both are there.
            (status, text) = try await cluster.aspen(["repo", "protect", "demo", "main", "--require-approvals", "1", "--require-status", "ci/build"], withErrors: true)
            #expect(status == 0, "\(text)")
            (status, text) = try await cluster.aspen(["patch", "review", "demo", id, "--request-changes"], withErrors: true)
            #expect(status == 0, "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", id, "--strategy", "squash"], withErrors: true)
            #expect(status == 2 && text.contains("requires 1 approval(s)"), "\(text)")
            (status, text) = try await cluster.aspen(["patch", "review", "demo", id, "--approve"], withErrors: true)
            #expect(status == 0, "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", id, "--strategy", "squash"], withErrors: true)
            #expect(status == 2 && text.contains("status ci/build"), "\(text)")
            (status, text) = try await cluster.aspen(["patch", "status", "demo", id, "ci/build", "success"], withErrors: true)
            #expect(status == 0, "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", id, "--strategy", "squash", "--json"], endpoints: cluster.entries[1], withErrors: true)
            #expect(status == 0, "\(text)")
            let merged = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            let commit = try #require(merged["commit"] as? String)
            // main moved to one new commit on the old main, holding the second try; every node
            // serves it, and the patch is merged.
            let clone = path(cluster, "after-merge")
            try await offThePool { try git.check(["clone", "-q", "aspen://demo", clone], endpoints: cluster.entries[2]) }
            #expect(try git.check(["rev-parse", "HEAD"], in: clone, endpoints: "") == commit)
            #expect(try git.check(["rev-parse", "HEAD~1"], in: clone, endpoints: "") == base)
            #expect(try String(contentsOfFile: clone + "/fix.txt", encoding: .utf8) == "second try\n")
            try git.check(["fsck", "--full"], in: clone, endpoints: "")
            (status, text) = try await cluster.aspen(["patch", "show", "demo", id, "--json"])
            let done = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            #expect(done["merged"] as? Int == 2 && done["state"] as? String == "closed", "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", id], withErrors: true)
            #expect(status == 2 && text.contains("merged"), "\(text)")

            // Two more patches on the new main, each approved with ci/build passed: the first
            // fast-forwards main; the second, from the same base, needs a merge commit (ff refused).
            try await offThePool { try git.check(["fetch", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            var heads: [String: String] = [:]
            var ids: [String: String] = [:]
            for topic in ["ff-one", "merge-two"] {
                try git.check(["checkout", "-q", "-B", topic, "FETCH_HEAD"], in: source, endpoints: "")
                try "\(topic)\n".write(toFile: source + "/\(topic).txt", atomically: true, encoding: .utf8)
                try git.check(["add", "."], in: source, endpoints: "")
                try git.check(["commit", "-q", "-m", topic], in: source, endpoints: "")
                heads[topic] = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")
                let result = try await offThePool {
                    try git.run(["push", "aspen://demo", "HEAD:refs/for/main", "-o", "topic=\(topic)"], in: source, endpoints: cluster.entries[0])
                }
                #expect(result.0 == 0, "\(result.1)")
                (status, text) = try await cluster.aspen(["patch", "list", "demo", "--json"])
                let all = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                ids[topic] = try #require((all["patches"] as? [[String: Any]])?.first { $0["topic"] as? String == topic }?["id"] as? String)
                #expect(try await cluster.aspen(["patch", "review", "demo", ids[topic]!, "--approve"]).0 == 0)
                #expect(try await cluster.aspen(["patch", "status", "demo", ids[topic]!, "ci/build", "success"]).0 == 0)
            }
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", ids["ff-one"]!, "--strategy", "ff", "--json"], withErrors: true)
            #expect(status == 0 && text.contains(heads["ff-one"]!), "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", ids["merge-two"]!, "--strategy", "ff"], withErrors: true)
            #expect(status == 2 && text.contains("fast-forward"), "\(text)")
            (status, text) = try await cluster.aspen(["patch", "merge", "demo", ids["merge-two"]!, "--strategy", "merge", "--json"], withErrors: true)
            #expect(status == 0, "\(text)")
            let final = path(cluster, "final")
            try await offThePool { try git.check(["clone", "-q", "aspen://demo", final], endpoints: cluster.entries[1]) }
            let parents = try git.check(["rev-list", "--parents", "-n", "1", "HEAD"], in: final, endpoints: "").split(separator: " ").map(String.init)
            #expect(parents.count == 3 && parents[1] == heads["ff-one"]! && parents[2] == heads["merge-two"]!, "\(parents)")
            #expect(FileManager.default.fileExists(atPath: final + "/ff-one.txt") && FileManager.default.fileExists(atPath: final + "/merge-two.txt"))
            try git.check(["fsck", "--full"], in: final, endpoints: "")
        }

        @Test("with credentials required: forge capabilities by repository prefix decide who creates, pushes and clones, through the CLI and git")
        func capabilities() async throws {
            let (cluster, root, _) = try AuthProcessTests.start()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let git = try GitClient(directory: cluster.directory)
            let key = cluster.directory.appendingPathComponent("root.key").path
            let admin = path(cluster, "admin.cred")
            let reader = path(cluster, "reader.cred")
            #expect(try AuthProcessTests.offline(["token", "create", "--root-key-file", key, "--cap", "forge-full:team/", "--lifetime", "1h", "--out", admin]).0 == 0)
            #expect(try AuthProcessTests.offline(["token", "create", "--root-key-file", key, "--cap", "forge-read:team/", "--lifetime", "1h", "--out", reader]).0 == 0)
            func aspen(_ credential: String, _ arguments: [String]) async throws -> (Int32, String) {
                try await cluster.aspen(["--credential-file", credential] + arguments, withErrors: true)
            }
            // The root credential holds no forge capability; the reader may not create.
            #expect(try await aspen(root, ["repo", "create", "team/app"]).0 == 6)
            var (status, text) = try await aspen(reader, ["repo", "create", "team/app"])
            #expect(status == 6 && text.contains("forge"), "\(text)")
            (status, text) = try await aspen(admin, ["repo", "create", "team/app"])
            #expect(status == 0, "\(text)")
            #expect(try await aspen(admin, ["repo", "create", "other"]).0 == 6)
            (status, text) = try await aspen(reader, ["repo", "list", "team/"])
            #expect(status == 0 && text.contains("team/app"), "\(text)")
            #expect(try await aspen(reader, ["repo", "list"]).0 == 6)
            // git: the reader may clone but not push; the admin may push.
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 3, seed: 8) }
            let pushed = try await offThePool {
                try git.run(["push", "aspen://team/app", "main"], in: source, endpoints: cluster.endpointsText, environment: ["ASPEN_CREDENTIAL_FILE": reader])
            }
            #expect(pushed.0 != 0 && pushed.1.contains("forge"), "\(pushed.1)")
            try await offThePool {
                _ = try git.run(["push", "-q", "aspen://team/app", "main"], in: source, endpoints: cluster.endpointsText, environment: ["ASPEN_CREDENTIAL_FILE": admin])
            }
            let cloned = try await offThePool {
                try git.run(["clone", "-q", "aspen://team/app", self.path(cluster, "clone")], endpoints: cluster.endpointsText, environment: ["ASPEN_CREDENTIAL_FILE": reader])
            }
            #expect(cloned.0 == 0, "\(cloned.1)")
            #expect(try git.check(["rev-parse", "HEAD"], in: path(cluster, "clone"), endpoints: "") == git.check(["rev-parse", "HEAD"], in: source, endpoints: ""))
            // Without a credential, nothing.
            let anonymous = try await offThePool { try git.run(["ls-remote", "aspen://team/app"], endpoints: cluster.endpointsText) }
            #expect(anonymous.0 != 0, "\(anonymous.1)")
        }

        @Test("a node cut off from the quorum refuses to serve; a corrupt push is rejected with refs unchanged")
        func refusals() async throws {
            let (cluster, git) = try await started()
            defer { cluster.terminateAll() }
            let source = try await offThePool { try git.generate(at: self.path(cluster, "source"), commits: 2, seed: 1) }
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "main"], in: source, endpoints: cluster.entries[0]) }
            let head = try git.check(["rev-parse", "HEAD"], in: source, endpoints: "")

            // A tree with the same name twice: git fsck's duplicateEntries, an error.
            let blob = try git.check(["hash-object", "-w", "--stdin"], in: source, endpoints: "", input: "x\n")
            var tree = Data()
            for _ in 0..<2 {
                tree.append(Data("100644 same\0".utf8))
                var bytes = [UInt8]()
                var index = blob.startIndex
                while index < blob.endIndex {
                    let next = blob.index(index, offsetBy: 2)
                    bytes.append(UInt8(blob[index..<next], radix: 16)!)
                    index = next
                }
                tree.append(Data(bytes))
            }
            let treeFile = path(cluster, "bad-tree")
            try tree.write(to: URL(fileURLWithPath: treeFile))
            let badTree = try git.check(["hash-object", "-t", "tree", "-w", "--literally", treeFile], in: source, endpoints: "")
            let badCommit = try git.check(["commit-tree", badTree, "-p", "HEAD", "-m", "corrupt"], in: source, endpoints: "")
            let (status, output) = try await offThePool { try git.run(["push", "aspen://demo", "\(badCommit):refs/heads/main"], in: source, endpoints: cluster.entries[1]) }
            #expect(status != 0, "\(output)")
            var listed = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[2]) }
            #expect(listed == "\(head)\tHEAD\n\(head)\trefs/heads/main", "\(listed)")

            // Names git would refuse only after the hook are refused before the commit: a ref
            // directly under refs/, and a ref beside its own directory (in one push or two).
            // Committed, they would break every later sync of the repository.
            for refspecs in [["HEAD:refs/foo"], ["HEAD:refs/heads/x", "HEAD:refs/heads/x/y"], ["HEAD:refs/heads/main/sub"]] {
                let (refused, output) = try await offThePool { try git.run(["push", "aspen://demo"] + refspecs, in: source, endpoints: cluster.entries[0]) }
                #expect(refused != 0 && (output.contains("beside") || output.contains("directory of refs/")), "\(refspecs): \(output)")
            }
            listed = try await offThePool { try git.check(["ls-remote", "aspen://demo"], endpoints: cluster.entries[1]) }
            #expect(listed == "\(head)\tHEAD\n\(head)\trefs/heads/main", "\(listed)")
            try await offThePool { try git.check(["push", "-q", "aspen://demo", "HEAD:refs/heads/y"], in: source, endpoints: cluster.entries[0]) }

            // Two nodes gone: the third cannot confirm the refs and says so, quickly.
            cluster.kill9(2)
            cluster.kill9(3)
            let (refused, said) = try await offThePool { try git.run(["ls-remote", "aspen://demo"], endpoints: cluster.entries[0]) }
            #expect(refused != 0 && said.contains("no quorum"), "\(said)")
        }
    }
}
