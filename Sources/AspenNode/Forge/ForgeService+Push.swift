import AspenBlob
import AspenCore
import AspenForge
import AspenKV
import AspenTransport
import Foundation

// A push: the receive hook calls the node, which stores the pack in the blob store and commits the
// refs with one compare-and-swap transaction; and the repository calls of `aspen repo`.
extension ForgeService {
    /// How long a pack uploaded for a push is kept by its tag alone: the push's commit then keeps
    /// it by reference; a push that died before its commit leaves it to blob collection.
    static let incomingTagTtlMs: UInt64 = 10 * 60 * 1000

    func hook(_ body: [UInt8]) async -> ForgeHookAnswer {
        let request: ForgeHookRequest
        do {
            request = try ForgeHookRequest(decoding: body, limits: limits)
        } catch {
            return ForgeHookAnswer(accepted: false, message: "undecodable hook request: \(error)")
        }
        guard let session = sessions.withLock({ $0[request.token] }) else {
            return ForgeHookAnswer(accepted: false, message: "this push is no longer known to the node")
        }
        // The lock is held until git has moved the cache's refs (released when receive-pack
        // exits): a sync for a fetch must not set them between the commit and git's own update.
        await locks.acquire(session.repo)
        session.locked.withLock { $0 = true }
        if sessions.withLock({ $0[request.token] }) == nil {
            // The session ended meanwhile; whoever takes the flag releases the lock.
            if session.locked.withLock({ flag in defer { flag = false }; return flag }) { await locks.release(session.repo) }
            return ForgeHookAnswer(accepted: false, message: "this push is no longer known to the node")
        }
        do {
            try await commit(request, session: session)
            metrics.pushes.add(1, ordering: .relaxed)
            return ForgeHookAnswer(accepted: true, message: "")
        } catch let error as ForgeError {
            if case .conflict = error { metrics.pushesRejected.add(1, ordering: .relaxed) }
            return ForgeHookAnswer(accepted: false, message: "\(error)")
        } catch {
            logger.warning("push failed", metadata: ["repo": "\(session.repo)", "error": "\(error)"])
            return ForgeHookAnswer(accepted: false, message: "the push could not be committed: \(error)")
        }
    }

    /// The packs git received for this push (none for a push that only deletes or moves refs to
    /// objects the repository has).
    static func packs(in quarantine: String) throws -> [(name: String, path: String)] {
        let directory = (quarantine as NSString).appendingPathComponent("pack")
        guard FileManager.default.fileExists(atPath: directory) else { return [] }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return names.filter { $0.hasSuffix(".pack") && ForgeNames.isPackName(String($0.dropLast(5))) }.sorted().map {
            (String($0.dropLast(5)), (directory as NSString).appendingPathComponent($0))
        }
    }

    /// The quarantine the hook named, if it is one of this repository's (git's
    /// `objects/tmp_objdir-incoming-*` in the cache): nil when git received no objects.
    func quarantinePath(_ given: String, repo: String) throws -> String? {
        guard !given.isEmpty else { return nil }
        let objects = ((cache.path(repo) as NSString).appendingPathComponent("objects") as NSString).standardizingPath
        let path = (given as NSString).standardizingPath
        guard (path as NSString).deletingLastPathComponent == objects, (path as NSString).lastPathComponent.hasPrefix("tmp_objdir-") else {
            throw ForgeError.badInput("the push's quarantine \(given) is not one of \(repo)'s")
        }
        guard FileManager.default.fileExists(atPath: path) else { throw ForgeError.failed("the push's quarantine is gone; push again") }
        return path
    }

    /// Every id a push sets a ref to is in the cache or the push's quarantine (one `git cat-file
    /// --batch-check` for all): refs never name objects the cluster lacks.
    func checkObjects(_ updates: [RefUpdate], quarantine: String?, repo: String) async throws {
        let wanted = Set(updates.map(\.new).filter { !ForgeNames.isZero($0) })
        guard !wanted.isEmpty else { return }
        let path = cache.path(repo)
        var environment: [String: String] = [:]
        if let quarantine {
            environment = ["GIT_OBJECT_DIRECTORY": quarantine, "GIT_ALTERNATE_OBJECT_DIRECTORIES": (path as NSString).appendingPathComponent("objects")]
        }
        let checked = try await Git.check(
            ["cat-file", "--batch-check"], in: path, input: Array(wanted.sorted().joined(separator: "\n").appending("\n").utf8), environment: environment)
        for line in checked.text.split(separator: "\n") where line.hasSuffix(" missing") {
            throw ForgeError.badInput("the push sets a ref to \(line.prefix(12)), an object neither it nor \(repo) holds")
        }
    }

