import Foundation
import SwiftASN1

/// Certificate time: whole seconds since 1970, UTC. Every `now` is cut to the second first, so a
/// date written into a certificate reads back the same (X.509 times have no fractions).
enum PKITime {
    /// The last year X.509 can write (GeneralizedTime has four digits).
    static let yearMax = 9999

    static func seconds(_ date: Date) -> Int64 {
        let value = date.timeIntervalSince1970.rounded(.down)
        guard value.isFinite else { return 0 }
        return Int64(max(min(value, 9.0e15), -9.0e15))
    }

    /// 9999-12-31T23:59:59Z, the last second X.509 can write.
    static let secondsMax: Int64 = 253_402_300_799

    /// 0001-01-01T00:00:00Z, the first second X.509 can write.
    static let secondsMin: Int64 = -62_135_596_800

    static func isWritable(_ seconds: Int64) -> Bool { (secondsMin...secondsMax).contains(seconds) }

    /// Go's duration text for whole seconds ("768h0m0s"), as Vault's warnings print it.
    static func goDuration(_ seconds: Int64) -> String { GoDuration.format(ms: min(seconds, Int64.max / 1000) * 1000) }

    /// `start + seconds` as a date, refused when it passes what X.509 can write.
    static func adding(_ seconds: Int64, to start: Int64) throws(SecretsError) -> Date {
        let (sum, overflow) = start.addingReportingOverflow(seconds)
        guard !overflow, sum <= secondsMax else { throw .badRequest("the ttl reaches past the year \(yearMax)") }
        return date(sum)
    }

    static func date(_ seconds: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(seconds)) }

    static func wholeSeconds(_ date: Date) -> Date { self.date(seconds(date)) }

    /// Whole seconds of a duration (rounded down), refusing a negative one.
    static func seconds(_ duration: Duration, _ field: String) throws(SecretsError) -> Int64 {
        let seconds = duration.components.seconds
        guard seconds >= 0, duration.components.attoseconds >= 0 || seconds > 0 else {
            throw .badRequest("\(field) must not be negative")
        }
        return seconds
    }

    /// The civil date of a moment (Howard Hinnant's days-from-civil, inverted).
    static func civil(_ seconds: Int64) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        let days = Int(seconds.floorDivided(by: 86_400))
        let secondOfDay = Int(seconds - Int64(days) * 86_400)
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day, secondOfDay / 3600, secondOfDay / 60 % 60, secondOfDay % 60)
    }

    static func year(_ date: Date) -> Int { civil(seconds(date)).year }

    /// RFC 3339 in UTC, as Go's `time.RFC3339Nano` prints a whole second: `2030-01-02T03:04:05Z`.
    static func rfc3339(_ date: Date) -> String {
        let time = civil(seconds(date))
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let year = String(time.year)
        return String(repeating: "0", count: max(0, 4 - year.count)) + year + "-\(two(time.month))-\(two(time.day))T"
            + "\(two(time.hour)):\(two(time.minute)):\(two(time.second))Z"
    }

    /// RFC 5280's choice of encoding: UTCTime through 2049, GeneralizedTime from 2050.
    static func serialize(_ date: Date, into coder: inout DER.Serializer) throws {
        let time = civil(seconds(date))
        if (1950...2049).contains(time.year) {
            try coder.serialize(
                UTCTime(year: time.year, month: time.month, day: time.day, hours: time.hour, minutes: time.minute, seconds: time.second))
        } else {
            try coder.serialize(
                GeneralizedTime(
                    year: time.year, month: time.month, day: time.day, hours: time.hour, minutes: time.minute, seconds: time.second,
                    fractionalSeconds: 0))
        }
    }
}

extension Int64 {
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
