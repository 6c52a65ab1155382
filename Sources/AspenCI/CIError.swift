/// What a CI request is refused with: the node throws it, the client rebuilds it from the
/// refusal's stable code (`rpcCode`, with `code` as its detail), and the CLI maps it to an exit
/// status.
public enum CIError: Error, Sendable, Equatable, CustomStringConvertible {
    case badInput(String)
    case notFound(String)
    /// The run is not in a state the request needs (a cancel of an ended run, a rerun of a
    /// running one).
    case conflict(String)
    case unavailable(String)
    case failed(String)

    public var description: String {
        switch self {
        case .badInput(let text), .notFound(let text), .conflict(let text), .unavailable(let text), .failed(let text): text
        }
    }

    /// The code of a CI refusal in the native protocol; the detail carries `code`.
    public static let rpcCode = "ci"

    public var code: String {
        switch self {
        case .badInput: "bad_request"
        case .notFound: "not_found"
        case .conflict: "conflict"
        case .unavailable: "unavailable"
        case .failed: "failed"
        }
    }

    public init(code: String, message: String) {
        switch code {
        case "bad_request": self = .badInput(message)
        case "not_found": self = .notFound(message)
        case "conflict": self = .conflict(message)
        case "unavailable": self = .unavailable(message)
        default: self = .failed(message)
        }
    }
}
