import AspenCore
import AspenFuzz
import ArgumentParser
import Foundation

/// `aspen-fuzz`: Aspen's decoders under mutation-based fuzzing, one target per decoder.
struct AspenFuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen-fuzz",
        abstract: "Fuzz Aspen's decoders: every input a node or client reads from outside.",
        discussion: """
            Each target decodes mutated inputs, starting from valid encodings of representative \
            values, and checks that a decoded value survives its own encoding and stays within its \
            bounds. Workers run in child processes: an input that traps (or hangs) is saved as \
            crash-TARGET-HASH and replays with `aspen-fuzz replay FILE --target TARGET`.
            """,
        subcommands: [List.self, Run.self, Replay.self, Worker.self])
}

extension AspenFuzzCommand {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the targets.")

        func run() {
            for target in FuzzTarget.all { print("\(target.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(target.summary)") }
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fuzz one target, or all of them one after another.")

        @Argument(help: "A target's name (see `list`), or `all`.")
        var target: String

        @Option(help: "Seconds per target (default 10 when --runs is not given).")
        var seconds: Double?

        @Option(help: "Executions per target.")
        var runs: Int?

        @Option(help: "Seed of the first worker; each worker after a crash takes the next one.")
        var seed: UInt64 = 1

        @Option(help: "Extra inputs: files in DIR/TARGET, or in DIR itself.")
        var corpus: String?

        @Option(help: "Where reproducers are saved.")
        var output: String = "."

        @Option(help: "Largest input the mutator makes, in bytes.")
        var inputBytesMax: Int = FuzzMutator.inputBytesMaxDefault

        @Option(help: "Seconds without an execution after which a worker is taken as hung.")
        var hangSeconds: Double = 20

        @Option(help: "Reproducers saved per target before it stops.")
        var crashesMax: Int = 5

        mutating func validate() throws {
            guard target == "all" || FuzzTarget.named(target) != nil else { throw ValidationError("unknown target \(target); see `aspen-fuzz list`") }
            guard seconds.map({ $0 > 0 }) ?? true, runs.map({ $0 > 0 }) ?? true, inputBytesMax > 0, hangSeconds > 0, crashesMax > 0 else {
                throw ValidationError("--seconds, --runs, --input-bytes-max, --hang-seconds and --crashes-max must be positive")
            }
            if seconds == nil && runs == nil { seconds = 10 }
        }

        func run() throws {
            let targets = target == "all" ? FuzzTarget.all : [FuzzTarget.named(target)!]
            let supervisor = Supervisor(
                seed: seed, budget: FuzzRunner.Budget(runs: runs, duration: seconds.map { .milliseconds(Int64($0 * 1000)) }), corpus: corpus,
                output: output, inputBytesMax: inputBytesMax, hangSeconds: hangSeconds, crashesMax: crashesMax)
            print("target                 executions      exec/s   decoded   refusals   crashes   seconds")
            var crashes = 0
            for target in targets {
                let summary = try supervisor.fuzz(target)
                crashes += summary.crashes.count
                print(summary.line)
                for crash in summary.crashes { print("  \(crash)") }
            }
            if crashes > 0 { throw ExitCode(1) }
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a target on saved inputs, in this process, to reproduce a crash.")

        @Argument(help: "Input files.")
        var files: [String]

        @Option(help: "The target that crashed on them.")
        var target: String

        func run() throws {
            guard let fuzzTarget = FuzzTarget.named(target) else { throw ValidationError("unknown target \(target); see `aspen-fuzz list`") }
            for file in files {
                let input = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
                print("\(file): \(input.count) bytes: \(hex(input))")
                // Before the target runs: if it traps, this is already out.
                fflush(nil)
                switch fuzzTarget.run(input) {
                case .decoded: print("  decoded; every property holds")
                case .rejected(let shape): print("  refused, with an error of the kind: \(shape)")
                case .failed(let message): fatalError("\(target): \(message)")
                }
            }
        }
    }

    /// One worker: fuzzes in this process, keeping each input in the supervisor's record file.
    struct Worker: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run by `run`: one worker process.", shouldDisplay: false)

        @Option var target: String
        @Option var seed: UInt64
        @Option var runs: Int?
        @Option var milliseconds: Int64?
        @Option var record: String
        @Option var inputBytesMax: Int
        @Option var corpus: String?

        func run() throws {
            guard let fuzzTarget = FuzzTarget.named(target) else { throw ValidationError("unknown target \(target)") }
            let record = try InputRecord(path: self.record, inputBytesMax: inputBytesMax)
            var runner = FuzzRunner(
                target: fuzzTarget, seed: seed, corpus: try Corpus.load(corpus, target: target), inputBytesMax: inputBytesMax)
            // A property failure traps (with its message, which `precondition` drops in release
            // builds): the supervisor saves the input from the record as for any other trap.
            let report = runner.run(FuzzRunner.Budget(runs: runs, duration: milliseconds.map { .milliseconds($0) }), beforeEach: record.keep) {
                _, message in fatalError("\(fuzzTarget.name): \(message)")
            }
            print("report \(report.executions) \(report.decodedDistinct) \(report.rejectionKinds) \(report.pool)")
        }
    }
}

/// Saved inputs, as extra seeds.
enum Corpus {
    static func load(_ directory: String?, target: String) throws -> [[UInt8]] {
        guard let directory else { return [] }
        let files = FileManager.default
        var isDirectory: ObjCBool = false
        let own = directory + "/" + target
        let chosen = files.fileExists(atPath: own, isDirectory: &isDirectory) && isDirectory.boolValue ? own : directory
        return try files.contentsOfDirectory(atPath: chosen).sorted().compactMap { name in
            let path = chosen + "/" + name
            guard files.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { return nil }
            return try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        }
    }
}

func hex(_ bytes: [UInt8], max: Int = 512) -> String {
    let shown = bytes.prefix(max).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    return bytes.count > max ? shown + "…" : shown
}
