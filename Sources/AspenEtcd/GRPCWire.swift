import NIOCore
import NIOHTTP2

/// A message as gRPC puts it in DATA frames: one byte saying it is not compressed, its length
/// as four bytes, then its bytes. The same on both ends of a call.
func grpcFramed(_ message: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
    var buffer = allocator.buffer(capacity: 5 + message.count)
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt32(message.count))
    buffer.writeBytes(message)
    return buffer
}

/// One HTTP/2 receive window (a connection's or a stream's): DATA bytes taken and not yet
/// given back to the peer, given back in WINDOW_UPDATEs of at least `threshold` bytes.
struct ReceiveWindow {
    static let threshold = 1 << 15
    private var unacknowledged = 0

    /// Counts `length` bytes taken. When enough have gathered and `announce` holds, returns the
    /// increment to send (the count starts again); otherwise nil.
    mutating func take(_ length: Int, announce: Bool = true) -> Int? {
        unacknowledged += length
        guard unacknowledged >= Self.threshold, announce else { return nil }
        defer { unacknowledged = 0 }
        return unacknowledged
    }
}

extension HTTP2Frame.FramePayload.Data {
    /// The bytes this frame takes from the receive windows, padding included.
    var windowBytes: Int { data.readableBytes + (paddingBytes ?? 0) }
}
