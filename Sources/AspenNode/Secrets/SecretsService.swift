import AspenAuth
import AspenCore
import AspenJobs
import AspenKV
import AspenRaft
import AspenSecrets
import Foundation
import Logging
import Synchronization

/// The node's secrets engines (docs/secrets.md): the Vault API's router and engines over this
/// node's store, the seal that yields the data key, and the authorization of each request by
/// capability tokens. HTTP (`VaultHTTPServer`) and the native protocol (`secrets.call`) both end
/// in `handle`.
public final class SecretsService: Sendable {
    /// Who is asking: what they may do, and what `auth/token/lookup-self` tells them.
    public struct Caller: Sendable {
        /// Throws an `AuthRefusal` unless the caller's credential allows the requirement.
        public var authorize: @Sendable (Requirement) throws -> Void
        public var credential: VerifiedCredential?
        /// Whether this node requires credentials (without one, a token lookup is refused).
        public var credentialRequired: Bool

        public init(authorize: @escaping @Sendable (Requirement) throws -> Void, credential: VerifiedCredential?, credentialRequired: Bool) {
            self.authorize = authorize
            self.credential = credential
            self.credentialRequired = credentialRequired
        }
    }

    let node: RaftNode
    let seal: SecretsSeal
    let api: SecretsAPI
    let limits: Limits
    let logger: Logger

    init(node: RaftNode, selfID: NodeID, identityKey: Bytes, peers: SecretsSeal.Peers, logger: Logger) {
        self.node = node
        self.limits = node.configuration.limits
        self.logger = logger
        let seal = SecretsSeal(node: node, selfID: selfID, identityKey: identityKey, peers: peers, limits: node.configuration.limits, logger: logger)
        self.seal = seal
        api = SecretsAPI(store: ForwardingStore(node: node), limits: node.configuration.limits, nowMs: node.nowMs) {
            if let key = seal.knownKey { return key }
            return try await seal.dataKey()
        }
        let mounts = SecretsKeys.mounts.prefix
        node.watches.observe(KeyBounds(start: mounts, end: KeyBounds.prefixEnd(mounts))) { [weak self] in
            self?.mountCache.withLock { cache in
                cache.generation += 1
                cache.router = nil
            }
        }
    }

    /// This node's mount table as a router, kept until an applied change touches the mounts
    /// (or a snapshot replaces the state): routing a request reads nothing from the store.
    private let mountCache = Mutex<(generation: UInt64, router: SecretsRouter?)>((0, nil))

    /// The router of this node's applied mount table (no round trip to the leader).
    func localRouter() async throws -> SecretsRouter {
        let generation: UInt64
        switch mountCache.withLock({ $0 }) {
        case (_, let router?): return router
        case (let current, nil): generation = current
        }
        let router = try await api.router(.stale)
        // Kept only if no mount changed while it was read.
        mountCache.withLock { cache in if cache.generation == generation { cache.router = router } }
        return router
    }

