/// Prometheus' text exposition (version 0.0.4), built one metric family at a time: its
/// `# HELP` and `# TYPE` lines, then its samples. Label values are escaped as the format asks
/// (backslash, double quote, line feed), so free text (a group's or a hook's name) is safe.
public struct MetricsText: Sendable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public private(set) var lines: [String] = []

    public init() {}

    /// A family with one unlabelled sample.
    public mutating func add(_ name: String, _ kind: Kind, _ help: String, _ value: String) {
        family(name, kind, help)
        lines.append("\(name) \(value)")
    }

    /// A family with a sample per label value of `label`.
    public mutating func add(_ name: String, _ kind: Kind, _ help: String, label: String, _ samples: [(String, String)]) {
        family(name, kind, help)
        for (value, sample) in samples { lines.append("\(name){\(label)=\"\(Self.escape(value))\"} \(sample)") }
    }

    /// The `# HELP` and `# TYPE` lines alone (samples written by the caller, as a histogram's).
    public mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        lines += ["# HELP \(name) \(help)", "# TYPE \(name) \(kind.rawValue)"]
    }

    public mutating func append(_ samples: [String]) { lines += samples }

    static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
