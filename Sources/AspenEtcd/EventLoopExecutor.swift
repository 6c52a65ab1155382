import NIOCore

/// Runs Swift concurrency jobs on one NIO event loop. Tasks that prefer it (and the default
/// actors they call into while those are free) run on the thread that also reads and writes
/// their connections, so a request is decoded, served and answered without handing over to
/// another thread.
final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
