import AspenCore
import AspenEtcd
import AspenTransport
import Foundation
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Synchronization
import SwiftProtobuf

/// The etcd endpoint's input: the protobuf request of each method, decoded as the endpoint
/// decodes it, and the gRPC framing of HTTP/2 streams, driven through the endpoint's own
/// connection handler on an `EmbeddedChannel`.
extension FuzzTarget {
    static let etcdTargets: [FuzzTarget] = [etcdRequest, etcdGRPC]

    static let etcdRequest = FuzzTarget(
        name: "etcd-request",
        summary: "the protobuf request of each etcd method (first byte picks the method), decoded as GRPCMethodTable decodes it",
        seeds: { EtcdSeeds.requests.map { [UInt8($0.method)] + $0.bytes } }
    ) { input in
        guard let first = input.first else { return .rejected(shape: "empty input") }
        let methods = GRPCEndpointFuzzing.methods
        let method = methods[Int(first) % methods.count]
        let bytes = Array(input.dropFirst())
        // The endpoint refuses a larger message before decoding it.
        guard bytes.count <= Limits.standard.grpcMessageBytesMax else { return .rejected(shape: "over grpcMessageBytesMax") }
        let request: any SwiftProtobuf.Message
        do {
            request = try GRPCEndpointFuzzing.decodeRequest(method, bytes)
        } catch {
            return .rejected(shape: FuzzCheck.shape(of: error))
        }
        return EtcdSeeds.checkRoundTrip(method, request)
    }

    static let etcdGRPC = FuzzTarget(
        name: "etcd-grpc",
        summary: "the endpoint's GRPCConnectionHandler fed HTTP/2 frames (streams opened, DATA split anywhere, trailers, resets) on an EmbeddedChannel",
        seeds: { EtcdSeeds.programs }
    ) { input in
        EtcdConnectionProgram.run(input)
    }
}

/// A fuzz input read as HTTP/2 frames for one connection, as a client may send them (what
/// `NIOHTTP2Handler` lets through to the endpoint's handler): each operation a byte, then its
/// arguments. `open` starts the next stream (ids 1, 3, 5, …); the other operations name one of
/// the streams opened, by index, and are dropped once the client has ended that stream (or reset
/// it) or the endpoint has answered it. A path index past the table's end names a method the
/// endpoint does not serve.
enum EtcdConnectionProgram {
    enum Operation: UInt8 {
        /// stream (unused), path index, flags (bit 0: GET, bit 1: wrong content type, bit 2: grpc-timeout, bits 3-4: which, bit 6: end of stream)
        case open = 0
        /// stream, length (2 bytes, little-endian), bytes, flags (bit 0: end of stream, bit 1: padding)
        case data
        /// stream, length (1 byte), bytes, flags: one gRPC message (prefix made right), as one DATA frame
        case message
        /// stream: trailers, ending the client's side
        case trailers
        /// stream
        case reset
    }

    static let timeouts = ["1S", "0m", "99999999H", "5x"]
    static let unservedPath = "/etcdserverpb.Auth/Authenticate"
    static let streamsMax = 16

    /// Records what the methods decoded, and the first property that failed.
    final class Findings: Sendable {
        let failure = Mutex<String?>(nil)
        let decoded = Mutex(0)
    }

    /// The client's view of its streams.
    struct Streams {
        var opened: [HTTP2StreamID] = []
        /// Streams the client may no longer send on: it ended or reset them, or the endpoint answered.
        var closed: Set<HTTP2StreamID> = []
        /// Streams the endpoint has ended (trailers with END_STREAM).
        var answered: Set<HTTP2StreamID> = []

        /// An open stream chosen by `selector`, if it may still be sent on.
        func usable(_ selector: UInt8) -> HTTP2StreamID? {
            guard !opened.isEmpty else { return nil }
            let stream = opened[Int(selector) % opened.count]
            return closed.contains(stream) ? nil : stream
        }
    }

