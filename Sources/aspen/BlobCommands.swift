import AspenBlob
import AspenClient
import AspenCore
import ArgumentParser
import Foundation

/// `aspen blob …`: the content-addressed blob store.
struct BlobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blob",
        abstract: "Store and fetch content-addressed blobs (BLAKE3).",
        subcommands: [
            BlobAddCommand.self, BlobGetCommand.self, BlobHasCommand.self, BlobStatCommand.self, BlobListCommand.self,
            BlobTagCommand.self, BlobCollectCommand.self, BlobScrubCommand.self, BlobHashCommand.self,
        ])
}

/// A blob refusal as the CLI's error, with the exit code of its kind.
func cliError(_ error: BlobRequestError) -> CLIError {
    switch error.code {
    case .notFound: .notFound(error.message)
    case .badInput, .tooLarge, .quotaExceeded, .verificationFailed: .badInput(error.message)
    case .notPermitted: .notPermitted(error.message)
    case .unavailable, .internalError: .unavailable(error.message)
    }
}

/// Runs a blob command body, mapping blob refusals to the CLI's errors and exit codes.
func runBlob(_ body: () async throws -> Void) async throws {
    try await runReporting {
        do {
            try await body()
        } catch let error as BlobRequestError {
            throw cliError(error)
        } catch let error as BlobError {
            throw CLIError.badInput(error.description)
        }
    }
}

func parseHash(_ text: String) throws -> BlobHash {
    do {
        return try BlobHash.parse(text)
    } catch {
        throw CLIError.badInput(error.description)
    }
}

func describe(_ stat: BlobStat) -> [String: Any] {
    [
        "hash": stat.hash.hex, "size": stat.size, "added_ms": stat.addedAtMs, "tags": stat.tags,
        "holders": stat.holders.map { ["node": $0.node, "verified_ms": $0.verifiedAtMs] as [String: Any] },
    ]
}

/// `aspen blob add FILE`: streams a file (or standard input) into the cluster.
struct BlobAddCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Store a file (or - for standard input); prints its BLAKE3 hash once enough copies are held.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The file to add; - reads standard input.") var file: String
    @Option(help: "Name the blob with this tag (in the same step as the add), so garbage collection keeps it.") var tag: String?
    @Option(help: "Copies to make (default: the node's blob-replicas); answered once blob-min-replicas of them (a majority by default) are held, the rest follow.")
    var replicas: Int = 0

    func run() async throws {
        try await runBlob {
            let input = try BlobInput(path: file)
            defer { input.close() }
            let stat = try await cluster.client().addBlob(size: input.size, replicas: replicas, tag: tag) { try input.read(into: $0) }
            output(cluster.json, describe(stat), text: stat.hash.hex)
        }
    }
}

/// An input file: a regular file read in place, or standard input (or a pipe) staged in a
/// temporary file first, since an add announces its size before its bytes.
final class BlobInput {
    let descriptor: Int32
    let size: UInt64
    let staged: String?

    init(path: String) throws {
        if path == "-" {
            let staging = NSTemporaryDirectory() + "aspen-blob-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            let out = open(staging, O_RDWR | O_CREAT | O_EXCL, 0o600)
            guard out >= 0 else { throw CLIError.unavailable("cannot stage standard input in \(staging)") }
            unlink(staging)  // gone once closed, whatever happens
            var total: UInt64 = 0
            try BlobFileReader.forEachPiece(path: "-") { piece in
                guard write(out, piece.baseAddress, piece.count) == piece.count else {
                    throw CLIError.unavailable("cannot stage standard input: \(String(cString: strerror(errno)))")
                }
                total += UInt64(piece.count)
            }
            lseek(out, 0, SEEK_SET)
            descriptor = out
            size = total
            staged = staging
            return
        }
        let input = open(path, O_RDONLY)
        guard input >= 0 else { throw CLIError.badInput("cannot open \(path): \(String(cString: strerror(errno)))") }
        var status = stat()
        guard fstat(input, &status) == 0 else {
            Glibc.close(input)
            throw CLIError.badInput("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(input)
            throw CLIError.badInput("\(path) is not a regular file (a directory?); give a file, or - for standard input")
        }
        descriptor = input
        size = UInt64(status.st_size)
        staged = nil
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let got = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            if got >= 0 { return got }
            if errno != EINTR { throw CLIError.unavailable("cannot read the input: \(String(cString: strerror(errno)))") }
        }
    }

    func close() { _ = Glibc.close(descriptor) }
}