    /// Serves one request; every failure becomes Vault's error answer.
    public func handle(_ request: VaultRequest, caller: Caller) async -> VaultResponse {
        do {
            let wait = limits.secretsQuorumWaitMs
            // The node's own sys calls need no mount table (health answers without a quorum).
            let ownCall = ["sys/health", "sys/seal-status", "auth/token/lookup-self"].contains(request.path)
            let operation: SecretsOperation
            if ownCall {
                operation = try SecretsRouter(mounts: [], limits: limits).route(request)
            } else {
                // This node's mount table first (no round trip); a path it has no mount for is
                // routed again on a linearizable read (a mount just made elsewhere), bounded.
                do {
                    operation = try await localRouter().route(request)
                } catch SecretsError.notFound {
                    let api = self.api
                    operation = try await Self.within(wait, "no quorum: this node could not confirm the secrets mounts") {
                        try await api.router(.linearizable).route(request)
                    }
                }
            }
            do {
                let needed = RequestRequirements.of(operation)
                // Health and seal status answer anyone, whatever token they carry.
                if needed != .nothing || { if case .lookupSelf = operation { true } else { false } }() { try caller.authorize(needed) }
            } catch let refusal as AuthRefusal {
                return .error(.forbidden("permission denied: \(refusal)"))
            }
            if case .transit(let mount, .rewrapPrefix(let name, let prefix, background: true)) = operation {
                // Authorized above like the request itself; a node's maintenance worker runs it.
                guard let submit = submitJob.withLock({ $0 }) else { throw SecretsError.unavailable("this node runs no job system") }
                let spec = MaintenanceTask.transitRewrapSpec(mount: mount.path, key: name, prefix: String(decoding: prefix, as: UTF8.self))
                let id = try await Self.within(wait, "no quorum: the job was not recorded") { try await submit(spec) }
                return .data(["job_id": id, "command": spec.command])
            }
            switch operation {
            case .health: return await health()
            case .sealStatus: return await sealStatus()
            case .lookupSelf: return lookupSelf(caller)
            default:
                let reading = request.method == "GET" || request.method == "LIST" || request.method == "HEAD"
                let problem = reading ? "no quorum: the cluster did not answer" : "no quorum: the cluster did not confirm the change (it may still take effect)"
                return try await Self.within(wait, problem) { try await self.api.run(operation) }
            }
        } catch let error as SecretsError {
            return .error(error)
        } catch let error as NodeError {
            return .error(.unavailable("\(error)"))
        } catch let error as KVError {
            return .error(.badRequest("\(error)"))
        } catch let error as Shamir.Failure {
            return .error(.internalError("\(error)"))
        } catch {
            logger.error("secrets request failed", metadata: ["path": "\(request.path)", "error": "\(error)"])
            return .error(.internalError("the node could not complete the request"))
        }
    }

    /// Whether this node holds the data key, trying to unseal (bounded) if it does not.
    func unsealed() async -> Bool {
        let seal = self.seal
        return (try? await Self.within(limits.secretsQuorumWaitMs, "sealed") { try await seal.dataKey() }) != nil
    }

    func health() async -> VaultResponse {
        let sealed = !(await unsealed())
        let leader = await node.status.role == .leader
        var answer = VaultResponse.data([:])
        answer.body = SecretsJSON.encode([
            "initialized": true, "sealed": sealed, "standby": !leader, "performance_standby": false,
            "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
            "server_time_utc": node.nowMs() / 1000, "version": "1.15.0+aspen", "cluster_name": "aspen",
        ])
        answer.status = sealed ? 503 : 200
        return answer
    }

    func sealStatus() async -> VaultResponse {
        let record = try? await seal.record()
        let sealed = !(await unsealed())
        var answer = VaultResponse.data([:])
        answer.body = SecretsJSON.encode([
            "type": "shamir", "initialized": record != nil || !sealed, "sealed": sealed, "t": record?.threshold ?? 0, "n": record?.members.count ?? 0,
            "progress": 0, "nonce": "", "version": "1.15.0+aspen", "migration": false, "recovery_seal": false, "storage_type": "raft",
        ])
        return answer
    }

    func lookupSelf(_ caller: Caller) -> VaultResponse {
        guard let credential = caller.credential else {
            if caller.credentialRequired { return .error(.forbidden("permission denied: no credential given (X-Vault-Token)")) }
            // No credentials required here: the caller may do anything.
            return .data([
                "id": "", "accessor": "", "policies": ["root"], "display_name": "anonymous", "ttl": 0, "renewable": false, "type": "service",
                "meta": NSNull(), "capabilities": ["*"],
            ])
        }
        let remaining = max(0, (credential.expiresAtMs - node.nowMs()) / 1000)
        return .data([
            "id": credential.id.bytes.map { String(format: "%02x", $0) }.joined(), "accessor": "", "policies": ["default"],
            "display_name": "aspen-token", "ttl": remaining, "expire_time": VaultTime.format(ms: credential.expiresAtMs), "renewable": false,
            "type": "service", "meta": NSNull(), "capabilities": credential.capabilities.map(\.description),
        ])
    }

