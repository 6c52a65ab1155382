import AspenCore
import AspenForge
import AspenKV
import AspenLayer
import Foundation
import Synchronization

/// The cluster's own events, published on `hooks.…` subjects of the message stream:
///
/// | subject | when |
/// |---|---|
/// | `hooks.kv.put.<key tokens>`, `hooks.kv.delete.<key tokens>` | a key is written or deleted (the key split at `/`) |
/// | `hooks.job.<state>` | a job changes state (not jobs that hooks made) |
/// | `hooks.forge.push.<repo tokens>` | a push to a forge repository is committed |
/// | `hooks.cluster.leader` | a node leads a new term |
/// | `hooks.cluster.membership` | voters or learners change |
/// | `hooks.cluster.events-lost` | history was compacted before its changes were published |
///
/// Events are recorded only for subjects that a hook, a consumer group or a retention rule
/// covers (as a JetStream stream captures only its subjects): a cluster where nobody asked
/// writes nothing, and a hook on `hooks.kv.put.config.>` records the writes under `config/`
/// and no others. Key and job events are read from the store's history after a cursor that is
/// written in the same transaction as the events it covers, so each change is published once,
/// whichever leader publishes it and however often a leader dies halfway.
public final class ClusterEvents: Sendable {
    public let topics: TopicLog
    let history: any ChangeHistory
    let limits: Limits
    private let state = Mutex(State())
    static let space = TopicLog.space.subspace(["ev"])
    static let systemPrefix = Subspace(["aspen"]).prefix
    static let jobRecordPrefix = JobStore.space.subspace(["j"]).prefix
    static let forgePrefix = ForgeKeys.space.subspace(["r"]).prefix
    /// How long a read of the subjects asked for is used before it is read again.
    static let interestMs: Int64 = 1000

    struct State {
        var interest: [SubjectPattern] = []
        var interestReadAtMs: Int64?
        /// The term this node last led and where its history cursor stood (what is stored,
        /// and how far it looked without finding events to publish).
        var term: UInt64 = 0
        var stored: Revision?
        var looked: Revision = 0
        var leaderDone: UInt64 = 0
        var membersDone: [UInt8]?
        /// No cursor is stored (nobody asks for key or job events), as far as this node knows.
        var cursorDropped = false
    }

    /// What the leader knows of the cluster.
    public struct Leadership: Sendable, Equatable {
        public var node: UInt64
        public var term: UInt64
        public var voters: [UInt64]
        public var learners: [UInt64]

        public init(node: UInt64, term: UInt64, voters: [UInt64], learners: [UInt64]) {
            self.node = node
            self.term = term
            self.voters = voters
            self.learners = learners
        }
    }

    public init(topics: TopicLog, history: any ChangeHistory, limits: Limits = .standard) {
        self.topics = topics
        self.history = history
        self.limits = limits
    }

    var store: any KeyValueStore { topics.store }
    var kvCursorKey: Bytes { Self.space.pack(["kv"]) }

    /// One pass on the leader: publishes what happened since the last. Returns how many events.
    public func pass(_ leadership: Leadership) async throws -> Int {
        let interest = try await interest()
        let changes = [["hooks", "kv"], ["hooks", "job"], ["hooks", "forge"]]
        guard interest.contains(where: { pattern in changes.contains { pattern.couldMatch(under: $0) } }) else {
            try await dropCursor()
            guard !interest.isEmpty else {
                state.withLock { $0 = State(interestReadAtMs: $0.interestReadAtMs, cursorDropped: $0.cursorDropped) }
                return 0
            }
            return try await leaderEvents(leadership, interest)
        }
        state.withLock { $0.cursorDropped = false }
        return try await leaderEvents(leadership, interest) + tail(term: leadership.term, interest: interest)
    }

    /// The patterns of groups, hooks and retention rules that can select a `hooks.…` subject.
    public func interest() async throws -> [SubjectPattern] {
        let now = topics.nowMs()
        if let (patterns, at) = state.withLock({ state in state.interestReadAtMs.map { (state.interest, $0) } }), now - at < Self.interestMs {
            return patterns
        }
        var texts: [String] = []
        let groups = TopicLog.space.subspace(["g"])
        for kv in try await store.scan(.range(start: groups.range.start, end: groups.range.end), limit: 10_000, consistency: .stale).kvs {
            if let group = try? ConsumerGroup(decoding: kv.value, limits: limits) { texts.append(group.pattern) }
        }
        texts += try await topics.retentions().map(\.pattern)
        let patterns = Set(texts).compactMap { try? SubjectPattern($0, limits: limits) }.filter { $0.couldMatch(under: ["hooks"]) }
        state.withLock { state in
            state.interest = patterns
            state.interestReadAtMs = now
        }
        return patterns
    }

