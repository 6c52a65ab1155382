import AspenCore
import AspenForge
import Foundation
import AspenTransport
import NIOCore

extension AspenClient {
    /// The key this client's connections prove: an issue's changes are signed with it.
    public var identity: NodeIdentity { tls.identity }

    /// Runs a forge call (`aspen repo …`) on any node; refusals come back as `ForgeError`.
    public func forge(_ call: ForgeCall) async throws -> ForgeAnswer {
        let repeatable: Bool
        switch call {
        case .list, .show, .refs, .packs, .protections, .cobHeads, .issues, .issue, .patches, .patch, .patchDiff: repeatable = true
        // The same change again is the same change: its id is its hash, and a second add finds
        // its parents' heads gone and stores nothing new.
        case .cobAdd: repeatable = true
        // A merge sent again finds its change stored (or the patch merged) and says so.
        case .patchMerge: repeatable = false
        // Setting a rule again sets the same rule.
        case .protect: repeatable = true
        // A repack sent again only repacks again (or finds nothing to do).
        case .repack: repeatable = true
        // A create or delete sent again after a lost answer would report `exists` / `not found`
        // for its own success: the caller is told the outcome is unknown instead.
        case .create, .delete: repeatable = false
        }
        let body: [UInt8]
        do {
            body = try await self.call("forge", "call", call.encoded, repeatable: repeatable)
        } catch ClientError.rejected(let failure) where failure.code == ForgeError.rpcCode {
            throw ForgeError(code: String(decoding: failure.detail, as: UTF8.self), message: failure.message)
        }
        do {
            return try ForgeAnswer(decoding: body, limits: options.limits)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    /// A change to `object` (a new object when nil) doing `operations`, naming as parents the
    /// newest heads the node knows (at most forgeCobParentsMax: a later change joins the rest),
    /// timed after them, checked against the rules and signed with this client's key.
    func signedChange(
        _ repo: String, _ type: CobType, object: CobID?, _ operations: [CobOperation], nowMs: Int64?
    ) async throws -> SignedCobChange {
        var parents: [CobID] = []
        var after: UInt64 = 0
        if let object {
            guard case .heads(let heads) = try await forge(.cobHeads(repo, type, object: object)) else {
                throw ClientError.malformedResponse("not heads")
            }
            let newest = heads.sorted { ($0.time, $0.id) > ($1.time, $1.id) }.prefix(options.limits.forgeCobParentsMax)
            parents = newest.map(\.id)
            after = newest.map(\.time).max() ?? 0
        }
        let change = CobChange(
            type: type, object: object, parents: parents, operations: operations, author: identity.key.bytes,
            time: CobChange.time(nowMs: nowMs ?? Int64(Date().timeIntervalSince1970 * 1000), after: after))
        try CobRules.validate(change, limits: options.limits)
        return try change.signed(by: identity.privateKey)
    }

    /// Patch `id` (its full id or a unique prefix), folded.
    public func patch(_ repo: String, _ id: String) async throws -> Patch {
        guard case .patches(let found) = try await forge(.patch(repo, id: id)), let patch = found.first else {
            throw ClientError.malformedResponse("not a patch")
        }
        return patch
    }

    /// Adds one change to issue `id` of `repo` (or opens an issue when `id` is nil); returns the
    /// issue's id.
    public func changeIssue(_ repo: String, _ id: String?, _ operations: [CobOperation], nowMs: Int64? = nil) async throws -> CobID {
        var object: CobID?
        if let id {
            guard case .issues(let found) = try await forge(.issue(repo, id: id)), let issue = found.first else {
                throw ClientError.malformedResponse("not an issue")
            }
            object = issue.id
        }
        let signed = try await signedChange(repo, .issue, object: object, operations, nowMs: nowMs)
        guard case .added(let added) = try await forge(.cobAdd(repo, signed)) else { throw ClientError.malformedResponse("not an added change") }
        return object ?? added
    }

    /// The signed change a push of `head` to `refs/for/TARGET` makes: a new revision of this
    /// client's open patch with `topic` on `target`, or a new patch. `base` is the target's commit
    /// as the cluster holds it now.
    public func patchChange(
        _ repo: String, target: String, topic: String, head: String, title: String, description: String, nowMs: Int64? = nil
    ) async throws -> SignedCobChange {
        guard case .patches(let patches) = try await forge(.patches(repo)) else { throw ClientError.malformedResponse("not patches") }
        guard case .refs(let refs) = try await forge(.refs(repo)) else { throw ClientError.malformedResponse("not refs") }
        let base = refs.first { $0.name == "refs/heads/" + target }?.id ?? ""
        let me = identity.key.hex
        if let patch = patches.last(where: { $0.open && $0.author == me && $0.target == target && $0.topic == topic }) {
            return try await signedChange(repo, .patch, object: patch.id, [.revision(base: base, head: head)], nowMs: nowMs)
        }
        return try await signedChange(
            repo, .patch, object: nil, [.openPatch(title: title, description: description, target: target, topic: topic, base: base, head: head)],
            nowMs: nowMs)
    }

    /// Adds a change to patch `id` (a review, a status, a comment, a close), its operations made
    /// from the patch as the node folds it now; returns the patch.
    @discardableResult
    public func changePatch(
        _ repo: String, _ id: String, nowMs: Int64? = nil, _ operations: (Patch) -> [CobOperation]
    ) async throws -> Patch {
        let patch = try await patch(repo, id)
        _ = try await forge(.cobAdd(repo, try await signedChange(repo, .patch, object: patch.id, operations(patch), nowMs: nowMs)))
        return patch
    }

    /// Asks the forge to merge patch `id`'s latest revision into its target with `strategy`;
    /// returns the target's new commit.
    public func mergePatch(_ repo: String, _ id: String, strategy: MergeStrategy, nowMs: Int64? = nil) async throws -> String {
        let patch = try await patch(repo, id)
        let signed = try await signedChange(repo, .patch, object: patch.id, [.merged(revision: patch.revisions.count, strategy: strategy)], nowMs: nowMs)
        guard case .text(let commit) = try await forge(.patchMerge(repo, signed)) else { throw ClientError.malformedResponse("not a commit") }
        return commit
    }

    /// Opens a git tunnel (`aspen/git/1`) to a node for `service` on `repo` and runs `body` with
    /// it once the node has the repository ready and runs git; the tunnel closes when `body`
    /// returns. Throws the node's refusal (no such repository, not permitted); a node without a
    /// quorum is passed over for the next.
    public func withGitTunnel<T: Sendable>(
        repo: String, service: GitService, protocolVersion: UInt8, _ body: @Sendable (GitTunnelIO) async throws -> T
    ) async throws -> T {
        var lastProblem = "no endpoint"
        let first = preferred.withLock { $0 }
        let request = GitTunnelRequest(repo: repo, service: service, protocolVersion: protocolVersion, proof: proof, credential: credential.whole)
        for offset in endpoints.indices {
            let endpoint = endpoints[(first + offset) % endpoints.count]
            let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
            do {
                channel = try await TransportTunnel.connect(
                    host: endpoint.host, port: endpoint.port, protocol: AspenProtocol.git, tls: tls, expecting: endpoint.key, options: options)
            } catch {
                lastProblem = "\(endpoint.host):\(endpoint.port): \(error)"
                continue
            }
            do {
                return try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(bytes: request.encoded))
                    let io = GitTunnelIO(frames: inbound.makeAsyncIterator(), outbound: outbound)
                    guard var frame = try await io.next(), let kind = frame.readInteger(as: UInt8.self) else {
                        throw TunnelRefusal.closed
                    }
                    switch kind {
                    case GitTunnelFrame.ready:
                        return try await body(io)
                    case GitTunnelFrame.refused:
                        throw TunnelRefusal.refused(String(decoding: frame.readableBytesView, as: UTF8.self))
                    default:
                        throw TunnelRefusal.refused("unexpected first frame \(kind) from the node")
                    }
                }
            } catch TunnelRefusal.closed {
                lastProblem = "\(endpoint.host):\(endpoint.port): the node closed the connection before answering"
            } catch TunnelRefusal.refused(let message) where message.hasPrefix("no quorum") {
                lastProblem = "\(endpoint.host):\(endpoint.port): \(message)"
            } catch TunnelRefusal.refused(let message) {
                throw ForgeError.failed(message)
            }
        }
        throw ClientError.unavailable(lastProblem)
    }
}

private enum TunnelRefusal: Error {
    case closed
    case refused(String)
}

/// An open git tunnel: frames from the node (read by one task at a time) and the writer to it.
public final class GitTunnelIO: @unchecked Sendable {
    // @unchecked: the iterator is used by one task at a time (the caller's reading loop).
    private var frames: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    public let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    init(frames: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.frames = frames
        self.outbound = outbound
    }

    /// The next frame from the node, nil once it closed the tunnel.
    public func next() async throws -> ByteBuffer? { try await frames.next() }

    /// Sends `kind` and `bytes` as one frame.
    public func send(_ kind: UInt8, _ bytes: ByteBuffer = ByteBuffer()) async throws {
        var frame = ByteBuffer()
        frame.reserveCapacity(1 + bytes.readableBytes)
        frame.writeInteger(kind)
        frame.writeImmutableBuffer(bytes)
        try await outbound.write(frame)
    }
}
