/// Why a pipeline file (or a stored pipeline, or a value interpolated at run time) was refused.
///
/// `line` and `column` count from 1 and point into `.aspen/ci.yml`; both are 0 when the error
/// has no place in the file (a stored pipeline, a hash the caller failed to compute). The
/// description reads like a compiler's, so an editor can jump to it.
public struct PipelineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable name for the kind of error, for clients and tests; the message says the rest.
    public enum Code: String, Sendable, Equatable {
        /// Not YAML, or YAML this module does not read (several documents, a tag, an anchor).
        case syntax
        case unknownKey
        case duplicateKey
        case wrongType
        case missingKey
        /// A value of the right type that is not allowed (a bad name, duration, pattern, version).
        case invalidValue
        /// Over a bound in `Limits`; the message names it.
        case overLimit
        case unknownNeed
        case cycle
        case interpolation
        case condition
        /// A stored pipeline that does not decode.
        case encoding
    }

    public var code: Code
    public var line: Int
    public var column: Int
    public var message: String

    public init(_ code: Code, _ message: String, line: Int = 0, column: Int = 0) {
        self.code = code
        self.message = message
        self.line = line
        self.column = column
    }

    init(_ code: Code, _ message: String, at location: SourceLocation?) {
        self.init(code, message, line: location?.line ?? 0, column: location?.column ?? 0)
    }

    public var description: String {
        line > 0 ? "ci.yml:\(line):\(column): \(message)" : "ci.yml: \(message)"
    }
}

/// A place in the pipeline file, counted from 1 (libyaml counts columns in Unicode scalars).
struct SourceLocation: Sendable, Equatable {
    var line: Int
    var column: Int
}
