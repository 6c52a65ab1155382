#if os(Linux)
import Glibc

/// The fields of `/proc/<pid>/stat` the runner needs.
struct ProcessStat: Sendable, Equatable {
    /// `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead), ...
    var state: UInt8
    var parent: pid_t
    var group: pid_t

    /// Not yet exited: a zombie has exited and waits only to be reaped.
    var isAlive: Bool { state != UInt8(ascii: "Z") && state != UInt8(ascii: "X") && state != UInt8(ascii: "x") }
}

extension ProcessStat {
    /// Parses `pid (comm) state ppid pgrp ...`. The command name may hold spaces and parentheses,
    /// so the fields are counted from the last `)`.
    init?(parsing line: [UInt8]) {
        guard let close = line.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = line[(close + 1)...].split(separator: UInt8(ascii: " "), maxSplits: 3)
        guard fields.count >= 3, fields[0].count == 1,
            let parent = pid_t(String(decoding: fields[1], as: UTF8.self)),
            let group = pid_t(String(decoding: fields[2], as: UTF8.self))
        else { return nil }
        self.state = fields[0].first!
        self.parent = parent
        self.group = group
    }
}

/// Finds one exact `NAME=value` entry in an environment block (entries ended by NUL, as in
/// `/proc/<pid>/environ`) fed in pieces of any size, without holding the block.
struct EnvironmentEntryMatcher {
    let entry: [UInt8]
    /// An entry that starts with `entry` matches (else only one equal to it).
    let prefix: Bool
    private(set) var found = false
    /// Bytes of `entry` matched so far in the current entry; nil once it differs.
    private var matched: Int? = 0

    init(entry: [UInt8], prefix: Bool = false) {
        self.entry = entry
        self.prefix = prefix
    }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes {
            if byte == 0 {
                endEntry()
            } else if let count = matched {
                if prefix, count == entry.count { continue }
                matched = count < entry.count && entry[count] == byte ? count + 1 : nil
            }
        }
    }

    /// The block ended; its last entry may lack a NUL.
    mutating func finish() {
        endEntry()
    }

    private mutating func endEntry() {
        if matched == entry.count { found = true }
        matched = 0
    }
}

/// Reads /proc. Every read may fail because the process has gone meanwhile: that is an answer
/// (nil, false), never an error.
enum ProcessTable {
    /// Bytes read from a `stat` file; the line is far shorter.
    static let statBytesMax = 4096
    /// One read of an `environ` file; the whole file is read in pieces of this size.
    static let environReadBytes = 16 * 1024

    /// The pid of every process, this one included.
    static func pids() -> [pid_t] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var pids: [pid_t] = []
        while let entry = readdir(directory) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { name -> pid_t? in
                var value: pid_t = 0
                for (index, byte) in name.enumerated() {
                    if byte == 0 { return index > 0 ? value : nil }
                    // Pids have at most 7 digits (pid_max is at most 2^22).
                    guard index < 9, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                    value = value * 10 + pid_t(byte - UInt8(ascii: "0"))
                }
                return nil
            }
            if let pid { pids.append(pid) }
        }
        return pids
    }

    static func stat(of pid: pid_t) -> ProcessStat? {
        let descriptor = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var line = [UInt8](repeating: 0, count: statBytesMax)
        var count = 0
        while count < line.count {
            let got = line.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, $0.count - count) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { break }
            count += got
        }
        return ProcessStat(parsing: Array(line[..<count]))
    }

    /// Whether the process's environment block holds exactly `entry`. False also when it cannot
    /// be read: the process has gone, or belongs to a user this process may not inspect.
    static func environment(of pid: pid_t, contains entry: [UInt8], prefix: Bool = false) -> Bool {
        let descriptor = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var matcher = EnvironmentEntryMatcher(entry: entry, prefix: prefix)
        // The kernel bounds the block (it is what exec was given), so this loop ends.
        return withUnsafeTemporaryAllocation(byteCount: environReadBytes, alignment: 1) { buffer in
            while !matcher.found {
                let got = read(descriptor, buffer.baseAddress!, buffer.count)
                if got < 0, errno == EINTR { continue }
                guard got > 0 else { break }
                matcher.feed(UnsafeRawBufferPointer(rebasing: buffer[..<got]))
            }
            matcher.finish()
            return matcher.found
        }
    }

    /// Whether any process of `group` has yet to exit.
    static func hasLiveMember(inGroup group: pid_t) -> Bool {
        pids().contains { pid in
            guard let stat = stat(of: pid) else { return false }
            return stat.group == group && stat.isAlive
        }
    }
}
#endif
