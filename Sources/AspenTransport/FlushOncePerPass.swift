import NIOCore

/// A channel handler that may write several messages in one pass of its event loop and flushes
/// them together.
public protocol FlushesOncePerPass: AnyObject {
    var context: ChannelHandlerContext? { get }
    var flushScheduled: Bool { get set }
}

extension FlushesOncePerPass {
    /// Flushes once the loop has run what is queued on it, however many writes ask meanwhile:
    /// messages released together (the answers one Raft batch releases, the calls started in
    /// one turn) leave in one write, and one TLS record or one pass of the HTTP/2 handler, rather
    /// than one each. Call on the handler's event loop.
    public func flushSoon() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            handler.value.flushScheduled = false
            handler.value.context?.flush()
        }
    }
}