    static func run(_ input: [UInt8]) -> FuzzOutcome {
        let findings = Findings()
        let loop = EmbeddedEventLoop()
        let methods = GRPCEndpointFuzzing.methods
        let handler = GRPCEndpointFuzzing.connectionHandler(executor: EventLoopExecutor(loop)) { path, request in
            findings.decoded.withLock { $0 += 1 }
            guard let method = methods.first(where: { $0.path == path }) else { return }
            if case .failed(let message) = EtcdSeeds.checkRoundTrip(method, request) {
                findings.failure.withLock { $0 = $0 ?? message }
            }
        }
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        channel.pipeline.fireChannelActive()
        var streams = Streams()
        var cursor = Cursor(input)
        while let operation = cursor.byte(), let step = frame(Operation(rawValue: operation % 5)!, &cursor, &streams, methods: methods) {
            if let frame = step {
                do {
                    try channel.writeInbound(frame)
                } catch {
                    break
                }
                loop.run()
            }
            if let broken = collectAnswers(channel, &streams) { return .failed(broken) }
        }
        // Time passes (deadlines fire), then the connection closes and every call ends.
        loop.advanceTime(by: .hours(1))
        _ = try? channel.finish(acceptAlreadyClosed: true)
        loop.run()
        if let broken = collectAnswers(channel, &streams) { return .failed(broken) }
        if let failure = findings.failure.withLock({ $0 }) { return .failed(failure) }
        return findings.decoded.withLock { $0 } > 0 ? .decoded : .rejected(shape: "no request decoded")
    }

    /// Reads what the endpoint wrote; an answer may end each stream once.
    private static func collectAnswers(_ channel: EmbeddedChannel, _ streams: inout Streams) -> String? {
        while let frame = try? channel.readOutbound(as: HTTP2Frame.self) {
            guard case .headers(let headers) = frame.payload, headers.endStream else { continue }
            guard streams.answered.insert(frame.streamID).inserted else { return "the endpoint ended stream \(frame.streamID) twice" }
            streams.closed.insert(frame.streamID)
        }
        return nil
    }

    /// The next operation's frame: nil at the end of the input, `.some(nil)` for an operation
    /// the client may not make now (it is dropped).
    private static func frame(
        _ operation: Operation, _ cursor: inout Cursor, _ streams: inout Streams, methods: [GRPCEndpointFuzzing.Method]
    ) -> HTTP2Frame?? {
        guard let selector = cursor.byte() else { return nil }
        switch operation {
        case .open:
            guard let pathIndex = cursor.byte(), let flags = cursor.byte() else { return nil }
            guard streams.opened.count < streamsMax else { return .some(nil) }
            let stream = HTTP2StreamID(1 + 2 * streams.opened.count)
            streams.opened.append(stream)
            let chosen = Int(pathIndex) % (methods.count + 1)
            var headers: HPACKHeaders = [
                ":method": flags & 1 == 0 ? "POST" : "GET", ":scheme": "http", ":path": chosen < methods.count ? methods[chosen].path : unservedPath,
                "content-type": flags & 2 == 0 ? "application/grpc" : "text/plain",
            ]
            if flags & 4 != 0 { headers.add(name: "grpc-timeout", value: timeouts[Int(flags >> 3) & 3]) }
            if flags & 0x40 != 0 { streams.closed.insert(stream) }
            return HTTP2Frame(streamID: stream, payload: .headers(.init(headers: headers, endStream: flags & 0x40 != 0)))
        case .data:
            guard let low = cursor.byte(), let high = cursor.byte() else { return nil }
            let bytes = cursor.bytes(Int(low) | Int(high) << 8)
            return data(streams.usable(selector), bytes, cursor.byte() ?? 1, &streams)
        case .message:
            guard let length = cursor.byte() else { return nil }
            let message = cursor.bytes(Int(length))
            let framed = [0] + withUnsafeBytes(of: UInt32(message.count).bigEndian) { Array($0) } + message
            return data(streams.usable(selector), framed, cursor.byte() ?? 1, &streams)
        case .trailers:
            guard let stream = streams.usable(selector) else { return .some(nil) }
            streams.closed.insert(stream)
            return HTTP2Frame(streamID: stream, payload: .headers(.init(headers: ["x-done": "1"], endStream: true)))
        case .reset:
            guard let stream = streams.usable(selector) else { return .some(nil) }
            streams.closed.insert(stream)
            return HTTP2Frame(streamID: stream, payload: .rstStream(.cancel))
        }
    }

