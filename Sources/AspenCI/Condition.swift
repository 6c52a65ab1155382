import AspenCore

/// A job's `if`: comparisons of a few facts about the run with string literals, joined by `&&`
/// and `||` (`&&` binds tighter) and grouped with parentheses, or `true` / `false`.
///
///     ref == "refs/heads/main" && (event == "push" || event == "manual")
///
/// Nothing else, on purpose: a condition is read from an untrusted patch's file, so it can name
/// no variable outside `ConditionContext`, call nothing, and costs time linear in its length.
/// The normal form flattens `a || (b || c)` into one list; its `description` parses back to it.
public indirect enum Condition: Sendable, Equatable, CustomStringConvertible {
    case constant(Bool)
    case compare(Field, Comparison, String)
    /// Every condition holds (`&&`); two or more.
    case all([Condition])
    /// Some condition holds (`||`); two or more.
    case any([Condition])

    /// What a condition may look at.
    public enum Field: String, Sendable, CaseIterable {
        /// The full ref: `refs/heads/main`, `refs/tags/v1`, `refs/for/main`.
        case ref
        /// `push`, `patch` or `manual`.
        case event
        /// How the run stands when the job is due: `success`, `failure` or `cancelled`.
        case status
        /// The branch pushed to, or a patch's target branch; empty for a tag.
        case branch
    }

    public enum Comparison: String, Sendable {
        case equal = "=="
        case notEqual = "!="
    }

    /// Parses `text`, bounded by `ciConditionBytesMax` and `ciConditionDepthMax`.
    public init(parsing text: String, limits: Limits = .standard) throws(PipelineError) {
        guard text.utf8.count <= limits.ciConditionBytesMax else {
            throw PipelineError(.overLimit, "a condition of \(text.utf8.count) bytes exceeds ciConditionBytesMax (\(limits.ciConditionBytesMax))")
        }
        var parser = ConditionParser(text: text, tokens: try ConditionLexer.tokens(of: text), depthMax: limits.ciConditionDepthMax)
        self = try parser.parseCondition()
        // A run stores the normal form (spaced operators), which must read back under the same bound.
        guard description.utf8.count <= limits.ciConditionBytesMax else {
            throw PipelineError(
                .overLimit,
                "the condition in normal form (\(description.utf8.count) bytes, with spaces around operators) exceeds ciConditionBytesMax (\(limits.ciConditionBytesMax))")
        }
    }

    /// Whether the condition holds for `context`.
    public func evaluate(in context: ConditionContext) -> Bool {
        switch self {
        case .constant(let value): value
        case .compare(let field, let comparison, let literal): (context.value(of: field) == literal) == (comparison == .equal)
        case .all(let conditions): conditions.allSatisfy { $0.evaluate(in: context) }
        case .any(let conditions): conditions.contains { $0.evaluate(in: context) }
        }
    }

    public var description: String {
        switch self {
        case .constant(let value): return value ? "true" : "false"
        case .compare(let field, let comparison, let literal): return "\(field.rawValue) \(comparison.rawValue) \(Self.quote(literal))"
        case .all(let conditions):
            return conditions.map { if case .any = $0 { "(\($0))" } else { "\($0)" } }.joined(separator: " && ")
        case .any(let conditions): return conditions.map(\.description).joined(separator: " || ")
        }
    }

    static func quote(_ literal: String) -> String {
        "\"" + literal.replacingBackslashesAndQuotes() + "\""
    }
}

extension String {
    fileprivate func replacingBackslashesAndQuotes() -> String {
        var result = ""
        for character in self {
            if character == "\\" || character == "\"" { result.append("\\") }
            result.append(character)
        }
        return result
    }
}

/// What a condition is evaluated against.
public struct ConditionContext: Sendable, Equatable {
    public var ref: String
    public var event: TriggerKind
    public var status: RunStatus

    public init(ref: String, event: TriggerKind, status: RunStatus = .success) {
        self.ref = ref
        self.event = event
        self.status = status
    }

    /// The branch of `refs/heads/<branch>` or `refs/for/<branch>`; empty for any other ref.
    public var branch: String { GitRef(ref).branch ?? "" }

    func value(of field: Condition.Field) -> String {
        switch field {
        case .ref: ref
        case .event: event.rawValue
        case .status: status.rawValue
        case .branch: branch
        }
    }
}

/// How a run stands when a job is due: every job it needs succeeded, one failed, or the run was
/// cancelled.
public enum RunStatus: String, Sendable, CaseIterable {
    case success
    case failure
    case cancelled
}

// MARK: - Lexer

enum ConditionToken: Sendable, Equatable {
    case word(String)
    case literal(String)
    case equal, notEqual, and, or, open, close

    var text: String {
        switch self {
        case .word(let word): word
        case .literal(let literal): Condition.quote(literal)
        case .equal: "=="
        case .notEqual: "!="
        case .and: "&&"
        case .or: "||"
        case .open: "("
        case .close: ")"
        }
    }
}

enum ConditionLexer {
    static let pairs: [(Character, Character, ConditionToken)] = [("=", "=", .equal), ("!", "=", .notEqual), ("&", "&", .and), ("|", "|", .or)]

