#if os(Linux)
import CAspenLinux
import Glibc
import Synchronization

/// The cgroup (v2) of one attempt, a child of this process's own cgroup. Every process of the
/// job is in it from its first instruction on: the job trampoline puts the child there before its
/// exec, and a process forks into its parent's cgroup. So `cgroup.kill` reaches the processes
/// that left the job's process group and cleared its marker from their environment, and
/// `cgroup.procs` lists them. It contains what a job leaves behind by habit or accident
/// (daemons, `setsid`, `env -i`); it is no security boundary: a job that runs as this process's
/// user may write its pid into any cgroup this process may write to, this one's included.
///
/// No controller is enabled in it, so cgroup v2's rule against processes in inner cgroups that
/// distribute resources never applies: the job's processes and this process's own sit side by side.
struct JobCgroup: Sendable, Equatable {
    /// The cgroup's directory.
    let directory: String
    /// The cgroup as /proc/<pid>/cgroup names it.
    let path: String

    /// Every job cgroup's name starts with this, then the attempt's marker (sanitized).
    static let namePrefix = "aspen-job-"
    /// Tries at `rmdir` while the cgroup is still populated (its processes are dying) before the
    /// directory is left behind.
    static let removeAttemptsMax = 40
    /// Between two tries at `rmdir`.
    static let removeIntervalMs: Int64 = 25
    /// Bytes read from `cgroup.procs`: a line per process, room for over 100,000 of them.
    static let procsBytesMax = 1 << 20

    /// Makes the attempt's cgroup under `hierarchy`. Nil when that is not possible here (the own
    /// cgroup is read-only or not this user's, the kernel predates `cgroup.kill`); the job then
    /// runs without one, as it would on a machine without cgroup v2.
    static func create(marker: String, in hierarchy: CgroupHierarchy) -> JobCgroup? {
        let name = namePrefix + sanitized(marker)
        switch make(name, in: hierarchy) {
        case .made(let cgroup): return cgroup
        case .refused: return nil
        case .exists:
            // Markers are unique per attempt, but two may sanitize alike.
            let unique = uniqueSuffix.withLock { count -> Int in
                count += 1
                return count
            }
            if case .made(let cgroup) = make("\(name).\(getpid()).\(unique)", in: hierarchy) { return cgroup }
            return nil
        }
    }

    private enum Making {
        case made(JobCgroup)
        case exists
        case refused
    }

    private static func make(_ name: String, in hierarchy: CgroupHierarchy) -> Making {
        let cgroup = JobCgroup(named: name, in: hierarchy)
        guard mkdir(cgroup.directory, 0o755) == 0 else { return errno == EEXIST ? .exists : .refused }
        // Moving the child in takes write access to both cgroup.procs files (the own one as the
        // two cgroups' common ancestor); killing takes cgroup.kill (Linux 5.14).
        guard access(cgroup.directory + "/cgroup.kill", W_OK) == 0, access(cgroup.directory + "/cgroup.procs", W_OK) == 0,
            access(hierarchy.ownDirectory + "/cgroup.procs", W_OK) == 0
        else {
            rmdir(cgroup.directory)
            return .refused
        }
        return .made(cgroup)
    }

    private init(named name: String, in hierarchy: CgroupHierarchy) {
        directory = hierarchy.ownDirectory + "/" + name
        path = (hierarchy.ownPath == "/" ? "" : hierarchy.ownPath) + "/" + name
    }

    /// The marker's bytes that are safe in a directory name (letters, digits, `-`, `_`, `.`),
    /// each other byte replaced by `_`. Byte by byte, so a marker prefix sanitizes to a prefix.
    static func sanitized(_ marker: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.".utf8)
        return String(decoding: marker.utf8.map { allowed.contains($0) ? $0 : UInt8(ascii: "_") }, as: UTF8.self)
    }

    /// SIGKILLs every process in the cgroup, and any that one of them forks meanwhile.
    @discardableResult
    func killAll() -> Bool {
        CgroupFile.write("1", to: directory + "/cgroup.kill")
    }

    /// The live processes in the cgroup (a zombie is no longer listed).
    func members() -> [pid_t] {
        guard let bytes = CgroupFile.read(directory + "/cgroup.procs", bytesMax: Self.procsBytesMax) else { return [] }
        return bytes.split(separator: UInt8(ascii: "\n")).compactMap { pid_t(String(decoding: $0, as: UTF8.self)) }
    }

    /// Whether a live process is in the cgroup (`populated` of `cgroup.events`; zombies do not count).
    var isPopulated: Bool {
        guard let bytes = CgroupFile.read(directory + "/cgroup.events", bytesMax: 4096) else { return false }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").contains("populated 1")
    }

    /// Whether the process is (or, a zombie, was when it exited) in this cgroup.
    func contains(_ pid: pid_t) -> Bool {
        guard let bytes = CgroupFile.read("/proc/\(pid)/cgroup", bytesMax: CgroupHierarchy.cgroupFileBytesMax) else { return false }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").contains { $0.hasPrefix("0::") && $0.dropFirst(3) == path }
    }

    /// Sends the signals, in order, to each live member, through a pidfd opened and checked
    /// first: between the read of `cgroup.procs` and the signal a member may exit and its pid be
    /// reused.
    func signalMembers(_ signals: Int32...) {
        for pid in members() {
            let pidfd = aspen_pidfd_open(pid)
            guard pidfd >= 0 else { continue }
            if contains(pid) {
                for signal in signals { _ = aspen_pidfd_send_signal(pidfd, signal) }
            }
            close(pidfd)
        }
    }

    /// Removes the directory, once its processes are gone: kills what is left and tries again,
    /// at most `removeAttemptsMax` times. False if it is still there.
    @discardableResult
    func remove() async -> Bool {
        for attempt in 0..<Self.removeAttemptsMax {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(Self.removeIntervalMs)) }
            if rmdir(directory) == 0 || errno == ENOENT { return true }
            guard errno == EBUSY else { return false }
            killAll()
        }
        return false
    }
}

/// Counts the cgroups made with a suffix, so that no two are alike.
private let uniqueSuffix = Mutex(0)

extension JobCgroup {
    /// Kills the processes of the cgroups that an earlier run of this worker left under its own
    /// cgroup (those whose marker starts with `markerPrefix`), and removes the cgroups. Returns
    /// how many processes it killed. The earlier worker's cgroup may differ from this one's;
    /// those elsewhere are not found.
    static func killLeftovers(markerPrefix: String, in hierarchy: CgroupHierarchy) -> Int {
        guard let directory = opendir(hierarchy.ownDirectory) else { return 0 }
        var names: [String] = []
        let prefix = namePrefix + sanitized(markerPrefix)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(prefix) { names.append(name) }
        }
        closedir(directory)
        var killed = 0
        for name in names {
            let cgroup = JobCgroup(named: name, in: hierarchy)
            killed += cgroup.members().count
            cgroup.killAll()
            // The processes die within moments; their parents (init, the worker being gone) reap them.
            for _ in 0..<removeAttemptsMax where rmdir(cgroup.directory) != 0 && errno == EBUSY {
                usleep(useconds_t(removeIntervalMs * 1000))
            }
        }
        return killed
    }
}
#endif
