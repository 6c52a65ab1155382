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
            reordering, duplication, partitions, crashes that lose unwritten data — on the \
            power-loss disk, bytes of the log write in flight, torn or dropped — slow nodes, \
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

    @Option(help: "Applied entries past its snapshot at which a node compacts its log (RaftNode's CompactionPolicy).")
    var compactionThreshold: UInt64 = SimulationOptions(seed: 0).compactionThreshold

    @Option(help: "How far apart the nodes' clocks may be, in milliseconds (leases expire by the leader's clock).")
    var clockSkewMs: Int64 = SimulationOptions(seed: 0).clockSkewMs

    @Option(help: "Concurrent clients.")
    var clients: Int = 3

    @Option(help: "The linearizability checker's search bound per key; a run it cannot decide within it fails.")
    var linearizabilityStepsMax: Int = Linearizability.stepsMaxDefault

    @Option(
        help: """
            What each node keeps its Raft log on: memory (a crash keeps exactly the writes that completed) or power-loss \
            (segment files on a disk whose power goes during writes, tearing them).
            """)
    var disk: String = SimulationOptions.Disk.powerLoss.rawValue

    @Flag(help: "Run without faults.")
    var noFaults = false

    @Flag(help: "Print the trace tail of every run, not only of failures.")
    var verbose = false

    @Flag(help: "Measure the Raft core's throughput instead of checking safety.")
    var bench = false

    mutating func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        guard SimulationOptions.Disk(rawValue: disk) != nil else {
            throw ValidationError("--disk must be one of \(SimulationOptions.Disk.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard clockSkewMs >= 0 else { throw ValidationError("--clock-skew-ms must not be negative") }
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
        var totals = (crashesDuringWrite: 0, crashesLosingUnsyncedBytes: 0, tornTailsCut: 0)
        for offset in 0..<seeds {
            var options = SimulationOptions(seed: seed + UInt64(offset), nodes: nodes, steps: steps, clients: clients)
            if noFaults { options.faults = .none }
            options.linearizabilityStepsMax = linearizabilityStepsMax
            options.disk = SimulationOptions.Disk(rawValue: disk) ?? .powerLoss
            options.compactionThreshold = compactionThreshold
            options.clockSkewMs = clockSkewMs
            let report = Simulation(options).run()
            print(report.summary)
            totals.crashesDuringWrite += report.crashesDuringWrite
            totals.crashesLosingUnsyncedBytes += report.crashesLosingUnsyncedBytes
            totals.tornTailsCut += report.tornTailsCut
            if !report.passed || verbose {
                for violation in report.violations { print("  violation: \(violation)") }
                print("  trace tail:")
                for line in report.traceTail { print("    \(line)") }
            }
            if !report.passed {
                failures.append(report.seed)
                print("  replay: aspen-sim --seeds 1 --seed \(report.seed) --nodes \(nodes) --steps \(steps) --clients \(clients)\(noFaults ? " --no-faults" : "") --disk \(disk) --compaction-threshold \(compactionThreshold) --clock-skew-ms \(clockSkewMs)\(linearizabilityStepsMax == Linearizability.stepsMaxDefault ? "" : " --linearizability-steps-max \(linearizabilityStepsMax)")")
            }
        }
        if disk == SimulationOptions.Disk.powerLoss.rawValue {
            print(
                "power-loss disk: \(totals.crashesDuringWrite) crashes during a write, \(totals.crashesLosingUnsyncedBytes) lost "
                    + "unsynced log bytes (torn or dropped), \(totals.tornTailsCut) restarts cut a torn tail off the log")
        }
        print("\(seeds - failures.count) passed, \(failures.count) failed")
        if !failures.isEmpty {
            print("failing seeds: \(failures.map(String.init).joined(separator: " "))")
            throw ExitCode(1)
        }
    }
}
