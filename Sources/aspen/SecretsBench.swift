import AspenClient
import AspenCore
import AspenSecrets
import Crypto
import Foundation
import Synchronization

/// `aspen bench transit-encrypt | transit-decrypt | kv2-put | aead`: the secrets engines on a
/// running cluster (through the native protocol, as the CLI sends them), and the AEAD they use
/// in a tight loop in this process — the gap between the two is the cluster's overhead.
enum SecretsBench {
    enum Workload: String { case transitEncrypt = "transit-encrypt", transitDecrypt = "transit-decrypt", kv2Put = "kv2-put", aead }

    static func run(_ workload: Workload, client: AspenClient, clients: Int, seconds: Double, valueSize: Int, json: Bool) async throws {
        if workload == .aead { return aead(seconds: seconds, valueSize: valueSize, json: json) }
        // The timed calls only check the status, as a client that needs nothing of the answer would.
        func call(_ method: String, _ path: String, _ body: [String: Any] = [:], answer: Bool = true) async throws -> [String: Any] {
            try await send(method, path, SecretsJSON.encode(body), answer: answer)
        }
        // The timed calls' bodies are the same every time: encoded once, as a client would.
        func send(_ method: String, _ path: String, _ body: [UInt8], answer: Bool) async throws -> [String: Any] {
            let response = try await client.secrets(VaultRequest(method: method, path: path, body: body))
            guard (200..<300).contains(response.status) || response.errors.contains(where: { $0.contains("already in use") }) else {
                throw CLIError.unavailable("\(method) \(path): \(response.status) \(response.errors)")
            }
            guard answer else { return [:] }
            return ((try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any])?["data"] as? [String: Any] ?? [:]
        }
        // The mounts and key the runs use, made if missing.
        _ = try await call("POST", "sys/mounts/bench-transit", ["type": "transit"])
        _ = try await call("POST", "sys/mounts/bench-kv", ["type": "kv-v2"])
        _ = try await call("POST", "bench-transit/keys/bench", [:])
        let plaintext = TransitBase64.encode([UInt8](repeating: 0x5A, count: valueSize))
        let ciphertext = try await call("POST", "bench-transit/encrypt/bench", ["plaintext": plaintext])["ciphertext"] as? String ?? ""
        let encrypt = SecretsJSON.encode(["plaintext": plaintext])
        let decrypt = SecretsJSON.encode(["ciphertext": ciphertext])
        let secret = SecretsJSON.encode(["data": ["value": String(repeating: "v", count: valueSize)]])
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        let samples = JobBench.Samples()
        let begin = clock.now
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<clients {
                group.addTask {
                    var round = 0
                    while clock.now < deadline {
                        round += 1
                        let before = clock.now
                        do {
                            switch workload {
                            case .transitEncrypt: _ = try await send("POST", "bench-transit/encrypt/bench", encrypt, answer: false)
                            case .transitDecrypt: _ = try await send("POST", "bench-transit/decrypt/bench", decrypt, answer: false)
                            case .kv2Put: _ = try await send("POST", "bench-kv/data/w\(worker)/s\(round % 1000)", secret, answer: false)
                            case .aead: break
                            }
                            let elapsed = (clock.now - before).components
                            samples.values.withLock { $0.append(Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12) }
                        } catch {
                            samples.errors.withLock { $0["\(error)".prefix(60).description, default: 0] += 1 }
                        }
                    }
                }
            }
        }
        let wall = Double((clock.now - begin).components.seconds) + Double((clock.now - begin).components.attoseconds) / 1e18
        let sorted = samples.values.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let object: [String: Any] = [
            "workload": workload.rawValue, "clients": clients, "seconds": wall, "operations": sorted.count,
            "opsPerSecond": Double(sorted.count) / wall, "p50Us": percentile(0.5), "p99Us": percentile(0.99), "errors": samples.errors.withLock { $0 },
        ]
        output(
            json, object,
            text: String(
                format: "%@ clients=%d ops=%d ops/s=%.0f p50=%.0fµs p99=%.0fµs errors=%@", workload.rawValue, clients, sorted.count,
                Double(sorted.count) / wall, percentile(0.5), percentile(0.99), "\(samples.errors.withLock { $0 })"))
    }

    /// AES-256-GCM seals and opens of `valueSize` bytes with a random nonce, one core, as transit does.
    static func aead(seconds: Double, valueSize: Int, json: Bool) {
        let key = SymmetricKey(size: .bits256)
        let plaintext = [UInt8](repeating: 0x5A, count: valueSize)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        let begin = clock.now
        var operations = 0
        while clock.now < deadline {
            for _ in 0..<256 {
                let box = try! AES.GCM.seal(plaintext, using: key)
                _ = try! AES.GCM.open(box, using: key)
            }
            operations += 256
        }
        let wall = Double((clock.now - begin).components.seconds) + Double((clock.now - begin).components.attoseconds) / 1e18
        output(
            json, ["workload": "aead", "seconds": wall, "operations": operations, "opsPerSecond": Double(operations) / wall],
            text: String(format: "aead (seal+open, %d bytes) ops/s=%.0f", valueSize, Double(operations) / wall))
    }
}
