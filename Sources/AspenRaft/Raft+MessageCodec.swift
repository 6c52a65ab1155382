import AspenCore

/// The wire form of Raft messages: hand-written for the hot path (DESIGN §6). A version byte,
/// the group, sender, receiver and term as varints, then a tag and the kind's fields. Decoding
/// checks every count and length against `Limits` before allocating and rejects trailing bytes.
extension Raft.Message {
    static let wireVersion: UInt8 = 1

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        writer.write(Self.wireVersion)
        writer.writeVarint(UInt64(group.rawValue))
        writer.writeVarint(from.rawValue)
        writer.writeVarint(to.rawValue)
        writer.writeVarint(term)
        switch kind {
        case .preVote(let lastIndex, let lastTerm):
            writer.write(1)
            writer.writeVarint(lastIndex)
            writer.writeVarint(lastTerm)
        case .preVoteResponse(let granted):
            writer.write(2)
            writer.write(granted)
        case .vote(let lastIndex, let lastTerm, let transfer):
            writer.write(3)
            writer.writeVarint(lastIndex)
            writer.writeVarint(lastTerm)
            writer.write(transfer)
        case .voteResponse(let granted):
            writer.write(4)
            writer.write(granted)
        case .append(let append) where !append.wantsAnswer:
            writer.write(16)
            writer.writeVarint(append.prevIndex)
            writer.writeVarint(append.prevTerm)
            writer.writeVarint(append.commit)
        case .append(let append):
            writer.write(5)
            writer.writeVarint(append.prevIndex)
            writer.writeVarint(append.prevTerm)
            writer.writeVarint(append.commit)
            writer.writeVarint(UInt64(append.entries.count))
            for entry in append.entries {
                writer.writeVarint(entry.term)
                writer.writeVarint(entry.index)
                writer.writeBytes(entry.payload.encoded())
            }
        case .appendResponse(let response):
            writer.write(6)
            writer.writeVarint(response.index)
            writer.write(response.rejected)
            writer.writeVarint(response.hintIndex)
            writer.writeVarint(response.hintTerm)
        case .heartbeat(let commit, let readRound):
            writer.write(7)
            writer.writeVarint(commit)
            writer.writeVarint(readRound)
        case .heartbeatResponse(let readRound):
            writer.write(8)
            writer.writeVarint(readRound)
        case .snapshotChunk(let chunk):
            writer.write(9)
            writer.writeVarint(chunk.metadata.index)
            writer.writeVarint(chunk.metadata.term)
            Raft.encode(chunk.metadata.membership, into: &writer)
            writer.writeVarint(UInt64(chunk.totalBytes))
            writer.writeVarint(UInt64(chunk.offset))
            precondition(!chunk.needsData, "a snapshot chunk left without its bytes")
            writer.writeBytes(chunk.data)
        case .snapshotResponse(let response) where response.refused:
            writer.write(17)
            writer.writeVarint(response.snapshotIndex)
        case .snapshotResponse(let response):
            writer.write(10)
            writer.writeVarint(response.snapshotIndex)
            writer.writeVarint(UInt64(response.nextOffset))
            writer.write(response.matchIndex != nil)
            writer.writeVarint(response.matchIndex ?? 0)
        case .timeoutNow(let commit):
            writer.write(11)
            writer.writeVarint(commit)
        case .readIndex(let context):
            writer.write(12)
            writer.writeVarint(context)
        case .readIndexResponse(let context, let index):
            writer.write(13)
            writer.writeVarint(context)
            writer.write(index != nil)
            writer.writeVarint(index ?? 0)
        case .propose(let proposals):
            writer.write(14)
            writer.writeVarint(UInt64(proposals.commands.count))
            for (context, command) in zip(proposals.contexts, proposals.commands) {
                writer.writeVarint(context)
                writer.writeBytes(command)
            }
        case .proposeResponse(let contexts, let placement):
            writer.write(15)
            writer.writeVarint(UInt64(contexts.count))
            for context in contexts { writer.writeVarint(context) }
            writer.write(placement != nil)
            writer.writeVarint(placement?.term ?? 0)
            writer.writeVarint(placement?.firstIndex ?? 0)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.wireVersion else { throw .invalid("unknown Raft message version") }
        let groupValue = try reader.readVarint()
        guard groupValue <= UInt64(UInt32.max) else { throw .invalid("group id \(groupValue) out of range") }
        group = GroupID(UInt32(groupValue))
        from = NodeID(try reader.readVarint())
        to = NodeID(try reader.readVarint())
        term = try reader.readVarint()
        kind = try Self.decodeKind(&reader, limits: limits)
        try reader.expectEnd()
    }

