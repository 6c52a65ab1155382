import AspenBlob
import AspenCore
import Foundation
import Testing

extension ClusterSuites {
    /// The blob store against real node processes, through the `aspen` CLI, with `b3sum` as the
    /// oracle of every hash.
    @Suite("Blobs on a real cluster", .serialized, .timeLimit(.minutes(5)))
    struct BlobProcessTests {
        /// 8 MiB by default (debug builds hash at a few MB/s); ASPEN_BLOB_TEST_MIB=50 for the full size.
        static let fileBytes = (Int(ProcessInfo.processInfo.environment["ASPEN_BLOB_TEST_MIB"] ?? "") ?? 8) << 20

        static func b3sum(_ path: String) throws -> String {
            let output = try ProcessCluster.run("/usr/bin/b3sum", ["--no-names", path])
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        static func randomFile(_ path: String, bytes: Int, seed: UInt64) throws {
            var generator = SplitMix64(seed: seed)
            var data = [UInt8]()
            data.reserveCapacity(bytes + 8)
            while data.count < bytes { withUnsafeBytes(of: generator.next()) { data.append(contentsOf: $0) } }
            try Data(data.prefix(bytes)).write(to: URL(fileURLWithPath: path))
        }

        @Test("a file round-trips with b3sum's hash; after SIGKILL of the node that took it, a lying holder is skipped and the rest serve it")
        func roundTripKillAndCorruptHolder() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let input = cluster.directory.appendingPathComponent("input.bin").path
            try Self.randomFile(input, bytes: Self.fileBytes, seed: 24)
            let expected = try Self.b3sum(input)

            // Added through node 1 alone, with three replicas: acknowledged once all three hold it.
            let (status, printed) = try await cluster.aspen(
                ["blob", "add", input, "--tag", "release"], endpoints: cluster.entries[0], withErrors: true)
            #expect(status == 0, "\(printed)")
            #expect(printed == expected)
            let hash = try #require(BlobHash(hex: printed))
            // The same bytes again: the same hash, still one copy on each node.
            let (again, reprinted) = try await cluster.aspen(["blob", "add", input], endpoints: cluster.entries[1])
            #expect(again == 0 && reprinted == expected)
            for node in 1...3 {
                let held = try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory(node) + "/blobs/complete")
                #expect(held.filter { $0.hasSuffix(".data") } == ["\(hash.hex).data"], "node \(node) holds \(held)")
            }

            cluster.kill9(1)
            // Node 2's copy is corrupted at rest: one byte in the middle. A fetch that tries node 2
            // first must notice within one chunk group and finish from node 3.
            let corrupt = cluster.dataDirectory(2) + "/blobs/complete/\(hash.hex).data"
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: corrupt))
            try handle.seek(toOffset: UInt64(Self.fileBytes / 2))
            let original = try #require(try handle.read(upToCount: 1)).first!
            try handle.seek(toOffset: UInt64(Self.fileBytes / 2))
            try handle.write(contentsOf: [original ^ 0x40])
            try handle.close()

            let output = cluster.directory.appendingPathComponent("output.bin").path
            let survivors = cluster.entries[1] + "," + cluster.entries[2]
            let (got, said) = try await cluster.aspen(["blob", "get", hash.hex, "-o", output], endpoints: survivors, withErrors: true)
            #expect(got == 0, "\(said)")
            #expect(try Self.b3sum(output) == expected)
            #expect(FileManager.default.contentsEqual(atPath: output, andPath: input))

            // A byte range, moving only the groups it needs, equals dd's cut of the same bytes.
            let ranged = cluster.directory.appendingPathComponent("range.bin").path
            let (rangeStatus, _) = try await cluster.aspen(
                ["blob", "get", hash.hex, "--range", "1048576-2097151", "-o", ranged], endpoints: survivors)
            #expect(rangeStatus == 0)
            let whole = try Data(contentsOf: URL(fileURLWithPath: input))
            #expect(try Data(contentsOf: URL(fileURLWithPath: ranged)) == whole[1_048_576..<2_097_152])

            let (statStatus, stat) = try await cluster.aspen(["blob", "stat", hash.hex, "--json"], endpoints: survivors)
            #expect(statStatus == 0)
            #expect(stat.contains("\"release\"") && stat.contains("\"size\":\(Self.fileBytes)"))
        }

        @Test("unknown and malformed hashes, directories and empty input get clear answers")
        func badInput() async throws {
            let cluster = try ProcessCluster(nodes: 1)
            try cluster.startAll()
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let started = Date()
            let (unknown, _) = try await cluster.aspen(["blob", "get", String(repeating: "ab", count: 32)])
            #expect(unknown == 1)
            #expect(Date().timeIntervalSince(started) < 10, "an unknown hash must be answered quickly, not hang")
            let (has, _) = try await cluster.aspen(["blob", "has", String(repeating: "cd", count: 32)])
            #expect(has == 1)
            let (malformed, _) = try await cluster.aspen(["blob", "get", "xyz"])
            #expect(malformed == 4)
            let (directory, _) = try await cluster.aspen(["blob", "add", cluster.directory.path])
            #expect(directory == 4)
            let (missing, _) = try await cluster.aspen(["blob", "add", cluster.directory.appendingPathComponent("nope").path])
            #expect(missing == 4)
            // The empty blob, from standard input: BLAKE3 of nothing.
            let (empty, emptyHash) = try await cluster.aspen(["blob", "add", "-"], stdin: "", withErrors: true)
            #expect(empty == 0, "\(emptyHash)")
            #expect(emptyHash == BlobHash.of([UInt8]()).hex)
            let (tagged, _) = try await cluster.aspen(["blob", "tag", "set", "nothing", emptyHash])
            #expect(tagged == 0)
            let (tags, listing) = try await cluster.aspen(["blob", "list", "--tag", ""])
            #expect(tags == 0 && listing == "nothing  \(emptyHash)")
            let (untagged, _) = try await cluster.aspen(["blob", "tag", "set", "dangling", String(repeating: "ef", count: 32)])
            #expect(untagged == 1)
        }
    }
}
