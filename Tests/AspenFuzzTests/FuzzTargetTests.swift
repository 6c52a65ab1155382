import AspenCore
import AspenFuzz
import Testing

/// The fuzz targets as part of `swift test`: every seed decodes (so mutation starts from valid,
/// deep structure, and a codec change that breaks the seeds is caught here), and a short run of
/// each target with a fixed seed finds no property failure. Long runs: `aspen-fuzz run`.
@Suite("Fuzz targets")
struct FuzzTargetTests {
    static let names = FuzzTarget.all.map(\.name)

    /// Executions per target in the short run: the etcd connection target drives a channel per
    /// input, so it runs fewer.
    static func shortRuns(_ name: String) -> Int { name == "etcd-grpc" ? 400 : 3000 }

    @Test("every seed input decodes and keeps its properties", arguments: names)
    func seedsDecode(name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let seeds = target.seeds
        #expect(seeds.count >= 2, "\(name) has \(seeds.count) seeds")
        for seed in seeds {
            #expect(target.run(seed) == .decoded, "\(name): seed \(seed.prefix(64)) (\(seed.count) bytes)")
        }
    }

    @Test("a short fuzz run finds no property failure", arguments: names)
    func shortRun(name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let seed: UInt64 = 20_250_601
        var runner = FuzzRunner(target: target, seed: seed, inputBytesMax: 4096)
        let report = runner.run(FuzzRunner.Budget(runs: Self.shortRuns(name)))
        for failure in report.failures.prefix(3) {
            Issue.record("\(name) (seed \(seed); replay the input with `aspen-fuzz replay`): \(failure.message)")
        }
        #expect(report.failures.count > 0 || report.executions == Self.shortRuns(name))
        #expect(report.decodedDistinct > target.seeds.count / 2, "\(name): mutation never reached a decodable input")
    }

    @Test("the mutator derives the same inputs from the same seed")
    func mutatorIsDeterministic() {
        let start: [[UInt8]] = [[1, 2, 3], [0x05, 0x05, 0x00]]
        func inputs(_ seed: UInt64) -> [[UInt8]] {
            var mutator = FuzzMutator(seed: seed, inputBytesMax: 512, nestingTokens: [[0x05]])
            return (0..<200).map { mutator.mutate(start[$0 % 2], corpus: start) }
        }
        #expect(inputs(7) == inputs(7))
        #expect(inputs(7) != inputs(8))
        #expect(inputs(7).allSatisfy { $0.count <= 512 })
    }
}