    /// Runs `body`, or throws `SecretsError.unavailable(problem)` after `waitMs` — then, not
    /// when the body ends: Raft's waits are not cancellable, so the body runs on in its own task
    /// (a write may still commit; the message says so for changes) while the caller is answered.
    /// One task per call; the deadline is an entry in `Deadlines` (a timer per call, and a task
    /// to cancel it, were a measurable share of a node's CPU under a kv-v2 write load).
    static func within<T: Sendable>(_ waitMs: Int64, _ problem: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let once = Once<T>()
        let work = Mutex<Task<Void, Never>?>(nil)
        return try await withCheckedThrowingContinuation { continuation in
            let deadline = Deadlines.shared.add(afterMs: waitMs) {
                if once.resume(continuation, with: .failure(SecretsError.unavailable("\(problem) within \(waitMs) ms"))) {
                    work.withLock { $0?.cancel() }
                }
            }
            let task = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                Deadlines.shared.remove(deadline)
                once.resume(continuation, with: result)
            }
            work.withLock { $0 = task }
        }
    }

    // MARK: Upkeep

    private let upkeep = Mutex<Task<Void, Never>?>(nil)

    /// Submits a job (the job system's submit on this node); set at start.
    private let submitJob = Mutex<(@Sendable (JobSpec) async throws -> UInt64)?>(nil)

    /// Every few seconds, a node holding the secret checks that its split matches the voters.
    /// `submitJob` submits the background rewraps.
    public func start(submitJob: (@Sendable (JobSpec) async throws -> UInt64)? = nil) {
        self.submitJob.withLock { $0 = submitJob }
        let seal = self.seal
        upkeep.withLock { task in
            task = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(2))
                    await seal.checkVoters()
                }
            }
        }
    }

    public func stop() {
        upkeep.withLock { $0?.cancel() }
        initial.withLock { $0?.cancel() }
    }

    private let initial = Mutex<Task<Void, Never>?>(nil)

    /// Writes the bootstrap file's secrets once the cluster can take them: each mount made
    /// (kv-v2) unless it exists, each secret written with cas=0 (a secret that exists is left as
    /// it is: the file seeds, it does not overwrite). Retried with backoff until all are in.
    func writeInitial(_ secrets: [(mount: String, path: String, data: Bytes)]) {
        let caller = Caller(authorize: { _ in }, credential: nil, credentialRequired: false)
        let logger = self.logger
        initial.withLock { task in
            task = Task {
                var pending = secrets
                var delayMs = 200
                while !pending.isEmpty && !Task.isCancelled {
                    var left: [(mount: String, path: String, data: Bytes)] = []
                    for secret in pending {
                        let mount = await self.handle(
                            VaultRequest(method: "POST", path: "sys/mounts/\(secret.mount)", body: SecretsJSON.encode(["type": "kv-v2"])), caller: caller)
                        let mounted = mount.status == 204 || mount.errors.contains { $0.contains("already in use") }
                        let body = Array(#"{"options":{"cas":0},"data":"#.utf8) + secret.data + Array("}".utf8)
                        let write = mounted
                            ? await self.handle(VaultRequest(method: "POST", path: "\(secret.mount)/data/\(secret.path)", body: body), caller: caller) : mount
                        if write.status == 200 || write.errors.contains(where: { $0.contains("check-and-set") }) { continue }
                        if (400..<500).contains(write.status) {
                            // Refused for good (a mount of another engine, an invalid path): said once, not retried.
                            logger.error(
                                "a bootstrap secret was refused", metadata: ["path": "\(secret.mount)/\(secret.path)", "error": "\(write.errors.joined(separator: "; "))"])
                            continue
                        }
                        left.append(secret)
                    }
                    pending = left
                    if pending.isEmpty { break }
                    try? await Task.sleep(for: .milliseconds(delayMs))
                    delayMs = min(delayMs * 2, 5000)
                }
                if pending.isEmpty { logger.info("bootstrap secrets written", metadata: ["secrets": "\(secrets.count)"]) }
            }
        }
    }

    /// A maintenance job of the secrets engines, if `command` names one: `transit-rewrap MOUNT
    /// KEY PREFIX`. Returns the job's summary (JSON); nil for other tasks.
    func runMaintenance(_ command: [String]) async throws -> [UInt8]? {
        guard command.first == MaintenanceTask.transitRewrap else { return nil }
        guard command.count == 4 else { throw JobError.invalid("transit-rewrap takes MOUNT KEY PREFIX, not \(command.dropFirst())") }
        guard let mount = try await api.mounts().first(where: { $0.path == command[1] }), mount.type == .transit else {
            throw JobError.invalid("no transit mount at \(command[1])/")
        }
        let response = try await api.run(.transit(mount, .rewrapPrefix(name: command[2], prefix: Array(command[3].utf8), background: false)))
        guard response.status == 200 else { throw JobError.invalid("rewrap refused: \(response.errors.joined(separator: "; "))") }
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
        return SecretsJSON.encode(object?["data"] ?? [:])
    }

    // MARK: Peers

    /// A voter's request for this node's key share of an epoch.
    func share(epoch: UInt64, for caller: NodeID) async throws -> Bytes { try await seal.share(epoch: epoch, for: caller) }
    func sealShare(epoch: UInt64, share: Bytes, for caller: NodeID) async throws -> Bytes {
        try await seal.seal(epoch: epoch, share: share, for: caller)
    }
}

