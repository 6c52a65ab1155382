import AspenCore

extension Raft {
    /// Why a proposal (command, membership change or leadership transfer) was refused. A refused
    /// proposal was not appended anywhere; it is safe to retry elsewhere.
    public enum ProposalError: Error, Sendable, Equatable, CustomStringConvertible {
        case notLeader(leaderHint: NodeID?)
        case leaderBeingRemoved
        case leadershipTransferInProgress(to: NodeID)
        case emptyProposal
        case batchTooLarge(entries: Int, limit: Int)
        case entryTooLarge(bytes: Int, limit: Int)
        case tooManyPendingEntries(limit: Int)
        case tooManyPendingBytes(limit: Int)
        /// The in-memory log is full: compaction has fallen behind.
        case logFull(entries: Int, limit: Int)
        case membershipChangeInProgress
        case invalidMembership(String)
        case invalidTransferTarget(NodeID, reason: String)

        public var description: String {
            switch self {
            case .notLeader(let hint):
                return "not the leader" + (hint.map { "; the leader is \($0)" } ?? "; no leader is known")
            case .leaderBeingRemoved:
                return "this leader is being removed from the cluster; retry on another member"
            case .leadershipTransferInProgress(let target):
                return "leadership is being transferred to \(target); retry shortly"
            case .emptyProposal: return "a proposal must carry at least one entry"
            case .batchTooLarge(let entries, let limit):
                return "proposal of \(entries) entries exceeds raftBatchEntriesMax (\(limit))"
            case .entryTooLarge(let bytes, let limit):
                return "entry of \(bytes) bytes exceeds raftEntryBytesMax (\(limit))"
            case .tooManyPendingEntries(let limit):
                return "more than raftPendingProposalsMax (\(limit)) entries are waiting to commit"
            case .tooManyPendingBytes(let limit):
                return "more than raftPendingProposalBytesMax (\(limit)) bytes are waiting to commit"
            case .logFull(let entries, let limit):
                return "the in-memory log holds \(entries) entries, at raftLogEntriesMax (\(limit)); retry once it is compacted"
            case .membershipChangeInProgress:
                return "another membership change has not finished; one change at a time"
            case .invalidMembership(let reason): return "invalid membership change: \(reason)"
            case .invalidTransferTarget(let id, let reason): return "cannot transfer leadership to \(id): \(reason)"
            }
        }
    }

    /// Why a linearizable read could not be started.
    public enum ReadError: Error, Sendable, Equatable, CustomStringConvertible {
        case noLeader
        case tooManyPendingReads(limit: Int)

        public var description: String {
            switch self {
            case .noLeader: return "no leader is known; a linearizable read needs one"
            case .tooManyPendingReads(let limit):
                return "more than raftPendingReadsMax (\(limit)) reads are waiting"
            }
        }
    }

    /// Why the shell's request to compact the log was refused.
    public enum CompactionError: Error, Sendable, Equatable, CustomStringConvertible {
        case notApplied(index: Index, applied: Index)
        case alreadyCompacted(index: Index, snapshotIndex: Index)

        public var description: String {
            switch self {
            case .notApplied(let index, let applied):
                return "cannot snapshot at \(index): only \(applied) has been applied and persisted"
            case .alreadyCompacted(let index, let snapshotIndex):
                return "cannot snapshot at \(index): the log is already compacted through \(snapshotIndex)"
            }
        }
    }
}
