import AspenBlob
import AspenCI
import AspenCore
import AspenWorker
import Foundation
import Synchronization

/// `aspen ci run --local`: the pipeline of the working tree, run on this machine with the
/// cluster's parser, job graph, interpolation, conditions and shell executor (`ShellRunner`:
/// `bash -eo pipefail -c`, its own process group, nothing left running after a job). Jobs run
/// one at a time in plan order, in the working tree; secrets come from this environment.
struct CILocalRun {
    let pipeline: Pipeline
    let root: String
    let ref: String
    let sha: String
    let only: Set<String>
    let limits: Limits
    let hashes: FileHashes

    struct Result {
        var name: String
        var outcome: JobOutcome
        var detail: String
    }

    /// Runs the plan; returns each job's outcome in plan order.
    func run() async throws -> [Result] {
        var ended: [String: JobOutcome] = [:]
        var results: [Result] = []
        let wanted = selected()
        let runner = ShellRunner()
        // Matrix jobs one of whose expansions failed, with fail_fast: their other expansions
        // are cancelled, as on the cluster.
        var failedFast: Set<String> = []
        for planned in pipeline.plan where wanted.contains(planned.name) {
            let result: Result
            if Task.isCancelled {
                result = Result(name: planned.name, outcome: .cancelled, detail: "interrupted")
            } else if failedFast.contains(planned.jobName) {
                result = Result(name: planned.name, outcome: .cancelled, detail: "fail_fast: another expansion of '\(planned.jobName)' failed")
            } else {
                switch pipeline.decide(planned, ended: ended, ref: ref, event: .manual) {
                case .skip(let reason):
                    result = Result(name: planned.name, outcome: .skipped, detail: reason)
                case .run:
                    result = try await run(planned, runner: runner)
                }
            }
            if result.outcome == .failure, !planned.matrix.isEmpty, pipeline.job(named: planned.jobName)?.failFast == true {
                failedFast.insert(planned.jobName)
            }
            ended[planned.name] = result.outcome
            results.append(result)
            Self.say("== \(result.name): \(result.outcome.rawValue) (\(result.detail))")
        }
        return results
    }

    /// The planned jobs to run: those named with `--job` (a file job names all its
    /// expansions) and every job they need; all of them when none is named.
    func selected() -> Set<String> {
        guard !only.isEmpty else { return Set(pipeline.plan.map(\.name)) }
        var chosen = Set(pipeline.plan.filter { only.contains($0.name) || only.contains($0.jobName) }.map(\.name))
        for planned in pipeline.plan.reversed() where chosen.contains(planned.name) { chosen.formUnion(planned.needs) }
        return chosen
    }

