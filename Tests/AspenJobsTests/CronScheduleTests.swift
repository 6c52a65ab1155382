import AspenJobs
import Foundation
import Testing

@Suite("Cron schedules")
struct CronScheduleTests {
    static let utc = TimeZone(identifier: "UTC")!

    /// An instant from a UTC wall time.
    static func at(_ text: String, in zone: TimeZone = utc) -> Date {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = zone
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.date(from: text)!
    }

    static func fires(_ expression: String, after start: String, count: Int, in zone: TimeZone = utc) throws -> [String] {
        let schedule = try CronSchedule(expression, timeZone: zone)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = zone
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var time = at(start, in: zone)
        var out: [String] = []
        for _ in 0..<count {
            guard let next = schedule.nextFire(after: time) else { break }
            out.append(formatter.string(from: next))
            time = next
        }
        return out
    }

    @Test("next fire times of minute-form, seconds-form and named schedules")
    func table() throws {
        #expect(try Self.fires("*/5 * * * *", after: "2026-12-05 10:03:20", count: 3)
            == ["2026-12-05 10:05:00", "2026-12-05 10:10:00", "2026-12-05 10:15:00"])
        #expect(try Self.fires("*/10 * * * * *", after: "2026-12-05 10:00:55", count: 3)
            == ["2026-12-05 10:01:00", "2026-12-05 10:01:10", "2026-12-05 10:01:20"])
        #expect(try Self.fires("30 2 * * MON-FRI", after: "2026-12-04 03:00:00", count: 2)  // a Friday
            == ["2026-12-07 02:30:00", "2026-12-08 02:30:00"])
        #expect(try Self.fires("0 0 29 FEB *", after: "2026-01-01 00:00:00", count: 2) == ["2028-02-29 00:00:00", "2032-02-29 00:00:00"])
        #expect(try Self.fires("@hourly", after: "2026-12-31 23:59:59", count: 1) == ["2027-01-01 00:00:00"])
        #expect(try Self.fires("@weekly", after: "2026-12-05 00:00:00", count: 1) == ["2026-12-06 00:00:00"])
        #expect(try Self.fires("0 12 * * 7", after: "2026-12-05 00:00:00", count: 1) == ["2026-12-06 12:00:00"])
        #expect(try Self.fires("15,45 8-9 * * *", after: "2026-12-05 08:20:00", count: 3)
            == ["2026-12-05 08:45:00", "2026-12-05 09:15:00", "2026-12-05 09:45:00"])
        #expect(try Self.fires("0 0 5/10 * *", after: "2026-12-05 00:00:00", count: 3)
            == ["2026-12-15 00:00:00", "2026-12-25 00:00:00", "2027-01-05 00:00:00"])
        // Day of month and day of week both restricted: either fires (the 13th, and every Friday).
        #expect(try Self.fires("0 0 13 * FRI", after: "2026-12-05 00:00:00", count: 3)
            == ["2026-12-11 00:00:00", "2026-12-13 00:00:00", "2026-12-18 00:00:00"])
        // The next fire is strictly after the instant given, even on a fire time.
        #expect(try Self.fires("0 * * * *", after: "2026-12-05 10:00:00", count: 1) == ["2026-12-05 11:00:00"])
    }

    @Test("a daylight-saving change: a skipped local time does not fire that day, a repeated one fires once")
    func daylightSaving() throws {
        let newYork = try #require(TimeZone(identifier: "America/New_York"))
        // 2026-03-08: 02:00 jumps to 03:00.
        #expect(try Self.fires("30 2 * * *", after: "2026-03-07 12:00:00", count: 2, in: newYork)
            == ["2026-03-09 02:30:00", "2026-03-10 02:30:00"])
        // 2026-11-01: 01:00-02:00 happens twice. One fire, the first; the next day as usual.
        let schedule = try CronSchedule("30 1 * * *", timeZone: newYork)
        let first = try #require(schedule.nextFire(after: Self.at("2026-11-01 00:00:00", in: newYork)))
        #expect(first.timeIntervalSince1970 == Self.at("2026-11-01 05:30:00").timeIntervalSince1970)
        let second = try #require(schedule.nextFire(after: first))
        #expect(second.timeIntervalSince1970 == Self.at("2026-11-02 06:30:00").timeIntervalSince1970)
        // Every 30 minutes through the repeated hour: 01:00 and 01:30 once each.
        let times = try Self.fires("0,30 * * * *", after: "2026-11-01 00:10:00", count: 6, in: newYork)
        #expect(times == ["2026-11-01 00:30:00", "2026-11-01 01:00:00", "2026-11-01 01:30:00", "2026-11-01 02:00:00", "2026-11-01 02:30:00", "2026-11-01 03:00:00"])
    }

    @Test("bad expressions are refused, naming the field and the problem")
    func refusals() {
        let cases: [(String, String)] = [
            ("* * * *", "5 fields"), ("61 * * * *", "minute field: 61 is outside 0-59"), ("* 24 * * *", "hour field: 24"),
            ("* * 0 * *", "day-of-month field: 0"), ("* * * 13 *", "month field: 13"), ("* * * * 8", "day-of-week field: 8"),
            ("* * * FOO *", "'FOO' is not a number or a name"), ("*/0 * * * *", "step"), ("5-1 * * * *", "ends before it starts"),
            ("1,,2 * * * *", "empty item"), ("0 0 30 2 *", "never fires"), ("@reboot", "unknown schedule"),
            ("*/5/2 * * * *", "more than one step"), (String(repeating: "1,", count: 200) + "1 * * * *", "longer than 256"),
        ]
        for (expression, reason) in cases {
            do {
                _ = try CronSchedule(expression)
                Issue.record("\(expression) was accepted")
            } catch {
                #expect(error.description.contains(reason), "\(expression): \(error)")
            }
        }
    }
}

