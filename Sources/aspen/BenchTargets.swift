import AspenAuth
import AspenClient
import AspenCoordination
import AspenCore
import AspenEtcd
import AspenKV
import Foundation
import Synchronization
import GRPCCore
import SwiftProtobuf

/// What `aspen bench` drives: the same operations over Aspen's protocol or etcd's.
protocol BenchTarget: Sendable {
    func put(_ key: Bytes, _ value: Bytes) async throws
    func get(_ key: Bytes, stale: Bool) async throws
    /// Writes every key once, so that reads find data.
    func fill(_ keys: [Bytes], value: Bytes) async throws
    func close() async
}

extension AspenClient: BenchTarget {
    func put(_ key: Bytes, _ value: Bytes) async throws { _ = try await write(.put(Put(key: key, value: value))) }

    func get(_ key: Bytes, stale: Bool) async throws {
        _ = try await read(RangeRequest(.key(key), limit: 1), consistency: stale ? .stale : .linearizable)
    }

    func fill(_ keys: [Bytes], value: Bytes) async throws {
        for start in stride(from: 0, to: keys.count, by: 1000) {
            try await batch(keys[start..<min(start + 1000, keys.count)].map { .put(Put(key: $0, value: value)) })
        }
    }
}

/// etcd's v3 API over gRPC: one HTTP/2 connection per endpoint, calls spread over them
/// (see `GRPCFrameClient` for why not grpc-swift's client).
final class EtcdBenchTarget: BenchTarget {
    let clients: [GRPCFrameClient]
    let next = Atomic<Int>(0)

    /// With a credential, each endpoint's client authenticates first (etcd's Authenticate, the
    /// credential as the password) and sends its session token with every call.
    static func connect(endpoints text: String, credential: Credential?) async throws -> EtcdBenchTarget {
        let plain = try EtcdBenchTarget(endpoints: text)
        guard let credential else { return plain }
        var clients: [GRPCFrameClient] = []
        for client in plain.clients {
            var request = Etcdserverpb_AuthenticateRequest()
            request.name = "aspen-bench"
            request.password = credential.text
            let response = try Etcdserverpb_AuthenticateResponse(
                serializedBytes: try await client.call("/etcdserverpb.Auth/Authenticate", try request.serializedBytes()))
            await client.close()
            clients.append(GRPCFrameClient(host: client.host, port: client.port, metadata: [("token", response.token)]))
        }
        return EtcdBenchTarget(clients: clients)
    }

    init(clients: [GRPCFrameClient]) { self.clients = clients }

    init(endpoints text: String) throws {
        var clients: [GRPCFrameClient] = []
        for item in text.split(separator: ",") {
            var endpoint = String(item).trimmingCharacters(in: .whitespaces)
            if let scheme = endpoint.range(of: "://") { endpoint = String(endpoint[scheme.upperBound...]) }
            guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
                throw CLIError.badInput("etcd endpoint \(item) is not HOST:PORT")
            }
            var host = String(endpoint[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            clients.append(GRPCFrameClient(host: host, port: port))
        }
        guard !clients.isEmpty else { throw CLIError.badInput("no etcd endpoints given") }
        self.clients = clients
    }

    /// One call to the next endpoint in turn.
    func call<Response: SwiftProtobuf.Message>(_ path: String, _ request: some SwiftProtobuf.Message, _: Response.Type) async throws -> Response {
        let client = clients[next.wrappingAdd(1, ordering: .relaxed).oldValue % clients.count]
        return try Response(serializedBytes: try await client.call(path, try request.serializedBytes()))
    }

    func put(_ key: Bytes, _ value: Bytes) async throws {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key)
        request.value = Data(value)
        _ = try await call("/etcdserverpb.KV/Put", request, Etcdserverpb_PutResponse.self)
    }

    func get(_ key: Bytes, stale: Bool) async throws {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key)
        request.serializable = stale
        _ = try await call("/etcdserverpb.KV/Range", request, Etcdserverpb_RangeResponse.self)
    }

    func fill(_ keys: [Bytes], value: Bytes) async throws {
        // etcd limits a Txn to 128 operations by default.
        for start in stride(from: 0, to: keys.count, by: 128) {
            var txn = Etcdserverpb_TxnRequest()
            txn.success = keys[start..<min(start + 128, keys.count)].map { key in
                var op = Etcdserverpb_RequestOp()
                var put = Etcdserverpb_PutRequest()
                put.key = Data(key)
                put.value = Data(value)
                op.requestPut = put
                return op
            }
            _ = try await call("/etcdserverpb.KV/Txn", txn, Etcdserverpb_TxnResponse.self)
        }
    }

    func close() async {
        for client in clients { await client.close() }
    }
}

/// One operation of a coordination-layer workload, for `aspen bench lock|queue|counter|buffered-counter`:
/// by default each layer operation is one coordination call run on the leader; `clientSide`
/// runs the same layer in the bench process over the key-value API instead.
struct LayerOperation: Sendable {
    let run: @Sendable () async throws -> Void

    init(_ workload: Bench.Workload, store: AspenClient, worker: Int, clientSide: Bool) {
        switch (workload, clientSide) {
        case (.lock, false):
            run = {
                guard case .grant(let grant) = try await store.coordinate(.lockAcquire(name: "bench", holder: "worker-\(worker)", ttlMs: 10_000, waitMs: 60_000))
                else { throw CLIError.unexpectedAnswer }
                _ = try await store.coordinate(.lockRelease(name: "bench", holder: grant.holder, token: grant.token))
            }
        case (.lock, true):
            let lock = DistributedLock(store: store)
            run = {
                let grant = try await lock.acquire("bench", holder: "worker-\(worker)", ttlMs: 10_000, waitMs: 60_000)
                try await lock.release("bench", holder: grant.holder, token: grant.token)
            }
        case (.queue, false):
            run = {
                _ = try await store.coordinate(.enqueue(queue: "bench", payloads: [Array("job from \(worker)".utf8)], dedupID: nil, delayMs: 0))
                if case .delivery(let delivery?) = try await store.coordinate(.dequeue(queue: "bench", visibilityMs: 30_000, maxDeliveries: 5)) {
                    _ = try await store.coordinate(.ack(delivery))
                }
            }
        case (.queue, true):
            let queue = WorkQueue(store: store, nowMs: { Int64(Date().timeIntervalSince1970 * 1000) })
            run = {
                try await queue.enqueue("bench", Array("job from \(worker)".utf8))
                if let delivery = try await queue.dequeue("bench", visibilityMs: 30_000) { try await queue.ack(delivery) }
            }
        case (.bufferedCounter, _):
            // The buffer lives in the client by design; its flush is one counter change.
            let buffer = BufferedCounter(Counter(store: store), name: "bench")
            let count = Atomic<Int>(0)
            run = {
                await buffer.add(1)
                if count.add(1, ordering: .relaxed).newValue % 100 == 0 { try await buffer.flush() }
            }
        case (_, false):
            run = { _ = try await store.coordinate(.counter(name: "bench", signed: false, .add(1))) }
        case (_, true):
            let counter = Counter(store: store)
            run = { try await counter.increment("bench") }
        }
    }
}
