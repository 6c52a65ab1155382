import AspenForge
import Foundation
import Subprocess

/// Runs the `git` program: the forge's caches are ordinary git repositories, and every object
/// and pack in them is read and written by git itself.
enum Git {
    struct Outcome: Sendable {
        var status: Int32
        var output: [UInt8]
        var errors: String
        var text: String { String(decoding: output, as: UTF8.self) }
    }

    /// The most output kept of a command whose output is read (a ref listing).
    static let outputBytesMax = 64 << 20

    /// Runs `git ARGUMENTS` in `directory`, with `input` on its standard input; returns its status
    /// and output whatever the status.
    static func run(
        _ arguments: [String], in directory: String? = nil, input: [UInt8] = [], environment: [String: String] = [:]
    ) async throws -> Outcome {
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(500))]
        var updates: [Environment.Key: String?] = ["GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"]
        for (name, value) in environment { updates[Environment.Key(rawValue: name)!] = value }
        let result = try await Subprocess.run(
            .name("git"), arguments: Arguments(arguments), environment: .inherit.updating(updates),
            workingDirectory: directory.map { .init($0) }, platformOptions: options, input: .array(input),
            output: .bytes(limit: outputBytesMax), error: .string(limit: 64 * 1024))
        let status: Int32 =
            switch result.terminationStatus {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        return Outcome(status: status, output: result.standardOutput, errors: result.standardError)
    }

    /// Runs git and throws, with its message, unless it exits 0.
    @discardableResult
    static func check(
        _ arguments: [String], in directory: String? = nil, input: [UInt8] = [], environment: [String: String] = [:]
    ) async throws -> Outcome {
        let outcome = try await run(arguments, in: directory, input: input, environment: environment)
        guard outcome.status == 0 else {
            throw ForgeError.failed(
                "git \(arguments.first ?? "") failed (status \(outcome.status)): \(outcome.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return outcome
    }

    /// Runs another program (`tar`) with its output discarded; returns its exit status.
    static func runProgram(_ name: String, _ arguments: [String], in directory: String? = nil) async throws -> Int32 {
        var options = PlatformOptions()
        options.createSession = true
        let result = try await Subprocess.run(
            .name(name), arguments: Arguments(arguments), workingDirectory: directory.map { .init($0) }, platformOptions: options, output: .discarded,
            error: .discarded)
        switch result.terminationStatus {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }
}
