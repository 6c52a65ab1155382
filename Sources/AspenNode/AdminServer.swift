import AspenAuth
import AspenCore
import AspenRaft
import AspenTransport
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin HTTP endpoint (loopback by default): `/health` is 200 only while the node knows a
/// leader and is applying, `/metrics` is the Prometheus text format. When the node requires
/// credentials, everything but `/health` needs `Authorization: Bearer CREDENTIAL` holding
/// cluster-admin (the credential's text, with its holder's key unless it is a bearer token).
public final class AdminServer: Sendable {
    let channel: any Channel
    public var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    public static func start(
        host: String, port: Int, node: RaftNode, requests: RequestMetrics? = nil, auth: NodeAuth? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(AdminHandler(node: node, requests: requests, auth: auth))
                }
            }
            .bind(host: host, port: port).get()
        return AdminServer(channel: channel)
    }

    public func close() async throws { try await channel.close() }

    /// The Prometheus exposition of a node's state and counters.
    public static func metrics(
        _ status: RaftNode.Status, _ counters: RaftNode.Counters, requests: RequestMetrics? = nil, watchers: Int = 0, authDenials: Int = 0
    ) -> String {
        var text = MetricsText()
        func gauge(_ name: String, _ help: String, _ value: String) { text.add(name, .gauge, help, value) }
        func counter(_ name: String, _ help: String, _ value: String) { text.add(name, .counter, help, value) }
        gauge("aspen_raft_term", "Current Raft term.", "\(status.term)")
        counter("aspen_auth_denials_total", "Requests refused for want of a credential or capability.", "\(authDenials)")
        gauge("aspen_raft_is_leader", "1 if this node leads.", status.role == .leader ? "1" : "0")
        gauge("aspen_raft_leader_id", "The known leader's id (0: none).", "\(status.leader?.rawValue ?? 0)")
        gauge("aspen_raft_commit_index", "Highest committed log index.", "\(status.commitIndex)")
        gauge("aspen_raft_applied_index", "Highest applied log index.", "\(status.appliedIndex)")
        gauge("aspen_raft_last_index", "Last log index.", "\(status.lastIndex)")
        gauge("aspen_raft_voters", "Voters in the configuration.", "\(status.membership.allVoters.count)")
        counter("aspen_node_proposals_total", "Writes received by this node (followers count the ones they refuse).", "\(counters.proposals)")
        counter("aspen_node_proposals_forwarded_total", "Writes this node forwarded to the leader inside Raft's traffic.", "\(counters.proposalsForwarded)")
        counter("aspen_node_proposals_forwarded_unknown_total", "Forwarded writes whose outcome this node could not tell.", "\(counters.proposalsForwardedUnknown)")
        counter("aspen_node_proposals_forwarded_refused_total", "Forwarded writes the leader refused (retried as requests).", "\(counters.proposalsForwardedRefused)")
        counter("aspen_raft_messages_dropped_total", "Raft messages dropped because too many were waiting to be stepped.", "\(counters.raftMessagesDropped)")
        counter("aspen_node_reads_total", "Reads served by this node.", "\(counters.reads)")
        counter(
            "aspen_lease_refresh_failures_total", "Leases a new leader failed to extend (each retried; nothing expires meanwhile).",
            "\(counters.leaseRefreshFailures)")
        counter(
            "aspen_storage_commits_total", "Storage transactions (one fsync each, except those that only apply entries).",
            "\(counters.storageCommits)")
        counter(
            "aspen_storage_commits_inline_total", "Storage transactions that only applied entries, run on the node's event loop.",
            "\(counters.storageCommitsInline)")
        counter("aspen_storage_committed_entries_total", "Log entries written by those transactions (group-commit batch = this / commits).", "\(counters.committedEntries)")
        counter("aspen_storage_commit_seconds_total", "Time spent in storage commits (fsync included).", "\(counters.storageCommitSeconds)")
        gauge("aspen_storage_commit_seconds_max", "Slowest storage commit so far.", "\(counters.storageCommitSecondsMax)")
        gauge("aspen_raft_snapshot_index", "Index the node's snapshot covers (its log starts after it).", "\(status.snapshotIndex)")
        counter("aspen_raft_snapshots_installed_total", "Snapshots received from a leader and installed.", "\(counters.snapshotsInstalled)")
        counter(
            "aspen_raft_snapshots_refused_total", "Snapshot images received whole that did not decode; the node kept its state and got another.",
            "\(counters.snapshotsRefused)")
        counter(
            "aspen_raft_snapshot_images_refused_total", "Images this node, as leader, gave up because a follower could not install them.",
            "\(counters.snapshotImagesRefused)")
        counter(
            "aspen_raft_snapshot_failures_total", "Log compactions and snapshot images that could not be made (each retried with backoff).",
            "\(counters.snapshotFailures)")
        counter(
            "aspen_raft_snapshot_images_prepared_total", "Images of the state written for followers the log no longer reaches.",
            "\(counters.snapshotImagesPrepared)")
        counter("aspen_raft_snapshot_bytes_sent_total", "Snapshot image bytes sent to followers.", "\(counters.snapshotBytesSent)")
        counter(
            "aspen_raft_compactions_follower_behind_total", "Log compactions a leader made while a follower still lacked entries before them.",
            "\(counters.compactionsWithFollowerBehind)")
        counter(
            "aspen_raft_ticks_late_total", "Raft ticks that came at least a tick late: the node's event loop or the machine was held up.",
            "\(counters.ticksLate)")
        gauge("aspen_raft_tick_delay_seconds_max", "The latest tick's delay beyond its interval, at worst so far.", "\(counters.tickDelaySecondsMax)")
        gauge("aspen_watchers", "Watch streams served by this node.", "\(watchers)")
        text.family("aspen_storage_commit_seconds", .histogram, "Storage commit latency (log, hard state and apply; one fsync).")
        text.append(counters.storageCommitLatency.lines("aspen_storage_commit_seconds"))
        text.family("aspen_group_commit_entries", .histogram, "Log entries written per storage commit.")
        text.append(counters.groupCommitEntries.lines("aspen_group_commit_entries"))
        if let requests { text.append(requests.exposition) }
        return text.lines.joined(separator: "\n") + "\n"
    }
}