    private static func data(_ stream: HTTP2StreamID?, _ bytes: [UInt8], _ flags: UInt8, _ streams: inout Streams) -> HTTP2Frame?? {
        guard let stream else { return .some(nil) }
        if flags & 1 != 0 { streams.closed.insert(stream) }
        return data(stream, bytes, flags)
    }

    private static func data(_ stream: HTTP2StreamID, _ bytes: [UInt8], _ flags: UInt8) -> HTTP2Frame {
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return HTTP2Frame(
            streamID: stream, payload: .data(.init(data: .byteBuffer(buffer), endStream: flags & 1 != 0, paddingBytes: flags & 2 != 0 ? 8 : nil)))
    }

    struct Cursor {
        let input: [UInt8]
        var offset = 0

        init(_ input: [UInt8]) { self.input = input }

        mutating func byte() -> UInt8? {
            guard offset < input.count else { return nil }
            defer { offset += 1 }
            return input[offset]
        }

        mutating func bytes(_ count: Int) -> [UInt8] {
            let end = min(input.count, offset + count)
            defer { offset = end }
            return Array(input[offset..<end])
        }
    }
}

/// Program builders, for seeds: the bytes `EtcdConnectionProgram` reads.
extension EtcdConnectionProgram {
    static func open(_ stream: UInt8, _ path: Int, flags: UInt8 = 0) -> [UInt8] { [Operation.open.rawValue, stream, UInt8(path), flags] }

    static func message(_ stream: UInt8, _ bytes: [UInt8], end: Bool = false) -> [UInt8] {
        precondition(bytes.count <= 255, "a seed message is at most 255 bytes")
        return [Operation.message.rawValue, stream, UInt8(bytes.count)] + bytes + [end ? 1 : 0]
    }

    static func data(_ stream: UInt8, _ bytes: [UInt8], end: Bool = false) -> [UInt8] {
        [Operation.data.rawValue, stream, UInt8(bytes.count & 0xFF), UInt8(bytes.count >> 8)] + bytes + [end ? 1 : 0]
    }

    static func trailers(_ stream: UInt8) -> [UInt8] { [Operation.trailers.rawValue, stream] }
    static func reset(_ stream: UInt8) -> [UInt8] { [Operation.reset.rawValue, stream] }
}

enum EtcdSeeds {
    static func index(_ path: String) -> Int { GRPCEndpointFuzzing.methods.firstIndex { $0.path == path }! }

    /// A request of each kind worth starting from, with the method that takes it.
    static var requests: [(method: Int, bytes: [UInt8])] {
        var range = Etcdserverpb_RangeRequest()
        range.key = Data("a".utf8)
        range.rangeEnd = Data([0])
        range.limit = 10
        range.revision = 3
        range.sortOrder = .descend
        var put = Etcdserverpb_PutRequest()
        put.key = Data("k".utf8)
        put.value = Data([0, 0xFF])
        put.lease = 7
        put.prevKv = true
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data("a".utf8)
        delete.rangeEnd = Data("z".utf8)
        var compare = Etcdserverpb_Compare()
        compare.key = Data("a".utf8)
        compare.target = .mod
        compare.result = .greater
        compare.modRevision = 2
        var nested = Etcdserverpb_TxnRequest()
        nested.compare = [compare]
        nested.success = [.with { $0.requestPut = put }, .with { $0.requestRange = range }]
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [compare]
        txn.success = [.with { $0.requestTxn = nested }, .with { $0.requestDeleteRange = delete }]
        txn.failure = [.with { $0.requestPut = put }]
        var watch = Etcdserverpb_WatchRequest()
        watch.createRequest = .with {
            $0.key = Data("a".utf8)
            $0.rangeEnd = Data([0])
            $0.prevKv = true
            $0.progressNotify = true
        }
        var member = Etcdserverpb_MemberAddRequest()
        member.peerUrls = ["https://10.0.0.2:7000"]
        member.isLearner = true
        let messages: [(String, any SwiftProtobuf.Message)] = [
            ("/etcdserverpb.KV/Range", range), ("/etcdserverpb.KV/Put", put), ("/etcdserverpb.KV/DeleteRange", delete),
            ("/etcdserverpb.KV/Txn", txn), ("/etcdserverpb.KV/Compact", Etcdserverpb_CompactionRequest.with { $0.revision = 5 }),
            ("/etcdserverpb.Watch/Watch", watch), ("/etcdserverpb.Watch/Watch", Etcdserverpb_WatchRequest.with { $0.cancelRequest.watchID = 1 }),
            ("/etcdserverpb.Lease/LeaseGrant", Etcdserverpb_LeaseGrantRequest.with { $0.ttl = 60 }),
            ("/etcdserverpb.Lease/LeaseKeepAlive", Etcdserverpb_LeaseKeepAliveRequest.with { $0.id = 7 }),
            ("/etcdserverpb.Cluster/MemberAdd", member),
            ("/etcdserverpb.Maintenance/MoveLeader", Etcdserverpb_MoveLeaderRequest.with { $0.targetID = 2 }),
        ]
        var seeds: [(method: Int, bytes: [UInt8])] = messages.compactMap { path, message in
            (try? message.serializedBytes() as [UInt8]).map { (index(path), $0) }
        }
        // Every other method with an empty request.
        for position in GRPCEndpointFuzzing.methods.indices where !seeds.contains(where: { $0.method == position }) {
            seeds.append((position, []))
        }
        return seeds
    }

