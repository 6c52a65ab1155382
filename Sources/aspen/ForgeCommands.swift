import AspenClient
import AspenCore
import AspenForge
import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Forge refusals as the CLI reports them.
func runForge(_ body: () async throws -> Void) async throws {
    try await runReporting {
        do {
            try await body()
        } catch let error as ForgeError {
            switch error {
            case .notFound(let text): throw CLIError.notFound(text)
            case .exists(let text), .conflict(let text): throw CLIError.conditionFailed(text)
            case .badInput(let text): throw CLIError.badInput(text)
            case .unavailable(let text), .failed(let text): throw CLIError.unavailable(text)
            }
        }
    }
}

func describe(_ record: RepoRecord) -> [String: Any] {
    [
        "name": record.name, "description": record.description, "defaultBranch": record.defaultBranch, "createdMs": record.createdMs,
        "maintainers": record.maintainers,
    ]
}

/// `aspen repo …`: the forge's repositories.
struct RepoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repo", abstract: "Git repositories hosted by the cluster (push and clone them with git and aspen:// URLs).",
        discussion: """
            git push aspen://NAME main and git clone aspen://NAME use git-remote-aspen (installed beside
            aspen), with the cluster from ASPEN_TICKET, ASPEN_ENDPOINTS or the dev cluster; or name the
            cluster in the URL: aspen://TICKET/NAME.
            """,
        subcommands: [Create.self, List.self, Show.self, Refs.self, Packs.self, Repack.self, Protect.self, Unprotect.self, Protections.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an empty repository.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The repository's name (letters, digits, . _ - and / between segments).") var name: String
        @Option(help: "A one-line description.") var description: String = ""
        @Option(help: "The branch HEAD names.") var defaultBranch: String = "main"
        @Option(help: "Another maintainer's public key (hex); you are one. Repeat for several.") var maintainer: [String] = []

        func run() async throws {
            try await runForge {
                let record = RepoRecord(name: name, description: description, defaultBranch: defaultBranch, maintainers: maintainer)
                try record.validate()
                _ = try await cluster.client().forge(.create(record))
                output(cluster.json, ["created": name], text: "created \(name): git push aspen://\(name) \(defaultBranch)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the repositories (those whose names start with PREFIX).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Only names starting with this (what a credential scoped to team/ may list).") var prefix: String = ""

        func run() async throws {
            try await runForge {
                guard case .repos(let records) = try await cluster.client().forge(.list(prefix: prefix)) else { throw CLIError.unexpectedAnswer }
                if cluster.json {
                    output(true, ["repos": records.map(describe)], text: "")
                } else {
                    for record in records { print(record.description.isEmpty ? record.name : "\(record.name)\t\(record.description)") }
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a repository's record.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                guard case .repos(let records) = try await cluster.client().forge(.show(name)), let record = records.first else {
                    throw CLIError.unexpectedAnswer
                }
                output(
                    cluster.json, describe(record),
                    text: "\(record.name)\n  description: \(record.description)\n  default branch: \(record.defaultBranch)\n  maintainers: \(record.maintainers.joined(separator: ", "))")
            }
        }
    }

    struct Refs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a repository's refs as the cluster holds them (like git ls-remote).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                guard case .refs(let refs) = try await cluster.client().forge(.refs(name)) else { throw CLIError.unexpectedAnswer }
                if cluster.json {
                    output(true, ["refs": Dictionary(uniqueKeysWithValues: refs.map { ($0.name, $0.id) })], text: "")
                } else {
                    for ref in refs { print("\(ref.id)\t\(ref.name)") }
                }
            }
        }
    }

    struct Packs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a repository's packs (retired ones were replaced by a repack and are kept for a grace period).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                guard case .packs(let packs) = try await cluster.client().forge(.packs(name)) else { throw CLIError.unexpectedAnswer }
                if cluster.json {
                    output(true, ["packs": packs.map { ["name": $0.name, "size": $0.size, "hash": $0.hash, "retired": $0.retired] }], text: "")
                } else {
                    for pack in packs { print("\(pack.name)\t\(pack.size)\t\(pack.hash)\(pack.retired ? "\tretired" : "")") }
                }
            }
        }
    }

    struct Repack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Repack a repository's packs into one now (the leader also does so once a repository holds 8).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                _ = try await cluster.client().forge(.repack(name))
                output(cluster.json, ["repacked": name], text: "repacked \(name)")
            }
        }
    }

    struct Protect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Protect a branch: never deleted, never force-pushed; with required approvals or statuses, changed only by patches the forge merges.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Argument(help: "The branch (main, not refs/heads/main).") var branch: String
        @Option(help: "Approving reviews a patch needs before the forge merges it.") var requireApprovals: Int = 0
        @Option(help: "A status context (e.g. ci/build) that must pass on a patch before it is merged; repeat for several.")
        var requireStatus: [String] = []

        func run() async throws {
            try await runForge {
                let rule = ProtectionRule(requiredApprovals: requireApprovals, requiredStatuses: requireStatus)
                try rule.validate()
                _ = try await cluster.client().forge(.protect(name, branch: branch, rule))
                output(cluster.json, ["protected": branch], text: "protected \(name) \(branch)")
            }
        }
    }

    struct Unprotect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift a branch's protection.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String
        @Argument var branch: String

        func run() async throws {
            try await runForge {
                _ = try await cluster.client().forge(.protect(name, branch: branch, nil))
                output(cluster.json, ["unprotected": branch], text: "unprotected \(name) \(branch)")
            }
        }
    }

    struct Protections: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a repository's protected branches and their rules.")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                guard case .protections(let rules) = try await cluster.client().forge(.protections(name)) else { throw CLIError.unexpectedAnswer }
                if cluster.json {
                    output(true, ["protections": rules.map { ["branch": $0.branch, "requiredApprovals": $0.rule.requiredApprovals, "requiredStatuses": $0.rule.requiredStatuses] }], text: "")
                } else {
                    for (branch, rule) in rules {
                        print("\(branch)\tapprovals \(rule.requiredApprovals)\tstatuses \(rule.requiredStatuses.isEmpty ? "-" : rule.requiredStatuses.joined(separator: ","))")
                    }
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a repository: its refs and its packs (collected once unreferenced).")
        @OptionGroup var cluster: ClusterOptions
        @Argument var name: String

        func run() async throws {
            try await runForge {
                _ = try await cluster.client().forge(.delete(name))
                output(cluster.json, ["deleted": name], text: "deleted \(name)")
            }
        }
    }
}

