/// A length of time as people write it for jobs: a whole number and a unit, `ms`, `s`, `m`, `h`
/// or `d` (`250ms`, `30s`, `10m`, `2h`, `7d`). At most 365 days.
public enum JobDuration {
    public static let maxMs: Int64 = 365 * 86_400_000

    public static func parseMs(_ text: String) throws(JobPolicyError) -> Int64 {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            let digits = text.dropLast(unit.count)
            // "5ms" also ends in "s": only a number may come before the unit.
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let number = Int64(digits), number >= 0 else { continue }
            guard number <= maxMs / scale else { throw JobPolicyError("\(text) is longer than 365 days") }
            return number * scale
        }
        throw JobPolicyError("'\(text)' is not a duration: a whole number and ms, s, m, h or d (250ms, 30s, 10m, 2h, 7d)")
    }

    /// A duration as `parseMs` reads it back, in the largest unit that divides it.
    public static func format(ms: Int64) -> String {
        for (unit, scale) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where ms > 0 && ms % scale == 0 {
            return "\(ms / scale)\(unit)"
        }
        return "\(ms)ms"
    }
}

/// How long a job waits before its next attempt after a failed one.
///
/// - `none`: at once;
/// - `fixed:D`: D every time;
/// - `exp:D,xF,max:M`: D after the first failure, multiplied by F (an integer, 2 by default)
///   after each further one, never more than M (by default one hour, or D if longer).
///
/// Each wait is jittered: a uniformly random point between half the wait and the whole of it, so
/// that jobs failing together do not retry together.
public enum JobBackoff: Sendable, Equatable, CustomStringConvertible {
    case none
    case fixed(ms: Int64)
    case exponential(initialMs: Int64, factor: Int64, maxMs: Int64)

    public static let standard = JobBackoff.exponential(initialMs: 1000, factor: 2, maxMs: 3_600_000)

    public init(parsing text: String) throws(JobPolicyError) {
        if text == "none" {
            self = .none
            return
        }
        if text.hasPrefix("fixed:") {
            self = .fixed(ms: try JobDuration.parseMs(String(text.dropFirst(6))))
            return
        }
        guard text.hasPrefix("exp:") else {
            throw JobPolicyError("'\(text)' is not a backoff: none, fixed:DURATION or exp:DURATION[,xFACTOR][,max:DURATION]")
        }
        let parts = text.dropFirst(4).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let first = parts.first else { throw JobPolicyError("exp: needs an initial duration, as in exp:1s,x2,max:5m") }
        let initial = try JobDuration.parseMs(first)
        var factor: Int64 = 2
        var maxMs: Int64 = max(3_600_000, initial)
        for part in parts.dropFirst() {
            if part.hasPrefix("x"), let given = Int64(part.dropFirst()), (1...100).contains(given) {
                factor = given
            } else if part.hasPrefix("max:") {
                maxMs = try JobDuration.parseMs(String(part.dropFirst(4)))
            } else {
                throw JobPolicyError("'\(part)' in \(text) is neither xFACTOR (1 to 100) nor max:DURATION")
            }
        }
        guard initial >= 1, maxMs >= initial else {
            throw JobPolicyError("in \(text) the initial wait must be at least 1ms and no more than the maximum")
        }
        self = .exponential(initialMs: initial, factor: factor, maxMs: maxMs)
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .fixed(let ms): "fixed:\(JobDuration.format(ms: ms))"
        case .exponential(let initial, let factor, let maxMs):
            "exp:\(JobDuration.format(ms: initial)),x\(factor),max:\(JobDuration.format(ms: maxMs))"
        }
    }

    /// The wait before attempt `failures + 1`, after `failures` (≥ 1) failed attempts, before jitter.
    public func baseDelayMs(afterFailures failures: Int) -> Int64 {
        switch self {
        case .none: return 0
        case .fixed(let ms): return ms
        case .exponential(let initial, let factor, let maxMs):
            var delay = initial
            for _ in 1..<max(1, failures) {
                guard delay < maxMs else { break }
                let (product, overflow) = delay.multipliedReportingOverflow(by: factor)
                delay = overflow ? maxMs : product
            }
            return min(delay, maxMs)
        }
    }

    /// The jittered wait: uniform in [base/2, base], with `unit` a uniform draw from [0, 1).
    public func delayMs(afterFailures failures: Int, unit: Double) -> Int64 {
        let base = baseDelayMs(afterFailures: failures)
        let half = base / 2
        return half + Int64((Double(base - half) * min(max(unit, 0), 1)).rounded(.down))
    }
}

/// Which pending job a free worker takes first. Within a priority, the oldest; across priorities,
/// a job's rank improves by one for every `JobPriority.agingMs` it has waited, so a steady stream
/// of urgent work delays low-priority jobs but never starves them.
public enum JobPriority: String, Sendable, CaseIterable, Comparable {
    case critical, high, normal, low

    /// 0 for critical … 3 for low.
    public var rank: Int { Self.allCases.firstIndex(of: self)! }

    /// How long a wait is worth one step of priority (one minute).
    public static let agingMs: Int64 = 60_000

    /// The rank after waiting `waitedMs`: lower is sooner, never below 0.
    public func effectiveRank(waitedMs: Int64) -> Int {
        max(0, rank - Int(min(max(waitedMs, 0) / Self.agingMs, Int64(rank))))
    }

    public static func < (lhs: JobPriority, rhs: JobPriority) -> Bool { lhs.rank < rhs.rank }

    public init(parsing text: String) throws(JobPolicyError) {
        guard let priority = JobPriority(rawValue: text.lowercased()) else {
            throw JobPolicyError("'\(text)' is not a priority: critical, high, normal or low")
        }
        self = priority
    }
}

/// A job option that cannot be used, and why.
public struct JobPolicyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