/// Writes all of `bytes` to `descriptor` (at `offset`, or where it stands), or throws naming the failure.
func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64? = nil) throws {
    var start = 0
    while start < bytes.count {
        let wrote =
            if let offset {
                pwrite(descriptor, bytes.baseAddress! + start, bytes.count - start, off_t(offset) + off_t(start))
            } else {
                write(descriptor, bytes.baseAddress! + start, bytes.count - start)
            }
        if wrote < 0, errno == EINTR { continue }
        guard wrote > 0 else { throw CLIError.unavailable("cannot write the output: \(String(cString: strerror(errno)))") }
        start += wrote
    }
}

/// Writes verified groups to a file descriptor, trimmed to the byte range asked for.
struct BlobOutputSink: BlobFetchSink {
    let descriptor: Int32
    let bytes: Range<UInt64>
    let tree: BlobTree

    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) throws {}

    mutating func group(index: UInt64, bytes data: UnsafeRawBufferPointer) throws {
        let range = tree.byteRange(ofGroup: index)
        let lower = max(range.lowerBound, bytes.lowerBound)
        let upper = min(range.upperBound, bytes.upperBound)
        guard lower < upper else { return }
        try writeAll(descriptor, UnsafeRawBufferPointer(rebasing: data[Int(lower - range.lowerBound)..<Int(upper - range.lowerBound)]))
    }
}

/// `aspen blob get HASH`: streams a blob out, verified as it arrives.
struct BlobGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Write a blob (or a byte range of it) to a file or standard output, verified as it arrives.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The blob's hash (64 hexadecimal digits).") var hash: String
    @Option(name: [.short, .customLong("output")], help: "Write here instead of standard output.") var output: String?
    @Option(help: "Only bytes FIRST-LAST (inclusive, from 0), as dd would cut them.") var range: String?

    func run() async throws {
        try await runBlob {
            let hash = try parseHash(hash)
            let client = try cluster.client()
            guard case .stat(let stat) = try await client.blobRequest(.stat(hash: hash), tryOthers: true) else {
                throw CLIError.unexpectedAnswer
            }
            var bytes: Range<UInt64> = 0..<stat.size
            if let range {
                let parts = range.split(separator: "-", omittingEmptySubsequences: false)
                guard parts.count == 2, let first = UInt64(parts[0]), let last = UInt64(parts[1]), first <= last else {
                    throw CLIError.badInput("--range is FIRST-LAST in bytes, e.g. 1048576-2097151; got \(range)")
                }
                guard last < stat.size else {
                    throw CLIError.badInput("--range \(range) reaches past the blob's \(stat.size) bytes")
                }
                bytes = first..<(last + 1)
            }
            try await Self.download(hash, stat: stat, bytes: range == nil ? nil : bytes, to: output, client: client)
        }
    }

    /// Writes a blob (or `bytes` of it) to `output` (resumably, when whole) or standard output,
    /// verified as it arrives.
    static func download(_ hash: BlobHash, stat: BlobStat, bytes: Range<UInt64>? = nil, to output: String?, client: AspenClient) async throws {
        let tree = BlobTree(size: stat.size)
        if let output, bytes == nil {
            try await ResumableOutput.fetch(hash, stat: stat, into: output, client: client)
            return
        }
        let descriptor: Int32 = output.map { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) } ?? 1
        guard descriptor >= 0 else { throw CLIError.badInput("cannot write \(output ?? "-"): \(String(cString: strerror(errno)))") }
        defer { if descriptor != 1 { close(descriptor) } }
        var sink = BlobOutputSink(descriptor: descriptor, bytes: bytes ?? 0..<stat.size, tree: tree)
        let groups = bytes.map { tree.groups(covering: $0) } ?? 0..<tree.groupCount
        try await client.fetchBlob(hash, size: stat.size, groups: groups, holders: stat.holders.map(\.node), into: &sink)
    }
}

/// A whole blob fetched into a file, resumably: the bytes go to `FILE.aspen-partial`, and
/// `FILE.aspen-partial.progress` records how many chunk groups of it are verified and on disk
/// (the data is fsynced before the record moves on). A fetch killed halfway and started again
/// fetches only the groups after that; the file appears under its name only when whole.
struct ResumableOutput: BlobFetchSink {
    /// Groups between progress records (4 MiB).
    static let recordEvery: UInt64 = 256

    let descriptor: Int32
    let progressPath: String
    let hash: BlobHash
    let tree: BlobTree
    var verified: UInt64