/// `aspen git-remote-helper REMOTE URL`: git's remote helper for aspen:// URLs (git runs it as
/// git-remote-aspen). It offers `connect`, and tunnels git's smart protocol to a node, which runs
/// the real upload-pack or receive-pack.
struct GitRemoteHelperCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "git-remote-helper", abstract: "git's remote helper for aspen:// URLs (run by git as git-remote-aspen).",
        shouldDisplay: false)
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The remote's name (or the URL, when git has no name for it).") var remote: String
    @Argument(help: "aspen://NAME or aspen://TICKET/NAME.") var url: String?

    func run() async throws {
        let (ticket, repo) = try Self.parse(url ?? remote)
        var options = cluster
        if let ticket { options.ticket = ticket }
        while let line = Self.readLine() {
            if line == "capabilities" {
                Self.write(1, "connect\n\n")
            } else if line.hasPrefix("connect ") {
                guard let service = GitService(rawValue: String(line.dropFirst("connect ".count))) else {
                    Self.fail("unsupported service \(line.dropFirst("connect ".count))")
                }
                let status = await Self.connect(try options.client(), repo: repo, service: service)
                Glibc.exit(status)
            } else if line.isEmpty {
                return
            } else {
                Self.fail("unsupported command \"\(line)\"")
            }
        }
    }

    /// `aspen://NAME`, `aspen://TICKET/NAME` (a trailing `.git` or `/` is dropped).
    static func parse(_ url: String) throws -> (ticket: String?, repo: String) {
        var rest = url.hasPrefix("aspen://") ? String(url.dropFirst("aspen://".count)) : url
        while rest.hasSuffix("/") { rest.removeLast() }
        if rest.hasSuffix(".git") { rest.removeLast(4) }
        var ticket: String?
        if rest.hasPrefix("aspen1"), let slash = rest.firstIndex(of: "/") {
            ticket = String(rest[..<slash])
            rest = String(rest[rest.index(after: slash)...])
        }
        do {
            try ForgeNames.validate(repo: rest)
        } catch {
            fail("\(url): \(error)")
        }
        return (ticket, rest)
    }

    /// The protocol version git asks for: `GIT_PROTOCOL` if git set it, else its configuration
    /// (version 2 unless set otherwise). Pushes speak version 0.
    static func protocolVersion(for service: GitService) -> UInt8 {
        guard service == .uploadPack else { return 0 }
        if let given = ProcessInfo.processInfo.environment["GIT_PROTOCOL"], let range = given.range(of: "version=") {
            return UInt8(String(given[range.upperBound...].prefix(1))) ?? 0
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "config", "--get", "protocol.version"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return 2 }
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return UInt8(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 2
    }

    static func connect(_ client: AspenClient, repo: String, service: GitService) async -> Int32 {
        defer { Task { await client.close() } }
        do {
            return try await client.withGitTunnel(repo: repo, service: service, protocolVersion: protocolVersion(for: service)) { io in
                // Connected: git now speaks its protocol through standard input and output.
                write(1, "\n")
                let patches: (@Sendable (PushPreamble) async throws -> [SignedCobChange])?
                if service == .receivePack {
                    patches = { preamble in try await patchChanges(client, repo: repo, preamble) }
                } else {
                    patches = nil
                }
                return try await pump(io, patches: patches)
            }
        } catch {
            fail("\(repo): \(error)")
        }
    }

    /// Standard input to the node, the node's output to standard output and error, until git
    /// exits on the node; returns its status. Output is written with blocking writes: it has
    /// reached git when the write returns, so nothing is left queued when the helper exits.
    /// The signed patch changes a push's commands to `refs/for/BRANCH` make (`-o topic=…`,
    /// `-o title=…`, `-o description=…`; the title defaults to the commit's subject, the topic to
    /// the commit's id, so that a push without a topic opens a new patch).
    static func patchChanges(_ client: AspenClient, repo: String, _ preamble: PushPreamble) async throws -> [SignedCobChange] {
        var changes: [SignedCobChange] = []
        for command in preamble.commands where command.name.hasPrefix("refs/for/") && !ForgeNames.isZero(command.new) {
            let target = String(command.name.dropFirst("refs/for/".count))
            let subject = (try? runGit(["log", "-1", "--format=%s", command.new]))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            changes.append(
                try await client.patchChange(
                    repo, target: target, topic: preamble.option("topic") ?? String(command.new.prefix(12)), head: command.new,
                    title: preamble.option("title") ?? (subject.isEmpty ? "patch \(command.new.prefix(12))" : subject),
                    description: preamble.option("description") ?? ""))
        }
        return changes
    }

    static func runGit(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text
    }

    static func pump(_ io: GitTunnelIO, patches: (@Sendable (PushPreamble) async throws -> [SignedCobChange])? = nil) async throws -> Int32 {
        // Large reads: each becomes one frame, and one write into git on the node.
        let input = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64 * 1024, initial: 256 * 1024, maximum: 1024 * 1024))
            .takingOwnershipOfDescriptor(input: dup(0)) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel) }
            }
        return try await input.executeThenClose { standardInput, _ in
            let upload = Task {
                do {
                    try await Self.upload(standardInput, to: io, patches: patches)
                } catch is CancellationError {
                } catch {
                    // Nothing more can reach the node: git is told, rather than left waiting.
                    fail("\(error)")
                }
            }
            defer { upload.cancel() }
            while var frame = try await io.next() {
                guard let kind = frame.readInteger(as: UInt8.self) else { continue }
                switch kind {
                case GitTunnelFrame.stdout:
                    guard writeAll(1, frame.readableBytesView) else { throw ForgeError.failed("git stopped reading the helper's output") }
                case GitTunnelFrame.stderr:
                    _ = writeAll(2, frame.readableBytesView)
                case GitTunnelFrame.exit:
                    return frame.readInteger(as: Int32.self) ?? 128
                default:
                    throw ForgeError.failed("unexpected frame \(kind) from the node")
                }
            }
            throw ForgeError.unavailable("the node closed the connection before git finished")
        }
    }

    /// Git's standard input to the node. A push's commands (and options) are read first: its
    /// pushes to refs/for/… go to the node as signed patch changes ahead of the pack.
    static func upload(
        _ standardInput: NIOAsyncChannelInboundStream<ByteBuffer>, to io: GitTunnelIO,
        patches: (@Sendable (PushPreamble) async throws -> [SignedCobChange])?
    ) async throws {
        func send(_ buffer: ByteBuffer) async throws {
            var buffer = buffer
            while buffer.readableBytes > 0 {
                try await io.send(GitTunnelFrame.data, buffer.readSlice(length: min(buffer.readableBytes, 256 * 1024))!)
            }
        }
        var pending: [ByteBuffer] = []
        var seen: [UInt8] = []
        var looking = patches != nil
        for try await chunk in standardInput {
            guard looking else {
                try await send(chunk)
                continue
            }
            pending.append(chunk)
            seen += chunk.readableBytesView
            // Parsed, or not a preamble, or too long to be one: stop looking.
            var preamble: PushPreamble?
            var decided = seen.count > PushPreamble.bytesMax
            do {
                preamble = try PushPreamble.parse(seen)
                if preamble != nil { decided = true }
            } catch {
                decided = true
            }
            guard decided else { continue }
            looking = false
            if let preamble, let patches {
                for change in try await patches(preamble) { try await io.send(GitTunnelFrame.change, ByteBuffer(bytes: change.encoded)) }
            }
            for buffered in pending { try await send(buffered) }
            pending = []
        }
        for buffered in pending { try await send(buffered) }
        try await io.send(GitTunnelFrame.end)
    }

    static func writeAll(_ descriptor: Int32, _ bytes: ByteBufferView) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    return false
                }
                offset += written
            }
            return true
        } ?? true
    }

    /// One line of git's commands, read a byte at a time: what follows belongs to the pack stream.
    static func readLine() -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = Glibc.read(0, &byte, 1)
            if count <= 0 { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
    }

    static func write(_ descriptor: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
    }

    static func fail(_ message: String) -> Never {
        write(2, "fatal: aspen: \(message)\n")
        Glibc.exit(128)
    }
}
