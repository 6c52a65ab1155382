import AspenCore

extension Raft.Instance {
    // MARK: Leader: streaming an image

    /// The image followers may still catch up from: the log holds every entry after it.
    var usableImage: Raft.SnapshotImage? {
        guard let image, image.metadata.index >= log.snapshotIndex else { return nil }
        return image
    }

    /// The follower needs entries that were compacted: switch it to the snapshot state and
    /// stream it the current image, or ask the shell for one (`Ready.wantsSnapshotImage`).
    mutating func startSnapshot(to follower: NodeID) {
        guard var pr = progress[follower] else { return }
        let current = usableImage?.metadata.index ?? 0
        if pr.state != .snapshot || pr.snapshotIndex != current {
            pr.becomeSnapshot(index: current, tick: ticks)
            progress[follower] = pr
        }
        guard current != 0 else {
            requestImage()
            return
        }
        sendSnapshotChunks(to: follower)
    }

    /// Asks the shell for an image, at most once per retry interval while none comes.
    private mutating func requestImage() {
        if let asked = imageRequestTick, ticks - asked < UInt64(config.appendRetryTicks) { return }
        imageRequestTick = ticks
        imageRequested = true
    }

    /// Sends chunks until `raftSnapshotChunksInFlightMax` (or `chunksMax`) are unconfirmed. The
    /// chunks carry no bytes: the shell reads them from the image as they leave.
    private mutating func sendSnapshotChunks(to follower: NodeID, chunksMax: Int? = nil) {
        guard var pr = progress[follower], pr.state == .snapshot, let image = usableImage, pr.snapshotIndex == image.metadata.index
        else { return }
        let chunkBytes = config.limits.raftSnapshotChunkBytes
        let window = chunkBytes * min(chunksMax ?? .max, config.limits.raftSnapshotChunksInFlightMax)
        while pr.snapshotOffset < image.bytes && pr.snapshotOffset - pr.snapshotAcked < window {
            let length = min(chunkBytes, image.bytes - pr.snapshotOffset)
            send(
                to: follower,
                .snapshotChunk(
                    Raft.SnapshotChunk(metadata: image.metadata, totalBytes: image.bytes, offset: pr.snapshotOffset, length: length)))
            pr.snapshotOffset += length
        }
        progress[follower] = pr
    }

    /// Restarts transfers whose image is gone (the log was compacted past it) or never came,
    /// and goes back to the last confirmed byte of a transfer that stopped moving (a chunk or
    /// its answer was lost).
    mutating func retransmitStalledSnapshots() {
        guard role == .leader else { return }
        for member in membership.allMembers where member != id {
            guard var pr = progress[member], pr.state == .snapshot else { continue }
            let current = usableImage?.metadata.index ?? 0
            if pr.snapshotIndex != current || current == 0 {
                startSnapshot(to: member)
            } else if pr.snapshotOffset > pr.snapshotAcked && ticks - pr.snapshotProgressTick >= UInt64(config.appendRetryTicks) {
                // Only the oldest unconfirmed chunk: a link too slow for the window, or a peer
                // that stopped reading, is not sent the whole window again each interval.
                pr.snapshotOffset = pr.snapshotAcked
                pr.snapshotProgressTick = ticks
                progress[member] = pr
                sendSnapshotChunks(to: member, chunksMax: 1)
            }
        }
    }

