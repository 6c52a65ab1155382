import AspenCore

/// `${…}` in `run`, `env` values, `cache.key` and `concurrency.group`: a fixed set, so that a
/// file (perhaps an untrusted patch's) can read nothing but what is listed here.
///
/// | form | value |
/// |---|---|
/// | `${ref}`, `${sha}`, `${event}` | the run's ref, commit and trigger kind |
/// | `${matrix.NAME}` | the value of axis NAME in this expansion of the job |
/// | `${hash:PATH}` | what the caller's hash function returns for PATH (relative, no `..`) |
///
/// Anything else between `${` and `}`, or a `${` without its `}`, is refused when the file is
/// read. `$${` stands for a literal `${` (a shell's `${HOME}` is written `$${HOME}`); a `$` not
/// followed by `{` is kept as it is.
public enum Interpolation {
    /// One `${…}` form.
    public enum Reference: Sendable, Equatable {
        case ref
        case sha
        case event
        case matrix(String)
        case hash(path: String)
    }

    /// One piece of a text: as written, or a reference.
    enum Piece: Equatable {
        case text(String)
        case reference(Reference)
    }

    /// The references of `text`, in order; refuses any form not in the table.
    public static func references(in text: String) throws(PipelineError) -> [Reference] {
        try pieces(of: text).compactMap { if case .reference(let reference) = $0 { reference } else { nil } }
    }

    /// Checks `text` for a field whose job has the matrix `axes` (none outside a job).
    static func check(_ text: String, axes: [String], field: String) throws(PipelineError) {
        for reference in try references(in: text) {
            guard case .matrix(let name) = reference, !axes.contains(name) else { continue }
            let known = axes.isEmpty ? "there is no matrix here" : "the matrix axes are: \(axes.joined(separator: ", "))"
            throw PipelineError(.interpolation, "${matrix.\(name)} in \(field) names no axis (\(known))")
        }
    }

    /// `text` with every reference replaced, or an error naming the reference that has no
    /// value. The result is bounded by `ciInterpolatedBytesMax`.
    public static func expand(_ text: String, in context: InterpolationContext, limits: Limits = .standard) throws(PipelineError) -> String {
        var result = ""
        for piece in try pieces(of: text) {
            switch piece {
            case .text(let literal): result += literal
            case .reference(let reference): result += try context.value(of: reference)
            }
            guard result.utf8.count <= limits.ciInterpolatedBytesMax else {
                throw PipelineError(.overLimit, "an interpolated text exceeds ciInterpolatedBytesMax (\(limits.ciInterpolatedBytesMax))")
            }
        }
        return result
    }

    static func pieces(of text: String) throws(PipelineError) -> [Piece] {
        var pieces: [Piece] = []
        var literal = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            literal += rest[..<dollar]
            rest = rest[dollar...]
            if rest.hasPrefix("$${") {
                literal += "${"
                rest.removeFirst(3)
            } else if rest.hasPrefix("${") {
                guard let close = rest.firstIndex(of: "}") else {
                    throw PipelineError(.interpolation, "unterminated '\(rest.prefix(40))': a '${' needs its '}' (write $${ for a literal ${)")
                }
                let reference = try parse(String(rest[rest.index(rest.startIndex, offsetBy: 2)..<close]))
                if !literal.isEmpty { pieces.append(.text(literal)) }
                literal = ""
                pieces.append(.reference(reference))
                rest = rest[rest.index(after: close)...]
            } else {
                literal += "$"
                rest.removeFirst()
            }
        }
        literal += rest
        if !literal.isEmpty { pieces.append(.text(literal)) }
        return pieces
    }

    static func parse(_ body: String) throws(PipelineError) -> Reference {
        switch body {
        case "ref": return .ref
        case "sha": return .sha
        case "event": return .event
        default: break
        }
        if body.hasPrefix("matrix."), case let name = String(body.dropFirst("matrix.".count)), Names.isAxisName(name) {
            return .matrix(name)
        }
        if body.hasPrefix("hash:") {
            let path = String(body.dropFirst("hash:".count))
            guard Names.isRelativePath(path) else {
                throw PipelineError(.interpolation, "${\(body)}: the path must be relative to the repository, without '..'")
            }
            return .hash(path: path)
        }
        throw PipelineError(
            .interpolation,
            "unknown interpolation '${\(body)}' (expected ${ref}, ${sha}, ${event}, ${matrix.NAME} or ${hash:PATH}; write $${ for a literal ${)")
    }
}

/// The values `${…}` stands for in one run (and one expansion of a job).
public struct InterpolationContext {
    public var ref: String
    public var sha: String
    public var event: TriggerKind
    public var matrix: [MatrixBinding]
    /// The hash of a file of the commit being run (`${hash:PATH}`), which only the caller can
    /// read; an error it throws is reported with the path.
    public var hashOfPath: (String) throws -> String

    public init(
        ref: String, sha: String, event: TriggerKind, matrix: [MatrixBinding] = [],
        hashOfPath: @escaping (String) throws -> String
    ) {
        self.ref = ref
        self.sha = sha
        self.event = event
        self.matrix = matrix
        self.hashOfPath = hashOfPath
    }

    func value(of reference: Interpolation.Reference) throws(PipelineError) -> String {
        switch reference {
        case .ref: return ref
        case .sha: return sha
        case .event: return event.rawValue
        case .matrix(let name):
            guard let binding = matrix.first(where: { $0.axis == name }) else {
                throw PipelineError(.interpolation, "${matrix.\(name)} has no value in this job")
            }
            return binding.value
        case .hash(let path):
            do {
                return try hashOfPath(path)
            } catch {
                throw PipelineError(.interpolation, "${hash:\(path)} could not be computed: \(error)")
            }
        }
    }
}

/// A planned job's texts with every reference replaced: what a worker is given.
public struct ResolvedJob: Sendable, Equatable {
    public var name: String
    public var run: String
    public var env: [String: String]
    public var cacheKey: String?

    public init(name: String, run: String, env: [String: String] = [:], cacheKey: String? = nil) {
        self.name = name
        self.run = run
        self.env = env
        self.cacheKey = cacheKey
    }
}

extension Pipeline {
    /// The run script, environment and cache key of `planned`, interpolated in `context` (whose
    /// matrix is replaced by the planned job's own values).
    public func resolve(_ planned: PlannedJob, in context: InterpolationContext, limits: Limits = .standard) throws(PipelineError) -> ResolvedJob {
        guard let job = job(named: planned.jobName) else {
            throw PipelineError(.unknownNeed, "the plan names job '\(planned.jobName)', which the pipeline does not define")
        }
        var context = context
        context.matrix = planned.matrix
        var env: [String: String] = [:]
        for (name, value) in job.env { env[name] = try Interpolation.expand(value, in: context, limits: limits) }
        var cacheKey: String?
        if let cache = job.cache { cacheKey = try Interpolation.expand(cache.key, in: context, limits: limits) }
        let run = try Interpolation.expand(job.run, in: context, limits: limits)
        return ResolvedJob(name: planned.name, run: run, env: env, cacheKey: cacheKey)
    }

    /// The concurrency group of a run, interpolated, or nil if the pipeline names none.
    public func concurrencyGroup(in context: InterpolationContext, limits: Limits = .standard) throws(PipelineError) -> String? {
        guard let concurrency else { return nil }
        return try Interpolation.expand(concurrency.group, in: context, limits: limits)
    }
}
