import AspenClient
import AspenCore
import AspenForge
import ArgumentParser
import Foundation

/// `aspen patch …`: proposed changes, opened and revised by `git push aspen HEAD:refs/for/BRANCH`.
struct PatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Patches: git push aspen HEAD:refs/for/main -o topic=NAME opens one, each later push with the topic adds a revision.",
        subcommands: [List.self, Show.self, Diff.self, Review.self, Status.self, Merge.self, Comment.self, Close.self, Reopen.self])

    static func describe(_ patch: Patch) -> [String: Any] {
        [
            "id": patch.id.hex, "author": patch.author, "title": patch.title, "description": patch.description, "target": patch.target,
            "topic": patch.topic, "state": patch.open ? "open" : "closed", "labels": patch.labels, "changes": patch.changes,
            "signaturesVerified": patch.changes, "heads": patch.heads.map(\.hex),
            "revisions": patch.revisions.map { ["number": $0.number, "change": $0.change.hex, "base": $0.base, "head": $0.head, "time": $0.time] as [String: Any] },
            "reviews": patch.reviews.map {
                ["revision": $0.revision, "author": $0.author, "verdict": $0.verdict.name, "comment": $0.comment, "time": $0.time] as [String: Any]
            },
            "comments": patch.comments.map { ["id": $0.id.hex, "author": $0.author, "body": $0.body, "time": $0.time] as [String: Any] },
            "ignored": patch.ignored.map { ["change": $0.id.hex, "reason": $0.reason] },
            "statuses": patch.statuses.map { ["revision": $0.revision, "context": $0.context, "state": $0.state.name, "author": $0.author] as [String: Any] },
            "merged": patch.merged ?? 0,
        ]
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a repository's patches.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Option(help: "open, closed or all.") var state: String = "open"

        func run() async throws {
            try await runForge {
                guard ["open", "closed", "all"].contains(state) else { throw CLIError.badInput("--state is open, closed or all") }
                guard case .patches(let patches) = try await cluster.client().forge(.patches(repo)) else { throw CLIError.unexpectedAnswer }
                let shown = patches.filter { state == "all" || ($0.open == (state == "open")) }
                if cluster.json {
                    output(true, ["patches": shown.map(PatchCommand.describe)], text: "")
                } else {
                    for patch in shown {
                        print("\(patch.id.short)\t\(patch.open ? "open" : "closed")\t\(patch.target)\t\(patch.topic)\t\(patch.title)\trevision \(patch.revisions.count)")
                    }
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a patch: its revisions, reviews and comments.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String

        func run() async throws {
            try await runForge {
                let patch = try await cluster.client().patch(repo, id)
                if cluster.json {
                    output(true, PatchCommand.describe(patch), text: "")
                    return
                }
                print("\(patch.id.short) \(patch.open ? "open" : "closed"): \(patch.title)  (\(patch.topic) → \(patch.target))")
                if !patch.description.isEmpty { print("\n\(patch.description)") }
                for revision in patch.revisions { print("revision \(revision.number): \(revision.head.prefix(12)) on \(revision.base.prefix(12))") }
                for review in patch.reviews { print("review of \(review.revision) by \(review.author.prefix(12)): \(review.verdict.name)\(review.comment.isEmpty ? "" : " — " + review.comment)") }
                for comment in patch.comments { print("\n\(comment.author.prefix(12)) (\(comment.id.short)):\n\(comment.body)") }
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A revision's diff against its base, or the interdiff between two revisions (--range 1..2).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Option(help: "FROM..TO: revision TO against revision FROM; or one revision N (default: the latest) against its base.") var range: String?

        func run() async throws {
            try await runForge {
                let client = try cluster.client()
                var from = 0
                var to = 0
                if let range {
                    let parts = range.components(separatedBy: "..")
                    if parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]), a >= 1, b > a {
                        (from, to) = (a, b)
                    } else if parts.count == 1, let n = Int(parts[0]), n >= 1 {
                        to = n
                    } else {
                        throw CLIError.badInput("--range is FROM..TO (1..2) or one revision (2)")
                    }
                } else {
                    to = try await client.patch(repo, id).revisions.count
                }
                guard case .text(let diff) = try await client.forge(.patchDiff(repo, id: id, from: from, to: to)) else { throw CLIError.unexpectedAnswer }
                print(diff, terminator: "")
            }
        }
    }

    struct Review: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Review a patch's latest revision (or --revision N).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Flag(help: "Approve it.") var approve = false
        @Flag(help: "Ask for changes.") var requestChanges = false
        @Option(help: "A comment with the review.") var comment: String = ""
        @Option(help: "The revision reviewed (default: the latest).") var revision: Int?

        func run() async throws {
            try await runForge {
                guard !(approve && requestChanges) else { throw CLIError.badInput("--approve or --request-changes, not both") }
                let verdict: ReviewVerdict = approve ? .approve : requestChanges ? .requestChanges : .comment
                let patch = try await cluster.client().changePatch(repo, id) {
                    [.review(revision: revision ?? $0.revisions.count, verdict: verdict, comment: comment)]
                }
                let number = revision ?? patch.revisions.count
                output(cluster.json, ["reviewed": id, "revision": number, "verdict": verdict.name], text: "\(verdict.name) on revision \(number) of \(id)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a status context on a patch's latest revision (what CI reports).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Argument(help: "The context, e.g. ci/build.") var context: String
        @Argument(help: "pending, success or failure.") var state: String
        @Option(help: "The revision (default: the latest).") var revision: Int?

        func run() async throws {
            try await runForge {
                guard let value = StatusState.allCases.first(where: { $0.name == state }) else { throw CLIError.badInput("a state is pending, success or failure") }
                let patch = try await cluster.client().changePatch(repo, id) {
                    [.status(revision: revision ?? $0.revisions.count, context: context, state: value)]
                }
                let number = revision ?? patch.revisions.count
                output(cluster.json, ["status": context, "state": state, "revision": number], text: "\(context) \(state) on revision \(number) of \(id)")
            }
        }
    }

    struct Merge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge a patch's latest revision into its target, once the target's protection (approvals, statuses) allows it.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Option(help: "ff (fast-forward), merge (a merge commit) or squash (one commit).") var strategy: String = "ff"

        func run() async throws {
            try await runForge {
                guard let value = MergeStrategy(name: strategy) else { throw CLIError.badInput("--strategy is ff, merge or squash") }
                let commit = try await cluster.client().mergePatch(repo, id, strategy: value)
                output(cluster.json, ["merged": id, "commit": commit], text: "merged \(id): \(commit.prefix(12))")
            }
        }
    }

    struct Comment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Comment on a patch.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String
        @Argument var body: String

        func run() async throws {
            try await runForge {
                try await cluster.client().changePatch(repo, id) { _ in [.comment(body: body)] }
                output(cluster.json, ["commented": id], text: "commented on \(id)")
            }
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close a patch (its author or a maintainer).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String

        func run() async throws {
            try await runForge {
                try await cluster.client().changePatch(repo, id) { _ in [.close] }
                output(cluster.json, ["closed": id], text: "closed \(id)")
            }
        }
    }

    struct Reopen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reopen a patch.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var repo: String
        @Argument var id: String

        func run() async throws {
            try await runForge {
                try await cluster.client().changePatch(repo, id) { _ in [.reopen] }
                output(cluster.json, ["reopened": id], text: "reopened \(id)")
            }
        }
    }
}
