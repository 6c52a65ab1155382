import NIOCore

/// Runs Swift concurrency jobs on one NIO event loop. Tasks that prefer it (and the actors they
/// call into that run on the same loop) run on the thread that also reads and writes their
/// connections, so a request is decoded, served and answered without handing over to another
/// thread: on a small machine, each hand-over costs a wake-up and a context switch, which add up
/// to more than the work itself.
public final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    // Safe: `loop` is immutable and event loops are thread-safe.
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

extension EventLoop {
    /// Runs `body` at once when called on this loop (as a task preferring it usually is), and
    /// queues it there otherwise: no hop when none is needed.
    public func executeHereOrQueue(_ body: @escaping @Sendable () -> Void) {
        if inEventLoop {
            body()
        } else {
            execute(body)
        }
    }
}
