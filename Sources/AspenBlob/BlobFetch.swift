import AspenCore

/// Where a fetch puts what it verified: parent pairs (for a copy that keeps an outboard) and the
/// bytes of each group, in cursor order.
public protocol BlobFetchSink {
    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) throws
    mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) throws
}

/// The client side of slices: asks for a blob's groups a window at a time and checks every item
/// before the sink sees it. Transport-agnostic: `request` sends one `.read` and returns the answer.
/// Memory is one window (`Limits.blobSliceGroupsMax` groups), whatever the blob's size.
public enum BlobFetch {
    /// Slice requests in flight at once: the source reads and checks the next slices while this
    /// side checks the one that arrived.
    public static let depth = 3
    /// Chunk groups a fetch asks for per slice (512 KiB): with `depth` in flight, each held a few
    /// times over in buffers on both sides, a fetch stays within a few MiB.
    public static let sliceGroups: UInt64 = 32

    /// Fetches `groups` of `hash` (size `size`) from one source, `depth` slices in flight, each
    /// checked in order. Returns the groups still missing (empty when all arrived) and, when some
    /// are, why that source stopped: the caller tries another holder from there. Items before a
    /// corrupt one have been given to the sink; nothing after it has. Errors of the sink itself
    /// (a full disk) are thrown.
    public static func fetch(
        hash: BlobHash, size: UInt64, groups: Range<UInt64>, window: UInt64, depth: Int = BlobFetch.depth,
        request: @escaping @Sendable (BlobRequest) async throws -> BlobResponse, into sink: inout some BlobFetchSink
    ) async throws -> (missing: Range<UInt64>, problem: (any Error)?) {
        var next = groups.lowerBound
        var requested = groups.lowerBound
        var inFlight: [(groups: Range<UInt64>, answer: Task<BlobResponse, any Error>)] = []
        defer { for slice in inFlight { slice.answer.cancel() } }
        while next < groups.upperBound {
            // A cancelled fetch stops here; the requests in flight are cancelled on the way out.
            try Task.checkCancellation()
            while inFlight.count < max(1, depth), requested < groups.upperBound {
                let slice = requested..<min(groups.upperBound, requested + max(1, window))
                inFlight.append((slice, Task { try await request(.read(hash: hash, groups: slice)) }))
                requested = slice.upperBound
            }
            let (slice, answer) = inFlight.removeFirst()
            let response: BlobResponse
            do {
                response = try await withTaskCancellationHandler { try await answer.value } onCancel: { answer.cancel() }
            } catch {
                try Task.checkCancellation()
                return (next..<groups.upperBound, error)
            }
            switch response {
            case .slice(let answeredSize, let payload):
                guard answeredSize == size else {
                    return (next..<groups.upperBound,
                            BlobError.verificationFailed("the source says blob \(hash) is \(answeredSize) bytes; it is \(size)"))
                }
                var accepted = next
                do {
                    try verify(payload, hash: hash, size: size, groups: slice, accepted: &accepted, into: &sink)
                } catch let error as BlobError {
                    return (accepted..<groups.upperBound, error)
                }
                next = accepted
            case .failed(let code, let message):
                return (next..<groups.upperBound, BlobFetchFailure(code: code, message: message))
            default:
                return (next..<groups.upperBound, BlobError.malformed("a source answered a slice request with \(response)"))
            }
        }
        return (groups.upperBound..<groups.upperBound, nil)
    }

    /// Checks a slice's payload item by item, moving `accepted` past each group given to the sink.
    /// A corrupt or missing item stops it there with a `BlobError`.
    public static func verify(
        _ payload: [UInt8], hash: BlobHash, size: UInt64, groups: Range<UInt64>, accepted: inout UInt64,
        into sink: inout some BlobFetchSink
    ) throws {
        var verifier = try BlobSliceVerifier(hash: hash, size: size, groups: groups)
        var offset = 0
        try payload.withUnsafeBytes { buffer in
            while let item = verifier.next {
                let count: Int
                switch item {
                case .parent: count = BlobTree.pairByteCount
                case .group(let index): count = Int(verifier.tree.byteRange(ofGroup: index).count)
                }
                guard offset + count <= buffer.count else {
                    throw BlobError.malformed("a slice of blob \(hash) ends \(offset + count - buffer.count) bytes short")
                }
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
                switch item {
                case .parent(let slot):
                    try verifier.verifyParent(bytes)
                    try sink.parent(slot: slot, pair: bytes)
                case .group:
                    let index = try verifier.verifyGroup(bytes)
                    try sink.group(index: index, bytes: bytes)
                    accepted = index + 1
                }
                offset += count
            }
            guard offset == buffer.count else {
                throw BlobError.malformed("a slice of blob \(hash) has \(buffer.count - offset) bytes past its last item")
            }
        }
    }
}

/// A source's own refusal (not found, not permitted, …), as it said it.
public struct BlobFetchFailure: Error, Sendable, CustomStringConvertible {
    public var code: BlobErrorCode
    public var message: String

    public init(code: BlobErrorCode, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A sink that keeps nothing: for checking a slice (a node checks what it is about to serve).
public struct BlobDiscardingSink: BlobFetchSink {
    public init() {}
    public mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
    public mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) {}
}
