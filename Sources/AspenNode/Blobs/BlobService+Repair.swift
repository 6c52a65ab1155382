import AspenBlob
import AspenCore
import AspenKV
import Foundation
import Synchronization

// Scrub (re-verifying copies at rest) and repair (replacing a bad copy, restoring lost ones).
extension BlobService {
    /// Re-verifies every blob this node holds against its hash, slice by slice, as a client
    /// would: a copy that fails is quarantined, its holder record dropped, and a verified copy
    /// fetched from another holder. `bytesPerSecond` paces it (nil: as fast as it goes).
    func scrub(bytesPerSecond: UInt64?) async throws -> BlobScrub {
        var report = BlobScrub(node: node.id.rawValue)
        let clock = ContinuousClock()
        let start = clock.now
        for file in files.held() {
            let tree = BlobTree(size: file.size)
            var group: UInt64 = 0
            var corrupt = false
            while group < tree.groupCount, !corrupt {
                let upper = min(tree.groupCount, group + limits.blobSliceGroupsMax)
                do {
                    _ = try files.verifiedSlice(file.hash, groups: group..<upper) { _ in }
                } catch .verificationFailed {
                    corrupt = true
                } catch {
                    break  // removed meanwhile (collected), or unreadable: the next pass sees.
                }
                let covered = min(file.size, tree.byteRange(ofGroup: upper - 1).upperBound) - tree.byteRange(ofGroup: group).lowerBound
                report.bytes += covered
                metrics.scrubbedBytes.add(covered, ordering: .relaxed)
                group = upper
                if let bytesPerSecond, bytesPerSecond > 0 {
                    let due = start + .milliseconds(Int64(report.bytes * 1000 / bytesPerSecond))
                    if due > clock.now { try await Task.sleep(until: due) }
                }
                try Task.checkCancellation()
            }
            report.checked += 1
            metrics.scrubbedBlobs.add(1, ordering: .relaxed)
            if corrupt {
                if report.corrupt.count < limits.blobListPageMax { report.corrupt.append(file.hash) }
                logger.error("blob copy failed verification at rest and was quarantined", metadata: ["hash": "\(file.hash)"])
                metrics.corrupt.add(1, ordering: .relaxed)
                if await replaceCopy(file.hash), report.repaired.count < limits.blobListPageMax {
                    report.repaired.append(file.hash)
                }
            }
        }
        logger.info("blob scrub finished", metadata: ["checked": "\(report.checked)", "bytes": "\(report.bytes)", "corrupt": "\(report.corrupt.count)"])
        return report
    }

    /// A bad copy found while serving: replaced in the background (one repair per blob at once).
    func noteCorrupt(_ hash: BlobHash, found: String) {
        metrics.corrupt.add(1, ordering: .relaxed)
        logger.error("blob copy failed verification and was quarantined", metadata: ["hash": "\(hash)", "found": "\(found)"])
        Task { _ = await replaceCopy(hash) }
    }

    /// After this node's copy of `hash` was quarantined: drops its holder record (so no one
    /// counts on it), fetches a verified copy from another holder and records it again. Returns
    /// whether the node holds a good copy again. The size is the blob's recorded one (a corrupt
    /// file may have another).
    func replaceCopy(_ hash: BlobHash) async -> Bool {
        guard repairing.withLock({ $0.insert(hash).inserted }) else { return false }
        defer { _ = repairing.withLock { $0.remove(hash) } }
        do {
            try await writeSystem(SystemWrite(changes: [.remove(name: BlobRecords.holderName(hash, node: node.id))]))
            try await node.linearizableBarrier()
            guard let stat = try await stat(hash) else { return false }  // collected meanwhile
            let size = stat.size
            let sources = stat.holders.map { NodeID(rawValue: $0.node) }.filter { $0 != node.id }
            guard !sources.isEmpty else {
                logger.error("blob has no other holder to repair this node's copy from", metadata: ["hash": "\(hash)"])
                return false
            }
            try await withTransfer { try await self.replicate(hash, size: size, from: sources.shuffled()) }
            try await recordHolder(hash, node.id)
            metrics.repaired.add(1, ordering: .relaxed)
            logger.notice("blob copy repaired from another holder", metadata: ["hash": "\(hash)"])
            return true
        } catch {
            logger.error("blob copy could not be repaired; the leader's upkeep tries again", metadata: ["hash": "\(hash)", "error": "\(error)"])
            return false
        }
    }

