import AspenBlob
import AspenClient
import AspenCore
import Foundation
import Testing

extension ClusterSuites {
    /// Garbage collection, scrub and quotas against real node processes, through the CLI.
    @Suite("Blob upkeep on a real cluster", .serialized, .timeLimit(.minutes(8)))
    struct BlobUpkeepProcessTests {
        /// Upkeep only when asked, and a short grace period.
        static func environment(graceMs: Int, extra: [String: String] = [:]) -> [String: String] {
            ["ASPEN_BLOB_GC_GRACE_MS": "\(graceMs)", "ASPEN_BLOB_GC_INTERVAL_MS": "0", "ASPEN_BLOB_SCRUB_INTERVAL_MS": "0"]
                .merging(extra) { $1 }
        }

        static func json(_ text: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
        }

        static func deleted(_ report: [String: Any]) -> Set<String> {
            Set(((report["deleted"] as? [[String: Any]]) ?? []).compactMap { $0["hash"] as? String })
        }

        static func held(_ cluster: ProcessCluster, node: Int) throws -> Set<String> {
            let names = try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory(node) + "/blobs/complete")
            return Set(names.filter { $0.hasSuffix(".data") }.map { String($0.dropLast(5)) })
        }

        static func add(_ cluster: ProcessCluster, bytes: [UInt8], _ options: [String] = [], endpoints: String? = nil) async throws -> String {
            let path = cluster.directory.appendingPathComponent("in-\(UUID().uuidString)").path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let (status, printed) = try await cluster.aspen(["blob", "add", path] + options, endpoints: endpoints, withErrors: true)
            #expect(status == 0, "\(printed)")
            return printed
        }