final class AdminHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let node: RaftNode
    let requests: RequestMetrics?
    let auth: NodeAuth?

    init(node: RaftNode, requests: RequestMetrics?, auth: NodeAuth?) {
        self.node = node
        self.requests = requests
        self.auth = auth
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let channel = context.channel
        let node = self.node
        let requests = self.requests
        let uri = head.uri
        let auth = self.auth
        let authorization = head.headers.first(name: "authorization")
        Task {
            let status = await node.status
            var (code, body): (HTTPResponseStatus, String) = (.ok, "")
            var refusal: AuthRefusal?
            if uri != "/health", let auth {
                do throws(AuthRefusal) {
                    try auth.authorizeCarried(authorization.map { String($0.trimmingPrefix("Bearer ")) }, needed: .clusterAdmin, nowMs: node.nowMs())
                } catch {
                    refusal = error
                    auth.noteDenial(error, client: "admin HTTP", operation: uri, nowMs: node.nowMs())
                }
            }
            switch refusal == nil ? uri : "" {
            case "":
                code = .unauthorized
                body = "\(refusal!)\n"
            case "/health":
                let healthy = status.leader != nil && status.appliedIndex >= status.commitIndex.saturatingSubtract(1_000)
                code = healthy ? .ok : .serviceUnavailable
                body = healthy ? "ok\n" : "unhealthy: \(status.leader == nil ? "no leader known" : "applying behind the commit index")\n"
            case "/metrics":
                code = .ok
                body = AdminServer.metrics(
                    status, await node.counters, requests: requests, watchers: node.watches.watcherCount, authDenials: auth?.denials ?? 0)
            case "/cluster-ticket":
                let members = ClusterMembers(await node.membership)
                code = members.records.isEmpty ? .serviceUnavailable : .ok
                body = members.records.isEmpty ? "no member addresses are recorded yet\n" : members.ticket.encoded + "\n"
            default:
                code = .notFound
                body = "not found; try /health, /metrics or /cluster-ticket\n"
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; version=0.0.4")
            headers.add(name: "content-length", value: "\(body.utf8.count)")
            var buffer = channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: code, headers: headers)), promise: nil)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        }
    }
}

extension UInt64 {
    func saturatingSubtract(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}
