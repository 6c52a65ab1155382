import AspenCore

/// What a watcher asks for.
public struct WatchRequest: Sendable, Equatable {
    public var bounds: KeyBounds
    /// The first revision to deliver; 0 means changes from now on.
    public var startRevision: Revision
    public var withPrevious: Bool
    /// Progress (keep-alive) messages while idle, every this many milliseconds; 0 for none.
    public var progressIntervalMs: Int
    /// Proof of the cluster cookie, when the cluster has one (set by the client).
    public var proof: Bytes = []
    /// The client's capability credential, whole or by id (see `RPCRequest.credential`).
    public var credential: Bytes = []

    public init(bounds: KeyBounds, startRevision: Revision = 0, withPrevious: Bool = false, progressIntervalMs: Int = 5000) {
        self.bounds = bounds
        self.startRevision = startRevision
        self.withPrevious = withPrevious
        self.progressIntervalMs = progressIntervalMs
    }
}

/// Why a watch stream ended.
public enum WatchEnd: Error, Sendable, Equatable, CustomStringConvertible {
    /// The start revision is no longer in history; the oldest one that can be watched from.
    case compacted(oldestAvailable: Revision)
    /// The watcher did not keep up; resume from the last revision received + 1.
    case lagged
    /// The node is shutting down; resume on another node.
    case shutdown
    /// The node could not serve the watch.
    case failed(String)

    public var description: String {
        switch self {
        case .compacted(let oldest): return "compacted: history before revision \(oldest) is gone; watch from \(oldest) or later"
        case .lagged: return "lagged: the watcher fell too far behind and was cut off; resume from the last revision seen + 1"
        case .shutdown: return "shutdown: the node is stopping; resume on another node"
        case .failed(let reason): return "failed: \(reason)"
        }
    }
}

/// One message of a watch stream.
public enum WatchMessage: Sendable, Equatable {
    /// The watch is registered; changes after `revision` will follow (and earlier ones replayed
    /// first when a start revision was given).
    case created(revision: Revision)
    case events([WatchEvent])
    /// Nothing changed in the watched range up to `revision` (a keep-alive).
    case progress(revision: Revision)
    case ended(WatchEnd)
}

public enum WatchWire {
    public static func encode(_ request: WatchRequest) -> Bytes {
        var writer = ByteWriter()
        writer.writeBytes(request.bounds.start)
        writer.write(request.bounds.end != nil)
        if let end = request.bounds.end { writer.writeBytes(end) }
        writer.writeVarint(signed: request.startRevision)
        writer.write(request.withPrevious)
        writer.writeVarint(UInt64(max(0, request.progressIntervalMs)))
        writer.writeBytes(request.proof)
        // Absent without a credential: the request is then what it was before credentials.
        if !request.credential.isEmpty { writer.writeBytes(request.credential) }
        return writer.bytes
    }

    public static func decodeRequest(_ bytes: Bytes, limits: Limits = .standard) throws(DecodingError) -> WatchRequest {
        var reader = ByteReader(bytes)
        let start = try reader.readBytes(limit: limits.keyBytesMax)
        let end = try reader.readBool() ? try reader.readBytes(limit: limits.keyBytesMax) : nil
        let revision = try reader.readSignedVarint()
        let withPrevious = try reader.readBool()
        let interval = try reader.readCount(limit: 3_600_000)
        let proof = try reader.readBytes(limit: 64)
        let credential = reader.isAtEnd ? [] : try reader.readBytes(limit: limits.credentialBytesMax)
        try reader.expectEnd()
        var request = WatchRequest(
            bounds: KeyBounds(start: start, end: end), startRevision: revision, withPrevious: withPrevious, progressIntervalMs: interval)
        request.proof = proof
        request.credential = credential
        return request
    }

    public static func encode(_ message: WatchMessage) -> Bytes {
        var writer = ByteWriter()
        switch message {
        case .created(let revision):
            writer.write(0)
            writer.writeVarint(signed: revision)
        case .events(let events):
            writer.write(1)
            writer.writeVarint(UInt64(events.count))
            for event in events {
                writer.write(event.kind.rawValue)
                KVWire.write(event.keyValue, into: &writer)
                writer.write(event.previous != nil)
                if let previous = event.previous { KVWire.write(previous, into: &writer) }
            }
        case .progress(let revision):
            writer.write(2)
            writer.writeVarint(signed: revision)
        case .ended(let end):
            writer.write(3)
            switch end {
            case .compacted(let oldest):
                writer.write(0)
                writer.writeVarint(signed: oldest)
            case .lagged: writer.write(1)
            case .shutdown: writer.write(2)
            case .failed(let reason):
                writer.write(3)
                writer.writeString(reason)
            }
        }
        return writer.bytes
    }

    public static func decodeMessage(_ bytes: Bytes, limits: Limits = .standard) throws(DecodingError) -> WatchMessage {
        var reader = ByteReader(bytes)
        let message: WatchMessage
        switch try reader.readByte() {
        case 0: message = .created(revision: try reader.readSignedVarint())
        case 1:
            var events: [WatchEvent] = []
            for _ in 0..<(try reader.readCount(limit: limits.rpcMessageBytesMax)) {
                guard let kind = WatchEvent.Kind(rawValue: try reader.readByte()) else { throw .invalid("watch event kind") }
                let keyValue = try KVWire.readKeyValue(&reader)
                let previous = try reader.readBool() ? try KVWire.readKeyValue(&reader) : nil
                events.append(WatchEvent(kind: kind, keyValue: keyValue, previous: previous))
            }
            message = .events(events)
        case 2: message = .progress(revision: try reader.readSignedVarint())
        case 3:
            switch try reader.readByte() {
            case 0: message = .ended(.compacted(oldestAvailable: try reader.readSignedVarint()))
            case 1: message = .ended(.lagged)
            case 2: message = .ended(.shutdown)
            case 3: message = .ended(.failed(try reader.readString(limit: 4096)))
            case let tag: throw .unknownTag(tag, context: "watch end")
            }
        case let tag: throw .unknownTag(tag, context: "watch message")
        }
        try reader.expectEnd()
        return message
    }
}