    func run(_ planned: PlannedJob, runner: ShellRunner) async throws -> Result {
        guard let job = pipeline.job(named: planned.jobName) else { return Result(name: planned.name, outcome: .failure, detail: "no such job") }
        let context = InterpolationContext(ref: ref, sha: sha, event: .manual, hashOfPath: hashes.hash)
        let resolved: ResolvedJob
        do {
            resolved = try pipeline.resolve(planned, in: context, limits: limits)
        } catch {
            return Result(name: planned.name, outcome: .failure, detail: "\(error)")
        }
        let environment = environment(job, resolved, planned)
        let command = ShellCommand(
            arguments: ["bash", "-eo", "pipefail", "-c", resolved.run], environment: environment, workingDirectory: root,
            timeoutMs: job.timeoutMs, outputBytesMax: limits.jobOutputBytesMax)
        // The secrets it names are masked in its output, as on the cluster.
        let secrets = job.secrets.compactMap { environment[$0] }
        var attempt = 0
        while true {
            attempt += 1
            Self.say("== \(planned.name): running\(attempt > 1 ? " (attempt \(attempt))" : "")")
            let outcome: ShellOutcome
            do {
                let mask = Mutex(SecretMask(secrets))
                outcome = try await runner.run(command, marker: "aspen-ci-local-\(getpid())-\(attempt)-\(UUID().uuidString)") { chunk in
                    FileHandle.standardOutput.write(Data(mask.withLock { $0.mask(chunk.bytes) }))
                }
                FileHandle.standardOutput.write(Data(mask.withLock { $0.mask([], final: true) }))
            } catch is CancellationError {
                return Result(name: planned.name, outcome: .cancelled, detail: "interrupted")
            } catch {
                return Result(name: planned.name, outcome: .failure, detail: "it could not run: \(error)")
            }
            if outcome.truncated { Self.say("== \(planned.name): output past jobOutputBytesMax (\(limits.jobOutputBytesMax) bytes) was dropped") }
            let seconds = String(format: "%.1f s", Double(outcome.runMs) / 1000)
            if outcome.cancelled { return Result(name: planned.name, outcome: .cancelled, detail: "interrupted after \(seconds)") }
            if outcome.succeeded { return Result(name: planned.name, outcome: .success, detail: "exit code 0, \(seconds)") }
            let why = outcome.timedOut ? "timed out after \(job.timeoutMs / 1000) s" : "\(outcome.termination), \(seconds)"
            if let retry = job.retry, attempt <= retry.retriesMax, case .exited(let code) = outcome.termination,
                retry.onExitCodes.isEmpty || retry.onExitCodes.contains(Int(code)), !outcome.timedOut
            {
                continue
            }
            return Result(name: planned.name, outcome: .failure, detail: why + (attempt > 1 ? ", \(attempt) attempts" : ""))
        }
    }

    /// What a job's processes see (`JobEnvironment`, as on the cluster); the secrets it names
    /// come from this shell, as a local run has no secrets engine.
    func environment(_ job: Job, _ resolved: ResolvedJob, _ planned: PlannedJob) -> [String: String] {
        let mine = ProcessInfo.processInfo.environment
        var own = resolved.env
        for binding in planned.matrix { own[MatrixAxis.environmentName(binding.axis)] = binding.value }
        let secrets = Dictionary(uniqueKeysWithValues: job.secrets.compactMap { name in mine[name].map { (name, $0) } })
        let repo = (root as NSString).lastPathComponent
        return JobEnvironment.make(
            from: mine, own: own, secrets: secrets,
            run: JobEnvironment.Run(mode: "local", repo: repo, run: nil, ref: ref, sha: sha, event: .manual, job: planned.name, attempt: 1))
    }

    /// A line on standard output, unbuffered like the jobs' output written between such lines.
    static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    /// `git -C root ARGUMENTS`'s first line, or nil when git fails (not a repository).
    static func git(_ arguments: [String], in directory: String) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "-C", directory] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init)
    }
}

/// `${hash:PATH}` of the working tree: the BLAKE3 of a regular file (not followed through a
/// link), at most `fileBytesMax`, each computed once per run.
final class FileHashes: @unchecked Sendable {
    // @unchecked: used by one local run, one job at a time.
    let root: String
    let fileBytesMax: Int
    private var known: [String: String] = [:]

    init(root: String, fileBytesMax: Int = 64 << 20) {
        self.root = root
        self.fileBytesMax = fileBytesMax
    }

    func hash(_ path: String) throws -> String {
        if let hash = known[path] { return hash }
        let full = (root as NSString).appendingPathComponent(path)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: full) else {
            throw CLIError.notFound("\(path): no such file in the working tree")
        }
        guard attributes[.type] as? FileAttributeType == .typeRegular else { throw CLIError.badInput("\(path) is not a regular file") }
        guard let size = attributes[.size] as? Int, size <= fileBytesMax, let data = FileManager.default.contents(atPath: full) else {
            throw CLIError.badInput("\(path) is larger than \(fileBytesMax) bytes")
        }
        let hash = Hex.encode(BLAKE3.hash(Array(data)))
        known[path] = hash
        return hash
    }
}
