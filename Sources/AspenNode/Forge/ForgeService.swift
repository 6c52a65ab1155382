import AspenAuth
import AspenBlob
import AspenCore
import AspenForge
import AspenKV
import AspenTransport
import Foundation
import Logging
import NIOCore
import Subprocess
import Synchronization

/// The node's forge (DESIGN §14): `aspen/git/1` tunnels to the real `git upload-pack` and
/// `git receive-pack` over a cache repository, the receive hook's calls (`aspen/git-hook/1`), and
/// the repository calls of `aspen repo`.
public final class ForgeService: Sendable {
    let node: RaftNode
    let blobs: BlobService
    let auth: NodeAuth?
    let cookie: ClusterCookie?
    let limits: Limits
    let logger: Logger
    let ownKey: NodeKey
    let cache: RepoCache
    let locks = RepoLocks()
    let sessions = Mutex<[String: PushSession]>([:])
    /// What the receive hook needs to call this node back (its address, key and data directory).
    let hookEnvironment = Mutex<[String: String]>([:])
    let metrics = ForgeMetrics()
    /// The leader's repack pass.
    let maintenance = Mutex<Task<Void, Never>?>(nil)
    /// How long a fetch or push waits to learn the cluster's refs before it is refused.
    static let quorumWaitSeconds = 5.0

    /// A receive-pack running for a client: its repository and pusher, and whether its hook has
    /// taken the repository's lock (held until git has moved the cache's refs).
    final class PushSession: Sendable {
        let repo: String
        let pusher: NodeKey
        /// The creation revision of the repository the push began on.
        let createRevision: Revision
        let locked = Mutex(false)
        /// Signed patch changes the client sent ahead of its pack, for its pushes to `refs/for/…`.
        let changes = Mutex<[SignedCobChange]>([])
        static let changesMax = 16
        init(repo: String, pusher: NodeKey, createRevision: Revision) {
            self.repo = repo
            self.pusher = pusher
            self.createRevision = createRevision
        }
    }

    public init(
        dataDirectory: String, node: RaftNode, blobs: BlobService, auth: NodeAuth?, cookie: ClusterCookie?, ownKey: NodeKey, limits: Limits,
        logger: Logger
    ) throws {
        self.node = node
        self.blobs = blobs
        self.auth = auth
        self.cookie = cookie
        self.ownKey = ownKey
        self.limits = limits
        self.logger = logger
        let root = (dataDirectory as NSString).appendingPathComponent("forge")
        let hooks = (root as NSString).appendingPathComponent("hooks")
        cache = RepoCache(root: root, hooksDirectory: hooks)
        try FileManager.default.createDirectory(atPath: hooks, withIntermediateDirectories: true)
        // Staging left by a node that died mid-creation.
        try? FileManager.default.removeItem(atPath: (root as NSString).appendingPathComponent("staging"))
        try Self.writeHook(in: hooks)
        hookEnvironment.withLock { $0["ASPEN_FORGE_DATA_DIR"] = dataDirectory }
    }

    /// The receive hook: this very program, run as `forge-hook` (so a node's hook and node always
    /// match).
    static func writeHook(in directory: String) throws {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        // `aspen node run` runs a node too; its hook is `aspen node forge-hook`.
        let command = (executable as NSString).lastPathComponent == "aspen" ? "node forge-hook" : "forge-hook"
        let quoted = "'" + executable.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let script = "#!/bin/sh\nexec \(quoted) \(command) \"$@\"\n"
        let path = (directory as NSString).appendingPathComponent("pre-receive")
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
    }

    /// Called once the transport listens: the hook connects to this address.
    public func listening(host: String, port: Int) {
        let reachable = host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : host
        hookEnvironment.withLock {
            $0["ASPEN_FORGE_ADDRESS"] = reachable.contains(":") ? "[\(reachable)]:\(port)" : "\(reachable):\(port)"
            $0["ASPEN_FORGE_KEY"] = ownKey.hex
        }
    }

    public var route: TransportRoute {
        TransportRoute(authorize: { _ in true }, tunnel: { caller, inbound, outbound in await self.serve(caller, inbound, outbound) })
    }

    /// Only this node's own key may speak the hook protocol: the hook is the node's own program.
    public var hookRoute: TransportRoute {
        let own = ownKey
        return TransportRoute(authorize: { $0 == own }, handle: { _, body in await self.hook(body).encoded })
    }

    // MARK: Tunnels

