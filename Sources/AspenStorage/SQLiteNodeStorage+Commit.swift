import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

// Loading, bootstrapping and committing: the log appended and synced first, then the committed
// entries applied in one transaction; snapshot installs; the durable state row.
extension SQLiteNodeStorage {
    public func load() throws -> Raft.PersistentState? {
        try guarded {
            guard let row = try pool.read({ db in
                try Row.fetchOne(db, sql: "SELECT term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership FROM raft_state WHERE grp = ?", arguments: [group.rawValue])
            }) else { return nil }
            let membership: Raft.Membership
            do {
                membership = try Raft.decodeMembership(Bytes(row[6] as Data))
            } catch {
                throw StorageError.undecodable(file: path, what: "the snapshot membership", detail: "\(error)")
            }
            var hardState = Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2])
            let applied: Raft.Index = row[3]
            let metadata = Raft.SnapshotMetadata(index: row[4], term: row[5], membership: membership)
            let contents = try log.contents()
            // The log is written before the database, so its term and vote are the newer ones.
            if let logged = contents.hardState, logged.term >= hardState.term {
                hardState = Raft.HardState(term: logged.term, vote: logged.vote, commit: max(logged.commit, hardState.commit))
            }
            lastDurable.withLock { $0 = hardState }
            // Raft may start with its compaction point below the applied index: an image is
            // written when one is needed, at the applied index of that moment.
            return Raft.PersistentState(
                hardState: hardState, snapshot: metadata, entries: try log.entries(after: metadata, in: contents), appliedIndex: applied)
        }
    }

    public func bootstrap(_ state: Raft.PersistentState) throws {
        try guarded {
            try durableWrite { db in
                // Only an untouched joining state may be replaced (a node founding a cluster).
                if let row = try Row.fetchOne(
                    db, sql: "SELECT term, vote, applied_index, snapshot_index, snapshot_membership FROM raft_state WHERE grp = ?",
                    arguments: [group.rawValue])
                {
                    let term: Int64 = row[0]
                    let vote: Int64? = row[1]
                    let applied: Int64 = row[2]
                    let snapshotIndex: Int64 = row[3]
                    let membership = try? Raft.decodeMembership(Bytes(row[4] as Data))
                    let counters: [Int64] = [term, applied, snapshotIndex]
                    let untouched = vote == nil && counters.allSatisfy { $0 == 0 } && membership?.isEmpty == true && log.isEmpty
                    guard untouched else {
                        throw StorageError.invalidBatch("\(path) already holds group \(group.rawValue); refusing to bootstrap over it")
                    }
                }
                try writeState(
                    db, hardState: state.hardState, applied: state.appliedIndex, snapshot: state.snapshot)
            }
            try log.append(state.entries, hardState: state.hardState)
            lastDurable.withLock { $0 = state.hardState }
        }
    }

    /// A write transaction that is on disk when it returns (`synchronous=FULL`), and with it
    /// every commit before it.
    func durableWrite<T>(_ body: (Database) throws -> T) throws -> T {
        try guarded {
            try pool.writeWithoutTransaction { db in
                try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
                var result: T?
                let outcome = Result {
                    try db.inTransaction {
                        result = try body(db)
                        return .commit
                    }
                }
                // Back to NORMAL before anything else commits.
                try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
                try outcome.get()
                return result!
            }
        }
    }

    public func commit(_ batch: StorageBatch) throws -> [AppliedEntry] {
        try commit(batch, resultsKnown: { _ in })
    }

    public func commit(_ batch: StorageBatch, resultsKnown known: ([AppliedEntry]) -> Void) throws -> [AppliedEntry] {
        guard !batch.isEmpty else {
            known([])
            return []
        }
        return try guarded {
            try snapshots.stage(batch.snapshotChunks, installing: batch.snapshot)
            if let snapshot = batch.snapshot { try install(snapshot, hardState: batch.hardState) }
            if !batch.entries.isEmpty || needsDurableState(batch.hardState) {
                try log.append(batch.entries, hardState: batch.hardState)
                if let state = batch.hardState { lastDurable.withLock { $0 = state } }
            }
            guard !batch.committedEntries.isEmpty else {
                known([])
                return []
            }
            let (results, compacted) = try indexed {
                try pool.write { db in try apply(batch.committedEntries, hardState: batch.hardState, in: db, known: known) }
            }
            if let compacted { index.compact(through: compacted) }
            return results
        }
    }

    /// Runs a write that changes the key index; if it fails (and its transaction rolled back),
    /// the index is read again from the file.
    func indexed<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            try? rebuildIndex()
            throw error
        }
    }

    /// Whether `state` changes the term or the vote, which must be on disk before the node
    /// acts on them. The commit index alone need not be: it is learned again from the leader.
    func needsDurableState(_ state: Raft.HardState?) -> Bool {
        guard let state else { return false }
        guard let durable = lastDurable.withLock({ $0 }) else { return true }
        return state.term != durable.term || state.vote != durable.vote
    }

    /// A batch that only applies committed entries (and moves the commit index) writes nothing to
    /// the log, and its SQLite commit does not wait for the disk: the entries are durable in
    /// the log already, and are applied again after a power loss.
    func appliesOnly(_ batch: StorageBatch) -> Bool {
        batch.entries.isEmpty && batch.snapshot == nil && batch.snapshotChunks.isEmpty && !needsDurableState(batch.hardState)
    }

    public func commitsWithoutDisk(_ batch: StorageBatch) -> Bool {
        appliesOnly(batch) && otherWrites.load(ordering: .relaxed) == 0 && !checkpointer.writerMayCheckpoint
    }

    func otherWrite<T>(_ body: () throws -> T) throws -> T {
        otherWrites.add(1, ordering: .relaxed)
        defer { otherWrites.subtract(1, ordering: .relaxed) }
        return try guarded(body)
    }

    func storedState(_ db: Database) throws -> (hardState: Raft.HardState, applied: Raft.Index, snapshot: Raft.SnapshotMetadata) {
        // Statements run on every commit are prepared once per connection (cached): preparing
        // costs more than running them.
        guard let row = try Row.fetchOne(
            db.cachedStatement(
                sql: "SELECT term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership FROM raft_state WHERE grp = ?"),
            arguments: [group.rawValue])
        else { throw StorageError.invalidBatch("group \(group.rawValue) was never bootstrapped in \(path)") }
        return (
            Raft.HardState(term: row[0], vote: (row[1] as Int64?).map { NodeID(UInt64($0)) }, commit: row[2]), row[3],
            Raft.SnapshotMetadata(
                index: row[4], term: row[5], membership: try decodeMembership(row[6] as Data))
        )
    }

    /// The snapshot's membership as stored; one that does not decode stops the store rather than
    /// be replaced by an empty one at the next commit.
    func decodeMembership(_ data: Data) throws -> Raft.Membership {
        do {
            return try Raft.decodeMembership(Bytes(data))
        } catch {
            throw StorageError.undecodable(file: path, what: "the snapshot's membership", detail: "\(error)")
        }
    }

    /// Replaces the state machine with the staged image of `metadata`, durably, reading it a
    /// frame at a time inside one transaction; then the log starts over after it and the
    /// staging goes. A damaged image rolls the transaction back: the state stays as it was.
    func install(_ metadata: Raft.SnapshotMetadata, hardState: Raft.HardState?) throws {
        // Reads wait while the index and the file disagree.
        index.beginReplacement()
        defer { index.endReplacement() }
        let compacted = try discardingRefused {
            try snapshots.withStagedImage(metadata) { source in
                index.replace(with: [:], compacted: 0)
                return try indexed {
                    try durableWrite { db in
                        let stored = try storedState(db)
                        var reader = KVSnapshotImage.Reader(from: source, limits: limits)
                        let compacted: Revision
                        do {
                            compacted = try SQLiteKVBackend.install(from: &reader, into: db, file: path, group: group, index: index)
                        } catch let error as DecodingError {
                            throw StorageError.imageRefused(index: metadata.index, detail: "\(source.path): \(error)")
                        }
                        try writeState(db, hardState: hardState ?? stored.hardState, applied: metadata.index, snapshot: metadata)
                        return compacted
                    }
                }
            }
        }
        index.compact(through: compacted)
        try log.reset(after: metadata.index, term: metadata.term, hardState: hardState)
        if let hardState { lastDurable.withLock { $0 = hardState } }
        snapshots.discardStaging()
    }

    /// A refused image is of no further use: its staging goes, and the next image starts afresh.
    func discardingRefused<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StorageError {
            if case .imageRefused = error { snapshots.discardStaging() }
            throw error
        }
    }

    /// Applies the entries in the caller's transaction; returns their results and the revision
    /// compacted, if one was (the index drops the changes once the transaction commits).
    func apply(_ committed: [Raft.Entry], hardState: Raft.HardState?, in db: Database, known: ([AppliedEntry]) -> Void) throws
        -> (results: [AppliedEntry], compacted: Revision?)
    {
        let stored = try storedState(db)
        var applied = stored.applied
        var results: [AppliedEntry] = []
        var backend = try SQLiteKVBackend(db, file: path, group: group, index: index, writer: true)
        for entry in committed where entry.index > applied {
            guard entry.index == applied + 1 else {
                throw StorageError.invalidBatch("entry \(entry.index) applied after \(applied)")
            }
            do {
                results.append(try Self.applyEntry(entry, to: &backend, limits: limits))
            } catch {
                throw StorageError.applyFailed(group: group, index: entry.index, detail: "\(error)")
            }
            applied = entry.index
        }
        try backend.flush()
        known(results)
        try writeState(db, hardState: hardState ?? stored.hardState, applied: applied, snapshot: stored.snapshot)
        return (results, backend.compactedInTransaction)
    }

    static func applyEntry<Backend: KVBackend>(_ entry: Raft.Entry, to backend: inout Backend, limits: Limits) throws -> AppliedEntry {
        guard case .command(let bytes) = entry.payload else {
            return AppliedEntry(index: entry.index, term: entry.term, result: nil)
        }
        do {
            let command = try KVCommand(decoding: bytes, limits: limits)
            let (result, events) = try KVStateMachine.applyRecording(command, to: &backend, limits: limits)
            return AppliedEntry(index: entry.index, term: entry.term, result: result, events: events)
        } catch let error as DecodingError {
            // Every node fails the same undecodable command the same way.
            return AppliedEntry(index: entry.index, term: entry.term, result: .failure(.invalidCommand("undecodable command: \(error)")))
        }
    }

    func writeState(_ db: Database, hardState: Raft.HardState, applied: Raft.Index, snapshot: Raft.SnapshotMetadata) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO raft_state(grp, term, vote, commit_index, applied_index, snapshot_index, snapshot_term, snapshot_membership)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(grp) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit_index = excluded.commit_index,
                applied_index = excluded.applied_index, snapshot_index = excluded.snapshot_index,
                snapshot_term = excluded.snapshot_term, snapshot_membership = excluded.snapshot_membership
                """
        ).execute(arguments: [
            group.rawValue, hardState.term, hardState.vote.map { Int64($0.rawValue) }, hardState.commit, applied,
            snapshot.index, snapshot.term, Data(Raft.encode(snapshot.membership)),
        ])
    }
}
