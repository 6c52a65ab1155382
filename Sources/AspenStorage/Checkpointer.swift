import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GRDB
import GRDBSQLite
import Synchronization

/// Copies the write-ahead log into the database file from a connection and a thread of its own,
/// so that commits do not wait while it copies.
///
/// SQLite's automatic checkpoint runs inside the commit that finds the WAL long enough: that
/// commit copies every page the WAL holds and fsyncs the main file before it returns, and the
/// node's writes all wait behind it. Here a passive checkpoint on another connection copies
/// beside the writer (SQLite lets one checkpointer copy committed frames while the writer
/// appends new ones). The WAL can only start over from its beginning once every frame in it is
/// copied, which a checkpoint running beside a busy writer seldom achieves: when the background
/// one has left only a few frames (`frames / 16`), the writer copies those itself, in a short
/// checkpoint with no commit in between, and the next transaction starts the WAL over.
///
/// The writer's commit hook (`sqlite3_wal_hook`) reports how many frames the WAL holds after
/// each commit. Should the WAL still reach four times `frames` (checkpoints that cannot finish,
/// say), the writer checkpoints all of it as SQLite would have, so the WAL stays bounded.
final class Checkpointer: Sendable {
    let frames: Int32
    private let queue = DispatchQueue(label: "aspen.storage.checkpoint")
    private let connection: DatabaseQueue
    private let running = Atomic<Bool>(false)
    /// Where the WAL must reach before the next background checkpoint starts.
    private let nextAt: Atomic<Int32>
    /// Frames the last background checkpoint had copied (0: none since the WAL started over).
    private let copied = Atomic<Int32>(0)
    /// Frames in the WAL after the last commit.
    let walFrames = Atomic<Int32>(0)
    /// Checkpoints run in the background, finished by the writer, and made whole by the writer
    /// because the WAL had grown too long.
    let background = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let fallback = Atomic<Int>(0)

    /// Commits do not wait for the disk, so the WAL's pages reach it in the background, a few at
    /// a time (`fdatasync` on a thread of its own every `writebackFrames`), rather than all at
    /// once in the checkpoint's first step, where they held up the log's own fsyncs behind tens
    /// of megabytes.
    private let writeback = DispatchQueue(label: "aspen.storage.wal-writeback")
    private let walPath: String
    private let writebackRunning = Atomic<Bool>(false)
    private let writtenBackAt = Atomic<Int32>(0)
    static let writebackFrames: Int32 = 128

    init(path: String, frames: Int32) throws {
        self.frames = frames
        walPath = path + "-wal"
        nextAt = Atomic(frames)
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "checkpoint"
        connection = try DatabaseQueue(path: path, configuration: configuration)
    }

    /// Whether the next commit may checkpoint (finish one, or all of a WAL grown too long).
    var writerMayCheckpoint: Bool { walFrames.load(ordering: .relaxed) >= frames }

    /// Called by the writer (one thread at a time) after each commit, with the frames the WAL
    /// now holds.
    func committed(frames count: Int32, writer: OpaquePointer?) {
        walFrames.store(count, ordering: .relaxed)
        writeBack(frames: count)
        guard count >= frames else {
            // Started over.
            nextAt.store(frames, ordering: .relaxed)
            copied.store(0, ordering: .relaxed)
            return
        }
        let busy = running.load(ordering: .acquiring)
        if count >= 4 * frames {
            guard !busy else { return }
            fallback.add(1, ordering: .relaxed)
            sqlite3_wal_checkpoint_v2(writer, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            return
        }
        guard !busy else { return }
        let done = copied.load(ordering: .relaxed)
        if done > 0 && count - done <= frames / 16 {
            finished.add(1, ordering: .relaxed)
            sqlite3_wal_checkpoint_v2(writer, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            copied.store(0, ordering: .relaxed)
            return
        }
        guard count >= nextAt.load(ordering: .relaxed) else { return }
        // Each background checkpoint copies what came since the last; the next waits until a
        // sixteenth more has come, rather than running (and fsyncing the file) per commit.
        nextAt.store(count + frames / 16, ordering: .relaxed)
        running.store(true, ordering: .relaxed)
        background.add(1, ordering: .relaxed)
        queue.async { [self] in
            // One that fails (busy past the timeout) leaves the WAL longer; a later commit tries again.
            let progress = try? connection.writeWithoutTransaction { db -> Int32 in
                var log: Int32 = 0
                var checkpointed: Int32 = 0
                let code = sqlite3_wal_checkpoint_v2(db.sqliteConnection, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &checkpointed)
                return code == SQLITE_OK ? checkpointed : 0
            }
            copied.store(progress ?? 0, ordering: .relaxed)
            running.store(false, ordering: .releasing)
        }
    }

    private func writeBack(frames count: Int32) {
        if count < writtenBackAt.load(ordering: .relaxed) { writtenBackAt.store(0, ordering: .relaxed) }
        guard count - writtenBackAt.load(ordering: .relaxed) >= Self.writebackFrames,
            !writebackRunning.exchange(true, ordering: .acquiring)
        else { return }
        writtenBackAt.store(count, ordering: .relaxed)
        writeback.async { [self] in
            let fd = open(walPath, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                _ = fdatasync(fd)
                _ = Glibc.close(fd)
            }
            writebackRunning.store(false, ordering: .releasing)
        }
    }

    /// Waits for a checkpoint under way, then closes the connection.
    func close() throws {
        writeback.sync {}
        queue.sync {}
        try connection.close()
    }

    /// Installs the hook on the writer's connection. The hook holds the checkpointer unretained:
    /// the store keeps it alive, and closes the writer after it.
    func install(on db: Database) {
        sqlite3_wal_hook(
            db.sqliteConnection,
            { context, connection, _, frames in
                Unmanaged<Checkpointer>.fromOpaque(context!).takeUnretainedValue().committed(frames: frames, writer: connection)
                return SQLITE_OK
            }, Unmanaged.passUnretained(self).toOpaque())
    }
}
