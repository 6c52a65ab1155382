#if os(Linux)
@testable import AspenWorker
import Glibc
import Synchronization
import Testing

@Suite("Shell runs", .timeLimit(.minutes(1)))
struct ShellRunTests {
    /// Output as the runner delivered it, per stream.
    final class Received: Sendable {
        private let chunks = Mutex<[ShellOutputChunk]>([])

        func add(_ chunk: ShellOutputChunk) { chunks.withLock { $0.append(chunk) } }

        func text(_ stream: ShellOutputChunk.Stream) -> String {
            String(decoding: bytes(stream), as: UTF8.self)
        }

        func bytes(_ stream: ShellOutputChunk.Stream) -> [UInt8] {
            chunks.withLock { $0.filter { $0.stream == stream }.flatMap(\.bytes) }
        }
    }

    static func run(
        _ arguments: [String], environment: [String: String] = ["PATH": "/usr/bin:/bin"], workingDirectory: String? = nil,
        timeoutMs: Int64 = 10_000, outputBytesMax: Int = 1 << 20, killGraceMs: Int64 = 2000, marker: String = nextMarker(),
        runner: ShellRunner = ShellRunner(), network: ShellNetwork = .host, hidesOthersProcesses: Bool = false, user: ShellUser? = nil
    ) async throws -> (ShellOutcome, Received) {
        let received = Received()
        let command = ShellCommand(
            arguments: arguments, environment: environment, workingDirectory: workingDirectory, timeoutMs: timeoutMs,
            outputBytesMax: outputBytesMax, killGraceMs: killGraceMs, network: network, hidesOthersProcesses: hidesOthersProcesses, user: user)
        let outcome = try await runner.run(command, marker: marker) { received.add($0) }
        return (outcome, received)
    }

    /// A marker no other attempt uses: markers are unique per attempt, and tests run in parallel.
    static func nextMarker() -> String {
        "test-\(getpid())-\(markerSequence.withLock { $0 += 1; return $0 })"
    }

    /// Sleep durations no other test (or process) uses, to find this test's processes by.
    static func uniqueSleeps(_ test: Int) -> [String] {
        (1...3).map { "\(1000 + test).\(getpid())\($0)" }
    }

    @Test("stdout and stderr arrive separately; exit 0 succeeds")
    func roundTrip() async throws {
        let (outcome, received) = try await Self.run(["sh", "-c", "echo out; echo err >&2"])
        #expect(outcome.termination == .exited(0) && outcome.succeeded)
        #expect(received.text(.standardOutput) == "out\n")
        #expect(received.text(.standardError) == "err\n")
        #expect(outcome.outputBytes == 8 && !outcome.truncated && !outcome.timedOut && !outcome.cancelled)
        #expect(outcome.leftoversKilled == 0 && outcome.leftoversRemaining == 0)
    }

    @Test("a non-zero exit code and a death by signal are reported as such")
    func exitStatus() async throws {
        let (exited, _) = try await Self.run(["sh", "-c", "exit 3"])
        #expect(exited.termination == .exited(3) && !exited.succeeded)
        let (killed, _) = try await Self.run(["sh", "-c", "kill -KILL $$"])
        #expect(killed.termination == .signaled(SIGKILL) && !killed.succeeded && !killed.timedOut)
    }

    @Test("output past the cap is read and dropped: exactly the cap is delivered and the command exits normally")
    func outputCap() async throws {
        let (outcome, received) = try await Self.run(["sh", "-c", "head -c 1048576 /dev/zero; echo tail >&2"], outputBytesMax: 10 * 1024)
        #expect(outcome.termination == .exited(0) && !outcome.timedOut)
        #expect(outcome.truncated)
        #expect(outcome.outputBytes == 1_048_576 + 5)
        #expect(received.bytes(.standardOutput).count + received.bytes(.standardError).count == 10 * 1024)
    }