    final class FrameSource: @unchecked Sendable {
        // @unchecked: read by one task at a time (the header by the tunnel, then the input pump).
        var iterator: TunnelInbound.AsyncIterator
        init(_ iterator: TunnelInbound.AsyncIterator) { self.iterator = iterator }
    }

    func serve(_ caller: TransportCaller, _ inbound: TunnelInbound, _ outbound: TunnelOutbound) async {
        let source = FrameSource(inbound.makeAsyncIterator())
        let request: GitTunnelRequest
        let path: String
        let createRevision: Revision
        var admitted = false
        defer { if admitted { metrics.running.subtract(1, ordering: .relaxed) } }
        do {
            guard let first = try await Self.header(source) else { return }
            request = try GitTunnelRequest(decoding: Array(first.readableBytesView), limits: limits)
            try authorize(request, caller: caller)
            try ForgeNames.validate(repo: request.repo, limits: limits)
            guard metrics.running.add(1, ordering: .relaxed).newValue <= limits.forgeSessionsMax else {
                metrics.running.subtract(1, ordering: .relaxed)
                throw ForgeError.unavailable("busy: this node runs \(limits.forgeSessionsMax) git sessions (forgeSessionsMax); try again or another node")
            }
            admitted = true
            let prepared = try await prepare(request.repo)
            (path, createRevision) = (prepared.path, prepared.state.createRevision)
        } catch {
            metrics.refused.add(1, ordering: .relaxed)
            logger.info("git request refused", metadata: ["client": "\(caller.key)", "reason": "\(error)"])
            try? await outbound.write(Self.frame(GitTunnelFrame.refused, Array("\(error)".utf8)))
            return
        }
        do {
            try await outbound.write(Self.frame(GitTunnelFrame.ready, []))
            let (status, input) = try await run(
                request, path: path, createRevision: createRevision, caller: caller, source: source, outbound: outbound)
            var code = ByteBuffer()
            code.writeInteger(GitTunnelFrame.exit)
            code.writeInteger(status)
            try await outbound.write(code)
            // Closing now could drop what is still queued for a slow reader: the client closes
            // once it has read the exit status, which ends the input.
            let timer = Task {
                try await Task.sleep(for: .seconds(30))
                input.cancel()
            }
            _ = await input.result
            timer.cancel()
        } catch {
            logger.info("git session ended early", metadata: ["client": "\(caller.key)", "repo": "\(request.repo)", "reason": "\(error)"])
        }
    }

    /// How long a client has to send its tunnel's header once connected.
    static let headerWaitSeconds = 10.0
    /// A git session with no bytes either way for this long is ended (a client that vanished
    /// without closing its connection, or one that holds a session open and sends nothing).
    static let idleSeconds = 600.0