    // MARK: Leader and membership

    func leaderEvents(_ leadership: Leadership, _ interest: [SubjectPattern]) async throws -> Int {
        let (leaderDone, membersDone) = state.withLock { ($0.leaderDone, $0.membersDone) }
        var published = 0
        if leaderDone < leadership.term {
            let event = TopicMessage(
                subject: "hooks.cluster.leader", payload: Self.json(["node": leadership.node, "term": leadership.term]))
            if try await record(Self.space.pack(["leader"]), Tuple([.int(Int64(leadership.term))]).encoded, event: event, interest: interest, newer: { stored in
                guard case .int(let term)? = try? Tuple(decoding: stored).elements.first else { return true }
                return term < Int64(leadership.term)
            }) {
                published += 1
            }
            state.withLock { $0.leaderDone = leadership.term }
        }
        let members = Tuple(leadership.voters.map { .int(Int64($0)) } + [.string("learners")] + leadership.learners.map { .int(Int64($0)) }).encoded
        if membersDone != members {
            let event = TopicMessage(
                subject: "hooks.cluster.membership",
                payload: Self.json(["voters": leadership.voters, "learners": leadership.learners, "term": leadership.term]))
            // Stored with the term it was seen in: a leader that lost office cannot put back its older view.
            let value = Tuple([.int(Int64(leadership.term)), .bytes(members)]).encoded
            let newer: (Bytes) -> Bool = { stored in
                guard let elements = try? Tuple(decoding: stored).elements, elements.count == 2, case .int(let term) = elements[0],
                    case .bytes(let seen) = elements[1]
                else { return true }
                return term <= Int64(leadership.term) && seen != members
            }
            if try await record(Self.space.pack(["members"]), value, event: event, interest: interest, newer: newer) { published += 1 }
            state.withLock { $0.membersDone = members }
        }
        return published
    }

    /// Stores `value` at `key` with `event` (when asked for) if `newer` says the stored value
    /// is out of date. Whether the event was published.
    func record(_ key: Bytes, _ value: Bytes, event: TopicMessage, interest: [SubjectPattern], newer: (Bytes) -> Bool) async throws -> Bool {
        for _ in 0..<8 {
            let stored = try await store.get(key)
            if let stored, !newer(stored.value) { return false }
            let wanted = interest.contains { $0.matches(event.subject) }
            let compare = stored.map { Compare(key: key, .modRevision($0.modRevision)) } ?? .absent(key)
            if try await topics.publish(wanted ? [event] : [], if: [compare], with: [.put(Put(key: key, value: value))]) != nil {
                return wanted
            }
        }
        throw JobError.contention(attempts: 8)
    }

    // MARK: Keys and jobs

