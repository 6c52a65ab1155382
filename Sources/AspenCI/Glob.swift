import AspenCore

/// A pattern over `/`-separated names (paths, branches, tags): `*` matches any run of characters
/// within one segment, `?` one character other than `/`, and a segment that is exactly `**`
/// any number of whole segments (none included), so `src/**` matches `src/a/b.swift` and
/// `**/*.md` every Markdown file. Nothing else is special. `**` inside a longer segment is
/// refused rather than guessed at.
///
/// Matching runs in time bounded by the product of the pattern's and the text's lengths (the
/// classic wildcard walk, which backtracks only to the last star), never exponential.
public struct Glob: Sendable, Equatable, CustomStringConvertible {
    public let pattern: String
    let segments: [Segment]

    enum Segment: Sendable, Equatable {
        /// `**`: any number of segments.
        case anySegments
        case name([Unicode.Scalar])
    }

    /// Refuses an empty pattern, one over `ciPatternBytesMax`, one with an empty segment (a
    /// leading, doubled or trailing `/`), `**` inside a segment, or a control character.
    public init(_ pattern: String, limits: Limits = .standard) throws(PipelineError) {
        guard !pattern.isEmpty else { throw PipelineError(.invalidValue, "a pattern must not be empty") }
        guard pattern.utf8.count <= limits.ciPatternBytesMax else {
            throw PipelineError(.overLimit, "a pattern of \(pattern.utf8.count) bytes exceeds ciPatternBytesMax (\(limits.ciPatternBytesMax))")
        }
        guard !pattern.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw PipelineError(.invalidValue, "pattern '\(pattern)' holds a control character")
        }
        var segments: [Segment] = []
        for part in pattern.split(separator: "/", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw PipelineError(.invalidValue, "pattern '\(pattern)' has an empty segment (a leading, doubled or trailing '/')") }
            if part == "**" {
                if segments.last != .anySegments { segments.append(.anySegments) }
                continue
            }
            guard !part.contains("**") else {
                throw PipelineError(.invalidValue, "pattern '\(pattern)': '**' must be a whole segment (write '**/*.swift', not '**.swift')")
            }
            segments.append(.name(Array(part.unicodeScalars)))
        }
        self.pattern = pattern
        self.segments = segments
    }

    /// Every name: `**`.
    public static let everything = Glob(checked: "**", segments: [.anySegments])

    private init(checked pattern: String, segments: [Segment]) {
        self.pattern = pattern
        self.segments = segments
    }

    public var description: String { pattern }

    public static func == (lhs: Glob, rhs: Glob) -> Bool { lhs.pattern == rhs.pattern }

    /// Whether `text` (a path or ref name, segments separated by `/`) matches.
    public func matches(_ text: String) -> Bool {
        let names = text.split(separator: "/", omittingEmptySubsequences: false).map { Array($0.unicodeScalars) }
        return Self.walk(pattern: segments, text: names, isStar: { $0 == .anySegments }) { segment, name in
            guard case .name(let scalars) = segment else { return false }
            return Self.matchSegment(scalars, name)
        }
    }

    /// One segment against one name: `*` any run, `?` one character.
    static func matchSegment(_ pattern: [Unicode.Scalar], _ name: [Unicode.Scalar]) -> Bool {
        walk(pattern: pattern, text: name, isStar: { $0 == "*" }) { token, character in token == "?" || token == character }
    }

    /// The wildcard walk: tokens that each match one element, and stars that match any run.
    /// On a mismatch it resumes after the last star, which then takes one more element; an
    /// earlier star never needs to take more, so this finds a match if there is one.
    static func walk<Token, Element>(
        pattern: [Token], text: [Element], isStar: (Token) -> Bool, matchesOne: (Token, Element) -> Bool
    ) -> Bool {
        var patternIndex = 0
        var textIndex = 0
        var starIndex: Int?
        var starTextIndex = 0
        while textIndex < text.count {
            if patternIndex < pattern.count, isStar(pattern[patternIndex]) {
                starIndex = patternIndex
                starTextIndex = textIndex
                patternIndex += 1
            } else if patternIndex < pattern.count, matchesOne(pattern[patternIndex], text[textIndex]) {
                patternIndex += 1
                textIndex += 1
            } else if let star = starIndex {
                patternIndex = star + 1
                starTextIndex += 1
                textIndex = starTextIndex
            } else {
                return false
            }
        }
        while patternIndex < pattern.count, isStar(pattern[patternIndex]) { patternIndex += 1 }
        return patternIndex == pattern.count
    }
}
