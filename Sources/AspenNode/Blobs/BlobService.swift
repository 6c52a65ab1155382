import AspenAuth
import AspenBlob
import AspenCore
import AspenJobs
import AspenKV
import AspenTransport
import Foundation
import Logging
import Synchronization

/// The node's side of `aspen/blobs/1`: slices out, uploads in, replication between members, and
/// the blob metadata (sizes, holders, tags) kept in system records through Raft. Blob bytes
/// never enter the log.
public final class BlobService: Sendable {
    let node: RaftNode
    let network: PeerNetwork
    let files: BlobFileStore
    let auth: NodeAuth?
    let limits: Limits
    let logger: Logger
    let settings: NodeSettings.BlobSettings
    /// Copies made of each new blob unless the add asks otherwise (capped at the cluster's size).
    var replicationFactor: Int { settings.replicas }
    let uploads: BlobUploads
    /// Where the blob events go (set by the node once its job service runs).
    let eventSink = Mutex<(@Sendable ([TopicMessage]) -> Void)?>(nil)
    let transfers = Atomic<Int>(0)
    let metrics = BlobMetrics()
    /// Blobs this node acknowledged with fewer copies than asked for, and the loop making the rest.
    let shortCopies = Mutex<ShortCopies>(ShortCopies())
    /// Blobs whose bad local copy is being replaced, so that one repair runs for each.
    let repairing = Mutex<Set<BlobHash>>([])
    let maintenance = Mutex<Task<Void, Never>?>(nil)
    /// Blob connections to other members, shared by every transfer.
    let peerConnections = TransportConnectionPool<String>()

    init(
        node: RaftNode, network: PeerNetwork, files: BlobFileStore, auth: NodeAuth?, settings: NodeSettings.BlobSettings,
        limits: Limits, logger: Logger
    ) {
        self.node = node
        self.network = network
        self.files = files
        self.auth = auth
        self.limits = limits
        self.logger = logger
        self.settings = settings
        self.uploads = BlobUploads(files: files, limits: limits)
    }

    /// Closes the connections to other members (at shutdown).
    public func closeConnections() async {
        await peerConnections.closeAll()
    }

    /// Opens the store under `dataDirectory` and serves it.
    public static func open(
        dataDirectory: String, node: RaftNode, network: PeerNetwork, auth: NodeAuth?, settings: NodeSettings.BlobSettings = .init(),
        limits: Limits = .standard, logger: Logger
    ) throws -> BlobService {
        BlobService(
            node: node, network: network, files: try BlobFileStore(directory: dataDirectory, quotaBytes: settings.quotaBytes),
            auth: auth, settings: settings, limits: limits, logger: logger)
    }

    public var route: TransportRoute {
        TransportRoute(authorize: { _ in true }, handleFrom: { caller, body in
            BlobWire.encode(await self.handle(body, from: caller))
        })
    }

    func handle(_ body: [UInt8], from caller: TransportCaller) async -> BlobResponse {
        let request: BlobRequest
        let credential: [UInt8]
        do {
            (request, credential) = try BlobWire.decodeRequest(body, limits: limits)
        } catch {
            return .failed(.badInput, "undecodable blob request: \(error)")
        }
        do {
            try authorize(request, credential: credential, caller: caller)
            return try await serve(request, from: caller)
        } catch let error as BlobServiceError {
            return error.response
        } catch let error as NodeError {
            return .failed(.unavailable, "\(error)")
        } catch {
            return .failed(.internalError, "\(error)")
        }
    }

