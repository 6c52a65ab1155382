import AspenCore
import AspenKV

/// What clients send on `aspen/client/1` and what they get back: the request envelope, the
/// `kv` domain's reads, results, errors and leases, watches, and a node's status.
extension FuzzTarget {
    static let clientTargets: [FuzzTarget] = [rpcEnvelope, kvWire, watchWire, nodeStatus]

    static let rpcEnvelope = FuzzTarget(
        name: "rpc-envelope", summary: "RPCRequest(decoding:) and RPCResponse(decoding:): the envelope of every client call",
        seeds: {
            let requests = [
                RPCRequest(domain: "kv", operation: "put", body: KVWire.encode(.put(KVSeeds.puts[0]))),
                RPCRequest(domain: "cluster", operation: "status", body: [], proof: Array(repeating: 0xC0, count: 32)),
                RPCRequest(domain: "", operation: "", body: []),
            ]
            let responses: [RPCResponse] = [
                .ok(Array("ok".utf8)), .ok([]),
                .failure(RPCFailure(code: "not_leader", message: "ask node 3", leaderHint: 3, detail: KVWire.encode(.leaseNotFound(4)))),
                .failure(RPCFailure(code: "kv", message: "")),
            ]
            return selected(0, requests.map { $0.encoded() }) + selected(1, responses.map { $0.encoded() })
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try RPCRequest(decoding: $0) }, encode: { $0.encoded() }) },
            { FuzzCheck.roundTrip($0, decode: { try RPCResponse(decoding: $0) }, encode: { $0.encoded() }) },
        ])
    }

    static let kvWire = FuzzTarget(
        name: "kv-wire",
        summary: "KVWire.decodeRead, decodeRange, decodeResult, decodeError, decodeLeaseStatus, decodeLeases: the kv domain's bodies",
        nestingTokens: [[3, 0, 0, 1, 3]],
        seeds: {
            let history = KVSeeds.history
            let reads = KVSeeds.selections.map { KVWire.encode(RangeRequest($0, revision: 3, limit: 2, continuation: [9]), consistency: .linearizable) }
                + [KVWire.encode(RangeRequest(.prefix([]), countOnly: true), consistency: .stale)]
            let statuses = [
                LeaseStatus(lease: Lease(id: 7, ttlMs: 10_000, expiresAtMs: 10_005), remainingMs: 300, keys: [Array("a".utf8), []]),
                LeaseStatus(lease: Lease(id: .min, ttlMs: .max, expiresAtMs: -1), remainingMs: .min, keys: []),
            ]
            let leases = [[], history.backend.leases(), [Lease(id: 1, ttlMs: 2, expiresAtMs: 3), Lease(id: -1, ttlMs: 0, expiresAtMs: .max)]]
            return selected(0, reads) + selected(1, history.ranges.map { KVWire.encode($0) }) + selected(2, history.results.map { KVWire.encode($0) })
                + selected(3, KVSeeds.errors.map { KVWire.encode($0) }) + selected(4, statuses.map { KVWire.encode($0) })
                + selected(5, leases.map { KVWire.encode($0) })
        }
    ) { input in
        FuzzCheck.select(input, [
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try KVWire.decodeRead($0) }, encode: { KVWire.encode($0.0, consistency: $0.1) },
                    bounds: { read in read.0.limit.flatMap { (1...Int(Int32.max)).contains($0) ? nil : "a page limit of \($0)" } })
            },
            { FuzzCheck.roundTrip($0, decode: { try KVWire.decodeRange($0) }, encode: { KVWire.encode($0) }) },
            { FuzzCheck.roundTrip($0, decode: { try KVWire.decodeResult($0) }, encode: { KVWire.encode($0) }) },
            { FuzzCheck.roundTrip($0, decode: { try KVWire.decodeError($0) }, encode: { KVWire.encode($0) }) },
            { FuzzCheck.roundTrip($0, decode: { try KVWire.decodeLeaseStatus($0) }, encode: { KVWire.encode($0) }) },
            { FuzzCheck.roundTrip($0, decode: { try KVWire.decodeLeases($0) }, encode: { KVWire.encode($0) }) },
        ])
    }

    static let watchWire = FuzzTarget(
        name: "watch-wire", summary: "WatchWire.decodeRequest and WatchWire.decodeMessage: watch requests and the messages of a watch stream",
        seeds: {
            var requests = [
                WatchRequest(bounds: KeyBounds(start: Array("a".utf8), end: Array("b".utf8)), startRevision: 3, withPrevious: true),
                WatchRequest(bounds: KeyBounds(start: [], end: nil), progressIntervalMs: 0),
            ]
            requests[1].proof = Array(repeating: 1, count: 32)
            let messages: [WatchMessage] = [
                .created(revision: 5), .events(KVSeeds.history.events), .events([]), .progress(revision: .max), .ended(.compacted(oldestAvailable: 3)),
                .ended(.lagged), .ended(.shutdown), .ended(.failed("the node is gone")),
            ]
            return selected(0, requests.map { WatchWire.encode($0) }) + selected(1, messages.map { WatchWire.encode($0) })
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try WatchWire.decodeRequest($0) }, encode: { WatchWire.encode($0) }) },
            { FuzzCheck.roundTrip($0, decode: { try WatchWire.decodeMessage($0) }, encode: { WatchWire.encode($0) }) },
        ])
    }

    static let nodeStatus = FuzzTarget(
        name: "node-status", summary: "NodeStatusWire.decode: what a node reports about itself (cluster.status)",
        seeds: {
            var status = NodeStatusInfo(
                id: 1, role: "leader", term: 4, leader: 1, commitIndex: 90, appliedIndex: 88, lastIndex: 91, voters: [1, 2, 3], learners: [4])
            status.snapshotIndex = 50
            let other = NodeStatusInfo(
                id: .max, role: "preCandidate", term: 0, leader: nil, commitIndex: 0, appliedIndex: 0, lastIndex: 0, voters: (1...64).map { $0 },
                learners: [])
            return [NodeStatusWire.encode(status), NodeStatusWire.encode(other)]
        }
    ) { input in
        FuzzCheck.roundTrip(input, decode: { try NodeStatusWire.decode($0) }, encode: { NodeStatusWire.encode($0) })
    }
}
