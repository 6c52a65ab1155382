import AspenCore

/// Runs one target over mutated inputs, in this process. Without coverage instrumentation it
/// steers by what the decoder says: an input that decodes to something new, or that is refused
/// with an error of a kind not seen yet, joins the pool that mutation draws from, so mutation
/// walks into deep valid structure and into every refusal path. One seed reproduces a run.
public struct FuzzRunner {
    public struct Budget: Sendable {
        /// Stop after this many executions (nil: no bound).
        public var runs: Int?
        /// Stop after this much time (nil: no bound).
        public var duration: Duration?
        /// Stop after this many property failures: the first one is the bug, and what follows
        /// it (deeper inputs, say) may crash instead of failing.
        public var failuresMax: Int

        public init(runs: Int? = nil, duration: Duration? = nil, failuresMax: Int = 1) {
            precondition(runs != nil || duration != nil, "a fuzz run needs a bound")
            precondition(failuresMax > 0)
            self.runs = runs
            self.duration = duration
            self.failuresMax = failuresMax
        }
    }

    public struct Report: Sendable {
        public var target: String
        public var seed: UInt64
        public var executions = 0
        /// Distinct inputs that decoded (counted up to `distinctMax`).
        public var decodedDistinct = 0
        /// Distinct kinds of refusal seen.
        public var rejectionKinds = 0
        public var pool = 0
        public var elapsed: Duration = .zero
        /// Property failures, each with its input (a trap ends the process instead).
        public var failures: [(input: [UInt8], message: String)] = []

        public var executionsPerSecond: Double {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            return seconds > 0 ? Double(executions) / seconds : 0
        }
    }

    /// Inputs the pool keeps; past it, a new one replaces a random old one.
    public static let poolMax = 4096
    /// Kinds of refusal remembered (each kept one input in the pool).
    static let rejectionKindsMax = 512
    /// Distinct decoded inputs remembered for the count.
    static let distinctMax = 1 << 22

    let target: FuzzTarget
    var mutator: FuzzMutator
    var pool: [[UInt8]]
    var random: SplitMix64
    var decodedHashes: Set<UInt64> = []
    var rejectionKinds: Set<String> = []
    public private(set) var report: Report

    /// `corpus` adds inputs (a saved corpus, reproducers) to the target's seeds.
    public init(target: FuzzTarget, seed: UInt64, corpus: [[UInt8]] = [], inputBytesMax: Int = FuzzMutator.inputBytesMaxDefault) {
        self.target = target
        self.mutator = FuzzMutator(seed: seed, inputBytesMax: inputBytesMax, nestingTokens: target.nestingTokens)
        self.random = SplitMix64(seed: ~seed)
        self.pool = target.seeds + corpus
        if pool.isEmpty { pool = [[]] }
        self.report = Report(target: target.name, seed: seed)
    }

    /// Runs within `budget`. `beforeEach` sees every input first (a crash handler keeps it);
    /// `onFailure` is told of each property failure, which is also recorded in the report.
    public mutating func run(
        _ budget: Budget, beforeEach: ([UInt8]) -> Void = { _ in }, onFailure: ([UInt8], String) -> Void = { _, _ in }
    ) -> Report {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = budget.duration.map { start + $0 }
        // The pool's own inputs first, unchanged: the seeds must hold their properties too.
        var replay = pool
        while budget.runs.map({ report.executions < $0 }) ?? true, report.failures.count < budget.failuresMax {
            if report.executions % 256 == 0, let deadline, clock.now >= deadline { break }
            let input: [UInt8]
            if let next = replay.popLast() {
                input = next
            } else {
                input = mutator.mutate(pool[Int(random.next(in: 0...UInt64(pool.count - 1)))], corpus: pool)
            }
            beforeEach(input)
            let outcome = target.run(input)
            report.executions += 1
            record(input, outcome, onFailure: onFailure)
        }
        report.elapsed = clock.now - start
        report.decodedDistinct = decodedHashes.count
        report.rejectionKinds = rejectionKinds.count
        report.pool = pool.count
        return report
    }

    private mutating func record(_ input: [UInt8], _ outcome: FuzzOutcome, onFailure: ([UInt8], String) -> Void) {
        switch outcome {
        case .decoded:
            guard decodedHashes.count < Self.distinctMax else { return }
            if decodedHashes.insert(FNV1a64.hash(input)).inserted { keep(input) }
        case .rejected(let shape):
            if rejectionKinds.count < Self.rejectionKindsMax, rejectionKinds.insert(shape).inserted { keep(input) }
        case .failed(let message):
            report.failures.append((input, message))
            onFailure(input, message)
        }
    }

    private mutating func keep(_ input: [UInt8]) {
        if pool.count < Self.poolMax {
            pool.append(input)
        } else {
            pool[Int(random.next(in: 0...UInt64(pool.count - 1)))] = input
        }
    }
}