    @Test("a command past its timeout is stopped with SIGTERM and reported as timed out")
    func timeout() async throws {
        let sleeps = Self.uniqueSleeps(1)
        let marker = Self.nextMarker()
        let start = ContinuousClock.now
        let (outcome, _) = try await Self.run(["sh", "-c", "sleep \(sleeps[0])"], timeoutMs: 300, marker: marker)
        // Loose: the point is that it does not run for its 1000 seconds.
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(outcome.timedOut && !outcome.cancelled && !outcome.succeeded)
        #expect(outcome.termination == .signaled(SIGTERM))
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: marker).isEmpty)

        // Its output closed, the child is watched through its exit, and still timed out.
        let (closed, _) = try await Self.run(["sh", "-c", "exec >&- 2>&-; sleep \(sleeps[1])"], timeoutMs: 300, marker: marker)
        #expect(closed.timedOut && closed.termination == .signaled(SIGTERM))
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: marker).isEmpty)
    }

    @Test("a job that ignores SIGTERM is killed once its grace is over")
    func graceThenKill() async throws {
        let sleeps = Self.uniqueSleeps(2)
        let marker = Self.nextMarker()
        let (outcome, _) = try await Self.run(
            ["sh", "-c", "trap '' TERM; sleep \(sleeps[0])"], timeoutMs: 200, killGraceMs: 300, marker: marker)
        #expect(outcome.timedOut)
        #expect(outcome.termination == .signaled(SIGKILL))
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: marker).isEmpty)
    }

    /// A job whose shell forks two grandchildren into sessions of their own (out of its process
    /// group, out of reach of `kill(-group)`) and one ordinary one, then hangs.
    static func escapingJob(_ sleeps: [String]) -> [String] {
        ["sh", "-c", "setsid sh -c 'sleep \(sleeps[0])' & setsid sleep \(sleeps[1]) & sleep \(sleeps[2])"]
    }

    /// A runner that cleans up by process group and marker alone, as on a machine without a
    /// writable cgroup v2 (with one, the cgroup would catch what these tests are about).
    static func runnerWithoutCgroup() -> ShellRunner {
        var runner = ShellRunner()
        runner.usesCgroup = false
        return runner
    }

    @Test("without a cgroup, after a timeout no process of the job survives, not even those that left its process group")
    func noSurvivors() async throws {
        let sleeps = Self.uniqueSleeps(3)
        let marker = "escape-\(getpid())-on"
        let attempt = Task { try await Self.run(Self.escapingJob(sleeps), timeoutMs: 500, marker: marker, runner: Self.runnerWithoutCgroup()) }
        // While it hangs, note every process of the job: the three sleeps and the shells.
        for _ in 0..<40 where Survivors.find(arguments: sleeps, marker: nil).count < 3 {
            try await Task.sleep(for: .milliseconds(10))
        }
        let running = Survivors.find(arguments: sleeps, marker: marker)
        #expect(running.count >= 4, "the job's processes: \(running)")
        let (outcome, _) = try await attempt.value
        #expect(outcome.timedOut && outcome.cgroupDirectory == nil)
        #expect(outcome.leftoversKilled >= 2 && outcome.leftoversRemaining == 0)
        let survivors = await Survivors.awaitNone(arguments: sleeps, marker: marker)
        #expect(survivors.isEmpty, "still running: \(survivors)")
        // Killed orphans were reparented here (the subreaper): they must be reaped, not left as zombies.
        let zombies = await Survivors.awaitNoZombieChildren(among: running)
        #expect(zombies.isEmpty, "unreaped: \(zombies)")
    }

    @Test("without a cgroup or the marker sweep the setsid grandchildren would survive (so the test above can fail)")
    func survivorsWithoutSweep() async throws {
        let sleeps = Self.uniqueSleeps(4)
        let marker = "escape-\(getpid())-off"
        var runner = Self.runnerWithoutCgroup()
        runner.sweepsMarkedProcesses = false
        let (outcome, _) = try await Self.run(Self.escapingJob(sleeps), timeoutMs: 500, marker: marker, runner: runner)
        #expect(outcome.timedOut)
        // The one in the group dies with it; wait for that, then look at the other two.
        #expect(await Survivors.awaitNone(arguments: [sleeps[2]], marker: nil).isEmpty)
        let escaped = Survivors.find(arguments: [sleeps[0], sleeps[1]], marker: nil)
        #expect(escaped.count == 2, "escaped: \(escaped)")
        Survivors.killAndReap(Survivors.find(arguments: sleeps, marker: marker))
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: marker).isEmpty)
    }

    @Test("cancelling the calling task stops the job's group and reports it cancelled")
    func cancel() async throws {
        let sleeps = Self.uniqueSleeps(5)
        let (started, startedSink) = AsyncStream.makeStream(of: Void.self)
        let command = ShellCommand(
            arguments: ["sh", "-c", "sleep \(sleeps[1]) & echo ready; sleep \(sleeps[0])"], environment: ["PATH": "/usr/bin:/bin"],
            timeoutMs: 10_000)
        let attempt = Task {
            try await ShellRunner().run(command, marker: "cancel-\(getpid())") { _ in startedSink.yield() }
        }
        for await _ in started { break }
        attempt.cancel()
        let outcome = try await attempt.value
        #expect(outcome.cancelled && !outcome.timedOut)
        #expect(outcome.termination == .signaled(SIGTERM))
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: "cancel-\(getpid())").isEmpty)
    }

    @Test("the child gets exactly the environment given plus the marker, in the directory given")
    func environmentAndDirectory() async throws {
        let environment = ["PATH": "/usr/bin:/bin", "ASPEN_TEST_VALUE": "a b=c", "ASPEN_JOB_MARKER": "forged"]
        let (outcome, received) = try await Self.run(["env"], environment: environment, marker: "env-marker")
        #expect(outcome.succeeded)
        let lines = received.text(.standardOutput).split(separator: "\n").map(String.init)
        #expect(lines.sorted() == ["ASPEN_JOB_MARKER=env-marker", "ASPEN_TEST_VALUE=a b=c", "PATH=/usr/bin:/bin"])

        var template = Array("/tmp/aspen-worker-XXXXXX".utf8CString)
        let directory = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer { rmdir(directory) }
        let resolved = try #require(realpath(directory, nil).map { pointer in
            defer { free(pointer) }
            return String(cString: pointer)
        })
        let (inDirectory, printed) = try await Self.run(["pwd"], workingDirectory: directory)
        #expect(inDirectory.succeeded)
        #expect(printed.text(.standardOutput) == resolved + "\n")
    }

    @Test("a command that cannot start gives an error naming the problem")
    func startErrors() async throws {
        await #expect(throws: ShellRunError.executableNotFound("aspen-no-such-executable")) {
            try await Self.run(["aspen-no-such-executable", "x"])
        }
        await #expect(throws: ShellRunError.executableNotFound("/nonexistent/aspen-bin")) {
            try await Self.run(["/nonexistent/aspen-bin"])
        }
        await #expect(throws: ShellRunError.workingDirectoryUnusable("/nonexistent/aspen-dir")) {
            try await Self.run(["true"], workingDirectory: "/nonexistent/aspen-dir")
        }
        #expect(ShellRunError.executableNotFound("aspen-no-such-executable").description.contains("aspen-no-such-executable"))
        await #expect(throws: ShellRunError.self) { try await Self.run([]) }
        await #expect(throws: ShellRunError.self) { try await Self.run(["true"], marker: "") }
        await #expect(throws: ShellRunError.self) { try await Self.run(["true"], environment: ["A=B": "x"]) }
    }

    @Test("the output budget admits up to its cap and counts everything read")
    func outputBudget() {
        var budget = OutputBudget(bytesMax: 10)
        #expect([4, 4, 4, 4, 0].map { budget.admit($0) } == [4, 4, 2, 0, 0])
        #expect(budget.producedBytes == 16 && budget.deliveredBytes == 10 && budget.truncated)
        var exact = OutputBudget(bytesMax: 3)
        #expect(exact.admit(3) == 3 && !exact.truncated)
    }

    @Test("stat lines parse even when the command name holds spaces and parentheses")
    func statParsing() throws {
        let stat = try #require(ProcessStat(parsing: Array("4242 (a) (b c) Z 17 4240 4240 0 -1".utf8)))
        #expect(stat == ProcessStat(state: UInt8(ascii: "Z"), parent: 17, group: 4240) && !stat.isAlive)
        #expect(ProcessStat(parsing: Array("4242 (sleep) S 1".utf8)) == nil)
    }

    @Test("the environment matcher finds only the exact entry, across read boundaries")
    func environmentMatching() {
        func matches(_ block: String, pieces: Int) -> Bool {
            var matcher = EnvironmentEntryMatcher(entry: Array("M=ab".utf8))
            let bytes = Array(block.utf8)
            let size = max(1, bytes.count / pieces)
            for start in stride(from: 0, to: bytes.count, by: size) {
                bytes[start..<min(start + size, bytes.count)].withUnsafeBytes { matcher.feed($0) }
            }
            matcher.finish()
            return matcher.found
        }
        for pieces in [1, 3, 7, 100] {
            #expect(matches("A=1\0M=ab\0B=2\0", pieces: pieces))
            #expect(matches("A=1\0M=ab", pieces: pieces))
            #expect(!matches("M=abc\0XM=ab\0M=a\0", pieces: pieces))
        }
    }
}

