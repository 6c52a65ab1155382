#if os(Linux)
import CAspenLinux
import Glibc

/// Where this process's own cgroup (v2) is in the file system, so that a job's cgroup can be made
/// under it. Found from /proc/self/mountinfo (a `cgroup2` mount: at /sys/fs/cgroup on a pure v2
/// machine, elsewhere on a hybrid one) and /proc/self/cgroup (the `0::` line), never assumed.
struct CgroupHierarchy: Sendable, Equatable {
    /// The directory of this process's cgroup.
    let ownDirectory: String
    /// This process's cgroup as /proc/<pid>/cgroup names it (the `0::` line's path).
    let ownPath: String

    /// Bytes read from /proc/self/mountinfo; a machine with thousands of mounts has less.
    static let mountinfoBytesMax = 4 << 20
    /// Bytes read from /proc/self/cgroup or /proc/<pid>/cgroup: one line per hierarchy.
    static let cgroupFileBytesMax = 64 * 1024

    /// Looked up once per process. Nil: no cgroup v2 holds this process, or its mount does not
    /// show its cgroup, or there is no job trampoline beside this program (see `CgroupPlacement`).
    static let current: CgroupHierarchy? = {
        guard CgroupPlacement.trampolineExecutable != nil,
            let mountinfo = CgroupFile.read("/proc/self/mountinfo", bytesMax: mountinfoBytesMax),
            let cgroups = CgroupFile.read("/proc/self/cgroup", bytesMax: cgroupFileBytesMax)
        else { return nil }
        return locate(mountinfo: String(decoding: mountinfo, as: UTF8.self), cgroups: String(decoding: cgroups, as: UTF8.self))
    }()

    /// The first `cgroup2` mount whose root holds the process's cgroup, and the cgroup's
    /// directory under it. The mount may show a subtree only (a bind mount, a container's view).
    static func locate(mountinfo: String, cgroups: String) -> CgroupHierarchy? {
        guard let ownPath = unifiedPath(cgroups: cgroups) else { return nil }
        for (root, mountPoint) in cgroup2Mounts(mountinfo: mountinfo) {
            let below: Substring
            if root == "/" {
                below = ownPath[...]
            } else if ownPath == root || ownPath.hasPrefix(root + "/") {
                below = ownPath.dropFirst(root.count)
            } else {
                continue
            }
            let directory = below.isEmpty || below == "/" ? mountPoint : mountPoint + below
            return CgroupHierarchy(ownDirectory: directory, ownPath: ownPath)
        }
        return nil
    }

    /// The path on the `0::` line (the v2 hierarchy), if it names a cgroup this process can see:
    /// not one outside its cgroup namespace (`/..`) nor a removed one.
    static func unifiedPath(cgroups: String) -> String? {
        for line in cgroups.split(separator: "\n") where line.hasPrefix("0::") {
            let path = String(line.dropFirst(3))
            guard path.hasPrefix("/"), !path.split(separator: "/").contains(".."), !path.hasSuffix(" (deleted)") else { return nil }
            return path
        }
        return nil
    }

    /// `(root, mount point)` of each `cgroup2` mount, in mountinfo's order. A line reads
    /// `id parent major:minor root mountpoint options [optional fields...] - fstype source super-options`,
    /// with space, tab, newline and backslash in paths written as octal escapes.
    static func cgroup2Mounts(mountinfo: String) -> [(root: String, mountPoint: String)] {
        var mounts: [(root: String, mountPoint: String)] = []
        for line in mountinfo.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 1 < fields.count,
                fields[dash + 1] == "cgroup2"
            else { continue }
            mounts.append((unescaped(fields[3]), unescaped(fields[4])))
        }
        return mounts
    }

    /// Undoes mountinfo's `\ooo` octal escapes.
    static func unescaped(_ field: Substring) -> String {
        let bytes = Array(field.utf8)
        var result: [UInt8] = []
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\"), index + 3 < bytes.count,
                let value = UInt8(String(decoding: bytes[(index + 1)..<(index + 4)], as: UTF8.self), radix: 8)
            {
                result.append(value)
                index += 4
            } else {
                result.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: result, as: UTF8.self)
    }
}

/// Whole-file reads and small writes of cgroup and /proc files. A failure is an answer (nil,
/// false): the file belongs to a process or cgroup that may be gone.
enum CgroupFile {
    /// The file's bytes, at most `bytesMax` of them.
    static func read(_ path: String, bytesMax: Int) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < bytesMax {
            let got = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, min($0.count, bytesMax - bytes.count)) }
            if got < 0, errno == EINTR { continue }
            guard got >= 0 else { return nil }
            if got == 0 { break }
            bytes += buffer[..<got]
        }
        return bytes
    }

    /// Writes `text` in one write, as cgroup interface files want.
    static func write(_ text: String, to path: String) -> Bool {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        while true {
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress!, $0.count) }
            if written < 0, errno == EINTR { continue }
            return written == bytes.count
        }
    }
}
#endif