    /// Records `holder` as holding a verified copy, unless the blob was collected meanwhile.
    func recordHolder(_ hash: BlobHash, _ holder: NodeID) async throws {
        try await writeConditioned("recording a holder of blob \(hash)") {
            let metaName = BlobRecords.metaName(hash)
            guard let meta = try await record(metaName) else { return nil }
            return SystemWrite(changes: [
                .expect(name: metaName, value: meta),
                .set(name: BlobRecords.holderName(hash, node: holder), value: BlobRecords.encodeHolder(verifiedAtMs: node.nowMs())),
            ])
        }
    }

    /// The leader's repair loop: every blob held by fewer current members than the replication
    /// factor (or the cluster's size) gets copies on other members, fewest copies first, a few at
    /// a time. Records of holders no longer in the cluster are dropped. Returns the copies made.
    func restoreCopies(concurrency: Int = 4) async throws -> Int {
        try await node.linearizableBarrier()
        let membership = await node.membership
        let members = Set(membership.voters + membership.learners)
        let wanted = min(replicationFactor, members.count)
        var holders: [BlobHash: [NodeID]] = [:]
        var departed: [[UInt8]] = []
        for record in try await node.systemRecords(prefix: BlobRecords.holderRoot) {
            guard let holder = BlobRecords.holder(fromName: record.name, value: record.value),
                let hash = BlobRecords.hash(fromHolderName: record.name)
            else { continue }
            let id = NodeID(rawValue: holder.node)
            if members.contains(id) { holders[hash, default: []].append(id) } else { departed.append(record.name) }
        }
        for chunk in stride(from: 0, to: departed.count, by: 100) {
            let names = departed[chunk..<min(departed.count, chunk + 100)]
            try await writeSystem(SystemWrite(changes: names.map { .remove(name: $0) }))
        }
        var short: [(hash: BlobHash, size: UInt64, holders: [NodeID])] = []
        for record in try await node.systemRecords(prefix: BlobRecords.metaPrefix) {
            guard let hash = BlobRecords.hash(fromMetaName: record.name), let meta = BlobRecords.decodeMeta(record.value) else { continue }
            let have = holders[hash] ?? []
            if have.count < wanted, !have.isEmpty { short.append((hash, meta.size, have)) }
        }
        short.sort { $0.holders.count < $1.holders.count }
        let work = Array(short.prefix(limits.blobListPageMax))
        return await withTaskGroup(of: Bool.self) { group in
            var next = 0
            func launch() {
                guard next < work.count else { return }
                let blob = work[next]
                next += 1
                group.addTask {
                    let target = members.subtracting(blob.holders).sorted { $0.rawValue < $1.rawValue }.randomElement()
                    guard let target else { return false }
                    do {
                        try await self.askToReplicate(target, hash: blob.hash, size: blob.size, sources: blob.holders.shuffled())
                        try await self.recordHolder(blob.hash, target)
                        self.metrics.restored.add(1, ordering: .relaxed)
                        self.logger.notice(
                            "blob copy restored", metadata: ["hash": "\(blob.hash)", "to": "\(target)", "had": "\(blob.holders.count)"])
                        return true
                    } catch {
                        self.logger.warning("restoring a blob copy failed", metadata: ["hash": "\(blob.hash)", "to": "\(target)", "error": "\(error)"])
                        return false
                    }
                }
            }
            for _ in 0..<concurrency { launch() }
            var made = 0
            while let restored = await group.next() {
                if restored { made += 1 }
                launch()
            }
            return made
        }
    }
}