    /// Refuses what git would refuse only after the hook (and so after the commit): a ref directly
    /// under `refs/`, and a ref whose name is a directory of another's (`refs/heads/x` beside
    /// `refs/heads/x/y`), among the refs the push leaves.
    static func checkNames(_ updates: [RefUpdate], against refs: [String: String]) throws {
        var after = Set(refs.keys)
        for update in updates {
            if ForgeNames.isZero(update.new) { after.remove(update.name) } else { after.insert(update.name) }
        }
        let sorted = after.sorted()
        for update in updates where !ForgeNames.isZero(update.new) {
            guard update.name.split(separator: "/").count >= 3 else {
                throw ForgeError.badInput("\(update.name): a ref lives under a directory of refs/ (refs/heads/…, refs/tags/…)")
            }
            var parent = update.name
            while let slash = parent.lastIndex(of: "/"), parent[..<slash] != "refs" {
                parent = String(parent[..<slash])
                if after.contains(parent) { throw ForgeError.badInput("\(update.name) cannot exist beside \(parent): git keeps refs as files") }
            }
            let prefix = update.name + "/"
            var low = 0
            var high = sorted.count
            while low < high {
                let middle = (low + high) / 2
                if sorted[middle] < prefix { low = middle + 1 } else { high = middle }
            }
            if low < sorted.count, sorted[low].hasPrefix(prefix) {
                throw ForgeError.badInput("\(update.name) cannot exist beside \(sorted[low]): git keeps refs as files")
            }
        }
    }

