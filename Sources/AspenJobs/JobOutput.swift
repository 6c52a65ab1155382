import AspenCore
import AspenKV
import AspenLayer

/// A piece of an attempt's output, as its worker read it.
public struct JobOutputChunk: Sendable, Equatable {
    /// Where it starts in the attempt's output (both streams together, in the order read).
    public var offset: Int64
    /// Standard error (else standard output).
    public var isError: Bool
    public var bytes: [UInt8]

    public init(offset: Int64, isError: Bool, bytes: [UInt8]) {
        self.offset = offset
        self.isError = isError
        self.bytes = bytes
    }
}

/// Where an attempt's output goes once the attempt has ended: the blob store (in a node), so
/// that a job's logs do not stay in the replicated key-value store.
public struct JobOutputArchive: Sendable {
    /// Stores the bytes as a blob kept under the tag `name`; returns its hash.
    public var keep: @Sendable (_ bytes: [UInt8], _ name: String) async throws -> [UInt8]
    /// A blob's bytes.
    public var load: @Sendable (_ hash: [UInt8]) async throws -> [UInt8]
    /// Removes the tag `name` (its blob goes at the next collection).
    public var forget: @Sendable (_ name: String) async throws -> Void

    public init(
        keep: @escaping @Sendable (_ bytes: [UInt8], _ name: String) async throws -> [UInt8],
        load: @escaping @Sendable (_ hash: [UInt8]) async throws -> [UInt8],
        forget: @escaping @Sendable (_ name: String) async throws -> Void
    ) {
        self.keep = keep
        self.load = load
        self.forget = forget
    }

    /// The blob an attempt's pieces become: each its offset, stream and bytes.
    public static func encode(_ chunks: [JobOutputChunk]) -> [UInt8] {
        var writer = ByteWriter(capacity: chunks.reduce(16) { $0 + $1.bytes.count + 16 })
        writer.writeRaw(magic)
        for chunk in chunks {
            writer.writeVarint(UInt64(chunk.offset))
            writer.write(chunk.isError)
            writer.writeBytes(chunk.bytes)
        }
        return writer.bytes
    }

    /// The pieces back; refused past `limits.jobOutputBytesMax` of output, a piece past
    /// `jobOutputChunkBytesMax`, or pieces out of order.
    public static func decode(_ bytes: [UInt8], limits: Limits) throws(DecodingError) -> [JobOutputChunk] {
        var reader = ByteReader(bytes)
        guard try reader.readRaw(magic.count) == magic else { throw .invalid("not an archive of job output") }
        var chunks: [JobOutputChunk] = []
        var next: Int64 = 0
        while !reader.isAtEnd {
            let offset = try reader.readVarint()
            guard offset >= UInt64(next), offset <= UInt64(limits.jobOutputBytesMax) else {
                throw .invalid("a piece of job output at \(offset), before \(next) or past jobOutputBytesMax (\(limits.jobOutputBytesMax))")
            }
            let isError = try reader.readBool()
            let piece = try reader.readBytes(limit: limits.jobOutputChunkBytesMax)
            next = Int64(offset) + Int64(piece.count)
            guard next <= Int64(limits.jobOutputBytesMax) else {
                throw .invalid("job output past jobOutputBytesMax (\(limits.jobOutputBytesMax))")
            }
            chunks.append(JobOutputChunk(offset: Int64(offset), isError: isError, bytes: piece))
        }
        return chunks
    }

    static let magic: [UInt8] = Array("aspen-job-output-1\n".utf8)
}

extension JobStore {
    func outputSpace(_ id: UInt64, _ attempt: Int) -> Subspace { space.subspace(["o", .int(Int64(id)), .int(Int64(attempt))]) }
    /// The hash of an attempt's output in the blob store, once it is there.
    func archivedKey(_ id: UInt64, _ attempt: Int) -> Bytes { space.pack(["oa", .int(Int64(id)), .int(Int64(attempt))]) }
    /// Attempts with output in the store, to be moved to the blob store once they end.
    var unarchived: Subspace { space.subspace(["om"]) }

