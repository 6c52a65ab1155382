import AspenCore

/// The whole key-value state at one revision, as bytes: what a Raft snapshot carries. History
/// before the snapshot's revision is not included; a node that installs it reads from that
/// revision on.
public struct KVSnapshot: Sendable, Equatable {
    public var revision: Revision
    public var leaseSequence: LeaseID
    public var keyValues: [KeyValue]
    public var leases: [Lease]

    public init(revision: Revision, leaseSequence: LeaseID, keyValues: [KeyValue], leases: [Lease]) {
        self.revision = revision
        self.leaseSequence = leaseSequence
        self.keyValues = keyValues
        self.leases = leases
    }

    static let magic: [UInt8] = Array("AKV1".utf8)

    /// Reads every current key and lease from a backend.
    public static func capture<Backend: KVBackend>(from backend: Backend) throws -> KVSnapshot {
        KVSnapshot(
            revision: try backend.revision(), leaseSequence: try backend.leaseSequence(),
            keyValues: try backend.scan(KeyBounds(start: [], end: nil), at: nil, after: nil, limit: .max),
            leases: try backend.leases())
    }

    public func encoded() -> Bytes {
        var writer = ByteWriter(capacity: 64 + keyValues.count * 48)
        writer.writeRaw(Self.magic)
        writer.writeVarint(signed: revision)
        writer.writeVarint(signed: leaseSequence)
        KVWire.write(keyValues, into: &writer)
        writer.writeVarint(UInt64(leases.count))
        for lease in leases { KVWire.write(lease, into: &writer) }
        writer.writeFixed(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    public init(decoding bytes: Bytes, limits: Limits = .standard) throws(DecodingError) {
        guard bytes.count >= Self.magic.count + 4, Array(bytes.prefix(4)) == Self.magic else {
            throw .invalid("not a key-value snapshot")
        }
        var tail = ByteReader(Array(bytes.suffix(4)))
        guard try tail.readFixed32() == CRC32C.checksum(bytes.dropLast(4)) else {
            throw .invalid("key-value snapshot checksum mismatch")
        }
        var reader = ByteReader(Array(bytes[4..<(bytes.count - 4)]))
        revision = try reader.readSignedVarint()
        leaseSequence = try reader.readSignedVarint()
        keyValues = try KVWire.readKeyValues(&reader)
        let leaseCount = try reader.readCount(limit: reader.remaining)
        leases = []
        for _ in 0..<leaseCount { leases.append(try KVWire.readLease(&reader)) }
        try reader.expectEnd()
    }
}

extension MemoryKVBackend {
    /// The state a snapshot describes; its revision is also the oldest readable one.
    public init(snapshot: KVSnapshot) {
        self.init()
        for kv in snapshot.keyValues.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            history[kv.key] = [Version(revision: kv.modRevision, keyValue: kv)]
            sortedKeys.append(kv.key)
            if kv.lease != 0 { leaseKeys[kv.lease, default: []].insert(kv.key) }
        }
        for lease in snapshot.leases { leaseTable[lease.id] = lease }
        currentRevision = snapshot.revision
        oldestRevision = snapshot.revision
        lastLeaseID = snapshot.leaseSequence
    }
}
