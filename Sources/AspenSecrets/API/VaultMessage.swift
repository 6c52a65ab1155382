import AspenCore
import AspenKV
import Foundation

/// One request to the Vault API, from HTTP or the native protocol (`secrets.call`, which the
/// `aspen` CLI uses): the same router serves both.
public struct VaultRequest: Sendable, Equatable {
    /// Upper case: GET, PUT, POST, PATCH, DELETE, LIST.
    public var method: String
    /// The path after `/v1/`, without a leading or trailing slash.
    public var path: String
    public var query: [String: String]
    public var body: Bytes
    /// `X-Vault-Token`: the caller's Aspen credential, as text.
    public var token: String?

    public init(method: String, path: String, query: [String: String] = [:], body: Bytes = [], token: String? = nil) {
        self.method = method.uppercased()
        self.path = path
        self.query = query
        self.body = body
        self.token = token
    }

    /// Parses an HTTP request target (`/v1/secret/data/a?version=2`).
    public init(method: String, target: String, body: Bytes, token: String?) throws(SecretsError) {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        guard var path = parts.first.map(String.init), path.hasPrefix("/v1/") else {
            throw .notFound("no handler for route '\(target)': the API lives under /v1/")
        }
        path.removeFirst(4)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let item = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(item[0]).removingPercentEncoding ?? String(item[0])
                let value = item.count == 2 ? (String(item[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(item[1])) : ""
                query[name] = value
            }
        }
        self.init(method: method, path: path.removingPercentEncoding ?? path, query: query, body: body, token: token)
    }

    static let codecVersion: UInt8 = 1

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.write(Self.codecVersion)
        writer.writeString(method)
        writer.writeString(path)
        writer.writeVarint(UInt64(query.count))
        for (name, value) in query.sorted(by: { $0.key < $1.key }) {
            writer.writeString(name)
            writer.writeString(value)
        }
        writer.writeBytes(body)
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw SecretsError.badRequest("a secrets request of an unknown version") }
            method = try reader.readString(limit: 16)
            path = try reader.readString(limit: limits.secretsMountPathBytesMax + limits.secretPathBytesMax + 64)
            let count = try reader.readCount(limit: 32)
            query = [:]
            for _ in 0..<count {
                let name = try reader.readString(limit: 64)
                query[name] = try reader.readString(limit: 1024)
            }
            body = try reader.readBytes(limit: limits.secretsRequestBytesMax)
            token = nil
            try reader.expectEnd()
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .badRequest("an undecodable secrets request: \(error)")
        }
    }
}

/// The answer: an HTTP status and a body, JSON but for the PKI's raw certificates and CRLs
/// (empty for 204).
public struct VaultResponse: Sendable, Equatable {
    public var status: Int
    public var body: Bytes
    public var contentType: String

    public init(status: Int, body: Bytes, contentType: String = "application/json") {
        self.status = status
        self.body = body
        self.contentType = contentType
    }

    public static let noContent = VaultResponse(status: 204, body: [])

    /// Vault's envelope around `data`, written around the data's own JSON.
    public static func data(_ data: Any, warnings: [String]? = nil) -> VaultResponse {
        var body = Array(#"{"request_id":""#.utf8) + SecureRandom.uuid()
        body += Array(#"","lease_id":"","renewable":false,"lease_duration":0,"data":"#.utf8)
        body += SecretsJSON.encode(data)
        body += Array(#","wrap_info":null,"warnings":"#.utf8)
        body += warnings.map { SecretsJSON.encode($0) } ?? Array("null".utf8)
        body += Array(#","auth":null,"mount_type":""}"#.utf8)
        return VaultResponse(status: 200, body: body)
    }

    public static func error(_ error: SecretsError) -> VaultResponse {
        VaultResponse(status: error.status, body: SecretsJSON.encode(["errors": [error.message]]))
    }

    /// A 404 with no message, as Vault answers a path with nothing at it.
    public static let notFound = VaultResponse(status: 404, body: SecretsJSON.encode(["errors": [String]()]))

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.writeVarint(UInt64(status))
        writer.writeBytes(body)
        writer.writeString(contentType)
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            status = Int(try reader.readVarint())
            body = try reader.readBytes(limit: limits.secretsRequestBytesMax * 2)
            contentType = try reader.readString(limit: 128)
            try reader.expectEnd()
        } catch {
            throw .internalError("an undecodable secrets answer: \(error)")
        }
    }

    /// The error messages of a failed answer.
    public var errors: [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return [] }
        return object["errors"] as? [String] ?? []
    }
}
