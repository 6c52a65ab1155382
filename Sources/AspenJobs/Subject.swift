import AspenCore

/// A subject of pub/sub, as NATS writes them: tokens separated by `.`, none empty. In a pattern,
/// a token `*` matches exactly one token and a last token `>` matches one or more trailing tokens
/// (so `orders.>` matches `orders.created` and `orders.eu.created`, never `orders` itself). A
/// published subject has no wildcards. Tokens hold no whitespace or control characters, and the
/// subject's length and token count are bounded (`Limits.subjectBytesMax`, `subjectTokensMax`).
public struct SubjectPattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    let tokens: [Substring]

    public var description: String { text }

    /// A pattern (wildcards allowed).
    public init(_ text: String, limits: Limits = .standard) throws(SubjectError) {
        self.text = text
        tokens = try Self.tokens(of: text, wildcards: true, limits: limits)
    }

    /// Checks a subject to publish on (no wildcards), naming what is wrong.
    public static func validate(subject: String, limits: Limits = .standard) throws(SubjectError) {
        _ = try tokens(of: subject, wildcards: false, limits: limits)
    }

    static func tokens(of text: String, wildcards: Bool, limits: Limits) throws(SubjectError) -> [Substring] {
        guard !text.isEmpty else { throw SubjectError("a subject must not be empty") }
        guard text.utf8.count <= limits.subjectBytesMax else {
            throw SubjectError("a subject of \(text.utf8.count) bytes exceeds subjectBytesMax (\(limits.subjectBytesMax))")
        }
        let tokens = text.split(separator: ".", omittingEmptySubsequences: false)
        guard tokens.count <= limits.subjectTokensMax else {
            throw SubjectError("a subject of \(tokens.count) tokens exceeds subjectTokensMax (\(limits.subjectTokensMax))")
        }
        for (index, token) in tokens.enumerated() {
            guard !token.isEmpty else { throw SubjectError("'\(text)' has an empty token (a leading, trailing or doubled '.')") }
            guard !token.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) else {
                throw SubjectError("'\(text)' has whitespace or a control character in token '\(token)'")
            }
            let wildcard = token.contains("*") || token.contains(">")
            guard wildcard else { continue }
            guard wildcards else { throw SubjectError("'\(text)' has a wildcard ('*' or '>'): a published subject names one subject") }
            guard token == "*" || token == ">" else {
                throw SubjectError("'\(text)': '*' and '>' are wildcards only as whole tokens, not in '\(token)'")
            }
            guard token == "*" || index == tokens.count - 1 else { throw SubjectError("'\(text)': '>' may only be the last token") }
        }
        return tokens
    }

    /// Whether `subject` (a valid subject without wildcards) is one this pattern selects.
    public func matches(_ subject: String) -> Bool {
        let parts = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            if token == ">" { return parts.count > index }
            guard index < parts.count, token == "*" || token == parts[index] else { return false }
        }
        return parts.count == tokens.count
    }
}

/// A subject that cannot be used, and why.
public struct SubjectError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
