import AspenBlob
import AspenCore
import AspenJobs
import AspenKV
import Foundation

// Garbage collection: mark against the committed tags and key-value references, sweep with
// conditioned deletions, then every member removes the files of what is gone.
extension BlobService {
    /// One collection pass. Mark: the blobs named by an unexpired tag or by a key's reference
    /// (an offloaded value) are live. Sweep: each other blob last added longer than the grace
    /// period ago is deleted by a system write conditioned on its record being unchanged (no add
    /// since) and on no tag naming it (none set since), so a blob protected while the pass ran
    /// is never deleted: that write fails where it applies, and the blob is reported rescued.
    /// A dry run reports the same list and changes nothing.
    func collect(dryRun: Bool) async throws -> BlobCollection {
        try await node.linearizableBarrier()
        let now = node.nowMs()
        let grace = settings.gcGraceMs
        var collection = BlobCollection(dryRun: dryRun)
        // Tags before keys: an offloaded value's temporary tag goes only after its key holds the
        // reference, so reading in this order sees at least one of the two.
        var live = Set<BlobHash>()
        var expired: [(name: String, value: [UInt8], hash: BlobHash)] = []
        for record in try await node.systemRecords(prefix: BlobRecords.tagPrefix) {
            guard let tag = BlobRecords.decodeTag(record.value) else { continue }
            if let expires = tag.expiresAtMs, expires <= now {
                expired.append((BlobRecords.tag(fromTagName: record.name), record.value, tag.hash))
            } else {
                live.insert(tag.hash)
            }
        }
        try await markReferences(into: &live)
        var candidates: [(hash: BlobHash, meta: [UInt8], size: UInt64, ageMs: Int64)] = []
        for record in try await node.systemRecords(prefix: BlobRecords.metaPrefix) {
            guard let hash = BlobRecords.hash(fromMetaName: record.name), let meta = BlobRecords.decodeMeta(record.value) else { continue }
            if live.contains(hash) || now - meta.addedAtMs < grace {
                collection.kept += 1
            } else {
                candidates.append((hash, record.value, meta.size, now - meta.addedAtMs))
            }
        }
        let page = limits.blobListPageMax
        collection.more = candidates.count > page || expired.count > page
        candidates = Array(candidates.prefix(page))
        expired = Array(expired.prefix(page))
        collection.expiredTags = expired.map(\.name)
        let reasons = Dictionary(
            candidates.map { ($0.hash, "no tag or key names it; last added \($0.ageMs / 1000) s ago, past the grace period (\(grace / 1000) s)") },
            uniquingKeysWith: { first, _ in first })
        collection.deleted = candidates.map { BlobCollected(hash: $0.hash, size: $0.size, reason: reasons[$0.hash] ?? "") }
        guard !dryRun else { return collection }

        for tag in expired {
            let tagName = BlobRecords.tagName(tag.name)
            do {
                try await writeSystem(SystemWrite(changes: [
                    .expect(name: tagName, value: tag.value), .remove(name: tagName),
                    .remove(name: BlobRecords.reverseName(tag.hash, tag: tag.name)),
                ]))
                logger.info("blob tag expired and removed", metadata: ["tag": "\(tag.name)", "hash": "\(tag.hash)"])
            } catch KVError.systemConditionFailed {
                // Set again meanwhile: it stays, and so does its blob.
            }
        }
        var deleted: [BlobCollected] = []
        for candidate in candidates {
            do {
                try await writeSystem(SystemWrite(changes: [
                    .expect(name: BlobRecords.metaName(candidate.hash), value: candidate.meta),
                    .expectNone(prefix: BlobRecords.reversePrefix(candidate.hash)),
                    .remove(name: BlobRecords.metaName(candidate.hash)),
                    .removePrefix(BlobRecords.holderPrefix(candidate.hash)),
                ]))
                deleted.append(BlobCollected(hash: candidate.hash, size: candidate.size, reason: reasons[candidate.hash] ?? ""))
                metrics.collected.add(1, ordering: .relaxed)
                logger.notice(
                    "blob deleted by garbage collection",
                    metadata: ["hash": "\(candidate.hash)", "size": "\(candidate.size)", "reason": "\(reasons[candidate.hash] ?? "")"])
            } catch KVError.systemConditionFailed {
                try await node.linearizableBarrier()
                if try await record(BlobRecords.metaName(candidate.hash)) == nil {
                    // Deleted all the same: by this write, applied once before a retry, or by another pass.
                    deleted.append(BlobCollected(hash: candidate.hash, size: candidate.size, reason: reasons[candidate.hash] ?? ""))
                    continue
                }
                collection.rescued.append(candidate.hash)
                metrics.rescued.add(1, ordering: .relaxed)
                logger.info("blob kept: added or tagged while being collected", metadata: ["hash": "\(candidate.hash)"])
            }
        }
        collection.deleted = deleted
        announce(
            deleted.map { blob in
                TopicMessage(
                    subject: "hooks.blob.deleted",
                    payload: ClusterEvents.json(["hash": blob.hash.hex, "size": blob.size, "reason": blob.reason]),
                    // The add it undoes names it: a later add and deletion of the same bytes is another event.
                    messageID: "blob-deleted:\(blob.hash.hex):\(candidates.first { $0.hash == blob.hash }.flatMap { BlobRecords.decodeMeta($0.meta)?.addedAtMs } ?? 0)")
            })
        collection.filesRemoved = await sweepMembers()
        return collection
    }

