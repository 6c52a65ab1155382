import AspenCore
import AspenKV

/// The key-value commands of the Raft log (and the client writes they come from), and the
/// state snapshots Raft carries.
extension FuzzTarget {
    static let kvTargets: [FuzzTarget] = [kvCommand, kvSnapshot, kvSnapshotSealed]

    static let kvCommand = FuzzTarget(
        name: "kv-command",
        summary: "KVCommand(decoding:limits:) as the log holds it, and KVWire.decodeClientWrite as a client sends it",
        nestingTokens: [KVSeeds.nestedTransactionToken],
        seeds: {
            let commands = KVSeeds.commands
            // Lease expiry and system writes are the node's alone: a client's write never carries them.
            let writes = commands.filter {
                switch $0 {
                case .expireLeases, .system: false
                default: true
                }
            }
            return selected(0, commands.map { $0.encoded() }) + selected(1, writes.map { $0.encoded() })
        }
    ) { input in
        FuzzCheck.select(input, [
            { FuzzCheck.roundTrip($0, decode: { try KVCommand(decoding: $0) }, encode: { $0.encoded() }, bounds: KVBounds.command) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try KVWire.decodeClientWrite($0) },
                    encode: { write in write.stamp.map { KVWire.encode(write.request, stamp: $0) } ?? KVWire.encode(write.request) })
            },
        ])
    }

    static let kvSnapshot = FuzzTarget(
        name: "kv-snapshot", summary: "KVSnapshot(decoding:): framed images (AKV3, KVSnapshotImage.Reader) and whole snapshots (AKV1, AKV2)",
        seeds: { KVSnapshotSeeds.images }
    ) { input in
        FuzzCheck.roundTrip(input, decode: { try KVSnapshot(decoding: $0) }, encode: { $0.encoded() }, bounds: KVBounds.snapshot)
    }

    /// As `kv-snapshot`, with every checksum made right before decoding, so that mutations reach
    /// the frames' contents instead of stopping at their checksums.
    static let kvSnapshotSealed = FuzzTarget(
        name: "kv-snapshot-sealed", summary: "KVSnapshot(decoding:) past the checksums: each frame's CRC-32C (and AKV2's) recomputed first",
        seeds: { KVSnapshotSeeds.images }
    ) { input in
        FuzzCheck.roundTrip(
            KVSnapshotSeeds.resealed(input), decode: { try KVSnapshot(decoding: $0) }, encode: { $0.encoded() }, bounds: KVBounds.snapshot)
    }
}

/// What decoded key-value values may never hold.
enum KVBounds {
    static func command(_ command: KVCommand) -> String? {
        let limits = Limits.standard
        switch command {
        case .transaction(let transaction):
            let depth = self.depth(transaction)
            return depth > limits.transactionDepthMax ? "a transaction nested \(depth) deep" : nil
        case .batch(let operations):
            return operations.count > limits.batchKeysMax ? "a batch of \(operations.count)" : nil
        case .sessioned(_, _, .sessioned): return "a stamped command inside a stamped command"
        case .sessioned(_, _, .system): return "a system write inside a stamped command"
        case .system(let write):
            return write.changes.count > limits.systemRecordChangesMax ? "a system write of \(write.changes.count) changes" : nil
        case .sessioned(_, _, let inner): return Self.command(inner)
        default: return nil
        }
    }

    static func depth(_ transaction: Transaction) -> Int {
        var deepest = 0
        for case .transaction(let nested) in transaction.success + transaction.failure { deepest = max(deepest, depth(nested)) }
        return deepest + 1
    }

    static func snapshot(_ snapshot: KVSnapshot) -> String? {
        guard snapshot.compactedRevision >= 0, snapshot.compactedRevision <= snapshot.revision else {
            return "compacted revision \(snapshot.compactedRevision) outside 0...\(snapshot.revision)"
        }
        for (earlier, later) in zip(snapshot.changes, snapshot.changes.dropFirst())
        where earlier.revision > later.revision || (earlier.revision == later.revision && !earlier.key.lexicographicallyPrecedes(later.key)) {
            return "changes out of (revision, key) order"
        }
        for (earlier, later) in zip(snapshot.systemRecords, snapshot.systemRecords.dropFirst())
        where !earlier.name.lexicographicallyPrecedes(later.name) {
            return "system records out of name order"
        }
        return nil
    }
}

enum KVSnapshotSeeds {
    static var images: [[UInt8]] {
        let history = KVSeeds.history
        let full = KVSnapshot(of: history.backend)
        let empty = KVSnapshot(revision: 0, compactedRevision: 0, leaseSequence: 0, changes: [], leases: [])
        var small = KVSnapshotImage.Writer(into: KVSnapshotImage.MemorySink(), frameTargetBytes: 48)
        // Memory sinks do not fail; a seed that could not be written is left out.
        let framed: [UInt8]? = try? {
            try small.begin(revision: full.revision, compactedRevision: full.compactedRevision, leaseSequence: full.leaseSequence)
            for change in full.changes { try small.add(change) }
            for lease in full.leases { try small.add(lease) }
            try small.add(ClientSessionState(record: ClientSessionRecord(id: 1, lastSeenMs: 5, acknowledgedThrough: 0), results: []))
            try small.add(
                ClientSessionState(
                    record: ClientSessionRecord(id: 3, lastSeenMs: 9, acknowledgedThrough: 1),
                    results: (2...6).map { (UInt64($0), Array(repeating: UInt8($0), count: 20)) }))
            for name in ["auth/mode", "auth/revoked/1", "auth/root/a"] {
                try small.add(SystemRecord(name: Array(name.utf8), value: Array(repeating: 0x5A, count: 30)))
            }
            try small.finish()
            return small.sink.bytes
        }()
        return [full.encoded(), empty.encoded(), KVSeeds.snapshotVersion2(full), KVSeeds.snapshotVersion2(empty)] + (framed.map { [$0] } ?? [])
    }

    /// `image` with its checksums recomputed: each AKV3 frame's, or an AKV1/AKV2 snapshot's last four bytes.
    static func resealed(_ image: [UInt8]) -> [UInt8] {
        let magic = Array(image.prefix(4))
        if magic == KVSnapshotImage.magic {
            var bytes = image
            var offset = 4
            while bytes.count - offset >= 9 {
                let length = Int(bytes[offset + 1]) | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3]) << 16 | Int(bytes[offset + 4]) << 24
                guard length <= bytes.count - offset - 9 else { break }
                let crc = CRC32C.checksum(bytes[offset..<(offset + 5 + length)])
                let end = offset + 5 + length
                for shift in 0..<4 { bytes[end + shift] = UInt8(truncatingIfNeeded: crc >> UInt32(8 * shift)) }
                offset = end + 4
            }
            return bytes
        }
        if magic == Array("AKV2".utf8) || magic == Array("AKV1".utf8), image.count >= 8 {
            return crcSealed(Array(image.dropLast(4)))
        }
        return image
    }
}
