import Foundation

/// Returns on SIGINT or SIGTERM.
public func waitForTerminationSignal() async {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let queue = DispatchQueue(label: "aspen.signals")
        let resumed = SignalLatch(continuation)
        for number in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { resumed.fire() }
            source.resume()
            SignalLatch.keep(source)
        }
    }
}

/// Resumes once, whichever signal comes first.
final class SignalLatch: @unchecked Sendable {
    // @unchecked: `fired` is only touched on the one serial signal queue.
    private var continuation: CheckedContinuation<Void, Never>?
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }

    func fire() {
        continuation?.resume()
        continuation = nil
    }

    static func keep(_ source: any DispatchSourceSignal) { sources.append(source) }
}