    func commit(_ request: ForgeHookRequest, session: PushSession) async throws {
        let repo = session.repo
        guard !request.updates.isEmpty else { return }
        // Pushes to refs/for/BRANCH open or revise patches; they set no ref.
        let patchUpdates = request.updates.filter { $0.name.hasPrefix("refs/for/") }
        let patchChanges = try patchChanges(for: patchUpdates, session: session, repo: repo)
        var request = request
        request.updates.removeAll { $0.name.hasPrefix("refs/for/") }
        guard request.updates.count <= limits.forgeRefUpdatesMax else {
            throw ForgeError.badInput("a push of \(request.updates.count) refs exceeds forgeRefUpdatesMax (\(limits.forgeRefUpdatesMax))")
        }
        for update in request.updates { try update.validate(limits: limits) }
        let clock = ContinuousClock()
        let started = clock.now
        let state = try await state(repo)
        guard state.createRevision == session.createRevision else {
            throw ForgeError.conflict("\(repo) was deleted and created again while this push ran: push again")
        }
        // Three keys per ref (its compare, its write, its branch rule) and a few more must fit one
        // transaction: refused before anything is stored.
        let keys = 4 + request.updates.count * 3 + PushRecord.packsMax
        guard keys <= limits.batchKeysMax else {
            throw ForgeError.badInput("a push of \(request.updates.count) refs needs \(keys) keys in one transaction, over batchKeysMax (\(limits.batchKeysMax))")
        }
        try Self.checkNames(request.updates, against: state.refs)
        let created = request.updates.filter { ForgeNames.isZero($0.old) && !ForgeNames.isZero($0.new) }.count
        let deleted = request.updates.filter { ForgeNames.isZero($0.new) }.count
        guard state.refs.count + created - deleted <= limits.forgeRefsMax else {
            throw ForgeError.badInput("\(repo) would hold \(state.refs.count + created - deleted) refs, more than forgeRefsMax (\(limits.forgeRefsMax))")
        }
        // Stale before anything is uploaded: say so at once.
        try Self.checkCurrent(request.updates, against: state.refs)
        try await checkProtections(request, state: state, repo: repo)
        let quarantine = try quarantinePath(request.quarantine, repo: repo)
        let packs = try quarantine.map { try Self.packs(in: $0) } ?? []
        try await checkObjects(request.updates + patchUpdates, quarantine: quarantine, repo: repo)
        guard packs.count <= PushRecord.packsMax else {
            throw ForgeError.badInput("a push of \(packs.count) packs exceeds the \(PushRecord.packsMax) a push may bring")
        }
        guard state.packs.count + packs.count <= limits.forgePacksMax else {
            throw ForgeError.unavailable("\(repo) holds \(state.packs.count) packs, at forgePacksMax (\(limits.forgePacksMax)): it must be repacked first")
        }
        var stored: [(name: String, reference: BlobReference)] = []
        for pack in packs {
            let size = (try FileManager.default.attributesOfItem(atPath: pack.path)[.size] as? NSNumber)?.uint64Value ?? 0
            guard size <= limits.forgePackBytesMax else {
                throw ForgeError.badInput("a pack of \(size) bytes exceeds forgePackBytesMax (\(limits.forgePackBytesMax))")
            }
            let added = try await blobs.addFile(pack.path, tag: "aspen/forge/incoming/\(repo)/\(pack.name)", tagTtlMs: Self.incomingTagTtlMs)
            stored.append((pack.name, BlobReference(hash: added.hash, size: added.size)))
            metrics.packBytes.add(Int(added.size), ordering: .relaxed)
        }
        let storedAt = clock.now
        defer {
            logger.info(
                "push handled", metadata: [
                    "repo": "\(repo)", "refs": "\(request.updates.count)", "packBytes": "\(stored.reduce(0) { $0 + $1.reference.size })",
                    "storeMs": "\(Self.milliseconds(storedAt - started))", "commitMs": "\(Self.milliseconds(clock.now - storedAt))",
                ])
        }
        var compares = [Compare(key: ForgeKeys.repo(repo), .createRevision(state.createRevision))]
        var operations: [TransactionOperation] = []
        for update in request.updates {
            let key = ForgeKeys.ref(repo, update.name)
            compares.append(ForgeNames.isZero(update.old) ? .absent(key) : Compare(key: key, .value(Array(update.old.utf8))))
            operations.append(
                ForgeNames.isZero(update.new) ? .delete(Delete(.key(key))) : .put(Put(key: key, value: Array(update.new.utf8))))
        }
        for pack in stored { operations.append(.put(Put(key: ForgeKeys.pack(repo, pack.name), value: pack.reference.encoded))) }
        for (change, signed) in patchChanges {
            let writes = changeWrites(repo, change, signed, try await store(signed, repo: repo))
            compares += writes.compares
            operations += writes.operations
        }
        // The rules checked are the rules applied: a branch protected meanwhile fails the compare.
        for branch in Set(request.updates.compactMap { Self.branch($0.name) }) {
            let key = ForgeKeys.protection(repo, branch)
            compares.append(state.protections[branch].map { Compare(key: key, .modRevision($0.revision)) } ?? .absent(key))
        }
        let record = PushRecord(
            updates: request.updates + patchUpdates, packs: stored.map(\.name), pusher: session.pusher.hex, nowMs: node.nowMs(), node: await node.id.rawValue)
        operations += Self.pushWrites(repo, record)
        let transaction = Transaction(compares: compares, success: operations)
        // One log entry per push; a write whose fate is unknown is settled by reading the refs
        // (the compares make sending it again safe: it cannot apply twice).
        for attempt in 0..<3 {
            // A hook whose git has gone (killed, timed out) must not commit what git will not keep.
            guard sessions.withLock({ $0[request.token] }) === session else {
                throw ForgeError.unavailable("the push ended before it was committed")
            }
            metrics.pushEntries.add(1, ordering: .relaxed)
            do {
                guard case .transaction(let result) = try await node.write(.transaction(transaction), forwarding: true) else {
                    throw ForgeError.failed("unexpected result of the push transaction")
                }
                if result.succeeded { return }
            } catch let error as NodeError {
                switch error {
                case .outcomeUnknown, .proposalLost, .notLeader, .unavailable:
                    if attempt == 2 {
                        if case .outcomeUnknown = error {
                            throw ForgeError.unavailable("the push's outcome is unknown (it may have been committed): \(error); fetch to see")
                        }
                        throw ForgeError.unavailable("the push could not be committed: \(error)")
                    }
                    try await Task.sleep(for: .milliseconds(100 << attempt))
                    continue
                case .stopped, .refused:
                    throw ForgeError.unavailable("the push could not be committed: \(error)")
                }
            }
            // The compares failed: either another push moved a ref, or this very transaction
            // applied on an earlier attempt.
            let now = try await self.state(repo)
            guard now.createRevision == state.createRevision else { throw ForgeError.notFound("\(repo) was deleted during the push") }
            // Its pack may since have been retired by a repack: the refs decide.
            if request.updates.allSatisfy({ ForgeNames.isZero($0.new) ? now.refs[$0.name] == nil : now.refs[$0.name] == $0.new }) {
                return
            }
            try Self.checkCurrent(request.updates, against: now.refs)
            throw ForgeError.conflict("rejected: a ref changed while this push ran; fetch first")
        }
    }

