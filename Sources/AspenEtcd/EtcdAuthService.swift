import AspenAuth
import AspenCore
import AspenKV
import AspenNode
import GRPCCore

/// etcd's `Auth` service, over capability tokens: `Authenticate` takes a credential as the
/// password (the user name is only noted) and returns a session token for the `token`
/// metadata; `AuthStatus` says whether the node requires credentials; `AuthEnable` and
/// `AuthDisable` record the cluster's mode (nodes started with `--auth auto` follow it; a
/// node started with `--auth required` or `off` keeps its own). Users and roles are not
/// served: the endpoint answers them Unimplemented, pointing at `aspen token`.
struct EtcdAuthService: Etcdserverpb_Auth.SimpleServiceProtocol {
    let gateway: EtcdGateway

    func authenticate(request: Etcdserverpb_AuthenticateRequest, context: ServerContext) async throws -> Etcdserverpb_AuthenticateResponse {
        var response = Etcdserverpb_AuthenticateResponse()
        response.token = try gateway.sessions.authenticate(name: request.name, password: request.password, nowMs: gateway.node.nowMs())
        response.header = await gateway.header()
        return response
    }

    func authStatus(request: Etcdserverpb_AuthStatusRequest, context: ServerContext) async throws -> Etcdserverpb_AuthStatusResponse {
        var response = Etcdserverpb_AuthStatusResponse()
        response.enabled = gateway.sessions.enabled
        response.header = await gateway.header()
        return response
    }

    func authEnable(request: Etcdserverpb_AuthEnableRequest, context: ServerContext) async throws -> Etcdserverpb_AuthEnableResponse {
        try await setRequired(true, context)
        var response = Etcdserverpb_AuthEnableResponse()
        response.header = await gateway.header()
        return response
    }

    func authDisable(request: Etcdserverpb_AuthDisableRequest, context: ServerContext) async throws -> Etcdserverpb_AuthDisableResponse {
        try await setRequired(false, context)
        var response = Etcdserverpb_AuthDisableResponse()
        response.header = await gateway.header()
        return response
    }

    private func setRequired(_ required: Bool, _ context: ServerContext) async throws {
        try gateway.authorizeAdministrative(context, required ? "auth enable" : "auth disable")
        if required, !(gateway.sessions.auth?.hasRoots ?? false) {
            throw RPCError(
                code: .failedPrecondition,
                message: "etcdserver: the cluster trusts no root key: add one first (aspen auth root add KEYHEX), or every request would be refused")
        }
        try await gateway.translatingErrors {
            try await gateway.onLeader(
                { try await gateway.node.writeSystem(NodeAuth.Records.requiring(required)) },
                remote: { try await $0.setAuthRequired(required) })
        }
    }
}
