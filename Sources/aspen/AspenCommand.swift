import AspenAuth
import AspenClient
import AspenCoordination
import AspenCore
import AspenKV
import AspenNode
import AspenNodeCommands
import AspenTransport
import ArgumentParser
import Foundation
import Synchronization

@main
struct AspenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen",
        abstract: "Talk to an Aspen cluster, or run one locally.",
        discussion: """
            Point the CLI at a cluster with --ticket (or ASPEN_TICKET), or with --endpoints (or
            ASPEN_ENDPOINTS): ID=KEYHEX@HOST:PORT,... Without either, the CLI uses the cluster
            `aspen dev` runs from the current directory (its ticket is in .aspen-dev/ticket).
            --json may come before the command: aspen --json kv get k.

            Give your credential with --credential-file (or ASPEN_CREDENTIAL_FILE, or its text in
            ASPEN_CREDENTIAL); it too may come before the command.

            Exit codes: 0 ok, 1 not found, 2 condition failed, 3 unavailable, 4 bad input,
            5 outcome unknown, 6 not permitted.
            """,
        subcommands: [
            KV.self, LeaseCommand.self, LockCommand.self, LockSetCommand.self, ReadWriteLockCommand.self, ElectionCommand.self, CounterCommand.self, SequenceCommand.self, QueueCommand.self,
            RateLimitCommand.self, SemaphoreCommand.self, BarrierCommand.self, ServiceCommand.self, Cluster.self, TokenCommand.self,
            AuthCommand.self, BlobCommand.self, JobCommand.self, CronCommand.self, SagaCommand.self, WorkerCommand.self, PublishCommand.self, SubscribeCommand.self, TopicCommand.self, HookCommand.self, RepoCommand.self, IssueCommand.self, PatchCommand.self, SecretsCommand.self, KV2Command.self, PKICommand.self, TransitCommand.self, CICommand.self, GitRemoteHelperCommand.self, Bench.self, Dev.self, NodeGroup.self,
        ])

    /// `aspen --json kv get k` as well as `aspen kv get k --json` (etcdctl's `-w json` and
    /// consul's `-format=json` come first): the flag belongs to the command, so it moves there.
    ///
    /// Every client the command opened is closed before the process exits, so that nodes see
    /// TLS connections end in order rather than cut.
    /// With ASPEN_REPORT_PEAK_RSS set, the command's peak resident memory goes to standard error
    /// when it ends (how the memory bound of blob transfers is measured).
    static func reportPeakMemory() {
        guard ProcessInfo.processInfo.environment["ASPEN_REPORT_PEAK_RSS"] != nil,
            let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return }
        FileHandle.standardError.write(Data("peak resident memory: \(line.dropFirst(6).trimmingCharacters(in: .whitespaces))\n".utf8))
    }

    static func main() async {
        do {
            var command = try parseAsRoot(Self.movingJSONFlag(Array(CommandLine.arguments.dropFirst())))
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
            await OpenClients.closeAll()
            reportPeakMemory()
            exit()
        } catch {
            await OpenClients.closeAll()
            exit(withError: error)
        }
    }

    /// Moves `--json` and `--credential-file FILE` given before the command to its end (before
    /// any `--`), where the command's options are.
    static func movingJSONFlag(_ arguments: [String]) -> [String] {
        var moved = arguments
        var carried: [String] = []
        var end = moved.firstIndex(of: "--") ?? moved.endIndex
        // Only before the first word that is not an option: the command's own come after it.
        var index = 0
        while index < end, moved[index].hasPrefix("-") {
            if moved[index] == "--json" {
                carried.append(moved.remove(at: index))
                end -= 1
            } else if moved[index] == "--credential-file", index + 1 < end {
                carried.append(contentsOf: [moved.remove(at: index), moved.remove(at: index)])
                end -= 2
            } else if moved[index].hasPrefix("--credential-file=") {
                carried.append(moved.remove(at: index))
                end -= 1
            } else {
                index += 1
            }
        }
        if carried.isEmpty, let flag = moved[..<end].firstIndex(of: "--json") {
            // `aspen kv --json get k`: anywhere before `--`.
            moved.remove(at: flag)
            moved.insert("--json", at: end - 1)
            return moved
        }
        moved.insert(contentsOf: carried, at: end)
        return moved
    }
}

/// `aspen node run …` and `aspen node key …`: one binary runs a node, as `aspen-node` does.
struct NodeGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Run one Aspen node (the same as aspen-node).",
        subcommands: [NodeCommands.Run.self, NodeCommands.Key.self, NodeCommands.ForgeHook.self])
}

