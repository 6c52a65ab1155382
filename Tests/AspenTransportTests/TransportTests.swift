import AspenCore
import AspenTesting
import AspenTransport
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class TempDir {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-transport-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("Node identity")
struct NodeIdentityTests {
    @Test("the key is created once with mode 0600 and loads back the same")
    func createAndReload() throws {
        let directory = TempDir()
        let first = try NodeIdentity.loadOrCreate(directory: directory.path)
        var status = stat()
        #expect(stat(directory.path + "/node.key", &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        let second = try NodeIdentity.loadOrCreate(directory: directory.path)
        #expect(first.key == second.key)
    }

    @Test("a key file others can read is refused, naming the file and the fix")
    func tooOpen() throws {
        let directory = TempDir()
        _ = try NodeIdentity.loadOrCreate(directory: directory.path)
        chmod(directory.path + "/node.key", 0o644)
        let error = #expect(throws: TransportError.self) { try NodeIdentity.loadOrCreate(directory: directory.path) }
        #expect(error == .keyFileTooOpen(path: directory.path + "/node.key", mode: 0o644))
        #expect(error?.description.contains("chmod 600") == true)
    }

    @Test("a key file that holds no Ed25519 key is refused")
    func garbageKey() throws {
        let directory = TempDir()
        let path = directory.path + "/node.key"
        _ = FileManager.default.createFile(atPath: path, contents: Data("not a key".utf8), attributes: [.posixPermissions: 0o600])
        #expect(throws: TransportError.self) { try NodeIdentity.loadOrCreate(directory: directory.path) }
    }

    @Test("node keys parse from hex and reject anything else")
    func keyParsing() {
        let key = NodeIdentity().key
        #expect(NodeKey(hex: key.hex) == key)
        #expect(NodeKey(hex: "abc") == nil)
        #expect(NodeKey(hex: String(repeating: "zz", count: 32)) == nil)
    }
}

@Suite("Transport", .serialized)
struct TransportTests {
    static let logger = Logger(label: "aspen.transport.test")

    struct Fixture {
        let server: TransportServer
        let serverTLS: TLSMaterial
        let members: Set<NodeKey>
    }

    /// A server that echoes on the client protocol (anyone) and on the raft protocol (members only).
    static func fixture(members: [NodeIdentity] = []) async throws -> Fixture {
        let tls = try TLSMaterial(identity: NodeIdentity())
        let allowed = Set(members.map(\.key))
        let echo: @Sendable (NodeKey, [UInt8]) async -> [UInt8] = { _, body in Array("echo:".utf8) + body }
        let server = try await TransportServer.start(
            host: "127.0.0.1", port: 0, tls: tls,
            routes: [
                AspenProtocol.client: TransportRoute(authorize: { _ in true }, handle: echo),
                AspenProtocol.raft: TransportRoute(authorize: { allowed.contains($0) }, handle: echo),
            ], logger: logger)
        return Fixture(server: server, serverTLS: tls, members: allowed)
    }

    @Test("a request and its answer cross a mutually authenticated TLS 1.3 connection")
    func roundTrip() async throws {
        let fixture = try await Self.fixture()
        defer { Task { try? await fixture.server.close() } }
        let client = try TLSMaterial(identity: NodeIdentity())
        let connection = try await TransportConnection.connect(
            host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.client, tls: client,
            expecting: fixture.serverTLS.identity.key)
        #expect(connection.peer == fixture.serverTLS.identity.key)
        let answers = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for number in 0..<50 { group.addTask { try await connection.request(Array("\(number)".utf8)) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(answers) == Set((0..<50).map { Array("echo:\($0)".utf8) }))
        await connection.close()
    }

    @Test("a server that proves another key than the pinned one is refused")
    func pinning() async throws {
        let fixture = try await Self.fixture()
        defer { Task { try? await fixture.server.close() } }
        let impostor = NodeIdentity().key
        let error = await #expect(throws: TransportError.self) {
            _ = try await TransportConnection.connect(
                host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.client, tls: TLSMaterial(identity: NodeIdentity()),
                expecting: impostor)
        }
        #expect(error == .unexpectedPeer(expected: impostor, actual: fixture.serverTLS.identity.key))
    }

    @Test("the raft protocol accepts members' keys only; others are cut off and the server keeps serving")
    func raftMembersOnly() async throws {
        let member = NodeIdentity()
        let fixture = try await Self.fixture(members: [member])
        defer { Task { try? await fixture.server.close() } }
        let stranger = try await TransportConnection.connect(
            host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.raft, tls: TLSMaterial(identity: NodeIdentity()))
        await #expect(throws: TransportError.self) { try await stranger.request([1, 2, 3]) }
        let trusted = try await TransportConnection.connect(
            host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.raft, tls: TLSMaterial(identity: member))
        #expect(try await trusted.request([7]) == Array("echo:".utf8) + [7])
    }

    @Test("an unknown application protocol is refused")
    func unknownProtocol() async throws {
        let fixture = try await Self.fixture()
        defer { Task { try? await fixture.server.close() } }
        await #expect(throws: (any Error).self) {
            let connection = try await TransportConnection.connect(
                host: "127.0.0.1", port: fixture.server.port, protocol: "aspen/nonsense/9", tls: TLSMaterial(identity: NodeIdentity()))
            _ = try await connection.request([1])
        }
    }

    @Test("garbage bytes and an oversized frame drop only that connection")
    func badInput() async throws {
        let fixture = try await Self.fixture()
        defer { Task { try? await fixture.server.close() } }
        // Plain garbage instead of a TLS handshake.
        #expect(RawSocket.sendGarbage(port: fixture.server.port, (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 37) }))

        // A frame that claims 100 MiB, inside a proper TLS connection.
        let client = try TLSMaterial(identity: NodeIdentity())
        let victim = try await TransportConnection.connect(
            host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.client, tls: client)
        try await victim.sendRawForTesting([0x06, 0x40, 0x00, 0x00, 1, 2, 3])
        await #expect(throws: TransportError.self) { try await victim.request([1]) }

        // Everyone else is still served.
        let healthy = try await TransportConnection.connect(
            host: "127.0.0.1", port: fixture.server.port, protocol: AspenProtocol.client, tls: client)
        #expect(try await healthy.request([9]) == Array("echo:".utf8) + [9])
    }
}

