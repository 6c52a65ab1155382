import AspenCore
import AspenForge
import Crypto

/// The forge's wire: its calls and answers on `aspen/client/1` (domain `forge`), the first frame
/// of an `aspen/git/1` tunnel, what a receive hook sends its node and gets back, and the records
/// a node reads from the key-value store.
extension FuzzTarget {
    static let forgeTargets: [FuzzTarget] = [forgeWire]

    static let forgeWire = FuzzTarget(
        name: "forge-wire",
        summary:
            "ForgeCall, ForgeAnswer, GitTunnelRequest, ForgeHookRequest, ForgeHookAnswer, RepoRecord, PushRecord: the forge's wire and records",
        seeds: {
            let sha1 = String(repeating: "3b18e512", count: 5)
            let sha256 = String(repeating: "0123456789abcdef", count: 4)
            let record = RepoRecord(name: "team/app", description: "the app", defaultBranch: "trunk", createdMs: 1_796_000_000_000)
            let updates = [
                RefUpdate(old: String(repeating: "0", count: 40), new: sha1, name: "refs/heads/main"),
                RefUpdate(old: sha256, new: String(repeating: "0", count: 64), name: "refs/tags/v1.0"),
            ]
            let calls: [ForgeCall] = [.create(record), .create(RepoRecord(name: "demo")), .list(prefix: ""), .list(prefix: "team/"), .show("demo"), .delete("team/app"), .refs("demo"), .packs("demo"), .repack("team/app"),
                .protect("demo", branch: "main", ProtectionRule(requiredApprovals: 1, requiredStatuses: ["ci/build"])), .protect("demo", branch: "main", nil),
                .protections("demo"),
            ]
            let answers: [ForgeAnswer] = [
                .protections([(branch: "main", rule: ProtectionRule(requiredApprovals: 2, requiredStatuses: ["ci/build", "ci/test"]))]),
                .packs([PackInfo(name: "pack-" + sha1, size: 1 << 20, hash: sha256, retired: false), PackInfo(name: "pack-x", size: 0, hash: "", retired: true)]),
                .done, .repos([record, RepoRecord(name: "demo", createdMs: -1)]), .repos([]),
                .refs([(name: "refs/heads/main", id: sha1), (name: "refs/tags/v1.0", id: sha256)]), .refs([]),
            ]
            let tunnels = [
                GitTunnelRequest(
                    repo: "team/app", service: .uploadPack, protocolVersion: 2, proof: Array(repeating: 0xC0, count: 32),
                    credential: Array(repeating: 7, count: 200)),
                GitTunnelRequest(repo: "demo", service: .receivePack, protocolVersion: 0),
            ]
            let hooks = [
                ForgeHookRequest(token: "t0k3n", quarantine: "/var/lib/aspen/forge/incoming-1", updates: updates, pushOptions: ["ci.skip"]),
                ForgeHookRequest(token: "", quarantine: "", updates: []),
            ]
            let hookAnswers = [ForgeHookAnswer(accepted: true, message: ""), ForgeHookAnswer(accepted: false, message: "rejected: fetch first")]
            let pushes = [
                PushRecord(updates: updates, packs: ["pack-" + sha1], pusher: String(repeating: "c0", count: 32), nowMs: 5, node: 3),
                PushRecord(updates: [], packs: [], pusher: "", nowMs: -1, node: .max),
            ]
            var seeds = selected(0, calls.map(\.encoded))
            seeds += selected(1, answers.map(\.encoded))
            seeds += selected(2, tunnels.map(\.encoded))
            seeds += selected(3, hooks.map(\.encoded))
            seeds += selected(4, hookAnswers.map(\.encoded))
            seeds += selected(5, [record.encoded, RepoRecord(name: "demo").encoded])
            seeds += selected(6, pushes.map(\.encoded))
            let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: Array(repeating: 7, count: 32))
            let root = CobChange(type: .issue, object: nil, parents: [], operations: [.open(title: "t", body: "b")], author: Array(key.publicKey.rawRepresentation), time: 1)
            let next = CobChange(
                type: .issue, object: root.id, parents: [root.id], operations: [.comment(body: "c"), .title("u"), .label(add: ["bug"], remove: ["x"]), .close, .reopen],
                author: Array(key.publicKey.rawRepresentation), time: 2)
            seeds += selected(7, try! [root, next].map { try $0.signed(by: key).encoded })
            return seeds
        }
    ) { input in
        let limits = Limits.standard
        return FuzzCheck.select(input, [
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try ForgeCall(decoding: $0, limits: limits) }, encode: { $0.encoded }, bounds: { ForgeBounds.call($0, limits) })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try ForgeAnswer(decoding: $0, limits: limits) }, encode: { $0.encoded }, bounds: { ForgeBounds.answer($0, limits) })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try GitTunnelRequest(decoding: $0, limits: limits) }, encode: { $0.encoded },
                    bounds: { ForgeBounds.tunnel($0, limits) })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try ForgeHookRequest(decoding: $0, limits: limits) }, encode: { $0.encoded },
                    bounds: { ForgeBounds.hook($0, limits) })
            },
            { FuzzCheck.roundTrip($0, decode: { try ForgeHookAnswer(decoding: $0) }, encode: { $0.encoded }) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try RepoRecord(decoding: $0, limits: limits) }, encode: { $0.encoded },
                    bounds: { ForgeBounds.record($0, limits) })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try PushRecord(decoding: $0, limits: limits) }, encode: { $0.encoded },
                    bounds: { ForgeBounds.push($0, limits) })
            },
            {
                // A signed change, then the change inside it (whose signature rarely holds).
                FuzzCheck.roundTrip(
                    $0, decode: { (bytes: [UInt8]) throws -> SignedCobChange in
                        let signed = try SignedCobChange(decoding: bytes, limits: limits)
                        _ = try? signed.verified(limits: limits)
                        return signed
                    }, encode: { (signed: SignedCobChange) in signed.encoded })
            },
        ])
    }
}