    /// Publishes the events of the changes after the stored cursor, a page at a time, each
    /// page's events with the cursor moved past it.
    func tail(term: UInt64, interest: [SubjectPattern]) async throws -> Int {
        var (stored, looked) = state.withLock { state in state.term == term ? (state.stored, state.looked) : (nil, 0) }
        if stored == nil {
            if let kv = try await store.get(kvCursorKey) {
                stored = try Self.revision(kv.value)
            } else {
                // The first pass anyone asked for: events start now.
                let current = try await history.revisions().current
                let made = try await store.transaction(
                    Transaction(compares: [.absent(kvCursorKey)], success: [.put(Put(key: kvCursorKey, value: Self.encode(current)))]))
                guard made.succeeded else { return 0 }
                stored = current
            }
            looked = stored!
        }
        guard var stored else { return 0 }
        // Kept for the next pass, unless another leader moved the cursor: then it is read again.
        var moved = false
        defer {
            state.withLock { [stored, looked, moved] state in
                (state.term, state.stored, state.looked) = moved ? (0, nil, 0) : (term, stored, looked)
            }
        }
        var published = 0
        let (current, compacted) = try await history.revisions()
        if looked < compacted {
            let event = TopicMessage(
                subject: "hooks.cluster.events-lost", payload: Self.json(["from_revision": looked + 1, "through_revision": compacted]))
            let wanted = interest.contains { $0.matches(event.subject) }
            guard try await advance(from: stored, to: compacted, publishing: wanted ? [event] : []) else {
                moved = true
                return 0
            }
            published += wanted ? 1 : 0
            stored = compacted
            looked = compacted
        }
        for _ in 0..<16 where looked < current {
            let page: (events: [WatchEvent], nextRevision: Revision)
            switch try await history.changes(from: looked + 1, through: current, limit: limits.topicBatchMax) {
            case .success(let found): page = found
            case .failure(.compacted): return published
            case .failure(let error): throw error
            }
            let events = page.events.compactMap { message(for: $0) }.filter { event in interest.contains { $0.matches(event.subject) } }
            let through = page.nextRevision - 1
            if !events.isEmpty {
                // More than a batch only when one revision changed more keys: the batches
                // before the last carry ids, so a retry after a lost cursor write repeats none.
                let batches = stride(from: 0, to: events.count, by: limits.topicBatchMax).map {
                    Array(events[$0..<min($0 + limits.topicBatchMax, events.count)])
                }
                for (number, batch) in batches.dropLast().enumerated() {
                    _ = try await topics.publish(batch.enumerated().map { index, event in
                        var event = event
                        event.messageID = "hooks.kv:\(through):\(number):\(index)"
                        return event
                    })
                }
                guard try await advance(from: stored, to: through, publishing: batches.last ?? []) else {
                    moved = true
                    return published
                }
                published += events.count
                stored = through
            }
            looked = through
        }
        if looked - stored >= Self.cursorLagMax {
            guard try await advance(from: stored, to: looked, publishing: []) else {
                moved = true
                return published
            }
            stored = looked
        }
        return published
    }

    /// Moves the stored cursor from `from` to `to` with `events`: false if another leader moved
    /// it. A publish by someone else in between only makes it try again.
    func advance(from: Revision, to: Revision, publishing events: [TopicMessage]) async throws -> Bool {
        for _ in 0..<16 {
            let written = try await topics.publish(
                events, if: [Compare(key: kvCursorKey, .value(Self.encode(from)))], with: [.put(Put(key: kvCursorKey, value: Self.encode(to)))])
            if written != nil { return true }
            guard let stored = try await store.get(kvCursorKey), try Self.revision(stored.value) == from else { return false }
        }
        throw JobError.contention(attempts: 16)
    }

    /// Changes looked at without events this many revisions past the stored cursor are recorded
    /// as looked at, so that a new leader does not read them again.
    static let cursorLagMax: Revision = 1000

    /// Nobody asks for key or job events: the cursor goes, so that events start afresh when
    /// someone asks again (rather than with every change since it was left).
    func dropCursor() async throws {
        guard !state.withLock({ $0.cursorDropped }) else { return }
        if try await store.get(kvCursorKey) != nil { _ = try await store.delete(kvCursorKey) }
        state.withLock { state in
            state.cursorDropped = true
            (state.term, state.stored, state.looked) = (0, nil, 0)
        }
    }

    /// The event of one change, if it makes one.
    func message(for event: WatchEvent) -> TopicMessage? {
        let key = event.keyValue.key
        guard key.starts(with: Self.systemPrefix) else { return Self.keyEvent(event, limits: limits) }
        if key.starts(with: Self.forgePrefix) { return Self.forgeEvent(event, limits: limits) }
        guard key.starts(with: Self.jobRecordPrefix), event.kind == .put,
            let job = try? JobRecord(decoding: event.keyValue.value, limits: limits), !job.origin.hasPrefix("hook:")
        else { return nil }
        // A hook's own jobs make no events: a hook on job events would otherwise feed itself.
        let before = event.previous.flatMap { try? JobRecord(decoding: $0.value, limits: limits) }?.state
        guard job.state != before else { return nil }
        var fields: [String: Any] = [
            "id": job.id, "state": job.state.rawValue, "type": job.spec.type, "attempts": job.attempts, "origin": job.origin,
            "revision": event.revision,
        ]
        if let before { fields["previous_state"] = before.rawValue }
        if let attempt = job.attempt {
            fields["node"] = attempt.node
            fields["worker"] = attempt.worker
        }
        if let error = job.lastError { fields["error"] = error }
        return TopicMessage(subject: "hooks.job.\(job.state.rawValue)", payload: Self.json(fields))
    }

