import AspenCore

/// One change of one key, as watchers see it.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case put = 0, delete = 1 }

    public var kind: Kind
    /// For a put, the new version; for a delete, the key with `modRevision` set to the deletion's
    /// revision (value empty, version 0).
    public var keyValue: KeyValue
    /// The version the change replaced, when the watcher asked for it (and it existed).
    public var previous: KeyValue?

    public init(kind: Kind, keyValue: KeyValue, previous: KeyValue? = nil) {
        self.kind = kind
        self.keyValue = keyValue
        self.previous = previous
    }

    public var revision: Revision { keyValue.modRevision }

    static func deletion(of key: Bytes, at revision: Revision, previous: KeyValue?) -> WatchEvent {
        WatchEvent(
            kind: .delete, keyValue: KeyValue(key: key, value: [], createRevision: 0, modRevision: revision, version: 0, lease: 0),
            previous: previous)
    }
}

/// A key's version in history: the key-value, or nil for a deletion at `revision`.
public struct KVChange: Sendable, Equatable {
    public var key: Bytes
    public var revision: Revision
    public var keyValue: KeyValue?
    /// The revision of the key's change before this one (0: none), where the backend records it.
    public var previousRevision: Revision?

    public init(key: Bytes, revision: Revision, keyValue: KeyValue?, previousRevision: Revision? = nil) {
        self.key = key
        self.revision = revision
        self.keyValue = keyValue
        self.previousRevision = previousRevision
    }
}

extension KVStateMachine {
    /// The changes to keys in `bounds` at revisions `from...through`, in revision order (keys in
    /// order within a revision), with previous versions when asked. At most about `limit` events:
    /// a page ends on a whole revision, so the caller continues from the next one.
    public static func changes<Backend: KVBackend>(
        in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int, backend: Backend
    ) throws -> Result<(events: [WatchEvent], nextRevision: Revision), KVError> {
        let compacted = try backend.compactedRevision()
        guard from > compacted else { return .failure(.compacted(requested: from, oldestAvailable: compacted + 1)) }
        guard from <= through else { return .success(([], from)) }
        var changes = try backend.history(in: bounds, from: from, through: through, limit: limit + 1)
        var next = through + 1
        if changes.count > limit, let last = changes.last?.revision {
            if changes.first?.revision == last {
                // One revision with more changes than a page: it is delivered whole.
                changes = try backend.history(in: bounds, from: last, through: last, limit: .max)
                next = last + 1
            } else {
                changes.removeAll { $0.revision == last }
                next = last
            }
        }
        let events = try changes.map { change in
            let previous = withPrevious ? try backend.previous(of: change) : nil
            guard let keyValue = change.keyValue else { return WatchEvent.deletion(of: change.key, at: change.revision, previous: previous) }
            return WatchEvent(kind: .put, keyValue: keyValue, previous: previous)
        }
        return .success((events, next))
    }
}

/// A store whose history of changes a layer can read in revision order: how a layer turns
/// the store's changes into events of its own (the node's applied state, the memory store).
public protocol ChangeHistory: Sendable {
    /// The latest revision, and the last one history no longer has.
    func revisions() async throws -> (current: Revision, compacted: Revision)
    /// Changes of every key at `from...through`, each with the version it replaced; a page of
    /// about `limit` ends on a whole revision (`nextRevision` is where the next page starts).
    func changes(from: Revision, through: Revision, limit: Int) async throws -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
}
