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

extension JobStore {
    func outputSpace(_ id: UInt64, _ attempt: Int) -> Subspace { space.subspace(["o", .int(Int64(id)), .int(Int64(attempt))]) }

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
            // Conditioned on the record: the attempt is still the current one when the piece lands.
            let outcome = try await store.transaction(
                Transaction(compares: [Compare(key: kv.key, .modRevision(kv.modRevision))], success: [.put(Put(key: key, value: value))]))
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
}
