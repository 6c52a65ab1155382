import AspenCore
import Testing
import Yams

@testable import AspenCI

/// What the prepass refuses before Yams builds a node, and the Yams behaviour it exists for.
struct YAMLSafetyTests {
    /// Nine levels of nine aliases: 9^9 (387 million) leaves if anything expanded it. With
    /// `keyAlias`, the last level is also used as a mapping key, which Yams would hash deeply.
    static func billionLaughs(keyAlias: Bool) -> String {
        var lines = ["version: 1", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for level in 1...8 {
            lines.append("a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ", ") + "]")
        }
        if keyAlias { lines.append("? *a8\n: boom") }
        lines.append("jobs:\n  a: {run: x}\n")
        return lines.joined(separator: "\n")
    }

    @Test("a billion-laughs file is refused at its first anchor, before anything is expanded", arguments: [false, true])
    func aliasBomb(keyAlias: Bool) {
        // Were any level expanded (or hashed, for the key), this test would not finish.
        let error = parseError(Self.billionLaughs(keyAlias: keyAlias))
        #expect(error?.description == "ci.yml:2:5: YAML anchors (&name) are not supported: write the value out")
        #expect(error?.code == .syntax)
    }

    @Test("an alias is refused at its place, even one whose anchor is missing")
    func alias() {
        let error = parseError(pipelineFile(jobs: "  a: {run: x}\n  b: *a\n"))
        #expect(error?.description == "ci.yml:4:6: YAML aliases (*name) are not supported: write the value out")
    }

    @Test("`*` and `&` inside plain and quoted scalars are text, not aliases")
    func starsInScalars() throws {
        let pipeline = try Pipeline(yaml: pipelineFile(jobs: "  a:\n    run: make && ls *.txt\n    env: {GLOB: \"*\", AMP: \"&x\"}\n"))
        #expect(pipeline.jobs[0].run == "make && ls *.txt")
        #expect(pipeline.jobs[0].env == ["GLOB": "*", "AMP": "&x"])
    }

    @Test("nesting deeper than ciYAMLDepthMax is refused at the first level past it")
    func depth() {
        let opening = String(repeating: "[", count: 40)
        let error = parseError("version: 1\nx: \(opening)\(String(repeating: "]", count: 40))\njobs:\n  a: {run: x}\n")
        #expect(error?.description == "ci.yml:2:19: the file nests deeper than ciYAMLDepthMax (16)")
        #expect(error?.code == .overLimit)
    }

    @Test("more nodes than ciYAMLNodesMax are refused")
    func nodeCount() {
        var limits = Limits()
        limits.ciYAMLNodesMax = 20
        let many = "[" + (1...30).map(String.init).joined(separator: ", ") + "]"
        let error = parseError(pipelineFile(jobs: "  a:\n    run: x\n    tags: \(many)\n"), limits: limits)
        #expect(error?.code == .overLimit)
        #expect(error?.line == 5)
    }

    @Test("tags, several documents and keys that are not scalars are refused at their place")
    func unsupportedYAML() {
        #expect(parseError("version: !!int 1\njobs:\n  a: {run: x}\n")?.description == "ci.yml:1:10: YAML tags (!name) are not supported")
        let documents = parseError("version: 1\njobs:\n  a: {run: x}\n---\nversion: 1\n")
        #expect(documents?.description == "ci.yml:4:1: the file holds more than one YAML document")
        let complexKey = parseError("version: 1\n? [a, b]\n: c\njobs:\n  a: {run: x}\n")
        #expect((complexKey?.code, complexKey?.line, complexKey?.column) == (.wrongType, 2, 3))
    }

    @Test("a syntax error names libyaml's problem and place")
    func syntaxError() {
        let error = parseError("version: 1\njobs:\n  a: {run: x\n")
        #expect(error?.code == .syntax)
        #expect(error?.line == 4)
        #expect(error?.message.hasPrefix("YAML: ") == true)
        #expect(parseError("version: 1\njobs:\n\ta: {run: x}\n")?.code == .syntax)
    }

    @Test("Yams alone refuses a duplicate key, but at its first occurrence: why the prepass looks for them itself")
    func yamsDuplicateKeys() {
        do {
            _ = try Yams.compose(yaml: "a: 1\nb: 2\na: 3\n", Resolver.basic)
            Issue.record("Yams accepted a duplicate key")
        } catch let YamlError.duplicatedKeysInMapping(duplicates, context) {
            #expect(duplicates == ["a"])
            #expect((context.mark.line, context.mark.column) == (1, 1))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("Yams resolves aliases into copies of the anchored node: nothing of the anchor is left to see")
    func yamsResolvesAliases() throws {
        let node = try #require(try Yams.compose(yaml: "a: &x [1, 2]\nb: *x\n", Resolver.basic))
        #expect(node["b"] == node["a"])
        #expect(node["b"]?.mark?.line == 1)
    }
}
