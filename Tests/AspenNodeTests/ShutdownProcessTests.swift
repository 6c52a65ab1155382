import AspenClient
import AspenCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ClusterSuites {
    @Suite("Stopping real aspen-node processes", .serialized, .timeLimit(.minutes(3)))
    struct ShutdownProcessTests {
        /// Ctrl-C on `aspen dev` interrupts every node at once; the leader may go a little before
        /// the others. Each node must stop cleanly: exit 0, and nothing scheduled on its event loop
        /// once that loop has stopped (SwiftNIO prints "Cannot schedule tasks…", and with
        /// SWIFTNIO_STRICT set, as here, crashes instead: a late close can no longer slip by).
        @Test("SIGINT stops every node of a cluster (etcd endpoint and admin HTTP on) with exit 0 and no error")
        func interruptStopsCleanly() async throws {
            for round in 1...3 {
                let cluster = try ProcessCluster(nodes: 3)
                let outputs = (1...3).map { cluster.directory.appendingPathComponent("output-\($0).txt") }
                try FileManager.default.createDirectory(at: cluster.directory, withIntermediateDirectories: true)
                for id in 1...3 {
                    let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                    try cluster.start(
                        id,
                        arguments: [
                            "--peers", peers, "--bootstrap", "--http", "127.0.0.1:\(cluster.basePort + 50 + id)", "--etcd-listen",
                            "127.0.0.1:\(cluster.basePort + 30 + id)",
                        ], environment: ["SWIFTNIO_STRICT": "1"], output: outputs[id - 1])
                }
                let leader = try await cluster.leader()
                let client = try cluster.client()
                for number in 0..<10 { try await client.put(Array("k\(number)".utf8), [UInt8(number)]) }
                await client.close()
                // The leader first, then the rest once the others have noticed.
                cluster.processes[leader]!.interrupt()
                try await Task.sleep(for: .milliseconds(400))
                for (id, process) in cluster.processes where id != leader { process.interrupt() }
                for (id, process) in cluster.processes.sorted(by: { $0.key < $1.key }) {
                    let deadline = Date().addingTimeInterval(30)
                    while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
                    #expect(!process.isRunning, "round \(round): node \(id) did not stop within 30 s of SIGINT")
                    guard !process.isRunning else { continue }
                    let output = (try? String(contentsOf: outputs[id - 1], encoding: .utf8)) ?? ""
                    let problems = output.split(separator: "\n").filter {
                        $0.contains("Cannot schedule tasks") || $0.contains("ERROR") || $0.contains("Fatal error")
                    }
                    #expect(
                        process.terminationReason == .exit && process.terminationStatus == 0 && problems.isEmpty,
                        "round \(round): node \(id) (leader \(leader)) ended with \(process.terminationReason == .exit ? "exit" : "signal") \(process.terminationStatus): \(problems.prefix(5).joined(separator: "\n"))"
                    )
                }
            }
        }
    }
}
