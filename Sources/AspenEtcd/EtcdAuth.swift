import AspenAuth
import AspenCore
import AspenKV
import AspenNode
import Foundation
import GRPCCore
import Synchronization

/// What a call's metadata says, for the methods that serve it.
enum EtcdCallMetadata {
    /// The `token` metadata: an auth session `Authenticate` handed out.
    @TaskLocal static var token: String?
}

/// etcd's auth on the etcd endpoint: `Authenticate` takes a capability credential as the
/// password (any user name) and returns a session token, which etcd clients send in the `token`
/// metadata of every call. Each call is then authorized as a native request is, by the node's
/// `NodeAuth`, and refused with etcd's own errors.
final class EtcdSessions: Sendable {
    struct Session: Sendable {
        let credential: VerifiedCredential
        /// The key the credential is addressed to: `Authenticate` checked the holder's key.
        let holder: PublicKey?
    }

    let auth: NodeAuth?
    let sessionsMax: Int
    private let sessions = Mutex<[String: Session]>([:])

    init(auth: NodeAuth?, sessionsMax: Int) {
        self.auth = auth
        self.sessionsMax = sessionsMax
    }

    static let userEmpty = RPCError(code: .invalidArgument, message: "etcdserver: user name is empty")
    static let invalidToken = RPCError(code: .unauthenticated, message: "etcdserver: invalid auth token")
    static let permissionDenied = RPCError(code: .permissionDenied, message: "etcdserver: permission denied")
    static let authFailed = RPCError(code: .invalidArgument, message: "etcdserver: authentication failed, invalid user ID or password")
    static let notEnabled = RPCError(code: .failedPrecondition, message: "etcdserver: authentication is not enabled")

    var enabled: Bool { auth?.isRequired ?? false }

    /// Trades a credential (the password) for a session token.
    func authenticate(name: String, password: String, nowMs: Int64) throws -> String {
        guard let auth, auth.isRequired else { throw Self.notEnabled }
        guard !name.isEmpty else { throw Self.userEmpty }
        // Nothing on this connection proves a key, so a credential addressed to one must carry it.
        let verified: VerifiedCredential
        let holder: PublicKey?
        do throws(Denial) {
            (verified, holder) = try auth.verifyCarried(password, nowMs: nowMs)
        } catch {
            auth.noteDenial(.denied(error), client: "etcd user \(name)", operation: "Authenticate", nowMs: nowMs)
            throw Self.authFailed
        }
        var generator = SystemRandomNumberGenerator()
        let token = Hex.encode((0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) })
        sessions.withLock { sessions in
            if sessions.count >= sessionsMax {
                sessions = sessions.filter { $0.value.credential.expiresAtMs > nowMs }
                if sessions.count >= sessionsMax, let any = sessions.keys.first { sessions[any] = nil }
            }
            sessions[token] = Session(credential: verified, holder: holder)
        }
        return token
    }

    /// Authorizes the current call (its `token` metadata) for `needed`.
    func authorize(_ needed: Requirement, operation: String, nowMs: Int64) throws {
        guard let auth, auth.isRequired, needed != .nothing else { return }
        guard let token = EtcdCallMetadata.token, !token.isEmpty else { throw Self.userEmpty }
        guard let session = sessions.withLock({ $0[token] }) else { throw Self.invalidToken }
        do {
            try auth.authorize(session.credential, caller: session.holder, needed: needed, nowMs: nowMs)
        } catch {
            auth.noteDenial(error, client: "etcd session", operation: operation, nowMs: nowMs)
            if case .denied(.notPermitted) = error { throw Self.permissionDenied }
            // Expired or revoked: the session is over; the client authenticates again.
            sessions.withLock { _ = $0.removeValue(forKey: token) }
            throw Self.invalidToken
        }
    }
}
