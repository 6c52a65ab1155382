import AspenCore
import AspenKV

/// What a token allows. Capabilities that name data are scoped to a prefix: a request's whole
/// key range must lie inside the prefix's range. Containment (`contains`) is the partial order
/// delegation must respect: a child's every capability is contained in one of its parent's.
public enum Capability: Sendable, Hashable {
    /// Point and range reads of keys under the prefix (get, scan, a transaction's compares).
    case read(prefix: Bytes)
    /// Puts under the prefix.
    case write(prefix: Bytes)
    /// Deletes under the prefix (and lease revocation of keys under it).
    case delete(prefix: Bytes)
    /// Watches of ranges under the prefix.
    case watch(prefix: Bytes)
    /// All of read, write, delete and watch under the prefix.
    case full(prefix: Bytes)
    /// Coordination primitives (locks, queues, counters, …) whose names start with the prefix.
    case coordination(prefix: Bytes)
    /// Membership, snapshots, defragmentation, leadership transfer, compaction, revocation.
    case clusterAdmin
    /// May sign child tokens (each capability of a child contained in one of this token's).
    case delegate
    /// A later subsystem's resources under a prefix, at an access level.
    case service(Service, Access, prefix: Bytes)

    /// The subsystems that declare their capabilities here.
    public enum Service: UInt8, Sendable, Hashable, CaseIterable {
        /// Blob tags (the prefix) and blobs.
        case blob = 1
        /// Jobs, by type prefix.
        case jobs = 2
        /// Hooks and pub/sub, by subject prefix.
        case hooks = 3
        /// Secrets, by mount and path prefix.
        case secrets = 4
        /// Forge repositories, by name prefix.
        case forge = 5
        /// CI pipelines, by repository prefix.
        case ci = 6
        /// Transit keys, by `MOUNT/KEY` prefix.
        case transit = 7
        /// PKI roles and issuers, by `MOUNT/ROLE` prefix (`MOUNT` alone for revocation and management).
        case pki = 8

        public var name: String {
            switch self {
            case .blob: "blob"
            case .jobs: "jobs"
            case .hooks: "hooks"
            case .secrets: "secrets"
            case .forge: "forge"
            case .ci: "ci"
            case .transit: "transit"
            case .pki: "pki"
            }
        }
    }

    /// Access to a service's resources; `full` contains every other. The verbs past `full` are
    /// those of the secrets engines (`secrets-list`, `transit-encrypt`, `pki-issue`, …).
    public enum Access: UInt8, Sendable, Hashable, CaseIterable {
        case read = 1
        case write = 2
        case full = 3
        case delete = 4
        case list = 5
        case encrypt = 6
        case decrypt = 7
        case sign = 8
        case verify = 9
        case manage = 10
        case issue = 11
        case revoke = 12

        public var name: String {
            switch self {
            case .read: "read"
            case .write: "write"
            case .full: "full"
            case .delete: "delete"
            case .list: "list"
            case .encrypt: "encrypt"
            case .decrypt: "decrypt"
            case .sign: "sign"
            case .verify: "verify"
            case .manage: "manage"
            case .issue: "issue"
            case .revoke: "revoke"
            }
        }

        public func contains(_ other: Access) -> Bool { self == .full || self == other }
    }

    /// The prefix the capability is scoped to, if it names data.
    public var prefix: Bytes? {
        switch self {
        case .read(let prefix), .write(let prefix), .delete(let prefix), .watch(let prefix), .full(let prefix),
            .coordination(let prefix), .service(_, _, let prefix):
            return prefix
        case .clusterAdmin, .delegate:
            return nil
        }
    }

    /// Whether everything `other` allows, this allows too.
    public func contains(_ other: Capability) -> Bool {
        switch (self, other) {
        case (.clusterAdmin, .clusterAdmin), (.delegate, .delegate):
            return true
        case (.full(let mine), .read(let theirs)), (.full(let mine), .write(let theirs)), (.full(let mine), .delete(let theirs)),
            (.full(let mine), .watch(let theirs)), (.full(let mine), .full(let theirs)),
            (.read(let mine), .read(let theirs)), (.write(let mine), .write(let theirs)), (.delete(let mine), .delete(let theirs)),
            (.watch(let mine), .watch(let theirs)), (.coordination(let mine), .coordination(let theirs)):
            return theirs.starts(with: mine)
        case (.service(let service, let access, let mine), .service(let otherService, let otherAccess, let theirs)):
            return service == otherService && access.contains(otherAccess) && theirs.starts(with: mine)
        default:
            return false
        }
    }

    /// Whether this capability grants `requirement` (one that needs a single capability).
    public func grants(_ requirement: Requirement) -> Bool {
        switch (self, requirement) {
        case (.read(let prefix), .read(let range)), (.full(let prefix), .read(let range)),
            (.write(let prefix), .write(let range)), (.full(let prefix), .write(let range)),
            (.delete(let prefix), .delete(let range)), (.full(let prefix), .delete(let range)),
            (.watch(let prefix), .watch(let range)), (.full(let prefix), .watch(let range)):
            return Self.range(range, isInside: prefix)
        case (.coordination(let prefix), .coordination(let name)):
            return name.starts(with: prefix)
        case (.write, .lease), (.full, .lease):
            return true
        case (.clusterAdmin, .clusterAdmin):
            return true
        case (.delegate, .delegate):
            return true
        case (.service(let service, let access, let prefix), .service(let needed, let neededAccess, let resource)):
            return service == needed && access.contains(neededAccess) && resource.starts(with: prefix)
        default:
            return false
        }
    }

    /// Whether `[range.start, range.end)` lies inside `[prefix, prefixEnd)`. A nil end is the end
    /// of the key space, inside only a prefix whose range also runs to it (empty, or all 0xFF).
    static func range(_ range: KeyBounds, isInside prefix: Bytes) -> Bool {
        guard range.start.starts(with: prefix) else { return false }
        guard let prefixEnd = KeyBounds.prefixEnd(prefix) else { return true }
        guard let end = range.end else { return false }
        // An empty range (end at or before start) touches nothing beyond its start.
        if !range.start.lexicographicallyPrecedes(end) { return true }
        return !prefixEnd.lexicographicallyPrecedes(end)
    }
}

/// What one request needs. A request that touches several keys needs each of their
/// requirements (`Requirement.all`).
public indirect enum Requirement: Sendable, Hashable {
    case read(KeyBounds)
    case write(KeyBounds)
    case delete(KeyBounds)
    case watch(KeyBounds)
    case coordination(name: Bytes)
    /// Granting, keeping alive and listing leases: a lease holds keys, so any capability to
    /// write somewhere allows it.
    case lease
    case clusterAdmin
    case delegate
    case service(Capability.Service, Capability.Access, resource: Bytes)
    /// Every one of these.
    case all([Requirement])
    /// Nothing: a public call (health, the auth handshake itself).
    case nothing

    public static func read(_ selection: KeySelection) -> Requirement { .read(selection.bounds) }
    public static func write(_ key: Bytes) -> Requirement { .write(KeySelection.key(key).bounds) }
    public static func delete(_ selection: KeySelection) -> Requirement { .delete(selection.bounds) }
    public static func watch(_ selection: KeySelection) -> Requirement { .watch(selection.bounds) }

    /// The single requirements this one is made of, in order.
    public var atoms: [Requirement] {
        switch self {
        case .all(let parts): return parts.flatMap(\.atoms)
        case .nothing: return []
        default: return [self]
        }
    }
}
