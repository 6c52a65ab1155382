import AspenClient
import AspenCore
import AspenForge
import AspenNode
import AspenTransport
import Foundation
import Testing

extension ClusterSuites {
    @Suite("Issues: signed changes folded the same on every node", .serialized, .timeLimit(.minutes(6)))
    struct IssueProcessTests {
        /// A client of node `node` (or every node) proving `identity`.
        func client(_ cluster: ProcessCluster, _ identity: NodeIdentity, node: Int? = nil) throws -> AspenClient {
            let text = node.map { cluster.entries[$0 - 1] } ?? cluster.endpointsText
            let peers = try PeerList.parse(text)
            return try AspenClient(
                endpoints: peers.keys.sorted().map { Endpoint(id: $0, host: peers[$0]!.host, port: peers[$0]!.port, key: peers[$0]!.key) },
                identity: identity, attemptsMax: 60)
        }

        @Test("three authors comment and label one issue at once through three nodes: every node shows the same bytes, nothing lost, every signature checked")
        func concurrentComments() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let perAuthor = Int(ProcessInfo.processInfo.environment["ASPEN_ISSUE_COMMENTS"] ?? "") ?? 50
            // The maintainer is whoever creates the repository; two others write too.
            let maintainer = NodeIdentity()
            let others = [NodeIdentity(), NodeIdentity()]
            let owner = try client(cluster, maintainer, node: 1)
            _ = try await owner.forge(.create(RepoRecord(name: "demo")))
            let id = try await owner.changeIssue("demo", nil, [.open(title: "crash on start", body: "it crashes")])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, identity) in ([maintainer] + others).enumerated() {
                    group.addTask {
                        let writer = try client(cluster, identity, node: index + 1)
                        defer { Task { await writer.close() } }
                        for number in 0..<perAuthor {
                            _ = try await writer.changeIssue("demo", id.hex, [.comment(body: "author \(index) comment \(number)")])
                            if number % 10 == 0 {
                                _ = try await writer.changeIssue("demo", id.short, [.label(add: ["a\(index)-\(number)"], remove: [])])
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            // The CLI through each node: the same JSON, byte for byte.
            var shown: [String] = []
            for node in 1...3 {
                let (status, text) = try await cluster.aspen(["issue", "show", "demo", id.short, "--json"], endpoints: cluster.entries[node - 1])
                #expect(status == 0, "\(text)")
                shown.append(text)
            }
            #expect(Set(shown).count == 1, "the nodes disagree")
            let issue = try #require(try JSONSerialization.jsonObject(with: Data(shown[0].utf8)) as? [String: Any])
            let comments = try #require(issue["comments"] as? [[String: Any]])
            #expect(comments.count == 3 * perAuthor)
            for index in 0..<3 {
                let mine = comments.compactMap { $0["body"] as? String }.filter { $0.hasPrefix("author \(index) ") }
                // Each author's comments in the order written: each change saw the one before.
                #expect(mine == (0..<perAuthor).map { "author \(index) comment \($0)" })
            }
            let changes = try #require(issue["changes"] as? Int)
            #expect(changes == 1 + 3 * perAuthor + 3 * ((perAuthor + 9) / 10))
            #expect(issue["signaturesVerified"] as? Int == changes)
            // Only the maintainer's labels count: the others lack the right, and the fold says so.
            let labels = try #require(issue["labels"] as? [String])
            #expect(labels == (0..<perAuthor).filter { $0 % 10 == 0 }.map { "a0-\($0)" }.sorted())
            let ignored = try #require(issue["ignored"] as? [[String: Any]])
            #expect(ignored.count == 2 * ((perAuthor + 9) / 10))
            #expect((ignored.first?["reason"] as? String)?.contains("maintainer") == true)
        }

        @Test("two concurrent title edits leave two heads and every node picks the same title: the later (time, id) wins; the next change joins the heads")
        func concurrentTitles() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let maintainer = NodeIdentity()
            let owner = try client(cluster, maintainer, node: 1)
            defer { Task { await owner.close() } }
            _ = try await owner.forge(.create(RepoRecord(name: "demo")))
            let id = try await owner.changeIssue("demo", nil, [.open(title: "first", body: "")])
            guard case .heads(let heads) = try await owner.forge(.cobHeads("demo", .issue, object: id)) else { throw ForgeError.failed("heads") }
            // Two edits from the same heads, as two nodes taking them at once would.
            var made: [(CobChange, CobID)] = []
            for (title, offset) in [("left", UInt64(5)), ("right", UInt64(5))] {
                let change = CobChange(
                    type: .issue, object: id, parents: heads.map(\.id), operations: [.title(title)], author: maintainer.key.bytes,
                    time: heads[0].time + offset)
                let signed = try change.signed(by: maintainer.privateKey)
                let writer = try client(cluster, maintainer, node: title == "left" ? 2 : 3)
                guard case .added(let added) = try await writer.forge(.cobAdd("demo", signed)) else { throw ForgeError.failed("add") }
                await writer.close()
                made.append((change, added))
            }
            // Equal times: the larger id wins.
            let winner = made.max { ($0.0.time, $0.1) < ($1.0.time, $1.1) }!
            let expected = winner.0.operations.first == .title("left") ? "left" : "right"
            var titles: [String] = []
            for node in 1...3 {
                let (status, text) = try await cluster.aspen(["issue", "show", "demo", id.hex, "--json"], endpoints: cluster.entries[node - 1])
                #expect(status == 0, "\(text)")
                let issue = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                titles.append(issue["title"] as? String ?? "")
                #expect((issue["heads"] as? [String])?.count == 2, "\(text)")
            }
            #expect(titles == [expected, expected, expected])
            // The next change names both heads: one head again.
            _ = try await owner.changeIssue("demo", id.short, [.comment(body: "merged view")])
            guard case .heads(let after) = try await owner.forge(.cobHeads("demo", .issue, object: id)) else { throw ForgeError.failed("heads") }
            #expect(after.count == 1)
            // Through the CLI: list, close by the author, and a bad id named.
            var (status, text) = try await cluster.aspen(["issue", "list", "demo"])
            #expect(status == 0 && text.contains(expected), "\(text)")
            (status, text) = try await cluster.aspen(["issue", "show", "demo", "zzzzzzz"], withErrors: true)
            #expect(status == 4 && text.contains("hex"), "\(text)")
            (status, text) = try await cluster.aspen(["issue", "show", "demo", "0000000"], withErrors: true)
            #expect(status == 1, "\(text)")
        }
    }
}
