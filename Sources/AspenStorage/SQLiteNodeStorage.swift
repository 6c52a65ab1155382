import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

/// A node's durable state: the Raft log with its term and vote in append-only segment files
/// (`SegmentedLog`, in the directory `<path>-log`), and in one SQLite file (WAL mode) the
/// key-value state machine, the applied index, snapshot metadata and membership. Which version
/// of each key a read sees is found in memory (`KeyIndex`, rebuilt from the file on opening).
///
/// A `commit` appends the batch's entries and hard state to the log and waits for the disk
/// once; then it applies the committed entries in one SQLite transaction that does not wait for
/// the disk (`synchronous=NORMAL`). After a power loss the state machine may be behind the log
/// and catches up from it on restart, so the log keeps every entry after the last state that is
/// surely on disk: before compaction deletes log files, a `synchronous=FULL` commit makes the
/// state durable. Installing a snapshot commits with `FULL` too, before the log starts over.
public final class SQLiteNodeStorage: NodeStorage {
    public let path: String
    public let group: GroupID
    let pool: DatabasePool
    let checkpointer: Checkpointer
    let log: SegmentedLog
    /// Images prepared to send and the one being received (`<path>-snapshots`).
    let snapshots: SnapshotFiles
    let index = KeyIndex()
    let limits: Limits
    /// The term and vote last made durable (nil until known).
    let lastDurable = Mutex<Raft.HardState?>(nil)

    /// Where the log of `group` lives beside the database at `path`.
    public static func logDirectory(_ path: String, group: GroupID = .root) -> String {
        group == .root ? path + "-log" : path + "-log-\(group.rawValue)"
    }

    /// Where the snapshot images of `group` live beside the database at `path`.
    public static func snapshotDirectory(_ path: String, group: GroupID = .root) -> String {
        group == .root ? path + "-snapshots" : path + "-snapshots-\(group.rawValue)"
    }

