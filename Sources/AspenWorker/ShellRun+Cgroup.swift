#if os(Linux)
import CAspenLinux
import Glibc
import Subprocess

/// An attempt's cgroup and namespaces, and the configuration that starts its command inside
/// them.
///
/// The command starts through the job trampoline (`aspen-job-trampoline`, a small C program
/// installed beside the worker's own), which joins the cgroup, makes the namespaces the command
/// asks for (`ShellNetwork.loopbackOnly`, `hidesOthersProcesses`), and then execs the command's
/// executable with the
/// command's argv and environment as they are. The executable is looked up here first, by
/// swift-subprocess's rules (a name on the child's `PATH`, else this process's; the first regular
/// file this process may execute), because the trampoline can only report a failed exec as exit
/// status 127. When the lookup finds nothing the attempt runs without a cgroup, and
/// swift-subprocess reports the error it always did — unless the command asks for a namespace,
/// and then it fails to start.
struct CgroupPlacement: Sendable {
    /// Nil when the job runs in no cgroup of its own (only in a namespace).
    let cgroup: JobCgroup?
    let configuration: Configuration

    /// The trampoline's name, and its argv[0].
    static let trampolineName = "aspen-job-trampoline"

    /// The trampoline beside this process's executable, if there is one that may be executed.
    static let trampolineExecutable: String? = {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let program = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = program.lastIndex(of: "/") else { return nil }
        let candidate = String(program[...slash]) + trampolineName
        return access(candidate, X_OK) == 0 ? candidate : nil
    }()

    /// Nil when the job runs as it is, without a cgroup: none wanted (`cgroups` false) or
    /// available here (see `JobCgroup.create`), or the executable not found (left for
    /// swift-subprocess to report), or a name to look up with no `PATH` in the child's
    /// environment nor in this process's (swift-subprocess then searches the system's default
    /// path; rare enough not to copy). A command that asks for a namespace or another user is
    /// never left to run as it is: without the trampoline or its executable it throws.
    init?(_ command: ShellCommand, _ configuration: Configuration, marker: String, cgroups: Bool) throws(ShellRunError) {
        var flags = (command.network == .loopbackOnly ? ["--loopback-only"] : []) + (command.hidesOthersProcesses ? ["--hide-processes"] : [])
        // The trampoline runs as root: the job's environment reaches it as arguments, for the
        // job alone, never as its own (its dynamic loader would read LD_PRELOAD and the like).
        var environment = configuration.environment
        if let user = command.user {
            var entries = command.environment.filter { $0.key != ShellRunner.markerVariable }.map { "\($0.key)=\($0.value)" }.sorted()
            entries.append("\(ShellRunner.markerVariable)=\(marker)")
            flags += ["--user", "\(user.uid):\(user.gid)", "--environment", "\(entries.count)"] + entries
            environment = .custom([Environment.Key(rawValue: ShellRunner.markerVariable)!: marker])
        }
        let isolated = !flags.isEmpty
        guard let trampoline = Self.trampolineExecutable, let executable = command.resolvedExecutable() else {
            guard isolated else { return nil }
            if Self.trampolineExecutable == nil {
                throw .startFailed("a job in a namespace of its own starts through \(Self.trampolineName), which is not beside this program")
            }
            throw .executableNotFound(command.arguments[0])
        }
        let cgroup = cgroups ? CgroupHierarchy.current.flatMap { JobCgroup.create(marker: marker, in: $0) } : nil
        guard cgroup != nil || isolated else { return nil }
        self.cgroup = cgroup
        self.configuration = Configuration(
            executable: .path(.init(trampoline)),
            arguments: Arguments(
                executablePathOverride: Self.trampolineName,
                remainingValues: flags + [cgroup.map { $0.directory + "/cgroup.procs" } ?? "-", executable]
                    + command.arguments),
            environment: environment,
            workingDirectory: configuration.workingDirectory,
            platformOptions: configuration.platformOptions
        )
    }
}

extension ShellCommand {
    /// What the child would exec, as swift-subprocess finds it: for a name, the first directory
    /// of `PATH` (the child's, else this process's; only absolute entries) holding a regular file
    /// this process may execute, that file; for a path, the path as written (the exec happens in
    /// the working directory), if it names such a file. Nil when nothing qualifies.
    func resolvedExecutable() -> String? {
        let name = arguments[0]
        if name.contains("/") {
            let seen = name.hasPrefix("/") ? name : workingDirectory.map { $0 + "/" + name } ?? name
            return Self.isExecutableFile(seen) ? name : nil
        }
        guard let pathValue = environment["PATH"] ?? getenv("PATH").map({ String(cString: $0) }) else { return nil }
        for directory in pathValue.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = String(directory) + (directory.hasSuffix("/") ? "" : "/") + name
            if Self.isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var status = stat()
        return access(path, X_OK) == 0 && stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
    }
}
#endif
