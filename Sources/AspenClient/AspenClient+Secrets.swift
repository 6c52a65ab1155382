import AspenCore
import AspenSecrets

extension AspenClient {
    /// Sends one Vault API request (`aspen secrets`, `aspen kv2`, …) to a node, which answers it
    /// as its HTTP endpoint would. Reads are retried on another node; a change whose answer was
    /// lost is not sent again (the caller is told the outcome is unknown).
    public func secrets(_ request: VaultRequest) async throws -> VaultResponse {
        let repeatable = request.method == "GET" || request.method == "LIST" || request.method == "HEAD"
        let body = try await call("secrets", "call", request.encoded(), repeatable: repeatable)
        do {
            return try VaultResponse(decoding: body, limits: options.limits)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }

    /// A voter's key share of the seal's epoch (node to node; see the node's `SecretsSeal`).
    public func secretsShare(epoch: UInt64) async throws -> [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(epoch)
        return try await call("secrets", "share", writer.bytes, repeatable: true)
    }

    /// Asks a voter to seal a new key share under its own key; returns the envelope.
    public func secretsSealShare(epoch: UInt64, share: [UInt8]) async throws -> [UInt8] {
        var writer = ByteWriter()
        writer.writeVarint(epoch)
        writer.writeBytes(share)
        return try await call("secrets", "seal-share", writer.bytes, repeatable: true)
    }
}
