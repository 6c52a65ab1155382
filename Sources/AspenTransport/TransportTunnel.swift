import AspenCore
import NIOCore
import NIOPosix
import Synchronization

/// Frames read from a tunnel, as they arrive; the sender is slowed (by TCP) while they are not read.
public typealias TunnelInbound = NIOAsyncChannelInboundStream<ByteBuffer>
/// Frames written to a tunnel; each write waits while the peer is slow to read.
public typealias TunnelOutbound = NIOAsyncChannelOutboundWriter<ByteBuffer>

/// A connection carrying a byte stream both ways as length-prefixed frames (`aspen/git/1`): no
/// request ids, no answers, and at most `bufferedFramesMax` frames held on either side before
/// reading stops, so a slow reader slows the writer rather than filling memory.
public enum TransportTunnel {
    /// The largest frame either side accepts.
    public static let frameBytesMax = 1 << 20
    /// Frames read ahead of the handler before the socket stops being read.
    static let bufferedFramesMax = 16

    static func wrap(_ channel: any Channel) throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
            wrappingChannelSynchronously: channel,
            configuration: .init(backPressureStrategy: .init(lowWatermark: bufferedFramesMax / 4, highWatermark: bufferedFramesMax)))
    }

    /// Opens a tunnel to the node at `host:port` on `protocol`, its key pinned to `expecting`.
    /// Use the result with `executeThenClose`, which closes it when the body returns.
    public static func connect(
        host: String, port: Int, protocol name: String, tls: TLSMaterial, expecting: NodeKey?,
        options: TransportOptions = TransportOptions(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let made = Mutex<NIOAsyncChannel<ByteBuffer, ByteBuffer>?>(nil)
        _ = try await TransportConnection.open(
            host: host, port: port, protocol: name, tls: tls, expecting: expecting, options: options, group: group
        ) { channel in
            try channel.pipeline.syncOperations.addHandlers([
                ByteToMessageHandler(FrameDecoder(limit: frameBytesMax)), MessageToByteHandler(FrameEncoder()),
            ])
            let wrapped = try wrap(channel)
            made.withLock { $0 = wrapped }
        }
        guard let channel = made.withLock({ $0 }) else { throw TransportError.connectionClosed }
        return channel
    }
}