/// Where `aspen dev` keeps its cluster's ticket, under its default data directory: the CLI
/// finds a dev cluster run from the current directory without an export.
enum DevTicket {
    static let defaultDataDirectory = "./.aspen-dev"
    static func path(in dataDirectory: String) -> String { (dataDirectory as NSString).appendingPathComponent("ticket") }
    /// The root credential `aspen dev --auth` wrote for its cluster.
    static func credentialPath(in dataDirectory: String) -> String { (dataDirectory as NSString).appendingPathComponent("root.cred") }

    static func read() -> String? {
        guard let text = ValueFile.read(path(in: defaultDataDirectory)), !text.isEmpty else { return nil }
        return text
    }
}

/// Options every cluster command takes.
struct ClusterOptions: ParsableArguments {
    @Option(help: "Cluster ticket aspen1... (default: $ASPEN_TICKET).")
    var ticket: String?

    @Option(help: "Cluster endpoints ID=KEYHEX@HOST:PORT,... (default: $ASPEN_ENDPOINTS), when there is no ticket.")
    var endpoints: String?

    @Option(help: "The cluster cookie, when the cluster has one (default: $ASPEN_COOKIE).")
    var cookie: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Option(help: "Give up after this many milliseconds.")
    var timeoutMs: Int = 10_000

    @Option(help: "A file holding the cluster cookie (default: $ASPEN_COOKIE_FILE); keeps it off the command line.")
    var cookieFile: String?

    @Option(help: "Your capability credential (default: $ASPEN_CREDENTIAL_FILE, $ASPEN_CREDENTIAL, or the one aspen dev --auth wrote).")
    var credentialFile: String?

    /// The credential from --credential-file, $ASPEN_CREDENTIAL_FILE, $ASPEN_CREDENTIAL or (when
    /// `dev`: the command talks to the dev cluster run from this directory) the dev cluster's.
    static func credential(file: String?, dev: Bool = true) throws -> Credential? {
        let environment = ProcessInfo.processInfo.environment
        if let path = file ?? environment["ASPEN_CREDENTIAL_FILE"], !path.isEmpty { return try CredentialFiles.read(path) }
        if let text = environment["ASPEN_CREDENTIAL"], !text.isEmpty { return try CredentialFiles.read(text) }
        let devPath = DevTicket.credentialPath(in: DevTicket.defaultDataDirectory)
        if dev, FileManager.default.fileExists(atPath: devPath) { return try CredentialFiles.read(devPath) }
        return nil
    }

    /// The cookie from --cookie, --cookie-file, $ASPEN_COOKIE or $ASPEN_COOKIE_FILE, if any.
    var clusterCookie: ClusterCookie? {
        get throws {
            let environment = ProcessInfo.processInfo.environment
            if let text = cookie ?? (cookieFile == nil ? environment["ASPEN_COOKIE"] : nil), !text.isEmpty { return ClusterCookie(text) }
            guard let path = cookieFile ?? environment["ASPEN_COOKIE_FILE"], !path.isEmpty else { return nil }
            guard let text = ValueFile.read(path) else { throw CLIError.badInput("cannot read the cookie file \(path)") }
            guard !text.isEmpty else { throw CLIError.badInput("the cookie file \(path) is empty") }
            return ClusterCookie(text)
        }
    }

