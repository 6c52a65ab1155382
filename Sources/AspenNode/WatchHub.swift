import AspenCore
import AspenKV
import AspenStorage
import Synchronization

/// Fans committed changes out to watchers. The node publishes each applied batch's events once;
/// the hub never blocks it: every watcher has a bounded queue, and one that falls behind is cut
/// off with `lagged` instead of slowing the cluster. A watch from a past revision replays history
/// from the store first, then continues live without a gap or a duplicate.
public final class WatchHub: Sendable {
    let storage: any NodeStorage
    let limits: Limits

    struct Watcher {
        var bounds: KeyBounds
        var withPrevious: Bool
        var continuation: AsyncStream<WatchMessage>.Continuation
        /// Messages queued and not yet taken by the watcher's sender.
        var queued = 0
        /// While replaying, live events wait here; nil once live.
        var held: [WatchEvent]? = []
        /// Live events at or before this revision were replayed already.
        var liveAfter: Revision = .max
    }

    struct State {
        var watchers: [Int: Watcher] = [:]
        var nextID = 0
        var closed = false
        /// The newest revision published (or found in the store at start).
        var revision: Revision = 0
    }

    private let state = Mutex(State())

    /// Quick callbacks, run on the applying path: `changed` when a change to `bounds` is
    /// answered to its writer (before its batch commits), again after the batch commits, and
    /// after a snapshot replaces the state (whose changes no event lists). A cache dropped at
    /// the answer and refilled before the commit read the old state; the second call drops that.
    private let observers = Mutex<[(bounds: KeyBounds, changed: @Sendable () -> Void)]>([])

    /// Calls the observers whose bounds `events` touch.
    public func notifyObservers(_ events: [WatchEvent]) {
        for observer in observers.withLock({ $0 }) where events.contains(where: { observer.bounds.contains($0.keyValue.key) }) {
            observer.changed()
        }
    }

    /// Registers a cache's invalidation: `changed` must not block.
    public func observe(_ bounds: KeyBounds, _ changed: @escaping @Sendable () -> Void) {
        observers.withLock { $0.append((bounds, changed)) }
    }

    public init(storage: any NodeStorage, limits: Limits = .standard) {
        self.storage = storage
        self.limits = limits
        if let revisions = try? storage.revisions() { state.withLock { $0.revision = revisions.current } }
    }

    public var watcherCount: Int { state.withLock { $0.watchers.count } }

    /// A registered watch: its messages, and a way to say one was consumed.
    public struct Subscription: Sendable {
        public let id: Int
        public let messages: AsyncStream<WatchMessage>
        let hub: WatchHub

        /// The sender took one message off the queue.
        public func consumed() { hub.consumed(id) }
        public func progress() { hub.progress(id) }
        public func cancel() { hub.remove(id, ending: nil) }
    }

    /// Registers a watch. Past revisions (from `request.startRevision`) are replayed from the
    /// store, then live changes follow.
    public func subscribe(_ request: WatchRequest) throws(WatchEnd) -> Subscription {
        let (stream, continuation) = AsyncStream<WatchMessage>.makeStream()
        let id: Int = try state.withLock { state throws(WatchEnd) in
            guard !state.closed else { throw .shutdown }
            guard state.watchers.count < limits.watchersMax else {
                throw .failed("this node already serves watchersMax (\(limits.watchersMax)) watches")
            }
            state.nextID += 1
            state.watchers[state.nextID] = Watcher(bounds: request.bounds, withPrevious: request.withPrevious, continuation: continuation)
            return state.nextID
        }
        let subscription = Subscription(id: id, messages: stream, hub: self)
        Task { await self.replay(id, request) }
        return subscription
    }

