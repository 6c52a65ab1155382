import AspenAuth
import AspenCore
import AspenKV
import Crypto
import Foundation

/// `aspen bench auth`: what a token check costs a node. A whole chain's verification (every
/// link's signature and checks), a remembered chain (time and revocation only, what every
/// request after the first pays), and one Ed25519 signature check, the baseline, measured in
/// the same run.
enum AuthBench {
    static func run(seconds: Double, json: Bool) {
        let share = max(0.2, seconds / 6)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let root = SigningKey()
        var credential = try! TokenIssuer.root(  // A fresh key and valid arguments mint.
            rootKey: root, holderKey: SigningKey(), capabilities: TokenIssuer.everything, lifetimeMs: 86_400_000, nowMs: now)
        var chains: [Int: Credential] = [1: credential]
        for depth in 1...7 {
            credential = try! TokenIssuer.delegate(
                from: credential, holderKey: SigningKey(), capabilities: [.read(prefix: []), .write(prefix: Array("app/".utf8)), .delegate],
                lifetimeMs: 3_600_000, nowMs: now)
            chains[depth + 1] = credential
        }
        let trust = TrustState(roots: [root.publicKey])
        var rows: [[String: Any]] = []
        var lines = ["operation                               ops/s        µs/op   vs one Ed25519 check"]
        let message = Array(repeating: UInt8(7), count: 200)
        let signature = Array(try! root.privateKey.signature(for: message))  // Signing with a valid key does not fail.
        let publicKey = root.privateKey.publicKey
        let baseline = measure(share) { _ = publicKey.isValidSignature(signature, for: message) }
        func add(_ name: String, _ rate: Double) {
            rows.append(["operation": name, "opsPerSecond": rate.rounded(), "microsecondsPerOp": (1e6 / rate * 100).rounded() / 100, "ratioToEd25519": rate / baseline])
            lines.append(
                name.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: "%9.0f  %11.2f   %.3f", rate, 1e6 / rate, rate / baseline))
        }
        add("ed25519 verify (baseline)", baseline)
        for depth in [1, 4, 8] {
            let chain = chains[depth]!
            // A new verifier each time: nothing remembered, every link checked.
            add("verify chain of \(depth), cold", measure(share) { _ = try? TokenVerifier(trust: trust).verify(chain, nowMs: now) })
        }
        let warm = TokenVerifier(trust: trust)
        let deepest = chains[8]!
        let verified = try! warm.verify(deepest, nowMs: now)  // Minted just above, under this root.
        let holder = deepest.holderKey!.publicKey
        add("authorize chain of 8, remembered", measure(share) {
            _ = try? warm.authorize(verified, presented: holder, needed: .read(KeySelection.key(Array("app/x".utf8))), nowMs: now)
        })
        if json, let data = try? JSONSerialization.data(withJSONObject: ["results": rows], options: [.sortedKeys]) {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(lines.joined(separator: "\n"))
        }
    }

    /// Operations per second of `body`, run for about `seconds`.
    static func measure(_ seconds: Double, _ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        var count = 0
        var elapsed = 0.0
        repeat {
            for _ in 0..<64 { body() }
            count += 64
            let components = (clock.now - start).components
            elapsed = Double(components.seconds) + Double(components.attoseconds) * 1e-18
        } while elapsed < seconds
        return Double(count) / elapsed
    }
}
