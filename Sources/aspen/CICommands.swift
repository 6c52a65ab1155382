import AspenCI
import AspenNode
import AspenCore
import ArgumentParser
import Foundation

/// `aspen ci …`: pipelines defined in `.aspen/ci.yml` (docs/ci.md).
struct CICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ci", abstract: "CI pipelines defined in the repository's .aspen/ci.yml.",
        subcommands: [Lint.self, Run.self])

    /// The pipeline in `file`, or an error with FILE:LINE:COLUMN.
    static func load(_ file: String, limits: Limits = .standard) throws -> Pipeline {
        let bytes = try Lint.read(file, bytesMax: limits.ciPipelineFileBytesMax)
        do throws(PipelineError) {
            return try Pipeline(yaml: bytes, limits: limits)
        } catch {
            throw CLIError.badInput(error.line > 0 ? "\(file):\(error.line):\(error.column): \(error.message)" : "\(file): \(error.message)")
        }
    }

    struct Lint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a pipeline file with the node's own parser; print its jobs in the order they run.",
            discussion: """
                Unknown and duplicate keys, wrong types, unknown `needs`, cycles and bad interpolations are
                errors with FILE:LINE:COLUMN. Exit status 0 when the file is valid, 4 when it is not.
                """)
        @Argument(help: "The pipeline file.") var file = ".aspen/ci.yml"
        @Flag(help: "Print the plan as JSON.") var json = false

        func run() async throws {
            try await runReporting {
                let pipeline = try CICommand.load(file)
                let jobs: [[String: Any]] = pipeline.plan.map { job in
                    ["name": job.name, "job": job.jobName, "needs": job.needs, "matrix": Dictionary(uniqueKeysWithValues: job.matrix.map { ($0.axis, $0.value) })]
                }
                let text = pipeline.plan.map { job in job.needs.isEmpty ? job.name : "\(job.name)\tafter \(job.needs.joined(separator: ", "))" }
                output(json, ["file": file, "jobs": jobs], text: (["\(file): \(pipeline.plan.count) jobs"] + text).joined(separator: "\n"))
            }
        }

        /// The file, refused past `bytesMax` before it is read whole.
        static func read(_ path: String, bytesMax: Int) throws -> [UInt8] {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIError.notFound("\(path): no such file") }
            defer { try? handle.close() }
            let data = try handle.read(upToCount: bytesMax + 1) ?? Data()
            guard data.count <= bytesMax else {
                throw CLIError.badInput("\(path) is larger than ciPipelineFileBytesMax (\(bytesMax) bytes)")
            }
            return Array(data)
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the pipeline: with --local, the working tree's, on this machine, with the cluster's parser and executor.",
            discussion: """
                Jobs run one at a time in the order the cluster would start them, in the working tree, each with
                `bash -eo pipefail -c`, its timeout and retries; a job whose needs did not succeed is skipped
                unless its `if` says otherwise. Secrets a job names are taken from this shell's environment.
                Exit status 0 when every job succeeded or was skipped, 2 when one failed or was cancelled
                (SIGINT stops the job under way, its whole process group, and cancels the rest).
                """)
        @Flag(help: "Run here, without a cluster.") var local = false
        @Option(help: "The pipeline file.") var file = ".aspen/ci.yml"
        @Option(help: "The ref the run is for (default: the checked-out branch).") var ref: String?
        @Option(name: .customLong("job"), help: "Run only this job (and what it needs); may be repeated.") var jobs: [String] = []

        func run() async throws {
            try await runReporting {
                guard local else {
                    throw CLIError.badInput("runs on the cluster are not available yet; `aspen ci run --local` runs the pipeline here")
                }
                let limits = Limits.standard
                let pipeline = try CICommand.load(file, limits: limits)
                let unknown = jobs.filter { name in !pipeline.plan.contains { $0.name == name || $0.jobName == name } }
                guard unknown.isEmpty else { throw CLIError.notFound("no job named \(unknown.joined(separator: ", ")) in \(file)") }
                let here = FileManager.default.currentDirectoryPath
                let root = CILocalRun.git(["rev-parse", "--show-toplevel"], in: here) ?? here
                let ref = self.ref ?? CILocalRun.git(["symbolic-ref", "-q", "HEAD"], in: root) ?? "refs/heads/local"
                let sha = CILocalRun.git(["rev-parse", "HEAD"], in: root) ?? ""
                let local = CILocalRun(pipeline: pipeline, root: root, ref: ref, sha: sha, only: Set(jobs), limits: limits, hashes: FileHashes(root: root))
                // SIGINT or SIGTERM stops the job under way (its whole process group) and cancels the rest.
                let running = Task { try await local.run() }
                let interrupt = Task {
                    await waitForTerminationSignal()
                    running.cancel()
                }
                let results = try await running.value
                interrupt.cancel()
                let failed = results.filter { result in
                    result.outcome == .cancelled
                        || (result.outcome == .failure
                            && pipeline.plan.first { $0.name == result.name }.flatMap { pipeline.job(named: $0.jobName) }?.continueOnError != true)
                }
                let counts = Dictionary(grouping: results, by: \.outcome).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
                CILocalRun.say("\(results.count) jobs: \(counts.joined(separator: ", "))")
                if !failed.isEmpty { throw CLIError.conditionFailed("failed or cancelled: \(failed.map(\.name).joined(separator: ", "))") }
            }
        }
    }
}
