import AspenBlob
import AspenCI
import AspenCore
import AspenForge
import AspenKV
import AspenTransport
import Foundation

// Merging a patch: the forge makes the target's new commit in its cache, stores it, and commits
// the target ref, the pack and the caller's signed `merged` change in one transaction.
extension ForgeService {
    /// Merges the patch `signed` names (a `merged` change by the caller) into its target, after
    /// the target branch's protection (approvals, statuses) is satisfied. Returns the target's
    /// new commit.
    func mergePatch(_ repo: String, _ signed: SignedCobChange, caller: NodeKey) async throws -> String {
        try ForgeNames.validate(repo: repo, limits: limits)
        let change = try signed.verified(limits: limits)
        guard change.author == caller.bytes else { throw ForgeError.badInput("a merge must be signed by the key of the connection that asks for it") }
        try CobRules.validate(change, limits: limits)
        guard change.type == .patch, let object = change.object, change.operations.count == 1, case .merged(let revision, let strategy) = change.operations[0]
        else { throw ForgeError.badInput("a merge is one change that records the merged revision") }
        return try await locks.withLock(repo) {
            let state = try await self.state(repo)
            let patch = try Patch.fold(try await self.changes(repo, .patch, object), maintainers: Set(state.record.maintainers))
            guard patch.open, patch.merged == nil else { throw ForgeError.conflict("patch \(patch.id.short) is \(patch.merged != nil ? "merged" : "closed")") }
            guard revision == patch.revisions.count else {
                throw ForgeError.conflict("patch \(patch.id.short) is at revision \(patch.revisions.count): merge the latest")
            }
            let who = caller.hex
            guard who == patch.author || state.record.maintainers.contains(who) else {
                throw ForgeError.badInput("only the patch's author or a maintainer merges it")
            }
            let targetRef = "refs/heads/" + patch.target
            if let (rule, _) = state.protections[patch.target] {
                let approvals = patch.approvals(maintainers: Set(state.record.maintainers))
                guard approvals >= rule.requiredApprovals else {
                    throw ForgeError.conflict(
                        "\(patch.target) requires \(rule.requiredApprovals) approval(s) by maintainers other than the author; revision \(revision) has \(approvals)")
                }
                // A status is met by one recorded on the revision, or by CI's status of its commit
                // (`success`, or `skipped` for a job its paths filtered out).
                let passed = CommitStatus.satisfied(try await self.commitStatuses(repo, patch.latest.head))
                let missing = patch.missingStatuses(rule.requiredStatuses).filter { !passed.contains($0) }
                guard missing.isEmpty else {
                    throw ForgeError.conflict("\(patch.target) requires status \(missing.joined(separator: ", ")) to succeed on revision \(revision)")
                }
            }
            let pushing = self.sessions.withLock { $0.values.contains { $0.repo == repo } }
            let path = try await self.cache.sync(state, blobs: self.blobs, pushing: pushing)
            let old = state.refs[targetRef]
            let head = patch.latest.head
            let new = try await self.mergeCommit(path, strategy: strategy, target: old, head: head, patch: patch)
            // A commit the forge made goes to the blob store as a pack of what the target lacked.
            var stored: (name: String, reference: BlobReference)?
            if new != head {
                stored = try await self.packMerge(path, new: new, old: old, repo: repo)
            }
            let writes = self.changeWrites(repo, change, signed, try await self.store(signed, repo: repo))
            let refKey = ForgeKeys.ref(repo, targetRef)
            var compares = [
                Compare(key: ForgeKeys.repo(repo), .createRevision(state.createRevision)),
                old.map { Compare(key: refKey, .value(Array($0.utf8))) } ?? .absent(refKey),
            ] + writes.compares
            let ruleKey = ForgeKeys.protection(repo, patch.target)
            compares.append(state.protections[patch.target].map { Compare(key: ruleKey, .modRevision($0.revision)) } ?? .absent(ruleKey))
            var operations: [TransactionOperation] = [.put(Put(key: refKey, value: Array(new.utf8)))] + writes.operations
            if let stored { operations.append(.put(Put(key: ForgeKeys.pack(repo, stored.name), value: stored.reference.encoded))) }
            let update = RefUpdate(old: old ?? String(repeating: "0", count: head.utf8.count), new: new, name: targetRef)
            let record = PushRecord(
                updates: [update], packs: stored.map { [$0.name] } ?? [], pusher: who, nowMs: self.node.nowMs(), node: await self.node.id.rawValue)
            operations += Self.pushWrites(repo, record)
            guard case .transaction(let result) = try await self.node.write(.transaction(Transaction(compares: compares, success: operations)), forwarding: true)
            else { throw ForgeError.failed("unexpected result of the merge transaction") }
            guard result.succeeded else {
                throw ForgeError.conflict("\(patch.target) or the patch changed while it was merged; nothing changed: try again")
            }
            // This node's cache follows at once (the lock is held).
            try? await Git.check(["update-ref", targetRef, new], in: path)
            self.metrics.pushes.add(1, ordering: .relaxed)
            return new
        }
    }

