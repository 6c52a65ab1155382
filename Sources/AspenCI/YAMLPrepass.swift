import AspenCore
internal import CYaml

/// One pass over the file with libyaml's event parser, the one Yams composes with (Yams vendors
/// it as CYaml), before Yams builds anything. It refuses what this module does not read, at the
/// place it occurs, in time linear in the file:
///
/// - anchors and aliases. Yams resolves an alias while composing and, to find duplicate keys,
///   hashes every key of a mapping, deeply: a key that is an alias of a nine-level "billion
///   laughs" anchor is hashed a billion times over before any node reaches this module. So the
///   first anchor stops the read, and no alias ever reaches Yams.
/// - duplicate keys. Yams refuses them too, but names the first occurrence; an editor wants the
///   second, the one to delete.
/// - tags (`!!str`, `!custom`), keys that are not scalars, more than one document;
/// - nesting past `ciYAMLDepthMax` and more nodes than `ciYAMLNodesMax`.
struct YAMLPrepass {
    /// One open mapping or sequence.
    struct Frame {
        var isMapping: Bool
        /// Dotted keys from the root, for messages (`jobs.build`).
        var path: String
        var keys: [String: SourceLocation] = [:]
        var expectingKey = true
        var lastKey = ""
    }

    let limits: Limits
    var frames: [Frame] = []
    var nodes = 0
    var documents = 0

    static func check(_ bytes: [UInt8], limits: Limits) throws(PipelineError) {
        // libyaml asserts that its input pointer is not null, which an empty array's may be.
        guard !bytes.isEmpty else { throw PipelineError(.missingKey, "the file is empty (it needs at least version and jobs)") }
        let failure: PipelineError? = bytes.withUnsafeBufferPointer { buffer in
            var prepass = YAMLPrepass(limits: limits)
            return prepass.run(buffer)
        }
        if let failure { throw failure }
    }

    mutating func run(_ buffer: UnsafeBufferPointer<UInt8>) -> PipelineError? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return PipelineError(.syntax, "the YAML parser could not start") }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) == 1 else { return Self.syntaxError(parser) }
            defer { yaml_event_delete(&event) }
            if event.type == YAML_STREAM_END_EVENT {
                return documents == 0 ? PipelineError(.missingKey, "the file is empty (it needs at least version and jobs)") : nil
            }
            do {
                try handle(event)
            } catch {
                return error
            }
        }
    }

    mutating func handle(_ event: yaml_event_t) throws(PipelineError) {
        let location = SourceLocation(line: event.start_mark.line + 1, column: event.start_mark.column + 1)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documents += 1
            guard documents == 1 else { throw PipelineError(.syntax, "the file holds more than one YAML document", at: location) }
        case YAML_ALIAS_EVENT:
            throw PipelineError(.syntax, "YAML aliases (*name) are not supported: write the value out", at: location)
        case YAML_SCALAR_EVENT:
            try countNode(anchor: event.data.scalar.anchor, tag: event.data.scalar.tag, at: location)
            let text = String(decoding: UnsafeBufferPointer(start: event.data.scalar.value, count: event.data.scalar.length), as: UTF8.self)
            if frames.last?.expectingKey == true, frames.last?.isMapping == true { try key(text, at: location) }
            completeNode()
        case YAML_SEQUENCE_START_EVENT:
            try countNode(anchor: event.data.sequence_start.anchor, tag: event.data.sequence_start.tag, at: location)
            try open(isMapping: false, at: location)
        case YAML_MAPPING_START_EVENT:
            try countNode(anchor: event.data.mapping_start.anchor, tag: event.data.mapping_start.tag, at: location)
            try open(isMapping: true, at: location)
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            _ = frames.popLast()
            completeNode()
        default:
            break
        }
    }

    mutating func countNode(anchor: UnsafeMutablePointer<yaml_char_t>?, tag: UnsafeMutablePointer<yaml_char_t>?, at location: SourceLocation)
        throws(PipelineError)
    {
        nodes += 1
        guard nodes <= limits.ciYAMLNodesMax else {
            throw PipelineError(.overLimit, "the file holds more than ciYAMLNodesMax (\(limits.ciYAMLNodesMax)) YAML nodes", at: location)
        }
        guard anchor == nil else {
            throw PipelineError(.syntax, "YAML anchors (&name) are not supported: write the value out", at: location)
        }
        guard tag == nil else { throw PipelineError(.syntax, "YAML tags (!name) are not supported", at: location) }
    }

    mutating func open(isMapping: Bool, at location: SourceLocation) throws(PipelineError) {
        guard let parent = frames.last else {
            frames.append(Frame(isMapping: isMapping, path: ""))
            return
        }
        guard !(parent.isMapping && parent.expectingKey) else {
            throw PipelineError(.wrongType, "a mapping key must be a scalar, not a \(isMapping ? "mapping" : "sequence")", at: location)
        }
        guard frames.count < limits.ciYAMLDepthMax else {
            throw PipelineError(.overLimit, "the file nests deeper than ciYAMLDepthMax (\(limits.ciYAMLDepthMax))", at: location)
        }
        let path = parent.isMapping ? (parent.path.isEmpty ? parent.lastKey : "\(parent.path).\(parent.lastKey)") : parent.path
        frames.append(Frame(isMapping: isMapping, path: path))
    }

    mutating func key(_ key: String, at location: SourceLocation) throws(PipelineError) {
        // No key of the schema is longer (job, axis and variable names); a long one would also
        // be copied into the path of every mapping under it.
        guard key.utf8.count <= limits.ciNameBytesMax else {
            throw PipelineError(.overLimit, "a key of \(key.utf8.count) bytes exceeds ciNameBytesMax (\(limits.ciNameBytesMax))", at: location)
        }
        let index = frames.count - 1
        if let first = frames[index].keys[key] {
            let place = frames[index].path.isEmpty ? "at the top level" : "in \(frames[index].path)"
            throw PipelineError(.duplicateKey, "duplicate key '\(key)' \(place) (first at \(first.line):\(first.column))", at: location)
        }
        frames[index].keys[key] = location
        frames[index].lastKey = key
    }

    /// A key or value ended: the mapping around it now expects the other.
    mutating func completeNode() {
        guard let last = frames.indices.last, frames[last].isMapping else { return }
        frames[last].expectingKey.toggle()
    }

    static func syntaxError(_ parser: yaml_parser_t) -> PipelineError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unreadable YAML"
        let context = parser.context.map { " (\(String(cString: $0)))" } ?? ""
        let location = SourceLocation(line: parser.problem_mark.line + 1, column: parser.problem_mark.column + 1)
        return PipelineError(.syntax, "YAML: \(problem)\(context)", at: location)
    }
}
