import AspenCore
import Yams

/// Typed reads of Yams nodes, each refusing the wrong kind of node at its place. The nodes come
/// from Yams's basic resolver, which types nothing: whether `true` is a boolean or `1` a number
/// is decided here, by the field that reads it (YAML 1.1 would read `on` and `no` as booleans).
enum YAMLRead {
    static func location(_ node: Node) -> SourceLocation? {
        node.mark.map { SourceLocation(line: $0.line, column: $0.column) }
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): isNull(scalar) ? "null" : "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a sequence"
        case .alias: "an alias"
        }
    }

    /// A plain scalar YAML reads as null: empty, `~` or `null`.
    static func isNull(_ scalar: Node.Scalar) -> Bool {
        (scalar.style == .plain || scalar.style == .any) && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    static func isNull(_ node: Node) -> Bool {
        if case .scalar(let scalar) = node { isNull(scalar) } else { false }
    }

    static func wrongType(_ node: Node, expected: String, what: String) -> PipelineError {
        PipelineError(.wrongType, "\(what) must be \(expected), not \(kind(node))", at: location(node))
    }

    /// Any scalar but null, as written (`8080` and `"8080"` alike).
    static func text(_ node: Node, what: String) throws(PipelineError) -> String {
        guard case .scalar(let scalar) = node, !isNull(scalar) else { throw wrongType(node, expected: "a string", what: what) }
        return scalar.string
    }

    /// `true` or `false`, unquoted.
    static func bool(_ node: Node, what: String) throws(PipelineError) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any,
            scalar.string == "true" || scalar.string == "false"
        else {
            let found = node.scalar.map { "'\($0.string)'" } ?? kind(node)
            throw PipelineError(.wrongType, "\(what) must be true or false, not \(found)", at: location(node))
        }
        return scalar.string == "true"
    }

    /// A decimal integer, unquoted, within `range`.
    static func int(_ node: Node, what: String, range: ClosedRange<Int>) throws(PipelineError) -> Int {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any,
            scalar.string.utf8.count <= 18, scalar.string.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(scalar.string)
        else {
            let found = node.scalar.map { "'\($0.string)'" } ?? kind(node)
            throw PipelineError(.wrongType, "\(what) must be a whole number, not \(found)", at: location(node))
        }
        guard range.contains(value) else {
            throw PipelineError(.invalidValue, "\(what) must be \(range.lowerBound) to \(range.upperBound), not \(value)", at: location(node))
        }
        return value
    }

    static func sequence(_ node: Node, what: String) throws(PipelineError) -> [Node] {
        guard case .sequence(let sequence) = node else { throw wrongType(node, expected: "a sequence", what: what) }
        return Array(sequence)
    }

    /// A sequence of strings, at most `max` of them (`limitName` says which bound).
    static func texts(_ node: Node, what: String, max: Int, limitName: String) throws(PipelineError) -> [(String, SourceLocation?)] {
        let items = try sequence(node, what: what)
        guard items.count <= max else {
            throw PipelineError(.overLimit, "\(what) lists \(items.count) entries, over \(limitName) (\(max))", at: location(node))
        }
        var result: [(String, SourceLocation?)] = []
        for item in items { result.append((try text(item, what: "an entry of \(what)"), location(item))) }
        return result
    }
}

/// A mapping read strictly: every key a string from `allowed`, none twice (the prepass refused
/// duplicates already; this is the check that holds without it).
struct StrictMapping {
    struct Entry {
        var key: String
        var keyLocation: SourceLocation?
        var value: Node
    }

    let entries: [Entry]
    let context: String
    /// Where missing keys are reported: the key that owns this mapping, or the mapping itself.
    let location: SourceLocation?

    /// `allowed: nil` takes any key (a mapping of names, such as `jobs` or `env`).
    init(_ node: Node, context: String, allowed: [String]?, owner: SourceLocation? = nil) throws(PipelineError) {
        guard case .mapping(let mapping) = node else { throw YAMLRead.wrongType(node, expected: "a mapping", what: context) }
        var entries: [Entry] = []
        var seen = Set<String>()
        for (keyNode, value) in mapping {
            let keyLocation = YAMLRead.location(keyNode)
            guard case .scalar(let scalar) = keyNode else { throw YAMLRead.wrongType(keyNode, expected: "a string", what: "a key in \(context)") }
            let key = scalar.string
            if let allowed, !allowed.contains(key) {
                let expected = allowed.isEmpty ? "it takes no keys" : "expected one of: \(allowed.joined(separator: ", "))"
                throw PipelineError(.unknownKey, "unknown key '\(key)' in \(context) (\(expected))", at: keyLocation)
            }
            guard seen.insert(key).inserted else { throw PipelineError(.duplicateKey, "duplicate key '\(key)' in \(context)", at: keyLocation) }
            entries.append(Entry(key: key, keyLocation: keyLocation, value: value))
        }
        self.entries = entries
        self.context = context
        self.location = owner ?? YAMLRead.location(node)
    }

    /// An empty mapping for a null value (`manual:` with nothing after it).
    init(empty context: String, location: SourceLocation?) {
        entries = []
        self.context = context
        self.location = location
    }

    func value(_ key: String) -> Node? { entries.first { $0.key == key }?.value }

    func keyLocation(_ key: String) -> SourceLocation? { entries.first { $0.key == key }?.keyLocation }

    func require(_ key: String) throws(PipelineError) -> Node {
        guard let value = value(key) else { throw PipelineError(.missingKey, "missing key '\(key)' in \(context)", at: location) }
        return value
    }
}
