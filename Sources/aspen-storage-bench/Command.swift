import ArgumentParser
import AspenStorage
import Foundation

@main
struct AspenStorageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen-storage-bench",
        abstract: "Measure Aspen's node store on this machine's disk.",
        subcommands: [Run.self, Snapshot.self, CheckLog.self, CrashWriterCommand.self],
        defaultSubcommand: Run.self)

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Raw fsync rate, commit rates by batch size, apply rates, read latencies.")

        @Option(help: "Directory for the benchmark files (on the disk to measure).")
        var directory: String = FileManager.default.temporaryDirectory.path

        @Option(help: "Multiplies the number of operations.")
        var scale: Int = 1

        @Option(help: "Run only single-entry commits, this many (for profiling).")
        var singleCommits: Int?

        func run() throws {
            let bench = StorageBench(directory: directory, scale: max(1, scale), print: { print($0) })
            if let count = singleCommits {
                let summary = try bench.commits(batch: 1, commits: count)
                print("single commits: p50 \(StorageBench.format(summary.percentile(0.5)))µs")
                return
            }
            try bench.run()
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "snapshot",
            abstract: "Stream a snapshot image between two stores: prepare, stage and install rates, and peak memory.")

        @Option(help: "Directory for the benchmark files (on the disk to measure).")
        var directory: String = FileManager.default.temporaryDirectory.path

        @Option(help: "Keys in the state.")
        var keys: Int = 100_000

        @Option(help: "Bytes of each value.")
        var valueBytes: Int = 1024

        @Option(help: "Versions written of each key (the history the image carries).")
        var rounds: Int = 2

        func run() throws {
            let bench = StorageBench(directory: directory, scale: 1, print: { print($0) })
            try bench.snapshotTransfer(keys: max(1, keys), valueBytes: max(0, valueBytes), rounds: max(1, rounds))
        }
    }

    /// The benchmarks write their own scratch stores (what they measure is writing); this one
    /// only looks, and never writes.
    struct CheckLog: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-log",
            abstract: "Read a node's log without changing it: what it holds, what opening it would cut, or why it is refused.")

        @Option(help: "The node's database (DATA_DIR/aspen.db); its log is beside it.")
        var path: String

        func run() throws {
            do {
                print(try SQLiteNodeStorage.inspectLog(path: path))
            } catch let error as StorageError {
                print("refused: \(error)")
                throw ExitCode(2)
            }
        }
    }

    struct CrashWriterCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "crash-writer",
            abstract: "Write batches until killed (used by the crash-safety test).",
            shouldDisplay: false)

        @Option(help: "The database to write.")
        var path: String

        @Option(help: "Stop after this many batches.")
        var batches: Int = 1_000_000

        func run() throws {
            try CrashWriter.run(path: path, batches: batches)
        }
    }
}
