/// A client request on `aspen/client/1`: a domain (`kv`, `cluster`, later `lock`, `queue`, …), an
/// operation within it, and the operation's own encoded body.
public struct RPCRequest: Sendable, Equatable {
    public var domain: String
    public var operation: String
    public var body: [UInt8]
    /// Proof that the client knows the cluster cookie (empty when it has none).
    public var proof: [UInt8]
    /// The client's capability credential: the whole chain (never its holder key), or, once
    /// this node has verified it, only its 32-byte id. Empty without one.
    public var credential: [UInt8]

    public init(domain: String, operation: String, body: [UInt8], proof: [UInt8] = [], credential: [UInt8] = []) {
        self.domain = domain
        self.operation = operation
        self.body = body
        self.proof = proof
        self.credential = credential
    }

    /// Version 1 has no credential; version 2 adds it. A request without one is written as
    /// version 1, byte for byte what it was before credentials existed.
    static let version: UInt8 = 1
    static let versionWithCredential: UInt8 = 2

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: body.count + credential.count + 32)
        writer.write(credential.isEmpty ? Self.version : Self.versionWithCredential)
        writer.writeString(domain)
        writer.writeString(operation)
        writer.writeBytes(body)
        writer.writeBytes(proof)
        if !credential.isEmpty { writer.writeBytes(credential) }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version == Self.version || version == Self.versionWithCredential else { throw .invalid("unknown request version") }
        domain = try reader.readString(limit: limits.rpcNameBytesMax)
        operation = try reader.readString(limit: limits.rpcNameBytesMax)
        body = try reader.readBytes(limit: limits.rpcMessageBytesMax)
        proof = try reader.readBytes(limit: limits.rpcProofBytesMax)
        credential = version == Self.versionWithCredential ? try reader.readBytes(limit: limits.credentialBytesMax) : []
        try reader.expectEnd()
    }
}

/// The answer: a body, or an error with a stable code, a message safe to show (never a path or a
/// stack trace), the leader's id when the node is not the leader, and the domain's typed error.
public enum RPCResponse: Sendable, Equatable {
    case ok([UInt8])
    case failure(RPCFailure)

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .ok(let body):
            writer.write(0)
            writer.writeBytes(body)
        case .failure(let failure):
            writer.write(1)
            writer.writeString(failure.code)
            writer.writeString(failure.message)
            writer.writeVarint(failure.leaderHint ?? 0)
            writer.writeBytes(failure.detail)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 0: self = .ok(try reader.readBytes(limit: limits.rpcMessageBytesMax))
        case 1:
            let code = try reader.readString(limit: limits.rpcNameBytesMax)
            let message = try reader.readString(limit: limits.rpcErrorMessageBytesMax)
            let hint = try reader.readVarint()
            let detail = try reader.readBytes(limit: limits.rpcErrorDetailBytesMax)
            self = .failure(RPCFailure(code: code, message: message, leaderHint: hint == 0 ? nil : hint, detail: detail))
        case let tag: throw .unknownTag(tag, context: "response")
        }
        try reader.expectEnd()
    }
}

public struct RPCFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var leaderHint: UInt64?
    public var detail: [UInt8]

    public init(code: String, message: String, leaderHint: UInt64? = nil, detail: [UInt8] = []) {
        self.code = code
        self.message = message
        self.leaderHint = leaderHint
        self.detail = detail
    }

    public var description: String { "\(code): \(message)" }
}