/// The bounds a client connection is held to: its own connection cap apart from peers, a bound
/// on requests in flight, and an idle timeout.
@Suite("Transport bounds", .serialized)
struct TransportBoundsTests {
    static let logger = Logger(label: "aspen.transport.test")

    /// Counts the requests being served at once; each waits until released.
    final class Gate: Sendable {
        let state = Mutex<(now: Int, most: Int, served: Int)>((0, 0, 0))
        let open = Atomic<Bool>(false)

        func pass() async {
            state.withLock { state in
                state.now += 1
                state.most = max(state.most, state.now)
            }
            while !open.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(5)) }
            state.withLock { state in
                state.now -= 1
                state.served += 1
            }
        }
    }

    static func server(options: TransportOptions, gate: Gate? = nil) async throws -> (TransportServer, TLSMaterial) {
        let tls = try TLSMaterial(identity: NodeIdentity())
        let echo: @Sendable (NodeKey, [UInt8]) async -> [UInt8] = { _, body in
            await gate?.pass()
            return body
        }
        var peers = TransportRoute(authorize: { _ in true }, handle: echo)
        peers.pool = .peers
        let server = try await TransportServer.start(
            host: "127.0.0.1", port: 0, tls: tls,
            routes: [AspenProtocol.client: TransportRoute(authorize: { _ in true }, handle: echo), AspenProtocol.raft: peers],
            options: options, logger: logger)
        return (server, tls)
    }

    static func connect(_ server: TransportServer, _ name: String = AspenProtocol.client) async throws -> TransportConnection {
        try await TransportConnection.connect(host: "127.0.0.1", port: server.port, protocol: name, tls: TLSMaterial(identity: NodeIdentity()))
    }

    @Test("clients past clientConnectionsMax are refused while peers still connect")
    func clientCap() async throws {
        var options = TransportOptions()
        options.limits.clientConnectionsMax = 2
        options.limits.peersMax = 1
        let (server, _) = try await Self.server(options: options)
        defer { Task { try? await server.close() } }
        var clients: [TransportConnection] = []
        for _ in 0..<2 {
            let client = try await Self.connect(server)
            #expect(try await client.request([1]) == [1])
            clients.append(client)
        }
        let third = try await Self.connect(server)
        await #expect(throws: TransportError.self) { try await third.request([3]) }
        // Peers have their own bound: the full client pool does not keep one out ...
        let peer = try await Self.connect(server, AspenProtocol.raft)
        #expect(try await peer.request([4]) == [4])
        // ... and a second peer past peersMax is refused without touching the clients.
        let secondPeer = try await Self.connect(server, AspenProtocol.raft)
        await #expect(throws: TransportError.self) { try await secondPeer.request([5]) }
        #expect(try await clients[0].request([6]) == [6])
        // A client that leaves makes room.
        await clients[1].close()
        try await Task.sleep(for: .milliseconds(100))
        let fourth = try await Self.connect(server)
        #expect(try await fourth.request([7]) == [7])
    }

    @Test("connections still in their handshake past handshakesMax are refused; once one leaves, the next is taken")
    func handshakeCap() async throws {
        var options = TransportOptions()
        options.limits.handshakesMax = 1
        let (server, _) = try await Self.server(options: options)
        defer { Task { try? await server.close() } }
        // A TCP connection that never starts TLS holds the one handshake slot.
        let silent = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: server.port).get()
        try await Task.sleep(for: .milliseconds(100))
        await #expect(throws: (any Error).self) {
            let refused = try await Self.connect(server)
            _ = try await refused.request([1])
        }
        try await silent.close()
        try await Task.sleep(for: .milliseconds(100))
        let client = try await Self.connect(server)
        #expect(try await client.request([2]) == [2])
    }

    @Test("a client connection is served at most connectionRequestsMax requests at once; the rest wait and are all answered")
    func inFlightCap() async throws {
        var options = TransportOptions()
        options.limits.connectionRequestsMax = 3
        let gate = Gate()
        let (server, _) = try await Self.server(options: options, gate: gate)
        defer { Task { try? await server.close() } }
        let client = try await Self.connect(server)
        let answers = Task {
            try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for number in 0..<20 { group.addTask { try await client.request([UInt8(number)]) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        // Wait until the node has taken all it will take before anything is answered.
        try await Task.sleep(for: .milliseconds(300))
        #expect(gate.state.withLock { $0.now } == 3)
        gate.open.store(true, ordering: .relaxed)
        let received = try await answers.value
        #expect(Set(received) == Set((0..<20).map { [UInt8($0)] }))
        #expect(gate.state.withLock { $0.most } == 3)
        #expect(gate.state.withLock { $0.served } == 20)
    }

    @Test("an idle client connection is closed; one with a request in flight is not")
    func idleTimeout() async throws {
        var options = TransportOptions()
        options.idleTimeoutSeconds = 0.3
        let gate = Gate()
        let (server, _) = try await Self.server(options: options, gate: gate)
        defer { Task { try? await server.close() } }
        let idle = try await Self.connect(server)
        let busy = try await Self.connect(server)
        let peer = try await Self.connect(server, AspenProtocol.raft)
        gate.open.store(true, ordering: .relaxed)
        #expect(try await idle.request([1]) == [1])
        #expect(try await peer.request([1]) == [1])
        gate.open.store(false, ordering: .relaxed)
        let pending = Task { try await busy.request([2], extraSeconds: 5) }
        try await Task.sleep(for: .milliseconds(900))
        #expect(!idle.isActive)
        #expect(busy.isActive)
        // Peers are not held to the clients' idle timeout.
        #expect(peer.isActive)
        gate.open.store(true, ordering: .relaxed)
        #expect(try await pending.value == [2])
    }
}

@Suite("Cluster tickets")
struct ClusterTicketTests {
    static let ticket = ClusterTicket(
        clusterID: Array(1...16),
        peers: [
            .init(id: 1, key: NodeIdentity().key, host: "127.0.0.1", port: 7101),
            .init(id: 2, key: NodeIdentity().key, host: "::1", port: 7102),
        ])

    @Test("a ticket round-trips through its aspen1 string")
    func roundTrip() throws {
        let text = Self.ticket.encoded
        #expect(text.hasPrefix("aspen1"))
        #expect(text.allSatisfy { $0.isLowercase || $0.isNumber })
        #expect(try ClusterTicket(parsing: text) == Self.ticket)
        #expect(try ClusterTicket(parsing: "  \(text)\n") == Self.ticket)
    }

    @Test("truncated, altered and foreign tickets give clear errors")
    func malformed() {
        let text = Self.ticket.encoded
        #expect(throws: ClusterTicket.ParseError.notATicket) { try ClusterTicket(parsing: "etcd://x") }
        #expect(throws: ClusterTicket.ParseError.checksumMismatch) { try ClusterTicket(parsing: String(text.dropLast(7))) }
        var altered = Array(text)
        altered[20] = altered[20] == "a" ? "b" : "a"
        #expect(throws: ClusterTicket.ParseError.checksumMismatch) { try ClusterTicket(parsing: String(altered)) }
        #expect(throws: ClusterTicket.ParseError.invalidCharacter("!")) { try ClusterTicket(parsing: "aspen1abc!") }
        #expect(ClusterTicket.ParseError.checksumMismatch.description.contains("truncated"))
        // Found by fuzzing: control bytes read as digits (0x12 as '2'), and no bound on the length.
        let digit = text.firstIndex { "234567".contains($0) && $0 != text.first }!
        var control = text
        control.replaceSubrange(digit...digit, with: String(UnicodeScalar(UInt8(text[digit].asciiValue! - 0x20))))
        #expect(throws: ClusterTicket.ParseError.invalidCharacter(Character(UnicodeScalar(UInt8(text[digit].asciiValue! - 0x20))))) {
            try ClusterTicket(parsing: control)
        }
        let huge = "aspen1" + String(repeating: "a", count: 1 << 20)
        #expect(throws: ClusterTicket.ParseError.tooLong(bytes: huge.utf8.count, limit: ClusterTicket.textBytesMax)) { try ClusterTicket(parsing: huge) }
    }
}

@Suite("Cluster cookie")
struct ClusterCookieTests {
    @Test("the cookie is stretched with scrypt before it keys the proof (the proof matches an independent scrypt and HMAC)")
    func stretched() throws {
        let key = try #require(NodeKey(bytes: Array(repeating: 1, count: 32)))
        // hashlib.scrypt(b"s3cret", salt=b"aspen cluster cookie", n=2**15, r=8, p=1, dklen=32), then HMAC-SHA256 of the key.
        let expected = "4e894adba2a9f6ecea21b7cb27bceb0d2f64cc34f5c0a69dec30a94a60dc4769"
        let cookie = ClusterCookie("s3cret")
        #expect(cookie.proof(for: key).map { String(format: "%02x", $0) }.joined() == expected)
        #expect(cookie.accepts(cookie.proof(for: key), from: key))
        #expect(!ClusterCookie("s3cret!").accepts(cookie.proof(for: key), from: key))
    }
}
