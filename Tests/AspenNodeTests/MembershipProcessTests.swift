import AspenClient
import AspenCore
import AspenKV
import AspenNode
import AspenTransport
import Foundation
import Testing

extension ClusterSuites {
    @Suite("Growing and shrinking a cluster of real processes", .serialized, .timeLimit(.minutes(3)))
    struct MembershipProcessTests {
        @Test("found with init, grow by ticket and by add-learner, a node added after compaction catches up by snapshot, remove")
        func growAndShrink() async throws {
            let cluster = try ProcessCluster(nodes: 4)
            let compaction = ["--compact-after-entries", "40"]
            // Node 1 starts knowing nobody and is told to found a cluster.
            try cluster.start(1, arguments: compaction)
            let one = cluster.entries[0]
            var founded = (Int32(-1), "")
            try await eventually("cluster init succeeds", seconds: 15) {
                founded = try await cluster.aspen(["cluster", "init", "--json"], endpoints: one)
                return founded.0 == 0
            }
            let ticket = try #require(founded.1.split(separator: "\"").first { $0.hasPrefix("aspen1") }.map(String.init))
            // A second init is refused: the node already belongs to a cluster.
            #expect(try await cluster.aspen(["cluster", "init"], endpoints: one).0 == 2)

            // Node 2 joins with the ticket and becomes a voter by itself.
            try cluster.start(2, arguments: ["--ticket", ticket] + compaction)
            let client = try cluster.client(only: 1)
            try await eventually("node 2 is a voter") { try await client.members().voters.count == 2 }

            // Enough writes that every member compacts its log.
            var revisions: [Revision] = []
            for index in 0..<120 { revisions.append(try await client.put(Bytes("key/\(index)".utf8), Bytes("value \(index)".utf8)).revision) }
            // Node 1 leads and its log now starts after its snapshot: a node joining from scratch
            // can only catch up by installing that snapshot.
            try await eventually("the leader compacted its log") {
                await client.status().contains {
                    if case .success(let status) = $0.status { status.role == "leader" && status.snapshotIndex > 10 } else { false }
                }
            }

            // Node 3 knows nobody; the operator adds it with the CLI and promotes it.
            try cluster.start(3, arguments: compaction)
            try await cluster.addLearner(3)
            try await eventually("node 3 is promoted") { try await cluster.aspen(["cluster", "promote", "3"], endpoints: one).0 == 0 }
            let members = try await client.members()
            #expect(members.voters == [1, 2, 3])
            #expect(members.records.count == 3)
            // Every record carries the id the cluster was founded with (no member's own address
            // update may replace it).
            let foundedID = try #require(founded.1.split(separator: "\"").drop { $0 != "clusterId" }.dropFirst(2).first.map(String.init))
            #expect(Set(members.records.values.map { $0.clusterID.map { String(format: "%02x", $0) }.joined() }) == [foundedID])

            // Node 3 never saw the compacted entries: it holds the data because it installed a snapshot.
            let onThree = try cluster.client(only: 3)
            for index in [0, 57, 119] {
                #expect(try await onThree.get(Bytes("key/\(index)".utf8), consistency: .stale)?.value == Bytes("value \(index)".utf8))
            }
            let threeStatus = try #require(await onThree.status().first?.status.get())
            #expect(threeStatus.snapshotIndex > 0)
            // The snapshot carried the history: node 3 reads past revisions and hashes its state
            // at them exactly like node 1, which applied the log.
            for index in [0, 57, 119] {
                let request = RangeRequest(.prefix(Bytes("key/".utf8)), revision: revisions[index])
                let onNodeThree = try await onThree.read(request, consistency: .stale)
                #expect(onNodeThree.count == index + 1, "node 3 at revision \(revisions[index])")
                #expect(onNodeThree.kvs == (try await client.read(request, consistency: .stale)).kvs)
                let hashOne = try #require(await client.stateHashes(at: revisions[index]).first?.hash.get())
                let hashThree = try #require(await onThree.stateHashes(at: revisions[index]).first?.hash.get())
                #expect(
                    hashOne.hash == hashThree.hash && hashOne.compactedRevision == hashThree.compactedRevision,
                    "state hashes at revision \(revisions[index]): \(hashOne) on node 1, \(hashThree) on node 3")
            }

            // A write after the changes reaches every member, the new ones included.
            try await client.put(Bytes("after".utf8), Bytes("growth".utf8))
            try await eventually("node 3 applied the last write") { try await onThree.get(Bytes("after".utf8), consistency: .stale) != nil }

            // The ticket the cluster hands out now names all three members.
            let fresh = try await cluster.aspen(["cluster", "ticket"], endpoints: one)
            #expect(try ClusterTicket(parsing: fresh.1).peers.map(\.id) == [1, 2, 3])

            // Removing node 2 leaves a two-voter cluster that still commits; removing it again is refused.
            #expect(try await cluster.aspen(["cluster", "remove", "2"], endpoints: one).0 == 0)
            #expect(try await cluster.aspen(["cluster", "remove", "2"], endpoints: one).0 == 2)
            try await client.put(Bytes("after".utf8), Bytes("removal".utf8))
            #expect(try await client.members().voters == [1, 3])
            await onThree.close()
            await client.close()
            cluster.terminateAll()
        }
    }
}