    static func tokens(of text: String) throws(PipelineError) -> [ConditionToken] {
        var tokens: [ConditionToken] = []
        var rest = Substring(text)
        while let first = rest.first {
            if first == " " || first == "\t" {
                rest.removeFirst()
            } else if first == "(" || first == ")" {
                tokens.append(first == "(" ? .open : .close)
                rest.removeFirst()
            } else if let pair = pairs.first(where: { rest.hasPrefix(String([$0.0, $0.1])) }) {
                tokens.append(pair.2)
                rest.removeFirst(2)
            } else if first == "\"" {
                tokens.append(.literal(try literal(&rest, in: text)))
            } else if first.isASCII, first.isLetter {
                let word = rest.prefix { $0.isASCII && ($0.isLetter || $0 == "_") }
                tokens.append(.word(String(word)))
                rest.removeFirst(word.count)
            } else {
                throw PipelineError(.condition, "unexpected '\(first)' in condition '\(text)'")
            }
        }
        return tokens
    }

    /// A double-quoted literal; `\"` and `\\` are its only escapes.
    static func literal(_ rest: inout Substring, in text: String) throws(PipelineError) -> String {
        rest.removeFirst()
        var value = ""
        while let character = rest.popFirst() {
            switch character {
            case "\"": return value
            case "\\":
                guard let escaped = rest.popFirst(), escaped == "\"" || escaped == "\\" else {
                    throw PipelineError(.condition, "a literal in condition '\(text)' has an escape other than \\\" or \\\\")
                }
                value.append(escaped)
            default:
                value.append(character)
            }
        }
        throw PipelineError(.condition, "condition '\(text)' has an unterminated string literal")
    }
}

// MARK: - Parser

/// Recursive descent over the tokens: `any := all ('||' all)*`, `all := primary ('&&' primary)*`,
/// `primary := '(' any ')' | true | false | field ('=='|'!=') literal`. Recursion only enters
/// parentheses, whose depth is bounded.
struct ConditionParser {
    let text: String
    let tokens: [ConditionToken]
    let depthMax: Int
    var index = 0
    var depth = 0

    init(text: String, tokens: [ConditionToken], depthMax: Int) {
        self.text = text
        self.tokens = tokens
        self.depthMax = depthMax
    }

    mutating func parseCondition() throws(PipelineError) -> Condition {
        guard !tokens.isEmpty else { throw PipelineError(.condition, "a condition must not be empty") }
        let condition = try parseDisjunction()
        guard index == tokens.count else { throw unexpected() }
        return condition
    }

    mutating func parseDisjunction() throws(PipelineError) -> Condition {
        var terms = [try parseConjunction()]
        while next == .or {
            index += 1
            terms.append(try parseConjunction())
        }
        return Self.join(terms, any: true)
    }

    mutating func parseConjunction() throws(PipelineError) -> Condition {
        var terms = [try parsePrimary()]
        while next == .and {
            index += 1
            terms.append(try parsePrimary())
        }
        return Self.join(terms, any: false)
    }

    /// One term, or a flattened list: `a && (b && c)` is `all([a, b, c])`.
    static func join(_ terms: [Condition], any: Bool) -> Condition {
        guard terms.count > 1 else { return terms[0] }
        var flat: [Condition] = []
        for term in terms {
            switch (term, any) {
            case (.any(let inner), true), (.all(let inner), false): flat.append(contentsOf: inner)
            default: flat.append(term)
            }
        }
        return any ? .any(flat) : .all(flat)
    }

    mutating func parsePrimary() throws(PipelineError) -> Condition {
        guard let token = next else { throw PipelineError(.condition, "condition '\(text)' ends too soon") }
        index += 1
        switch token {
        case .open:
            depth += 1
            guard depth <= depthMax else {
                throw PipelineError(.overLimit, "condition '\(text)' nests parentheses deeper than ciConditionDepthMax (\(depthMax))")
            }
            let inner = try parseDisjunction()
            guard next == .close else { throw next == nil ? PipelineError(.condition, "condition '\(text)' misses a ')'") : unexpected() }
            index += 1
            depth -= 1
            return inner
        case .word("true"): return .constant(true)
        case .word("false"): return .constant(false)
        case .word(let word):
            guard let field = Condition.Field(rawValue: word) else {
                let fields = Condition.Field.allCases.map(\.rawValue).joined(separator: ", ")
                throw PipelineError(.condition, "condition '\(text)' names '\(word)', which is not one of: \(fields), true, false")
            }
            return try parseComparison(of: field)
        default:
            index -= 1
            throw unexpected()
        }
    }

    mutating func parseComparison(of field: Condition.Field) throws(PipelineError) -> Condition {
        guard let token = next, token == .equal || token == .notEqual else {
            throw PipelineError(.condition, "condition '\(text)': '\(field.rawValue)' must be followed by == or !=")
        }
        index += 1
        guard case .literal(let literal) = next else {
            throw PipelineError(.condition, "condition '\(text)': '\(field.rawValue) \(token.text)' must be followed by a \"quoted\" literal")
        }
        index += 1
        try Self.checkLiteral(literal, of: field, in: text)
        return .compare(field, token == .equal ? .equal : .notEqual, literal)
    }

    /// A literal `event` or `status` could never equal is a typo; refuse it now rather than
    /// let the job silently never (or always) run.
    static func checkLiteral(_ literal: String, of field: Condition.Field, in text: String) throws(PipelineError) {
        let allowed: [String]
        switch field {
        case .event: allowed = TriggerKind.allCases.map(\.rawValue)
        case .status: allowed = RunStatus.allCases.map(\.rawValue)
        case .ref, .branch: return
        }
        guard allowed.contains(literal) else {
            throw PipelineError(
                .condition, "condition '\(text)': \(field.rawValue) is one of \(allowed.joined(separator: ", ")), never \(Condition.quote(literal))")
        }
    }

    var next: ConditionToken? { index < tokens.count ? tokens[index] : nil }

    func unexpected() -> PipelineError {
        PipelineError(.condition, "unexpected '\(next?.text ?? "end")' in condition '\(text)'")
    }
}
