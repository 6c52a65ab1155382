/// What the secrets engines refuse, each case answered with Vault's HTTP status for it.
public enum SecretsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Malformed or disallowed input, a failed check-and-set, a ciphertext that does not open (400).
    case badRequest(String)
    /// The caller's credential does not allow the request (403).
    case forbidden(String)
    /// No such mount, path, version or key (404).
    case notFound(String)
    /// The request's method is not allowed on the path (405).
    case unsupported(String)
    /// The request is larger than the bound it names (413).
    case tooLarge(String)
    /// The cluster cannot serve it now: sealed (too few key shares reachable) or no quorum (503).
    case unavailable(String)
    /// Something that should not happen (500); the message says what.
    case internalError(String)

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .forbidden: 403
        case .notFound: 404
        case .unsupported: 405
        case .tooLarge: 413
        case .unavailable: 503
        case .internalError: 500
        }
    }

    public var message: String {
        switch self {
        case .badRequest(let text), .forbidden(let text), .notFound(let text), .unsupported(let text), .tooLarge(let text),
            .unavailable(let text), .internalError(let text):
            text
        }
    }

    public var description: String { message }
}