    /// The key this user's connections prove (and signs the issues' changes with): kept in
    /// $ASPEN_IDENTITY_DIR or ~/.aspen, made on first use; a key for this run alone when
    /// neither can be written.
    static func userIdentity() -> NodeIdentity {
        let environment = ProcessInfo.processInfo.environment
        let directory = environment["ASPEN_IDENTITY_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["HOME"].flatMap { $0.isEmpty ? nil : ($0 as NSString).appendingPathComponent(".aspen") }
        guard let directory, let identity = try? NodeIdentity.loadOrCreate(directory: directory) else { return NodeIdentity() }
        return identity
    }

    func client(_ given: [NodeID: PeerAddress]? = nil, credential chosen: Credential? = nil) throws -> AspenClient {
        let environment = ProcessInfo.processInfo.environment
        var peers: [NodeID: PeerAddress] = given ?? [:]
        let explicit = ticket ?? (endpoints == nil ? environment["ASPEN_TICKET"] : nil)
        let devTicket = explicit == nil && endpoints == nil && environment["ASPEN_ENDPOINTS"] == nil ? DevTicket.read() : nil
        if given != nil {
        } else if let text = explicit ?? devTicket, !text.isEmpty {
            do {
                for peer in try ClusterTicket(parsing: text).peers {
                    peers[peer.id] = PeerAddress(host: peer.host, port: peer.port, key: peer.key)
                }
            } catch {
                throw CLIError.badInput("\(error)")
            }
        } else {
            guard let text = endpoints ?? environment["ASPEN_ENDPOINTS"], !text.isEmpty else {
                throw CLIError.badInput("no cluster given: pass --ticket, export ASPEN_TICKET, or run `aspen dev` in this directory")
            }
            do {
                peers = try PeerList.parse(text)
            } catch {
                throw CLIError.badInput("\(error)")
            }
        }
        var options = TransportOptions()
        options.requestTimeoutSeconds = Double(timeoutMs) / 1000
        let attempts = max(3, timeoutMs / 200)
        let credential = try chosen ?? Self.credential(file: credentialFile, dev: devTicket != nil)
        // A credential addressed to a key is accepted over connections that prove that key.
        let identity = credential?.holderKey.map { NodeIdentity(privateKey: $0.privateKey) } ?? Self.userIdentity()
        let client = try AspenClient(
            endpoints: peers.keys.sorted().map { Endpoint(id: $0, host: peers[$0]!.host, port: peers[$0]!.port, key: peers[$0]!.key) },
            identity: identity, options: options, attemptsMax: attempts,
            cookie: try clusterCookie, credential: credential)
        OpenClients.add(client)
        return client
    }

    /// A client to every recorded member, not only the ones the ticket names.
    func everyMember() async throws -> AspenClient {
        let client = try self.client()
        guard let members = try? await client.members(), !members.records.isEmpty else { return client }
        await client.close()
        return try self.client(members.records.mapValues { PeerAddress(host: $0.host, port: $0.port, key: $0.key) })
    }
}

/// The clients a command opened, closed before the process exits.
enum OpenClients {
    private static let clients = Mutex<[AspenClient]>([])

    static func add(_ client: AspenClient) { clients.withLock { $0.append(client) } }

    static func closeAll() async {
        for client in clients.withLock({ $0 }) { await client.close() }
    }
}

/// Errors mapped to exit codes a script can tell apart.
enum CLIError: Error, CustomStringConvertible {
    case notFound(String)
    case conditionFailed(String)
    case unavailable(String)
    case badInput(String)
    /// Refused for want of a credential or capability.
    case notPermitted(String)
    /// The node answered with something this command did not ask for (a version mismatch).
    static let unexpectedAnswer = CLIError.unavailable("the node answered with an unexpected kind of result; is it the same Aspen version?")

    var description: String {
        switch self {
        case .notFound(let text), .conditionFailed(let text), .unavailable(let text), .badInput(let text), .notPermitted(let text): return text
        }
    }

    var exitCode: Int32 {
        switch self {
        case .notFound: return 1
        case .conditionFailed: return 2
        case .unavailable: return 3
        case .badInput: return 4
        case .notPermitted: return 6
        }
    }
}

extension CLIError {
    /// For a command asked of every member: `notPermitted` when each member that failed refused
    /// the credential, `unavailable` otherwise.
    static func unlessRefused(_ failures: [any Error], _ message: String) -> CLIError {
        let refused = failures.allSatisfy { error in
            if case .rejected(let failure) = error as? ClientError { ["unauthorized", "permission_denied"].contains(failure.code) } else { false }
        }
        return refused && !failures.isEmpty ? .notPermitted("\(message): refused") : .unavailable(message)
    }
}

/// Runs a command body, turning every failure into a message on stderr and the right exit code.
func runReporting(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(error.exitCode)
    } catch let error as CoordinationError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        switch error {
        case .held, .staleToken, .notHeld: throw ExitCode(2)
        case .invalidArgument: throw ExitCode(4)
        case .contention: throw ExitCode(3)
        }
    } catch let error as KVError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        let notFound = if case .leaseNotFound = error { true } else { false }
        throw ExitCode(notFound ? 1 : 4)
    } catch let error as ClientError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        // Neither failure nor success: the write may have applied.
        if case .outcomeUnknown = error { throw ExitCode(5) }
        // A node refusing a request it understood (e.g. removing a non-member) is a failed
        // precondition; bad requests are bad input; everything else is unavailability.
        if case .rejected(let failure) = error {
            if failure.code == "refused" { throw ExitCode(2) }
            if ["unauthorized", "permission_denied", "unknown_credential"].contains(failure.code) { throw ExitCode(6) }
            if ["bad_request", "unknown_operation"].contains(failure.code) { throw ExitCode(4) }
        }
        throw ExitCode(3)
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(3)
    }
}

func output(_ json: Bool, _ object: [String: Any], text: String) {
    if json, let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(text)
    }
}

func describe(_ kv: KeyValue) -> [String: Any] {
    [
        "key": String(decoding: kv.key, as: UTF8.self), "value": String(decoding: kv.value, as: UTF8.self),
        "createRevision": kv.createRevision, "modRevision": kv.modRevision, "version": kv.version, "lease": kv.lease,
    ]
}
