import AspenCore

extension Raft.Instance {
    // MARK: Leader: sending a snapshot in chunks

    /// The follower needs entries that were compacted: switch it to the snapshot state and send
    /// the first chunk. One chunk is in flight at a time; each acknowledgement asks for the next.
    mutating func startSnapshot(to follower: NodeID) {
        guard var pr = progress[follower] else { return }
        if pr.state != .snapshot || pr.snapshotIndex != snapshot.metadata.index {
            pr.becomeSnapshot(index: snapshot.metadata.index)
            progress[follower] = pr
        }
        sendSnapshotChunk(to: follower)
    }

    private mutating func sendSnapshotChunk(to follower: NodeID) {
        guard var pr = progress[follower], pr.state == .snapshot else { return }
        let total = snapshot.data.count
        let start = min(pr.snapshotOffset, total)
        let end = min(start + config.limits.raftSnapshotChunkBytes, total)
        let chunk = Raft.SnapshotChunk(
            metadata: snapshot.metadata, totalBytes: total, offset: start, data: Array(snapshot.data[start..<end]))
        send(to: follower, .snapshotChunk(chunk))
        pr.snapshotChunkInFlight = true
        pr.snapshotSentTick = ticks
        progress[follower] = pr
    }

    /// Resends a chunk that has gone unanswered, and restarts transfers of a snapshot that has
    /// since been replaced by a newer one.
    mutating func retransmitStalledSnapshots() {
        for member in membership.allMembers where member != id {
            guard let pr = progress[member], pr.state == .snapshot else { continue }
            if pr.snapshotIndex != snapshot.metadata.index {
                startSnapshot(to: member)
            } else if pr.snapshotChunkInFlight && ticks - pr.snapshotSentTick >= UInt64(config.appendRetryTicks) {
                sendSnapshotChunk(to: member)
            }
        }
    }

    mutating func handleSnapshotResponse(_ response: Raft.SnapshotResponse, from follower: NodeID) {
        guard role == .leader, var pr = progress[follower] else { return }
        pr.recentActive = true
        if let match = response.matchIndex {
            _ = pr.acknowledge(match)
            if pr.state == .snapshot { pr.becomeProbe() }
            pr.next = max(pr.next, pr.match + 1)
            progress[follower] = pr
            if commitIfQuorum() { broadcastRequested = true }
            sendAppend(to: follower, evenIfEmpty: true)
            return
        }
        guard pr.state == .snapshot else { return }
        if response.snapshotIndex != pr.snapshotIndex || response.snapshotIndex != snapshot.metadata.index {
            progress[follower] = pr
            startSnapshot(to: follower)
            return
        }
        pr.snapshotOffset = response.nextOffset
        pr.snapshotChunkInFlight = false
        progress[follower] = pr
        sendSnapshotChunk(to: follower)
    }

    // MARK: Follower: receiving a snapshot

    mutating func handleSnapshotChunk(_ chunk: Raft.SnapshotChunk, from leaderID: NodeID) {
        let metadata = chunk.metadata
        func answer(_ nextOffset: Int, match: Raft.Index? = nil) {
            send(
                to: leaderID,
                .snapshotResponse(Raft.SnapshotResponse(snapshotIndex: metadata.index, nextOffset: nextOffset, matchIndex: match)))
        }
        if metadata.index <= log.committed {
            // Already have everything it holds.
            answer(chunk.totalBytes, match: log.committed)
            return
        }
        guard chunk.totalBytes <= config.limits.raftSnapshotBytesMax,
            chunk.offset + chunk.data.count <= chunk.totalBytes
        else {
            answer(0)
            return
        }
        if incomingSnapshot?.metadata != metadata {
            guard chunk.offset == 0 else {
                answer(0)
                return
            }
            incomingSnapshot = Raft.Snapshot(metadata: metadata, data: [])
            incomingSnapshot?.data.reserveCapacity(chunk.totalBytes)
        }
        let received = incomingSnapshot?.data.count ?? 0
        guard chunk.offset == received else {
            answer(received)
            return
        }
        incomingSnapshot?.data.append(contentsOf: chunk.data)
        guard chunk.isLast, let complete = incomingSnapshot else {
            answer(received + chunk.data.count)
            return
        }
        incomingSnapshot = nil
        restore(complete)
        answer(chunk.totalBytes, match: log.committed)
    }

    /// Adopts a received snapshot: the log is replaced, unless it already holds the snapshot's
    /// last entry, in which case only the commit index moves.
    private mutating func restore(_ received: Raft.Snapshot) {
        let metadata = received.metadata
        if log.matches(index: metadata.index, term: metadata.term) {
            advanceCommit(to: metadata.index)
            return
        }
        log.restore(index: metadata.index, term: metadata.term)
        membership = metadata.membership
        snapshotMembership = metadata.membership
        membershipHistory = []
        snapshot = received
        snapshotToInstall = received
        appliedHandedOut = metadata.index
    }
}