    /// The signed change that makes each push to `refs/for/BRANCH` a patch's first revision or a
    /// later one: sent by the client ahead of its pack, signed by the pusher, naming the pushed
    /// commit as its head and BRANCH as its target.
    func patchChanges(for updates: [RefUpdate], session: PushSession, repo: String) throws -> [(CobChange, SignedCobChange)] {
        let sent = session.changes.withLock { $0 }
        var found: [(CobChange, SignedCobChange)] = []
        for update in updates {
            let target = String(update.name.dropFirst("refs/for/".count))
            guard ForgeNames.isZero(update.old), !ForgeNames.isZero(update.new) else {
                throw ForgeError.badInput("\(update.name): a push to refs/for/ proposes a commit; it neither replaces nor deletes one")
            }
            let match = try sent.lazy.map { signed -> (CobChange, SignedCobChange) in (try signed.verified(limits: self.limits), signed) }.first { change, _ in
                change.operations.contains { operation in
                    switch operation {
                    case .openPatch(_, _, let aimed, _, _, let head): return aimed == target && head == update.new
                    case .revision(_, let head): return head == update.new
                    default: return false
                    }
                }
            }
            guard let (change, signed) = match else {
                throw ForgeError.badInput("\(update.name): no signed patch change came with the push (push through git-remote-aspen)")
            }
            guard change.type == .patch, change.author == session.pusher.bytes else {
                throw ForgeError.badInput("\(update.name): the patch change is not the pusher's")
            }
            try CobRules.validate(change, limits: limits)
            found.append((change, signed))
        }
        return found
    }

    /// The writes that record a push: the repository's last push, and the event CI takes from
    /// the outbox (in the same transaction as the refs, so that no push is missed or doubled).
    static func pushWrites(_ repo: String, _ record: PushRecord) -> [TransactionOperation] {
        [
            .put(Put(key: ForgeKeys.push(repo), value: record.encoded)),
            .put(Put(key: ForgeKeys.outbox(nowMs: record.nowMs, id: UUID().uuidString), value: PushEvent(repo: repo, record: record).encoded)),
        ]
    }

    /// `main` for `refs/heads/main`.
    static func branch(_ ref: String) -> String? { ref.hasPrefix("refs/heads/") ? String(ref.dropFirst("refs/heads/".count)) : nil }

