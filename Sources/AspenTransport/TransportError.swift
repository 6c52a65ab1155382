import AspenCore

/// Why a connection, a frame or an identity was refused. Descriptions are safe to log and show.
public enum TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    case keyFileTooOpen(path: String, mode: UInt32)
    case invalidKeyFile(path: String, reason: String)
    case frameTooLarge(length: Int, limit: Int)
    case unknownProtocol(String?)
    case unauthorizedPeer(NodeKey, protocol: String)
    case unexpectedPeer(expected: NodeKey, actual: NodeKey?)
    case notEd25519Certificate
    case connectionClosed
    case timedOut(operation: String, seconds: Double)
    /// A bound on connections was reached; `name` is the limit's name in `Limits`.
    case tooManyConnections(limit: Int, name: String)
    case invalidAddress(String)

    public var description: String {
        switch self {
        case .keyFileTooOpen(let path, let mode):
            return "\(path) is readable by others (mode \(String(mode, radix: 8))); chmod 600 it before starting"
        case .invalidKeyFile(let path, let reason): return "invalid node key file \(path): \(reason)"
        case .frameTooLarge(let length, let limit): return "frame of \(length) bytes exceeds rpcMessageBytesMax (\(limit))"
        case .unknownProtocol(let name): return "unknown application protocol \(name.map { "'\($0)'" } ?? "(none negotiated)")"
        case .unauthorizedPeer(let key, let name): return "peer \(key) is not allowed on \(name)"
        case .unexpectedPeer(let expected, let actual):
            return "expected peer \(expected) but it presented \(actual.map(\.description) ?? "no Ed25519 key")"
        case .notEd25519Certificate: return "the peer's certificate does not carry an Ed25519 key"
        case .connectionClosed: return "the connection closed"
        case .timedOut(let operation, let seconds): return "\(operation) timed out after \(seconds) s"
        case .tooManyConnections(let limit, let name): return "more than \(name) (\(limit)) connections"
        case .invalidAddress(let text): return "invalid address '\(text)' (expected HOST:PORT)"
        }
    }
}