    /// Opens (creating if needed) the database at `path` and its log. Refuses a file that is not
    /// a usable Aspen database, one that fails SQLite's integrity check, a connection that could
    /// not fsync on commit, or a log that is corrupted before its last segment.
    public init(
        path: String, group: GroupID = .root, limits: Limits = .standard, verify: Bool = true, logSegmentBytes: Int = 64 << 20
    ) throws {
        self.path = path
        self.group = group
        self.limits = limits
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // Pages stay in memory between commits (64 MiB of cache per connection) and reads of the
            // main file go through a memory map instead of one pread per page.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            try db.execute(sql: "PRAGMA mmap_size = 1073741824")
            // A new database gets 8 KiB pages (an existing one keeps its size). The log and the
            // history are WITHOUT ROWID tables, whose rows stay inside a page only up to about
            // a quarter of it: with 4 KiB pages every entry or version over ~1 KB spilled into
            // an overflow page of its own, mostly empty, and each 1 KiB write cost ~9 KB of
            // pages (measured: 925 MB of database after `etcdctl check perf --load=m`, 373 MB
            // with 8 KiB pages, and the slowest request 0.34 → 0.16 s).
            try db.execute(sql: "PRAGMA page_size = \(Self.pageBytes)")
            // The WAL is copied into the main file every 4,096 pages (32 MiB) rather than SQLite's
            // 1,000: a put rewrites two B-tree leaves (current value and history), so hot pages
            // appear in the WAL many times over and a longer interval copies each once. Measured
            // here with 3 nodes on one disk: disk writes per second fell from ~12,000 to ~3,500
            // and puts rose 5-27 % (c=64 through the etcd API, c=256 native, alternating runs);
            // 8,192 was no faster and its longer checkpoints showed in the p99. The checkpoints
            // run on a connection of their own (`Checkpointer`), not inside a commit.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        var previousSchema: Int?
        let logDirectory = Self.logDirectory(path, group: group)
        let logExisted = FileManager.default.fileExists(atPath: logDirectory)
        // The data directory (0700) and the database file (0600; SQLite gives its WAL the same
        // mode) are created durably: their names reach the disk before anything is acknowledged.
        let dataDirectory = (path as NSString).deletingLastPathComponent
        try DurableFiles.createDirectory(dataDirectory.isEmpty ? "." : dataDirectory)
        try DurableFiles.createFile(path)
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.writeWithoutTransaction { db in
                // Commits that must be durable switch to FULL (`durableWrite`); check that it takes.
                try db.execute(sql: "PRAGMA synchronous = FULL")
                let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
                guard level == 2 else {
                    throw StorageError.durabilityNotGuaranteed(
                        file: path, detail: "SQLite synchronous is \(level ?? -1), not FULL (2); refusing to run")
                }
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
                if verify {
                    let verdict = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
                    guard verdict == "ok" else { throw StorageError.corrupted(file: path, detail: verdict) }
                }
                try db.inTransaction {
                    previousSchema = try Self.migrate(db, file: path)
                    return .commit
                }
            }
            let checkpointer = try Checkpointer(path: path, frames: Int32(Self.checkpointPages))
            pool.writeWithoutTransaction { db in checkpointer.install(on: db) }
            self.checkpointer = checkpointer
            log = try SegmentedLog(directory: logDirectory, group: group, limits: limits, segmentBytes: logSegmentBytes)
            snapshots = try SnapshotFiles(directory: Self.snapshotDirectory(path, group: group))
        } catch let error as StorageError {
            throw error
        } catch let error as DatabaseError {
            throw Self.translate(error, file: path)
        }
        try guarded {
            try moveLogOutOfDatabase(previousSchema: previousSchema, logExisted: logExisted)
            try rebuildIndex()
        }
    }

    /// Fills the key index from `kv_history`.
    func rebuildIndex() throws {
        let (changes, compacted) = try pool.read { db in
            (
                try SQLiteKVBackend.changes(in: db, file: path),
                try Revision.fetchOne(db, sql: "SELECT compacted_revision FROM raft_state WHERE grp = ?", arguments: [group.rawValue]) ?? 0
            )
        }
        index.replace(with: changes, compacted: compacted)
    }

    /// Runs `body` in a read transaction, with a backend over its snapshot. A read that the
    /// index could not serve as of that snapshot (a compaction or a snapshot install overlapped
    /// it) starts over.
    /// Runs a read against a consistent pair of file and key index. While a snapshot image is
    /// being installed (the index is being replaced) the read does not wait: it may run on the
    /// node's event loop, and an install can take minutes. It fails at once with `busy`.
    func reading<T>(_ body: (Database, SQLiteKVBackend) throws -> T) throws -> T {
        try guarded {
            for _ in 0..<3 {
                let generation = index.generation
                guard generation % 2 == 0 else { break }
                do {
                    let result = try pool.read { db in try body(db, SQLiteKVBackend(db, file: path, group: group, index: index)) }
                    if index.generation == generation { return result }
                } catch is KeyIndex.Stale {}
            }
            throw StorageError.busy(file: path, detail: "a snapshot image is being installed; retry, or read from another member")
        }
    }

    static let pageBytes = 8192
    static let checkpointPages = 4096

    static func translate(_ error: DatabaseError, file: String) -> StorageError {
        switch error.resultCode {
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return .corrupted(file: file, detail: error.message ?? "\(error.resultCode)")
        default:
            return .sqlite(file: file, detail: error.message ?? "\(error.resultCode)")
        }
    }

    /// Runs `body`, turning SQLite's errors into `StorageError`s that name the file.
    func guarded<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError {
            throw Self.translate(error, file: path)
        }
    }

    /// Writes under way besides commits (compaction's deletes, defragmentation), which a commit
    /// would wait behind.
    let otherWrites = Atomic<Int>(0)

    /// The database file, its write-ahead log and the log's segments, in bytes.
    public func fileBytes() -> Int64 { Self.fileBytes(at: path) }

    /// The database at `path`, its write-ahead log and the root group's log segments, in bytes
    /// (0 for what does not exist).
    public static func fileBytes(at path: String) -> Int64 {
        ["", "-wal"].compactMap { (try? FileManager.default.attributesOfItem(atPath: path + $0))?[.size] as? Int64 }.reduce(0, +)
            + SegmentedLog.bytes(in: logDirectory(path))
    }

    /// Checkpoints made so far: in the background, finished by the writer (the last few frames
    /// of a background one), and made whole by the writer because the WAL had grown too long
    /// (see `Checkpointer`).
    public var checkpoints: (background: Int, finishedByWriter: Int, wholeByWriter: Int) {
        (
            checkpointer.background.load(ordering: .relaxed), checkpointer.finished.load(ordering: .relaxed),
            checkpointer.fallback.load(ordering: .relaxed)
        )
    }

    public func close() throws {
        try guarded {
            try checkpointer.close()
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
            try pool.close()
            log.close()
            snapshots.close()
        }
    }

    public var appliedIndex: Raft.Index {
        get throws {
            try guarded {
                try pool.read { db in
                    try Raft.Index.fetchOne(
                        db.cachedStatement(sql: "SELECT applied_index FROM raft_state WHERE grp = ?"), arguments: [group.rawValue]) ?? 0
                }
            }
        }
    }
}