private let markerSequence = Mutex(0)

/// Finds processes by their arguments or environment, reading /proc on its own (not through the
/// runner's code), so that the tests check the runner rather than trust it.
enum Survivors {
    static func find(arguments: [String], marker: String?) -> [pid_t] {
        let wanted = Set(arguments)
        let markerEntry = marker.map { "ASPEN_JOB_MARKER=\($0)" }
        var found: [pid_t] = []
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(name), pid != getpid() else { continue }
            let argv = read("/proc/\(pid)/cmdline").split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let environ = read("/proc/\(pid)/environ").split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if argv.contains(where: wanted.contains) || markerEntry.map(environ.contains) == true { found.append(pid) }
        }
        return found
    }

    /// Polls up to 2 s for the processes to vanish (a killed process takes a moment); returns
    /// those still there.
    static func awaitNone(arguments: [String], marker: String?) async -> [pid_t] {
        var found = find(arguments: arguments, marker: marker)
        for _ in 0..<40 where !found.isEmpty {
            try? await Task.sleep(for: .milliseconds(50))
            found = find(arguments: arguments, marker: marker)
        }
        return found
    }

    /// Polls up to 2 s for none of `pids` to be a zombie child of this process; returns those that are.
    static func awaitNoZombieChildren(among pids: [pid_t]) async -> [pid_t] {
        func zombies() -> [pid_t] {
            pids.filter { pid in
                // `pid (comm) state ppid ...`, the fields counted from the last `)`.
                let stat = read("/proc/\(pid)/stat")
                guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return false }
                let fields = stat[(close + 2)...].split(separator: UInt8(ascii: " "))
                return fields.count > 1 && fields[0] == [UInt8(ascii: "Z")] && pid_t(String(decoding: fields[1], as: UTF8.self)) == getpid()
            }
        }
        var found = zombies()
        for _ in 0..<40 where !found.isEmpty {
            try? await Task.sleep(for: .milliseconds(50))
            found = zombies()
        }
        return found
    }

    /// Kills the processes and reaps those that were reparented to this process.
    static func killAndReap(_ pids: [pid_t]) {
        for pid in pids { kill(pid, SIGKILL) }
        for pid in pids {
            for _ in 0..<100 where waitpid(pid, nil, WNOHANG) == 0 { usleep(10_000) }
        }
    }

    private static func read(_ path: String) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return [] }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
            guard got > 0 else { return bytes }
            bytes += buffer[..<got]
        }
    }
}
#endif
