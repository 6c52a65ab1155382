import AspenClient
import AspenCore
import AspenKV
import ArgumentParser
import Foundation

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect and steer the cluster.", subcommands: [Status.self, TransferLeader.self])

    struct TransferLeader: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "transfer-leader", abstract: "Hand leadership to another voter.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The node id to lead.") var node: UInt64

        func run() async throws {
            try await runReporting {
                try await cluster.client().transferLeadership(to: NodeID(node))
                output(cluster.json, ["transferTo": node], text: "OK, leadership is moving to \(node)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every member's role, term, commit and applied index.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let client = try cluster.client()
                let statuses = await client.status()
                var rows: [[String: Any]] = []
                var lines = ["ID  ADDRESS               ROLE          TERM  COMMIT  APPLIED"]
                var leaderID: UInt64?
                for (endpoint, result) in statuses {
                    let address = "\(endpoint.host):\(endpoint.port)"
                    switch result {
                    case .success(let status):
                        if status.role == "leader" { leaderID = status.id }
                        let role = status.role == "follower" && status.learners.contains(status.id) ? "learner" : status.role
                        rows.append([
                            "id": status.id, "address": address, "role": role, "term": status.term, "commitIndex": status.commitIndex,
                            "appliedIndex": status.appliedIndex,
                        ])
                        lines.append(
                            "\(pad(String(status.id), 3)) \(pad(address, 21)) \(pad(role, 13)) \(pad(String(status.term), 5)) \(pad(String(status.commitIndex), 7)) \(status.appliedIndex)")
                    case .failure(let error):
                        rows.append(["id": endpoint.id?.rawValue ?? 0, "address": address, "error": "\(error)"])
                        lines.append("\(pad(String(endpoint.id?.rawValue ?? 0), 3)) \(pad(address, 21)) unreachable: \(error)")
                    }
                }
                var object: [String: Any] = ["members": rows]
                if let leaderID { object["leaderId"] = leaderID }
                output(cluster.json, object, text: lines.joined(separator: "\n"))
                if statuses.allSatisfy({ if case .failure = $0.status { true } else { false } }) {
                    throw CLIError.unavailable("no member answered")
                }
            }
        }

        func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
    }
}
