import AspenClient
import AspenCore
import AspenKV
import ArgumentParser
import GRPCCore
import Foundation
import Synchronization

/// `aspen bench`: closed-loop clients over the real protocol; throughput and latency percentiles.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure a running cluster: put, get or mixed load.")

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case put, get, mixed
        /// Coordination layers over the native client: one op is a lock acquire+release on one
        /// contended lock, an enqueue+dequeue+ack, a counter increment, or a buffered increment
        /// (flushed every 100).
        case lock, queue, counter, bufferedCounter = "buffered-counter"
        /// Blob adds of --value-size bytes each (distinct contents), acknowledged once
        /// --replicas copies are held and committed.
        case blob
        /// Capability-token verification in this process (no cluster): a whole chain, a
        /// remembered one, and Ed25519 itself as the baseline.
        case auth
        /// Jobs end to end (submit, claim, run a no-op in this process, report): jobs per
        /// second with --clients submitters and --workers claim loops.
        case job
        /// One job at a time: submit-to-start latency of an idle cluster.
        case jobLatency = "job-latency"
        /// Durable publishes (one message per call, --value-size bytes) per second.
        case pub
        /// Publish-to-delivery on a stream watcher against put-to-watch-event, alternating.
        case pubLatency = "pub-latency"
        /// The secrets engines: transit encrypt and decrypt of --value-size bytes, kv-v2 writes,
        /// and the AEAD alone in this process (no cluster).
        case transitEncrypt = "transit-encrypt", transitDecrypt = "transit-decrypt", kv2Put = "kv2-put", aead
        var isLayer: Bool { [.lock, .queue, .counter, .bufferedCounter].contains(self) }
    }
    enum WireProtocol: String, ExpressibleByArgument, CaseIterable { case aspen, etcd }

    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "put, get or mixed.") var workload: Workload
    @Option(help: "Concurrent closed-loop clients.") var clients: Int = 16
    @Option(help: "Seconds to run.") var duration: Double = 10
    @Option(help: "Key size in bytes.") var keySize: Int = 16
    @Option(help: "Value size in bytes.") var valueSize: Int = 256
    @Option(help: "Distinct keys.") var keyspace: Int = 10_000
    @Option(help: "Share of reads in the mixed workload.") var readRatio: Double = 0.5
    @Flag(help: "Stale (serializable) reads instead of linearizable ones.") var stale = false
    @Option(help: "The blob workload: copies each add waits for (0: the cluster's factor).") var replicas = 0
    @Option(help: "The job workload: claim loops of the worker in this process.") var workers = 16
    @Flag(help: "Layer workloads: run the layer in this process over the key-value API instead of on the leader.") var clientSide = false
    @Option(
        help: "aspen (the native protocol) or etcd (etcd's v3 gRPC API; --endpoints then lists etcd endpoints HOST:PORT,..., Aspen's or etcd's own, and the clients are spread over them).")
    var `protocol`: WireProtocol = .aspen

    func validate() throws {
        guard (1...10_000).contains(clients), duration > 0, keySize >= 4, keySize <= 1024, valueSize >= 0, keyspace > 0 else {
            throw ValidationError("clients 1-10000, positive duration and keyspace, key size 4-1024")
        }
        guard (0...1).contains(readRatio) else { throw ValidationError("--read-ratio must be between 0 and 1") }
        guard workload != .blob || valueSize >= 8 else { throw ValidationError("the blob workload needs --value-size of 8 bytes or more") }
    }

    func key(_ number: Int) -> Bytes {
        let digits = Array(String(number).utf8)
        return Array(repeating: UInt8(ascii: "k"), count: max(0, keySize - digits.count)) + digits
    }

    final class Recorder: Sendable {
        struct State {
            var latencies: [Double] = []
            var errors: [String: Int] = [:]
            /// The first message of each kind of error, so that a run that failed says why.
            var firstMessages: [String: String] = [:]
            var operations = 0
        }
        let state = Mutex(State())
        func record(_ micros: Double) { state.withLock { $0.latencies.append(micros); $0.operations += 1 } }
        func fail(_ kind: String, _ error: any Error) {
            state.withLock { state in
                state.errors[kind, default: 0] += 1
                if state.firstMessages[kind] == nil { state.firstMessages[kind] = "\(error)" }
            }
        }
        var operations: Int { state.withLock { $0.operations } }
    }

    func run() async throws {
        if let secrets = SecretsBench.Workload(rawValue: workload.rawValue) {
            try await runReporting {
                if secrets == .aead { return SecretsBench.aead(seconds: duration, valueSize: valueSize, json: cluster.json) }
                let client = try cluster.client()
                try await SecretsBench.run(secrets, client: client, clients: clients, seconds: duration, valueSize: valueSize, json: cluster.json)
                await client.close()
            }
            return
        }
        if workload == .auth {
            try await runReporting { AuthBench.run(seconds: duration, json: cluster.json) }
            return
        }
        if workload == .pub || workload == .pubLatency {
            try await runReporting {
                let client = try cluster.client()
                if workload == .pub {
                    try await PubSubBench.throughput(client: client, clients: clients, seconds: duration, valueSize: valueSize, json: cluster.json)
                } else {
                    try await PubSubBench.latency(client: client, seconds: duration, json: cluster.json)
                }
                await client.close()
            }
            return
        }
        if workload == .job || workload == .jobLatency {
            try await runReporting {
                let client = try cluster.client()
                try await JobBench.run(
                    client: client, clients: clients, workers: workers, seconds: duration, idle: workload == .jobLatency, json: cluster.json)
                await client.close()
            }
            return
        }
        try await runReporting {
            let client: any BenchTarget
            switch `protocol` {
            case .aspen: client = try cluster.client()
            case .etcd:
                guard let text = cluster.endpoints, !text.isEmpty else {
                    throw CLIError.badInput("--protocol etcd needs --endpoints HOST:PORT,... (etcd endpoints)")
                }
                client = try await EtcdBenchTarget.connect(endpoints: text, credential: try ClusterOptions.credential(file: cluster.credentialFile))
            }
            let value = Bytes(repeating: 0xAB, count: valueSize)
            if (workload.isLayer || workload == .blob) && `protocol` != .aspen {
                throw CLIError.badInput("the \(workload.rawValue) workload runs over the native protocol only")
            }
            let native = client as? AspenClient
            if workload == .get || workload == .mixed {
                // Reads find data: fill the keyspace first.
                try await client.fill((0..<keyspace).map(key), value: value)
            }
            let recorder = Recorder()
            let clock = ContinuousClock()
            let started = clock.now
            let deadline = started + .milliseconds(Int64(duration * 1000))
            let progress = Task {
                var last = 0
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let total = recorder.operations
                    FileHandle.standardError.write(Data("\(total - last) ops/s, \(total) total\n".utf8))
                    last = total
                }
            }
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<clients {
                    group.addTask {
                        var generator = SplitMix64(seed: UInt64(worker) &+ 1)
                        let layer = native.map { LayerOperation(workload, store: $0, worker: worker, clientSide: clientSide) }
                        while clock.now < deadline {
                            let target = key(Int(generator.next(in: 0...UInt64(keyspace - 1))))
                            let read = workload == .get || (workload == .mixed && generator.chance(readRatio))
                            let before = clock.now
                            do {
                                if let layer, workload.isLayer {
                                    try await layer.run()
                                } else if workload == .blob, let native {
                                    var contents = [UInt8](repeating: 0, count: valueSize)
                                    for index in stride(from: 0, to: valueSize - 7, by: 8) {
                                        withUnsafeBytes(of: generator.next()) { contents.replaceSubrange(index..<(index + 8), with: $0) }
                                    }
                                    var cursor = 0
                                    _ = try await native.addBlob(size: UInt64(valueSize), replicas: replicas) { buffer in
                                        let count = min(buffer.count, contents.count - cursor)
                                        contents.withUnsafeBytes {
                                            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[cursor..<(cursor + count)]))
                                        }
                                        cursor += count
                                        return count
                                    }
                                } else if read {
                                    try await client.get(target, stale: stale)
                                } else {
                                    try await client.put(target, value)
                                }
                                let elapsed = (clock.now - before).components
                                recorder.record(Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12)
                            } catch let error as KVError {
                                recorder.fail(error.code, error)
                            } catch let error as ClientError {
                                let kind = if case .unavailable = error { "unavailable" } else { "rejected" }
                                recorder.fail(kind, error)
                            } catch let error as BlobRequestError {
                                recorder.fail("blob \(error.code)", error)
                            } catch let error as RPCError {
                                recorder.fail("grpc \(error.code)", error)
                            } catch {
                                recorder.fail("other", error)
                            }
                        }
                    }
                }
            }
            progress.cancel()
            let elapsed = (clock.now - started).components
            let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
            let state = recorder.state.withLock { $0 }
            let sorted = state.latencies.sorted()
            func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            let opsPerSecond = Double(state.operations) / seconds
            let object: [String: Any] = [
                "workload": workload.rawValue, "clients": clients, "seconds": seconds, "operations": state.operations,
                "opsPerSecond": opsPerSecond, "p50Us": percentile(0.5), "p90Us": percentile(0.9), "p99Us": percentile(0.99),
                "p999Us": percentile(0.999), "maxUs": sorted.last ?? 0, "errors": state.errors, "stale": stale,
                "protocol": `protocol`.rawValue, "valueSize": valueSize,
            ]
            let text = String(
                format: "%@ clients=%d ops=%d ops/s=%.0f p50=%.0fµs p90=%.0fµs p99=%.0fµs p99.9=%.0fµs max=%.0fµs errors=%@",
                workload.rawValue, clients, state.operations, opsPerSecond, percentile(0.5), percentile(0.9), percentile(0.99),
                percentile(0.999), sorted.last ?? 0, state.errors.isEmpty ? "none" : "\(state.errors)")
            for (kind, message) in state.firstMessages.sorted(by: { $0.key < $1.key }) {
                FileHandle.standardError.write(Data("first \(kind) error: \(message)\n".utf8))
            }
            output(cluster.json, object, text: text)
            await client.close()
        }
    }
}
