import AspenCore
import Testing

@testable import AspenCI

/// The stored form of a pipeline: deterministic, and a decoder that refuses what it did not write.
struct PipelineEncodingTests {
    static let rich = """
        version: 1
        triggers:
          push: {branches: [main], paths: ["src/**"]}
          patch: {branches: ["release/*"], paths_ignore: ["**/*.md"]}
          manual: {}
        concurrency: {group: "ci-${ref}"}
        jobs:
          a: {run: "echo \\"hi\\"", env: {Z: "1", B: "${sha}", M: x}, tags: [linux, "gpu=1"], timeout: 1h}
          b: {run: y, needs: [a], if: 'ref == "x\\\\y" || (event == "push" && status != "failure")', retry: {max: 3}}
          c: {run: z, needs: [a, b], matrix: {os: [l, m], v: ["1", "2"]}, fail_fast: false, max_parallel: 1, secrets: [T], continue_on_error: true}
        """

    @Test("a pipeline decodes back to itself, from bytes that do not depend on dictionary order")
    func roundTrip() throws {
        for yaml in [examplePipeline, Self.rich, pipelineFile(jobs: "  a: {run: x}\n")] {
            let pipeline = try Pipeline(yaml: yaml)
            let bytes = pipeline.encoded()
            #expect(bytes.first == 1)
            #expect(try Pipeline(decoding: bytes) == pipeline)
            #expect(try Pipeline(yaml: yaml).encoded() == bytes)
        }
        let condition = try #require(try Pipeline(yaml: Self.rich).job(named: "b")?.condition)
        #expect(condition.evaluate(in: ConditionContext(ref: #"x\y"#, event: .manual)))
    }

    @Test("every truncation of a stored pipeline is refused")
    func truncated() throws {
        let bytes = try Pipeline(yaml: Self.rich).encoded()
        for length in 0..<bytes.count {
            #expect(throws: PipelineError.self, "length \(length)") { try Pipeline(decoding: Array(bytes[..<length])) }
        }
    }

    @Test("a wrong version, trailing bytes, huge counts and invalid contents are refused")
    func garbled() throws {
        let bytes = try Pipeline(yaml: examplePipeline).encoded()
        var version = bytes
        version[0] = 2
        #expect(throws: PipelineError(.encoding, "a stored pipeline has an unknown format version")) { try Pipeline(decoding: version) }
        do {
            _ = try Pipeline(decoding: bytes + [0])
            Issue.record("trailing byte accepted")
        } catch {
            #expect(error.code == .encoding)
        }
        // Flags, then a branch count of 2^63: refused by the count's bound, not by running out of memory.
        let huge: [UInt8] = [1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]
        #expect(throws: PipelineError.self) { try Pipeline(decoding: huge) }
        #expect(throws: PipelineError.self) { try Pipeline(decoding: [1, 0x80]) }
        var limits = Limits()
        limits.ciPipelineEncodedBytesMax = 16
        #expect(throws: PipelineError.self) { try Pipeline(decoding: bytes, limits: limits) }
        // A job whose name the file format would refuse, written by hand.
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.write(UInt8(0))
        writer.write(false)
        writer.writeVarint(1)
        Pipeline.write(Job(name: "no spaces allowed", run: "x"), to: &writer)
        #expect(throws: PipelineError.self) { try Pipeline(decoding: writer.bytes) }
    }

    @Test("random corruption never crashes the decoder, and what it accepts is a valid pipeline (seed printed)")
    func corruption() throws {
        let bytes = try Pipeline(yaml: Self.rich).encoded()
        let seed: UInt64 = 0xC1_2026
        var random = SplitMix64(seed: seed)
        for round in 0..<2000 {
            var mutated = bytes
            for _ in 0...random.next(in: 0...3) {
                let index = Int(random.next(in: 0...UInt64(mutated.count - 1)))
                mutated[index] = UInt8(truncatingIfNeeded: random.next())
            }
            if let decoded = try? Pipeline(decoding: mutated) {
                #expect(try Pipeline(decoding: decoded.encoded()) == decoded, "seed \(seed), round \(round)")
            }
        }
    }
}
