import AspenClient
import AspenCore
import AspenForge
import ArgumentParser
import Foundation

/// `aspen issue …`: a repository's issues, collaborative objects every node folds the same way.
struct IssueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue", abstract: "A repository's issues: signed changes every node folds the same way (docs/forge.md).",
        subcommands: [Open.self, Comment.self, Label.self, Title.self, Close.self, Reopen.self, List.self, Show.self])

    /// Adds one change to issue `id` (or opens one when `id` is nil); returns the issue's id.
    static func change(_ cluster: ClusterOptions, repo: String, issue id: String?, _ operations: [CobOperation]) async throws -> CobID {
        try await cluster.client().changeIssue(repo, id, operations)
    }

    static func describe(_ issue: Issue) -> [String: Any] {
        [
            "id": issue.id.hex, "author": issue.author, "title": issue.title, "body": issue.body, "state": issue.open ? "open" : "closed",
            "labels": issue.labels, "created": issue.created, "updated": issue.updated, "changes": issue.changes,
            "signaturesVerified": issue.changes, "heads": issue.heads.map(\.hex),
            "comments": issue.comments.map { ["id": $0.id.hex, "author": $0.author, "body": $0.body, "time": $0.time] as [String: Any] },
            "ignored": issue.ignored.map { ["change": $0.id.hex, "reason": $0.reason] },
        ]
    }

    struct Open: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open an issue; prints its id.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Option var title: String
        @Option var body: String = ""

        func run() async throws {
            try await runForge {
                let id = try await IssueCommand.change(cluster, repo: repo, issue: nil, [.open(title: title, body: body)])
                output(cluster.json, ["id": id.hex], text: id.short)
            }
        }
    }

    struct Comment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Comment on an issue.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument(help: "The issue's id (7 hex digits or more).") var id: String
        @Argument var body: String

        func run() async throws {
            try await runForge {
                _ = try await IssueCommand.change(cluster, repo: repo, issue: id, [.comment(body: body)])
                output(cluster.json, ["commented": id], text: "commented on \(id)")
            }
        }
    }

    struct Label: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add labels to an issue (and remove others with --remove).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Argument(help: "Labels to add.") var labels: [String] = []
        @Option(help: "A label to remove; repeat for several.") var remove: [String] = []

        func run() async throws {
            try await runForge {
                _ = try await IssueCommand.change(cluster, repo: repo, issue: id, [.label(add: labels, remove: remove)])
                output(cluster.json, ["labelled": id], text: "labelled \(id)")
            }
        }
    }

    struct Title: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change an issue's title.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Argument var title: String

        func run() async throws {
            try await runForge {
                _ = try await IssueCommand.change(cluster, repo: repo, issue: id, [.title(title)])
                output(cluster.json, ["retitled": id], text: "retitled \(id)")
            }
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close an issue (its author or a maintainer).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Option(help: "A closing comment.") var comment: String?

        func run() async throws {
            try await runForge {
                _ = try await IssueCommand.change(cluster, repo: repo, issue: id, (comment.map { [CobOperation.comment(body: $0)] } ?? []) + [.close])
                output(cluster.json, ["closed": id], text: "closed \(id)")
            }
        }
    }

    struct Reopen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reopen an issue.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String

        func run() async throws {
            try await runForge {
                _ = try await IssueCommand.change(cluster, repo: repo, issue: id, [.reopen])
                output(cluster.json, ["reopened": id], text: "reopened \(id)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a repository's issues.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Option(help: "open, closed or all.") var state: String = "open"

        func run() async throws {
            try await runForge {
                guard ["open", "closed", "all"].contains(state) else { throw CLIError.badInput("--state is open, closed or all") }
                guard case .issues(let issues) = try await cluster.client().forge(.issues(repo)) else { throw CLIError.unexpectedAnswer }
                let shown = issues.filter { state == "all" || ($0.open == (state == "open")) }
                if cluster.json {
                    output(true, ["issues": shown.map(IssueCommand.describe)], text: "")
                } else {
                    for issue in shown {
                        let labels = issue.labels.isEmpty ? "" : "\t[" + issue.labels.joined(separator: ",") + "]"
                        print("\(issue.id.short)\t\(issue.open ? "open" : "closed")\t\(issue.title)\t\(issue.comments.count) comments\(labels)")
                    }
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an issue with its comments.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String

        func run() async throws {
            try await runForge {
                guard case .issues(let found) = try await cluster.client().forge(.issue(repo, id: id)), let issue = found.first else {
                    throw CLIError.unexpectedAnswer
                }
                if cluster.json {
                    output(true, IssueCommand.describe(issue), text: "")
                    return
                }
                print("\(issue.id.short) \(issue.open ? "open" : "closed"): \(issue.title)")
                print("by \(issue.author.prefix(12))\(issue.labels.isEmpty ? "" : "  labels: " + issue.labels.joined(separator: ", "))")
                if !issue.body.isEmpty { print("\n\(issue.body)") }
                for comment in issue.comments { print("\n\(comment.author.prefix(12)) (\(comment.id.short)):\n\(comment.body)") }
                for (change, reason) in issue.ignored { print("\nignored \(change.short): \(reason)") }
            }
        }
    }
}
