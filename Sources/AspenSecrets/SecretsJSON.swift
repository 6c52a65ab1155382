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

    /// JSON of a value built from parsed JSON and plain literals. Keys are not sorted: the
    /// sorted writer compared keys with locale-aware string comparison, a quarter of a node's
    /// CPU under load (measured with perf on a kv-v2 write load).
    public static func encode(_ value: Any) -> Bytes {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]) else { return Array("null".utf8) }
        return Array(data)
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

/// RFC 3339 times with fractional seconds, in UTC, as Vault writes them.
public enum VaultTime {
    public static func format(ms: Int64) -> String {
        let text = Date(timeIntervalSince1970: Double(ms) / 1000).ISO8601Format(.iso8601(timeZone: .gmt, includingFractionalSeconds: true))
        return text.hasSuffix("Z") ? text : text + "Z"
    }
}
