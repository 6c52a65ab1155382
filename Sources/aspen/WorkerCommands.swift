import AspenClient
import AspenCore
import AspenJobs
import AspenNode
import AspenWorker
import ArgumentParser
import Foundation
import Logging

/// `aspen worker run`: a worker process on any machine that can reach the cluster.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run jobs of the cluster on this machine.", subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Claim and run jobs until interrupted (SIGINT/SIGTERM stop the jobs under way; they are retried elsewhere).",
            discussion: "aspen worker run --types shell --tags gpu=true,region=eu --concurrency 4")
        @OptionGroup var cluster: ClusterOptions
        @Option(help: "Job types to run (comma-separated; only shell runs anything here so far).") var types: String = "shell"
        @Option(help: "Tags this worker carries, NAME=VALUE,… (jobs may require them).") var tags: [String] = []
        @Option(help: "Jobs run at once.") var concurrency: Int = 1
        @Option(help: "This worker's name, recorded with each attempt (default: HOST-PID).") var name: String?
        @Option(help: "Lease per attempt, renewed every third of it (250ms … 10m).") var lease: String = "30s"
        @Option(help: "Output of one attempt kept, in bytes.") var outputMax: Int = 1 << 20
        @Option(help: "Run shell jobs in this directory.") var workingDirectory: String?

        func run() async throws {
            try await runJob {
                let types = types.split(separator: ",").map(String.init)
                guard !types.isEmpty else { throw CLIError.badInput("--types needs at least one job type") }
                guard (1...256).contains(concurrency) else { throw CLIError.badInput("--concurrency takes 1 to 256") }
                let leaseMs = try JobDuration.parseMs(lease)
                guard (250...600_000).contains(leaseMs) else { throw CLIError.badInput("--lease takes 250ms to 10m") }
                var logger = Logger(label: "aspen.worker")
                logger.logLevel = .info
                let worker = JobWorker(
                    calls: try await cluster.client(),
                    options: JobWorkerOptions(
                        name: name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())", types: types, tags: try parseTags(tags),
                        concurrency: concurrency, leaseMs: leaseMs, outputBytesMax: outputMax,
                        environment: ProcessInfo.processInfo.environment, workingDirectory: workingDirectory),
                    logger: logger)
                let running = Task { await worker.run() }
                logger.info("worker running", metadata: ["types": "\(types.joined(separator: ","))", "concurrency": "\(concurrency)"])
                // Until SIGINT or SIGTERM: then jobs under way are stopped and reported.
                await waitForTerminationSignal()
                logger.info("stopping: jobs under way are stopped and reported")
                running.cancel()
                await running.value
                let (succeeded, failed, lost) = worker.finished
                logger.info("worker stopped", metadata: ["succeeded": "\(succeeded)", "failed": "\(failed)", "lost": "\(lost)"])
            }
        }
    }
}
