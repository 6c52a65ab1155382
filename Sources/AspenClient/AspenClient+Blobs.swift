import AspenBlob
import AspenCore
import AspenTransport

/// A blob request the cluster refused, with its code (not found, too large, not permitted, …).
public struct BlobRequestError: Error, Sendable, CustomStringConvertible {
    public var code: BlobErrorCode
    public var message: String
    public var description: String { message }
}

// The blob store, over `aspen/blobs/1`: uploads stream in bounded frames with a few in flight,
// fetches come in verified slices, so neither side holds a whole blob.
extension AspenClient {
    /// Upload frames in flight at once: enough to keep the pipe full over a round trip.
    static let uploadWindow = 4

    /// Sends one request to the first endpoint that answers it (and, when `tryOthers`, does not say
    /// "not found"). While every endpoint is unavailable (an election after a leader died, say) it
    /// tries again with backoff for up to `unavailableSecondsMax`: every request sent this way is
    /// idempotent (reads, and tag changes that set or remove a name).
    public func blobRequest(_ request: BlobRequest, tryOthers: Bool = false) async throws -> BlobResponse {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(Self.unavailableSecondsMax)
        var backoffMs = 50
        while true {
            var lastError: (any Error)?
            var unavailable: BlobResponse?
            for endpoint in endpoints {
                do {
                    let connection = try await blobConnection(endpoint)
                    defer { Task { await connection.close() } }
                    let response = try await blobCall(connection, request)
                    if case .failed(let code, _) = response {
                        if code == .unavailable {
                            unavailable = response
                            continue
                        }
                        if tryOthers, code == .notFound {
                            lastError = BlobRequestError(code: code, message: response.failureMessage ?? "")
                            continue
                        }
                    }
                    return response
                } catch {
                    lastError = error
                }
            }
            if let lastError, unavailable == nil, lastError is BlobRequestError { throw lastError }
            guard clock.now < deadline else {
                if let unavailable { return unavailable }
                throw lastError ?? BlobRequestError(code: .unavailable, message: "no endpoint answered")
            }
            try await Task.sleep(for: .milliseconds(backoffMs))
            backoffMs = min(backoffMs * 2, 1000)
        }
    }

    /// How long blob requests keep trying while the cluster is unavailable.
    static let unavailableSecondsMax = 20

