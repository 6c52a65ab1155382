import Foundation

/// When a recurring job fires: a cron expression in one time zone. Five fields (minute, hour,
/// day of month, month, day of week), or six with seconds first; `@yearly`, `@monthly`,
/// `@weekly`, `@daily`, `@hourly` (and `@annually`, `@midnight`). Each field takes `*`, a
/// number or name (JAN–DEC, SUN–SAT; 7 is Sunday too), a range `a-b`, a step `*/n`, `a-b/n` or
/// `a/n` (from a to the field's end), and lists of those. As in Vixie cron, when both the day of
/// the month and the day of the week are restricted (neither starts with `*`), a day matching
/// either fires.
///
/// Fire times are computed from the instant given, never from a clock of its own. Local times a
/// daylight-saving change skips never fire that day; local times it repeats fire once, at the
/// first of the two instants.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let expression: String
    public let timeZone: TimeZone
    let seconds: UInt64
    let minutes: UInt64
    let hours: UInt64
    let daysOfMonth: UInt64
    let months: UInt64
    let daysOfWeek: UInt64
    let daysOfMonthRestricted: Bool
    let daysOfWeekRestricted: Bool

    public var description: String { "\(expression) (\(timeZone.identifier))" }

    static let nicknames: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    /// The longest expression taken, in bytes.
    public static let expressionBytesMax = 256

    public init(_ text: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!) throws(CronError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.utf8.count <= Self.expressionBytesMax else {
            throw CronError("a cron expression of \(trimmed.utf8.count) bytes is longer than \(Self.expressionBytesMax)")
        }
        let expanded: String
        if trimmed.hasPrefix("@") {
            guard let known = Self.nicknames[trimmed.lowercased()] else {
                throw CronError("unknown schedule \(trimmed); known: \(Self.nicknames.keys.sorted().joined(separator: ", "))")
            }
            expanded = known
        } else {
            expanded = trimmed
        }
        var fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 || fields.count == 6 else {
            throw CronError(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), not \(fields.count): \(trimmed)")
        }
        if fields.count == 5 { fields.insert("0", at: 0) }
        expression = trimmed
        self.timeZone = timeZone
        seconds = try Self.parse(fields[0], "second", 0...59)
        minutes = try Self.parse(fields[1], "minute", 0...59)
        hours = try Self.parse(fields[2], "hour", 0...23)
        daysOfMonth = try Self.parse(fields[3], "day-of-month", 1...31)
        months = try Self.parse(fields[4], "month", 1...12, names: Self.monthNames, firstName: 1)
        var week = try Self.parse(fields[5], "day-of-week", 0...7, names: Self.dayNames, firstName: 0)
        if week & (1 << 7) != 0 { week = (week & ~(1 << 7)) | 1 }
        daysOfWeek = week
        daysOfMonthRestricted = !fields[3].hasPrefix("*")
        daysOfWeekRestricted = !fields[5].hasPrefix("*")
        // A day of the month that no month chosen has (the 30th of February) never fires.
        if daysOfMonthRestricted, !daysOfWeekRestricted {
            let monthLengths = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            let chosen = monthLengths.indices.filter { months & (1 << UInt64($0 + 1)) != 0 }.map { monthLengths[$0] }
            let longest: Int = chosen.max() ?? 31
            guard (1...longest).contains(where: { daysOfMonth & (1 << UInt64($0)) != 0 }) else {
                throw CronError("\(trimmed) never fires: none of its months has those days")
            }
        }
    }

    /// One field's values as a bit set.
    static func parse(
        _ field: String, _ name: String, _ range: ClosedRange<Int>, names: [String] = [], firstName: Int = 0
    ) throws(CronError) -> UInt64 {
        func value(_ text: Substring) throws(CronError) -> Int {
            if let number = Int(text) {
                guard range.contains(number) else {
                    throw CronError("\(name) field: \(number) is outside \(range.lowerBound)-\(range.upperBound)")
                }
                return number
            }
            if let index = names.firstIndex(of: text.uppercased()) { return index + firstName }
            throw CronError("\(name) field: '\(text)' is not a number" + (names.isEmpty ? "" : " or a name (\(names.joined(separator: ", ")))"))
        }
        var set: UInt64 = 0
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw CronError("\(name) field: an empty item in '\(field)'") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw CronError("\(name) field: '\(part)' has more than one step") }
            var step = 1
            if pieces.count == 2 {
                guard let given = Int(pieces[1]), given >= 1, given <= range.upperBound else {
                    throw CronError("\(name) field: the step in '\(part)' must be a number from 1 to \(range.upperBound)")
                }
                step = given
            }
            let span = pieces[0]
            var lower: Int
            var upper: Int
            if span == "*" {
                (lower, upper) = (range.lowerBound, range.upperBound)
            } else if let dash = span.firstIndex(of: "-") {
                lower = try value(span[..<dash])
                upper = try value(span[span.index(after: dash)...])
                guard lower <= upper else { throw CronError("\(name) field: the range '\(span)' ends before it starts") }
            } else {
                lower = try value(span)
                upper = pieces.count == 2 ? range.upperBound : lower
            }
            for number in stride(from: lower, through: upper, by: step) { set |= 1 << UInt64(number) }
        }
        return set
    }

    /// The first instant after `after` (to the second) at which the schedule fires, or nil when
    /// there is none within eight years.
    public func nextFire(after: Date) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var time = Date(timeIntervalSince1970: (after.timeIntervalSince1970).rounded(.down) + 1)
        let limit = after.addingTimeInterval(8 * 366 * 86_400)
        func next(_ unit: Calendar.Component) -> Date? { calendar.dateInterval(of: unit, for: time)?.end }
        while time < limit {
            let parts = calendar.dateComponents([.month, .day, .weekday, .hour, .minute, .second], from: time)
            guard let month = parts.month, let day = parts.day, let weekday = parts.weekday, let hour = parts.hour,
                let minute = parts.minute, let second = parts.second
            else { return nil }
            let advanced: Date?
            if months & (1 << UInt64(month)) == 0 {
                advanced = next(.month)
            } else if !dayMatches(day: day, weekday: weekday - 1) {
                advanced = next(.day)
            } else if hours & (1 << UInt64(hour)) == 0 {
                advanced = next(.hour)
            } else if minutes & (1 << UInt64(minute)) == 0 {
                advanced = next(.minute)
            } else if seconds & (1 << UInt64(second)) == 0 {
                advanced = time.addingTimeInterval(1)
            } else {
                // A local time that a daylight-saving change repeats fires at its first instant only.
                var wall = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: time)
                wall.nanosecond = 0
                if let first = calendar.date(from: wall), first < time {
                    advanced = time.addingTimeInterval(1)
                } else {
                    return time
                }
            }
            guard let advanced, advanced > time else { return nil }
            time = advanced
        }
        return nil
    }

    func dayMatches(day: Int, weekday: Int) -> Bool {
        let inMonth = daysOfMonth & (1 << UInt64(day)) != 0
        let inWeek = daysOfWeek & (1 << UInt64(weekday)) != 0
        if daysOfMonthRestricted && daysOfWeekRestricted { return inMonth || inWeek }
        return inMonth && inWeek
    }
}

/// A cron expression that cannot be used, and why.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
