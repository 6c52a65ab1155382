import AspenCore
import Yams

extension Pipeline {
    /// Reads `.aspen/ci.yml`. Every error names its line and column, and every bound is checked
    /// before the work it bounds: the size before parsing, anchors and depth before Yams builds
    /// nodes, matrix sizes before expanding.
    public init(yaml bytes: [UInt8], limits: Limits = .standard) throws(PipelineError) {
        var parser = PipelineParser(limits: limits)
        self = try parser.parse(bytes)
    }

    public init(yaml text: String, limits: Limits = .standard) throws(PipelineError) {
        try self.init(yaml: Array(text.utf8), limits: limits)
    }
}

/// The file's top level, triggers and concurrency; jobs are in `PipelineParser+Job.swift`.
struct PipelineParser {
    let limits: Limits
    var locator = GraphLocator()

    init(limits: Limits) { self.limits = limits }

    mutating func parse(_ bytes: [UInt8]) throws(PipelineError) -> Pipeline {
        guard bytes.count <= limits.ciPipelineFileBytesMax else {
            throw PipelineError(.overLimit, "the file is \(bytes.count) bytes, over ciPipelineFileBytesMax (\(limits.ciPipelineFileBytesMax))")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw PipelineError(.syntax, "the file is not UTF-8 text") }
        try YAMLPrepass.check(bytes, limits: limits)
        let top = try StrictMapping(try Self.compose(text), context: "the file", allowed: ["version", "triggers", "concurrency", "jobs"])
        try checkVersion(top)
        var triggers = Triggers.default
        if let node = top.value("triggers") { triggers = try parseTriggers(node, owner: top.keyLocation("triggers")) }
        var concurrency: Concurrency?
        if let node = top.value("concurrency") { concurrency = try parseConcurrency(node, owner: top.keyLocation("concurrency")) }
        let jobs = try parseJobs(try top.require("jobs"), owner: top.keyLocation("jobs"))
        return try Pipeline(checkedTriggers: triggers, concurrency: concurrency, jobs: jobs, limits: limits, locator: locator)
    }

    /// Yams's composer with the basic resolver (no implicit types). The prepass has refused
    /// what Yams would refuse, so its errors here are only reported, never expected.
    static func compose(_ text: String) throws(PipelineError) -> Node {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text, Resolver.basic)
        } catch let error as YamlError {
            throw describe(error)
        } catch {
            throw PipelineError(.syntax, "YAML: \(error)")
        }
        guard let root else { throw PipelineError(.missingKey, "the file is empty (it needs at least version and jobs)") }
        return root
    }

    /// A Yams error without the line of the file Yams quotes (that line is already pointed at).
    static func describe(_ error: YamlError) -> PipelineError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return PipelineError(.syntax, "YAML: \(problem)", line: mark.line, column: mark.column)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let names = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return PipelineError(.duplicateKey, "duplicate key \(names)", line: context.mark.line, column: context.mark.column)
        default:
            return PipelineError(.syntax, "YAML: \(error)")
        }
    }

    func checkVersion(_ top: StrictMapping) throws(PipelineError) {
        guard let node = top.value("version") else {
            throw PipelineError(.missingKey, "missing key 'version' in the file (write version: \(Pipeline.fileVersion))", at: top.location)
        }
        let version = try YAMLRead.int(node, what: "version", range: 0...Int.max / 2)
        guard version == Pipeline.fileVersion else {
            throw PipelineError(.invalidValue, "version must be \(Pipeline.fileVersion), not \(version)", at: YAMLRead.location(node))
        }
    }

    // MARK: Triggers

    func parseTriggers(_ node: Node, owner: SourceLocation?) throws(PipelineError) -> Triggers {
        let mapping = try StrictMapping(node, context: "triggers", allowed: ["push", "patch", "manual"], owner: owner)
        var triggers = Triggers()
        if let push = mapping.value("push") {
            let fields = try optionalMapping(push, context: "triggers.push", allowed: ["branches", "tags", "paths", "paths_ignore"])
            let branches = try globs(fields, "branches", context: "triggers.push")
            let tags = try globs(fields, "tags", context: "triggers.push")
            triggers.push = PushTrigger(
                branches: branches ?? (tags == nil ? [.everything] : []), tags: tags ?? (branches == nil ? [.everything] : []),
                paths: try globs(fields, "paths", context: "triggers.push") ?? [],
                pathsIgnore: try globs(fields, "paths_ignore", context: "triggers.push") ?? [])
        }
        if let patch = mapping.value("patch") {
            let fields = try optionalMapping(patch, context: "triggers.patch", allowed: ["branches", "paths", "paths_ignore"])
            triggers.patch = PatchTrigger(
                branches: try globs(fields, "branches", context: "triggers.patch") ?? [.everything],
                paths: try globs(fields, "paths", context: "triggers.patch") ?? [],
                pathsIgnore: try globs(fields, "paths_ignore", context: "triggers.patch") ?? [])
        }
        if let manual = mapping.value("manual") {
            _ = try optionalMapping(manual, context: "triggers.manual", allowed: [])
            triggers.manual = true
        }
        return triggers
    }

    /// A mapping, or null for an empty one (`patch:` alone turns the trigger on).
    func optionalMapping(_ node: Node, context: String, allowed: [String]) throws(PipelineError) -> StrictMapping {
        if YAMLRead.isNull(node) { return StrictMapping(empty: context, location: YAMLRead.location(node)) }
        return try StrictMapping(node, context: context, allowed: allowed)
    }

    /// The patterns under `key`, or nil if the key is absent.
    func globs(_ mapping: StrictMapping, _ key: String, context: String) throws(PipelineError) -> [Glob]? {
        guard let node = mapping.value(key) else { return nil }
        var globs: [Glob] = []
        for (pattern, location) in try YAMLRead.texts(node, what: "\(context).\(key)", max: limits.ciPatternsMax, limitName: "ciPatternsMax") {
            do {
                globs.append(try Glob(pattern, limits: limits))
            } catch {
                throw error.located(at: location)
            }
        }
        return globs
    }

    // MARK: Concurrency

    func parseConcurrency(_ node: Node, owner: SourceLocation?) throws(PipelineError) -> Concurrency {
        let mapping = try StrictMapping(node, context: "concurrency", allowed: ["group", "cancel_in_progress"], owner: owner)
        let groupNode = try mapping.require("group")
        var concurrency = Concurrency(group: try YAMLRead.text(groupNode, what: "concurrency.group"))
        if let cancel = mapping.value("cancel_in_progress") {
            concurrency.cancelInProgress = try YAMLRead.bool(cancel, what: "concurrency.cancel_in_progress")
        }
        do {
            try PipelineValidation.check(concurrency: concurrency, limits: limits)
        } catch {
            throw error.located(at: YAMLRead.location(groupNode))
        }
        return concurrency
    }
}