    /// The tunnel's first frame, or nil if it does not come within `headerWaitSeconds`.
    static func header(_ source: FrameSource) async throws -> ByteBuffer? {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await source.iterator.next() }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int64(headerWaitSeconds * 1000)))
                throw ForgeError.badInput("no tunnel header within \(Int(headerWaitSeconds)) s")
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    static func frame(_ kind: UInt8, _ body: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(1 + body.count)
        buffer.writeInteger(kind)
        buffer.writeBytes(body)
        return buffer
    }

    func authorize(_ request: GitTunnelRequest, caller: TransportCaller) throws {
        if let cookie, !cookie.accepts(request.proof, from: caller.key) {
            throw ForgeError.badInput(request.proof.isEmpty ? "unauthorized: this cluster requires a cookie (ASPEN_COOKIE)" : "unauthorized: wrong cluster cookie")
        }
        guard let auth, auth.isRequired else { return }
        let now = node.nowMs()
        let access: Capability.Access = request.service == .receivePack ? .write : .read
        let credential: VerifiedCredential?
        do {
            credential = try auth.authenticate(request.credential, nowMs: now)
        } catch {
            throw AuthRefusal.denied(error)
        }
        do {
            try auth.authorize(credential, caller: PublicKey(bytes: caller.key.bytes), needed: .service(.forge, access, resource: Array(request.repo.utf8)), nowMs: now)
        } catch {
            auth.noteDenial(error, client: "\(caller.key)", operation: "forge.\(request.service.rawValue)", nowMs: now)
            throw error
        }
    }

    /// Learns the repository's refs and packs from the cluster (refused quickly without a
    /// quorum: never served from what this node last knew) and sets the cache to them.
    /// The state is read under the repository's lock: a sync never sets the cache to refs older
    /// than what an earlier sync or a push on this node already set. Returns the cache's path and
    /// the state it was set to (its creation revision: a push commits only into the repository it
    /// began on).
    func prepare(_ name: String) async throws -> (path: String, state: RepoState) {
        try await locks.withLock(name) {
            let state = try await self.state(name)
            let pushing = self.sessions.withLock { $0.values.contains { $0.repo == name } }
            return (try await self.cache.sync(state, blobs: self.blobs, pushing: pushing), state)
        }
    }

    /// The repository's state, after a linearizable barrier (refused as "no quorum" when the
    /// barrier cannot be had within `quorumWaitSeconds`).
    func state(_ name: String) async throws -> RepoState {
        try await barrier()
        return try await RepoCache.read(name, node: node, limits: limits)
    }

    /// Returns once this node has applied everything committed before the call.
    func barrier() async throws {
        try await withQuorum { try await self.node.linearizableBarrier() }
    }

    /// Runs `body` (a linearizable read) until it succeeds or `quorumWaitSeconds` pass: a node
    /// that has no leader to ask (cut off, or an election under way) keeps trying that long, then
    /// refuses with "no quorum".
    func withQuorum<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + .milliseconds(Int64(Self.quorumWaitSeconds * 1000))
        var lastProblem = "no answer"
        while ContinuousClock.now < deadline {
            let attempt = Task { try await body() }
            let timer = Task {
                try await Task.sleep(until: deadline)
                attempt.cancel()
            }
            defer { timer.cancel() }
            do {
                return try await attempt.value
            } catch let error as NodeError {
                switch error {
                case .notLeader, .unavailable, .proposalLost, .outcomeUnknown:
                    lastProblem = "\(error)"
                    try? await Task.sleep(for: .milliseconds(50))
                case .stopped, .refused:
                    throw error
                }
            } catch is CancellationError {
                break
            }
        }
        throw ForgeError.unavailable(
            "no quorum: this node could not confirm the cluster's current refs within \(Int(Self.quorumWaitSeconds)) s (\(lastProblem)); try another node")
    }

    /// Runs the git service for the tunnel: frames in become its standard input, its output and
    /// errors go back as frames. Returns its exit status.
    /// Returns its exit status, and the task still reading the client's frames (it ends when the
    /// client closes the tunnel).
    func run(
        _ request: GitTunnelRequest, path: String, createRevision: Revision, caller: TransportCaller, source: FrameSource, outbound: TunnelOutbound
    ) async throws -> (Int32, Task<Void, any Error>) {
        var environment: [Environment.Key: String?] = ["GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"]
        if request.protocolVersion > 0 { environment["GIT_PROTOCOL"] = "version=\(request.protocolVersion)" }
        var token: String?
        if request.service == .receivePack {
            let made = (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined(separator: "-")
            token = made
            sessions.withLock { $0[made] = PushSession(repo: request.repo, pusher: caller.key, createRevision: createRevision) }
            for (name, value) in hookEnvironment.withLock({ $0 }) { environment[Environment.Key(rawValue: name)!] = value }
            environment["ASPEN_FORGE_TOKEN"] = made
        }
        defer {
            // Whoever takes the flag releases the lock: this, or a hook that found the session gone.
            if let token, let session = sessions.withLock({ $0.removeValue(forKey: token) }),
                session.locked.withLock({ flag in defer { flag = false }; return flag })
            {
                let locks = self.locks
                let repo = session.repo
                Task { await locks.release(repo) }
            }
        }
        let pushToken = token
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(500))]
        let subcommand = request.service == .uploadPack ? "upload-pack" : "receive-pack"
        metrics.sessions.add(1, ordering: .relaxed)
        let activity = Activity()
        let result = try await Subprocess.run(
            .name("git"), arguments: [subcommand, path], environment: .inherit.updating(environment), platformOptions: options,
            input: .inputWriter, output: .sequence, error: .sequence
        ) { execution in
            let writer = execution.standardInputWriter
            let input = Task {
                // Git's input until the client's end; once git stops taking it (it exited), the
                // rest is read and dropped until the client closes.
                // A client gone (the connection reset or closed) or misbehaving ends git's input
                // too: git then sees a truncated stream, stops and removes its quarantine.
                var open = true
                defer { if open { Task { try? await writer.finish() } } }
                while let frame = try await source.iterator.next() {
                    activity.touch()
                    var frame = frame
                    guard open, let kind = frame.readInteger(as: UInt8.self) else { continue }
                    if kind == GitTunnelFrame.end {
                        open = false
                        try? await writer.finish()
                        continue
                    }
                    if kind == GitTunnelFrame.change {
                        guard let token = pushToken, let session = self.sessions.withLock({ $0[token] }),
                            let change = try? SignedCobChange(decoding: Array(frame.readableBytesView), limits: self.limits)
                        else { throw ForgeError.badInput("a patch change outside a push, or undecodable") }
                        try session.changes.withLock { changes in
                            guard changes.count < PushSession.changesMax else { throw ForgeError.badInput("more than \(PushSession.changesMax) patch changes in one push") }
                            changes.append(change)
                        }
                        continue
                    }
                    guard kind == GitTunnelFrame.data else { throw ForgeError.badInput("unexpected tunnel frame \(kind)") }
                    do {
                        _ = try await writer.write(Array(frame.readableBytesView))
                    } catch {
                        open = false
                    }
                }
            }
            // A session idle both ways for `idleSeconds` is ended: git's input is closed, and git
            // stopped if it does not end by itself.
            let watchdog = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(5))
                    if activity.idleSeconds > Self.idleSeconds {
                        input.cancel()
                        try? await writer.finish()
                        return
                    }
                }
            }
            defer { watchdog.cancel() }
            do {
                async let output: Void = Self.forward(execution.standardOutput, as: GitTunnelFrame.stdout, to: outbound, activity: activity)
                async let errors: Void = Self.forward(execution.standardError, as: GitTunnelFrame.stderr, to: outbound, activity: activity)
                _ = try await (output, errors)
            } catch {
                input.cancel()
                throw error
            }
            return input
        }
        let status: Int32 =
            switch result.terminationStatus {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        return (status, result.closureResult)
    }

    /// Sends git's output to the client. Once the client is gone the rest is read and dropped:
    /// git, its input ended, stops by itself and cleans up after itself (its quarantine above
    /// all), which a signal could interrupt.
    static func forward(_ sequence: SubprocessOutputSequence, as kind: UInt8, to outbound: TunnelOutbound, activity: Activity) async throws {
        var connected = true
        for try await chunk in sequence where connected {
            activity.touch()
            var buffer = ByteBuffer()
            buffer.reserveCapacity(chunk.count + 1)
            buffer.writeInteger(kind)
            chunk.withUnsafeBytes { buffer.writeBytes($0) }
            do {
                try await outbound.write(buffer)
            } catch {
                connected = false
            }
        }
    }
}