    /// CI's statuses of a commit (`aspen ci status`), as applied here.
    func commitStatuses(_ repo: String, _ sha: String) async throws -> [CommitStatus] {
        let range = CIKeys.statuses(repo, sha).range
        return try await RepoCache.scan(node, start: range.start, end: range.end).compactMap { try? CommitStatus(decoding: $0.value, limits: limits) }
    }

    /// The target's new commit for `strategy`: the head itself (fast-forward), a merge commit of
    /// the target and the head, or one commit on the target with the head's tree merged in.
    func mergeCommit(_ path: String, strategy: MergeStrategy, target: String?, head: String, patch: Patch) async throws -> String {
        let identity = ["GIT_AUTHOR_NAME": "Aspen forge", "GIT_AUTHOR_EMAIL": "forge@aspen", "GIT_COMMITTER_NAME": "Aspen forge", "GIT_COMMITTER_EMAIL": "forge@aspen"]
        guard let target else {
            // No target yet: the branch starts at the head, whatever the strategy.
            return head
        }
        let fastForward = try await Git.run(["merge-base", "--is-ancestor", target, head], in: path)
        switch strategy {
        case .fastForward:
            guard fastForward.status == 0 else {
                throw ForgeError.conflict("\(patch.target) has moved on: revision \(patch.latest.number) does not fast-forward it (merge with --strategy merge or squash, or push a rebased revision)")
            }
            return head
        case .merge, .squash:
            let merged = try await Git.run(["merge-tree", "--write-tree", target, head], in: path)
            guard merged.status == 0 else {
                throw ForgeError.conflict("revision \(patch.latest.number) conflicts with \(patch.target): push a rebased revision")
            }
            guard let tree = merged.text.split(separator: "\n").first.map(String.init), ForgeNames.isObjectID(tree) else {
                throw ForgeError.failed("git merge-tree gave no tree")
            }
            let message = strategy == .merge
                ? "Merge patch \(patch.id.short): \(patch.title)\n"
                : "\(patch.title)\n\n\(patch.description.isEmpty ? "" : patch.description + "\n\n")Patch \(patch.id.short), revision \(patch.latest.number)\n"
            let parents = strategy == .merge ? ["-p", target, "-p", head] : ["-p", target]
            let commit = try await Git.check(["commit-tree", tree] + parents, in: path, input: Array(message.utf8), environment: identity)
            return commit.text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Packs what `new` has that `old` lacks (the forge's own commit and trees), moves the pack
    /// into the cache and stores it in the blob store.
    func packMerge(_ path: String, new: String, old: String?, repo: String) async throws -> (name: String, reference: BlobReference) {
        let directory = (path as NSString).appendingPathComponent("objects/pack")
        let staging = (directory as NSString).appendingPathComponent("incoming-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let revisions = new + "\n" + (old.map { "^" + $0 + "\n" } ?? "")
        let packed = try await Git.check(["pack-objects", "--revs", "-q", (staging as NSString).appendingPathComponent("pack")], in: path, input: Array(revisions.utf8))
        let hash = packed.text.trimmingCharacters(in: .whitespacesAndNewlines)
        let name = "pack-" + hash
        guard ForgeNames.isPackName(name) else { throw ForgeError.failed("git pack-objects named no pack") }
        let added = try await blobs.addFile((staging as NSString).appendingPathComponent(name + ".pack"), tag: "aspen/forge/incoming/\(repo)/\(name)", tagTtlMs: Self.incomingTagTtlMs)
        for suffix in [".pack", ".idx"] {
            _ = rename((staging as NSString).appendingPathComponent(name + suffix), (directory as NSString).appendingPathComponent(name + suffix))
        }
        return (name, BlobReference(hash: added.hash, size: added.size))
    }
}