    private static func decodeKind(_ reader: inout ByteReader, limits: Limits) throws(DecodingError) -> Kind {
        switch try reader.readByte() {
        case 1: return .preVote(lastIndex: try reader.readVarint(), lastTerm: try reader.readVarint())
        case 2: return .preVoteResponse(granted: try reader.readBool())
        case 3: return .vote(lastIndex: try reader.readVarint(), lastTerm: try reader.readVarint(), transfer: try reader.readBool())
        case 4: return .voteResponse(granted: try reader.readBool())
        case 5:
            let prevIndex = try reader.readVarint()
            let prevTerm = try reader.readVarint()
            let commit = try reader.readVarint()
            let count = try reader.readCount(limit: limits.raftBatchEntriesMax)
            var entries: [Raft.Entry] = []
            entries.reserveCapacity(count)
            var previousTerm = prevTerm
            for position in 0..<count {
                let term = try reader.readVarint()
                let index = try reader.readVarint()
                // A log is contiguous and its terms never decrease: an append that says otherwise
                // is refused here, before it reaches the log (whose preconditions it would trip).
                guard prevIndex < UInt64.max - UInt64(count), index == prevIndex + 1 + UInt64(position) else {
                    throw .invalid("append entry \(position) has index \(index); entries must follow \(prevIndex) without gaps")
                }
                guard term >= previousTerm else {
                    throw .invalid("append entry \(index) has term \(term), below the term \(previousTerm) before it")
                }
                previousTerm = term
                let payload = try Raft.Payload(decoding: try reader.readBytes(limit: limits.raftEntryBytesMax + 16), limits: limits)
                entries.append(Raft.Entry(term: term, index: index, payload: payload))
            }
            return .append(Raft.Append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit))
        case 16:
            return .append(
                Raft.Append(
                    prevIndex: try reader.readVarint(), prevTerm: try reader.readVarint(), entries: [], commit: try reader.readVarint(),
                    wantsAnswer: false))
        case 6:
            return .appendResponse(
                Raft.AppendResponse(
                    index: try reader.readVarint(), rejected: try reader.readBool(), hintIndex: try reader.readVarint(),
                    hintTerm: try reader.readVarint()))
        case 7: return .heartbeat(commit: try reader.readVarint(), readRound: try reader.readVarint())
        case 8: return .heartbeatResponse(readRound: try reader.readVarint())
        case 9:
            let index = try reader.readVarint()
            let term = try reader.readVarint()
            let membership = try Raft.decodeMembership(from: &reader, limits: limits)
            // An image is as large as the state: no bound but the disk's.
            let total = try reader.readCount(limit: Int.max)
            let offset = try reader.readCount(limit: total)
            let data = try reader.readBytes(limit: limits.raftSnapshotChunkBytes)
            guard data.count <= total - offset else { throw .invalid("snapshot chunk overruns its snapshot") }
            return .snapshotChunk(
                Raft.SnapshotChunk(
                    metadata: Raft.SnapshotMetadata(index: index, term: term, membership: membership), totalBytes: total,
                    offset: offset, data: data))
        case 10:
            let snapshotIndex = try reader.readVarint()
            let next = try reader.readCount(limit: Int.max)
            let hasMatch = try reader.readBool()
            let match = try reader.readVarint()
            return .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: snapshotIndex, nextOffset: next, matchIndex: hasMatch ? match : nil))
        case 17: return .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: try reader.readVarint(), nextOffset: 0, refused: true))
        case 11: return .timeoutNow(commit: try reader.readVarint())
        case 12: return .readIndex(context: try reader.readVarint())
        case 13:
            let context = try reader.readVarint()
            let hasIndex = try reader.readBool()
            let index = try reader.readVarint()
            return .readIndexResponse(context: context, index: hasIndex ? index : nil)
        case 14:
            let count = try reader.readCount(limit: limits.raftBatchEntriesMax)
            var contexts: [Raft.ProposalContext] = []
            var commands: [[UInt8]] = []
            contexts.reserveCapacity(count)
            commands.reserveCapacity(count)
            for _ in 0..<count {
                contexts.append(try reader.readVarint())
                commands.append(try reader.readBytes(limit: limits.raftEntryBytesMax))
            }
            return .propose(Raft.ForwardedProposals(contexts: contexts, commands: commands))
        case 15:
            let count = try reader.readCount(limit: limits.raftBatchEntriesMax)
            var contexts: [Raft.ProposalContext] = []
            contexts.reserveCapacity(count)
            for _ in 0..<count { contexts.append(try reader.readVarint()) }
            let placed = try reader.readBool()
            let term = try reader.readVarint()
            let firstIndex = try reader.readVarint()
            return .proposeResponse(contexts: contexts, placement: placed ? Raft.ProposalPlacement(term: term, firstIndex: firstIndex) : nil)
        case let tag: throw .unknownTag(tag, context: "Raft message")
        }
    }
}
