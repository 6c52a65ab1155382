import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

// Snapshot images for followers, log compaction through a snapshot, and defragmentation.
extension SQLiteNodeStorage {
    /// Writes the image from one read transaction, row by row, while commits go on.
    public func prepareSnapshotImage() throws -> (index: Raft.Index, bytes: Int) {
        try guarded {
            try snapshots.prepare { sink in
                try pool.read { db in
                    let applied = try Raft.Index.fetchOne(
                        db, sql: "SELECT applied_index FROM raft_state WHERE grp = ?", arguments: [group.rawValue]) ?? 0
                    var writer = KVSnapshotImage.Writer(into: sink)
                    try SQLiteKVBackend.writeImage(in: db, file: path, group: group, into: &writer)
                    sink = writer.sink
                    return applied
                }
            }
        }
    }

    public func snapshotImageBytes(index: Raft.Index, offset: Int, length: Int) throws -> Bytes? {
        try snapshots.bytes(index: index, offset: offset, length: length)
    }

    /// Records the snapshot's metadata in a commit that waits for the disk, and so makes the
    /// applied state through it durable (it is older than this commit); then deletes the log
    /// files that hold only entries through the snapshot. A snapshot recorded since (an
    /// installed one) is never moved back.
    public func compacted(_ metadata: Raft.SnapshotMetadata) throws {
        try otherWrite {
            try durableWrite { db in
                try db.execute(
                    sql: "UPDATE raft_state SET snapshot_index = ?, snapshot_term = ?, snapshot_membership = ? WHERE grp = ? AND snapshot_index < ?",
                    arguments: [metadata.index, metadata.term, Data(Raft.encode(metadata.membership)), group.rawValue, metadata.index])
            }
            try log.compact(through: metadata.index)
        }
    }

    public func defragment() throws -> (before: Int64, after: Int64)? {
        try otherWrite {
            let before = fileBytes()
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "VACUUM")
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            }
            return (before, fileBytes())
        }
    }
}
