import AspenBlob
import AspenCore
import AspenKV
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
    /// Upload frames in flight at once, and their size: enough to keep the pipe full over a round
    /// trip, while what a transfer holds stays a few MiB (each frame in flight is held twice,
    /// encoded and in the connection's buffer).
    static let uploadWindow = 4
    static let uploadFrameBytes = 512 * 1024

    /// Sends one request to the first endpoint that answers it (and, when `tryOthers`, does not say
    /// "not found"). While every endpoint is unavailable (an election after a leader died, say) it
    /// tries again with backoff for up to `unavailableSecondsMax`: every request sent this way is
    /// idempotent (reads, and tag changes that set or remove a name).
    public func blobRequest(_ request: BlobRequest, tryOthers: Bool = false, extraSeconds: Double = 0) async throws -> BlobResponse {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(Self.unavailableSecondsMax)
        var backoffMs = 50
        while true {
            var lastError: (any Error)?
            var unavailable: BlobResponse?
            for position in endpoints.indices {
                do {
                    let connection = try await blobConnection(position)
                    let response: BlobResponse
                    do {
                        response = try await blobCall(connection, request, extraSeconds: extraSeconds)
                    } catch let error as TransportError {
                        await blobConnections.forget(position, ifItIs: connection)
                        throw error
                    }
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
    /// (0: the cluster's factor) are held and committed, with `tag` naming it (for `tagTtlMs`;
    /// 0: until removed).
    public func addBlob(
        size: UInt64, replicas: Int = 0, tag: String? = nil, tagTtlMs: UInt64 = 0, expected: BlobHash? = nil,
        read: (UnsafeMutableRawBufferPointer) throws -> Int
    ) async throws -> BlobStat {
        var lastError: (any Error)?
        // An upload is not resumable: it moves to another endpoint only if the first cannot start it.
        for position in endpoints.indices {
            var opened: TransportConnection?
            let connection: TransportConnection
            let id: UInt64
            do {
                connection = try await blobConnection(position)
                opened = connection
                let started = try await blobCall(connection, .uploadBegin(size: size, replicas: replicas, tag: tag, tagTtlMs: tagTtlMs, expected: expected))
                guard case .uploadStarted(let upload) = started else {
                    try started.throwIfFailed()
                    throw BlobRequestError(code: .internalError, message: "the node answered an upload with \(started)")
                }
                id = upload
            } catch let error as BlobRequestError where error.code != .unavailable {
                throw error
            } catch {
                if error is TransportError, let opened { await blobConnections.forget(position, ifItIs: opened) }
                lastError = error
                continue
            }
            let frameBytes = min(options.limits.blobUploadFrameBytesMax, Self.uploadFrameBytes)
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
                    let frame = buffer.withUnsafeBytes {
                        BlobWire.encodeUploadData(
                            id: id, offset: offset, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<filled]), credential: credential.whole)
                    }
                    offset += UInt64(filled)
                    if inFlight == Self.uploadWindow, let answer = try await group.next() {
                        inFlight -= 1
                        try answer.throwIfFailed()
                    }
                    group.addTask {
                        try BlobWire.decodeResponse(try await connection.request(frame), limits: self.options.limits)
                    }
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
        func holds(_ position: Int) -> Bool { endpoints[position].id.map { holders.contains($0.rawValue) } ?? false }
        let ordered = endpoints.indices.filter(holds) + endpoints.indices.filter { !holds($0) }
        for position in ordered where !missing.isEmpty {
            let endpoint = endpoints[position]
            var opened: TransportConnection?
            do {
                let connection = try await blobConnection(position)
                opened = connection
                let result = try await BlobFetch.fetch(
                    hash: hash, size: size, groups: missing, window: min(BlobFetch.sliceGroups, options.limits.blobSliceGroupsMax),
                    request: { try await self.blobCall(connection, $0) }, into: &sink)
                if result.problem is TransportError { await blobConnections.forget(position, ifItIs: connection) }
                missing = result.missing
                if let problem = result.problem { problems.append("\(endpoint.host):\(endpoint.port): \(problem)") }
            } catch let error as BlobFetchFailure {
                problems.append("\(endpoint.host):\(endpoint.port): \(error)")
            } catch let error as TransportError {
                if let opened { await blobConnections.forget(position, ifItIs: opened) }
                problems.append("\(endpoint.host):\(endpoint.port): \(error)")
            }
        }
        guard missing.isEmpty else {
            throw BlobRequestError(
                code: .unavailable,
                message: "could not fetch blob \(hash) (chunk groups \(missing.lowerBound)..<\(missing.upperBound) missing): \(problems.joined(separator: "; "))")
        }
    }

    /// The shared blob connection to endpoint `position`.
    func blobConnection(_ position: Int) async throws -> TransportConnection {
        try await blobConnections.connection(position) { [endpoints, tls, options] in
            let endpoint = endpoints[position]
            return try await TransportConnection.connect(
                host: endpoint.host, port: endpoint.port, protocol: AspenProtocol.blobs, tls: tls, expecting: endpoint.key, options: options)
        }
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

// Values above the key-value limit: kept in the blob store, the key holding a `BlobReference`.
extension AspenClient {
    /// How long the temporary tag that protects an offloaded value's blob lasts, should the
    /// client die between adding the blob and writing the key (then the blob is collected).
    static let offloadTagTtlMs: UInt64 = 3_600_000

    /// Sets `key` to a value of `size` bytes read by `read`. Up to `Limits.valueBytesMax` it is an
    /// ordinary put; above it the value is added to the blob store under a temporary tag, the key
    /// is set to a reference to it, and the tag removed: at every moment the tag or the key
    /// protects the blob from garbage collection.
    public func put(
        _ key: Bytes, size: UInt64, lease: LeaseID = 0, read: (UnsafeMutableRawBufferPointer) throws -> Int
    ) async throws -> PutResult {
        let value: Bytes
        var temporaryTag: String?
        if size <= UInt64(options.limits.valueBytesMax) {
            var bytes = [UInt8](repeating: 0, count: Int(size))
            var filled = 0
            while filled < bytes.count {
                let got = try bytes.withUnsafeMutableBytes { try read(UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
                guard got > 0 else { break }
                filled += got
            }
            guard filled == bytes.count else {
                throw BlobRequestError(code: .badInput, message: "the input ended after \(filled) of the \(size) bytes it had when the put began")
            }
            value = bytes
        } else {
            let tag = "aspen/kv-offload/" + Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
            let stat = try await addBlob(size: size, tag: tag, tagTtlMs: Self.offloadTagTtlMs, read: read)
            value = BlobReference(hash: stat.hash, size: stat.size).encoded
            temporaryTag = tag
        }
        guard case .put(let result) = try await write(.put(Put(key: key, value: value, lease: lease))) else {
            throw ClientError.malformedResponse("a put was answered with another kind of result")
        }
        if let temporaryTag {
            // The key protects the blob now; should this fail, the tag expires by itself.
            _ = try? await blobRequest(.tagRemove(name: temporaryTag))
        }
        return result
    }

    /// Reads `key` and hands its value to `write` piece by piece: an ordinary value in one piece,
    /// an offloaded one streamed from the blob store and verified as it arrives. Nil when the key
    /// does not exist (then `write` is not called).
    public func get(
        _ key: Bytes, revision: Revision = 0, consistency: ReadConsistency = .linearizable,
        streaming write: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> KeyValue? {
        guard let kv = try await get(key, revision: revision, consistency: consistency) else { return nil }
        guard let reference = BlobReference(decoding: kv.value) else {
            try kv.value.withUnsafeBytes(write)
            return kv
        }
        let answer = try await blobRequest(.stat(hash: reference.hash), tryOthers: true)
        guard case .stat(let stat) = answer else {
            try answer.throwIfFailed()
            throw ClientError.malformedResponse("a blob stat was answered with \(answer)")
        }
        var sink = ClosureSink(write: write)
        let tree = BlobTree(size: stat.size)
        try await fetchBlob(reference.hash, size: stat.size, groups: 0..<tree.groupCount, holders: stat.holders.map(\.node), into: &sink)
        return kv
    }
}

/// Hands each verified group to a closure.
struct ClosureSink: BlobFetchSink {
    let write: (UnsafeRawBufferPointer) throws -> Void
    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
    mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) throws { try write(bytes) }
}
