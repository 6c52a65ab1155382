import AspenCore
import AspenKV
import AspenRaft
import AspenStorage
import Synchronization

// The Ready loop: persist, send, apply, advance; group commit and early sends.
extension RaftNode {
    func pump() {
        guard !stopped else { return }
        guard !committing else {
            scheduleEarlySend()
            return
        }
        committing = true
        Task { await self.drain() }
    }

    /// While a storage commit is in flight, what may leave before it ends (new appends to
    /// followers, forwarded commands, answers to them) leaves in a task of its own rather than
    /// after the commit: followers write new entries while the leader does, and a follower's
    /// forwarded command does not wait for its own fsync. One task serves every input that
    /// arrives before it runs.
    func scheduleEarlySend() {
        guard !earlySendScheduled else { return }
        earlySendScheduled = true
        Task { self.sendEarly() }
    }

    func sendEarly() {
        earlySendScheduled = false
        guard !stopped else { return }
        dispatch(raft.takeMessagesSendableNow())
    }

    /// Persist, send, apply, advance — until the instance has nothing more to do.
    func drain() async {
        defer { committing = false }
        while !stopped {
            let ready = raft.ready()
            if ready.isEmpty { break }
            noteRoleChange()
            for outcome in ready.forwardedProposals { place(outcome) }
            dispatch(ready.messages)
            if ready.wantsSnapshotImage { prepareImage() }
            var batch = StorageBatch(ready)
            var applied: [AppliedEntry] = []
            if !batch.isEmpty {
                let storage = self.storage
                // The writers of the entries this batch applies are answered as soon as their
                // results are known, without waiting for the batch's fsync (see
                // `NodeStorage.commit(_:resultsKnown:)`); whoever is not answered then is after.
                let waiting = Mutex<[Raft.Index: Raft.WriterBook<Writer>.Pending]>([:])
                for entry in batch.committedEntries {
                    if let pending = writers.take(at: entry.index) { waiting.withLock { $0[entry.index] = pending } }
                }
                let answerKnown: @Sendable ([AppliedEntry]) -> Void = { [self] results in
                    for entry in results {
                        guard let proposal = waiting.withLock({ $0.removeValue(forKey: entry.index) }) else { continue }
                        // Answered before the batch commits: caches over the store are told
                        // first, so the writer's next request does not find the old state there.
                        if !entry.events.isEmpty { self.watches.notifyObservers(entry.events) }
                        self.answeredThrough.max(entry.index, ordering: .relaxed)
                        Self.answer(proposal, with: entry)
                    }
                }
                while !batch.isEmpty {
                    do {
                        let clock = ContinuousClock()
                        let started = clock.now
                        if appliesQuickly(batch) {
                            counters.storageCommitsInline += 1
                            applied = try storage.commit(batch, resultsKnown: answerKnown)
                        } else {
                            // Off the actor: proposals keep arriving and join the next batch.
                            let attempt = batch
                            applied = try await Task.detached { try storage.commit(attempt, resultsKnown: answerKnown) }.value
                        }
                        let elapsed = (clock.now - started).components
                        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18
                        counters.storageCommits += 1
                        counters.committedEntries += batch.entries.count
                        counters.storageCommitSeconds += seconds
                        counters.storageCommitSecondsMax = max(counters.storageCommitSecondsMax, seconds)
                        counters.storageCommitLatency.observe(seconds)
                        if !batch.entries.isEmpty { counters.groupCommitEntries.observe(Double(batch.entries.count)) }
                        break
                    } catch StorageError.imageRefused(let index, let detail) where batch.snapshot?.index == index {
                        // A damaged image is not a damaged node: it keeps its state and log, and
                        // the leader sends another. The rest of the batch (a term or vote) is
                        // written without it.
                        logger.error("snapshot image refused; the leader will send another", metadata: ["index": "\(index)", "error": "\(detail)"])
                        counters.snapshotsRefused += 1
                        raft.snapshotRefused(batch.snapshot!)
                        batch.snapshot = nil
                        batch.snapshotChunks = []
                    } catch {
                        for (index, pending) in waiting.withLock({ $0 }) { writers.putBack(pending, at: index) }
                        logger.critical("storage failed; stopping the node", metadata: ["error": "\(error)"])
                        stop()
                        return
                    }
                }
                // Entries the store skipped (already applied) are answered below, as before.
                for (index, pending) in waiting.withLock({ $0 }) { writers.putBack(pending, at: index) }
                if let snapshot = batch.snapshot {
                    // Watchers cannot be told the changes a snapshot skipped: they resume.
                    watches.endAll(.lagged)
                    counters.snapshotsInstalled += 1
                    raft.snapshotInstalled(snapshot)
                    failProposals(through: snapshot.index, with: NodeError.outcomeUnknown)
                    advanceApplied(to: snapshot.index)
                }
                if let last = batch.entries.last { raft.persisted(upTo: last.index, term: last.term) }
            }
            dispatch(ready.messagesAfterPersist)
            watches.publish(applied.flatMap(\.events))
            for entry in applied { resolve(entry) }
            if let last = batch.committedEntries.last { advanceApplied(to: last.index) }
            if batch.snapshot != nil || applied.contains(where: { if case .success(.systemWritten)? = $0.result { true } else { false } }) {
                systemRecordsChanged()
            }
            noteMembershipChange()
            counters.snapshotImagesRefused = Int(raft.imagesRefused)
            for state in ready.readStates { readIndexWaiters.removeValue(forKey: state.context)?.resume(returning: state.index) }
            for context in ready.droppedReads {
                readIndexWaiters.removeValue(forKey: context)?.resume(throwing: NodeError.notLeader(leaderHint: raft.leader))
            }
        }
        compactIfDue()
    }

    /// Whether to commit `batch` on the node's loop rather than hand it to a pool thread and
    /// back: at low load those two thread switches, for the append and again for the apply, are
    /// a good part of what a put costs. Only a batch that applies a few committed entries of
    /// bounded work (puts, lease grants and keep-alives, no-ops) qualifies, and only when the
    /// store says it needs no disk wait for it (no fsync, no checkpoint, no other write ahead of
    /// it). Deletes of ranges, transactions and compactions, which can touch any number of
    /// rows, always go to the pool.
    func appliesQuickly(_ batch: StorageBatch) -> Bool {
        guard !batch.committedEntries.isEmpty, batch.committedEntries.count <= configuration.limits.inlineApplyEntriesMax,
            storage.commitsWithoutDisk(batch)
        else { return false }
        var bytes = 0
        for entry in batch.committedEntries {
            guard case .command(let payload) = entry.payload else { continue }
            bytes += payload.count
            guard bytes <= configuration.limits.inlineApplyBytesMax, KVCommand.hasBoundedWork(encoded: payload) else { return false }
        }
        return true
    }

    // Under load, batches are larger and the loop has sockets to serve: those go to the pool,
    // where they run beside the loop on another core (`Limits.inlineApplyEntriesMax`).

    func noteMembershipChange() {
        guard raft.membership != lastMembership else { return }
        if lastMembership != nil { logger.info("membership changed", metadata: ["membership": "\(raft.membership)", "term": "\(raft.term)"]) }
        lastMembership = raft.membership
        membershipChanged(raft.membership)
    }

    func noteRoleChange() {
        if raft.role != lastRole || raft.term != lastTerm {
            lastRole = raft.role
            lastTerm = raft.term
            termNow.store(raft.term, ordering: .relaxed)
            logger.info("role changed", metadata: ["role": "\(raft.role)", "term": "\(raft.term)", "leader": "\(raft.leader.map(\.description) ?? "none")"])
            runLeasePolicy()
        }
    }
}
