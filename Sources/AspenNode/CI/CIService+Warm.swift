import AspenForge
import AspenKV
import Foundation

// A node that runs jobs pulls a push's pack into its forge cache when the push commits, rather
// than when a CI job it claimed checks the commit out: a job on a node that did not take the
// push would otherwise wait for that pull first (50–80 ms for a small pack, more for a large one).
extension CIService {
    /// Starts warming this node's forge cache on pushes; called once, on a node with job workers.
    /// A wake-up that finds the push event already taken by the leader warms nothing: the job's
    /// checkout then pulls, as it always can.
    func startWarming() {
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let range = ForgeKeys.outbox.range
        // Called on the applying path, after the push's batch commits: only a signal here.
        node.watches.observe(KeyBounds(start: range.start, end: range.end)) { wake.yield() }
        let task = Task { [self] in
            for await _ in wakes {
                guard let entries = try? await scan(ForgeKeys.outbox, limit: Self.pushesPerPass) else { continue }
                var repos: [String] = []
                for entry in entries {
                    if let event = try? PushEvent(decoding: entry.value, limits: limits), !repos.contains(event.repo) { repos.append(event.repo) }
                }
                for repo in repos where !Task.isCancelled { _ = try? await forge.prepare(repo) }
            }
        }
        warming.withLock { $0 = task }
    }
}