    /// Members replicate among themselves without credentials; clients need the blob capability
    /// (read for reads, write for adds and tags) when the cluster requires credentials.
    func authorize(_ request: BlobRequest, credential: [UInt8], caller: TransportCaller) throws(BlobServiceError) {
        let member = network.node(for: caller.key) != nil
        switch request {
        case .replicate, .sweep:
            guard member else { throw .notPermitted("only cluster members may ask a node to replicate a blob or sweep its files") }
        default: break
        }
        guard let auth, auth.isRequired, !member else { return }
        let needed: Requirement
        switch request {
        case .read, .stat, .list: needed = .service(.blob, .read, resource: [])
        case .tags(let prefix, _, _): needed = .service(.blob, .read, resource: Array(prefix.utf8))
        case .uploadBegin(_, _, let tag, _, _): needed = .service(.blob, .write, resource: Array((tag ?? "").utf8))
        case .uploadData, .uploadEnd: needed = .service(.blob, .write, resource: [])
        case .tagSet(let name, _, _), .tagRemove(let name): needed = .service(.blob, .write, resource: Array(name.utf8))
        // Collecting garbage and scrubbing change what every client sees or costs the node work:
        // the cluster's administrators' business.
        case .collect, .scrub: needed = .clusterAdmin
        case .replicate, .sweep: needed = .nothing
        }
        let now = node.nowMs()
        do {
            let verified: VerifiedCredential?
            do {
                verified = try auth.authenticate(credential, nowMs: now)
            } catch {
                throw AuthRefusal.denied(error)
            }
            try auth.authorize(verified, caller: PublicKey(bytes: caller.key.bytes), needed: needed, nowMs: now)
        } catch let refusal as AuthRefusal {
            auth.noteDenial(refusal, client: "\(caller.key)", operation: "blob", nowMs: now)
            throw .notPermitted("\(refusal.code): \(refusal)")
        } catch {
            throw .notPermitted("\(error)")
        }
    }

