import AspenCore
import Synchronization

/// A Prometheus histogram: cumulative counts per upper bound, the sum and the count.
public struct Histogram: Sendable, Equatable {
    public let bounds: [Double]
    public private(set) var counts: [UInt64]
    public private(set) var sum = 0.0
    public private(set) var count: UInt64 = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    /// Latencies in seconds, from 100 µs to 10 s.
    public static var latency: Histogram {
        Histogram(bounds: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
    }

    /// Entries per group commit, 1 to the batch bound.
    public static var batchSize: Histogram { Histogram(bounds: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]) }

    public mutating func observe(_ value: Double) {
        sum += value
        count += 1
        if let bucket = bounds.firstIndex(where: { value <= $0 }) { counts[bucket] += 1 }
    }

    /// The exposition lines of this histogram as `name` with `labels` (e.g. `op="kv.write"`).
    func lines(_ name: String, labels: String = "") -> [String] {
        var lines: [String] = []
        var cumulative: UInt64 = 0
        let prefix = labels.isEmpty ? "" : labels + ","
        for (bound, bucketCount) in zip(bounds, counts) {
            cumulative += bucketCount
            lines.append("\(name)_bucket{\(prefix)le=\"\(bound)\"} \(cumulative)")
        }
        lines.append("\(name)_bucket{\(prefix)le=\"+Inf\"} \(count)")
        let braces = labels.isEmpty ? "" : "{\(labels)}"
        lines.append("\(name)_sum\(braces) \(sum)")
        lines.append("\(name)_count\(braces) \(count)")
        return lines
    }
}

/// Client requests by operation: latency histograms and outcomes by code, for `/metrics`.
public final class RequestMetrics: Sendable {
    struct State {
        var latency: [String: Histogram] = [:]
        var outcomes: [String: [String: UInt64]] = [:]
    }

    private let state = Mutex(State())
    /// Other services' exposition lines (the blob store's), appended to these.
    private let sources = Mutex<[@Sendable () -> [String]]>([])

    public init() {}

    public func add(source: @escaping @Sendable () -> [String]) {
        sources.withLock { $0.append(source) }
    }

    public func record(_ operation: String, seconds: Double, outcome: String) {
        state.withLock { state in
            state.latency[operation, default: .latency].observe(seconds)
            state.outcomes[operation, default: [:]][outcome, default: 0] += 1
        }
    }

    /// The exposition lines.
    public var exposition: [String] {
        state.withLock { state in
            var text = MetricsText()
            text.family("aspen_request_seconds", .histogram, "Client request latency by operation, as seen by the node.")
            for operation in state.latency.keys.sorted() {
                text.append(state.latency[operation]!.lines("aspen_request_seconds", labels: "op=\"\(operation)\""))
            }
            text.family("aspen_requests_total", .counter, "Client requests by operation and outcome.")
            for operation in state.outcomes.keys.sorted() {
                for (outcome, count) in state.outcomes[operation]!.sorted(by: { $0.key < $1.key }) {
                    text.append(["aspen_requests_total{op=\"\(operation)\",outcome=\"\(outcome)\"} \(count)"])
                }
            }
            return text.lines
        } + sources.withLock { $0 }.flatMap { $0() }
    }
}
