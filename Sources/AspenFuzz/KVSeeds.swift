import AspenCore
import AspenKV

/// Representative key-value values, and a small history applied to a memory backend so that
/// results, watch events and snapshots are the state machine's own.
enum KVSeeds {
    static let selections: [KeySelection] = [
        .key(Array("a".utf8)), .prefix([]), .prefix([0xFF, 0xFF]), .range(start: Array("a".utf8), end: Array("z".utf8)), .range(start: [0], end: nil),
    ]

    static let puts: [Put] = [
        Put(key: Array("a".utf8), value: Array("1".utf8)),
        Put(key: [0, 0xFF], value: [], lease: 7, returnPrevious: true),
        Put(key: Array("k".utf8), value: [], lease: 0, ignoreValue: true, ignoreLease: true),
        Put(key: Array(repeating: 0x6B, count: 1024), value: Array(repeating: 0x76, count: 300), lease: -1),
    ]

    static let compares: [Compare] = [
        Compare(key: Array("a".utf8), .value(Array("1".utf8))), Compare(key: Array("a".utf8), .version(0), .notEqual),
        Compare(key: Array("b".utf8), .createRevision(3), .less), Compare(key: Array("c".utf8), .modRevision(.max), .greater),
        Compare(key: Array("d".utf8), .lease(7), extent: .range(end: Array("e".utf8))), Compare(key: [], .version(1), extent: .range(end: nil)),
    ]

    /// A transaction nested `depth` deep (1: no nested transaction), every operation kind in it.
    static func transaction(depth: Int) -> Transaction {
        var success: [TransactionOperation] = [
            .put(puts[0]), .delete(Delete(selections[3], returnPrevious: true)),
            .get(RangeRequest(selections[1], revision: 2, limit: 10, keysOnly: true, countOnly: false, continuation: [1, 2, 3])),
        ]
        if depth > 1 { success.append(.transaction(transaction(depth: depth - 1))) }
        return Transaction(compares: depth == 1 ? compares : [compares[depth % compares.count]], success: success, failure: [.put(puts[1])])
    }

    static var commands: [KVCommand] {
        let limits = Limits.standard
        var commands: [KVCommand] =
            puts.map { .put($0) } + selections.map { .delete(Delete($0, returnPrevious: true)) } + [
                .transaction(transaction(depth: 1)), .transaction(transaction(depth: limits.transactionDepthMax)),
                .transaction(Transaction(compares: [], success: [])),
                .batch([.put(puts[0]), .delete(Delete(selections[0])), .put(puts[3])]), .batch([]),
                .leaseGrant(LeaseGrant(id: 7, ttlMs: 10_000, nowMs: 1_700_000_000_000)), .leaseGrant(LeaseGrant(id: 0, ttlMs: -1, nowMs: .min)),
                .leaseRevoke(7), .leaseKeepAlive(7, nowMs: 5), .expireLeases(nowMs: .max), .compact(3), .compact(-1),
            ]
        commands.append(.sessioned(ClientStamp(session: 9, sequence: 4, acknowledgedThrough: 3), nowMs: 12, .put(puts[0])))
        commands.append(.sessioned(ClientStamp(session: .max, sequence: 1, acknowledgedThrough: 0), nowMs: -5, .transaction(transaction(depth: 3))))
        commands.append(.system(systemWrite))
        commands.append(.system(SystemWrite(changes: [])))
        return commands
    }

    /// A system write with every kind of change, names at their longest and a value at its largest.
    static let systemWrite = SystemWrite(changes: [
        .set(name: Array("auth/mode".utf8), value: Array("required".utf8)),
        .set(name: Array(repeating: 0x72, count: Limits.standard.systemRecordNameBytesMax), value: Array(repeating: 0x76, count: Limits.standard.systemRecordValueBytesMax)),
        .set(name: [0], value: []), .remove(name: Array("auth/revoked/7".utf8)), .removePrefix(Array("auth/revoked/".utf8)), .removePrefix([]),
        .expect(name: Array("blob/m/1".utf8), value: nil), .expect(name: [1], value: [2]), .expectNone(prefix: Array("blob/r/".utf8)),
    ])

    /// The opening bytes of a transaction operation holding one nested transaction with no
    /// compares: repeated, a transaction nested as deep as the run is long.
    static let nestedTransactionToken: [UInt8] = [3, 0, 1]

    /// What applying a short history to a memory backend produced.
    struct History: Sendable {
        var backend = MemoryKVBackend()
        var results: [KVResult] = []
        var events: [WatchEvent] = []
        var ranges: [RangeResult] = []
    }