/// The blob store's counters, for `/metrics`.
final class BlobMetrics: Sendable {
    let scrubbedBlobs = Atomic<Int>(0)
    let scrubbedBytes = Atomic<UInt64>(0)
    let corrupt = Atomic<Int>(0)
    let repaired = Atomic<Int>(0)
    let restored = Atomic<Int>(0)
    let collected = Atomic<Int>(0)
    let rescued = Atomic<Int>(0)
    let filesSwept = Atomic<Int>(0)
    let quotaRefusals = Atomic<Int>(0)
    let servedBytes = Atomic<UInt64>(0)

    func exposition(held: UInt64, reserved: UInt64, quota: UInt64) -> [String] {
        var text = MetricsText()
        func add(_ name: String, _ kind: MetricsText.Kind, _ help: String, _ value: String) { text.add(name, kind, help, value) }
        add("aspen_blob_bytes_held", .gauge, "Bytes of blob data and outboards this node holds.", "\(held)")
        add("aspen_blob_bytes_reserved", .gauge, "Bytes reserved by blob transfers under way.", "\(reserved)")
        add("aspen_blob_quota_bytes", .gauge, "This node's blob budget (0: none).", "\(quota)")
        add("aspen_blob_served_bytes_total", .counter, "Bytes of slices (data and parent pairs) served to clients and members.", "\(servedBytes.load(ordering: .relaxed))")
        add("aspen_blob_quota_refusals_total", .counter, "Adds refused because they would pass the quota.", "\(quotaRefusals.load(ordering: .relaxed))")
        add("aspen_blob_scrubbed_blobs_total", .counter, "Blob copies re-verified at rest.", "\(scrubbedBlobs.load(ordering: .relaxed))")
        add("aspen_blob_scrubbed_bytes_total", .counter, "Bytes re-verified at rest.", "\(scrubbedBytes.load(ordering: .relaxed))")
        add("aspen_blob_corrupt_total", .counter, "Copies that failed verification (quarantined, never served).", "\(corrupt.load(ordering: .relaxed))")
        add("aspen_blob_repaired_total", .counter, "Bad copies replaced from another holder.", "\(repaired.load(ordering: .relaxed))")
        add("aspen_blob_restored_total", .counter, "Copies made by the leader for blobs with too few holders.", "\(restored.load(ordering: .relaxed))")
        add("aspen_blob_collected_total", .counter, "Blobs deleted by garbage collection.", "\(collected.load(ordering: .relaxed))")
        add("aspen_blob_rescued_total", .counter, "Blobs a collection found unreferenced but kept: added or tagged meanwhile.", "\(rescued.load(ordering: .relaxed))")
        add("aspen_blob_files_swept_total", .counter, "Blobs whose local files were removed after they stopped being held here.", "\(filesSwept.load(ordering: .relaxed))")
        return text.lines
    }
}

extension BlobService {
    public var metricsExposition: [String] {
        let used = files.used
        return metrics.exposition(held: used.held, reserved: used.reserved, quota: files.quotaBytes)
    }
}

/// Blobs a node acknowledged with fewer copies than asked for (a member was down or did not
/// answer), each with the copies it wants, and whether a loop is making them.
struct ShortCopies: Sendable {
    var wanted: [BlobHash: (size: UInt64, copies: Int)] = [:]
    var task: Task<Void, Never>?
    /// The loop's number: a loop that ends clears `task` only if it is still its own.
    var generation = 0
    /// Set at shutdown: no loop starts again.
    var stopped = false
    /// Beyond this many, the leader's periodic restore (`restoreCopies`) catches up instead.
    static let tracked = 4096
}

