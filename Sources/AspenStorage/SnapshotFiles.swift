import AspenCore
import AspenKV
import AspenRaft
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A store's snapshot images on disk, in a directory of their own (0700, files 0600): the image
/// a leader prepared for Raft to stream (`image-<index>.akv3`, written as `image.tmp` and
/// renamed whole), and the image a follower is receiving (`staging.akv3`). Neither outlives
/// the process that made it: opening the store deletes what a previous run left, and Raft
/// asks again for what it needs. Files are read and written with `pread`/`pwrite` on a
/// descriptor kept open, a bounded buffer at a time.
final class SnapshotFiles: Sendable {
    let directory: String

    private struct Prepared: Sendable {
        var index: Raft.Index
        var bytes: Int
        var path: String
        var descriptor: Int32
    }

    private struct Staging: Sendable {
        var image: StagedImage
        var descriptor: Int32
    }

    private let prepared = Mutex<Prepared?>(nil)
    private let staging = Mutex<Staging?>(nil)
    /// Held while an image is written: one at a time, each to the same temporary file.
    private let preparing = Mutex(())

    var stagingPath: String { directory + "/staging.akv3" }
    private var temporaryPath: String { directory + "/image.tmp" }

    /// Creates the directory if needed and empties it.
    init(directory: String) throws {
        self.directory = directory
        try DurableFiles.createDirectory(directory)
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw StorageError.io(file: directory, detail: "cannot list the snapshot directory: \(error.localizedDescription)")
        }
        for name in names { try Self.remove(directory + "/" + name) }
        if !names.isEmpty { try DurableFiles.synchronizeDirectory(directory) }
    }

    deinit { close() }

    /// Closes the files and deletes them.
    func close() {
        prepared.withLock { prepared in
            if let image = prepared.take() {
                _ = Glibc.close(image.descriptor)
                try? Self.remove(image.path)
            }
        }
        discardStaging()
    }

    // MARK: Leader: the prepared image

    /// Writes a new image with `write` (which returns the applied index it reflects), renames
    /// it to its final name, and serves it from then on instead of the previous one. No fsync:
    /// an image never outlives its process (the next open deletes it).
    func prepare(_ write: (inout FileSink) throws -> Raft.Index) throws -> (index: Raft.Index, bytes: Int) {
        try preparing.withLock { _ in
            let temporary = temporaryPath
            var sink = FileSink(path: temporary, descriptor: try Self.open(temporary, create: true))
            let index: Raft.Index
            do {
                index = try write(&sink)
                let path = directory + "/image-\(index).akv3"
                guard rename(temporary, path) == 0 else { throw DurableFiles.failure(temporary, "cannot rename to \(path)") }
                serve(Prepared(index: index, bytes: sink.offset, path: path, descriptor: sink.descriptor))
            } catch {
                _ = Glibc.close(sink.descriptor)
                try? Self.remove(temporary)
                throw error
            }
            return (index, sink.offset)
        }
    }

    /// Serves `image` from now on; the previous image's file goes (unless `image` replaced it
    /// under the same name).
    private func serve(_ image: Prepared) {
        let previous = prepared.withLock { prepared in
            defer { prepared = image }
            return prepared
        }
        guard let previous else { return }
        _ = Glibc.close(previous.descriptor)
        if previous.path != image.path { try? Self.remove(previous.path) }
    }

    /// Up to `length` bytes of the prepared image at `index` from `offset`; nil if the image
    /// prepared last is another one.
    func bytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes? {
        guard offset >= 0, length >= 0 else {
            throw StorageError.invalidBatch("cannot read \(length) bytes of a snapshot image at byte \(offset)")
        }
        return try prepared.withLock { prepared -> Bytes? in
            guard let image = prepared, image.index == index else { return nil }
            let count = max(0, min(length, image.bytes - offset))
            return try Self.read(count, at: offset, from: image.descriptor, path: image.path)
        }
    }

    // MARK: Follower: the staged image

    /// Stages `chunks` in order, after checking that every one of them fits and that, if
    /// `installing` is set, they complete its image: a refused batch stages nothing.
    func stage(_ chunks: [Raft.SnapshotChunk], installing: Raft.SnapshotMetadata?) throws {
        guard !chunks.isEmpty || installing != nil else { return }
        try staging.withLock { staging in
            let after = try StagedImage.after(chunks, from: staging?.image)
            if let installing { try StagedImage.requireComplete(after, for: installing) }
            for chunk in chunks {
                if chunk.offset == 0 {
                    if let old = staging.take() { _ = Glibc.close(old.descriptor) }
                    let descriptor = try Self.open(stagingPath, create: true)
                    staging = Staging(
                        image: StagedImage(metadata: chunk.metadata, totalBytes: chunk.totalBytes, stagedBytes: 0), descriptor: descriptor)
                }
                guard var current = staging else { preconditionFailure("a checked chunk continues no staging") }
                try Self.write(chunk.data, at: chunk.offset, to: current.descriptor, path: stagingPath)
                current.image.stagedBytes += chunk.data.count
                staging = current
            }
        }
    }

    /// Runs `body` with a source over the staged image of `metadata`, which must be whole.
    func withStagedImage<T>(_ metadata: Raft.SnapshotMetadata, _ body: (FileSource) throws -> T) throws -> T {
        try staging.withLock { staging in
            try StagedImage.requireComplete(staging?.image, for: metadata)
            guard let staging else { preconditionFailure("a complete staging is missing") }
            return try body(FileSource(path: stagingPath, descriptor: staging.descriptor, size: staging.image.totalBytes))
        }
    }

    func discardStaging() {
        staging.withLock { staging in
            guard let old = staging.take() else { return }
            _ = Glibc.close(old.descriptor)
            try? Self.remove(stagingPath)
        }
    }

    // MARK: Files

    /// Appends an image to a file, as the writer hands it frames.
    struct FileSink: KVSnapshotImageSink {
        let path: String
        let descriptor: Int32
        private(set) var offset = 0

        init(path: String, descriptor: Int32) {
            self.path = path
            self.descriptor = descriptor
        }

        mutating func write(_ bytes: Bytes) throws {
            try SnapshotFiles.write(bytes, at: offset, to: descriptor, path: path)
            offset += bytes.count
        }
    }

    /// Reads a staged image from its first byte, as the reader asks for frames.
    struct FileSource: KVSnapshotImageSource {
        let path: String
        let descriptor: Int32
        let size: Int
        private(set) var offset = 0

        init(path: String, descriptor: Int32, size: Int) {
            self.path = path
            self.descriptor = descriptor
            self.size = size
        }

        mutating func read(_ count: Int) throws -> Bytes {
            let bytes = try SnapshotFiles.read(max(0, min(count, size - offset)), at: offset, from: descriptor, path: path)
            offset += bytes.count
            return bytes
        }
    }

    static func open(_ path: String, create: Bool) throws -> Int32 {
        let flags = create ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDONLY | O_CLOEXEC
        let descriptor = Glibc.open(path, flags, 0o600)
        guard descriptor >= 0 else { throw DurableFiles.failure(path, create ? "cannot create" : "cannot open") }
        return descriptor
    }

    static func write(_ bytes: Bytes, at offset: Int, to descriptor: Int32, path: String) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let written = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { throw DurableFiles.failure(path, "write failed") }
                done += written
            }
        }
    }

    /// Exactly `count` bytes at `offset`; the file ending before them is damage.
    static func read(_ count: Int, at offset: Int, from descriptor: Int32, path: String) throws -> Bytes {
        guard count > 0 else { return [] }
        return try Bytes(unsafeUninitializedCapacity: count) { buffer, initialized in
            while initialized < count {
                let got = pread(descriptor, buffer.baseAddress! + initialized, count - initialized, off_t(offset + initialized))
                if got < 0 && errno == EINTR { continue }
                guard got >= 0 else { throw DurableFiles.failure(path, "read failed") }
                guard got > 0 else {
                    throw StorageError.io(file: path, detail: "ends at byte \(offset + initialized), before the \(offset + count) written")
                }
                initialized += got
            }
        }
    }

    static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw DurableFiles.failure(path, "cannot delete") }
    }
}
