#if os(Linux)
@testable import AspenWorker
import Foundation
import Glibc
import Testing

/// Jobs in namespaces of their own: without the host's network (`ShellNetwork.loopbackOnly`), and
/// seeing only their own user's processes (`hidesOthersProcesses`): what untrusted CI jobs get.
@Suite("Jobs isolated in namespaces", .timeLimit(.minutes(1)))
struct ShellIsolationTests {
    /// A TCP listener of this process on 127.0.0.1 (the host's loopback), and its port.
    static func listener() throws -> (socket: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Says whether the job reaches this process's listener, whether it can serve and reach
    /// itself on 127.0.0.1, and which interfaces it sees.
    static func probe(port: Int) -> [String] {
        let script = """
            (exec 3<>/dev/tcp/127.0.0.1/\(port)) 2>/dev/null && echo host-reached || echo host-unreachable
            python3 -c "
            import socket
            s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
            socket.create_connection(s.getsockname(), timeout=2); print('own-loopback-works')"
            echo "interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ')"
            """
        return ["bash", "-c", script]
    }

    @Test("a job without the host's network reaches no listener of the host, serves itself on 127.0.0.1 and sees only lo; with a cgroup or without; the same job on the host's network reaches it",
        .enabled(if: geteuid() == 0, "needs root to make a network namespace"))
    func loopbackOnly() async throws {
        let (fd, port) = try Self.listener()
        defer { close(fd) }
        let environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        for runner in [ShellRunner(), ShellRunTests.runnerWithoutCgroup()] {
            let (outcome, received) = try await ShellRunTests.run(Self.probe(port: port), environment: environment, runner: runner, network: .loopbackOnly)
            let said = received.text(.standardOutput) + received.text(.standardError)
            #expect(outcome.succeeded, "\(said)")
            #expect(said.contains("host-unreachable") && said.contains("own-loopback-works") && said.contains("interfaces lo \n"), "\(said)")
        }
        let (outcome, received) = try await ShellRunTests.run(Self.probe(port: port), environment: environment)
        #expect(outcome.succeeded && received.text(.standardOutput).contains("host-reached"), "\(received.text(.standardOutput))")
    }

    static let nobody = ShellUser(uid: 65534, gid: 65534)

    @Test("a job run as nobody with hidesOthersProcesses sees neither init's nor this process's entry in /proc, but its own; without it, it sees them",
        .enabled(if: geteuid() == 0, "needs root to mount a /proc and switch users"))
    func hiddenProcesses() async throws {
        let probe = ["bash", "-c",
            "for pid in 1 \(getpid()); do [ -e /proc/$pid/cmdline ] && echo sees-$pid || echo hides-$pid; done; [ -e /proc/self/cmdline ] && echo sees-self; id -u"]
        let environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        for runner in [ShellRunner(), ShellRunTests.runnerWithoutCgroup()] {
            let (outcome, received) = try await ShellRunTests.run(
                probe, environment: environment, runner: runner, hidesOthersProcesses: true, user: Self.nobody)
            let said = received.text(.standardOutput) + received.text(.standardError)
            #expect(outcome.succeeded && said == "hides-1\nhides-\(getpid())\nsees-self\n65534\n", "\(said)")
        }
        let (outcome, received) = try await ShellRunTests.run(probe, environment: environment, user: Self.nobody)
        #expect(outcome.succeeded && received.text(.standardOutput) == "sees-1\nsees-\(getpid())\nsees-self\n65534\n", "\(received.text(.standardOutput))")
        // The node's own /proc is untouched.
        #expect(access("/proc/1/cmdline", F_OK) == 0)
    }

    @Test("a job run as another user gets its environment, LD_PRELOAD included, only as that user: nothing of it runs as root",
        .enabled(if: geteuid() == 0, "needs root to switch users"))
    func environmentOnlyAsTheUser() async throws {
        // A library that writes the uid of every process that loads it.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("preload-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seen = directory + "/uids"
        let source = directory + "/preload.c"
        try """
            #include <stdio.h>
            #include <unistd.h>
            __attribute__((constructor)) static void note(void) {
                FILE *file = fopen("\(seen)", "a");
                if (file) { fprintf(file, "%d\\n", (int)getuid()); fclose(file); }
            }
            """.write(toFile: source, atomically: true, encoding: .utf8)
        let candidates: [String] = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { String($0) + "/clang" }
        let compiler = try #require(candidates.first { (path: String) in access(path, X_OK) == 0 }, "no C compiler to build the preloaded library")
        let library = directory + "/preload.so"
        let (built, _) = try await ShellRunTests.run([compiler, "-shared", "-fPIC", "-o", library, source], environment: ["PATH": "/usr/bin:/bin"])
        #expect(built.succeeded)
        chmod(directory, 0o777)
        let environment = ["PATH": "/usr/bin:/bin", "LD_PRELOAD": library]
        let (outcome, received) = try await ShellRunTests.run(
            ["bash", "-c", "true"], environment: environment, hidesOthersProcesses: true, user: Self.nobody)
        #expect(outcome.succeeded, "\(received.text(.standardError))")
        let uids = (try? String(contentsOfFile: seen, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
        // Loaded by the job (so the check can see a load at all), never by a process of root's.
        #expect(!uids.isEmpty && uids.allSatisfy { $0 == "65534" }, "loaded by uids \(uids)")
    }

    @Test("without the privilege to make a namespace, the trampoline does not run the job at all (exit 126, saying why)",
        .enabled(if: geteuid() == 0, "needs root to run the trampoline as another user"))
    func failsClosed() throws {
        let trampoline = try #require(CgroupPlacement.trampolineExecutable, "no aspen-job-trampoline beside the tests")
        for (flag, reason) in [("--loopback-only", "cannot give the job a network namespace"), ("--hide-processes", "cannot give the job a /proc")] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--", trampoline, flag, "-", "/bin/echo", "echo", "ran"]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 126 && !said.contains("ran") && said.contains(reason), "\(flag): \(said)")
        }
    }

    @Test("a job without the host's network and an executable that does not exist fails to start, as any job does")
    func missingExecutable() async throws {
        await #expect(throws: ShellRunError.executableNotFound("aspen-no-such-executable")) {
            try await ShellRunTests.run(["aspen-no-such-executable"], network: .loopbackOnly)
        }
    }
}
#endif
