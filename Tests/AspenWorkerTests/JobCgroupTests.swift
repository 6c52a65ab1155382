#if os(Linux)
@testable import AspenWorker
import Glibc
import Testing

/// Whether this machine must give jobs a cgroup: it runs as root and has cgroup v2 mounted
/// read-write. Read from /proc on its own, so that a runner that fails to use a cgroup it could
/// have used fails the tests below instead of skipping them.
enum CgroupExpectation {
    static let expected: Bool = {
        guard geteuid() == 0, let file = fopen("/proc/self/mountinfo", "r") else { return false }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            // `id parent dev root mountpoint options ... - fstype source super-options`
            let fields = String(cString: line!).split(separator: " ")
            if let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 1 < fields.count, fields[dash + 1] == "cgroup2",
                fields[5].split(separator: ",").contains("rw")
            {
                return true
            }
        }
        return false
    }()

    static let reason: Comment = "needs root and a read-write cgroup2 mount (/proc/self/mountinfo)"
}

@Suite("Job cgroups", .timeLimit(.minutes(1)))
struct JobCgroupTests {
    /// A job whose shell ignores SIGTERM (and so do its children: an ignored signal stays ignored
    /// across exec), starts a grandchild that leaves the process group (`setsid`) and clears the
    /// marker (`env -i`), then hangs: only the cgroup can find the grandchild.
    static func hidingJob(_ sleeps: [String]) -> [String] {
        ["sh", "-c", "trap '' TERM; setsid env -i sleep \(sleeps[0]) & \(untilSleeping) sleep \(sleeps[1])"]
    }

    /// A job that starts the same kind of grandchild, prints its pid and exits, leaving it behind.
    static func daemonJob(_ sleeps: [String]) -> [String] {
        ["sh", "-c", "setsid env -i sleep \(sleeps[2]) & \(untilSleeping) echo $!"]
    }

    /// Waits until the last background process runs `sleep`, so it has left the group and
    /// cleared its environment before the job goes on (else the group's kill could catch it).
    static let untilSleeping = "until tr '\\0' ' ' < /proc/$!/cmdline | grep -q '^sleep '; do sleep 0.01; done;"

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    @Test("a setsid + env -i grandchild of a job that timed out is gone when run returns, and so is the cgroup",
        .enabled(if: CgroupExpectation.expected, CgroupExpectation.reason))
    func timedOutJobLeavesNothing() async throws {
        let sleeps = ShellRunTests.uniqueSleeps(11)
        let attempt = Task { try await ShellRunTests.run(Self.hidingJob(sleeps), timeoutMs: 500, killGraceMs: 300) }
        // While it hangs, the grandchild is in a job cgroup (not this process's).
        var hidden: [pid_t] = []
        for _ in 0..<200 where hidden.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            hidden = Survivors.find(arguments: [sleeps[0]], marker: nil)
        }
        let grandchild = try #require(hidden.first, "the grandchild never started")
        #expect(Self.unifiedCgroup(of: grandchild)?.contains("/\(JobCgroup.namePrefix)") == true)