    /// Adds the blobs that keys' values refer to (offloaded values) to `live`, reading every key
    /// page by page at one revision.
    func markReferences(into live: inout Set<BlobHash>) async throws {
        var continuation: [UInt8]?
        repeat {
            let page = try await node.read(
                RangeRequest(.prefix([]), limit: limits.scanPageMax, continuation: continuation), consistency: .stale)
            for pair in page.kvs {
                if let reference = BlobReference(decoding: pair.value) { live.insert(reference.hash) }
            }
            continuation = page.more ? page.continuation : nil
        } while continuation != nil
    }

    /// Asks every member (this node too) to delete the files of blobs it no longer holds; returns
    /// how many blobs' files went. A member that cannot be reached sweeps on its own schedule.
    func sweepMembers() async -> Int {
        let members = await node.membership
        var removed = (try? await sweepFiles()) ?? 0
        for peer in members.voters + members.learners where peer != node.id {
            if case .collected(let swept)? = try? await callPeer(peer, .sweep) { removed += swept.filesRemoved }
        }
        return removed
    }

    /// Deletes this node's files of blobs it is not a recorded holder of (collected, or copies
    /// whose add never committed), once untouched for the grace period. Returns how many went.
    func sweepFiles() async throws -> Int {
        try await node.linearizableBarrier()
        var holding = Set<BlobHash>()
        for record in try await node.systemRecords(prefix: BlobRecords.holderRoot)
        where BlobRecords.node(fromHolderName: record.name) == node.id.rawValue {
            if let hash = BlobRecords.hash(fromHolderName: record.name) { holding.insert(hash) }
        }
        // File times are this machine's clock, not the cluster's.
        let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - settings.gcGraceMs
        var removed = 0
        for file in files.held() where !holding.contains(file.hash) && file.modifiedMs < cutoff {
            guard try await record(BlobRecords.holderName(file.hash, node: node.id)) == nil else { continue }
            if files.removeIfUntouched(file.hash, since: cutoff) {
                removed += 1
                metrics.filesSwept.add(1, ordering: .relaxed)
                logger.info("blob files removed: this node no longer holds the blob", metadata: ["hash": "\(file.hash)", "size": "\(file.size)"])
            }
        }
        return removed
    }

    /// Starts the node's own upkeep: the leader collects garbage and restores lost copies every
    /// `gcIntervalMs`; every node sweeps its files then too, and scrubs every `scrubIntervalMs`
    /// at the scrub rate.
    public func startMaintenance() {
        let task = Task { [self] in
            let clock = ContinuousClock()
            let start = clock.now
            var nextCollection = start + .milliseconds(settings.gcIntervalMs)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(min(1000, max(50, settings.gcIntervalMs))))
                await uploads.dropIdle(nowMs: node.nowMs())
                let now = clock.now
                // Collection and scrubs are maintenance jobs (`maintenanceTasks`); a follower's
                // sweep of files no record names stays here.
                if settings.gcIntervalMs > 0, now >= nextCollection {
                    nextCollection = now + .milliseconds(settings.gcIntervalMs)
                    do {
                        if await node.status.leader != node.id { _ = try await sweepFiles() }
                    } catch {
                        logger.info("blob file sweep did not finish; it runs again later", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        maintenance.withLock { $0 = task }
    }

    /// The blob store's maintenance, run as jobs of type `maintenance` (`JobService`): a
    /// collection (with the repair of missing copies) every `blob-gc-interval-ms` on any node,
    /// a scrub of each node's files every `blob-scrub-interval-ms` on that node.
    public var maintenanceTasks: [MaintenanceTask] {
        [
            MaintenanceTask(name: "blob-gc", intervalMs: settings.gcIntervalMs, perNode: false, timeoutMs: 3_600_000),
            MaintenanceTask(name: "blob-scrub", intervalMs: settings.scrubIntervalMs, perNode: true, timeoutMs: 0),
        ]
    }

    /// Whether the blob store's maintenance has anything to look at: a cluster that never held
    /// a blob gets no maintenance jobs (and its keyspace stays as its users left it).
    public func needsMaintenance() async -> Bool {
        if !files.held().isEmpty { return true }
        return (try? await node.systemRecords(prefix: Array("blob/".utf8)).isEmpty) == false
    }

    /// Runs a maintenance task here; its summary as JSON (the job's result).
    public func runMaintenance(_ task: String) async throws -> [UInt8]? {
        switch task {
        case "blob-gc":
            let collection = try await collect(dryRun: false)
            let restored = try await restoreCopies()
            return MaintenanceTask.summary([
                "deleted": collection.deleted.count, "expired_tags": collection.expiredTags.count, "kept": collection.kept,
                "rescued": collection.rescued.count, "files_removed": collection.filesRemoved, "more": collection.more,
                "copies_restored": restored,
            ])
        case "blob-scrub":
            let report = try await scrub(bytesPerSecond: settings.scrubBytesPerSecond)
            return MaintenanceTask.summary([
                "node": report.node, "checked": report.checked, "bytes": report.bytes, "corrupt": report.corrupt.count,
                "repaired": report.repaired.count,
            ])
        default:
            return nil
        }
    }

    public func stopMaintenance() async {
        let task = maintenance.withLock { task in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
        await stopShortCopies()
    }
}
