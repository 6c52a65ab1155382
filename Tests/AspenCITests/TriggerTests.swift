import AspenCore
import Testing

@testable import AspenCI

/// Globs, and which events start a run.
struct TriggerTests {
    @Test("`*` stays within a segment, `**` crosses segments (none included), `?` is one character")
    func globs() throws {
        let cases: [(String, String, Bool)] = [
            ("release/*", "release/1.0", true), ("release/*", "release/1/2", false), ("release/*", "release", false),
            ("src/**", "src/a.swift", true), ("src/**", "src/a/b/c.swift", true), ("src/**", "src", true), ("src/**", "srcx/a", false),
            ("**/*.md", "README.md", true), ("**/*.md", "docs/x/y.md", true), ("**/*.md", "docs/x/y.mdx", false),
            ("a/**/b", "a/b", true), ("a/**/b", "a/x/y/b", true), ("a/**/b", "a/x/y/c", false), ("a/**/b/**/c", "a/1/b/2/b/3/c", true),
            ("v?", "v1", true), ("v?", "v10", false), ("v?", "v", false), ("*", "main", true), ("*", "feature/x", false),
            ("**", "feature/x/y", true), ("*.swift", "a.swift", true), ("*.swift", "dir/a.swift", false), ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false), ("main", "main", true), ("main", "maint", false), ("é*", "éclair", true), ("?", "é", true),
        ]
        for (pattern, text, expected) in cases {
            #expect(try Glob(pattern).matches(text) == expected, "\(pattern) ~ \(text)")
        }
    }

    @Test("matching time stays polynomial on patterns that make naive matchers backtrack exponentially")
    func pathologicalPatterns() throws {
        let stars = try Glob(String(repeating: "a*", count: 30) + "b")
        #expect(!stars.matches(String(repeating: "a", count: 200)))
        let segments = try Glob(String(repeating: "**/a/", count: 20) + "b")
        #expect(!segments.matches(Array(repeating: "a", count: 200).joined(separator: "/")))
    }

    @Test("patterns that cannot mean what they say are refused", arguments: ["", "/abs", "a//b", "a/", "**.swift", "src/a**", "a\u{01}b"])
    func badPatterns(pattern: String) {
        #expect(throws: PipelineError.self) { try Glob(pattern) }
    }

    func decide(_ kind: TriggerKind, _ ref: String, _ paths: [String] = [], yaml: String = examplePipeline, limits: Limits = .standard) throws
        -> TriggerDecision
    {
        try Pipeline(yaml: yaml).decide(TriggerEvent(kind: kind, ref: ref, changedPaths: paths), limits: limits)
    }

    @Test("pushes: branch and tag patterns, path filters, paths_ignore leading to skip-all")
    func pushes() throws {
        #expect(try decide(.push, "refs/heads/main", ["src/a.swift"]) == .run)
        #expect(try decide(.push, "refs/heads/release/2.0", ["src/a.swift", "docs/x.md"]) == .run)
        #expect(try decide(.push, "refs/heads/feature", ["src/a.swift"]) == .notTriggered(reason: "branch 'feature' matches no push branch pattern"))
        #expect(try decide(.push, "refs/heads/main", ["docs/a.md", "docs/b/c.md"]) == .skipAll(reason: "every changed path matches paths_ignore"))
        #expect(try decide(.push, "refs/heads/main", ["README.md"]) == .skipAll(reason: "no changed path matches paths"))
        #expect(try decide(.push, "refs/heads/main", []) == .run)
        #expect(try decide(.push, "refs/tags/v1.2", ["docs/a.md"]) == .run)
        #expect(try decide(.push, "refs/tags/release-1") == .notTriggered(reason: "tag 'release-1' matches no push tag pattern"))
        #expect(try decide(.push, "refs/notes/commits") == .notTriggered(reason: "a push must update refs/heads/… or refs/tags/…, not refs/notes/commits"))
        var limits = Limits()
        limits.ciChangedPathsMax = 2
        #expect(try decide(.push, "refs/heads/main", ["docs/a", "docs/b", "docs/c"], limits: limits) == .run)
    }

    @Test("patches: refs/for/<branch> only, untrusted; manual runs need the manual trigger")
    func patchesAndManual() throws {
        #expect(try decide(.patch, "refs/for/main", ["src/a.swift"]) == .run)
        #expect(try decide(.patch, "refs/for/main%topic=x") == .run)
        // No target before the options: not a patch of any branch.
        #expect(try decide(.patch, "refs/for/%main") == .notTriggered(reason: "a patch's ref must be refs/for/<branch>, not refs/for/%main"))
        #expect(try decide(.patch, "refs/heads/main") == .notTriggered(reason: "a patch's ref must be refs/for/<branch>, not refs/heads/main"))
        #expect(try decide(.manual, "refs/heads/main") == .notTriggered(reason: "the pipeline has no manual trigger"))
        #expect(!TriggerKind.patch.isTrusted && TriggerKind.push.isTrusted && TriggerKind.manual.isTrusted)
        let filtered = "version: 1\ntriggers:\n  patch: {branches: [main], paths_ignore: [\"**/*.md\"]}\njobs:\n  a: {run: x}\n"
        #expect(try decide(.patch, "refs/for/dev", yaml: filtered) == .notTriggered(reason: "target branch 'dev' matches no patch branch pattern"))
        #expect(try decide(.patch, "refs/for/main", ["README.md", "a/b.md"], yaml: filtered) == .skipAll(reason: "every changed path matches paths_ignore"))
        #expect(try decide(.push, "refs/heads/main", yaml: filtered) == .notTriggered(reason: "the pipeline has no push trigger"))
    }

    @Test("without triggers: pushes to any branch and manual runs, no tags, no patches")
    func defaultTriggers() throws {
        let plain = pipelineFile(jobs: "  a: {run: x}\n")
        #expect(try decide(.push, "refs/heads/anything/at/all", ["x"], yaml: plain) == .run)
        #expect(try decide(.manual, "refs/heads/main", yaml: plain) == .run)
        #expect(try decide(.push, "refs/tags/v1", yaml: plain) == .notTriggered(reason: "tag 'v1' matches no push tag pattern"))
        #expect(try decide(.patch, "refs/for/main", yaml: plain) == .notTriggered(reason: "the pipeline has no patch trigger"))
    }

    @Test("[skip ci] and [ci skip] in a commit message, in any case")
    func skipMarkers() {
        #expect(CommitMessage.requestsSkippingCI("Fix typo [skip ci]"))
        #expect(CommitMessage.requestsSkippingCI("Docs\n\n[CI SKIP] nothing to build"))
        #expect(!CommitMessage.requestsSkippingCI("skip ci"))
        #expect(!CommitMessage.requestsSkippingCI("[skip-ci]"))
    }
}
