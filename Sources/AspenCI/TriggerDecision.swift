import AspenCore

/// What happened to the repository.
public enum TriggerKind: String, Sendable, CaseIterable {
    /// A branch or tag was updated by someone allowed to push it.
    case push
    /// A push to `refs/for/<branch>`: a proposed change from anyone, run untrusted.
    case patch
    /// Someone asked for a run (`aspen ci run`).
    case manual

    /// Whether the run may be given secrets: never for a patch, whose file and code come from
    /// whoever proposed it.
    public var isTrusted: Bool { self != .patch }
}

/// An event to match against a pipeline's triggers.
public struct TriggerEvent: Sendable, Equatable {
    public var kind: TriggerKind
    /// The full ref: `refs/heads/main`, `refs/tags/v1`, `refs/for/main`.
    public var ref: String
    /// Paths the push changed, relative to the repository's root. Empty means unknown (a new
    /// branch, a tag): the path filters then do not apply.
    public var changedPaths: [String]

    public init(kind: TriggerKind, ref: String, changedPaths: [String] = []) {
        self.kind = kind
        self.ref = ref
        self.changedPaths = changedPaths
    }
}

/// Whether an event starts a run, and how.
public enum TriggerDecision: Sendable, Equatable {
    /// Run the pipeline.
    case run
    /// Record a run whose jobs all report skipped: the event matched, but only paths the
    /// pipeline does not care about changed. The reason says which filter decided.
    case skipAll(reason: String)
    /// No run at all; the reason says which trigger did not match.
    case notTriggered(reason: String)
}

/// The parts of a ref this module cares about.
struct GitRef: Equatable {
    enum Kind: Equatable {
        case branch(String)
        case tag(String)
        /// `refs/for/<branch>`, Gerrit's form; push options after `%` are not part of the branch.
        case patch(target: String)
        case other
    }

    let kind: Kind

    init(_ ref: String) {
        if let name = Self.name(ref, after: "refs/heads/") {
            kind = .branch(name)
        } else if let name = Self.name(ref, after: "refs/tags/") {
            kind = .tag(name)
        } else if let name = Self.name(ref, after: "refs/for/"),
            let target = name.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false).first, !target.isEmpty
        {
            kind = .patch(target: String(target))
        } else {
            kind = .other
        }
    }

    static func name(_ ref: String, after prefix: String) -> String? {
        guard ref.hasPrefix(prefix), ref.utf8.count > prefix.utf8.count else { return nil }
        return String(ref.dropFirst(prefix.count))
    }

    /// The branch of a push to a branch, or a patch's target branch.
    var branch: String? {
        switch kind {
        case .branch(let name), .patch(let name): name
        case .tag, .other: nil
        }
    }
}

extension Pipeline {
    /// Decides whether `event` starts a run. Tag pushes and manual runs ignore path filters (a
    /// release tag always builds); a push or patch whose changed paths are all filtered out
    /// yields `.skipAll`, so the commit still gets a visible, skipped run.
    public func decide(_ event: TriggerEvent, limits: Limits = .standard) -> TriggerDecision {
        let ref = GitRef(event.ref)
        switch event.kind {
        case .manual:
            return triggers.manual ? .run : .notTriggered(reason: "the pipeline has no manual trigger")
        case .push:
            guard let push = triggers.push else { return .notTriggered(reason: "the pipeline has no push trigger") }
            return Self.decide(push: push, ref: ref, event: event, limits: limits)
        case .patch:
            guard let patch = triggers.patch else { return .notTriggered(reason: "the pipeline has no patch trigger") }
            guard case .patch(let target) = ref.kind else { return .notTriggered(reason: "a patch's ref must be refs/for/<branch>, not \(event.ref)") }
            guard patch.branches.contains(where: { $0.matches(target) }) else {
                return .notTriggered(reason: "target branch '\(target)' matches no patch branch pattern")
            }
            return Self.filter(event.changedPaths, paths: patch.paths, pathsIgnore: patch.pathsIgnore, limits: limits)
        }
    }

    static func decide(push: PushTrigger, ref: GitRef, event: TriggerEvent, limits: Limits) -> TriggerDecision {
        switch ref.kind {
        case .branch(let name):
            guard push.branches.contains(where: { $0.matches(name) }) else {
                return .notTriggered(reason: "branch '\(name)' matches no push branch pattern")
            }
            return filter(event.changedPaths, paths: push.paths, pathsIgnore: push.pathsIgnore, limits: limits)
        case .tag(let name):
            return push.tags.contains(where: { $0.matches(name) }) ? .run : .notTriggered(reason: "tag '\(name)' matches no push tag pattern")
        case .patch, .other:
            return .notTriggered(reason: "a push must update refs/heads/… or refs/tags/…, not \(event.ref)")
        }
    }

    /// `paths_ignore` first: the paths left must be non-empty and, if `paths` names any,
    /// include one it matches. Unknown or too many changed paths run everything.
    /// The matching is bounded as a whole: a match costs at most the product of the pattern's
    /// and the path's lengths, and past `ciPathMatchWorkMax` of that the pipeline runs (a push
    /// or patch author chooses both the patterns and the paths).
    static func filter(_ changed: [String], paths: [Glob], pathsIgnore: [Glob], limits: Limits) -> TriggerDecision {
        guard !changed.isEmpty, changed.count <= limits.ciChangedPathsMax else { return .run }
        var work = 0
        var exhausted = false
        func matches(_ glob: Glob, _ path: String) -> Bool {
            work += max(1, glob.pattern.utf8.count) * max(1, path.utf8.count)
            if work > limits.ciPathMatchWorkMax { exhausted = true }
            return !exhausted && glob.matches(path)
        }
        var considered: [String] = []
        for path in changed where !pathsIgnore.contains(where: { matches($0, path) }) { considered.append(path) }
        if exhausted { return .run }
        guard !considered.isEmpty else { return .skipAll(reason: "every changed path matches paths_ignore") }
        let wanted = paths.isEmpty || considered.contains(where: { path in paths.contains { matches($0, path) } })
        if exhausted { return .run }
        return wanted ? .run : .skipAll(reason: "no changed path matches paths")
    }
}

/// Commit messages that ask for no CI run.
public enum CommitMessage {
    /// Whether `message` holds `[skip ci]` or `[ci skip]` (any case), the markers other forges
    /// honour, so that a commit that only touches, say, a typo in docs can say so itself.
    public static func requestsSkippingCI(_ message: String) -> Bool {
        let lowered = message.lowercased()
        return lowered.contains("[skip ci]") || lowered.contains("[ci skip]")
    }
}