/// What a decoded forge value must stay within, whatever its bytes claimed.
enum ForgeBounds {
    static func record(_ record: RepoRecord, _ limits: Limits) -> String? {
        if record.name.utf8.count > limits.forgeRepoNameBytesMax { return "a repository name of \(record.name.utf8.count) bytes" }
        if record.description.utf8.count > limits.forgeDescriptionBytesMax { return "a description of \(record.description.utf8.count) bytes" }
        if record.defaultBranch.utf8.count > limits.forgeRefNameBytesMax { return "a default branch of \(record.defaultBranch.utf8.count) bytes" }
        return nil
    }

    static func updates(_ updates: [RefUpdate], max: Int, _ limits: Limits) -> String? {
        if updates.count > max { return "\(updates.count) ref updates" }
        for update in updates where update.old.utf8.count > 64 || update.new.utf8.count > 64 || update.name.utf8.count > limits.forgeRefNameBytesMax {
            return "a ref update of \(update.old.utf8.count), \(update.new.utf8.count) and \(update.name.utf8.count) bytes"
        }
        return nil
    }

    static func call(_ call: ForgeCall, _ limits: Limits) -> String? {
        switch call {
        case .create(let repo): return record(repo, limits)
        case .list(let prefix): return prefix.utf8.count > limits.forgeRepoNameBytesMax ? "a prefix too long" : nil
        case .protect(let name, let branch, let rule):
            if let rule, rule.requiredStatuses.count > ProtectionRule.statusesMax { return "\(rule.requiredStatuses.count) statuses" }
            return name.utf8.count > limits.forgeRepoNameBytesMax || branch.utf8.count > limits.forgeRefNameBytesMax ? "a name too long" : nil
        case .cobHeads(let name, _, _), .issues(let name), .issue(let name, _), .patches(let name), .patch(let name, _), .patchDiff(let name, _, _, _):
            return name.utf8.count > limits.forgeRepoNameBytesMax ? "a repository name of \(name.utf8.count) bytes" : nil
        case .cobAdd(let name, let change), .patchMerge(let name, let change):
            return name.utf8.count > limits.forgeRepoNameBytesMax || change.body.count > limits.forgeCobChangeBytesMax ? "a change too large" : nil
        case .show(let name), .delete(let name), .refs(let name), .packs(let name), .repack(let name), .protections(let name):
            return name.utf8.count > limits.forgeRepoNameBytesMax ? "a repository name of \(name.utf8.count) bytes" : nil
        }
    }

    static func answer(_ answer: ForgeAnswer, _ limits: Limits) -> String? {
        switch answer {
        case .done: return nil
        case .repos(let repos):
            for repo in repos {
                if let broken = record(repo, limits) { return broken }
            }
            return nil
        case .refs(let refs):
            if refs.count > limits.forgeRefsMax { return "\(refs.count) refs" }
            for ref in refs where ref.name.utf8.count > limits.forgeRefNameBytesMax || ref.id.utf8.count > 64 {
                return "a ref of \(ref.name.utf8.count) bytes with an id of \(ref.id.utf8.count)"
            }
            return nil
        case .packs(let packs):
            if packs.count > limits.forgePacksMax * 2 { return "\(packs.count) packs" }
            for pack in packs where pack.name.utf8.count > 128 || pack.hash.utf8.count > 64 {
                return "a pack name of \(pack.name.utf8.count) bytes with a hash of \(pack.hash.utf8.count)"
            }
            return nil
        case .protections(let rules):
            return rules.count > limits.forgeRefsMax ? "\(rules.count) rules" : nil
        case .heads(let heads):
            return heads.count > limits.forgeCobChangesMax ? "\(heads.count) heads" : nil
        case .added:
            return nil
        case .patches(let patches):
            return patches.contains { $0.title.utf8.count > limits.forgeTitleBytesMax || $0.revisions.isEmpty } ? "a patch past its bounds" : nil
        case .text(let text):
            return text.utf8.count > ForgeAnswer.textBytesMax ? "a text of \(text.utf8.count) bytes" : nil
        case .issues(let issues):
            for issue in issues where issue.title.utf8.count > limits.forgeTitleBytesMax || issue.comments.contains(where: { $0.body.utf8.count > limits.forgeCommentBytesMax }) {
                return "an issue past its bounds"
            }
            return nil
        }
    }

    static func tunnel(_ request: GitTunnelRequest, _ limits: Limits) -> String? {
        if request.protocolVersion > 2 { return "git protocol version \(request.protocolVersion)" }
        if request.repo.utf8.count > limits.forgeRepoNameBytesMax { return "a repository name of \(request.repo.utf8.count) bytes" }
        if request.proof.count > 64 || request.credential.count > 64 * 1024 {
            return "a proof of \(request.proof.count) bytes, a credential of \(request.credential.count)"
        }
        return nil
    }

    static func hook(_ request: ForgeHookRequest, _ limits: Limits) -> String? {
        // One update more than a push may make decodes, for the node to refuse naming the bound.
        if let broken = updates(request.updates, max: limits.forgeRefUpdatesMax + 1, limits) { return broken }
        if request.pushOptions.count > 64 { return "\(request.pushOptions.count) push options" }
        return nil
    }

    static func push(_ push: PushRecord, _ limits: Limits) -> String? {
        if let broken = updates(push.updates, max: limits.forgeRefUpdatesMax, limits) { return broken }
        if push.packs.count > 16 { return "\(push.packs.count) packs" }
        return nil
    }
}