    static func fetch(_ hash: BlobHash, stat: BlobStat, into output: String, client: AspenClient) async throws {
        let partialPath = output + ".aspen-partial"
        let progressPath = partialPath + ".progress"
        let tree = BlobTree(size: stat.size)
        var resumeAt: UInt64 = 0
        if let text = try? String(contentsOfFile: progressPath, encoding: .utf8) {
            let fields = text.split(whereSeparator: \.isWhitespace)
            if fields.count == 3, fields[0] == hash.hex, UInt64(fields[1]) == stat.size, let groups = UInt64(fields[2]), groups <= tree.groupCount,
                let size = try? FileManager.default.attributesOfItem(atPath: partialPath)[.size] as? UInt64,
                groups == 0 || size >= tree.byteRange(ofGroup: groups - 1).upperBound
            {
                resumeAt = groups
            }
        }
        let descriptor = open(partialPath, O_WRONLY | O_CREAT | (resumeAt == 0 ? O_TRUNC : 0), 0o644)
        guard descriptor >= 0 else { throw CLIError.badInput("cannot write \(partialPath): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        if resumeAt > 0 {
            let have = tree.byteRange(ofGroup: resumeAt - 1).upperBound
            FileHandle.standardError.write(Data("resuming: \(have) of \(stat.size) bytes are already here\n".utf8))
        }
        var sink = ResumableOutput(descriptor: descriptor, progressPath: progressPath, hash: hash, tree: tree, verified: resumeAt)
        try await client.fetchBlob(hash, size: stat.size, groups: resumeAt..<tree.groupCount, holders: stat.holders.map(\.node), into: &sink)
        guard fsync(descriptor) == 0, ftruncate(descriptor, off_t(stat.size)) == 0, rename(partialPath, output) == 0 else {
            throw CLIError.unavailable("cannot finish \(output): \(String(cString: strerror(errno)))")
        }
        unlink(progressPath)
    }

    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}

    mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) throws {
        try writeAll(descriptor, bytes, at: tree.byteRange(ofGroup: index).lowerBound)
        verified = index + 1
        if verified % Self.recordEvery == 0 { try record() }
    }

    /// Makes what is verified durable, then says so (the record never runs ahead of the data).
    func record() throws {
        guard fdatasync(descriptor) == 0 else { throw CLIError.unavailable("cannot sync the output: \(String(cString: strerror(errno)))") }
        let staged = progressPath + ".new"
        try "\(hash.hex) \(tree.size) \(verified)\n".write(toFile: staged, atomically: false, encoding: .utf8)
        guard rename(staged, progressPath) == 0 else { throw CLIError.unavailable("cannot record progress in \(progressPath)") }
    }
}

/// `aspen blob has HASH`: exit 0 if the cluster holds it, 1 if not.
struct BlobHasCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "has", abstract: "Exit 0 if the cluster holds the blob, 1 if not.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The blob's hash.") var hash: String

    func run() async throws {
        try await runBlob {
            let hash = try parseHash(hash)
            let answer = try await cluster.client().blobRequest(.stat(hash: hash))
            try answer.throwIfFailed()
            output(cluster.json, ["hash": hash.hex, "present": true], text: "present")
        }
    }
}

/// `aspen blob stat HASH`: size, holders, tags.
struct BlobStatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stat", abstract: "Show a blob's size, holders and tags.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The blob's hash.") var hash: String

    func run() async throws {
        try await runBlob {
            let hash = try parseHash(hash)
            let answer = try await cluster.client().blobRequest(.stat(hash: hash))
            guard case .stat(let stat) = answer else {
                try answer.throwIfFailed()
                throw CLIError.unexpectedAnswer
            }
            let holders = stat.holders.map { "node \($0.node) (verified \(Date(timeIntervalSince1970: Double($0.verifiedAtMs) / 1000)))" }
            output(cluster.json, describe(stat), text: """
                hash     \(stat.hash.hex)
                size     \(stat.size)
                holders  \(holders.joined(separator: ", "))
                tags     \(stat.tags.joined(separator: ", "))
                """)
        }
    }
}

/// `aspen blob list`: every blob, in hash order, or the tags under a prefix.
struct BlobListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the cluster's blobs, or with --tag the tags under a prefix.")
    @OptionGroup var cluster: ClusterOptions
    @Option(help: "List tags whose names start with this prefix (\"\" for all) instead of blobs.") var tag: String?

    func run() async throws {
        try await runBlob {
            let client = try cluster.client()
            var lines: [String] = []
            var objects: [[String: Any]] = []
            if let prefix = tag {
                var after: String?
                while true {
                    let answer = try await client.blobRequest(.tags(prefix: prefix, after: after, limit: 0))
                    guard case .tags(let entries, let more) = answer else { try answer.throwIfFailed(); throw CLIError.unexpectedAnswer }
                    for entry in entries {
                        lines.append("\(entry.name)  \(entry.hash.hex)")
                        objects.append(["tag": entry.name, "hash": entry.hash.hex])
                    }
                    guard more, let last = entries.last else { break }
                    after = last.name
                }
            } else {
                var after: BlobHash?
                while true {
                    let answer = try await client.blobRequest(.list(after: after, limit: 0))
                    guard case .list(let entries, let more) = answer else { try answer.throwIfFailed(); throw CLIError.unexpectedAnswer }
                    for entry in entries {
                        lines.append("\(entry.hash.hex)  \(entry.size)")
                        objects.append(["hash": entry.hash.hex, "size": entry.size])
                    }
                    guard more, let last = entries.last else { break }
                    after = last.hash
                }
            }
            if cluster.json {
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else if !lines.isEmpty {
                print(lines.joined(separator: "\n"))
            }
        }
    }
}

