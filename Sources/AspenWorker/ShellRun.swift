// AspenWorker: what a worker does with the jobs it claims, on its own machine. Shell jobs run
// through `ShellRunner` (this file, ShellRun+Watch, ShellRun+Cgroup, ProcessSweep, ProcessTable,
// JobCgroup, CgroupHierarchy, OutputBudget), on swift-subprocess and CAspenLinux, and must never
// leave a process of a job running after its attempt ends. Linux only: the cleanup reads /proc,
// uses pidfds, the child-subreaper flag and, where it can, a cgroup v2 per attempt.
#if os(Linux)
import CAspenLinux
import Glibc
import Subprocess

/// A shell job's command as the worker runs it: what to start, in which environment, and the
/// bounds on its time and output.
public struct ShellCommand: Sendable, Equatable {
    /// The executable, then its arguments. The executable is looked up on `PATH` (the child's, from
    /// `environment`, else this process's) when it has no `/`; it is the child's `argv[0]` as written.
    public var arguments: [String]
    /// Exactly the environment the child gets (nothing is inherited from the worker), plus
    /// `ASPEN_JOB_MARKER`, which the runner sets to the attempt's marker, replacing any value given.
    public var environment: [String: String]
    /// The child's working directory; nil: the worker's.
    public var workingDirectory: String?
    /// The command is stopped after this long (0: no limit).
    public var timeoutMs: Int64
    /// Standard output and standard error bytes delivered, the two together. The rest is still
    /// read, so the child never blocks on a full pipe, and dropped.
    public var outputBytesMax: Int
    /// How long the job's process group has between SIGTERM and SIGKILL.
    public var killGraceMs: Int64
    /// The network the job sees.
    public var network: ShellNetwork
    /// The job sees in /proc only its own user's processes (a mount namespace with a /proc of its
    /// own, `hidepid=invisible`, Linux 5.8): for a job run as another user than the worker's
    /// (untrusted CI jobs), so that it cannot read the node's or trusted jobs' command lines;
    /// other jobs of the same user stay visible. Like `ShellNetwork.loopbackOnly`, it needs the
    /// trampoline and root, and fails closed.
    public var hidesOthersProcesses: Bool
    /// Run the job as this user (the worker must be root), with no supplementary groups and
    /// `no_new_privs`; nil: as the worker. The switch happens in the trampoline, after the
    /// namespaces, so that nothing of the job's (its environment either) runs as root.
    public var user: ShellUser?

    public init(
        arguments: [String], environment: [String: String] = [:], workingDirectory: String? = nil, timeoutMs: Int64 = 0,
        outputBytesMax: Int = 1024 * 1024, killGraceMs: Int64 = 2000, network: ShellNetwork = .host, hidesOthersProcesses: Bool = false,
        user: ShellUser? = nil
    ) {
        self.user = user
        self.hidesOthersProcesses = hidesOthersProcesses
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.timeoutMs = timeoutMs
        self.outputBytesMax = outputBytesMax
        self.killGraceMs = killGraceMs
        self.network = network
    }
}

/// A user and group a job runs as (not root's).
public struct ShellUser: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
}

/// The network a shell job sees.
public enum ShellNetwork: Sendable, Equatable {
    /// The worker tag a job requires (`aspen job submit --no-network`) to run with
    /// `loopbackOnly`, and which workers that can make the namespace carry: a job asking for it
    /// waits for such a worker, and a node too old to know the tag never claims it.
    public static let isolationTag = (name: "aspen.network", value: "none")

    /// The worker's own.
    case host
    /// A network namespace of its own with only a loopback: its processes reach one another on
    /// 127.0.0.1 and no other address (not the node's ports, not other hosts); Unix sockets in
    /// the file system are not part of a network namespace, and its user's permissions decide
    /// those. Needs the job
    /// trampoline and the privilege to make a namespace (root); without them the job does not
    /// start, or exits 126 saying why — it never runs with the host's network instead.
    case loopbackOnly
}

/// Output as the child produced it, one read at a time, up to the command's `outputBytesMax`.
public struct ShellOutputChunk: Sendable, Equatable {
    public enum Stream: Sendable, Equatable {
        case standardOutput
        case standardError
    }

    public var stream: Stream
    public var bytes: [UInt8]

    public init(stream: Stream, bytes: [UInt8]) {
        self.stream = stream
        self.bytes = bytes
    }
}

