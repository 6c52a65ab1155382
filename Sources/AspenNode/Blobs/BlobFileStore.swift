import AspenBlob
import AspenCore
import AspenStorage
import Foundation
import Synchronization

/// A node's blob bytes on disk, under `<data>/blobs`: each complete blob is `<hash>.data` and
/// `<hash>.obao` (its outboard) in `complete/`. A blob being received lives in `partial/` until
/// it is whole and verified; it is then fsynced and renamed into place (outboard first, data last,
/// so a data file is the mark of a complete blob) and the directory fsynced. A copy that failed
/// verification is moved to `quarantine/` and never served again. Nothing here goes through Raft.
///
/// A complete file's modification time says when this node last received or re-added it: the
/// sweep that deletes files of blobs the node no longer holds spares any younger than the grace
/// period, and re-adding touches the file under the same lock, so a sweep never deletes a file
/// that an add in flight is about to commit.
///
/// With a quota, the bytes held (data and outboards) plus those reserved by transfers under way
/// stay within it: a transfer reserves its whole size before writing anything.
final class BlobFileStore: Sendable {
    let root: String
    let complete: String
    let partial: String
    let quarantine: String
    /// 0: no budget but the disk's.
    let quotaBytes: UInt64
    /// Orders sealing and re-adding against the sweep's check-then-delete.
    let fileLock = Mutex<Void>(())
    private let usage = Mutex<(held: UInt64, reserved: UInt64)>((0, 0))

