import AspenBlob
import AspenCore
import AspenStorage
import Foundation

/// A node's blob bytes on disk, under `<data>/blobs`: each complete blob is `<hash>.data` and
/// `<hash>.obao` (its outboard) in `complete/`. A blob being received lives in `partial/` until
/// it is whole and verified; it is then fsynced and renamed into place (outboard first, data last,
/// so a data file is the mark of a complete blob) and the directory fsynced. Nothing here goes
/// through Raft.
final class BlobFileStore: Sendable {
    let root: String
    let complete: String
    let partial: String

    init(directory: String) throws {
        root = (directory as NSString).appendingPathComponent("blobs")
        complete = (root as NSString).appendingPathComponent("complete")
        partial = (root as NSString).appendingPathComponent("partial")
        try DurableFiles.createDirectory(complete)
        try DurableFiles.createDirectory(partial)
        // Partial files of transfers that a crash interrupted are of no use to anyone now.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: partial)) ?? [] {
            _ = unlink((partial as NSString).appendingPathComponent(name))
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

    func has(_ hash: BlobHash) -> Bool { size(hash) != nil }

    /// The items of a slice, concatenated in cursor order, read from the blob's files.
    func readSlice(_ hash: BlobHash, groups: Range<UInt64>) throws(BlobServiceError) -> (size: UInt64, payload: [UInt8]) {
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
        return (size, payload)
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
    func remove(_ hash: BlobHash) {
        _ = unlink(dataPath(hash))
        _ = unlink(outboardPath(hash))
        try? DurableFiles.synchronizeDirectory(complete)
    }

    /// A new partial blob's files, named `name` in `partial/`.
    func beginPartial(name: String) throws(BlobServiceError) -> PartialBlob {
        try PartialBlob(store: self, name: name)
    }
}

/// A blob being received: data and outboard written at their offsets, then sealed under the hash.
/// Used by one task at a time (an upload session or a replication).
final class PartialBlob {
    let store: BlobFileStore
    let dataPath: String
    let outboardPath: String
    private var data: Int32
    private var outboard: Int32
    private(set) var sealed = false

    init(store: BlobFileStore, name: String) throws(BlobServiceError) {
        self.store = store
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
    /// directories fsynced. If the blob is already held, the partial copy is dropped (dedup).
    func seal(as hash: BlobHash) throws(BlobServiceError) {
        precondition(!sealed, "a partial blob is sealed once")
        guard fsync(data) == 0, fsync(outboard) == 0 else {
            throw .internalError("cannot fsync a received blob: \(String(cString: strerror(errno)))")
        }
        _ = Glibc.close(data)
        _ = Glibc.close(outboard)
        data = -1
        outboard = -1
        sealed = true
        if store.has(hash) {
            _ = unlink(dataPath)
            _ = unlink(outboardPath)
            return
        }
        guard rename(outboardPath, store.outboardPath(hash)) == 0, rename(dataPath, store.dataPath(hash)) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = unlink(dataPath)
            _ = unlink(outboardPath)
            throw .internalError("cannot move blob \(hash) into place: \(reason)")
        }
        do {
            try DurableFiles.synchronizeDirectory(store.complete)
            try DurableFiles.synchronizeDirectory(store.partial)
        } catch {
            throw .internalError("\(error)")
        }
    }

    /// Removes the partial files.
    func discard() {
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
