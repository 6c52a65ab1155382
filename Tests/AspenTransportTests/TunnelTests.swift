import AspenCore
import AspenTransport
import Logging
import NIOCore
import Synchronization
import Testing

@Suite("Transport tunnels", .serialized)
struct TunnelTests {
    static let logger = Logger(label: "aspen.tunnel.test")
    static let name = "aspen/test-tunnel/1"

    /// A server whose tunnel route runs `handler`.
    static func server(
        _ handler: @escaping @Sendable (TransportCaller, TunnelInbound, TunnelOutbound) async -> Void
    ) async throws -> (TransportServer, TLSMaterial) {
        let tls = try TLSMaterial(identity: NodeIdentity())
        let server = try await TransportServer.start(
            host: "127.0.0.1", port: 0, tls: tls, routes: [name: TransportRoute(authorize: { _ in true }, tunnel: handler)], logger: logger)
        return (server, tls)
    }

    static func connect(_ server: TransportServer, _ tls: TLSMaterial) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        try await TransportTunnel.connect(
            host: "127.0.0.1", port: server.port, protocol: name, tls: TLSMaterial(identity: NodeIdentity()), expecting: tls.identity.key)
    }

    @Test("8 MiB cross a tunnel both ways, in order, while both sides write and read at once")
    func echo() async throws {
        let (server, tls) = try await Self.server { _, inbound, outbound in
            do {
                for try await frame in inbound { try await outbound.write(frame) }
            } catch {}
        }
        defer { Task { try? await server.close() } }
        let channel = try await Self.connect(server, tls)
        let total = 8 << 20
        let frameBytes = 60_000
        var generator = SplitMix64(seed: 7)
        let data = (0..<total).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let received = try await channel.executeThenClose { inbound, outbound in
            let writer = Task {
                var offset = 0
                while offset < total {
                    let end = min(offset + frameBytes, total)
                    try await outbound.write(ByteBuffer(bytes: data[offset..<end]))
                    offset = end
                }
            }
            var received: [UInt8] = []
            received.reserveCapacity(total)
            for try await frame in inbound {
                received += frame.readableBytesView
                if received.count >= total { break }
            }
            try await writer.value
            return received
        }
        #expect(received.count == total)
        #expect(received == data)
    }

    @Test("a handler that does not read holds back its client: frames stop being taken, then all arrive in order once it reads")
    func backpressure() async throws {
        let gate = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let opened = Atomic<Bool>(false)
        let got = Atomic<Int>(0)
        let (server, tls) = try await Self.server { _, inbound, _ in
            await withCheckedContinuation { continuation in gate.withLock { $0 = continuation } }
            var expected: UInt32 = 0
            do {
                for try await var frame in inbound {
                    guard frame.readInteger(as: UInt32.self) == expected else { return }
                    expected += 1
                    got.add(1, ordering: .relaxed)
                }
            } catch {}
        }
        defer { Task { try? await server.close() } }
        let channel = try await Self.connect(server, tls)
        let frames = 2000
        let sent = Counter()
        try await channel.executeThenClose { _, outbound in
            let writer = Task {
                for index in 0..<frames {
                    var frame = ByteBuffer()
                    frame.writeInteger(UInt32(index))
                    frame.writeRepeatingByte(7, count: 64 * 1024 - 4)
                    try await outbound.write(frame)
                    sent.value.add(1, ordering: .relaxed)
                }
            }
            // Until the writer has made no progress for a second: it is held by the socket.
            var last = -1
            while sent.value.load(ordering: .relaxed) != last {
                last = sent.value.load(ordering: .relaxed)
                try await Task.sleep(for: .seconds(1))
            }
            #expect(last < frames, "all \(frames) frames (\(frames / 16) MiB) were taken while the handler read nothing")
            let early = got.load(ordering: .relaxed)
            #expect(early == 0)
            opened.store(true, ordering: .relaxed)
            gate.withLock { $0?.resume() }
            try await writer.value
            while got.load(ordering: .relaxed) < frames { try await Task.sleep(for: .milliseconds(20)) }
        }
        let all = got.load(ordering: .relaxed)
        let wasOpened = opened.load(ordering: .relaxed)
        #expect(all == frames)
        #expect(wasOpened)
    }

    @Test("a tunnel counts as in flight until its handler returns, which it does when the client closes")
    func drainAndClose() async throws {
        let ended = Atomic<Bool>(false)
        let (server, tls) = try await Self.server { _, inbound, _ in
            do {
                for try await _ in inbound {}
            } catch {}
            ended.store(true, ordering: .relaxed)
        }
        defer { Task { try? await server.close() } }
        let channel = try await Self.connect(server, tls)
        try await channel.executeThenClose { _, outbound in
            try await outbound.write(ByteBuffer(bytes: [1, 2, 3]))
            while server.requestsInFlight == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await server.drain(seconds: 0.2) == 1)
        }
        #expect(await server.drain(seconds: 30) == 0)
        let handlerEnded = ended.load(ordering: .relaxed)
        #expect(handlerEnded)
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