    init(directory: String, quotaBytes: UInt64 = 0) throws {
        root = (directory as NSString).appendingPathComponent("blobs")
        complete = (root as NSString).appendingPathComponent("complete")
        partial = (root as NSString).appendingPathComponent("partial")
        quarantine = (root as NSString).appendingPathComponent("quarantine")
        self.quotaBytes = quotaBytes
        try DurableFiles.createDirectory(complete)
        try DurableFiles.createDirectory(partial)
        try DurableFiles.createDirectory(quarantine)
        // Partial files of transfers that a crash interrupted are of no use to anyone now.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: partial)) ?? [] {
            _ = unlink((partial as NSString).appendingPathComponent(name))
        }
        let held = held().reduce(UInt64(0)) { $0 + Self.footprint(size: $1.size) }
        usage.withLock { $0.held = held }
    }

    /// The bytes a blob of `size` takes here: its data and its outboard.
    static func footprint(size: UInt64) -> UInt64 { size + BlobTree(size: size).outboardByteCount }

    /// Bytes held, and reserved by transfers under way.
    var used: (held: UInt64, reserved: UInt64) { usage.withLock { $0 } }

    /// Reserves room for a blob of `size` about to be received, or refuses it naming the quota.
    func reserve(size: UInt64) throws(BlobServiceError) -> UInt64 {
        let bytes = Self.footprint(size: size)
        let quota = quotaBytes
        let refusal: (UInt64, UInt64)? = usage.withLock { usage in
            guard quota == 0 || usage.held + usage.reserved + bytes <= quota else { return (usage.held, usage.reserved) }
            usage.reserved += bytes
            return nil
        }
        if let (held, reserved) = refusal {
            throw .quotaExceeded(
                "quota exceeded: a blob of \(size) bytes needs \(bytes) bytes here; this node holds \(held) and has \(reserved) reserved of its blob-quota (\(quota) bytes)")
        }
        return bytes
    }

    /// A held copy's bytes, gone.
    func release(held bytes: UInt64) {
        usage.withLock { $0.held -= min(bytes, $0.held) }
    }

    func release(reserved bytes: UInt64, keeping: Bool) {
        usage.withLock { usage in
            usage.reserved -= min(bytes, usage.reserved)
            if keeping { usage.held += bytes }
        }
    }

    /// Every complete blob here: its hash, size and when its data file was last written or touched.
    func held() -> [(hash: BlobHash, size: UInt64, modifiedMs: Int64)] {
        var found: [(hash: BlobHash, size: UInt64, modifiedMs: Int64)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: complete)) ?? [] where name.hasSuffix(".data") {
            guard let hash = BlobHash(hex: String(name.dropLast(5))), let status = status(dataPath(hash)) else { continue }
            found.append((hash, UInt64(status.st_size), Self.milliseconds(status.st_mtim)))
        }
        return found.sorted { $0.hash < $1.hash }
    }

    static func milliseconds(_ time: timespec) -> Int64 { Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000 }

    func status(_ path: String) -> stat? {
        var status = stat()
        return stat(path, &status) == 0 ? status : nil
    }

    /// Whether this node holds the blob with `size`; if so its files are touched (as if just
    /// received), so that no sweep deletes them for a grace period.
    func claim(_ hash: BlobHash, size: UInt64) -> Bool {
        fileLock.withLock { _ in
            guard self.size(hash) == size else { return false }
            touch(hash)
            return true
        }
    }

    private func touch(_ hash: BlobHash) {
        _ = utimensat(AT_FDCWD, dataPath(hash), nil, 0)
    }

    /// Deletes the blob's files if they were last written or touched before `cutoffMs`, checking
    /// and deleting under the lock that re-adding takes. Returns whether it deleted them.
    func removeIfUntouched(_ hash: BlobHash, since cutoffMs: Int64) -> Bool {
        fileLock.withLock { _ in
            guard let status = status(dataPath(hash)), Self.milliseconds(status.st_mtim) < cutoffMs else { return false }
            removeLocked(hash, size: UInt64(status.st_size))
            return true
        }
    }

    /// Moves a copy that failed verification out of the way (to `quarantine/`, kept for
    /// inspection), so that it is never served again. With `file` (device and inode of the copy
    /// that failed), only that copy: one a repair has put in its place meanwhile stays.
    func quarantine(_ hash: BlobHash, file: (device: UInt64, inode: UInt64)? = nil) {
        fileLock.withLock { _ in
            guard let status = status(dataPath(hash)) else { return }
            if let file, UInt64(status.st_dev) != file.device || UInt64(status.st_ino) != file.inode { return }
            let stamp = "\(Int64(Date().timeIntervalSince1970 * 1000))"
            let target = (quarantine as NSString).appendingPathComponent("\(hash.hex)-\(stamp)")
            if rename(dataPath(hash), target + ".data") != 0 { _ = unlink(dataPath(hash)) }
            if rename(outboardPath(hash), target + ".obao") != 0 { _ = unlink(outboardPath(hash)) }
            try? DurableFiles.synchronizeDirectory(complete)
            try? DurableFiles.synchronizeDirectory(quarantine)
            usage.withLock { $0.held -= min(Self.footprint(size: UInt64(status.st_size)), $0.held) }
        }
    }

    func dataPath(_ hash: BlobHash) -> String { (complete as NSString).appendingPathComponent(hash.hex + ".data") }
    func outboardPath(_ hash: BlobHash) -> String { (complete as NSString).appendingPathComponent(hash.hex + ".obao") }

    /// The size of the complete blob, or nil when this node does not hold it.
    func size(_ hash: BlobHash) -> UInt64? {
        var status = stat()
        guard stat(dataPath(hash), &status) == 0 else { return nil }
        return UInt64(status.st_size)
    }


    /// A slice as `readSlice` reads it, checked against the hash before it leaves: a copy that
    /// fails is quarantined (`onCorrupt` is told) and the request fails, so no corrupt byte is
    /// ever served.
    func verifiedSlice(_ hash: BlobHash, groups: Range<UInt64>, onCorrupt: (BlobHash) -> Void) throws(BlobServiceError)
        -> (size: UInt64, payload: [UInt8])
    {
        var discard = BlobDiscardingSink()
        return try verifiedSlice(hash, groups: groups, into: &discard, onCorrupt: onCorrupt)
    }

    /// `verifiedSlice`, handing each item to `sink` as it is checked.
    func verifiedSlice(_ hash: BlobHash, groups: Range<UInt64>, into sink: inout some BlobFetchSink, onCorrupt: (BlobHash) -> Void)
        throws(BlobServiceError) -> (size: UInt64, payload: [UInt8])
    {
        let (size, payload, file) = try readSlice(hash, groups: groups)
        var accepted = groups.lowerBound
        do {
            try BlobFetch.verify(payload, hash: hash, size: size, groups: groups, accepted: &accepted, into: &sink)
        } catch {
            quarantine(hash, file: file)
            onCorrupt(hash)
            throw .verificationFailed("this node's copy of blob \(hash) failed verification at group \(accepted) and was quarantined; ask another holder")
        }
        return (size, payload)
    }

    /// The items of a slice, concatenated in cursor order, read from the blob's files, and which
    /// data file (device, inode) they came from.
    func readSlice(_ hash: BlobHash, groups: Range<UInt64>) throws(BlobServiceError)
        -> (size: UInt64, payload: [UInt8], file: (device: UInt64, inode: UInt64))
    {
        let data = Glibc.open(dataPath(hash), O_RDONLY | O_CLOEXEC)
        guard data >= 0 else { throw .notFound("blob \(hash) is not held by this node") }
        defer { _ = Glibc.close(data) }
        var status = stat()
        guard fstat(data, &status) == 0 else { throw .internalError("cannot read blob \(hash): \(String(cString: strerror(errno)))") }
        let size = UInt64(status.st_size)
        let tree = BlobTree(size: size)
        guard var cursor = BlobSliceCursor(tree: tree, groups: groups) else {
            throw .badInput("groups \(groups.lowerBound)..<\(groups.upperBound) reach past the \(tree.groupCount) groups of blob \(hash) (\(size) bytes)")
        }
        let outboard = Glibc.open(outboardPath(hash), O_RDONLY | O_CLOEXEC)
        guard outboard >= 0 || tree.groupCount == 1 else { throw .internalError("blob \(hash) has no outboard here") }
        defer { if outboard >= 0 { _ = Glibc.close(outboard) } }
        var payload: [UInt8] = []
        payload.reserveCapacity(Int(groups.count) * BlobTree.groupByteCount + 64 * 64)
        while let item = cursor.next() {
            switch item {
            case .parent(let slot):
                try Self.readFully(outboard, at: slot * UInt64(BlobTree.pairByteCount), count: BlobTree.pairByteCount, into: &payload, what: "the outboard of \(hash)")
            case .group(let index):
                let range = tree.byteRange(ofGroup: index)
                try Self.readFully(data, at: range.lowerBound, count: Int(range.count), into: &payload, what: "blob \(hash)")
            }
        }
        return (size, payload, (UInt64(status.st_dev), UInt64(status.st_ino)))
    }

    static func readFully(_ descriptor: Int32, at offset: UInt64, count: Int, into buffer: inout [UInt8], what: String) throws(BlobServiceError) {
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: count))
        var done = 0
        while done < count {
            let got = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + start + done, count - done, off_t(offset) + off_t(done)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw .internalError("\(what) is shorter than its size says (at byte \(offset + UInt64(done)))") }
            done += got
        }
    }

    /// Removes a complete blob's files (the data file first: it marks the blob complete).
    private func removeLocked(_ hash: BlobHash, size: UInt64) {
        _ = unlink(dataPath(hash))
        _ = unlink(outboardPath(hash))
        try? DurableFiles.synchronizeDirectory(complete)
        usage.withLock { $0.held -= min(Self.footprint(size: size), $0.held) }
    }

    /// A new partial blob's files, named `name` in `partial/`, with room for `size` bytes
    /// reserved under the quota (refused before anything is written when there is none).
    func beginPartial(name: String, size: UInt64) throws(BlobServiceError) -> PartialBlob {
        let reserved = try reserve(size: size)
        do {
            return try PartialBlob(store: self, name: name, reserved: reserved)
        } catch {
            release(reserved: reserved, keeping: false)
            throw error
        }
    }
}

