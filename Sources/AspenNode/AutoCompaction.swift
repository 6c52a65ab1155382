import AspenKV

/// When the leader compacts the key-value history by itself (etcd's `--auto-compaction-mode`
/// and `--auto-compaction-retention`), so that history does not grow until a client compacts.
/// A pure policy: the node hands it its clock and revision on every tick and proposes the
/// compaction it returns, as one command through the log like a client's.
public struct AutoCompaction: Sendable {
    public enum Mode: Sendable, Equatable, CustomStringConvertible {
        /// Keep at least this much history by time: the revision is sampled every tenth of the
        /// retention, and history is compacted to the newest sample that is `retentionMs` old.
        case periodic(retentionMs: Int64)
        /// Keep the last `revisions` revisions, checked every `revisionCheckMs`.
        case revision(revisions: Int64)

        /// The mode and retention as `--auto-compaction-mode` and `--auto-compaction-retention` spell them.
        public var name: String {
            switch self {
            case .periodic: return "periodic"
            case .revision: return "revision"
            }
        }

        public var retention: String {
            switch self {
            case .periodic(let retentionMs): return Self.format(milliseconds: retentionMs)
            case .revision(let revisions): return "\(revisions)"
            }
        }

        public var description: String { "\(name), retention \(retention)" }

        /// The modes `--auto-compaction-mode` takes.
        public static let names = ["periodic", "revision"]

        /// etcd's spelling of a retention: `30m`, `1h`, `90s`, `500ms`, or a bare number of hours
        /// (periodic); a number of revisions (revision).
        public static func parse(mode: String, retention: String) -> Result<Mode, ParseError> {
            switch mode {
            case "periodic":
                guard let milliseconds = parseDuration(retention), milliseconds > 0 else {
                    return .failure(.badRetention("'\(retention)' is not a duration such as 30m, 1h, 90s or a number of hours"))
                }
                return .success(.periodic(retentionMs: milliseconds))
            case "revision":
                guard let revisions = Int64(retention), revisions > 0 else {
                    return .failure(.badRetention("'\(retention)' is not a positive number of revisions"))
                }
                return .success(.revision(revisions: revisions))
            default:
                return .failure(.badMode("'\(mode)' is not periodic or revision"))
            }
        }

        public enum ParseError: Error, Sendable, Equatable {
            case badMode(String)
            case badRetention(String)
        }

        static func parseDuration(_ text: String) -> Int64? {
            // A bare number is hours, as etcd reads it.
            let units: [(suffix: String, milliseconds: Int64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("", 3_600_000)]
            for unit in units where text.hasSuffix(unit.suffix) {
                guard let number = Int64(text.dropLast(unit.suffix.count)) else { continue }
                let (total, overflow) = number.multipliedReportingOverflow(by: unit.milliseconds)
                return overflow ? nil : total
            }
            return nil
        }

        static func format(milliseconds: Int64) -> String {
            for (suffix, unit) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1_000)] where milliseconds % unit == 0 {
                return "\(milliseconds / unit)\(suffix)"
            }
            return "\(milliseconds)ms"
        }
    }

    public let mode: Mode
    /// How often the revision mode looks (etcd: every five minutes).
    public let revisionCheckMs: Int64
    struct Sample: Sendable, Equatable {
        var atMs: Int64
        var revision: Revision
    }
    /// Periodic mode: the revision at a time, a tenth of the retention apart; at most eleven
    /// or so are kept (older ones are dropped once compacted to).
    private(set) var samples: [Sample] = []
    private var lastCheckMs: Int64?

    public init(mode: Mode, revisionCheckMs: Int64 = 300_000) {
        self.mode = mode
        self.revisionCheckMs = revisionCheckMs
    }

    /// The revision to compact to now, if any; at most once per call site's tick. The caller
    /// proposes it only if it lies beyond what is already compacted.
    public mutating func due(nowMs: Int64, revision: Revision) -> Revision? {
        switch mode {
        case .periodic(let retentionMs):
            // A clock that went backwards invalidates what was sampled by it.
            if let last = samples.last, nowMs < last.atMs { samples = [] }
            if samples.last.map({ nowMs - $0.atMs >= max(1, retentionMs / 10) }) ?? true {
                samples.append(Sample(atMs: nowMs, revision: revision))
            }
            guard let oldEnough = samples.lastIndex(where: { nowMs - $0.atMs >= retentionMs }) else { return nil }
            let target = samples[oldEnough].revision
            samples.removeFirst(oldEnough + 1)
            return target > 0 ? target : nil
        case .revision(let revisions):
            guard let last = lastCheckMs, nowMs >= last else {
                lastCheckMs = nowMs
                return nil
            }
            guard nowMs - last >= revisionCheckMs else { return nil }
            lastCheckMs = nowMs
            let target = revision - revisions
            return target > 0 ? target : nil
        }
    }

    /// Forgets what was sampled (the node stopped leading: the next leader starts afresh).
    public mutating func reset() {
        samples = []
        lastCheckMs = nil
    }
}