        let (outcome, _) = try await attempt.value
        // At once, not after a wait: the runner returns only once the job's processes are dead.
        let survivors = Survivors.find(arguments: [sleeps[0], sleeps[1]], marker: nil)
        Survivors.killAndReap(survivors)
        #expect(survivors.isEmpty, "still running: \(survivors)")
        // Killed by cgroup.kill before the sweep saw it alive, it was found as a zombie (reparented
        // here, the subreaper) by its cgroup, and reaped: nothing else here would reap it.
        #expect(await Survivors.awaitNoZombieChildren(among: [grandchild]).isEmpty, "unreaped: \(grandchild)")
        #expect(outcome.timedOut && outcome.termination == .signaled(SIGKILL))
        let directory = try #require(outcome.cgroupDirectory, "the job ran without a cgroup")
        #expect(!Self.exists(directory), "\(directory) is still there")
    }

    @Test("a grandchild a job leaves behind when it exits is killed through the cgroup",
        .enabled(if: CgroupExpectation.expected, CgroupExpectation.reason))
    func exitedJobLeavesNothing() async throws {
        let sleeps = ShellRunTests.uniqueSleeps(12)
        let (outcome, received) = try await ShellRunTests.run(Self.daemonJob(sleeps))
        let survivors = Survivors.find(arguments: [sleeps[2]], marker: nil)
        Survivors.killAndReap(survivors)
        #expect(survivors.isEmpty, "still running: \(survivors)")
        let grandchild = try #require(pid_t(received.text(.standardOutput).split(separator: "\n").last ?? ""))
        #expect(await Survivors.awaitNoZombieChildren(among: [grandchild]).isEmpty, "unreaped: \(grandchild)")
        #expect(outcome.succeeded && outcome.leftoversKilled == 1 && outcome.leftoversRemaining == 0)
        let directory = try #require(outcome.cgroupDirectory, "the job ran without a cgroup")
        #expect(!Self.exists(directory), "\(directory) is still there")
    }

    @Test("a grandchild that died unreaped (a zombie reparented here) is found by its cgroup and reaped",
        .enabled(if: CgroupExpectation.expected, CgroupExpectation.reason))
    func zombieGrandchildReaped() async throws {
        // `exec sleep` never reaps: the grandchild, out of the group and without the marker, is
        // a zombie by the time the sleep ends, and then this process's (the subreaper's).
        let (outcome, received) = try await ShellRunTests.run(["sh", "-c", "setsid env -i true & echo $!; exec sleep 0.3"])
        #expect(outcome.succeeded && outcome.cgroupDirectory != nil)
        let grandchild = try #require(pid_t(received.text(.standardOutput).split(separator: "\n").last ?? ""))
        // Nothing here but the runner reaps it, so a wait does not hide a runner that did not.
        let zombies = await Survivors.awaitNoZombieChildren(among: [grandchild])
        Survivors.killAndReap(zombies)
        #expect(zombies.isEmpty, "unreaped: \(zombies)")
    }

    @Test("without the cgroup the same grandchildren escape (so the two tests above can fail)")
    func escapesWithoutCgroup() async throws {
        let sleeps = ShellRunTests.uniqueSleeps(13)
        let runner = ShellRunTests.runnerWithoutCgroup()
        let (timedOut, _) = try await ShellRunTests.run(Self.hidingJob(sleeps), timeoutMs: 500, killGraceMs: 300, runner: runner)
        let (exited, _) = try await ShellRunTests.run(Self.daemonJob(sleeps), runner: runner)
        #expect(timedOut.timedOut && timedOut.cgroupDirectory == nil && exited.cgroupDirectory == nil)
        let escaped = Survivors.find(arguments: [sleeps[0], sleeps[2]], marker: nil)
        #expect(escaped.count == 2, "escaped: \(escaped)")
        Survivors.killAndReap(escaped)
        #expect(await Survivors.awaitNone(arguments: sleeps, marker: nil).isEmpty)
    }

    @Test("in a cgroup a job's output, exit code, argv[0] and environment are as without one",
        .enabled(if: CgroupExpectation.expected, CgroupExpectation.reason))
    func ordinaryJobUnchanged() async throws {
        let (outcome, received) = try await ShellRunTests.run(
            ["sh", "-c", "echo out; echo err >&2; tr '\\0' ' ' < /proc/$$/cmdline; echo; tr '\\0' '\\n' < /proc/$$/environ | sort; exit 3"],
            environment: ["PATH": "/usr/bin:/bin", "ASPEN_TEST_VALUE": "a b=c"], marker: "plain-marker")
        let directory = try #require(outcome.cgroupDirectory, "the job ran without a cgroup")
        #expect(outcome.termination == .exited(3) && !outcome.timedOut && outcome.leftoversKilled == 0)
        #expect(received.text(.standardError) == "err\n")
        let lines = received.text(.standardOutput).split(separator: "\n").map(String.init)
        #expect(lines.first == "out")
        // argv[0] as written, not the file the name resolved to, nor the trampoline's.
        #expect(lines.dropFirst().first?.hasPrefix("sh -c ") == true, "argv: \(lines.dropFirst().first ?? "")")
        #expect(Array(lines.dropFirst(2)) == ["ASPEN_JOB_MARKER=plain-marker", "ASPEN_TEST_VALUE=a b=c", "PATH=/usr/bin:/bin"])
        #expect(!Self.exists(directory))

        // A path relative to the working directory is found there, as without a cgroup.
        let (relative, printed) = try await ShellRunTests.run(["./echo", "hi"], workingDirectory: "/bin")
        #expect(relative.succeeded && relative.cgroupDirectory != nil && printed.text(.standardOutput) == "hi\n")
    }

    @Test("an executable that does not exist gives the same error as without a cgroup, and leaves no cgroup")
    func missingExecutable() async throws {
        let hierarchy = CgroupHierarchy.current
        for runner in [ShellRunner(), ShellRunTests.runnerWithoutCgroup()] {
            let marker = ShellRunTests.nextMarker()
            await #expect(throws: ShellRunError.executableNotFound("aspen-no-such-executable")) {
                try await ShellRunTests.run(["aspen-no-such-executable", "x"], marker: marker, runner: runner)
            }
            await #expect(throws: ShellRunError.executableNotFound("/nonexistent/aspen-bin")) {
                try await ShellRunTests.run(["/nonexistent/aspen-bin"], marker: marker, runner: runner)
            }
            await #expect(throws: ShellRunError.workingDirectoryUnusable("/nonexistent/aspen-dir")) {
                try await ShellRunTests.run(["true"], workingDirectory: "/nonexistent/aspen-dir", marker: marker, runner: runner)
            }
            if let hierarchy {
                let directory = hierarchy.ownDirectory + "/" + JobCgroup.namePrefix + JobCgroup.sanitized(marker)
                #expect(!Self.exists(directory), "\(directory) was left behind")
            }
        }
    }

    @Test("a worker's restart kills what is in the job cgroups an earlier run of it left, and removes them",
        .enabled(if: CgroupExpectation.expected, CgroupExpectation.reason))
    func leftoverCgroups() async throws {
        let hierarchy = try #require(CgroupHierarchy.current, "no cgroup v2 hierarchy found")
        let sleeps = ShellRunTests.uniqueSleeps(14)
        let prefix = "leftover-\(getpid())/"
        let directory = hierarchy.ownDirectory + "/" + JobCgroup.namePrefix + JobCgroup.sanitized(prefix + "job-1")
        #expect(mkdir(directory, 0o755) == 0)
        // As a killed worker leaves it: a process in the cgroup, without the marker or the group.
        let script = "echo 0 > '\(directory)/cgroup.procs' && exec setsid env -i sleep \(sleeps[0])"
        let hidden = try Self.spawn(["/bin/sh", "-c", script])
        var found: [pid_t] = []
        for _ in 0..<200 where found.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            found = Survivors.find(arguments: [sleeps[0]], marker: nil)
        }
        #expect(found == [hidden])

        let killed = ShellRunner.killLeftovers(markerPrefix: prefix)
        Survivors.killAndReap([hidden])
        #expect(killed == 1)
        #expect(!Self.exists(directory), "\(directory) is still there")
    }

    /// Starts a process outside any runner, as this process's child.
    static func spawn(_ arguments: [String]) throws -> pid_t {
        var pid: pid_t = 0
        var argv = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        let result = posix_spawn(&pid, arguments[0], nil, nil, argv, environ)
        try #require(result == 0, "posix_spawn: \(result)")
        return pid
    }

    @Test("the cgroup v2 hierarchy is found from mountinfo and /proc/self/cgroup, on hybrid and pure v2 machines")
    func locatingTheHierarchy() {
        let hybrid = """
            31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
            """
        #expect(
            CgroupHierarchy.locate(mountinfo: hybrid, cgroups: "4:memory:/x\n0::/\n")
                == CgroupHierarchy(ownDirectory: "/sys/fs/cgroup/unified", ownPath: "/"))
        let pure = "29 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        #expect(
            CgroupHierarchy.locate(mountinfo: pure, cgroups: "0::/system.slice/aspen.service\n")
                == CgroupHierarchy(ownDirectory: "/sys/fs/cgroup/system.slice/aspen.service", ownPath: "/system.slice/aspen.service"))
        // A mount that shows a subtree only, at a path with a space in it.
        let subtree = "50 22 0:26 /system.slice /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
        #expect(
            CgroupHierarchy.locate(mountinfo: subtree, cgroups: "0::/system.slice/a.service\n")
                == CgroupHierarchy(ownDirectory: "/mnt/my cgroups/a.service", ownPath: "/system.slice/a.service"))
        #expect(CgroupHierarchy.locate(mountinfo: subtree, cgroups: "0::/user.slice\n") == nil)
        #expect(CgroupHierarchy.locate(mountinfo: subtree, cgroups: "0::/system.slicer\n") == nil)
        // No v2 hierarchy, or a cgroup outside this process's cgroup namespace.
        let v1Only = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        #expect(CgroupHierarchy.locate(mountinfo: v1Only, cgroups: "0::/\n") == nil)
        #expect(CgroupHierarchy.locate(mountinfo: pure, cgroups: "1:name=systemd:/\n") == nil)
        #expect(CgroupHierarchy.locate(mountinfo: pure, cgroups: "0::/../../a\n") == nil)
    }

    @Test("a marker becomes a directory name byte by byte, so a marker prefix names a prefix")
    func sanitizedNames() {
        #expect(JobCgroup.sanitized("0123abcd/job-1/attempt 2") == "0123abcd_job-1_attempt_2")
        #expect(JobCgroup.sanitized("..") == "..")
        #expect(JobCgroup.sanitized("é") == "__")
        let marker = "0123abcd/job-7/1"
        #expect(JobCgroup.sanitized(marker).hasPrefix(JobCgroup.sanitized("0123abcd/")))
    }

    /// The `0::` line of /proc/<pid>/cgroup, read here rather than through the runner's code.
    static func unifiedCgroup(of pid: pid_t) -> String? {
        guard let file = fopen("/proc/\(pid)/cgroup", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let text = String(cString: line!)
            if text.hasPrefix("0::") { return String(text.dropFirst(3).dropLast()) }
        }
        return nil
    }
}
#endif
