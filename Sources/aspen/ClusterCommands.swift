import AspenAuth
import AspenClient
import AspenNode
import AspenTransport
import AspenCore
import AspenKV
import ArgumentParser
import Foundation

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect and steer the cluster.", subcommands: [
            Status.self, Members.self, Init.self, Ticket.self, AddLearner.self, Promote.self, Remove.self, ChangeMembership.self,
            TransferLeader.self, Snapshot.self, Metrics.self, Hash.self, Defrag.self,
        ])

    struct TransferLeader: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "transfer-leader", abstract: "Hand leadership to another voter.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The node id to lead.") var node: UInt64

        func run() async throws {
            try await runReporting {
                try await cluster.client().transferLeadership(to: NodeID(node))
                output(cluster.json, ["transferTo": node], text: "OK, leadership is moving to \(node)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every member's role, term, commit and applied index.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let client = try await cluster.everyMember()
                let statuses = await client.status()
                await client.close()
                var rows: [[String: Any]] = []
                var lines = ["ID  ADDRESS               ROLE          TERM  COMMIT  APPLIED"]
                var leaderID: UInt64?
                for (endpoint, result) in statuses {
                    let address = "\(endpoint.host):\(endpoint.port)"
                    switch result {
                    case .success(let status):
                        if status.role == "leader" { leaderID = status.id }
                        let role = status.role != "leader" && status.learners.contains(status.id) ? "learner" : status.role
                        rows.append([
                            "id": status.id, "address": address, "role": role, "term": status.term, "commitIndex": status.commitIndex,
                            "appliedIndex": status.appliedIndex,
                        ])
                        lines.append(
                            "\(pad(String(status.id), 3)) \(pad(address, 21)) \(pad(role, 13)) \(pad(String(status.term), 5)) \(pad(String(status.commitIndex), 7)) \(status.appliedIndex)")
                    case .failure(let error):
                        rows.append(["id": endpoint.id?.rawValue ?? 0, "address": address, "error": "\(error)"])
                        lines.append("\(pad(String(endpoint.id?.rawValue ?? 0), 3)) \(pad(address, 21)) unreachable: \(error)")
                    }
                }
                var object: [String: Any] = ["members": rows]
                if let leaderID { object["leaderId"] = leaderID }
                output(cluster.json, object, text: lines.joined(separator: "\n"))
                if statuses.allSatisfy({ if case .failure = $0.status { true } else { false } }) {
                    throw CLIError.unavailable("no member answered")
                }
            }
        }

    }

    struct Hash: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every member's checksum of the key-value state at one revision (etcd's hashkv); exit 2 if they differ.")
        @OptionGroup var cluster: ClusterOptions
        @Option(help: "The revision to hash at (default: the leader's current one).") var revision: Int64 = 0

        func run() async throws {
            try await runReporting {
                let client = try await cluster.everyMember()
                var revision = self.revision
                if revision == 0, let current = await client.stateHashes().compactMap({ try? $0.hash.get().revision }).max() {
                    revision = current
                }
                // A member still applying the revision answers "future revision": ask again briefly.
                var hashes = await client.stateHashes(at: revision)
                for _ in 0..<20 where hashes.contains(where: { (try? $0.hash.get()) == nil }) {
                    try await Task.sleep(for: .milliseconds(100))
                    hashes = await client.stateHashes(at: revision)
                }
                await client.close()
                var rows: [[String: Any]] = []
                var lines = ["ADDRESS               REVISION  COMPACTED  HASH"]
                for (endpoint, result) in hashes {
                    let address = "\(endpoint.host):\(endpoint.port)"
                    switch result {
                    case .success(let state):
                        rows.append(["address": address, "revision": state.revision, "compactedRevision": state.compactedRevision, "hash": state.hash])
                        lines.append("\(pad(address, 21)) \(pad(String(state.revision), 9)) \(pad(String(state.compactedRevision), 10)) \(state.hash)")
                    case .failure(let error):
                        rows.append(["address": address, "error": "\(error)"])
                        lines.append("\(pad(address, 21)) error: \(error)")
                    }
                }
                let distinct = Set(hashes.compactMap { try? $0.hash.get().hash })
                let agree = distinct.count == 1 && hashes.allSatisfy { (try? $0.hash.get()) != nil }
                output(cluster.json, ["revision": revision, "members": rows, "agree": agree], text: lines.joined(separator: "\n"))
                guard distinct.count <= 1 else { throw CLIError.conditionFailed("the members' states differ at revision \(revision)") }
                guard agree else {
                    throw CLIError.unlessRefused(hashes.compactMap { if case .failure(let error) = $0.hash { error } else { nil } }, "not every member answered")
                }
            }
        }
    }

    struct Defrag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite every member's database without its free pages, one member at a time (its writes wait meanwhile).")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let client = try await cluster.everyMember()
                let results = await client.defragment()
                await client.close()
                var rows: [[String: Any]] = []
                var lines: [String] = []
                for (endpoint, result) in results {
                    let address = "\(endpoint.host):\(endpoint.port)"
                    switch result {
                    case .success(let sizes):
                        rows.append(["address": address, "bytesBefore": sizes.before, "bytesAfter": sizes.after])
                        lines.append("OK, \(address): \(sizes.before) → \(sizes.after) bytes")
                    case .failure(let error):
                        rows.append(["address": address, "error": "\(error)"])
                        lines.append("\(address): failed: \(error)")
                    }
                }
                output(cluster.json, ["members": rows], text: lines.joined(separator: "\n"))
                let failures = results.compactMap { if case .failure(let error) = $0.sizes { error } else { nil } }
                if !failures.isEmpty { throw CLIError.unlessRefused(failures, "not every member was defragmented") }
            }
        }
    }

    struct Snapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Have the node (the leader unless --endpoints names another) snapshot its state and compact its log now.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let (index, term, bytes) = try await cluster.client().snapshot()
                output(
                    cluster.json, ["index": index, "term": term, "bytes": bytes],
                    text: "OK, snapshot at index \(index) (term \(term)), \(bytes) bytes; the log before it is compacted")
            }
        }
    }

    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a node's metrics in the Prometheus text format (the leader unless --endpoints names another).")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting { print(try await cluster.client().metrics(), terminator: "") }
        }
    }

    struct Members: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The members with their roles, keys and addresses.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let members = try await cluster.client().members()
                printMembers(members, json: cluster.json)
            }
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Found a one-member cluster on a node that has never been part of one.",
            discussion: """
                Start the node without --bootstrap or --ticket, then point this at it with --endpoints ID=KEY@HOST:PORT.
                With --auth, the cluster trusts --root-key-file's key and requires credentials; the root
                credential (every capability) is printed once, or written to --credential-out.
                """)
        @OptionGroup var cluster: ClusterOptions
        @Flag(help: "Found the cluster with capability-token auth.") var auth = false
        @Option(help: "With --auth: the root key (PEM; aspen token keygen --out root.key makes one).") var rootKeyFile: String?
        @Option(help: "With --auth: write the root credential here (mode 0600) instead of printing it.") var credentialOut: String?
        @Option(help: "With --auth: how long the root credential lives.") var rootLifetime: String = "3650d"

        func run() async throws {
            try await runReporting {
                var rootCredential: Credential?
                if auth {
                    guard let rootKeyFile else { throw CLIError.badInput("--auth needs --root-key-file (aspen token keygen --out root.key makes one)") }
                    do {
                        rootCredential = try TokenIssuer.root(
                            rootKey: try CredentialFiles.readKey(rootKeyFile), holderKey: SigningKey(), capabilities: TokenIssuer.everything,
                            lifetimeMs: try CredentialFiles.lifetime(rootLifetime), nowMs: CredentialFiles.nowMs)
                    } catch let problem as TokenIssuer.Problem {
                        throw CLIError.badInput("\(problem)")
                    }
                } else if rootKeyFile != nil || credentialOut != nil {
                    throw CLIError.badInput("--root-key-file and --credential-out go with --auth")
                }
                let client = try cluster.client(credential: rootCredential)
                let clusterID = try await client.initializeCluster()
                // The new member records itself; wait until it leads and the ticket names it.
                let deadline = Date().addingTimeInterval(Double(cluster.timeoutMs) / 1000)
                while Date() < deadline {
                    if let members = try? await client.members(), !members.records.isEmpty {
                        let ticket = members.ticket.encoded
                        var object: [String: Any] = ["clusterId": hex(clusterID), "ticket": ticket]
                        var text = "OK, cluster \(hex(clusterID)) founded\nexport ASPEN_TICKET=\(ticket)"
                        if let rootCredential {
                            try await client.changeRoots(.add(rootCredential.chain.last!.token.issuer))
                            try await client.setAuthRequired(true)
                            if let credentialOut {
                                try CredentialFiles.writeSecret(rootCredential.text + "\n", to: credentialOut)
                                object["credentialFile"] = credentialOut
                                text += "\nroot credential written to \(credentialOut): export ASPEN_CREDENTIAL_FILE=\(credentialOut)"
                            } else {
                                object["credential"] = rootCredential.text
                                text += "\nroot credential (shown once; keep it secret):\n\(rootCredential.text)"
                            }
                        }
                        output(cluster.json, object, text: text)
                        return
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                throw CLIError.unavailable("the cluster was founded but did not elect its leader in time")
            }
        }
    }

    struct Ticket: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a ticket naming every current member.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let members = try await cluster.client().members()
                guard !members.records.isEmpty else { throw CLIError.unavailable("the cluster has not recorded its members' addresses yet") }
                output(cluster.json, ["ticket": members.ticket.encoded], text: members.ticket.encoded)
            }
        }
    }

    struct AddLearner: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-learner",
            abstract: "Add a running node as a learner (it replicates but does not vote).",
            discussion: "The node must be running and never have been part of a cluster; `aspen-node key` prints its key.")
        @OptionGroup var cluster: ClusterOptions
        @Option(help: "The new member's id.") var nodeId: UInt64
        @Option(help: "The new member's KEYHEX@HOST:PORT.") var addr: String
        @Flag(help: "Promote it to voter once it has caught up.") var voter = false

        func run() async throws {
            try await runReporting {
                let peer: PeerAddress
                do {
                    guard let entry = try PeerList.parse("\(nodeId)=\(addr)")[NodeID(nodeId)] else { throw CLIError.badInput("--addr") }
                    peer = entry
                } catch {
                    throw CLIError.badInput("--addr must be KEYHEX@HOST:PORT: \(error)")
                }
                guard nodeId > 0 else { throw CLIError.badInput("--node-id must be positive") }
                let client = try cluster.client()
                let members = try await client.members()
                // Tell the new node where the members are, so it accepts their Raft traffic.
                let newcomer = try AspenClient(
                    endpoints: [Endpoint(id: NodeID(nodeId), host: peer.host, port: peer.port, key: peer.key)],
                    attemptsMax: max(3, cluster.timeoutMs / 200),
                    cookie: try cluster.clusterCookie)
                try await newcomer.adopt(members)
                await newcomer.close()
                let record = MemberRecord(key: peer.key, host: peer.host, port: peer.port, clusterID: members.clusterID)
                let after = try await client.addMember(NodeID(nodeId), record: record, voter: voter)
                printMembers(after, json: cluster.json)
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a learner a voter once it has caught up.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The learner's id.") var node: UInt64

        func run() async throws {
            try await runReporting { printMembers(try await cluster.client().promote(NodeID(node)), json: cluster.json) }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (voter or learner).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The member's id.") var node: UInt64

        func run() async throws {
            try await runReporting { printMembers(try await cluster.client().removeMember(NodeID(node)), json: cluster.json) }
        }
    }

    struct ChangeMembership: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "change-membership",
            abstract: "Make exactly these members the voters (through joint consensus); voters not named are removed.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The ids of the voters.") var nodes: [UInt64]

        func run() async throws {
            try await runReporting {
                guard !nodes.isEmpty else { throw CLIError.badInput("name at least one voter") }
                printMembers(try await cluster.client().setVoters(nodes.map { NodeID($0) }), json: cluster.json)
            }
        }
    }
}

func printMembers(_ members: ClusterMembers, json: Bool) {
    var rows: [[String: Any]] = []
    var lines = ["ID  ROLE     ADDRESS               KEY"]
    for id in (members.voters + members.learners).sorted() {
        let role = members.voters.contains(id) ? "voter" : "learner"
        let record = members.records[id]
        rows.append(["id": id.rawValue, "role": role, "address": record?.address ?? "", "key": record?.key.hex ?? ""])
        let address = record?.address ?? "(not recorded yet)"
        lines.append(
            String(id.rawValue).padding(toLength: 4, withPad: " ", startingAt: 0) + role.padding(toLength: 9, withPad: " ", startingAt: 0)
                + address.padding(toLength: 22, withPad: " ", startingAt: 0) + (record?.key.hex ?? ""))
    }
    output(json, ["members": rows, "clusterId": hex(members.clusterID)], text: lines.joined(separator: "\n"))
}

func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }

/// `text` padded with spaces to `width` columns (never cut).
func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