/// `aspen blob tag set|rm`: names that keep blobs alive.
struct BlobTagCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tag", abstract: "Name a blob with a tag, or remove a tag.", subcommands: [Set.self, Remove.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Point tag NAME at a blob (replacing what it named).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Argument var hash: String

        func run() async throws {
            try await runBlob {
                let hash = try parseHash(hash)
                try await cluster.client().blobRequest(.tagSet(name: name, hash: hash, ttlMs: 0)).throwIfFailed()
                output(cluster.json, ["tag": name, "hash": hash.hex], text: "OK")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove tag NAME (the blob stays until garbage collection).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runBlob {
                try await cluster.client().blobRequest(.tagRemove(name: name)).throwIfFailed()
                output(cluster.json, ["tag": name], text: "OK")
            }
        }
    }
}

/// `aspen blob gc [--dry-run]`: one garbage collection pass, or what it would delete.
struct BlobCollectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete the blobs no tag or key refers to, last added longer ago than the grace period; print each and why.")
    @OptionGroup var cluster: ClusterOptions
    @Flag(help: "Print what the pass would delete, and delete nothing.") var dryRun = false

    func run() async throws {
        try await runBlob {
            let answer = try await cluster.client().blobRequest(.collect(dryRun: dryRun), extraSeconds: 600)
            guard case .collected(let pass) = answer else {
                try answer.throwIfFailed()
                throw CLIError.unexpectedAnswer
            }
            let verb = pass.dryRun ? "would delete" : "deleted"
            var lines = pass.deleted.map { "\(verb) \($0.hash.hex)  \($0.size) bytes  (\($0.reason))" }
            lines += pass.expiredTags.map { "\(pass.dryRun ? "would remove" : "removed") expired tag \($0)" }
            lines += pass.rescued.map { "kept \($0.hex)  (added or tagged while the pass ran)" }
            lines.append(
                "\(pass.deleted.count) \(verb), \(pass.kept) kept" + (pass.dryRun ? "" : ", files removed on members: \(pass.filesRemoved)")
                    + (pass.more ? "; more remain: run again" : ""))
            output(cluster.json, [
                "dry_run": pass.dryRun, "kept": pass.kept, "more": pass.more, "files_removed": pass.filesRemoved,
                "deleted": pass.deleted.map { ["hash": $0.hash.hex, "size": $0.size, "reason": $0.reason] as [String: Any] },
                "expired_tags": pass.expiredTags, "rescued": pass.rescued.map(\.hex),
            ], text: lines.joined(separator: "\n"))
        }
    }
}

/// `aspen blob scrub`: re-verify the blobs of the node it reaches (the first endpoint).
struct BlobScrubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scrub",
        abstract: "Re-verify every blob the node (the first endpoint) holds; quarantine bad copies and repair them from other holders.")
    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        try await runBlob {
            let answer = try await cluster.client().blobRequest(.scrub, extraSeconds: 3600)
            guard case .scrubbed(let scrub) = answer else {
                try answer.throwIfFailed()
                throw CLIError.unexpectedAnswer
            }
            var lines = scrub.corrupt.map { hash in
                "corrupt \(hash.hex): quarantined, " + (scrub.repaired.contains(hash) ? "repaired from another holder" : "NOT repaired (no good copy reachable)")
            }
            lines.append("node \(scrub.node): \(scrub.checked) blobs, \(scrub.bytes) bytes checked; \(scrub.corrupt.count) corrupt, \(scrub.repaired.count) repaired")
            output(cluster.json, [
                "node": scrub.node, "checked": scrub.checked, "bytes": scrub.bytes, "corrupt": scrub.corrupt.map(\.hex),
                "repaired": scrub.repaired.map(\.hex),
            ], text: lines.joined(separator: "\n"))
            if scrub.repaired.count < scrub.corrupt.count {
                throw CLIError.unavailable("\(scrub.corrupt.count - scrub.repaired.count) corrupt copies could not be repaired")
            }
        }
    }
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
        return Hex.encode(hasher.finalize())
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