@Suite("Subjects")
struct SubjectTests {
    @Test("NATS wildcards: '*' is one token, '>' one or more trailing tokens")
    func wildcardTable() throws {
        let subjects = ["orders", "orders.created", "orders.us.created", "orders.us.created.late", "billing.created"]
        let table: [(String, [Bool])] = [
            ("orders", [true, false, false, false, false]),
            ("orders.*", [false, true, false, false, false]),
            ("orders.>", [false, true, true, true, false]),
            (">", [true, true, true, true, true]),
            ("*", [true, false, false, false, false]),
            ("orders.*.created", [false, false, true, false, false]),
            ("*.created", [false, true, false, false, true]),
            ("orders.*.>", [false, false, true, true, false]),
            ("orders.created", [false, true, false, false, false]),
        ]
        for (pattern, expected) in table {
            let compiled = try SubjectPattern(pattern)
            #expect(subjects.map { compiled.matches($0) } == expected, "\(pattern)")
        }
    }

    @Test("invalid subjects and patterns are refused with the reason")
    func refusals() {
        let patterns: [(String, String)] = [
            ("", "empty"), ("orders.", "empty token"), (".orders", "empty token"), ("orders..created", "empty token"),
            ("orders.>.created", "'>' may only be the last token"), ("orders.cre*", "whole tokens"), ("orders.a b", "whitespace"),
            (String(repeating: "a", count: 256), "subjectBytesMax (255)"), (Array(repeating: "a", count: 33).joined(separator: "."), "subjectTokensMax (32)"),
        ]
        for (pattern, reason) in patterns {
            do {
                _ = try SubjectPattern(pattern)
                Issue.record("pattern '\(pattern)' was accepted")
            } catch {
                #expect(error.description.contains(reason), "\(pattern): \(error)")
            }
        }
        for subject in ["orders.*", "orders.>", ">"] {
            #expect(throws: SubjectError.self) { try SubjectPattern.validate(subject: subject) }
        }
        #expect(throws: Never.self) { try SubjectPattern.validate(subject: "orders.eu.created") }
    }
}
