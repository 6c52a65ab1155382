#if os(Linux)
import CAspenLinux
import Glibc

/// What a sweep did.
struct SweepReport: Sendable, Equatable {
    /// Processes found alive and killed.
    var killed = 0
    /// Processes still alive, or killed and not yet reaped, when the rounds ran out.
    var remaining = 0
}

/// Kills and reaps what is left of a job once its child has exited: everything in its cgroup
/// (if it has one), the rest of its process group, and every process whose environment carries
/// the attempt's marker (a descendant that left the group; the way to find it without a cgroup).
/// Runs while the child is unreaped, so `group` names the job's group alone.
///
/// A process found by cgroup or marker is opened as a pidfd, checked again through it, and then
/// killed and reaped through it: between the scan and the kill its pid may be freed and reused,
/// and the pidfd still names the process that was checked. A zombie of the job's group or cgroup
/// that this process (the subreaper) inherited is reaped by pid: a zombie keeps its pid until its
/// parent reaps it, and no other code here reaps a process of the job's (but the child, which
/// swift-subprocess reaps and the sweep leaves alone). `cgroup.kill` may kill a process before any
/// scan sees it alive: no longer listed in `cgroup.procs`, it is found as a zombie, whose
/// /proc/<pid>/cgroup still names the cgroup.
struct ProcessSweep {
    let group: pid_t
    let markerEntry: [UInt8]
    let matchesMarker: Bool
    let cgroup: JobCgroup?

    init(group: pid_t, marker: String, matchesMarker: Bool, cgroup: JobCgroup?) {
        self.group = group
        self.markerEntry = Array("\(ShellRunner.markerVariable)=\(marker)".utf8)
        self.matchesMarker = matchesMarker
        self.cgroup = cgroup
    }

    /// Sweeps until a round finds nothing of the job alive or unreaped and the cgroup empty, for
    /// at most `ShellRunner.sweepRoundsMax` rounds.
    func run() async -> SweepReport {
        var report = SweepReport()
        var handles: [pid_t: Int32] = [:]
        defer { for pidfd in handles.values { close(pidfd) } }
        for round in 0..<ShellRunner.sweepRoundsMax {
            if round > 0 { try? await Task.sleep(for: .milliseconds(ShellRunner.sweepIntervalMs)) }
            let scan = scanRound()
            for pid in scan.live where handles[pid] == nil {
                if let pidfd = openChecked(pid) {
                    handles[pid] = pidfd
                    report.killed += 1
                }
            }
            kill(-group, SIGKILL)
            cgroup?.killAll()
            for (pid, pidfd) in handles {
                _ = aspen_pidfd_send_signal(pidfd, SIGKILL)
                if Self.isGone(pid: pid, pidfd: pidfd) {
                    close(pidfd)
                    handles[pid] = nil
                }
            }
            if scan.live.isEmpty && scan.zombiesReaped == 0 && handles.isEmpty && cgroup?.isPopulated != true { return report }
        }
        report.remaining = Set(scanRound().live).union(handles.keys).count
        return report
    }

    /// The job's live processes (but the child), after reaping the zombies of its group or cgroup
    /// that this process inherited.
    private func scanRound() -> (live: [pid_t], zombiesReaped: Int) {
        let me = getpid()
        let inCgroup = Set(cgroup?.members() ?? [])
        var live: [pid_t] = []
        var zombiesReaped = 0
        for pid in ProcessTable.pids() where pid != me && pid != group {
            guard let stat = ProcessTable.stat(of: pid) else { continue }
            if !stat.isAlive {
                guard stat.parent == me, stat.group == group || cgroup?.contains(pid) == true else { continue }
                if waitpid(pid, nil, WNOHANG) == pid { zombiesReaped += 1 }
            } else if isMember(pid, stat, inCgroup: inCgroup.contains(pid)) {
                live.append(pid)
            }
        }
        return (live, zombiesReaped)
    }

    private func isMember(_ pid: pid_t, _ stat: ProcessStat, inCgroup: @autoclosure () -> Bool) -> Bool {
        stat.isAlive
            && (stat.group == group || inCgroup() || (matchesMarker && ProcessTable.environment(of: pid, contains: markerEntry)))
    }

    /// A pidfd for `pid`, if the process it names is (still) the job's.
    private func openChecked(_ pid: pid_t) -> Int32? {
        let pidfd = aspen_pidfd_open(pid)
        guard pidfd >= 0 else { return nil }
        guard let stat = ProcessTable.stat(of: pid), isMember(pid, stat, inCgroup: cgroup?.contains(pid) == true) else {
            close(pidfd)
            return nil
        }
        return pidfd
    }

    /// Whether the process is gone: reaped here if it is this process's child (an orphan of the
    /// job, reparented to the subreaper), or reaped by its own parent. A zombie whose parent is
    /// another of the job's processes is not gone yet: it comes here when that parent dies.
    private static func isGone(pid: pid_t, pidfd: Int32) -> Bool {
        var info = siginfo_t()
        while waitid(P_PIDFD, id_t(pidfd), &info, WEXITED | WNOHANG) != 0 {
            if errno == EINTR { continue }
            // Not this process's child: gone once it cannot be signalled, which lasts until it is reaped.
            return aspen_pidfd_send_signal(pidfd, 0) != 0
        }
        return info._sifields._sigchld.si_pid != 0
    }
}
#endif