    /// Stores a piece of the running attempt's output: refused for any token but the current
    /// attempt's, so a worker the cluster gave up on cannot write into a job's logs. Replaying
    /// a piece (the same offset) is harmless.
    public func appendOutput(_ id: UInt64, type: String? = nil, token: UInt64, chunk: JobOutputChunk) async throws {
        guard chunk.bytes.count <= limits.jobOutputChunkBytesMax else {
            throw JobError.invalid("an output chunk of \(chunk.bytes.count) bytes exceeds jobOutputChunkBytesMax (\(limits.jobOutputChunkBytesMax))")
        }
        guard chunk.offset >= 0, chunk.offset + Int64(chunk.bytes.count) <= Int64(limits.jobOutputBytesMax) else {
            throw JobError.invalid("output past jobOutputBytesMax (\(limits.jobOutputBytesMax) bytes) for one attempt")
        }
        for round in 0..<Self.attemptsMax {
            guard let (record, kv) = try await load(id, consistency: round == 0 ? .stale : .linearizable) else { throw JobError.notFound(id) }
            // A refusal is given only on a fresh read: this node's applied state may be behind.
            guard record.spec.type == type ?? record.spec.type, record.state == .running, let attempt = record.attempt, attempt.token == token else {
                if round == 0 { continue }
                try check(record, type: type)
                throw stale(record, token)
            }
            let key = outputSpace(id, attempt.number).pack([.int(chunk.offset)])
            let value = [chunk.isError ? 1 : 0] + chunk.bytes
            var operations: [TransactionOperation] = [.put(Put(key: key, value: value))]
            // With every piece (a worker drops the ones it cannot deliver: the first may be one).
            operations.append(.put(Put(key: unarchived.pack([.int(Int64(id)), .int(Int64(attempt.number))]), value: [])))
            // Conditioned on the record: the attempt is still the current one when the piece lands.
            let outcome = try await store.transaction(
                Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: operations))
            if outcome.succeeded { return }
        }
        throw JobError.contention(attempts: Self.attemptsMax)
    }

    /// An attempt's output from `offset` on (nil attempt: the latest), at most `bytesMax` of it.
    public func output(_ id: UInt64, attempt: Int?, from offset: Int64, bytesMax: Int) async throws -> (attempt: Int, chunks: [JobOutputChunk]) {
        let record = try await job(id)
        let number = attempt ?? record.attempts
        guard number >= 1, number <= record.attempts else {
            if record.attempts == 0, attempt == nil { return (0, []) }
            throw JobError.invalid("job \(id) has \(record.attempts) attempts, not \(number)")
        }
        if let archived = try await store.get(archivedKey(id, number)) {
            guard let outputArchive else { throw JobError.invalid("job \(id)'s output is in the blob store, which this store cannot read") }
            let all: [JobOutputChunk]
            do {
                all = try JobOutputArchive.decode(try await outputArchive.load(archived.value), limits: limits)
            } catch let error as DecodingError {
                throw JobError.invalid("job \(id)'s archived output: \(error)")
            }
            var chunks: [JobOutputChunk] = []
            var bytes = 0
            for chunk in all where chunk.offset >= max(0, offset) && bytes < bytesMax {
                chunks.append(chunk)
                bytes += chunk.bytes.count + 1
            }
            return (number, chunks)
        }
        let pieces = outputSpace(id, number)
        var chunks: [JobOutputChunk] = []
        var bytes = 0
        let page = try await store.scan(.range(start: pieces.pack([.int(max(0, offset))]), end: pieces.range.end), limit: 256)
        for kv in page.kvs {
            guard case .int(let start)? = try pieces.unpack(kv.key).elements.first, let first = kv.value.first else { continue }
            chunks.append(JobOutputChunk(offset: start, isError: first == 1, bytes: Array(kv.value.dropFirst())))
            bytes += kv.value.count
            if bytes >= bytesMax { break }
        }
        return (number, chunks)
    }

    /// Moves the output of attempts that have ended to the blob store (up to `limit` of them,
    /// looking at no more than `scanMax` waiting attempts): the pieces become one blob, tagged
    /// until the job is purged, and go in the write that records the blob's hash, conditioned on
    /// the attempt still waiting for it. The pieces are read at one revision at which the
    /// attempt had ended and was still waiting, so whoever moves them makes the same blob (the
    /// same hash, the same tag): two leaders doing this leave one record and one blob. A hook's
    /// jobs keep their output in the store (their blobs' events could feed the hook again).
    /// Returns how many attempts moved, and what went wrong with others (they are tried again).
    public func archiveOutputs(limit: Int = 16, scanMax: Int = 1000) async throws -> (moved: Int, problems: [String]) {
        guard let outputArchive else { return (0, []) }
        var moved = 0
        var problems: [String] = []
        var start = unarchived.range.start
        var scanned = 0
        while moved < limit, scanned < scanMax {
            let page = try await store.scan(.range(start: start, end: unarchived.range.end), limit: 64, keysOnly: true)
            scanned += page.kvs.count
            for marker in page.kvs where moved < limit {
                do {
                    if try await archive(marker.key, outputArchive) { moved += 1 }
                } catch {
                    problems.append("\(error)")
                }
            }
            guard let last = page.kvs.last, page.more else { break }
            start = last.key + [0]
        }
        return (moved, problems)
    }

    /// Moves one waiting attempt's output if it has ended; whether it moved.
    func archive(_ marker: Bytes, _ outputArchive: JobOutputArchive) async throws -> Bool {
        let elements = try unarchived.unpack(marker).elements
        guard elements.count == 2, case .int(let id) = elements[0], case .int(let number) = elements[1] else {
            _ = try await store.delete(marker)
            return false
        }
        let pieces = outputSpace(UInt64(id), Int(number))
        let clear: [TransactionOperation] = [.delete(Delete(.key(marker))), .delete(Delete(.range(start: pieces.range.start, end: pieces.range.end)))]
        let record = try await load(UInt64(id))?.record
        if let record, record.state == .running, record.attempt?.number == Int(number) { return false }
        guard let record, try await store.get(archivedKey(UInt64(id), Int(number))) == nil else {
            // Purged with its job, or moved already (by a leader whose write then left this behind).
            _ = try await store.transaction(Transaction(compares: [], success: clear))
            return false
        }
        if record.origin.hasPrefix("hook:") {
            _ = try await store.delete(marker)
            return false
        }
        // Read after the attempt was seen ended: no piece comes after this revision, and the
        // marker says no move had committed before it.
        var page = try await store.scan(.range(start: pieces.range.start, end: pieces.range.end), limit: 256)
        guard try await store.get(marker, revision: page.revision) != nil else { return false }
        var chunks: [JobOutputChunk] = []
        while true {
            for kv in page.kvs {
                guard case .int(let start)? = try pieces.unpack(kv.key).elements.first, let first = kv.value.first else { continue }
                chunks.append(JobOutputChunk(offset: start, isError: first == 1, bytes: Array(kv.value.dropFirst())))
            }
            guard let continuation = page.continuation else { break }
            page = try await store.scan(.range(start: pieces.range.start, end: pieces.range.end), limit: 256, continuation: continuation)
        }
        let hash = try await outputArchive.keep(JobOutputArchive.encode(chunks), Self.outputTag(UInt64(id), Int(number)))
        let outcome = try await store.transaction(
            Transaction(
                compares: [Compare(key: marker, .version(0), .greater)],
                success: clear + [.put(Put(key: archivedKey(UInt64(id), Int(number)), value: hash))]))
        return outcome.succeeded
    }

    /// The tag that keeps an attempt's output in the blob store until its job is purged.
    static func outputTag(_ id: UInt64, _ attempt: Int) -> String { "aspen/job-output/\(id)/\(attempt)" }

    /// Lets go of the blobs that hold a job's output (before the job is purged).
    func forgetArchivedOutput(_ id: UInt64) async throws {
        guard let outputArchive else { return }
        let archived = space.subspace(["oa", .int(Int64(id))])
        for kv in try await store.scan(.range(start: archived.range.start, end: archived.range.end), limit: 1000, keysOnly: true).kvs {
            guard case .int(let number)? = try archived.unpack(kv.key).elements.first else { continue }
            try await outputArchive.forget(Self.outputTag(id, Int(number)))
        }
    }
}
