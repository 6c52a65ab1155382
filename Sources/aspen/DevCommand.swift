import AspenCore
import AspenNode
import AspenTransport
import ArgumentParser
import Foundation

/// `aspen dev`: a local cluster of real `aspen-node` processes on loopback, for trying Aspen.
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local cluster of real aspen-node processes until Ctrl-C.",
        discussion: "Data survives restarts: run it again with the same --data-dir and the cluster comes back with its data.")

    @Option(help: "Number of nodes.") var nodes: Int = 3
    @Option(help: "Where the nodes keep their keys and databases.") var dataDir: String = "./.aspen-dev"
    @Option(help: "Node N listens on 127.0.0.1:(base-port + N).") var basePort: Int = 7100
    @Option(help: "Heartbeat interval of the nodes, in milliseconds.") var heartbeatMs: Int = 50

    func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        guard basePort > 0, basePort + nodes < 65536 else { throw ValidationError("--base-port leaves no room for \(nodes) ports") }
    }

    func run() async throws {
        let nodeBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("aspen-node").path
        guard FileManager.default.isExecutableFile(atPath: nodeBinary) else {
            throw CLIError.badInput("aspen-node not found beside aspen (\(nodeBinary)); build the package first")
        }
        let root = URL(fileURLWithPath: dataDir).standardizedFileURL
        var entries: [String] = []
        for id in 1...nodes {
            let directory = root.appendingPathComponent("n\(id)").path
            let key = try Self.capture(nodeBinary, ["key", "--data-dir", directory]).trimmingCharacters(in: .whitespacesAndNewlines)
            entries.append("\(id)=\(key)@127.0.0.1:\(basePort + id)")
        }
        var processes: [Process] = []
        for id in 1...nodes {
            let peers = entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: nodeBinary)
            process.arguments = [
                "run", "--node-id", "\(id)", "--data-dir", root.appendingPathComponent("n\(id)").path,
                "--listen", "127.0.0.1:\(basePort + id)", "--peers", peers, "--bootstrap", "--heartbeat-ms", "\(heartbeatMs)",
                "--election-ticks", "10", "--log-level", "warning", "--http", "127.0.0.1:\(basePort + 50 + id)",
            ]
            try process.run()
            processes.append(process)
        }
        let endpoints = entries.joined(separator: ",")
        let ticket = try Self.ticket(root: root, entries: entries)
        // Written unbuffered: the line to export must appear while the cluster runs.
        FileHandle.standardOutput.write(Data("""
            Aspen dev cluster: \(nodes) nodes, data in \(root.path)
            export ASPEN_TICKET=\(ticket)
            Admin: http://127.0.0.1:\(basePort + 51)/metrics and /health (node N on port \(basePort + 50) + N)
            Try: aspen kv put hello world && aspen kv get hello   (Ctrl-C stops the cluster)

            """.utf8))
        await waitForTerminationSignal()
        for process in processes where process.isRunning { process.terminate() }
        for process in processes { process.waitUntilExit() }
        FileHandle.standardOutput.write(Data("stopped\n".utf8))
    }

    /// The dev cluster's ticket; its cluster id is made once and kept with the data.
    static func ticket(root: URL, entries: [String]) throws -> String {
        let idFile = root.appendingPathComponent("cluster-id")
        var clusterID = (try? Data(contentsOf: idFile)).map(Array.init) ?? []
        if clusterID.count != 16 {
            clusterID = (0..<16).map { _ in UInt8.random(in: 0...255) }
            try Data(clusterID).write(to: idFile)
        }
        let peers = try PeerList.parse(entries.joined(separator: ","))
        return ClusterTicket(
            clusterID: clusterID,
            peers: peers.keys.sorted().map { ClusterTicket.Peer(id: $0, key: peers[$0]!.key, host: peers[$0]!.host, port: peers[$0]!.port) }
        ).encoded
    }

    static func capture(_ binary: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLIError.unavailable("\(binary) \(arguments.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self)
    }
}
