import Foundation
import Testing

/// `aspen ci lint` and `aspen ci run --local`: the cluster's pipeline parser, job graph and
/// shell executor on this machine, through the real CLI.
struct CICommandTests {
    func lint(_ text: String, _ extra: [String] = []) throws -> (Int32, String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ci-lint-\(UUID().uuidString).yml")
        try Data(text.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, said) = try ClusterSuites.AuthProcessTests.offline(["ci", "lint", file.path] + extra)
        return (status, said.replacingOccurrences(of: file.path, with: "FILE"))
    }

    @Test("a valid file prints its jobs in the order they run, matrix expanded; unknown and duplicate keys are refused with line and column")
    func lintFiles() throws {
        let valid = """
            version: 1
            triggers:
              push: { branches: [main], paths_ignore: ["docs/**"] }
            jobs:
              build: { run: make, timeout: 20m }
              test:
                needs: [build]
                matrix: { config: [debug, release] }
                run: "make test CONFIG=${matrix.config}"
            """
        let (status, said) = try lint(valid)
        #expect(status == 0 && said == "FILE: 3 jobs\nbuild\ntest (config=debug)\tafter build\ntest (config=release)\tafter build", "\(said)")
        let unknown = try lint(valid + "\n    rnu: oops\n")
        #expect(unknown.0 == 4 && unknown.1.hasPrefix("error: FILE:10:5: unknown key 'rnu' in job 'test'"), "\(unknown)")
        let duplicate = try lint("version: 1\njobs:\n  a: { run: x }\n  a: { run: y }\n")
        #expect(duplicate.0 == 4 && duplicate.1 == "error: FILE:4:3: duplicate key 'a' in jobs (first at 3:3)", "\(duplicate)")
        let cycle = try lint("version: 1\njobs:\n  a: { run: x, needs: [b] }\n  b: { run: y, needs: [a] }\n")
        #expect(cycle.0 == 4 && cycle.1.contains("cycle"), "\(cycle)")
        let missing = try ClusterSuites.AuthProcessTests.offline(["ci", "lint", "/nonexistent/ci.yml"])
        #expect(missing.0 == 1, "\(missing)")
    }

    func aspen(_ arguments: [String], in directory: URL) throws -> (Int32, String) {
        try runProgram(ProcessCluster.binary("aspen"), arguments, in: directory, seconds: 120)
    }

    func git(_ arguments: [String], in directory: URL) throws -> String {
        let (status, said) = try runProgram("/usr/bin/git", ["-C", directory.path, "-c", "user.email=ci@example.com", "-c", "user.name=ci"] + arguments)
        #expect(status == 0, "git \(arguments): \(said)")
        return said.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("ci run --local: jobs in graph order with the commit interpolated, matrix environments, a failure skipping its dependents, an if on failure, the exit status")
    func localRun() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ci-local-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".aspen"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pipeline = """
            version: 1
            jobs:
              deploy: { needs: [test], run: echo deploying }
              notify: { needs: [test], if: status == "failure", run: echo "notified $ASPEN_CI_JOB" }
              test:
                needs: [build]
                matrix: { config: [debug, release] }
                env: { MODE: "${matrix.config}" }
                run: 'echo "testing $MODE in $(cat built.txt)"; [ "$MODE" = debug ]'
              build: { run: "echo ${sha} > built.txt; echo built ${ref}" }
            """
        try Data(pipeline.utf8).write(to: directory.appendingPathComponent(".aspen/ci.yml"))
        _ = try git(["init", "-q", "-b", "main"], in: directory)
        _ = try git(["add", "-A"], in: directory)
        _ = try git(["commit", "-qm", "pipeline"], in: directory)
        let head = try git(["rev-parse", "HEAD"], in: directory)
        let (status, said) = try aspen(["ci", "run", "--local"], in: directory)
        #expect(status == 2, "a failed job fails the run: \(said)")
        let expected = [
            "== build: running", "built refs/heads/main", "== build: success",
            "== test (config=debug): running", "testing debug in \(head)", "== test (config=debug): success",
            "== test (config=release): running", "testing release in \(head)", "== test (config=release): failure (exit code 1",
            "== deploy: skipped ('test (config=release)' did not succeed)",
            "== notify: running", "notified notify", "== notify: success",
            "5 jobs: 1 failure, 1 skipped, 3 success",
        ]
        let lines = said.split(separator: "\n").map(String.init)
        var position = 0
        for line in expected {
            guard let found = lines[position...].firstIndex(where: { $0.hasPrefix(line) }) else {
                Issue.record("'\(line)' missing, or out of order, in:\n\(said)")
                return
            }
            position = found + 1
        }
        // Only what a job needs runs with --job; a job that exists nowhere is refused.
        let only = try aspen(["ci", "run", "--local", "--job", "build"], in: directory)
        #expect(only.0 == 0 && only.1.hasSuffix("1 jobs: 1 success\n"), "\(only)")
        let unknown = try aspen(["ci", "run", "--local", "--job", "nope"], in: directory)
        #expect(unknown.0 == 1, "\(unknown)")
    }

    @Test("ci run --local: a secret the job names comes from this shell and is masked in its output")
    func localSecretMasked() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ci-local-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".aspen"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pipeline = "version: 1\njobs:\n  use: { secrets: [LOCAL_TOKEN], run: 'echo \"token=$LOCAL_TOKEN\"; test $${#LOCAL_TOKEN} -eq 13' }\n"
        try Data(pipeline.utf8).write(to: directory.appendingPathComponent(".aspen/ci.yml"))
        let (status, said) = try runProgram(
            ProcessCluster.binary("aspen"), ["ci", "run", "--local"], in: directory, environment: ["LOCAL_TOKEN": "hunter2-local"], seconds: 60)
        #expect(status == 0 && said.contains("token=***") && !said.contains("hunter2"), "\(said)")
    }

    @Test("ci run --local interrupted: SIGINT stops the job under way with the processes it started, setsid ones too, and cancels the rest")
    func interrupted() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ci-local-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".aspen"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let marker = "31.\(Int.random(in: 100_000...999_999))"
        let pipeline = """
            version: 1
            jobs:
              hang: { run: "sleep \(marker) & setsid sleep \(marker) & echo started; wait" }
              after: { needs: [hang], run: echo never }
            """
        try Data(pipeline.utf8).write(to: directory.appendingPathComponent(".aspen/ci.yml"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
        process.arguments = ["ci", "run", "--local"]
        process.currentDirectoryURL = directory
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Read from /proc: a machine without procps (pgrep) has no other way.
        func sleepers() -> Int { processes { $0 == "sleep \(marker)" }.count }
        do {
            try await eventually("the job's two sleeps started", seconds: 30) { sleepers() == 2 }
        } catch {
            // Say what the run printed instead.
            kill(process.processIdentifier, SIGKILL)
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            Issue.record("the job's sleeps did not start; the run said: \(String(decoding: data, as: UTF8.self))")
            return
        }
        kill(process.processIdentifier, SIGINT)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let said = String(decoding: data, as: UTF8.self)
        #expect(process.terminationStatus == 2, "\(said)")
        #expect(said.contains("== hang: cancelled") && said.contains("== after: cancelled (interrupted)"), "\(said)")
        #expect(sleepers() == 0, "a process of the job outlived the interrupted run")
    }
}