extension BlobService {
    /// Notes that `hash` was acknowledged with fewer than `wanted` copies; a loop on this node
    /// makes the rest as members answer, instead of leaving them to the leader's next restore.
    func completeCopies(_ hash: BlobHash, size: UInt64, wanted: Int) {
        shortCopies.withLock { short in
            guard !short.stopped, short.wanted.count < ShortCopies.tracked else { return }
            short.wanted[hash] = (size, wanted)
            if short.task == nil {
                short.generation += 1
                let generation = short.generation
                short.task = Task { await self.makeShortCopies(generation) }
            }
        }
    }

    /// Retries the missing copies, pausing 0.5 s and doubling to 10 s while no member takes
    /// one; ends when every blob has its copies (or was collected), or at shutdown. A member
    /// that fails or does not answer in time is not asked again in the same pass, so that one
    /// stalled member costs a pass one request timeout, not one per blob.
    func makeShortCopies(_ generation: Int) async {
        var pauseMs = 500
        while true {
            do { try await Task.sleep(for: .milliseconds(pauseMs)) } catch { break }
            let pending = shortCopies.withLock { short in
                if short.wanted.isEmpty, short.generation == generation { short.task = nil }
                return short.wanted
            }
            if pending.isEmpty { return }
            var progress = false
            var unanswered: Set<NodeID> = []
            for (hash, want) in pending {
                guard !Task.isCancelled else { break }
                guard let done = await finishCopies(of: hash, size: want.size, wanted: want.copies, skipping: &unanswered) else { continue }
                progress = progress || done
                if done { _ = shortCopies.withLock { $0.wanted.removeValue(forKey: hash) } }
            }
            pauseMs = progress ? 500 : min(pauseMs * 2, 10_000)
        }
        shortCopies.withLock { short in
            if short.generation == generation { short.task = nil }
        }
    }

    /// Asks members that lack `hash` (and are not in `skipping`) for copies until `wanted`
    /// current members hold it, and records each copy; whether they do (or the blob was
    /// collected meanwhile), nil when its record could not be read. Members that failed or were
    /// still copying when the others were done join `skipping`.
    private func finishCopies(of hash: BlobHash, size: UInt64, wanted: Int, skipping: inout Set<NodeID>) async -> Bool? {
        let stat: BlobStat?
        do { stat = try await self.stat(hash) } catch { return nil }
        guard let stat else { return true }
        let membership = await node.membership
        let members = Set(membership.voters + membership.learners)
        let holding = stat.holders.map { NodeID(rawValue: $0.node) }.filter(members.contains)
        let target = min(wanted, members.count)
        guard holding.count < target else { return true }
        let candidates = members.subtracting(holding).subtracting(skipping)
        guard !candidates.isEmpty else { return false }
        // One new copy is progress; the rest get the same grace as an add's.
        let made = await makeCopies(
            hash, size: size, holding: holding, wanted: target, required: holding.count + 1, among: Array(candidates))
        skipping.formUnion(made.unanswered)
        var recorded = holding.count
        for peer in made.holders.dropFirst(holding.count) {
            do {
                try await recordHolder(hash, peer)
                recorded += 1
                metrics.restored.add(1, ordering: .relaxed)
                logger.notice("blob copy made after its add", metadata: ["hash": "\(hash)", "to": "\(peer)", "copies": "\(recorded)"])
            } catch {
                logger.debug("recording a blob copy failed; trying again later", metadata: ["hash": "\(hash)", "to": "\(peer)", "error": "\(error)"])
            }
        }
        if !made.problems.isEmpty {
            logger.debug("blob copies after its add still missing; trying again later", metadata: ["hash": "\(hash)", "problems": "\(made.problems)"])
        }
        return recorded >= target
    }

    /// Stops the loop making missing copies (at shutdown).
    func stopShortCopies() async {
        let task = shortCopies.withLock { short in
            defer {
                short.task = nil
                short.stopped = true
            }
            return short.task
        }
        task?.cancel()
        await task?.value
    }
}
