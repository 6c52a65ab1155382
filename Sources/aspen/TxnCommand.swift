import AspenClient
import AspenCore
import AspenKV
import ArgumentParser
import Foundation

/// `aspen kv txn`: a transaction read from standard input as JSON:
///
///     {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v"}],
///      "success": [{"put": {"key": "k", "value": "v2"}}, {"get": {"key": "k"}}],
///      "failure": [{"delete": {"key": "k", "prefix": false}}]}
///
/// Targets: value, version, create, mod, lease; operators: =, !=, <, >. Numbers for all targets
/// but value.
struct Txn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a transaction read as JSON from standard input (see --help).",
        discussion: """
            {"compare": [{"key": "k", "target": "value|version|create|mod|lease", "op": "=|!=|<|>", "value": "v" or 3,
                          "prefix": false, "rangeEnd": "…"}],
             "success": [{"put": {"key": "k", "value": "v", "lease": 0, "ignoreValue": false, "ignoreLease": false}},
                         {"delete": {"key": "k", "prefix": false}},
                         {"get": {"key": "k", "prefix": false}}, {"txn": {"compare": [...], "success": [...]}}],
             "failure": [...]}
            A compare with "prefix": true or a "rangeEnd" holds when every key of that range passes.
            Exits 2 when the compares do not hold (the failure branch ran).
            """)

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        try await runReporting {
            let input = FileHandle.standardInput.readDataToEndOfFile()
            let transaction = try Self.parse(input)
            let result = try await cluster.client().transaction(transaction)
            let (lines, object) = Self.summarize(result)
            output(cluster.json, object, text: lines.joined(separator: "\n"))
            if !result.succeeded { throw CLIError.conditionFailed("the compares did not hold; the failure branch ran") }
        }
    }

    /// The result as lines (etcdctl's style: SUCCESS or FAILURE, then each operation's) and as
    /// JSON; a nested transaction's come indented.
    static func summarize(_ result: TransactionResult) -> (lines: [String], json: [String: Any]) {
        var lines = [result.succeeded ? "SUCCESS" : "FAILURE"]
        var results: [[String: Any]] = []
        for item in result.results {
            switch item {
            case .put(let put):
                lines.append("put: revision \(put.revision)")
                results.append(["put": ["revision": put.revision]])
            case .delete(let delete):
                lines.append("delete: \(delete.deleted)")
                results.append(["delete": ["deleted": delete.deleted]])
            case .get(let range):
                lines += range.kvs.map { "\(String(decoding: $0.key, as: UTF8.self))\t\(String(decoding: $0.value, as: UTF8.self))" }
                results.append(["get": ["kvs": range.kvs.map(describe), "count": range.count]])
            case .transaction(let nested):
                let (inner, json) = summarize(nested)
                lines += inner.map { "  " + $0 }
                results.append(["txn": json])
            }
        }
        return (lines, ["succeeded": result.succeeded, "revision": result.revision, "results": results])
    }

    static func parse(_ data: Data) throws -> Transaction {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CLIError.badInput("standard input is not a JSON object")
        }
        return try parse(object)
    }

    /// A transaction object; `{"txn": {…}}` in a branch nests one.
    static func parse(_ object: [String: Any]) throws -> Transaction {
        let compares = try (object["compare"] as? [[String: Any]] ?? []).map(compare)
        let success = try (object["success"] as? [[String: Any]] ?? []).map(operation)
        let failure = try (object["failure"] as? [[String: Any]] ?? []).map(operation)
        return Transaction(compares: compares, success: success, failure: failure)
    }

    static func string(_ object: [String: Any], _ field: String) throws -> String {
        guard let value = object[field] as? String else { throw CLIError.badInput("missing string field '\(field)' in \(object)") }
        return value
    }

    static func compare(_ object: [String: Any]) throws -> Compare {
        var compare = try oneKeyCompare(object)
        // Over every key with the prefix, or of [key, rangeEnd): all of them must pass.
        if object["prefix"] as? Bool == true {
            compare.extent = .range(end: KeyBounds.prefixEnd(compare.key))
        } else if let end = object["rangeEnd"] as? String {
            compare.extent = .range(end: Array(end.utf8))
        }
        return compare
    }

    static func oneKeyCompare(_ object: [String: Any]) throws -> Compare {
        let key = Array(try string(object, "key").utf8)
        let operators: [String: Compare.Operator] = ["=": .equal, "==": .equal, "!=": .notEqual, "<": .less, ">": .greater]
        guard let op = operators[(object["op"] as? String) ?? "="] else { throw CLIError.badInput("unknown operator in \(object)") }
        let number = (object["value"] as? NSNumber)?.int64Value
        switch object["target"] as? String ?? "value" {
        case "value": return Compare(key: key, .value(Array(try string(object, "value").utf8)), op)
        case "version", "create", "mod", "lease":
            guard let number else { throw CLIError.badInput("target \(object["target"]!) needs a number value") }
            switch object["target"] as! String {
            case "version": return Compare(key: key, .version(number), op)
            case "create": return Compare(key: key, .createRevision(number), op)
            case "mod": return Compare(key: key, .modRevision(number), op)
            default: return Compare(key: key, .lease(number), op)
            }
        case let other: throw CLIError.badInput("unknown compare target '\(other)'")
        }
    }

    static func operation(_ object: [String: Any]) throws -> TransactionOperation {
        if let put = object["put"] as? [String: Any] {
            return .put(
                AspenKV.Put(
                    key: Array(try string(put, "key").utf8), value: Array(try string(put, "value").utf8),
                    lease: (put["lease"] as? NSNumber)?.int64Value ?? 0, ignoreValue: put["ignoreValue"] as? Bool ?? false,
                    ignoreLease: put["ignoreLease"] as? Bool ?? false))
        }
        if let delete = object["delete"] as? [String: Any] {
            let key = Array(try string(delete, "key").utf8)
            return .delete(Delete((delete["prefix"] as? Bool ?? false) ? .prefix(key) : .key(key)))
        }
        if let get = object["get"] as? [String: Any] {
            let key = Array(try string(get, "key").utf8)
            return .get(RangeRequest((get["prefix"] as? Bool ?? false) ? .prefix(key) : .key(key)))
        }
        if let nested = object["txn"] as? [String: Any] {
            return .transaction(try parse(nested))
        }
        throw CLIError.badInput("an operation is {\"put\": …}, {\"delete\": …}, {\"get\": …} or {\"txn\": …}, not \(object)")
    }
}
