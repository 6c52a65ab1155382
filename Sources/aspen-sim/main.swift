import AspenCore
import AspenRaft
import AspenTesting
import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct AspenSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen-sim",
        abstract: "Run Aspen's Raft core in the deterministic cluster simulator.",
        discussion: """
            Each seed is one complete run: a safety phase with faults (message loss, delay, \
            reordering, duplication, partitions, crashes that lose unwritten data, slow nodes, \
            membership changes, leadership transfers, snapshots), then a liveness phase without \
            faults. Invariants are checked after every step and the client history is checked \
            for linearizability. A failing seed replays exactly with --seed.
            """)

    @Option(help: "Number of consecutive seeds to run, starting at --seed.")
    var seeds: Int = 100

    @Option(help: "First seed.")
    var seed: UInt64 = 1

    @Option(help: "Cluster size (1-9).")
    var nodes: Int = 5

    @Option(help: "Events in the safety phase of each run.")
    var steps: Int = 20_000

    @Option(help: "Concurrent clients.")
    var clients: Int = 3

    @Option(help: "The linearizability checker's search bound per key; a run it cannot decide within it fails.")
    var linearizabilityStepsMax: Int = Linearizability.stepsMaxDefault

    @Flag(help: "Run without faults.")
    var noFaults = false

    @Flag(help: "Print the trace tail of every run, not only of failures.")
    var verbose = false

    @Flag(help: "Measure the Raft core's throughput instead of checking safety.")
    var bench = false

    mutating func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        guard seeds > 0, steps > 0, clients >= 0, linearizabilityStepsMax > 0 else {
            throw ValidationError("--seeds, --steps and --linearizability-steps-max must be positive, --clients not negative")
        }
    }

    func run() throws {
        if bench {
            RaftBenchmark.runAll(print: { print($0) })
            return
        }
        var failures: [UInt64] = []
        for offset in 0..<seeds {
            var options = SimulationOptions(seed: seed + UInt64(offset), nodes: nodes, steps: steps, clients: clients)
            if noFaults { options.faults = .none }
            options.linearizabilityStepsMax = linearizabilityStepsMax
            let report = Simulation(options).run()
            print(report.summary)
            if !report.passed || verbose {
                for violation in report.violations { print("  violation: \(violation)") }
                print("  trace tail:")
                for line in report.traceTail { print("    \(line)") }
            }
            if !report.passed {
                failures.append(report.seed)
                print("  replay: aspen-sim --seeds 1 --seed \(report.seed) --nodes \(nodes) --steps \(steps) --clients \(clients)\(noFaults ? " --no-faults" : "")\(linearizabilityStepsMax == Linearizability.stepsMaxDefault ? "" : " --linearizability-steps-max \(linearizabilityStepsMax)")")
            }
        }
        print("\(seeds - failures.count) passed, \(failures.count) failed")
        if !failures.isEmpty {
            print("failing seeds: \(failures.map(String.init).joined(separator: " "))")
            throw ExitCode(1)
        }
    }
}