    /// Replays history through the store's current revision, then turns the watcher live.
    func replay(_ id: Int, _ request: WatchRequest) async {
        do {
            let (current, compacted) = try storage.revisions()
            guard yield(id, .created(revision: current)) else { return }
            var next = request.startRevision > 0 ? request.startRevision : current + 1
            if request.startRevision > 0 && request.startRevision <= compacted {
                remove(id, ending: .compacted(oldestAvailable: compacted + 1))
                return
            }
            while next <= current {
                // Replay is pulled, so it waits for room rather than lagging.
                while queued(id).map({ $0 >= limits.watchQueueMessagesMax / 2 }) == true { try await Task.sleep(for: .milliseconds(5)) }
                guard queued(id) != nil else { return }
                switch try storage.changes(
                    in: request.bounds, from: next, through: current, withPrevious: request.withPrevious,
                    limit: limits.watchReplayPageEvents)
                {
                case .failure(.compacted(_, let oldest)):
                    remove(id, ending: .compacted(oldestAvailable: oldest))
                    return
                case .failure(let error):
                    remove(id, ending: .failed("\(error)"))
                    return
                case .success(let page):
                    if !page.events.isEmpty { guard yield(id, .events(page.events)) else { return } }
                    next = page.nextRevision
                }
            }
            goLive(id, after: current)
        } catch {
            remove(id, ending: .failed("the store could not be read: \(error)"))
        }
    }

    func goLive(_ id: Int, after revision: Revision) {
        let held: [WatchEvent] = state.withLock { state in
            guard var watcher = state.watchers[id] else { return [] }
            let held = watcher.held ?? []
            watcher.held = nil
            watcher.liveAfter = revision
            state.watchers[id] = watcher
            return held.filter { $0.revision > revision }
        }
        if !held.isEmpty { _ = yield(id, .events(held)) }
    }

    /// Called by the node with the events of each applied batch, in order. Never blocks.
    public func publish(_ events: [WatchEvent]) {
        guard let last = events.last else { return }
        notifyObservers(events)
        var lagging: [Int] = []
        state.withLock { state in
            state.revision = max(state.revision, last.revision)
            for (id, var watcher) in state.watchers {
                var matching = events.filter { watcher.bounds.contains($0.keyValue.key) }
                guard !matching.isEmpty else { continue }
                if !watcher.withPrevious { for index in matching.indices { matching[index].previous = nil } }
                if watcher.held != nil {
                    watcher.held!.append(contentsOf: matching)
                    if watcher.held!.count > limits.watchQueueMessagesMax * limits.watchReplayPageEvents { lagging.append(id) }
                    state.watchers[id] = watcher
                    continue
                }
                matching.removeAll { $0.revision <= watcher.liveAfter }
                guard !matching.isEmpty else { continue }
                if watcher.queued >= limits.watchQueueMessagesMax {
                    lagging.append(id)
                    continue
                }
                watcher.queued += 1
                watcher.continuation.yield(.events(matching))
                state.watchers[id] = watcher
            }
        }
        for id in lagging { remove(id, ending: .lagged) }
    }

    /// Sends a progress message (keep-alive) to a live watcher whose queue is empty.
    func progress(_ id: Int) {
        state.withLock { state in
            guard let watcher = state.watchers[id], watcher.held == nil, watcher.queued == 0 else { return }
            state.watchers[id]!.queued += 1
            watcher.continuation.yield(.progress(revision: state.revision))
        }
    }

    /// Ends every watch with `ending` (e.g. after this node caught up by snapshot, when the
    /// changes in between cannot be told apart).
    public func endAll(_ ending: WatchEnd) {
        for observer in observers.withLock({ $0 }) { observer.changed() }
        for id in state.withLock({ Array($0.watchers.keys) }) { remove(id, ending: ending) }
    }

    public var revision: Revision { state.withLock { $0.revision } }

    /// Ends every watch with `shutdown` and refuses new ones.
    public func close() {
        let ids = state.withLock { state in
            state.closed = true
            return Array(state.watchers.keys)
        }
        for id in ids { remove(id, ending: .shutdown) }
    }

    // MARK: Queue accounting

    private func yield(_ id: Int, _ message: WatchMessage) -> Bool {
        state.withLock { state in
            guard state.watchers[id] != nil else { return false }
            state.watchers[id]!.queued += 1
            state.watchers[id]!.continuation.yield(message)
            return true
        }
    }

    private func queued(_ id: Int) -> Int? { state.withLock { $0.watchers[id]?.queued } }

    func consumed(_ id: Int) {
        state.withLock { state in
            if state.watchers[id] != nil { state.watchers[id]!.queued -= 1 }
        }
    }

    /// Ends a watch: its last message says why (none when the watcher itself cancelled).
    func remove(_ id: Int, ending: WatchEnd?) {
        guard let watcher = state.withLock({ $0.watchers.removeValue(forKey: id) }) else { return }
        if let ending { watcher.continuation.yield(.ended(ending)) }
        watcher.continuation.finish()
    }
}
