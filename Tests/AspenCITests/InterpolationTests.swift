import AspenCore
import Testing

@testable import AspenCI

struct HashFailure: Error, CustomStringConvertible {
    var description: String { "no such file" }
}

/// `${…}`: the fixed set, its escape, and the values a run gives it.
struct InterpolationTests {
    func context(matrix: [MatrixBinding] = []) -> InterpolationContext {
        InterpolationContext(ref: "refs/heads/main", sha: "abc123", event: .push, matrix: matrix) { path in
            guard path == "Package.resolved" else { throw HashFailure() }
            return "h-\(path.count)"
        }
    }

    @Test("each form is replaced; $${ is a literal ${; other dollars stay")
    func expansion() throws {
        let text = "${ref} ${sha} ${event} ${matrix.os} ${hash:Package.resolved} $${HOME} $PATH $ {x} cost: $5"
        let expanded = try Interpolation.expand(text, in: context(matrix: [MatrixBinding(axis: "os", value: "linux")]))
        #expect(expanded == "refs/heads/main abc123 push linux h-16 ${HOME} $PATH $ {x} cost: $5")
        #expect(try Interpolation.expand("no references", in: context()) == "no references")
        #expect(try Interpolation.expand("${ref}${sha}", in: context()) == "refs/heads/mainabc123")
    }

    @Test("the references of a text, in order")
    func references() throws {
        #expect(try Interpolation.references(in: "a ${sha} b ${matrix.x} ${hash:a/b.lock}") == [.sha, .matrix("x"), .hash(path: "a/b.lock")])
    }

    @Test("anything outside the set is refused, naming it")
    func refusals() {
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${env.HOME}") }
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${ ref }") }
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${matrix.}") }
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${hash:../secret}") }
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${hash:/etc/passwd}") }
        #expect(throws: PipelineError.self) { try Interpolation.references(in: "${hash:}") }
        do {
            _ = try Interpolation.references(in: "echo ${secrets.TOKEN}")
            Issue.record("accepted ${secrets.TOKEN}")
        } catch {
            #expect(error.code == .interpolation)
            #expect(error.message.hasPrefix("unknown interpolation '${secrets.TOKEN}' (expected ${ref}, ${sha}, ${event}"))
        }
        do {
            _ = try Interpolation.references(in: "echo ${ref")
            Issue.record("accepted an unterminated ${")
        } catch {
            #expect(error.message == "unterminated '${ref': a '${' needs its '}' (write $${ for a literal ${)")
        }
    }

    @Test("a value the run cannot give is an error naming the reference")
    func missingValues() {
        #expect(throws: PipelineError(.interpolation, "${matrix.os} has no value in this job")) {
            try Interpolation.expand("${matrix.os}", in: context())
        }
        #expect(throws: PipelineError(.interpolation, "${hash:missing.lock} could not be computed: no such file")) {
            try Interpolation.expand("${hash:missing.lock}", in: context())
        }
        var limits = Limits()
        limits.ciInterpolatedBytesMax = 20
        #expect(throws: PipelineError.self) { try Interpolation.expand("${ref}${ref}", in: context(), limits: limits) }
    }

    @Test("a planned job resolves its run, environment and cache key with its own matrix values")
    func resolveJob() throws {
        let pipeline = try Pipeline(yaml: examplePipeline)
        let release = try #require(pipeline.plan.first { $0.name == "test (config=release)" })
        let resolved = try pipeline.resolve(release, in: context(matrix: [MatrixBinding(axis: "config", value: "ignored")]))
        #expect(resolved == ResolvedJob(name: "test (config=release)", run: "swift test -c release", env: ["A": "b"], cacheKey: nil))
        let build = try pipeline.resolve(pipeline.plan[0], in: context())
        #expect(build.cacheKey == "spm-h-16")
        #expect(try pipeline.concurrencyGroup(in: context()) == "refs/heads/main")
    }
}
