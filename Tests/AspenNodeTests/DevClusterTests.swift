import AspenCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ClusterSuites {
    @Suite("aspen dev as a newcomer uses it", .serialized, .timeLimit(.minutes(3)))
    struct DevClusterTests {
        /// Runs the CLI in `directory` with no ticket, endpoints or cookie in its environment.
        static func aspen(_ arguments: [String], in directory: URL) throws -> (Int32, String, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessCluster.binary("aspen"))
            process.arguments = arguments
            process.currentDirectoryURL = directory
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ASPEN_") }
            let output = Pipe()
            let errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            let problem = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (
                process.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
                String(decoding: problem, as: UTF8.self)
            )
        }

        static func startDev(_ binary: String, in directory: URL) throws -> Process {
            let dev = Process()
            dev.executableURL = URL(fileURLWithPath: binary)
            dev.arguments = ["dev", "--base-port", "\(21_000 + Int.random(in: 0..<400) * 10)"]
            dev.currentDirectoryURL = directory
            dev.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ASPEN_") }
            dev.standardOutput = FileHandle.nullDevice
            dev.standardError = FileHandle.nullDevice
            try dev.run()
            return dev
        }

        static func stop(_ dev: Process) {
            guard dev.isRunning else { return }
            dev.interrupt()
            dev.waitUntilExit()
        }

        static func waitForTicket(in directory: URL, _ dev: Process) async throws {
            let ticketFile = directory.appendingPathComponent(".aspen-dev/ticket")
            let deadline = Date().addingTimeInterval(90)
            while !FileManager.default.fileExists(atPath: ticketFile.path) && Date() < deadline && dev.isRunning {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(FileManager.default.fileExists(atPath: ticketFile.path), "aspen dev wrote no ticket file")
            let mode = try FileManager.default.attributesOfItem(atPath: ticketFile.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }

        @Test("aspen alone runs a dev cluster (its own `aspen node run`), as `swift run aspen dev` gives it: no aspen-node beside it")
        func oneBinary() async throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-one-\(UUID().uuidString)")
            let bin = directory.appendingPathComponent("bin")
            try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let alone = bin.appendingPathComponent("aspen")
            try FileManager.default.copyItem(atPath: ProcessCluster.binary("aspen"), toPath: alone.path)
            #expect(!FileManager.default.fileExists(atPath: bin.appendingPathComponent("aspen-node").path))
            let dev = try Self.startDev(alone.path, in: directory)
            defer { Self.stop(dev) }
            try await Self.waitForTicket(in: directory, dev)
            let put = try Self.aspen(["kv", "put", "one", "binary"], in: directory)
            #expect(put.0 == 0, "\(put.2)")
            #expect(try Self.aspen(["kv", "get", "one"], in: directory).1 == "binary")
        }

        @Test("the CLI finds the cluster aspen dev runs from the same directory, without an export; --json may come first")
        func noExportNeeded() async throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-dev-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            // Before any cluster: a clear error naming the ways to give one.
            let none = try Self.aspen(["kv", "get", "k"], in: directory)
            #expect(none.0 == 4)
            #expect(none.2.contains("run `aspen dev` in this directory"), "\(none.2)")

            let dev = try Self.startDev(ProcessCluster.binary("aspen"), in: directory)
            defer { Self.stop(dev) }
            try await Self.waitForTicket(in: directory, dev)
            let put = try Self.aspen(["kv", "put", "hello", "world"], in: directory)
            #expect(put.0 == 0, "\(put.2)")
            let get = try Self.aspen(["--json", "kv", "get", "hello"], in: directory)
            #expect(get.0 == 0, "\(get.2)")
            #expect(get.1.hasPrefix("{") && get.1.contains("world"), "\(get.1)")
        }
    }
}