    mutating func handleSnapshotResponse(_ response: Raft.SnapshotResponse, from follower: NodeID) {
        guard role == .leader, var pr = progress[follower] else { return }
        pr.recentActive = true
        if response.refused {
            // The follower could not install the image it was sent: if it is the one this
            // leader streams, give it up; a new one is written and sent (to every follower
            // that was receiving it: they start over).
            progress[follower] = pr
            guard pr.state == .snapshot, response.snapshotIndex == pr.snapshotIndex, image?.metadata.index == response.snapshotIndex
            else { return }
            imagesRefused += 1
            snapshotImageUnavailable(index: response.snapshotIndex)
            startSnapshot(to: follower)
            return
        }
        if let match = response.matchIndex {
            _ = pr.acknowledge(match)
            if pr.state == .snapshot { pr.becomeProbe() }
            pr.next = max(pr.next, pr.match + 1)
            progress[follower] = pr
            if commitIfQuorum() { broadcastRequested = true }
            sendAppend(to: follower, evenIfEmpty: true)
            return
        }
        // Answers about another image, or reordered old answers, change nothing.
        guard pr.state == .snapshot, pr.snapshotIndex != 0, response.snapshotIndex == pr.snapshotIndex else {
            progress[follower] = pr
            return
        }
        if response.nextOffset > pr.snapshotAcked {
            // (A late answer may confirm bytes past a rewind.)
            let confirmed = min(response.nextOffset, usableImage?.bytes ?? pr.snapshotOffset)
            pr.snapshotAcked = confirmed
            pr.snapshotOffset = max(pr.snapshotOffset, confirmed)
            pr.snapshotProgressTick = ticks
        } else if response.nextOffset == 0 && pr.snapshotAcked > 0 {
            // The follower lost what it had staged (it restarted): start over.
            pr.snapshotAcked = 0
            pr.snapshotOffset = 0
            pr.snapshotProgressTick = ticks
        }
        progress[follower] = pr
        sendSnapshotChunks(to: follower)
    }

    // MARK: Follower: receiving an image

    /// Each chunk that continues the image being received goes to the shell to stage
    /// (`Ready.snapshotChunksReceived`); the last one makes the staged image the state
    /// (`Ready.snapshot`). Raft keeps only the count of bytes received.
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
        // An image received whole waits for the shell to install it: a chunk of another image
        // staged meanwhile would make the store refuse the batch. Unanswered, it is sent again,
        // and by then the install has moved the commit index (or was refused).
        guard pendingInstall == nil else { return }
        guard !chunk.needsData, chunk.length > 0, chunk.offset <= chunk.totalBytes, chunk.length <= chunk.totalBytes - chunk.offset
        else {
            answer(0)
            return
        }
        if incomingSnapshot?.metadata != metadata || incomingSnapshot?.totalBytes != chunk.totalBytes {
            guard chunk.offset == 0 else {
                answer(0)
                return
            }
            incomingSnapshot = Raft.IncomingSnapshot(metadata: metadata, totalBytes: chunk.totalBytes, received: 0)
        }
        let received = incomingSnapshot?.received ?? 0
        guard chunk.offset == received else {
            answer(received)
            return
        }
        outbox.snapshotChunksReceived.append(chunk)
        guard chunk.isLast else {
            incomingSnapshot?.received = received + chunk.length
            answer(received + chunk.length)
            return
        }
        incomingSnapshot = nil
        if log.matches(index: metadata.index, term: metadata.term) {
            // The log already holds the image's last entry: only the commit index moves.
            advanceCommit(to: metadata.index)
            answer(chunk.totalBytes, match: log.committed)
            return
        }
        // Nothing changes until the shell has installed the image (`snapshotInstalled`): if it
        // cannot (`snapshotRefused`), this node goes on from its own log, and the leader sends
        // another image. Meanwhile appends are not taken and no election is started.
        pendingInstall = Raft.PendingInstall(metadata: metadata, leader: leaderID, totalBytes: chunk.totalBytes)
    }

    /// Adopts an installed image: the log starts over after it.
    mutating func restore(_ metadata: Raft.SnapshotMetadata) {
        log.restore(index: metadata.index, term: metadata.term)
        membership = metadata.membership
        snapshotMembership = metadata.membership
        membershipHistory = []
        snapshot = metadata
        image = nil
        appliedHandedOut = metadata.index
    }

    /// The membership in force once the entries through `index` apply (committed `index`).
    func membership(at index: Raft.Index) -> Raft.Membership {
        membershipHistory.last(where: { $0.index <= index })?.membership ?? snapshotMembership
    }
}

extension Raft {
    /// An image received whole, waiting for the shell to install it.
    struct PendingInstall: Sendable, Equatable {
        var metadata: SnapshotMetadata
        /// Who sent it: told once the image is installed or refused.
        var leader: NodeID
        var totalBytes: Int
        /// Whether a Ready has carried it to the shell.
        var handedOut = false
    }

    /// What a follower knows of the image it is receiving.
    struct IncomingSnapshot: Sendable, Equatable {
        var metadata: SnapshotMetadata
        var totalBytes: Int
        var received: Int
    }
}
