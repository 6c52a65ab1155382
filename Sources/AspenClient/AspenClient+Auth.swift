import AspenAuth
import AspenCore

// Capability-token auth: the cluster's trust state, roots and revocations (`cluster.auth-*`).
extension AspenClient {
    /// Whether the answering node requires credentials, the roots it trusts, what is revoked.
    public func authStatus() async throws -> AuthWire.Status {
        try AuthWire.Status(decoding: try await call("cluster", "auth-status", []))
    }

    /// Adds or removes a trusted root; returns once the leader has applied the change.
    public func changeRoots(_ change: AuthWire.RootChange) async throws {
        let repeatable = if case .add = change { true } else { false }
        _ = try await call("cluster", "auth-roots", change.encoded, repeatable: repeatable)
    }

    /// Revokes a token (and every token delegated from it), or everything an issuer issued
    /// before a time; returns once the leader has applied it.
    public func revoke(_ revocation: AuthWire.Revocation) async throws {
        _ = try await call("cluster", "auth-revoke", revocation.encoded)
    }

    /// Records (or removes) that the cluster requires credentials: nodes in `auto` mode follow.
    public func setAuthRequired(_ required: Bool) async throws {
        var writer = ByteWriter()
        writer.write(required)
        _ = try await call("cluster", "auth-require", writer.bytes)
    }
}
