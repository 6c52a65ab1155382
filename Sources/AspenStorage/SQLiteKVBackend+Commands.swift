import AspenCore
import AspenKV
import Foundation
import GRDB

/// One command's scope inside the batch's transaction: a command that fails part-way is undone
/// whole. A SAVEPOINT per command halved the apply rate of puts (`aspen-storage-bench`: 85,000–
/// 106,000 puts/s with one, 139,000–229,000 without), so the writes every command makes are
/// undone from a list instead — a version recorded is deleted by its key, a session row or
/// result put back — and only the rarer writes that have no cheap inverse (lease changes,
/// compaction, removing a session) open a SAVEPOINT, once, before the first of them.
extension SQLiteKVBackend {
    struct Command {
        /// Inverses of the cheap writes, oldest first. After a SAVEPOINT opens, only the key
        /// index's changes are added (the SAVEPOINT covers the rows).
        var undo: [Undo] = []
        /// How many undo steps were recorded when the SAVEPOINT opened (nil: none opened).
        var savepointAt: Int?
        let revision: Revision
        let compacted: Revision
        let leaseSequence: LeaseID
        let dirty: Bool
        let compactedInTransaction: Revision?
    }

    enum Undo {
        /// A change added to `kv_history` and to the key index.
        case recorded(key: Bytes, revision: Revision)
        /// A session row written over `previous` (nil: it was new).
        case session(id: UInt64, previous: ClientSessionRecord?)
        /// A result inserted.
        case result(session: UInt64, sequence: UInt64)
        /// Results deleted.
        case dropped(session: UInt64, results: [(sequence: UInt64, result: Bytes)])
    }

    /// Whether a write now must say how to undo it (a command runs and no SAVEPOINT covers it).
    var needsUndo: Bool { command.map { $0.savepointAt == nil } ?? false }

    mutating func noteUndo(_ step: Undo) {
        guard command != nil else { return }
        if case .recorded = step {
            command?.undo.append(step)
        } else if needsUndo {
            command?.undo.append(step)
        }
    }

    /// Before a write without a cheap inverse: the rest of the command is covered by a SAVEPOINT.
    mutating func openSavepointIfNeeded() throws {
        guard needsUndo, let count = command?.undo.count else { return }
        try RawStatement(db, "SAVEPOINT command", file: file).run()
        command?.savepointAt = count
    }

    mutating func beginCommand() throws {
        precondition(writer && command == nil, "commands run one at a time, in the writer")
        command = Command(
            revision: currentRevision, compacted: oldestRevision, leaseSequence: lastLeaseID, dirty: dirty,
            compactedInTransaction: compactedInTransaction)
    }

    mutating func endCommand(keepingWrites: Bool) throws {
        guard let command else { preconditionFailure("no command to end") }
        self.command = nil
        if keepingWrites {
            if command.savepointAt != nil { try RawStatement(db, "RELEASE command", file: file).run() }
            return
        }
        if command.savepointAt != nil {
            try RawStatement(db, "ROLLBACK TO command", file: file).run()
            try RawStatement(db, "RELEASE command", file: file).run()
        }
        let covered = command.savepointAt ?? command.undo.count
        for (position, step) in command.undo.enumerated().reversed() {
            if case .recorded(let key, let revision) = step { index.unrecord(key, at: revision) }
            if position < covered { try undo(step) }
        }
        currentRevision = command.revision
        oldestRevision = command.compacted
        lastLeaseID = command.leaseSequence
        dirty = command.dirty
        compactedInTransaction = command.compactedInTransaction
    }

    private func undo(_ step: Undo) throws {
        switch step {
        case .recorded(let key, let revision):
            try db.execute(sql: "DELETE FROM kv_history WHERE revision = ? AND key = ?", arguments: [revision, Data(key)])
        case .session(let id, let previous):
            if let previous {
                try db.execute(
                    sql: "UPDATE client_sessions SET last_seen_ms = ?, acknowledged_through = ? WHERE id = ?",
                    arguments: [previous.lastSeenMs, Int64(bitPattern: previous.acknowledgedThrough), Int64(bitPattern: id)])
            } else {
                try db.execute(sql: "DELETE FROM client_sessions WHERE id = ?", arguments: [Int64(bitPattern: id)])
            }
        case .result(let session, let sequence):
            try db.execute(
                sql: "DELETE FROM client_results WHERE session = ? AND sequence = ?",
                arguments: [Int64(bitPattern: session), Int64(bitPattern: sequence)])
        case .dropped(let session, let results):
            for (sequence, result) in results {
                try db.execute(
                    sql: "INSERT INTO client_results(session, sequence, result) VALUES (?, ?, ?)",
                    arguments: [Int64(bitPattern: session), Int64(bitPattern: sequence), Data(result)])
            }
        }
    }
}
