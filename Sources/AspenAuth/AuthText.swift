import AspenCore
import AspenKV
import Foundation

/// Times in denials and `aspen token inspect`: UTC, to the second.
public enum AuthTime {
    public static func format(_ ms: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    /// `2026-12-01T00:00:00Z`, as Unix milliseconds.
    public static func parse(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }

    /// A duration: `90s`, `30m`, `24h`, `7d`, or combinations (`1h30m`); in milliseconds.
    public static func parseDuration(_ text: String) -> Int64? {
        var total: Int64 = 0
        var digits = ""
        for character in text {
            if character.isNumber {
                digits.append(character)
                continue
            }
            guard let value = Int64(digits) else { return nil }
            digits = ""
            let unit: Int64
            switch character {
            case "s": unit = 1_000
            case "m": unit = 60_000
            case "h": unit = 3_600_000
            case "d": unit = 86_400_000
            default: return nil
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: unit)
            guard !overflow else { return nil }
            total += product
        }
        guard digits.isEmpty, total > 0 else { return nil }
        return total
    }
}

/// A key range as a person reads it: a key, the keys under a prefix, or `[start, end)`.
struct KeyBoundsText {
    let bounds: KeyBounds

    init(_ bounds: KeyBounds) { self.bounds = bounds }

    var text: String {
        if let end = bounds.end, end == bounds.start + [0] { return "key '\(Capability.escape(bounds.start))'" }
        if bounds.end == KeyBounds.prefixEnd(bounds.start) {
            return bounds.start.isEmpty ? "every key" : "keys under '\(Capability.escape(bounds.start))'"
        }
        return "keys ['\(Capability.escape(bounds.start))', \(bounds.end.map { "'\(Capability.escape($0))'" } ?? "the end"))"
    }
}
