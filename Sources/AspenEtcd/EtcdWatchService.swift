import AspenAuth
import AspenCore
import AspenKV
import AspenNode
import Foundation
import GRPCCore
import Synchronization

/// etcd's `Watch` service: one bidirectional stream carries any number of watches, each fed by
/// the node's watch hub (history replayed from a start revision, then live changes).
struct EtcdWatchService: Etcdserverpb_Watch.SimpleServiceProtocol {
    let gateway: EtcdGateway
    /// How often a watch created with progress_notify hears the current revision while idle.
    let progressIntervalMs: Int

    func watch(
        request: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>, response: RPCWriter<Etcdserverpb_WatchResponse>,
        context: ServerContext
    ) async throws {
        // Every watch's messages go through one outbox so that writes to the stream never interleave.
        let (outbox, post) = AsyncStream<Etcdserverpb_WatchResponse>.makeStream()
        let watches = Mutex<[Int64: Task<Void, Never>]>([:])
        let nextID = Mutex<Int64>(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outbox { try await response.write(message) }
            }
            do {
                for try await message in request {
                    switch message.requestUnion {
                    case .createRequest(let create)?:
                        let id = nextID.withLock { next -> Int64 in
                            if create.watchID != 0 {
                                next = max(next, create.watchID)
                                return create.watchID
                            }
                            next += 1
                            return next
                        }
                        let task = Task { await self.run(create, id: id, post: post) }
                        watches.withLock { $0[id]?.cancel(); $0[id] = task }
                    case .cancelRequest(let cancel)?:
                        if let task = watches.withLock({ $0.removeValue(forKey: cancel.watchID) }) {
                            task.cancel()
                            var canceled = Etcdserverpb_WatchResponse()
                            canceled.header = await gateway.header()
                            canceled.watchID = cancel.watchID
                            canceled.canceled = true
                            post.yield(canceled)
                        }
                    case .progressRequest?:
                        var progress = Etcdserverpb_WatchResponse()
                        progress.header = await gateway.header()
                        progress.watchID = -1
                        post.yield(progress)
                    case nil:
                        break
                    }
                }
            } catch {
                // The client went away; fall through to cleaning up.
            }
            for task in watches.withLock({ Array($0.values) }) { task.cancel() }
            post.finish()
            group.cancelAll()
        }
    }

    /// One watch: created, then events as the hub delivers them, until it ends or is cancelled.
    func run(_ create: Etcdserverpb_WatchCreateRequest, id: Int64, post: AsyncStream<Etcdserverpb_WatchResponse>.Continuation) async {
        var created = Etcdserverpb_WatchResponse()
        created.header = await gateway.header()
        created.watchID = id
        created.created = true
        func cancel(_ reason: String, compactRevision: Revision = 0) async {
            var canceled = Etcdserverpb_WatchResponse()
            canceled.header = await gateway.header()
            canceled.watchID = id
            canceled.canceled = true
            canceled.cancelReason = reason
            canceled.compactRevision = compactRevision
            post.yield(canceled)
        }
        guard let selection = EtcdGateway.selection(key: create.key, rangeEnd: create.rangeEnd) else {
            post.yield(created)
            await cancel("etcdserver: the range's end is not after its start")
            return
        }
        do {
            try gateway.authorize(.watch(selection.bounds), "Watch")
        } catch let error as RPCError {
            post.yield(created)
            await cancel(error.message)
            return
        } catch {
            post.yield(created)
            await cancel("\(error)")
            return
        }
        let noPut = create.filters.contains(.noput)
        let noDelete = create.filters.contains(.nodelete)
        let subscription: WatchHub.Subscription
        do {
            subscription = try gateway.node.watches.subscribe(
                WatchRequest(
                    bounds: selection.bounds, startRevision: max(0, create.startRevision), withPrevious: create.prevKv,
                    progressIntervalMs: create.progressNotify ? progressIntervalMs : 0))
        } catch {
            post.yield(created)
            await cancel("\(error)")
            return
        }
        post.yield(created)
        await withTaskCancellationHandler {
            for await message in subscription.messages {
                subscription.consumed()
                switch message {
                case .created: break
                case .events(let events):
                    let kept = events.filter { !(noPut && $0.kind == .put) && !(noDelete && $0.kind == .delete) }
                    guard let last = kept.last else { continue }
                    var update = Etcdserverpb_WatchResponse()
                    update.header = await gateway.header(revision: max(last.revision, gateway.node.watches.revision))
                    update.watchID = id
                    update.events = kept.map { event in
                        var out = Mvccpb_Event()
                        out.type = event.kind == .put ? .put : .delete
                        out.kv = EtcdGateway.keyValue(event.keyValue)
                        if let previous = event.previous { out.prevKv = EtcdGateway.keyValue(previous) }
                        return out
                    }
                    post.yield(update)
                case .progress(let revision):
                    var progress = Etcdserverpb_WatchResponse()
                    progress.header = await gateway.header(revision: revision)
                    progress.watchID = id
                    post.yield(progress)
                case .ended(let end):
                    switch end {
                    case .compacted(let oldest):
                        await cancel("etcdserver: mvcc: required revision has been compacted", compactRevision: oldest)
                    default:
                        await cancel("\(end)")
                    }
                    return
                }
            }
        } onCancel: {
            subscription.cancel()
        }
    }
}