/// A blob being received: data and outboard written at their offsets, then sealed under the hash.
/// Used by one task at a time (an upload session or a replication).
final class PartialBlob {
    let store: BlobFileStore
    let dataPath: String
    let outboardPath: String
    /// Bytes reserved under the store's quota until sealed or discarded.
    let reserved: UInt64
    private var data: Int32
    private var outboard: Int32
    private(set) var sealed = false

    init(store: BlobFileStore, name: String, reserved: UInt64) throws(BlobServiceError) {
        self.store = store
        self.reserved = reserved
        dataPath = (store.partial as NSString).appendingPathComponent(name + ".data")
        outboardPath = (store.partial as NSString).appendingPathComponent(name + ".obao")
        data = Glibc.open(dataPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        outboard = Glibc.open(outboardPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard data >= 0, outboard >= 0 else {
            let reason = String(cString: strerror(errno))
            if data >= 0 { _ = Glibc.close(data) }
            if outboard >= 0 { _ = Glibc.close(outboard) }
            _ = unlink(dataPath)
            _ = unlink(outboardPath)
            throw .internalError("cannot create a partial blob file: \(reason)")
        }
    }

    deinit {
        if !sealed { discard() }
    }

    func writeData(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(BlobServiceError) {
        try Self.writeFully(data, bytes, at: offset, what: dataPath)
    }

    func writePair(_ pair: UnsafeRawBufferPointer, slot: UInt64) throws(BlobServiceError) {
        try Self.writeFully(outboard, pair, at: slot * UInt64(BlobTree.pairByteCount), what: outboardPath)
    }

    static func writeFully(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, what: String) throws(BlobServiceError) {
        var done = 0
        while done < bytes.count {
            let wrote = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if wrote < 0, errno == EINTR { continue }
            guard wrote > 0 else {
                throw errno == ENOSPC || errno == EDQUOT
                    ? .quotaExceeded("the disk holding this node's blobs is full")
                    : .internalError("cannot write \(what): \(String(cString: strerror(errno)))")
            }
            done += wrote
        }
    }

    /// Makes the blob durable under `hash`: both files fsynced and renamed into place, the
    /// directories fsynced. If the blob is already held, the partial copy is dropped (dedup) and
    /// the held one touched, as if just received.
    func seal(as hash: BlobHash) throws(BlobServiceError) {
        precondition(!sealed, "a partial blob is sealed once")
        // A blob of one chunk group has no parents: no outboard file at all.
        var status = stat()
        let hasOutboard = fstat(outboard, &status) == 0 && status.st_size > 0
        guard fstat(data, &status) == 0 else {
            let reason = String(cString: strerror(errno))
            discard()
            throw .internalError("cannot read a received blob's size: \(reason)")
        }
        let size = UInt64(status.st_size)
        guard fsync(data) == 0, !hasOutboard || fsync(outboard) == 0 else {
            let reason = String(cString: strerror(errno))
            discard()
            throw .internalError("cannot fsync a received blob: \(reason)")
        }
        _ = Glibc.close(data)
        _ = Glibc.close(outboard)
        data = -1
        outboard = -1
        sealed = true
        if !hasOutboard { _ = unlink(outboardPath) }
        let problem: String? = store.fileLock.withLock { _ in
            let existing = store.size(hash)
            if existing == size {
                _ = unlink(dataPath)
                _ = unlink(outboardPath)
                _ = utimensat(AT_FDCWD, store.dataPath(hash), nil, 0)
                store.release(reserved: reserved, keeping: false)
                return nil
            }
            // A copy of another size under this name is wrong (damaged): the verified one replaces it.
            if let existing { _ = unlink(store.outboardPath(hash)); store.release(held: BlobFileStore.footprint(size: existing)) }
            guard !hasOutboard || rename(outboardPath, store.outboardPath(hash)) == 0, rename(dataPath, store.dataPath(hash)) == 0 else {
                let reason = String(cString: strerror(errno))
                _ = unlink(dataPath)
                _ = unlink(outboardPath)
                _ = unlink(store.outboardPath(hash))
                store.release(reserved: reserved, keeping: false)
                return "cannot move blob \(hash) into place: \(reason)"
            }
            store.release(reserved: reserved, keeping: true)
            return nil
        }
        if let problem { throw .internalError(problem) }
        // The renames are durable once the directory is; what is left in partial/ after a crash
        // is removed at start, so that directory needs no sync.
        do {
            try DurableFiles.synchronizeDirectory(store.complete)
        } catch {
            throw .internalError("\(error)")
        }
    }

    /// Removes the partial files.
    func discard() {
        if !sealed { store.release(reserved: reserved, keeping: false) }
        if data >= 0 { _ = Glibc.close(data) }
        if outboard >= 0 { _ = Glibc.close(outboard) }
        data = -1
        outboard = -1
        sealed = true
        _ = unlink(dataPath)
        _ = unlink(outboardPath)
    }
}

/// A blob request's failure, with the code its answer carries.
enum BlobServiceError: Error, Sendable, CustomStringConvertible {
    case notFound(String)
    case badInput(String)
    case tooLarge(String)
    case quotaExceeded(String)
    case notPermitted(String)
    case unavailable(String)
    case verificationFailed(String)
    case internalError(String)

    var code: BlobErrorCode {
        switch self {
        case .notFound: .notFound
        case .badInput: .badInput
        case .tooLarge: .tooLarge
        case .quotaExceeded: .quotaExceeded
        case .notPermitted: .notPermitted
        case .unavailable: .unavailable
        case .verificationFailed: .verificationFailed
        case .internalError: .internalError
        }
    }

    var description: String {
        switch self {
        case .notFound(let m), .badInput(let m), .tooLarge(let m), .quotaExceeded(let m), .notPermitted(let m),
            .unavailable(let m), .verificationFailed(let m), .internalError(let m):
            m
        }
    }

    var response: BlobResponse { .failed(code, description) }
}
