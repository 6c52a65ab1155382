import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file the log writes, by path and descriptor (the descriptor means something only to the
/// file system that opened it).
package struct LogFile: Sendable {
    package var path: String
    package var descriptor: Int32
}

/// The file operations of the segmented log, and nothing more, so that the tests and the
/// simulator can put a disk that loses power under it (`PowerLossDisk`) and the node puts the
/// real one (`POSIXLogFileSystem`). Package-wide, not public: only they need another.
///
/// What a real disk promises, and all the log relies on: bytes written to a file survive a
/// power loss once `synchronize` returned; a new or removed name in a directory survives once
/// `synchronizeDirectory` returned. Anything else may be lost, in part, or out of order.
package protocol LogFileSystem: Sendable {
    /// Creates `path` and its missing parents with mode 0700, each new name made durable.
    func createDirectory(_ path: String) throws
    /// The names in `directory`.
    func names(in directory: String) throws -> [String]
    /// The whole file.
    func contents(of path: String) throws -> [UInt8]
    /// Opens a file to write; `create` makes it (mode 0600) or empties it.
    func open(_ path: String, create: Bool) throws -> LogFile
    func write(_ bytes: UnsafeRawBufferPointer, to file: LogFile, at offset: Int) throws
    /// `fdatasync`: the file's bytes (and the size needed to read them) are on the disk.
    func synchronize(_ file: LogFile) throws
    /// Cuts the file to `size` bytes, durably.
    func truncate(_ file: LogFile, to size: Int) throws
    func close(_ file: LogFile)
    func remove(_ path: String) throws
    /// `fsync` of a directory: the names created or removed in it are on the disk.
    func synchronizeDirectory(_ path: String) throws
}

/// The log's files on the real disk, through POSIX calls.
struct POSIXLogFileSystem: LogFileSystem {
    func createDirectory(_ path: String) throws {
        try DurableFiles.createDirectory(path)
    }

    func names(in directory: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw StorageError.io(file: directory, detail: "cannot list the log directory: \(error.localizedDescription)")
        }
    }

    func contents(of path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StorageError.io(file: path, detail: "cannot read the log segment")
        }
        return [UInt8](data)
    }

    func open(_ path: String, create: Bool) throws -> LogFile {
        let flags = create ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDWR | O_CLOEXEC
        let descriptor = Glibc.open(path, flags, 0o600)
        guard descriptor >= 0 else { throw DurableFiles.failure(path, create ? "cannot create" : "cannot open") }
        return LogFile(path: path, descriptor: descriptor)
    }

    func write(_ bytes: UnsafeRawBufferPointer, to file: LogFile, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let written = pwrite(file.descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw DurableFiles.failure(file.path, "write failed") }
            done += written
        }
    }

    func synchronize(_ file: LogFile) throws {
        guard fdatasync(file.descriptor) == 0 else { throw DurableFiles.failure(file.path, "fdatasync failed") }
    }

    func truncate(_ file: LogFile, to size: Int) throws {
        guard ftruncate(file.descriptor, off_t(size)) == 0, fsync(file.descriptor) == 0 else {
            throw DurableFiles.failure(file.path, "cannot cut the file to \(size) bytes")
        }
    }

    func close(_ file: LogFile) {
        _ = Glibc.close(file.descriptor)
    }

    func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw DurableFiles.failure(path, "cannot delete") }
    }

    func synchronizeDirectory(_ path: String) throws {
        try DurableFiles.synchronizeDirectory(path)
    }
}

/// Directories and files that must survive a power loss once created: a new name is on the
/// disk only once its parent directory was fsynced, whatever happened to the file's bytes.
public enum DurableFiles {
    /// Creates `path` and each missing parent with `mode` (0700: the node's data is its own),
    /// and fsyncs the parent of each one created.
    public static func createDirectory(_ path: String, mode: mode_t = 0o700) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw StorageError.io(file: path, detail: "exists and is not a directory") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try createDirectory(parent, mode: mode) }
        guard mkdir(path, mode) == 0 || errno == EEXIST else { throw failure(path, "cannot create the directory") }
        try synchronizeDirectory(parent.isEmpty ? "." : parent)
    }

    /// Creates the empty file `path` with `mode` if it does not exist, and fsyncs its directory
    /// (SQLite gives its WAL and shared-memory files the database file's mode).
    public static func createFile(_ path: String, mode: mode_t = 0o600) throws {
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if descriptor < 0 && errno == EEXIST { return }
        guard descriptor >= 0 else { throw failure(path, "cannot create") }
        defer { _ = Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure(path, "fsync failed") }
        let parent = (path as NSString).deletingLastPathComponent
        try synchronizeDirectory(parent.isEmpty ? "." : parent)
    }

    /// Replaces the contents of `path` with `bytes` (mode 0600) so that a crash leaves the old
    /// contents or the new, never part: written beside it, fsynced, renamed over it, and the
    /// directory fsynced.
    public static func replaceContents(_ path: String, with bytes: [UInt8], mode: mode_t = 0o600) throws {
        let temporary = path + ".tmp"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw failure(temporary, "cannot create") }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        let synced = written == bytes.count && fsync(descriptor) == 0
        _ = Glibc.close(descriptor)
        guard synced else { throw failure(temporary, "cannot write it") }
        guard rename(temporary, path) == 0 else { throw failure(temporary, "cannot rename it to \(path)") }
        let parent = (path as NSString).deletingLastPathComponent
        try synchronizeDirectory(parent.isEmpty ? "." : parent)
    }

    public static func synchronizeDirectory(_ path: String) throws {
        let descriptor = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(path, "cannot open the directory") }
        defer { _ = Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure(path, "fsync of the directory failed") }
    }

    /// An I/O error naming the file and what the system said.
    static func failure(_ path: String, _ what: String) -> StorageError {
        .io(file: path, detail: "\(what): \(String(cString: strerror(errno)))")
    }
}
