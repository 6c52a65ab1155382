import AspenBlob
import ArgumentParser
import Foundation

/// `aspen blob …`: the content-addressed blob store.
struct BlobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blob",
        abstract: "Store and fetch content-addressed blobs (BLAKE3).",
        subcommands: [BlobHashCommand.self])
}

/// `aspen blob hash FILE…`: the BLAKE3 hash of files, as `b3sum` prints it, without a cluster.
struct BlobHashCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash",
        abstract: "Print the BLAKE3 hash of files (or - for standard input), as b3sum does.")

    @Argument(help: "Files to hash; - is standard input.")
    var files: [String] = ["-"]

    func run() async throws {
        for path in files {
            let hash = try BlobFileReader.hash(path: path)
            print("\(hash)  \(path)")
        }
    }
}

/// Reads a file (or standard input) in bounded pieces.
enum BlobFileReader {
    static let readByteCount = 1 << 20

    static func hash(path: String) throws -> String {
        var hasher = BLAKE3()
        if try !forMappedFile(path: path, { hasher.update($0) }) {
            try forEachPiece(path: path) { hasher.update($0) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Calls `body` once with a regular file's whole contents mapped read-only (as b3sum does: no
    /// copy through a buffer); false, without calling it, for standard input, pipes and empty files.
    static func forMappedFile(path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        guard path != "-" else { return false }
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, status.st_size > 0 else {
            return false
        }
        let length = Int(status.st_size)
        guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, descriptor, 0), mapped != MAP_FAILED else {
            return false
        }
        defer { munmap(mapped, length) }
        _ = madvise(mapped, length, MADV_SEQUENTIAL)
        try body(UnsafeRawBufferPointer(start: mapped, count: length))
        return true
    }

    /// Calls `body` with successive pieces of the file, at most `readByteCount` bytes each.
    static func forEachPiece(path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let descriptor = path == "-" ? 0 : open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { if descriptor != 0 { close(descriptor) } }
        var status = stat()
        if fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR {
            throw ValidationError("\(path) is a directory, not a file")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readByteCount, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let count = read(descriptor, buffer.baseAddress, readByteCount)
            if count < 0 {
                if errno == EINTR { continue }
                throw ValidationError("cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }
}
