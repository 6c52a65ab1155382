import AspenCore

public typealias Bytes = [UInt8]
/// The cluster's revision: rises by one with every write transaction that changes a key.
public typealias Revision = Int64
/// A lease id; 0 means "no lease".
public typealias LeaseID = Int64

/// One key's value and metadata, as of some revision.
public struct KeyValue: Sendable, Equatable, Hashable {
    public var key: Bytes
    public var value: Bytes
    /// The revision of the put that created the key (since it last did not exist).
    public var createRevision: Revision
    /// The revision of the last write to the key.
    public var modRevision: Revision
    /// Puts since creation, from 1.
    public var version: Int64
    public var lease: LeaseID

    public init(key: Bytes, value: Bytes, createRevision: Revision, modRevision: Revision, version: Int64, lease: LeaseID = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// Which keys an operation touches. Byte order is the order of keys.
public enum KeySelection: Sendable, Equatable, Hashable {
    case key(Bytes)
    /// Every key that starts with the bytes (an empty prefix selects every key).
    case prefix(Bytes)
    /// Keys in `[start, end)`; a nil end means "to the last key".
    case range(start: Bytes, end: Bytes?)

    /// The half-open interval of keys, or a single key.
    public var bounds: KeyBounds {
        switch self {
        case .key(let key): return KeyBounds(start: key, end: key + [0])
        case .prefix(let prefix): return KeyBounds(start: prefix, end: KeyBounds.prefixEnd(prefix))
        case .range(let start, let end): return KeyBounds(start: start, end: end)
        }
    }
}

/// `[start, end)` over byte-ordered keys; a nil `end` is unbounded.
public struct KeyBounds: Sendable, Equatable, Hashable {
    public var start: Bytes
    public var end: Bytes?

    public init(start: Bytes, end: Bytes?) {
        self.start = start
        self.end = end
    }

    public func contains(_ key: Bytes) -> Bool {
        !key.lexicographicallyPrecedes(start) && (end.map { key.lexicographicallyPrecedes($0) } ?? true)
    }

    /// The first key after every key with this prefix, or nil if there is none (all 0xFF).
    public static func prefixEnd(_ prefix: Bytes) -> Bytes? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }
}

/// A granted lease. Keys attached to it are deleted when it is revoked or expires.
public struct Lease: Sendable, Equatable, Hashable {
    public var id: LeaseID
    public var ttlMs: Int64
    /// Leader time at which it expires unless kept alive.
    public var expiresAtMs: Int64

    public init(id: LeaseID, ttlMs: Int64, expiresAtMs: Int64) {
        self.id = id
        self.ttlMs = ttlMs
        self.expiresAtMs = expiresAtMs
    }
}

extension Bytes {
    /// Keys and values in messages: UTF-8 when printable, hex otherwise.
    public var displayString: String {
        if let text = String(validating: self, as: UTF8.self), text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) {
            return text
        }
        return "0x" + map { byte in
            let digits = String(byte, radix: 16)
            return byte < 16 ? "0" + digits : digits
        }.joined()
    }
}