        @Test("GC keeps tagged and key-referenced blobs, deletes the rest after the grace period on every node, as --dry-run predicted")
        func collectsWhatNothingReferences() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: Self.environment(graceMs: 3000))
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let kept = try await Self.add(cluster, bytes: Array(repeating: 1, count: 40_000), ["--tag", "keep"])
            let untagged = try await Self.add(cluster, bytes: Array(repeating: 2, count: 40_000))
            let retagged = try await Self.add(cluster, bytes: Array(repeating: 3, count: 100), ["--tag", "temporary"])
            let (removed, _) = try await cluster.aspen(["blob", "tag", "rm", "temporary"])
            #expect(removed == 0)
            // A value above the key-value limit goes to the blob store; the key protects it.
            let big = cluster.directory.appendingPathComponent("big-value").path
            try Data((0..<(Limits.standard.valueBytesMax + 1)).map { UInt8(truncatingIfNeeded: $0 * 7) }).write(to: URL(fileURLWithPath: big))
            let (put, putSaid) = try await cluster.aspen(["kv", "put", "big", "--value-file", big], withErrors: true)
            #expect(put == 0, "\(putSaid)")
            let referenced = try BlobHash.of(Data(contentsOf: URL(fileURLWithPath: big))).hex

            // Within the grace period nothing goes, referenced or not.
            let (early, earlyText) = try await cluster.aspen(["blob", "gc", "--dry-run", "--json"])
            #expect(early == 0)
            #expect(Self.deleted(try Self.json(earlyText)).isEmpty, "\(earlyText)")
            try await Task.sleep(for: .milliseconds(3500))

            let (dry, dryText) = try await cluster.aspen(["blob", "gc", "--dry-run", "--json"])
            #expect(dry == 0)
            let predicted = Self.deleted(try Self.json(dryText))
            #expect(predicted == [untagged, retagged], "\(dryText)")
            // A dry run deletes nothing.
            for node in 1...3 { #expect(try Self.held(cluster, node: node).isSuperset(of: [kept, untagged, retagged, referenced])) }

            let (pass, passText) = try await cluster.aspen(["blob", "gc", "--json"])
            #expect(pass == 0, "\(passText)")
            let report = try Self.json(passText)
            #expect(Self.deleted(report) == predicted, "the pass deleted other blobs than its dry run listed: \(passText)")
            #expect(report["files_removed"] as? Int == 6, "\(passText)")
            for node in 1...3 {
                let held = try Self.held(cluster, node: node)
                #expect(held == [kept, referenced], "node \(node) holds \(held)")
            }
            let (gone, _) = try await cluster.aspen(["blob", "has", untagged])
            #expect(gone == 1)
            let (still, _) = try await cluster.aspen(["blob", "has", kept])
            #expect(still == 0)
            // A deleted blob cannot be tagged back into existence; the key still reads whole.
            let (dangling, _) = try await cluster.aspen(["blob", "tag", "set", "late", untagged])
            #expect(dangling == 1)
            let out = cluster.directory.appendingPathComponent("big-out").path
            let (got, gotSaid) = try await cluster.aspen(["kv", "get", "big", "-o", out], withErrors: true)
            #expect(got == 0, "\(gotSaid)")
            #expect(FileManager.default.contentsEqual(atPath: out, andPath: big))
            // Once the key goes, so does its blob (after the grace period).
            let (deletedKey, _) = try await cluster.aspen(["kv", "delete", "big"])
            #expect(deletedKey == 0)
            let (after, afterText) = try await cluster.aspen(["blob", "gc", "--json"])
            #expect(after == 0)
            #expect(Self.deleted(try Self.json(afterText)) == [referenced], "\(afterText)")
        }

        /// 4 clients × 150 blobs by default; ASPEN_BLOB_RACE_COUNT=1000 for the full run.
        static let raceCount = Int(ProcessInfo.processInfo.environment["ASPEN_BLOB_RACE_COUNT"] ?? "") ?? 150

        @Test("GC passes back to back while four clients add blobs again with tags, after their first copies went stale: every tagged blob survives whole")
        func collectionRace() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: Self.environment(graceMs: 1000))
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let client = try cluster.client()
            let clock = ContinuousClock()
            let until = clock.now + .seconds(600)
            let count = Self.raceCount
            func content(_ worker: Int, _ index: Int) -> [UInt8] {
                var bytes = [UInt8](repeating: UInt8(worker), count: 4096)
                withUnsafeBytes(of: UInt64(index).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
                return bytes
            }
            func add(_ bytes: [UInt8], tag: String?) async throws -> BlobStat {
                var cursor = 0
                return try await client.addBlob(size: UInt64(bytes.count), tag: tag) { buffer in
                    let count = min(buffer.count, bytes.count - cursor)
                    bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[cursor..<(cursor + count)])) }
                    cursor += count
                    return count
                }
            }
            // First every blob is added bare: garbage once the grace period has passed.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask { for index in 0..<count where clock.now < until { _ = try await add(content(worker, index), tag: nil) } }
                }
                try await group.waitForAll()
            }
            try await Task.sleep(for: .milliseconds(1100))
            // Then each is added again with its tag while collection passes run back to back,
            // each marking the bare blobs as garbage and deleting them one by one: each add races
            // a deletion of its records and of its files (an add that finds the file in place
            // keeps it).
            let collecting = Task {
                var passes = 0
                while !Task.isCancelled {
                    _ = try? await client.blobRequest(.collect(dryRun: false), extraSeconds: 60)
                    passes += 1
                    try? await Task.sleep(for: .milliseconds(100))
                }
                return passes
            }
            let tagged: [[(String, BlobHash)]] = try await withThrowingTaskGroup(of: [(String, BlobHash)].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var mine: [(String, BlobHash)] = []
                        for index in 0..<count where clock.now < until {
                            let name = "race/\(worker)/\(index)"
                            mine.append((name, try await add(content(worker, index), tag: name).hash))
                        }
                        return mine
                    }
                }
                var all: [[(String, BlobHash)]] = []
                for try await part in group { all.append(part) }
                return all
            }
            collecting.cancel()
            let passes = await collecting.value
            let expected = tagged.flatMap { $0 }
            #expect(expected.count == 4 * count, "the adds did not finish in time: \(expected.count) of \(4 * count)")
            // One more pass over the finished state.
            _ = try await client.blobRequest(.collect(dryRun: false), extraSeconds: 60)
            var missing: [String] = []
            for (name, hash) in expected {
                guard case .stat(let stat) = try await client.blobRequest(.stat(hash: hash)) else {
                    missing.append(name)
                    continue
                }
                #expect(stat.tags.contains(name))
                // Every recorded holder really has it, verified.
                for holder in stat.holders {
                    let only = try cluster.client(only: Int(holder.node))
                    var sink = CountingSink()
                    try await only.fetchBlob(hash, size: stat.size, groups: 0..<1, holders: [holder.node], into: &sink)
                    #expect(sink.bytes == 4096)
                }
            }
            #expect(missing.isEmpty, "\(missing.count) tagged blobs were lost: \(missing.prefix(5))")
            // The collector really ran alongside: it deleted bare blobs, and found some re-added
            // between its mark and its deletion (the race itself).
            var counts: [String: Int] = [:]
            for node in 1...3 {
                let (_, metrics) = try await cluster.aspen(["cluster", "metrics"], endpoints: cluster.entries[node - 1])
                for line in metrics.split(separator: "\n") {
                    let parts = line.split(separator: " ")
                    guard parts.count == 2, ["aspen_blob_collected_total", "aspen_blob_rescued_total"].contains(String(parts[0])) else { continue }
                    counts[String(parts[0]), default: 0] += Int(parts[1]) ?? 0
                }
            }
            #expect(passes >= 1 && counts["aspen_blob_collected_total", default: 0] > 0, "no collection ran during the adds: \(passes) passes, \(counts)")
            #expect(counts["aspen_blob_rescued_total", default: 0] > 0, "no add raced a deletion (\(passes) passes, \(counts)): the race was not exercised")
        }

        @Test("scrub finds a flipped byte at rest, quarantines it and repairs it from a replica; a bad copy is never served")
        func scrubRepairs() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: Self.environment(graceMs: 60_000))
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            var generator = SplitMix64(seed: 7)
            let bytes = (0..<300_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let hash = try await Self.add(cluster, bytes: bytes, ["--tag", "scrubbed"])
            func flip(node: Int, at offset: UInt64) throws {
                let handle = try FileHandle(forUpdating: URL(fileURLWithPath: cluster.dataDirectory(node) + "/blobs/complete/\(hash).data"))
                try handle.seek(toOffset: offset)
                let original = try #require(try handle.read(upToCount: 1)).first!
                try handle.seek(toOffset: offset)
                try handle.write(contentsOf: [original ^ 0x01])
                try handle.close()
            }
            func intact(node: Int) throws -> Bool {
                let path = cluster.dataDirectory(node) + "/blobs/complete/\(hash).data"
                guard let data = FileManager.default.contents(atPath: path) else { return false }
                return BlobHash.of(data).hex == hash
            }

            try flip(node: 2, at: 150_000)
            let (status, said) = try await cluster.aspen(["blob", "scrub", "--json"], endpoints: cluster.entries[1], withErrors: true)
            #expect(status == 0, "\(said)")
            let report = try Self.json(said)
            #expect(report["corrupt"] as? [String] == [hash] && report["repaired"] as? [String] == [hash], "\(said)")
            #expect(try intact(node: 2), "the scrub did not restore node 2's copy")
            let quarantined = try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory(2) + "/blobs/quarantine")
            #expect(quarantined.contains { $0.hasPrefix(hash) && $0.hasSuffix(".data") }, "\(quarantined)")
            let (_, metrics) = try await cluster.aspen(["cluster", "metrics"], endpoints: cluster.entries[1])
            #expect(metrics.contains("aspen_blob_corrupt_total 1") && metrics.contains("aspen_blob_repaired_total 1"))
            // A clean scrub finds nothing.
            let (clean, cleanText) = try await cluster.aspen(["blob", "scrub", "--json"], endpoints: cluster.entries[1])
            let cleanReport = try Self.json(cleanText)
            #expect(clean == 0 && cleanReport["corrupt"] as? [String] == [], "\(cleanText)")

            // Node 3's copy goes bad; a read through node 3 alone never yields wrong bytes: it
            // fails, and node 3 repairs itself from the others.
            try flip(node: 3, at: 10)
            let out = cluster.directory.appendingPathComponent("out").path
            let (read, readSaid) = try await cluster.aspen(["blob", "get", hash, "-o", out], endpoints: cluster.entries[2], withErrors: true)
            if read == 0 {
                #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(bytes))
            } else {
                #expect(readSaid.contains("failed verification"), "\(readSaid)")
            }
            let deadline = Date().addingTimeInterval(20)
            while !(try intact(node: 3)), Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
            #expect(try intact(node: 3), "node 3 did not repair the copy it refused to serve")
            let (again, _) = try await cluster.aspen(["blob", "get", hash, "-o", out], endpoints: cluster.entries[2])
            #expect(again == 0)
            #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(bytes))
        }

        @Test("the leader's upkeep brings blobs added with fewer copies up to the cluster's replication factor")
        func upkeepRestoresCopies() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            try cluster.startAll(environment: Self.environment(graceMs: 60_000, extra: ["ASPEN_BLOB_GC_INTERVAL_MS": "500"]))
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let single = try await Self.add(cluster, bytes: Array(repeating: 5, count: 50_000), ["--replicas", "1", "--tag", "one"])
            let double = try await Self.add(cluster, bytes: Array(repeating: 6, count: 50_000), ["--replicas", "2", "--tag", "two"])
            func holders(_ hash: String) async throws -> Int {
                let (_, text) = try await cluster.aspen(["blob", "stat", hash, "--json"])
                return (try Self.json(text)["holders"] as? [Any])?.count ?? 0
            }
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if try await holders(single) == 3, try await holders(double) == 3 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let (singleHolders, doubleHolders) = (try await holders(single), try await holders(double))
            #expect(singleHolders == 3 && doubleHolders == 3, "the upkeep did not restore the copies: \(singleHolders), \(doubleHolders)")
            for node in 1...3 { #expect(try Self.held(cluster, node: node).isSuperset(of: [single, double]), "node \(node)") }
            var restored: UInt64 = 0
            for node in 1...3 { restored += try await BlobProcessTests.metric(cluster, "aspen_blob_restored_total", node: node) }
            #expect(restored == 3, "copies made: \(restored)")
            // The upkeep ran as maintenance jobs: in the job list, each with its summary.
            let (_, listed) = try await cluster.aspen(["job", "list", "--type", "maintenance", "--state", "succeeded", "--json"])
            let jobs = try #require(try Self.json(listed)["jobs"] as? [[String: Any]], "\(listed)")
            #expect(jobs.contains { ($0["command"] as? [String]) == ["blob-gc"] }, "\(listed)")
            var copies = 0
            for job in jobs {
                let (_, result) = try await cluster.aspen(["job", "result", "\(job["id"] as? Int ?? 0)"])
                copies += (try? Self.json(result))?["copies_restored"] as? Int ?? 0
            }
            #expect(copies == 3, "copies restored by the jobs: \(copies) (\(jobs.count) jobs)")
        }

        @Test("past the quota, or one byte past blobBytesMax, an add is refused by name before any data is written; the node keeps serving")
        func quotaAndSizeLimit() async throws {
            let cluster = try ProcessCluster(nodes: 1)
            try cluster.startAll(environment: Self.environment(graceMs: 60_000, extra: ["ASPEN_BLOB_QUOTA": "1MiB"]))
            defer { cluster.terminateAll() }
            _ = try await cluster.leader()
            let first = try await Self.add(cluster, bytes: Array(repeating: 9, count: 600_000), ["--tag", "first"])
            let second = cluster.directory.appendingPathComponent("second").path
            try Data(Array(repeating: 8, count: 600_000)).write(to: URL(fileURLWithPath: second))
            let (refused, said) = try await cluster.aspen(["blob", "add", second], withErrors: true)
            #expect(refused == 4, "\(said)")
            #expect(said.contains("quota exceeded") && said.contains("blob-quota"), "\(said)")
            let partial = try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory(1) + "/blobs/partial")
            #expect(partial.isEmpty, "a refused add left \(partial)")
            #expect(try Self.held(cluster, node: 1) == [first])
            let (metrics, text) = try await cluster.aspen(["cluster", "metrics"])
            #expect(metrics == 0 && text.contains("aspen_blob_quota_refusals_total 1"))

            // One byte over the size limit (a sparse file: nothing is read before the refusal).
            let huge = cluster.directory.appendingPathComponent("huge").path
            FileManager.default.createFile(atPath: huge, contents: nil)
            #expect(truncate(huge, off_t(Limits.standard.blobBytesMax + 1)) == 0)
            let (tooBig, tooBigSaid) = try await cluster.aspen(["blob", "add", huge], withErrors: true)
            #expect(tooBig == 4, "\(tooBigSaid)")
            #expect(tooBigSaid.contains("blobBytesMax"), "\(tooBigSaid)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory(1) + "/blobs/partial").isEmpty)

            let out = cluster.directory.appendingPathComponent("out").path
            let (got, _) = try await cluster.aspen(["blob", "get", first, "-o", out])
            #expect(got == 0)
            #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(Array(repeating: 9, count: 600_000)))
        }
    }
}

/// Counts what a fetch verified.
struct CountingSink: BlobFetchSink {
    var bytes = 0
    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) {}
    mutating func group(index: UInt64, bytes data: UnsafeRawBufferPointer) { bytes += data.count }
}
