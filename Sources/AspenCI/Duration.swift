/// Durations as a pipeline file writes them: `30s`, `20m`, `2h`, or parts of those in
/// descending order (`1h30m`). A bare number is refused: `timeout: 30` could mean seconds or
/// minutes, and a job killed 29 minutes early is a poor way to find out which.
enum CIDuration {
    static let units: [(suffix: Character, ms: Int64)] = [("h", 3_600_000), ("m", 60_000), ("s", 1000)]

    /// Milliseconds, or nil if `text` is not a duration of this form. Each number has at most
    /// 9 digits, so the sum cannot overflow.
    static func parseMs(_ text: String) -> Int64? {
        var rest = Substring(text)
        var nextUnit = 0
        var totalMs: Int64 = 0
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 9, let number = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            guard let suffix = rest.first,
                let unit = units.indices.first(where: { $0 >= nextUnit && units[$0].suffix == suffix })
            else { return nil }
            rest = rest.dropFirst()
            nextUnit = unit + 1
            totalMs += number * units[unit].ms
        }
        return text.isEmpty ? nil : totalMs
    }
}