    /// A push to a forge repository (its push record written): `hooks.forge.push.<repo tokens>`,
    /// with the ref updates, the packs, the pusher's key and the revision.
    static func forgeEvent(_ event: WatchEvent, limits: Limits) -> TopicMessage? {
        guard event.kind == .put, let tuple = try? ForgeKeys.space.unpack(event.keyValue.key), tuple.elements.count == 3,
            tuple.elements[0] == "r", tuple.elements[2] == "push", case .string(let repo) = tuple.elements[1],
            let push = try? PushRecord(decoding: event.keyValue.value, limits: limits)
        else { return nil }
        let fields: [String: Any] = [
            "repo": repo, "revision": event.keyValue.modRevision, "pusher": push.pusher, "node": push.node, "packs": push.packs,
            "refs": push.updates.map { ["name": $0.name, "old": $0.old, "new": $0.new] },
        ]
        return TopicMessage(subject: subject(["hooks", "forge", "push"], path: Array(repo.utf8), limits: limits), payload: json(fields))
    }

    /// A user key's put or delete.
    static func keyEvent(_ event: WatchEvent, limits: Limits) -> TopicMessage {
        let kind = event.kind == .put ? "put" : "delete"
        let kv = event.keyValue
        var fields: [String: Any] = ["event": kind, "revision": kv.modRevision]
        if let key = String(validating: kv.key, as: UTF8.self) { fields["key"] = key } else { fields["key_hex"] = Hex.encode(kv.key) }
        if event.kind == .put {
            fields["version"] = kv.version
            fields["create_revision"] = kv.createRevision
            fields["value_bytes"] = kv.value.count
            if kv.lease != 0 { fields["lease"] = kv.lease }
            if kv.value.count <= keyEventValueBytesMax, let value = String(validating: kv.value, as: UTF8.self) { fields["value"] = value }
        }
        return TopicMessage(subject: keySubject(kind: kind, key: kv.key, limits: limits), payload: json(fields))
    }

    /// A value up to this size, if it is text, travels in its key's event.
    static let keyEventValueBytesMax = 1024

    /// `hooks.kv.KIND.` and the key's `/`-separated parts as tokens (empty parts skipped):
    /// bytes a subject token cannot hold (`.`, `*`, `>`, `%`, whitespace, controls, non-ASCII)
    /// are written `%XX`. A key too long for a subject keeps the parts that fit, so patterns on
    /// its leading parts still select it; the event's payload has the whole key.
    public static func keySubject(kind: String, key: Bytes, limits: Limits = .standard) -> String {
        subject(["hooks", "kv", kind], path: key, limits: limits)
    }

    /// `prefix` then `path`'s `/`-separated parts as tokens, as `keySubject` makes them.
    static func subject(_ prefix: [String], path key: Bytes, limits: Limits) -> String {
        var subject = prefix.joined(separator: ".")
        let first = prefix.count
        var tokens = first
        for part in key.split(separator: UInt8(ascii: "/")) {
            var token = ""
            for byte in part {
                if byte > 0x20, byte < 0x7F, !".*>%".utf8.contains(byte) {
                    token.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    token += "%" + Hex.encode([byte]).uppercased()
                }
            }
            let room = limits.subjectBytesMax - subject.utf8.count - 1
            guard tokens < limits.subjectTokensMax, room > 0 else { break }
            if token.utf8.count > room {
                // Only a first part is cut (the subject needs one); a later one is left out.
                guard tokens == first else { break }
                token = String(token.prefix(room))
            }
            subject += "." + token
            tokens += 1
        }
        if tokens == first { subject += ".%2F" }
        return subject
    }

    public static func json(_ fields: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data())
    }

    static func encode(_ revision: Revision) -> Bytes { Tuple([.int(revision)]).encoded }
    static func revision(_ bytes: Bytes) throws -> Revision {
        guard case .int(let revision)? = try Tuple(decoding: bytes).elements.first else { throw JobError.invalid("a corrupt event cursor") }
        return revision
    }
}

extension SubjectPattern {
    /// Whether some subject of more tokens than `prefix`, starting with them, matches.
    func couldMatch(under prefix: [String]) -> Bool {
        for (index, part) in prefix.enumerated() {
            guard index < tokens.count else { return false }
            if tokens[index] == ">" { return true }
            guard tokens[index] == "*" || tokens[index] == part else { return false }
        }
        return tokens.count > prefix.count
    }
}