    static let history: History = {
        var history = History()
        let steps: [KVCommand] = [
            .leaseGrant(LeaseGrant(id: 7, ttlMs: 10_000, nowMs: 0)), .leaseGrant(LeaseGrant(id: 9, ttlMs: 5_000, nowMs: 0)),
            .put(Put(key: Array("a".utf8), value: Array("1".utf8), lease: 7)), .put(Put(key: Array("b".utf8), value: Array("2".utf8))),
            .put(Put(key: Array("c".utf8), value: [0, 0xFF], returnPrevious: true)),
            .put(Put(key: Array("a".utf8), value: Array("11".utf8), lease: 7, returnPrevious: true)),
            .delete(Delete(.prefix(Array("b".utf8)), returnPrevious: true)), .transaction(transaction(depth: 3)),
            .batch([.put(Put(key: Array("x".utf8), value: [1])), .delete(Delete(.key(Array("c".utf8))))]),
            .sessioned(ClientStamp(session: 4, sequence: 1, acknowledgedThrough: 0), nowMs: 1, .put(Put(key: Array("s".utf8), value: [2]))),
            .sessioned(ClientStamp(session: 4, sequence: 2, acknowledgedThrough: 0), nowMs: 2, .put(Put(key: Array("t".utf8), value: [3]))),
            .leaseKeepAlive(7, nowMs: 5), .leaseRevoke(9), .compact(2), .expireLeases(nowMs: 1 << 40),
            .system(SystemWrite(changes: [.set(name: Array("auth/mode".utf8), value: [1]), .set(name: Array("auth/root/1".utf8), value: [2, 3])])),
        ]
        for command in steps {
            guard let (result, events) = try? KVStateMachine.applyRecording(command, to: &history.backend) else { continue }
            if case .success(let value) = result { history.results.append(value) }
            history.events += events
        }
        for selection in selections + [.prefix([])] {
            for limit in [nil, 1] as [Int?] {
                if case .success(let range)? = try? KVStateMachine.read(RangeRequest(selection, limit: limit), from: history.backend) {
                    history.ranges.append(range)
                }
            }
        }
        return history
    }()

    static let errors: [KVError] = [
        .emptyKey, .keyTooLarge(bytes: 2000, limit: 1024), .valueTooLarge(bytes: .max, limit: 0), .tooManyOperations(count: 1001, limit: 1000),
        .invalidRange("end before start"), .duplicateKey([0, 1]), .compacted(requested: 1, oldestAvailable: 5),
        .futureRevision(requested: 9, current: 3), .leaseNotFound(-7), .leaseExists(7), .keyNotFound(Array("k".utf8)),
        .invalidTTL(ms: -1, reason: "negative"), .invalidContinuation("é"), .invalidCommand(""), .storage("disk"),
        .sessionExpired(session: 3), .sessionResultDiscarded(session: 3, sequence: 9),
        .sessionWindowExceeded(sequence: 2000, acknowledgedThrough: 1, limit: 1024), .systemRecordsExceeded(count: 100_001, limit: 100_000),
        .systemConditionFailed("system record blob/m/1 exists"),
    ]

    /// A whole snapshot of version 2 (the one before framed images): magic, fields, CRC-32C.
    static func snapshotVersion2(_ snapshot: KVSnapshot) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeRaw(Array("AKV2".utf8))
        writer.writeVarint(signed: snapshot.revision)
        writer.writeVarint(signed: snapshot.compactedRevision)
        writer.writeVarint(signed: snapshot.leaseSequence)
        writer.writeVarint(UInt64(snapshot.changes.count))
        for change in snapshot.changes { KVSnapshotImage.write(change, into: &writer) }
        writer.writeVarint(UInt64(snapshot.leases.count))
        for lease in snapshot.leases {
            writer.writeVarint(signed: lease.id)
            writer.writeVarint(signed: lease.ttlMs)
            writer.writeVarint(signed: lease.expiresAtMs)
        }
        writer.writeVarint(UInt64(snapshot.sessions.count))
        for session in snapshot.sessions {
            writer.writeVarint(session.record.id)
            writer.writeVarint(signed: session.record.lastSeenMs)
            writer.writeVarint(session.record.acknowledgedThrough)
            writer.writeVarint(UInt64(session.results.count))
            for result in session.results {
                writer.writeVarint(result.sequence)
                writer.writeBytes(result.result)
            }
        }
        return crcSealed(writer.bytes)
    }
}