    /// Refuses, naming the branch and the rule, an update a protected branch does not allow:
    /// a deletion, a direct push where approvals or statuses are required, or a push that does
    /// not fast-forward (checked by git against the quarantined objects).
    func checkProtections(_ request: ForgeHookRequest, state: RepoState, repo: String) async throws {
        for update in request.updates {
            guard let branch = Self.branch(update.name), let (rule, _) = state.protections[branch] else { continue }
            if ForgeNames.isZero(update.new) {
                throw ForgeError.conflict("\(update.name) is protected: it cannot be deleted (aspen repo unprotect \(repo) \(branch) first)")
            }
            if rule.gatesPushes {
                let needs = ([rule.requiredApprovals > 0 ? "\(rule.requiredApprovals) approval(s)" : nil]
                    + rule.requiredStatuses.map { "status \($0)" }).compactMap { $0 }.joined(separator: ", ")
                throw ForgeError.conflict(
                    "\(update.name) is protected and requires \(needs): it changes only through a patch the forge merges (push to refs/for/\(branch))")
            }
            guard !ForgeNames.isZero(update.old) else { continue }
            let objects = (cache.path(repo) as NSString).appendingPathComponent("objects")
            let check = try await Git.run(
                ["merge-base", "--is-ancestor", update.old, update.new], in: cache.path(repo),
                environment: ["GIT_OBJECT_DIRECTORY": request.quarantine, "GIT_ALTERNATE_OBJECT_DIRECTORIES": objects])
            guard check.status == 0 else {
                if check.status == 1 {
                    throw ForgeError.conflict("\(update.name) is protected: a push must fast-forward it (no force pushes)")
                }
                throw ForgeError.failed("checking \(update.name)'s history failed: \(check.errors)")
            }
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    /// Refuses, naming the ref, an update whose old value is not the ref's current one.
    static func checkCurrent(_ updates: [RefUpdate], against refs: [String: String]) throws {
        for update in updates {
            let current = refs[update.name]
            let expected: String? = ForgeNames.isZero(update.old) ? nil : update.old
            guard current == expected else {
                let now = current.map { "is now \($0.prefix(12))" } ?? "no longer exists"
                let before = expected.map { "you pushed over \($0.prefix(12))" } ?? "you pushed it as new"
                throw ForgeError.conflict("rejected \(update.name) (stale info / fetch first): it \(now), \(before)")
            }
        }
    }

    // MARK: Repository calls

    public func call(_ call: ForgeCall, caller: NodeKey? = nil) async throws -> ForgeAnswer {
        switch call {
        case .create(var record):
            // The creator maintains the repository, with anyone it named.
            if let caller, !record.maintainers.contains(caller.hex) { record.maintainers.insert(caller.hex, at: 0) }
            try record.validate(limits: limits)
            record.createdMs = node.nowMs()
            let key = ForgeKeys.repo(record.name)
            let (start, end) = ForgeKeys.contents(record.name).range
            let transaction = Transaction(
                compares: [.absent(key)],
                success: [.put(Put(key: key, value: record.encoded)), .delete(Delete(.range(start: start, end: end)))])
            guard case .transaction(let result) = try await node.write(.transaction(transaction), forwarding: true) else {
                throw ForgeError.failed("unexpected result of the create transaction")
            }
            guard result.succeeded else { throw ForgeError.exists("repository \(record.name) already exists") }
            return .done
        case .list(let prefix):
            let (start, end) = ForgeKeys.repos.range
            try await node.linearizableBarrier()
            let records = try await RepoCache.scan(node, start: start, end: end).map { try RepoRecord(decoding: $0.value, limits: limits) }
                .filter { $0.name.hasPrefix(prefix) }
            return .repos(records)
        case .show(let name):
            try ForgeNames.validate(repo: name, limits: limits)
            guard let kv = try await node.get(ForgeKeys.repo(name), consistency: .linearizable) else {
                throw ForgeError.notFound("no repository \(name)")
            }
            return .repos([try RepoRecord(decoding: kv.value, limits: limits)])
        case .delete(let name):
            try ForgeNames.validate(repo: name, limits: limits)
            let key = ForgeKeys.repo(name)
            let (start, end) = ForgeKeys.contents(name).range
            let transaction = Transaction(
                compares: [Compare(key: key, .version(0), .greater)],
                success: [.delete(Delete(.key(key))), .delete(Delete(.range(start: start, end: end)))])
            guard case .transaction(let result) = try await node.write(.transaction(transaction), forwarding: true) else {
                throw ForgeError.failed("unexpected result of the delete transaction")
            }
            guard result.succeeded else { throw ForgeError.notFound("no repository \(name)") }
            return .done
        case .refs(let name):
            try ForgeNames.validate(repo: name, limits: limits)
            let state = try await state(name)
            return .refs(state.refs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        case .packs(let name):
            try ForgeNames.validate(repo: name, limits: limits)
            let state = try await state(name)
            return .packs(
                state.packs.sorted { $0.key < $1.key }.map { PackInfo(name: $0.key, size: $0.value.size, hash: $0.value.hash.hex, retired: false) }
                    + state.retired.map { PackInfo(name: $0.pack, size: $0.reference.size, hash: $0.reference.hash.hex, retired: true) })
        case .repack(let name):
            _ = try await repack(name)
            return .done
        case .protect(let name, let branch, let rule):
            try ForgeNames.validate(repo: name, limits: limits)
            try ForgeNames.validate(ref: "refs/heads/" + branch, limits: limits)
            try rule?.validate()
            let key = ForgeKeys.protection(name, branch)
            let change: TransactionOperation = rule.map { .put(Put(key: key, value: $0.encoded)) } ?? .delete(Delete(.key(key)))
            let transaction = Transaction(compares: [Compare(key: ForgeKeys.repo(name), .version(0), .greater)], success: [change])
            guard case .transaction(let result) = try await node.write(.transaction(transaction), forwarding: true) else {
                throw ForgeError.failed("unexpected result of the protect transaction")
            }
            guard result.succeeded else { throw ForgeError.notFound("no repository \(name)") }
            return .done
        case .protections(let name):
            try ForgeNames.validate(repo: name, limits: limits)
            let state = try await state(name)
            return .protections(state.protections.sorted { $0.key < $1.key }.map { ($0.key, $0.value.rule) })
        case .cobHeads(let name, let type, let object):
            return .heads(try await cobHeads(name, type, object: object))
        case .cobAdd(let name, let change):
            guard let caller else { throw ForgeError.badInput("a change needs its author's connection") }
            return .added(try await cobAdd(name, change, caller: caller))
        case .issues(let name):
            return .issues(try await issues(name, only: nil))
        case .issue(let name, let id):
            return .issues(try await issues(name, only: id))
        case .patches(let name):
            return .patches(try await patches(name, only: nil))
        case .patch(let name, let id):
            return .patches(try await patches(name, only: id))
        case .patchDiff(let name, let id, let from, let to):
            return .text(try await patchDiff(name, id, from: from, to: to))
        case .patchMerge(let name, let change):
            guard let caller else { throw ForgeError.badInput("a merge needs its author's connection") }
            return .text(try await mergePatch(name, change, caller: caller))
        }
    }
}