/// Resumes a continuation once: whichever of the work and its deadline comes first.
/// Deadlines of the calls in flight, fired by one task that looks every 20 ms while any is
/// pending (and sleeps otherwise).
final class Deadlines: Sendable {
    static let shared = Deadlines()
    static let tickMs: Int64 = 20

    private struct State {
        var entries: [UInt64: (at: ContinuousClock.Instant, fire: @Sendable () -> Void)] = [:]
        var nextID: UInt64 = 0
        var ticking = false
    }

    private let state = Mutex(State())

    func add(afterMs waitMs: Int64, _ fire: @escaping @Sendable () -> Void) -> UInt64 {
        let at = ContinuousClock.now + .milliseconds(waitMs)
        let (id, start) = state.withLock { state in
            state.nextID += 1
            state.entries[state.nextID] = (at, fire)
            defer { state.ticking = true }
            return (state.nextID, !state.ticking)
        }
        if start { Task { await self.tick() } }
        return id
    }

    func remove(_ id: UInt64) { state.withLock { _ = $0.entries.removeValue(forKey: id) } }

    private func tick() async {
        while true {
            try? await Task.sleep(for: .milliseconds(Self.tickMs))
            let now = ContinuousClock.now
            let due: [@Sendable () -> Void] = state.withLock { state in
                let due = state.entries.filter { $0.value.at <= now }
                for id in due.keys { state.entries[id] = nil }
                return due.values.map(\.fire)
            }
            for fire in due { fire() }
            let done = state.withLock { state in
                if state.entries.isEmpty { state.ticking = false }
                return !state.ticking
            }
            if done { return }
        }
    }
}

final class Once<T: Sendable>: Sendable {
    private let done = Mutex(false)

    @discardableResult
    func resume(_ continuation: CheckedContinuation<T, any Error>, with result: Result<T, any Error>) -> Bool {
        let first = done.withLock { done in
            defer { done = true }
            return !done
        }
        if first { continuation.resume(with: result) }
        return first
    }
}

/// The node as the engines' store: writes a follower receives go to the leader inside Raft's
/// traffic, so every node serves the Vault API.
struct ForwardingStore: KeyValueStore {
    let node: RaftNode

    func write(_ request: KVWriteRequest) async throws -> KVResult { try await node.write(request, forwarding: true) }
    func read(_ request: RangeRequest, consistency: ReadConsistency) async throws -> RangeResult {
        // The engines run in tasks of their own on the concurrency pool: their reads (small,
        // one or two per request) are served on the calling thread. (The mount table's read on
        // a cache miss may run on the event loop that took the request: rare, and small.)
        try await node.read(request, consistency: consistency, onCallingThread: true)
    }
    func leaseStatus(_ id: LeaseID, withKeys: Bool) async throws -> LeaseStatus { try await node.leaseStatus(id, withKeys: withKeys) }
    func leases() async throws -> [Lease] { try await node.leases() }
}
