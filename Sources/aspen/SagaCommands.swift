import AspenClient
import AspenCore
import AspenJobs
import ArgumentParser
import Foundation

/// `aspen saga …`: steps run in order as jobs; on a failure, the compensations of the steps
/// done run once each, in reverse.
struct SagaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "saga", abstract: "Run multi-step work with compensations (undone in reverse order on failure).",
        subcommands: [Run.self, Status.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run", abstract: "Start a saga from a JSON file; prints its id.",
            discussion: """
                {"name": "deploy", "max_attempts": 2, "steps": [
                  {"name": "reserve", "run": "./reserve.sh", "compensate": "./release.sh"},
                  {"name": "charge", "run": ["./charge", "--amount", "7"], "compensate": ["./refund", "7"]},
                  {"name": "ship", "run": "./ship.sh"}]}
                A command is an argument list, or a string run by sh -c.
                """)
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The saga's JSON file (- for standard input).") var file: String
        @Option(help: "Wait this long for the saga to finish, then print its status.") var wait: String?

        func run() async throws {
            try await runJob {
                let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: file))
                let (name, steps, type, attempts) = try Self.parse(data)
                let client = try cluster.client()
                guard case .saga(let saga) = try await client.job(.sagaStart(name: name, steps: steps, type: type, maxAttempts: attempts)) else {
                    throw CLIError.unexpectedAnswer
                }
                guard let wait else {
                    output(cluster.json, describe(saga), text: "\(saga.id)")
                    return
                }
                try await SagaCommand.waitAndShow(client, saga.id, waitMs: try JobDuration.parseMs(wait), json: cluster.json)
            }
        }

        static func parse(_ data: Data) throws -> (String, [SagaStep], String, Int) {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw CLIError.badInput("a saga file is a JSON object with name and steps")
            }
            guard let name = object["name"] as? String else { throw CLIError.badInput("the saga needs a \"name\"") }
            guard let steps = object["steps"] as? [[String: Any]] else { throw CLIError.badInput("the saga needs \"steps\": a list of objects") }
            func command(_ value: Any?, _ what: String) throws -> [String]? {
                switch value {
                case nil: return nil
                case let text as String: return ["sh", "-c", text]
                case let list as [String]: return list
                default: throw CLIError.badInput("\(what) is a string (run by sh -c) or a list of strings")
                }
            }
            let parsed = try steps.enumerated().map { index, step in
                let stepName = step["name"] as? String ?? "step \(index + 1)"
                guard let run = try command(step["run"], "\(stepName)'s run") else { throw CLIError.badInput("\(stepName) needs \"run\"") }
                return SagaStep(name: stepName, run: run, compensate: try command(step["compensate"], "\(stepName)'s compensate"))
            }
            return (name, parsed, object["type"] as? String ?? "shell", object["max_attempts"] as? Int ?? 3)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "A saga's state, and each step's jobs.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The saga's id.") var id: String
        @Option(help: "Wait this long for the saga to finish first.") var wait: String?

        func run() async throws {
            try await runJob {
                try await SagaCommand.waitAndShow(
                    try cluster.client(), try parseJobID(id), waitMs: try wait.map(JobDuration.parseMs) ?? 0, json: cluster.json)
            }
        }
    }

    static func waitAndShow(_ client: AspenClient, _ id: UInt64, waitMs: Int64, json: Bool) async throws {
        let deadline = Date().addingTimeInterval(Double(waitMs) / 1000)
        var saga: SagaRecord
        repeat {
            guard case .saga(let current) = try await client.job(.saga(id)) else { throw CLIError.unexpectedAnswer }
            saga = current
            if saga.state.isFinal || Date() >= deadline { break }
            try await Task.sleep(for: .milliseconds(100))
        } while true
        var lines = ["saga \(saga.id) \(saga.name): \(saga.state.rawValue)" + (saga.reason.map { " (\($0))" } ?? "")]
        for (index, step) in saga.steps.enumerated() {
            var line = "  \(index + 1). \(step.name)"
            if let job = saga.runJobs[index] { line += "  job \(job)" }
            if let undo = saga.compensationJobs[index] { line += "  undone by job \(undo)" }
            lines.append(line)
        }
        output(json, describe(saga), text: lines.joined(separator: "\n"))
        if waitMs > 0, !saga.state.isFinal { throw CLIError.unavailable("saga \(id) is still \(saga.state.rawValue)") }
        if saga.state == .compensated || saga.state == .failed { throw CLIError.conditionFailed("saga \(id) \(saga.state.rawValue): \(saga.reason ?? "")") }
    }
}

func describe(_ saga: SagaRecord) -> [String: Any] {
    var object: [String: Any] = [
        "id": saga.id, "name": saga.name, "state": saga.state.rawValue, "started_ms": saga.startedAtMs,
        "steps": saga.steps.enumerated().map { index, step in
            var described: [String: Any] = ["name": step.name, "run": step.run]
            if let compensate = step.compensate { described["compensate"] = compensate }
            if let job = saga.runJobs[index] { described["job"] = job }
            if let undo = saga.compensationJobs[index] { described["compensation_job"] = undo }
            return described
        },
    ]
    if let reason = saga.reason { object["reason"] = reason }
    if let finished = saga.finishedAtMs { object["finished_ms"] = finished }
    return object
}