/// How a shell job's attempt ended.
public struct ShellOutcome: Sendable, Equatable {
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        /// The child called exit with this code.
        case exited(Int32)
        /// A signal with this number ended the child.
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exit code \(code)"
            case .signaled(let signal): "signal \(signal)"
            }
        }
    }

    /// How the child (the command's first process) ended.
    public var termination: Termination
    /// The runner stopped the job because it ran past `timeoutMs`.
    public var timedOut: Bool
    /// The runner stopped the job because the calling task was cancelled.
    public var cancelled: Bool
    /// Output bytes read from the child, delivered or not.
    public var outputBytes: Int
    /// Output past `outputBytesMax` was dropped.
    public var truncated: Bool
    /// From the start to the child's exit (a stop's grace included).
    public var runMs: Int64
    /// From the child's exit to the return: killing and reaping what it left behind.
    public var cleanupMs: Int64
    /// Processes of the job that were still alive when the child had exited, and were killed.
    public var leftoversKilled: Int
    /// Processes of the job still alive or unreaped when the cleanup gave up; 0 but for a job
    /// that outran the cleanup's rounds (a fork bomb) or a process that ignores SIGKILL (stuck in
    /// the kernel).
    public var leftoversRemaining: Int
    /// The directory of the cgroup (v2) the job ran in, which the runner removes before it
    /// returns (unless `leftoversRemaining` is not 0); nil when the job ran without one: no
    /// writable cgroup v2 here, or the child could not join it.
    public var cgroupDirectory: String?

    /// Exit code 0, not stopped.
    public var succeeded: Bool { termination == .exited(0) && !timedOut && !cancelled }
}

/// Why a shell command did not run, or could not be watched to its end.
public enum ShellRunError: Error, Equatable, CustomStringConvertible {
    /// The command or marker is malformed; the text names the field and the reason.
    case invalidCommand(String)
    /// No executable of that name on `PATH`, or nothing executable at that path.
    case executableNotFound(String)
    /// The working directory does not exist or cannot be entered.
    case workingDirectoryUnusable(String)
    /// The system refused to start the command, for the reason given.
    case startFailed(String)
    /// The child's output or exit could not be read; the job was stopped and cleaned up.
    case supervisionFailed(String)

    public var description: String {
        switch self {
        case .invalidCommand(let reason): "invalid shell command: \(reason)"
        case .executableNotFound(let name): "executable not found or not executable: \(name)"
        case .workingDirectoryUnusable(let path): "working directory does not exist or cannot be entered: \(path)"
        case .startFailed(let reason): "the command could not be started: \(reason)"
        case .supervisionFailed(let reason): "the command's output or exit could not be read: \(reason)"
        }
    }
}

/// Runs shell jobs so that nothing of a job outlives its attempt.
///
/// The child starts in a session and process group of its own, so one `kill(-group)` reaches it
/// and its ordinary descendants; and, where this process's cgroup v2 can take children, in a
/// cgroup of its own (`JobCgroup`), which no descendant leaves by `setsid` or `env -i`. A stop
/// (timeout or the caller's cancellation) sends the group and each process of the cgroup
/// SIGTERM, waits up to `killGraceMs` for them to exit, then SIGKILLs the group and writes the
/// cgroup's `cgroup.kill`. Whenever the child has exited, stopped or not, the runner sweeps: it
/// kills what is left of the cgroup and of the group, and every process whose environment carries
/// `ASPEN_JOB_MARKER=<marker>` (how it finds, without a cgroup, a descendant that left the group
/// with `setsid` or `setpgid`), and repeats until the cgroup is empty and a scan of /proc finds
/// none (at most `sweepRoundsMax` rounds, `sweepIntervalMs` apart); then it removes the cgroup.
/// Processes are killed and reaped through pidfds opened while they are still seen to be the
/// job's, so a reused pid is never hit.
///
/// This process becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`) on the first runner made:
/// a job's orphans are reparented here rather than to init, and the sweep reaps those it kills.
/// The cost: an orphan of any other child of this process also lands here, and nothing reaps it.
///
/// The limit, without a cgroup (no cgroup v2, or not writable by this user): a descendant that
/// clears its environment (`env -i`) and also leaves the group (`setsid`) escapes the sweep. It is
/// still reparented to this process (the subreaper), but it is not killed. Likewise one whose
/// environ this process may not read (another user's). With a cgroup, a job still escapes if it
/// moves itself to another cgroup on purpose (see `JobCgroup`). In a cgroup, the command starts
/// through the job trampoline (see `CgroupPlacement`): an executable that is found but cannot be
/// executed (not a binary, no `#!` line) makes the child exit 127 with the reason on stderr,
/// rather than `run` throwing `startFailed`.
public struct ShellRunner: Sendable {
    /// The environment variable that marks every process of one attempt.
    public static let markerVariable = "ASPEN_JOB_MARKER"
    /// Longest marker, in bytes.
    public static let markerBytesMax = 128
    /// Scans of /proc after the child exits before the sweep gives up on what remains.
    public static let sweepRoundsMax = 20
    /// Between two sweep rounds, and between two looks at a stopping group.
    public static let sweepIntervalMs: Int64 = 50