    /// Adds a blob of `size` bytes, read by `read` into the buffer it is given (returning how many
    /// bytes it put there, 0 at the end). Returns the blob's metadata once `replicas` copies
    /// (0: the cluster's factor) are held and committed.
    public func addBlob(
        size: UInt64, replicas: Int = 0, tag: String? = nil, expected: BlobHash? = nil,
        read: (UnsafeMutableRawBufferPointer) throws -> Int
    ) async throws -> BlobStat {
        var lastError: (any Error)?
        // An upload is not resumable: it moves to another endpoint only if the first cannot start it.
        for endpoint in endpoints {
            let connection: TransportConnection
            let id: UInt64
            do {
                connection = try await blobConnection(endpoint)
                let started = try await blobCall(connection, .uploadBegin(size: size, replicas: replicas, tag: tag, expected: expected))
                guard case .uploadStarted(let upload) = started else {
                    await connection.close()
                    try started.throwIfFailed()
                    throw BlobRequestError(code: .internalError, message: "the node answered an upload with \(started)")
                }
                id = upload
            } catch let error as BlobRequestError where error.code != .unavailable {
                throw error
            } catch {
                lastError = error
                continue
            }
            defer { Task { await connection.close() } }
            let frameBytes = min(options.limits.blobUploadFrameBytesMax, 1 << 20)
            var buffer = [UInt8](repeating: 0, count: frameBytes)
            var offset: UInt64 = 0
            try await withThrowingTaskGroup(of: BlobResponse.self) { group in
                var inFlight = 0
                while true {
                    var filled = 0
                    while filled < frameBytes {
                        let got = try buffer.withUnsafeMutableBytes { try read(UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
                        if got == 0 { break }
                        filled += got
                    }
                    if filled == 0 { break }
                    guard offset + UInt64(filled) <= size else {
                        throw BlobRequestError(code: .badInput, message: "the input grew past the \(size) bytes it had when the add began")
                    }
                    let frame = BlobRequest.uploadData(id: id, offset: offset, bytes: Array(buffer[0..<filled]))
                    offset += UInt64(filled)
                    if inFlight == Self.uploadWindow, let answer = try await group.next() {
                        inFlight -= 1
                        try answer.throwIfFailed()
                    }
                    group.addTask { try await self.blobCall(connection, frame) }
                    inFlight += 1
                }
                for try await answer in group { try answer.throwIfFailed() }
            }
            guard offset == size else {
                throw BlobRequestError(code: .badInput, message: "the input ended after \(offset) of the \(size) bytes it had when the add began")
            }
            // Replication moves the blob again between nodes: allow for it.
            let answer = try await blobCall(connection, .uploadEnd(id: id), extraSeconds: 30 + Double(size) / 10_000_000)
            guard case .stat(let stat) = answer else {
                try answer.throwIfFailed()
                throw BlobRequestError(code: .internalError, message: "the node answered an upload's end with \(answer)")
            }
            return stat
        }
        throw lastError ?? BlobRequestError(code: .unavailable, message: "no endpoint answered")
    }

    /// Fetches `groups` of a blob whose size is known, verifying every item, from the endpoints
    /// that hold it (holders first), moving on from one that fails or lies.
    public func fetchBlob(
        _ hash: BlobHash, size: UInt64, groups: Range<UInt64>, holders: [UInt64], into sink: inout some BlobFetchSink
    ) async throws {
        var missing = groups
        var problems: [String] = []
        let ordered = endpoints.filter { $0.id.map { holders.contains($0.rawValue) } ?? false }
            + endpoints.filter { !($0.id.map { holders.contains($0.rawValue) } ?? false) }
        for endpoint in ordered where !missing.isEmpty {
            do {
                let connection = try await blobConnection(endpoint)
                let result = try await BlobFetch.fetch(
                    hash: hash, size: size, groups: missing, window: options.limits.blobSliceGroupsMax,
                    request: { try await self.blobCall(connection, $0) }, into: &sink)
                await connection.close()
                missing = result.missing
                if let problem = result.problem { problems.append("\(endpoint.host):\(endpoint.port): \(problem)") }
            } catch let error as BlobFetchFailure {
                problems.append("\(endpoint.host):\(endpoint.port): \(error)")
            } catch let error as TransportError {
                problems.append("\(endpoint.host):\(endpoint.port): \(error)")
            }
        }
        guard missing.isEmpty else {
            throw BlobRequestError(
                code: .unavailable,
                message: "could not fetch blob \(hash) (chunk groups \(missing.lowerBound)..<\(missing.upperBound) missing): \(problems.joined(separator: "; "))")
        }
    }

    func blobConnection(_ endpoint: Endpoint) async throws -> TransportConnection {
        try await TransportConnection.connect(
            host: endpoint.host, port: endpoint.port, protocol: AspenProtocol.blobs, tls: tls, expecting: endpoint.key, options: options)
    }

    func blobCall(_ connection: TransportConnection, _ request: BlobRequest, extraSeconds: Double = 0) async throws -> BlobResponse {
        let answer = try await connection.request(BlobWire.encode(request, credential: credential.whole), extraSeconds: extraSeconds)
        return try BlobWire.decodeResponse(answer, limits: options.limits)
    }
}

extension BlobResponse {
    var failureMessage: String? {
        if case .failed(_, let message) = self { return message }
        return nil
    }

    /// Throws the refusal this answer carries, if it is one.
    public func throwIfFailed() throws {
        if case .failed(let code, let message) = self { throw BlobRequestError(code: code, message: message) }
    }
}
