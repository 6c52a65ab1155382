import AspenCore
import AspenFuzz
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a target's workers as child processes of this one, so that a decoder that traps, blows
/// its stack or hangs takes down only its worker: the supervisor saves the input that did it
/// (from the worker's `InputRecord`), prints it, and starts the next worker with the next seed
/// until the target's budget is spent.
struct Supervisor {
    let seed: UInt64
    let budget: FuzzRunner.Budget
    let corpus: String?
    let output: String
    let inputBytesMax: Int
    let hangSeconds: Double
    let crashesMax: Int

    struct Summary {
        var target: String
        var executions: UInt64 = 0
        var decoded = 0
        var refusals = 0
        var seconds = 0.0
        var crashes: [String] = []

        var line: String {
            let rate = seconds > 0 ? Double(executions) / seconds : 0
            return "\(target.padding(toLength: 20, withPad: " ", startingAt: 0)) \(pad(executions, 13)) \(pad(Int(rate), 11)) "
                + "\(pad(decoded, 9)) \(pad(refusals, 10)) \(pad(crashes.count, 9)) \(pad(Int(seconds.rounded()), 9))"
        }

        private func pad(_ value: some BinaryInteger, _ width: Int) -> String {
            let text = "\(value)"
            return String(repeating: " ", count: max(0, width - text.count)) + text
        }
    }

    func fuzz(_ target: FuzzTarget) throws -> Summary {
        var summary = Summary(target: target.name)
        let start = Date()
        var workerSeed = seed
        while summary.crashes.count < crashesMax {
            let spent = Date().timeIntervalSince(start)
            let runsLeft = budget.runs.map { $0 - Int(summary.executions) }
            let millisecondsLeft = budget.duration.map { Int64(($0.seconds - spent) * 1000) }
            if let runsLeft, runsLeft <= 0 { break }
            if let millisecondsLeft, millisecondsLeft <= 0 { break }
            let outcome = try work(target, seed: workerSeed, runs: runsLeft, milliseconds: millisecondsLeft)
            summary.executions += outcome.executions
            summary.decoded += outcome.decoded
            summary.refusals = max(summary.refusals, outcome.refusals)
            guard let crash = outcome.crash else { break }
            summary.crashes.append(crash)
            workerSeed &+= 1
        }
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }

    struct WorkerOutcome {
        var executions: UInt64
        var decoded = 0
        var refusals = 0
        /// What was saved, when the worker died.
        var crash: String?
    }

    private func work(_ target: FuzzTarget, seed: UInt64, runs: Int?, milliseconds: Int64?) throws -> WorkerOutcome {
        let recordPath = NSTemporaryDirectory() + "/aspen-fuzz-\(getpid())-\(target.name).record"
        defer { unlink(recordPath) }
        // The worker creates and maps the file; an empty one stands until it has.
        _ = FileManager.default.createFile(atPath: recordPath, contents: nil)
        var arguments = [
            "worker", "--target", target.name, "--seed", "\(seed)", "--record", recordPath, "--input-bytes-max", "\(inputBytesMax)",
        ]
        if let runs { arguments += ["--runs", "\(runs)"] }
        if let milliseconds { arguments += ["--milliseconds", "\(milliseconds)"] }
        if let corpus { arguments += ["--corpus", corpus] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executablePath)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        // A dying worker's backtrace takes seconds to symbolicate; `replay` shows it instead.
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let hung = watch(process, recordPath: recordPath)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let record = InputRecord.read(path: recordPath)
        var outcome = WorkerOutcome(executions: record?.executions ?? 0)
        if process.terminationReason == .exit && process.terminationStatus == 0 && !hung {
            let fields = output.split(separator: "\n").last { $0.hasPrefix("report ") }?.split(separator: " ").dropFirst().compactMap { Int($0) } ?? []
            if fields.count == 4 { (outcome.decoded, outcome.refusals) = (fields[1], fields[2]) }
            return outcome
        }
        guard let input = record?.input else {
            outcome.crash = "worker (seed \(seed)) ended with status \(process.terminationStatus) and left no input"
            return outcome
        }
        outcome.crash = try save(input, target: target, kind: hung ? "hang" : "crash", seed: seed, status: process.terminationStatus)
        return outcome
    }

    /// Waits for the worker to end; kills it (and says so) when it stops making progress.
    private func watch(_ process: Process, recordPath: String) -> Bool {
        var last: UInt64 = 0
        var lastChange = Date()
        while process.isRunning {
            usleep(100_000)
            let executions = InputRecord.read(path: recordPath)?.executions ?? 0
            if executions != last {
                (last, lastChange) = (executions, Date())
            } else if Date().timeIntervalSince(lastChange) > hangSeconds {
                kill(process.processIdentifier, SIGKILL)
                return true
            }
        }
        return false
    }

    private func save(_ input: [UInt8], target: FuzzTarget, kind: String, seed: UInt64, status: Int32) throws -> String {
        let hash = String(FNV1a64.hash(input), radix: 16)
        let path = "\(output)/\(kind)-\(target.name)-\(hash)"
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try Data(input).write(to: URL(fileURLWithPath: path))
        return "\(kind) (worker seed \(seed), status \(status)): saved \(path) (\(input.count) bytes): \(hex(input, max: 128))"
            + "\n    replay: aspen-fuzz replay \(path) --target \(target.name)"
    }

    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