    /// Whether the sweep hunts processes by marker as well as by process group. Off only in a
    /// test, to show that processes escape without it.
    var sweepsMarkedProcesses = true
    /// Whether a job gets a cgroup of its own where one can be made. Off only in a test, to show
    /// what escapes without it.
    var usesCgroup = true

    public init() {
        _ = subreaperEnabled
    }

    /// Kills every process left by an earlier run of this worker: those in the job cgroups it
    /// left under this process's cgroup (then removed), and those whose marker starts with
    /// `markerPrefix` (a worker that was killed could not stop its jobs). Returns how many.
    @discardableResult
    public static func killLeftovers(markerPrefix: String) -> Int {
        let entry = Array("\(markerVariable)=\(markerPrefix)".utf8)
        let own = getpid()
        var killed = CgroupHierarchy.current.map { JobCgroup.killLeftovers(markerPrefix: markerPrefix, in: $0) } ?? 0
        for pid in ProcessTable.pids() where pid != own && ProcessTable.environment(of: pid, contains: entry, prefix: true) {
            if kill(pid, SIGKILL) == 0 { killed += 1 }
        }
        return killed
    }

    /// Runs `command` to its end and cleans up after it; returns how it ended.
    ///
    /// `onOutput` gets the output as it is read, in order, one call at a time, never more than
    /// `outputBytesMax` bytes in all; the child does not wait for it (chunks queue, at most the
    /// cap's worth). `run` returns after the last call has returned.
    ///
    /// Cancelling the calling task stops the job (SIGTERM, grace, SIGKILL, sweep) and returns an
    /// outcome with `cancelled` set; the stop and the sweep run to their end first. A task already
    /// cancelled throws `CancellationError` without starting anything.
    ///
    /// - Parameter marker: Unique per attempt; every process of the job gets it in its environment.
    public func run(
        _ command: ShellCommand, marker: String, onOutput: @escaping @Sendable (ShellOutputChunk) async -> Void
    ) async throws -> ShellOutcome {
        let configuration = try command.configuration(marker: marker)
        try Task.checkCancellation()
        let events = SupervisorEvents()
        // The attempt runs in a task of its own so that the caller's cancellation reaches it only
        // as a stop request. Cancelled itself, swift-subprocess would kill the child alone, at
        // once, and a cancelled task cannot sleep through the grace.
        let attempt = Task {
            try await self.supervise(command, configuration, marker: marker, events: events, onOutput: onOutput)
        }
        return try await withTaskCancellationHandler {
            try await attempt.value
        } onCancel: {
            events.send(.stop(.cancelled))
        }
    }

    private func supervise(
        _ command: ShellCommand, _ configuration: Configuration, marker: String, events: SupervisorEvents,
        onOutput: @escaping @Sendable (ShellOutputChunk) async -> Void
    ) async throws -> ShellOutcome {
        let clock = ContinuousClock()
        let start = clock.now
        let placement = try CgroupPlacement(command, configuration, marker: marker, cgroups: usesCgroup)
        let cgroup = placement.flatMap(\.cgroup)
        let result: ExecutionResult<Supervision, SequenceOutput, SequenceOutput>
        do {
            result = try await Subprocess.run(
                placement?.configuration ?? configuration, input: .none, output: .sequence, error: .sequence
            ) { execution in
                await self.watch(execution, command, marker: marker, cgroup: cgroup, events: events, onOutput: onOutput, clock: clock)
            }
        } catch {
            await cgroup?.remove()
            if let error = error as? SubprocessError { throw ShellRunError(error, command: command) }
            throw error
        }
        // The sweep has emptied it (or given up, and then this fails too and leaves it).
        await cgroup?.remove()
        let supervision = result.closureResult
        if let failure = supervision.failure {
            throw ShellRunError.supervisionFailed(failure)
        }
        return ShellOutcome(
            termination: ShellOutcome.Termination(result.terminationStatus),
            timedOut: supervision.stopCause == .timedOut,
            cancelled: supervision.stopCause == .cancelled,
            outputBytes: supervision.output.producedBytes,
            truncated: supervision.output.truncated,
            runMs: (supervision.exitedAt - start).wholeMilliseconds,
            cleanupMs: (clock.now - supervision.exitedAt).wholeMilliseconds,
            leftoversKilled: supervision.sweep.killed,
            leftoversRemaining: supervision.sweep.remaining,
            cgroupDirectory: supervision.childJoinedCgroup ? cgroup?.directory : nil
        )
    }
}