    static var programs: [[UInt8]] {
        typealias P = EtcdConnectionProgram
        let all = requests
        func request(_ path: String) -> [UInt8] { all.first { $0.method == index(path) }!.bytes }
        let put = request("/etcdserverpb.KV/Put")
        let txn = request("/etcdserverpb.KV/Txn")
        let watch = request("/etcdserverpb.Watch/Watch")
        var framedTxn: [UInt8] = [0] + withUnsafeBytes(of: UInt32(txn.count).bigEndian) { Array($0) } + txn
        let split = framedTxn.count / 2
        framedTxn = Array(framedTxn[..<split])
        let rest = Array(([0] + withUnsafeBytes(of: UInt32(txn.count).bigEndian) { Array($0) } + txn)[split...])
        // A call that decodes its request, on stream 7, so that every seed decodes something.
        let good = P.open(3, index("/etcdserverpb.KV/Put")) + P.message(3, put, end: true)
        return [
            P.open(0, index("/etcdserverpb.KV/Put")) + P.message(0, put, end: true),
            P.open(1, index("/etcdserverpb.KV/Txn"), flags: 4) + P.data(1, framedTxn) + P.data(1, rest, end: true),
            P.open(2, index("/etcdserverpb.Watch/Watch")) + P.message(2, watch) + P.message(2, [0x12, 0x02, 0x08, 0x01]) + P.trailers(2),
            P.open(2, index("/etcdserverpb.KV/Range")) + P.message(2, []) + P.message(2, [], end: true) + good,
            P.open(0, GRPCEndpointFuzzing.methods.count) + P.open(1, 0, flags: 2) + P.open(2, 1, flags: 0x4C) + P.reset(2) + good,
            P.open(0, index("/etcdserverpb.Maintenance/Snapshot")) + P.message(0, [], end: true),
            P.open(1, index("/etcdserverpb.KV/Put")) + P.data(1, [0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2], end: true) + good,
            P.open(1, index("/etcdserverpb.KV/Put")) + P.data(1, [1, 0, 0, 0, 0], end: true) + good,
        ]
    }

    /// A decoded request must survive its own encoding: the same message, the same bytes.
    static func checkRoundTrip(_ method: GRPCEndpointFuzzing.Method, _ request: any SwiftProtobuf.Message) -> FuzzOutcome {
        do {
            let encoded: [UInt8] = try request.serializedBytes()
            let again = try GRPCEndpointFuzzing.decodeRequest(method, encoded)
            let reencoded: [UInt8] = try again.serializedBytes()
            guard again.isEqualTo(message: request), reencoded == encoded else {
                return .failed("\(method.path): a decoded request changed across its encoding: \(FuzzCheck.hex(encoded))")
            }
            return .decoded
        } catch {
            return .failed("\(method.path): a decoded request does not survive its encoding: \(error)")
        }
    }
}
