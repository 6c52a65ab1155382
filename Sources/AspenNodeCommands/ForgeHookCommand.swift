import AspenCore
import AspenForge
import AspenTransport
import ArgumentParser
import Foundation

extension NodeCommands {
    /// git's pre-receive hook in a forge cache repository: hands the push (its ref updates and
    /// the quarantined pack) to the node that runs receive-pack, which commits it to the cluster
    /// or refuses it. Not for people: the node writes the hook that runs it.
    public struct ForgeHook: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "forge-hook", abstract: "The forge's receive hook (run by git in a node's cache repository).", shouldDisplay: false)
        @Argument(help: "The hook git runs this as.") var hook: String = "pre-receive"
        public init() {}

        public func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            guard let token = environment["ASPEN_FORGE_TOKEN"], let address = environment["ASPEN_FORGE_ADDRESS"],
                let keyText = environment["ASPEN_FORGE_KEY"], let key = NodeKey(hex: keyText), let dataDirectory = environment["ASPEN_FORGE_DATA_DIR"]
            else {
                FileHandle.standardError.write(Data("aspen: this repository takes pushes only through its Aspen node\n".utf8))
                throw ExitCode(1)
            }
            var updates: [RefUpdate] = []
            while let line = readLine() {
                let parts = line.split(separator: " ")
                guard parts.count == 3 else { continue }
                updates.append(RefUpdate(old: String(parts[0]), new: String(parts[1]), name: String(parts[2])))
            }
            guard updates.count <= Limits.standard.forgeRefUpdatesMax else {
                FileHandle.standardError.write(
                    Data("aspen: a push of \(updates.count) refs exceeds forgeRefUpdatesMax (\(Limits.standard.forgeRefUpdatesMax)); push fewer refs at a time\n".utf8))
                throw ExitCode(1)
            }
            let count = Int(environment["GIT_PUSH_OPTION_COUNT"] ?? "") ?? 0
            let options = (0..<min(count, 64)).compactMap { environment["GIT_PUSH_OPTION_\($0)"] }
            let request = ForgeHookRequest(
                token: token, quarantine: environment["GIT_QUARANTINE_PATH"] ?? "", updates: updates, pushOptions: options)
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { throw ExitCode(1) }
            let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            let answer: ForgeHookAnswer
            do {
                let identity = try NodeIdentity.loadOrCreate(directory: dataDirectory)
                let connection = try await TransportConnection.connect(
                    host: host, port: port, protocol: AspenProtocol.gitHook, tls: try TLSMaterial(identity: identity), expecting: key)
                defer { Task { await connection.close() } }
                // A large pack is stored with its copies before the answer: allow it time.
                answer = try ForgeHookAnswer(decoding: try await connection.request(request.encoded, extraSeconds: 3600))
            } catch {
                FileHandle.standardError.write(Data("aspen: the node could not take the push: \(error)\n".utf8))
                throw ExitCode(1)
            }
            if !answer.message.isEmpty { FileHandle.standardError.write(Data("aspen: \(answer.message)\n".utf8)) }
            if !answer.accepted { throw ExitCode(1) }
        }
    }
}