/// Set once per process, by the first runner made; false if the kernel refused.
private let subreaperEnabled: Bool = aspen_set_child_subreaper() == 0

extension ShellCommand {
    /// The command as swift-subprocess runs it, after checking every field.
    func configuration(marker: String) throws(ShellRunError) -> Configuration {
        try validate(marker: marker)
        var environment: [Environment.Key: String] = [:]
        for (name, value) in self.environment where name != ShellRunner.markerVariable {
            environment[Environment.Key(rawValue: name)!] = value
        }
        environment[Environment.Key(rawValue: ShellRunner.markerVariable)!] = marker
        let name = arguments[0]
        var options = PlatformOptions()
        options.createSession = true
        // Used only if the watch itself fails: the watch stops the job on its own otherwise.
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(killGraceMs))]
        return Configuration(
            executable: name.contains("/") ? .path(.init(name)) : .name(name),
            arguments: Arguments(executablePathOverride: name, remainingValues: Array(arguments.dropFirst())),
            environment: .custom(environment),
            workingDirectory: workingDirectory.map { .init($0) },
            platformOptions: options
        )
    }

    private func validate(marker: String) throws(ShellRunError) {
        guard let name = arguments.first, !name.isEmpty else { throw .invalidCommand("no executable (arguments is empty)") }
        if let index = arguments.firstIndex(where: { $0.utf8.contains(0) }) { throw .invalidCommand("argument \(index) contains NUL") }
        for (name, value) in environment {
            let bytes = Array(name.utf8)
            guard let first = bytes.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
                throw .invalidCommand("environment name \"\(name)\" is empty or starts with a digit")
            }
            if bytes.contains(UInt8(ascii: "=")) || bytes.contains(0) { throw .invalidCommand("environment name \"\(name)\" contains = or NUL") }
            if value.utf8.contains(0) { throw .invalidCommand("environment value of \(name) contains NUL") }
        }
        if workingDirectory?.utf8.contains(0) == true { throw .invalidCommand("workingDirectory contains NUL") }
        if let user, user.uid == 0 || user.gid == 0 || user.uid == UInt32.max || user.gid == UInt32.max {
            throw .invalidCommand("user \(user.uid):\(user.gid) is root or not a user")
        }
        guard timeoutMs >= 0, killGraceMs >= 0, outputBytesMax >= 0 else {
            throw .invalidCommand("timeoutMs, killGraceMs and outputBytesMax must not be negative")
        }
        guard !marker.isEmpty, marker.utf8.count <= ShellRunner.markerBytesMax, !marker.utf8.contains(0) else {
            throw .invalidCommand("marker must be 1 to \(ShellRunner.markerBytesMax) bytes (markerBytesMax), without NUL")
        }
    }
}

extension ShellRunError {
    /// A swift-subprocess failure, said in terms of the command.
    init(_ error: SubprocessError, command: ShellCommand) {
        switch error.code {
        case .executableNotFound: self = .executableNotFound(command.arguments[0])
        case .failedToChangeWorkingDirectory: self = .workingDirectoryUnusable(command.workingDirectory ?? "")
        case .spawnFailed: self = .startFailed(error.description)
        default: self = .supervisionFailed(error.description)
        }
    }
}

extension ShellOutcome.Termination {
    init(_ status: TerminationStatus) {
        switch status {
        case .exited(let code): self = .exited(code)
        case .signaled(let signal): self = .signaled(signal)
        }
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
#endif