/// When a session last moved a byte either way.
final class Activity: Sendable {
    private let last = Atomic<Int64>(Int64(Date().timeIntervalSince1970 * 1000))
    func touch() { last.store(Int64(Date().timeIntervalSince1970 * 1000), ordering: .relaxed) }
    var idleSeconds: Double { Double(Int64(Date().timeIntervalSince1970 * 1000) - last.load(ordering: .relaxed)) / 1000 }
}

/// The forge's counters for /metrics.
final class ForgeMetrics: Sendable {
    let sessions = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let pushes = Atomic<Int>(0)
    let pushesRejected = Atomic<Int>(0)
    /// Log entries the pushes' commits took (one per push when all goes well).
    let pushEntries = Atomic<Int>(0)
    let packBytes = Atomic<Int>(0)
    /// Git sessions running now (bounded by `forgeSessionsMax`).
    let running = Atomic<Int>(0)
}

extension ForgeService {
    public var metricsExposition: [String] {
        var text = MetricsText()
        text.add("aspen_forge_sessions_total", .counter, "git sessions served (fetches and pushes).", "\(metrics.sessions.load(ordering: .relaxed))")
        text.add("aspen_forge_refused_total", .counter, "git sessions refused before git ran.", "\(metrics.refused.load(ordering: .relaxed))")
        text.add("aspen_forge_pushes_total", .counter, "Pushes committed.", "\(metrics.pushes.load(ordering: .relaxed))")
        text.add("aspen_forge_pushes_rejected_total", .counter, "Pushes rejected at commit (stale refs).", "\(metrics.pushesRejected.load(ordering: .relaxed))")
        text.add("aspen_forge_push_log_entries_total", .counter, "Raft log entries written by push commits.", "\(metrics.pushEntries.load(ordering: .relaxed))")
        text.add("aspen_forge_pack_bytes_total", .counter, "Bytes of packs pushed to the blob store.", "\(metrics.packBytes.load(ordering: .relaxed))")
        return text.lines
    }
}
