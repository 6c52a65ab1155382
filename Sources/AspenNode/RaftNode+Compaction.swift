import AspenCore
import AspenKV
import AspenRaft
import AspenStorage

// Compaction: of the key-value history (AutoCompaction) and of the log (CompactionPolicy), and snapshots on demand.
extension RaftNode {
    /// The leader compacts the key-value history when its `AutoCompaction` says so, through the
    /// log like a client's compaction (as a maintenance job once the job system has set
    /// `historyCompactionSubmitter`); a node that is not leading forgets what it sampled.
    func compactHistoryIfDue() {
        guard autoCompaction != nil, !historyCompactionInFlight else { return }
        guard raft.isLeader else {
            autoCompaction?.reset()
            return
        }
        guard let target = autoCompaction?.due(nowMs: nowMs(), revision: watches.revision),
            let compacted = try? storage.revisions().compacted, target > compacted
        else { return }
        historyCompactionInFlight = true
        let mode = autoCompaction.map { "\($0.mode)" } ?? ""
        let submitter = historyCompactionSubmitter
        Task {
            do {
                if let submitter {
                    try await submitter(target)
                    self.logger.info("history compaction submitted as a maintenance job", metadata: ["revision": "\(target)", "auto-compaction": "\(mode)"])
                } else {
                    _ = try await self.propose(.compact(target)).get()
                    self.logger.info("history compacted", metadata: ["revision": "\(target)", "auto-compaction": "\(mode)"])
                }
            } catch {
                self.logger.warning("automatic compaction failed", metadata: ["revision": "\(target)", "error": "\(error)"])
            }
            self.historyCompactionDone()
        }
    }

    func historyCompactionDone() { historyCompactionInFlight = false }

    /// Tells `observe` of each snapshot this node takes from now on.
    public func setSnapshotObserver(_ observe: (@Sendable (Raft.Index, Raft.Term) -> Void)?) {
        snapshotObserver = observe
    }

    /// Hands the compactions `AutoCompaction` decides to `submit` instead of proposing them.
    public func setHistoryCompactionSubmitter(_ submit: (@Sendable (Revision) async throws -> Void)?) {
        historyCompactionSubmitter = submit
    }

    /// Milliseconds of the node's monotonic clock, the time `CompactionPolicy` decides by.
    func monotonicMs() -> Int64 { Int64((ContinuousClock.now - clockStart) / .milliseconds(1)) }

    /// Compacts the log when `CompactionPolicy` says so; the storage half (deleting the
    /// prefix) runs off the actor, and no other compaction starts until it is done.
    func compactIfDue() {
        guard !stopped else { return }
        let view = Raft.CompactionPolicy.View(
            applied: appliedIndex, snapshotIndex: raft.snapshotMetadata.index, lastIndex: raft.lastIndex, isLeader: raft.isLeader,
            followers: raft.followers.map { ($0.matchIndex, $0.snapshotIndex) })
        guard case .compact(let index, let followerBehind) = compaction.decide(view, nowMs: monotonicMs()) else { return }
        if followerBehind { counters.compactionsWithFollowerBehind += 1 }
        Task {
            do {
                _ = try await self.compact(through: index)
                self.compaction.compacted()
            } catch {
                let backoffMs = self.compaction.compactionFailed(nowMs: self.monotonicMs())
                self.snapshotFailed("compacting the log through a snapshot failed", error, retryInMs: backoffMs)
            }
        }
    }

    /// Counts and logs a failed snapshot or compaction (the policy put the next attempt off).
    func snapshotFailed(_ what: String, _ error: any Error, retryInMs: Int64) {
        counters.snapshotFailures += 1
        logger.error(
            "\(what); the log keeps growing until it succeeds",
            metadata: [
                "error": "\(error)", "retry_in_ms": "\(retryInMs)", "failures": "\(counters.snapshotFailures)",
                "applied": "\(appliedIndex)", "snapshot_index": "\(raft.snapshotMetadata.index)",
            ])
    }

    /// Compacts the log through `index` (applied); nothing when the last snapshot already
    /// covers it. Returns the snapshot now in force.
    ///
    /// Raft's log is compacted at once; the store deletes the prefix off the actor (a hundred
    /// thousand rows take long enough to delay heartbeats past an election timeout). Until it
    /// is done the store still holds entries Raft no longer needs, which is harmless.
    func compact(through index: Raft.Index) async throws -> Raft.SnapshotMetadata {
        guard index > raft.snapshotMetadata.index else { return raft.snapshotMetadata }
        do {
            // The store first: if it fails, Raft's log stays as it was and the next attempt comes.
            let metadata = try raft.compaction(through: index)
            let storage = self.storage
            let clock = ContinuousClock()
            let started = clock.now
            try await Task.detached { try storage.compacted(metadata) }.value
            // (A snapshot installed meanwhile may have moved Raft past it.)
            if metadata.index > raft.snapshotMetadata.index { try raft.compact(through: metadata.index) }
            logger.info(
                "log compacted",
                metadata: [
                    "through": "\(metadata.index)", "term": "\(raft.term)",
                    "storage_ms": "\(Int((clock.now - started) / .milliseconds(1)))",
                ])
            snapshotObserver?(metadata.index, metadata.term)
            return metadata
        } catch {
            logger.error("compaction failed", metadata: ["error": "\(error)"])
            throw NodeError.refused("the snapshot could not be taken: \(error)")
        }
    }

    /// Compacts the log through the applied state and writes an image of it for followers
    /// (`aspen cluster snapshot`), off the actor. Returns the compaction's index and term, and
    /// the image's size.
    @discardableResult
    public func snapshotNow() async throws -> (index: Raft.Index, term: Raft.Term, bytes: Int) {
        let metadata = try await compact(through: appliedIndex)
        // One image at a time: the store keeps one.
        while preparingImage { try await Task.sleep(for: .milliseconds(10)) }
        preparingImage = true
        defer { preparingImage = false }
        let storage = self.storage
        let prepared: (index: Raft.Index, bytes: Int)
        do {
            prepared = try await Task.detached { try storage.prepareSnapshotImage() }.value
        } catch {
            throw NodeError.refused("the snapshot image could not be written: \(error)")
        }
        counters.snapshotImagesPrepared += 1
        raft.snapshotImagePrepared(index: prepared.index, bytes: prepared.bytes)
        pump()
        return (metadata.index, metadata.term, prepared.bytes)
    }
}
