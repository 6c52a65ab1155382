import AspenCore
import AspenKV
import Foundation

/// JSON in and out of the Vault API: parsing bounded in size and depth (checked before
/// Foundation's parser sees the text), and writing with sorted keys.
public enum SecretsJSON {
    /// The depth of the deepest array or object in `bytes` (strings skipped), or nil as soon as
    /// it passes `limit`. Linear, no recursion.
    public static func depth(of bytes: Bytes, limit: Int) -> Int? {
        var depth = 0
        var deepest = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == 0x5C {
                    escaped = true
                } else if byte == 0x22 {
                    inString = false
                }
                continue
            }
            switch byte {
            case 0x22: inString = true
            case 0x5B, 0x7B:
                depth += 1
                deepest = max(deepest, depth)
                if depth > limit { return nil }
            case 0x5D, 0x7D: depth -= 1
            default: break
            }
        }
        return deepest
    }

    /// Parses a request body: nil for an empty one, an error naming the bound for one too big or
    /// too deep, or not JSON.
    public static func parse(_ bytes: Bytes, limits: Limits) throws(SecretsError) -> Any? {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return nil }
        guard bytes.count <= limits.secretsRequestBytesMax else {
            throw .tooLarge("a request body of \(bytes.count) bytes exceeds secretsRequestBytesMax (\(limits.secretsRequestBytesMax))")
        }
        guard depth(of: bytes, limit: limits.secretJSONDepthMax) != nil else {
            throw .badRequest("the JSON nests deeper than secretJSONDepthMax (\(limits.secretJSONDepthMax))")
        }
        do {
            return try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        } catch {
            throw .badRequest("failed to parse JSON input: \(error.localizedDescription)")
        }
    }

    /// A request body that must be an object (an empty body is an empty object).
    public static func object(_ bytes: Bytes, limits: Limits) throws(SecretsError) -> [String: Any] {
        guard let value = try parse(bytes, limits: limits) else { return [:] }
        guard let object = value as? [String: Any] else { throw .badRequest("the request body must be a JSON object") }
        return object
    }

    /// JSON of a value built from parsed JSON and plain literals, object keys in the order of
    /// their UTF-8 bytes (as Go, and so Vault, writes them). Written here rather than by
    /// Foundation's `JSONSerialization`, which bridged every dictionary to `NSDictionary` and
    /// cast every value dynamically: a tenth of the leader's CPU under a kv-v2 write load
    /// (perf, `benchmarks/secrets.sh`). A value of a type this writer does not know falls back
    /// to Foundation's.
    public static func encode(_ value: Any) -> Bytes {
        var writer = Writer()
        do {
            try writer.write(value)
            return writer.bytes
        } catch {
            guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]) else { return Array("null".utf8) }
            return Array(data)
        }
    }

    struct Unsupported: Error {}

    struct Writer {
        var bytes: Bytes = []

        init() { bytes.reserveCapacity(256) }

        mutating func write(_ value: Any) throws(Unsupported) {
            switch value {
            case let string as String: write(string: string)
            case is NSNull: append("null")
            default:
                // Foundation's numbers first: a parsed `1` would also cast to `Bool`.
                if type(of: value) is NSNumber.Type {
                    try write(number: unsafeDowncast(value as AnyObject, to: NSNumber.self))
                    return
                }
                switch value {
                case let flag as Bool: append(flag ? "true" : "false")
                case let number as Int: append(String(number))
                case let number as Int64: append(String(number))
                case let number as Int32: append(String(number))
                case let number as UInt64: append(String(number))
                case let number as UInt: append(String(number))
                case let number as Double: try write(double: number)
                case let object as [String: Any]:
                    bytes.append(UInt8(ascii: "{"))
                    var first = true
                    for (key, item) in object.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
                        if !first { bytes.append(UInt8(ascii: ",")) }
                        first = false
                        write(string: key)
                        bytes.append(UInt8(ascii: ":"))
                        try write(item)
                    }
                    bytes.append(UInt8(ascii: "}"))
                case let array as [Any]:
                    bytes.append(UInt8(ascii: "["))
                    for (index, item) in array.enumerated() {
                        if index > 0 { bytes.append(UInt8(ascii: ",")) }
                        try write(item)
                    }
                    bytes.append(UInt8(ascii: "]"))
                default: throw Unsupported()
                }
            }
        }

        mutating func append(_ text: String) { bytes.append(contentsOf: text.utf8) }

        mutating func write(number: NSNumber) throws(Unsupported) {
            // Foundation's parser gives a decimal for a number no Int64, UInt64 or Double holds
            // exactly (more than 17 digits): its own text keeps every digit.
            if let decimal = number as? NSDecimalNumber {
                let text = decimal.description
                guard text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-" || $0 == ".") }) else { throw Unsupported() }
                append(text)
                return
            }
            switch number.objCType.pointee {
            // "c": Foundation's booleans (the parser makes no other chars).
            case 0x63: append(number.boolValue ? "true" : "false")
            case 0x64, 0x66: try write(double: number.doubleValue)
            case 0x43, 0x53, 0x49, 0x4C, 0x51: append(String(number.uint64Value))
            default: append(String(number.int64Value))
            }
        }

        mutating func write(double: Double) throws(Unsupported) {
            guard double.isFinite else { throw Unsupported() }
            // Integral values as integers (exact below 2^63), others in the shortest form that
            // reads back as the same double.
            if double == double.rounded(), double >= -0x1p63, double < 0x1p63 {
                append(String(Int64(double)))
            } else {
                append(String(double))
            }
        }

        mutating func write(string: String) {
            bytes.append(UInt8(ascii: "\""))
            for byte in string.utf8 {
                switch byte {
                case UInt8(ascii: "\""): append("\\\"")
                case UInt8(ascii: "\\"): append("\\\\")
                case 0x0A: append("\\n")
                case 0x0D: append("\\r")
                case 0x09: append("\\t")
                case 0x08: append("\\b")
                case 0x0C: append("\\f")
                case 0..<0x20:
                    bytes.append(contentsOf: Array("\\u00".utf8) + Array(Hex.encode([byte]).utf8))
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }

    // MARK: Reading request fields the way Vault does (strings for numbers and booleans too)

    public static func int(_ value: Any?, _ field: String) throws(SecretsError) -> Int64? {
        switch value {
        case nil, is NSNull: return nil
        case let string as String: return try int(string, field)
        case let number as NSNumber:
            let double = number.doubleValue
            guard double.rounded() == double, abs(double) < 9.0e18 else { throw .badRequest("\(field) must be an integer") }
            return number.int64Value
        default: throw .badRequest("\(field) must be an integer")
        }
    }

    static func int(_ string: String, _ field: String) throws(SecretsError) -> Int64? {
        if string.isEmpty { return nil }
        guard let value = Int64(string) else { throw .badRequest("\(field) must be an integer, not '\(string)'") }
        return value
    }

    public static func bool(_ value: Any?, _ field: String) throws(SecretsError) -> Bool? {
        switch value {
        case nil, is NSNull: return nil
        case let string as String:
            switch string.lowercased() {
            case "true", "1", "t": return true
            case "false", "0", "f", "": return false
            default: throw .badRequest("\(field) must be a boolean, not '\(string)'")
            }
        case let number as NSNumber: return number.boolValue
        default: throw .badRequest("\(field) must be a boolean")
        }
    }

    public static func string(_ value: Any?, _ field: String) throws(SecretsError) -> String? {
        switch value {
        case nil, is NSNull: return nil
        case let string as String: return string
        case let number as NSNumber: return number.stringValue
        default: throw .badRequest("\(field) must be a string")
        }
    }

    /// A list of integers given as a JSON array, or a comma-separated string (`"1,2"`).
    public static func ints(_ value: Any?, _ field: String) throws(SecretsError) -> [Int64] {
        switch value {
        case nil, is NSNull: return []
        case let array as [Any]:
            var result: [Int64] = []
            for item in array { if let number = try int(item, field) { result.append(number) } }
            return result
        case let string as String:
            var result: [Int64] = []
            for part in string.split(separator: ",") {
                if let number = try int(part.trimmingCharacters(in: .whitespaces), field) { result.append(number) }
            }
            return result
        default:
            if let number = try int(value, field) { return [number] }
            return []
        }
    }
}

/// Go's duration strings, as Vault reads and writes them ("1h30m", "90s", "300ms"; a bare
/// number is seconds).
public enum GoDuration {
    public static func parseMs(_ value: Any?, _ field: String) throws(SecretsError) -> Int64? {
        switch value {
        case nil, is NSNull: return nil
        case let number as NSNumber: return number.int64Value * 1000
        case let string as String: return try parseMs(string, field)
        default: throw .badRequest("\(field) must be a duration")
        }
    }

    public static func parseMs(_ text: String, _ field: String) throws(SecretsError) -> Int64 {
        let text = text.trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        if let seconds = Int64(text) { return seconds * 1000 }
        let units: [(String, Double)] = [("ns", 1e-6), ("us", 1e-3), ("µs", 1e-3), ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        var total = 0.0
        var rest = Substring(text)
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { throw .badRequest("\(field): '\(text)' is not a duration") }
            rest = rest.dropFirst(number.count)
            guard let unit = units.first(where: { rest.hasPrefix($0.0) }) else { throw .badRequest("\(field): '\(text)' is not a duration") }
            rest = rest.dropFirst(unit.0.count)
            total += value * unit.1
        }
        guard total < 9.0e15 else { throw .badRequest("\(field): '\(text)' is too long a duration") }
        return Int64(total)
    }

    /// Go's format: "0s", "1h30m0s", "1.5s", "300ms".
    public static func format(ms: Int64) -> String {
        if ms == 0 { return "0s" }
        if ms < 1000 { return "\(ms)ms" }
        var result = ""
        let hours = ms / 3_600_000
        let minutes = ms / 60_000 % 60
        let millis = ms % 60_000
        if hours > 0 { result += "\(hours)h" }
        if hours > 0 || minutes > 0 { result += "\(minutes)m" }
        let seconds = millis / 1000
        let fraction = millis % 1000
        if fraction == 0 {
            result += "\(seconds)s"
        } else {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            result += "\(seconds).\(digits)s"
        }
        return result
    }
}

/// RFC 3339 times with fractional seconds, in UTC, as Vault writes them
/// (`2026-12-05T22:46:45.123Z`), from the PKI's civil-date arithmetic. Foundation's ISO 8601
/// style built a formatter on every kv-v2 answer, and rounded `.999` down to `.998`.
public enum VaultTime {
    public static func format(ms: Int64) -> String {
        let seconds = ms.floorDivided(by: 1000)
        let time = PKITime.civil(seconds)
        func pad(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
        }
        return "\(pad(time.year, 4))-\(pad(time.month, 2))-\(pad(time.day, 2))T\(pad(time.hour, 2)):\(pad(time.minute, 2)):"
            + "\(pad(time.second, 2)).\(pad(Int(ms &- seconds &* 1000), 3))Z"
    }
}
