import AspenAuth
import AspenClient
import AspenCore
import AspenTransport
import Logging

/// A node started with `--ticket` asks the cluster to add it, and keeps asking (with backoff)
/// until it is a member or it is stopped.
enum Joiner {
    static func join(
        id: NodeID, record: MemberRecord, ticket: ClusterTicket, asVoter: Bool, node: RaftNode, network: PeerNetwork,
        cookie: ClusterCookie?, credential: Credential?, logger: Logger
    ) async {
        var delayMs = 200
        while !Task.isCancelled {
            do {
                let client = try AspenClient(
                    endpoints: ticket.peers.map { Endpoint(id: $0.id, host: $0.host, port: $0.port, key: $0.key) },
                    identity: credential?.holderKey.map { NodeIdentity(privateKey: $0.privateKey) } ?? NodeIdentity(), attemptsMax: 10,
                    cookie: cookie, credential: credential)
                defer { Task { await client.close() } }
                // Learn every current member's address first: the ticket may predate some of them.
                if let members = try? await client.members() {
                    network.addGiven(
                        members.records.filter { $0.key != id }.mapValues { PeerAddress(host: $0.host, port: $0.port, key: $0.key) })
                }
                logger.info("asking the cluster to add this node", metadata: ["voter": "\(asVoter)"])
                try await client.addMember(id, record: record, voter: asVoter)
                logger.info("joined the cluster", metadata: ["voter": "\(asVoter)"])
                return
            } catch {
                logger.warning("joining failed; retrying", metadata: ["error": "\(error)", "retryInMs": "\(delayMs)"])
            }
            try? await Task.sleep(for: .milliseconds(delayMs))
            delayMs = min(delayMs * 2, 5000)
        }
    }
}