    func serve(_ request: BlobRequest, from caller: TransportCaller) async throws -> BlobResponse {
        switch request {
        case .read(let hash, let groups):
            guard UInt64(groups.count) <= limits.blobSliceGroupsMax else {
                throw BlobServiceError.tooLarge(
                    "a slice of \(groups.count) chunk groups exceeds blobSliceGroupsMax (\(limits.blobSliceGroupsMax))")
            }
            return try await withTransfer {
                let (size, payload) = try files.verifiedSlice(hash, groups: groups) { self.noteCorrupt($0, found: "serving a slice") }
                metrics.servedBytes.add(UInt64(payload.count), ordering: .relaxed)
                return .slice(size: size, payload: payload)
            }
        case .uploadBegin(let size, let replicas, let tag, let tagTtlMs, let expected):
            guard size <= limits.blobBytesMax else {
                throw BlobServiceError.tooLarge("a blob of \(size) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
            }
            if let tag { try BlobRecords.validate(tag: tag, limits: limits) }
            do {
                let id = try await uploads.begin(
                    size: size, replicas: replicas, tag: tag, tagTtlMs: tagTtlMs, expected: expected, nowMs: node.nowMs())
                return .uploadStarted(id: id)
            } catch BlobServiceError.quotaExceeded(let message) {
                metrics.quotaRefusals.add(1, ordering: .relaxed)
                throw BlobServiceError.quotaExceeded(message)
            }
        case .uploadData(let id, let offset, let bytes):
            try await uploads.write(id: id, offset: offset, bytes: bytes, nowMs: node.nowMs())
            return .done
        case .uploadEnd(let id):
            let finished = try await uploads.finish(id: id)
            return .stat(try await commitAdd(finished))
        case .stat(let hash):
            try await node.linearizableBarrier()
            guard let stat = try await stat(hash) else { throw BlobServiceError.notFound("blob \(hash) is not in the cluster") }
            return .stat(stat)
        case .list(let after, let limit):
            try await node.linearizableBarrier()
            let records = try await node.systemRecords(prefix: BlobRecords.metaPrefix)
            var entries: [(hash: BlobHash, size: UInt64)] = []
            for record in records {
                guard let hash = BlobRecords.hash(fromMetaName: record.name), after.map({ hash > $0 }) ?? true,
                    let meta = BlobRecords.decodeMeta(record.value)
                else { continue }
                entries.append((hash, meta.size))
            }
            entries.sort { $0.hash < $1.hash }
            let page = max(1, min(limit == 0 ? limits.blobListPageMax : limit, limits.blobListPageMax))
            return .list(Array(entries.prefix(page)), more: entries.count > page)
        case .tags(let prefix, let after, let limit):
            try await node.linearizableBarrier()
            let records = try await node.systemRecords(prefix: BlobRecords.tagName(prefix))
            var entries: [(name: String, hash: BlobHash)] = []
            for record in records {
                let name = BlobRecords.tag(fromTagName: record.name)
                // A temporary tag's value carries its expiry after the hash.
                guard after.map({ name > $0 }) ?? true, let (hash, _) = BlobRecords.decodeTag(record.value) else { continue }
                entries.append((name, hash))
            }
            entries.sort { $0.name < $1.name }
            let page = max(1, min(limit == 0 ? limits.blobListPageMax : limit, limits.blobListPageMax))
            return .tags(Array(entries.prefix(page)), more: entries.count > page)
        case .tagSet(let name, let hash, let ttlMs):
            try BlobRecords.validate(tag: name, limits: limits)
            try await setTag(name, to: hash, ttlMs: ttlMs)
            return .done
        case .tagRemove(let name):
            try BlobRecords.validate(tag: name, limits: limits)
            try await removeTag(name)
            return .done
        case .replicate(let hash, let size, let sources):
            try await withTransfer { try await self.replicate(hash, size: size, from: sources.map { NodeID(rawValue: $0) }) }
            return .done
        case .collect(let dryRun):
            return .collected(try await collect(dryRun: dryRun))
        case .sweep:
            return .collected(BlobCollection(dryRun: false, filesRemoved: try await sweepFiles()))
        case .scrub:
            return .scrubbed(try await scrub(bytesPerSecond: nil))
        }
    }

    /// An applied system record's value, or nil.
    func record(_ name: [UInt8]) async throws -> [UInt8]? {
        try await node.systemRecords(prefix: name).first(where: { $0.name == name })?.value
    }

    /// Builds a conditioned system write from this node's applied records and commits it. When a
    /// condition fails (another change came first), it catches up with everything committed and
    /// builds the write again from there; `build` returning nil means there is nothing to do.
    func writeConditioned(_ what: String, _ build: () async throws -> SystemWrite?) async throws {
        for attempt in 0..<20 {
            guard let write = try await build() else { return }
            do {
                try await writeSystem(write)
                return
            } catch KVError.systemConditionFailed {
                // Another change came first: back off a little (jittered), catch up, build again.
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 << min(attempt, 5)))))
                try await node.linearizableBarrier()
            }
        }
        throw BlobServiceError.unavailable("\(what) kept racing other changes of the same records; try again")
    }

    /// The changes that point tag `name` at `hash` (until `ttlMs` from now; 0: until removed),
    /// conditioned on the tag as this node has it applied.
    func tagChanges(_ name: String, to hash: BlobHash, ttlMs: UInt64) async throws -> [SystemRecordChange] {
        let tagName = BlobRecords.tagName(name)
        let current = try await record(tagName)
        var changes: [SystemRecordChange] = [.expect(name: tagName, value: current)]
        if let current, let old = BlobRecords.decodeTag(current), old.hash != hash {
            changes.append(.remove(name: BlobRecords.reverseName(old.hash, tag: name)))
        }
        let expires = ttlMs == 0 ? nil : node.nowMs() + Int64(min(ttlMs, UInt64(Int64.max / 2)))
        changes.append(.set(name: tagName, value: BlobRecords.encodeTag(hash, expiresAtMs: expires)))
        changes.append(.set(name: BlobRecords.reverseName(hash, tag: name), value: []))
        return changes
    }

    /// Names an existing blob: in one write conditioned on the blob's record, so a collection
    /// that deletes it applies either before (the tag is refused: not found) or not at all.
    func setTag(_ name: String, to hash: BlobHash, ttlMs: UInt64) async throws {
        try await node.linearizableBarrier()
        try await writeConditioned("setting tag \(name)") {
            let metaName = BlobRecords.metaName(hash)
            guard let meta = try await record(metaName) else {
                throw BlobServiceError.notFound("blob \(hash) is not in the cluster; add it before tagging it")
            }
            return SystemWrite(changes: [.expect(name: metaName, value: meta)] + (try await tagChanges(name, to: hash, ttlMs: ttlMs)))
        }
    }

    func removeTag(_ name: String) async throws {
        try await node.linearizableBarrier()
        try await writeConditioned("removing tag \(name)") {
            let tagName = BlobRecords.tagName(name)
            guard let current = try await record(tagName) else { return nil }
            var changes: [SystemRecordChange] = [.expect(name: tagName, value: current), .remove(name: tagName)]
            if let old = BlobRecords.decodeTag(current) { changes.append(.remove(name: BlobRecords.reverseName(old.hash, tag: name))) }
            return SystemWrite(changes: changes)
        }
    }

    /// Commits a change of blob records through the leader, waiting out an election (no leader
    /// known yet, a leader just lost, a forwarded write whose outcome the leader change hid) for up
    /// to 15 s. Every blob change sets or removes records, so applying one twice leaves the same
    /// state; a conditioned one that did apply fails its condition the second time, and the
    /// caller rebuilds it from the state it left.
    func writeSystem(_ write: SystemWrite) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(15)
        var backoffMs = 50
        while true {
            do {
                try await node.writeSystem(write, forwarding: true)
                return
            } catch let error as NodeError {
                switch error {
                case .notLeader, .proposalLost, .outcomeUnknown: break
                default: throw error
                }
                guard clock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(backoffMs))
                backoffMs = min(backoffMs * 2, 500)
            }
        }
    }

    /// The blob's committed metadata as this node has applied it.
    func stat(_ hash: BlobHash) async throws -> BlobStat? {
        let metaName = BlobRecords.metaName(hash)
        guard let record = try await node.systemRecords(prefix: metaName).first(where: { $0.name == metaName }),
            let meta = BlobRecords.decodeMeta(record.value)
        else { return nil }
        let holders = try await node.systemRecords(prefix: BlobRecords.holderPrefix(hash)).compactMap { record in
            BlobRecords.holder(fromName: record.name, value: record.value)
        }
        let tags = try await node.systemRecords(prefix: BlobRecords.reversePrefix(hash)).map { BlobRecords.tag(fromReverseName: $0.name) }
        return BlobStat(hash: hash, size: meta.size, addedAtMs: meta.addedAtMs, holders: holders, tags: tags)
    }

    /// Asks members (`among`, in random order) for verified copies, fetched from the nodes
    /// `holding` it, until `wanted` nodes hold the blob; a member that fails is replaced by the
    /// next. Once `required` hold it, the members still copying get as long again as that took
    /// (at least 100 ms), and the add goes on without them: a stalled member (SIGSTOPped, cut
    /// off) would otherwise hold every add for the transport's timeout. Their copies are left to
    /// `completeCopies`. Returns the holders, each failed member's problem, and the members that
    /// failed or were still copying.
    func makeCopies(_ hash: BlobHash, size: UInt64, holding: [NodeID], wanted: Int, required: Int, among others: [NodeID]) async -> (
        holders: [NodeID], problems: [String], unanswered: Set<NodeID>
    ) {
        let clock = ContinuousClock()
        let started = clock.now
        var holders = holding
        var problems: [String] = []
        var candidates = others.shuffled()
        // nil: the members still copying had their time.
        let (events, sink) = AsyncStream<(NodeID, String?)?>.makeStream()
        var copying: Set<NodeID> = []
        var unanswered: Set<NodeID> = []
        func askMore() {
            while holders.count + copying.count < wanted, let peer = candidates.popLast() {
                copying.insert(peer)
                let sources = holders
                Task {
                    do {
                        try await self.askToReplicate(peer, hash: hash, size: size, sources: sources)
                        sink.yield((peer, nil))
                    } catch {
                        sink.yield((peer, "\(error)"))
                    }
                }
            }
        }
        askMore()
        var grace: Task<Void, Never>?
        defer {
            grace?.cancel()
            sink.finish()
        }
        func startGrace() {
            guard holders.count >= required, grace == nil else { return }
            let wait = max(.milliseconds(100), clock.now - started)
            grace = Task {
                try? await Task.sleep(for: wait)
                sink.yield(nil)
            }
        }
        guard !copying.isEmpty else { return (holders, problems, unanswered) }
        // Enough already (blob-min-replicas 1): the others get the least grace.
        startGrace()
        for await event in events {
            guard let (peer, problem) = event else {
                problems.append("\(copying.count) member(s) still copying after \(ForgeService.milliseconds(clock.now - started)) ms: left to finish later")
                unanswered.formUnion(copying)
                break
            }
            copying.remove(peer)
            if let problem {
                problems.append("node \(peer): \(problem)")
                unanswered.insert(peer)
            } else {
                holders.append(peer)
            }
            askMore()
            if copying.isEmpty { break }
            startGrace()
        }
        return (holders, problems, unanswered)
    }

    /// Copies that must hold a blob before an add that asked for `wanted` is acknowledged.
    func requiredCopies(of wanted: Int) -> Int {
        min(wanted, settings.minReplicas == 0 ? wanted / 2 + 1 : settings.minReplicas)
    }

    /// Makes the copies an add asked for, then commits the blob, its holders and its tag in one
    /// system write: the add is acknowledged only once all of that is committed. Members that do
    /// not answer are skipped: with `requiredCopies` held the add is acknowledged and this node
    /// makes the rest as they come back (`completeCopies`), as Raft commits with a majority. The
    /// blob's record is rewritten with this add's time, so a collection decided before it fails
    /// its condition and keeps the blob.
    func commitAdd(_ finished: BlobUploads.Finished, announcing: Bool = true) async throws -> BlobStat {
        let members = await node.membership
        let others = (members.voters + members.learners).filter { $0 != node.id }
        let wanted = min(max(1, finished.replicas == 0 ? replicationFactor : finished.replicas), others.count + 1)
        let required = requiredCopies(of: wanted)
        let (holders, problems, _) = await makeCopies(
            finished.hash, size: finished.size, holding: [node.id], wanted: wanted, required: required, among: others)
        guard holders.count >= required else {
            let setting = settings.minReplicas == 0 ? "blob-min-replicas (a majority: \(required))" : "blob-min-replicas (\(required))"
            throw BlobServiceError.unavailable(
                "blob \(finished.hash) reached \(holders.count) of the \(wanted) copies asked for, fewer than \(setting): "
                    + problems.joined(separator: "; "))
        }
        try await writeConditioned("adding blob \(finished.hash)") {
            let now = node.nowMs()
            var changes: [SystemRecordChange] = [
                .set(name: BlobRecords.metaName(finished.hash), value: BlobRecords.encodeMeta(size: finished.size, addedAtMs: now))
            ]
            for holder in holders {
                changes.append(.set(name: BlobRecords.holderName(finished.hash, node: holder), value: BlobRecords.encodeHolder(verifiedAtMs: now)))
            }
            if let tag = finished.tag { changes += try await tagChanges(tag, to: finished.hash, ttlMs: finished.tagTtlMs) }
            return SystemWrite(changes: changes)
        }
        // Applied here is not yet readable here until the state's readers catch up: wait for that.
        try await node.linearizableBarrier()
        if announcing {
            announce([
            TopicMessage(
                subject: "hooks.blob.added",
                payload: ClusterEvents.json([
                    "hash": finished.hash.hex, "size": finished.size, "holders": holders.map(\.rawValue), "tag": finished.tag ?? NSNull(),
                ]),
                messageID: "blob-added:\(finished.hash.hex):\(node.nowMs())")
            ])
        }
        logger.info("blob added", metadata: ["hash": "\(finished.hash)", "size": "\(finished.size)", "holders": "\(holders.map(\.rawValue))"])
        if holders.count < wanted {
            logger.warning(
                "blob added with fewer copies than asked for; the rest follow as members answer",
                metadata: ["hash": "\(finished.hash)", "copies": "\(holders.count)", "wanted": "\(wanted)", "problems": "\(problems)"])
            completeCopies(finished.hash, size: finished.size, wanted: wanted)
        }
        guard let stat = try await stat(finished.hash) else {
            throw BlobServiceError.internalError("blob \(finished.hash) was committed but its record is not readable here")
        }
        return stat
    }

    /// Asks `peer` to fetch and keep a copy, and waits until it has one.
    func askToReplicate(_ peer: NodeID, hash: BlobHash, size: UInt64, sources: [NodeID]) async throws {
        let response = try await callPeer(
            peer, .replicate(hash: hash, size: size, sources: sources.map(\.rawValue)),
            extraSeconds: Double(size) / 20_000_000)
        switch response {
        case .done: return
        case .failed(let code, let message): throw BlobFetchFailure(code: code, message: message)
        default: throw BlobServiceError.internalError("node \(peer) answered a replication with \(response)")
        }
    }

    /// The shared blob connection to member `peer` at its recorded address, its key pinned
    /// (one per address: a member that moved gets a new one).
    func connect(to peer: NodeID) async throws -> TransportConnection {
        guard let address = network.address(of: peer) else { throw BlobServiceError.unavailable("no address known for node \(peer)") }
        let tls = network.tls
        return try await peerConnections.connection(Self.poolKey(peer, address)) {
            try await TransportConnection.connect(
                host: address.host, port: address.port, protocol: AspenProtocol.blobs, tls: tls, expecting: address.key)
        }
    }

    static func poolKey(_ peer: NodeID, _ address: PeerAddress) -> String {
        "\(peer.rawValue)@\(address.host):\(address.port)/\(address.key)"
    }

    /// After a transport failure on `connection` to `peer`: the next call connects anew (unless
    /// another call already replaced that connection).
    func forgetConnection(_ connection: TransportConnection, to peer: NodeID) async {
        guard let address = network.address(of: peer) else { return }
        await peerConnections.forget(Self.poolKey(peer, address), ifItIs: connection)
    }

    func callPeer(_ peer: NodeID, _ request: BlobRequest, extraSeconds: Double = 0) async throws -> BlobResponse {
        let connection = try await connect(to: peer)
        do {
            let answer = try await connection.request(BlobWire.encode(request), extraSeconds: extraSeconds)
            return try BlobWire.decodeResponse(answer, limits: limits)
        } catch let error as TransportError {
            await forgetConnection(connection, to: peer)
            throw error
        }
    }

    /// Fetches a blob from the given holders (the next one where one fails or lies), verifying
    /// every chunk group, and keeps it.
    func replicate(_ hash: BlobHash, size: UInt64, from sources: [NodeID]) async throws {
        if files.claim(hash, size: size) { return }
        guard size <= limits.blobBytesMax else {
            throw BlobServiceError.tooLarge("a blob of \(size) bytes exceeds blobBytesMax (\(limits.blobBytesMax))")
        }
        let partial = try files.beginPartial(name: "replica-\(hash.hex)-\(UInt64.random(in: 0...UInt64.max))", size: size)
        var sink = PartialSink(partial: partial)
        let tree = BlobTree(size: size)
        var missing: Range<UInt64> = 0..<tree.groupCount
        var problems: [String] = []
        for source in sources where source != node.id {
            let connection: TransportConnection
            do {
                connection = try await connect(to: source)
            } catch {
                problems.append("node \(source): \(error)")
                continue
            }
            do {
                let limits = self.limits
                let result = try await BlobFetch.fetch(
                    hash: hash, size: size, groups: missing, window: min(BlobFetch.sliceGroups, limits.blobSliceGroupsMax),
                    request: { request in
                        try BlobWire.decodeResponse(try await connection.request(BlobWire.encode(request)), limits: limits)
                    }, into: &sink)
                if result.problem is TransportError { await forgetConnection(connection, to: source) }
                missing = result.missing
                if let problem = result.problem {
                    problems.append("node \(source): \(problem)")
                    logger.warning("a blob source failed; trying the next", metadata: ["hash": "\(hash)", "source": "\(source)", "problem": "\(problem)"])
                }
            } catch let error as BlobServiceError {
                throw error
            } catch {
                problems.append("node \(source): \(error)")
            }
            if missing.isEmpty { break }
        }
        guard missing.isEmpty else {
            partial.discard()
            throw BlobServiceError.unavailable("could not fetch blob \(hash) (groups \(missing.lowerBound)..<\(missing.upperBound) missing): \(problems.joined(separator: "; "))")
        }
        try partial.seal(as: hash)
    }

    /// Runs a transfer within `blobTransfersMax`, or refuses it as unavailable.
    func withTransfer<T>(_ body: () async throws -> T) async throws -> T {
        guard transfers.add(1, ordering: .relaxed).newValue <= limits.blobTransfersMax else {
            transfers.subtract(1, ordering: .relaxed)
            throw BlobServiceError.unavailable("this node runs blobTransfersMax (\(limits.blobTransfersMax)) transfers already; try again")
        }
        defer { transfers.subtract(1, ordering: .relaxed) }
        return try await body()
    }
}

/// Puts what a fetch verified into a partial blob's files.
struct PartialSink: BlobFetchSink {
    let partial: PartialBlob

    mutating func parent(slot: UInt64, pair: UnsafeRawBufferPointer) throws {
        try partial.writePair(pair, slot: slot)
    }

    mutating func group(index: UInt64, bytes: UnsafeRawBufferPointer) throws {
        try partial.writeData(bytes, at: index * UInt64(BlobTree.groupByteCount))
    }
}
