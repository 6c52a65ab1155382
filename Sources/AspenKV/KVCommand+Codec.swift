import AspenCore

/// The binary form of a `KVCommand` as it is stored in the Raft log. A version byte, then tagged
/// fields; decoding checks every length against `Limits` before allocating.
extension KVCommand {
    static let codecVersion: UInt8 = 1

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.write(Self.codecVersion)
        switch self {
        case .put(let put):
            writer.write(1)
            KVCodec.write(put, into: &writer)
        case .delete(let delete):
            writer.write(2)
            KVCodec.write(delete, into: &writer)
        case .transaction(let transaction):
            writer.write(3)
            KVCodec.write(transaction, into: &writer)
        case .batch(let operations):
            writer.write(4)
            writer.writeVarint(UInt64(operations.count))
            for operation in operations {
                switch operation {
                case .put(let put): KVCodec.write(TransactionOperation.put(put), into: &writer)
                case .delete(let delete): KVCodec.write(TransactionOperation.delete(delete), into: &writer)
                }
            }
        case .leaseGrant(let grant):
            writer.write(5)
            writer.writeVarint(signed: grant.id)
            writer.writeVarint(signed: grant.ttlMs)
            writer.writeVarint(signed: grant.nowMs)
        case .leaseRevoke(let id):
            writer.write(6)
            writer.writeVarint(signed: id)
        case .leaseKeepAlive(let id, let nowMs):
            writer.write(7)
            writer.writeVarint(signed: id)
            writer.writeVarint(signed: nowMs)
        case .expireLeases(let nowMs):
            writer.write(8)
            writer.writeVarint(signed: nowMs)
        case .compact(let revision):
            writer.write(9)
            writer.writeVarint(signed: revision)
        case .sessioned(let stamp, let nowMs, let command):
            writer.write(10)
            writer.writeVarint(stamp.session)
            writer.writeVarint(stamp.sequence)
            writer.writeVarint(stamp.acknowledgedThrough)
            writer.writeVarint(signed: nowMs)
            writer.writeRaw(command.encoded())
        case .system(let write):
            writer.write(11)
            KVCodec.write(write, into: &writer)
        }
        return writer.bytes
    }

    /// Whether the encoded command's work is bounded by its own size (a put, a lease grant or
    /// keep-alive), read from its tag without decoding it. Deletes, transactions, lease
    /// revocations, expiries, compactions and system writes (a prefix removal) can touch any
    /// number of rows.
    public static func hasBoundedWork(encoded bytes: Bytes) -> Bool {
        guard bytes.count >= 2, bytes[0] == codecVersion else { return false }
        if bytes[1] == 10 {
            // A client's command: the one it wraps decides (the session's bookkeeping is bounded).
            var reader = ByteReader(Array(bytes.dropFirst(2)))
            guard (try? (reader.readVarint(), reader.readVarint(), reader.readVarint(), reader.readSignedVarint())) != nil else { return false }
            return hasBoundedWork(encoded: Array(bytes.suffix(reader.remaining)))
        }
        return bytes[1] == 1 || bytes[1] == 5 || bytes[1] == 7
    }

    public init(decoding bytes: Bytes, limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.codecVersion else { throw .invalid("unknown command encoding version") }
        let codec = KVCodec(limits: limits)
        switch try reader.readByte() {
        case 1: self = .put(try codec.readPut(&reader))
        case 2: self = .delete(try codec.readDelete(&reader))
        case 3: self = .transaction(try codec.readTransaction(&reader, depth: 1))
        case 4:
            let count = try reader.readCount(limit: limits.batchKeysMax)
            var operations: [WriteOperation] = []
            for _ in 0..<count {
                switch try codec.readOperation(&reader) {
                case .put(let put): operations.append(.put(put))
                case .delete(let delete): operations.append(.delete(delete))
                case .get, .transaction: throw .invalid("a batch holds only puts and deletes")
                }
            }
            self = .batch(operations)
        case 5:
            self = .leaseGrant(
                LeaseGrant(id: try reader.readSignedVarint(), ttlMs: try reader.readSignedVarint(), nowMs: try reader.readSignedVarint()))
        case 6: self = .leaseRevoke(try reader.readSignedVarint())
        case 7: self = .leaseKeepAlive(try reader.readSignedVarint(), nowMs: try reader.readSignedVarint())
        case 8: self = .expireLeases(nowMs: try reader.readSignedVarint())
        case 9: self = .compact(try reader.readSignedVarint())
        case 10:
            let stamp = ClientStamp(session: try reader.readVarint(), sequence: try reader.readVarint(), acknowledgedThrough: try reader.readVarint())
            let nowMs = try reader.readSignedVarint()
            let inner = try KVCommand(decoding: reader.readRemaining(), limits: limits)
            if case .sessioned = inner { throw .invalid("a session stamp wraps one command, not another stamped one") }
            if case .system = inner { throw .invalid("a session stamp wraps a client's command, not a system write") }
            self = .sessioned(stamp, nowMs: nowMs, inner)
        case 11: self = .system(try codec.readSystemWrite(&reader))
        case let tag: throw .unknownTag(tag, context: "key-value command")
        }
        try reader.expectEnd()
    }
}

struct KVCodec {
    let limits: Limits

    static func write(_ put: Put, into writer: inout ByteWriter) {
        writer.writeBytes(put.key)
        writer.writeBytes(put.value)
        writer.writeVarint(signed: put.lease)
        // One byte of flags; entries written before the ignore flags existed hold 0 or 1 here.
        writer.write(UInt8(put.returnPrevious ? 1 : 0) | (put.ignoreValue ? 2 : 0) | (put.ignoreLease ? 4 : 0))
    }

    /// A count, then each change: its kind (0 set, 1 remove, 2 remove a prefix, 3 expect a value,
    /// 4 expect no record under a prefix), the name or prefix, and for a set or expect the value.
    static func write(_ write: SystemWrite, into writer: inout ByteWriter) {
        writer.writeVarint(UInt64(write.changes.count))
        for change in write.changes {
            switch change {
            case .set(let name, let value):
                writer.write(0)
                writer.writeBytes(name)
                writer.writeBytes(value)
            case .remove(let name):
                writer.write(1)
                writer.writeBytes(name)
            case .removePrefix(let prefix):
                writer.write(2)
                writer.writeBytes(prefix)
            case .expect(let name, let value):
                writer.write(3)
                writer.writeBytes(name)
                writer.writeOptionalBytes(value)
            case .expectNone(let prefix):
                writer.write(4)
                writer.writeBytes(prefix)
            }
        }
    }

    func readSystemWrite(_ reader: inout ByteReader) throws(DecodingError) -> SystemWrite {
        let count = try reader.readCount(limit: limits.systemRecordChangesMax)
        var changes: [SystemRecordChange] = []
        changes.reserveCapacity(min(count, reader.remaining / 2))
        for _ in 0..<count {
            switch try reader.readByte() {
            case 0:
                changes.append(
                    .set(
                        name: try reader.readBytes(limit: limits.systemRecordNameBytesMax),
                        value: try reader.readBytes(limit: limits.systemRecordValueBytesMax)))
            case 1: changes.append(.remove(name: try reader.readBytes(limit: limits.systemRecordNameBytesMax)))
            case 2: changes.append(.removePrefix(try reader.readBytes(limit: limits.systemRecordNameBytesMax)))
            case 3:
                changes.append(
                    .expect(
                        name: try reader.readBytes(limit: limits.systemRecordNameBytesMax),
                        value: try reader.readOptionalBytes(limit: limits.systemRecordValueBytesMax)))
            case 4: changes.append(.expectNone(prefix: try reader.readBytes(limit: limits.systemRecordNameBytesMax)))
            case let tag: throw .unknownTag(tag, context: "system record change")
            }
        }
        return SystemWrite(changes: changes)
    }

    func readPut(_ reader: inout ByteReader) throws(DecodingError) -> Put {
        let key = try reader.readBytes(limit: limits.keyBytesMax)
        let value = try reader.readBytes(limit: limits.valueBytesMax)
        let lease = try reader.readSignedVarint()
        let flags = try reader.readByte()
        guard flags & ~7 == 0 else { throw .unknownTag(flags, context: "put flags") }
        return Put(
            key: key, value: value, lease: lease, returnPrevious: flags & 1 != 0, ignoreValue: flags & 2 != 0, ignoreLease: flags & 4 != 0)
    }

    static func write(_ selection: KeySelection, into writer: inout ByteWriter) {
        switch selection {
        case .key(let key):
            writer.write(0)
            writer.writeBytes(key)
        case .prefix(let prefix):
            writer.write(1)
            writer.writeBytes(prefix)
        case .range(let start, let end):
            writer.write(2)
            writer.writeBytes(start)
            writer.writeOptionalBytes(end)
        }
    }

    func readSelection(_ reader: inout ByteReader) throws(DecodingError) -> KeySelection {
        switch try reader.readByte() {
        case 0: return .key(try reader.readBytes(limit: limits.keyBytesMax))
        case 1: return .prefix(try reader.readBytes(limit: limits.keyBytesMax))
        case 2:
            return .range(
                start: try reader.readBytes(limit: limits.keyBytesMax), end: try reader.readOptionalBytes(limit: limits.keyBytesMax))
        case let tag: throw .unknownTag(tag, context: "key selection")
        }
    }

    static func write(_ delete: Delete, into writer: inout ByteWriter) {
        write(delete.selection, into: &writer)
        writer.write(delete.returnPrevious)
    }

    func readDelete(_ reader: inout ByteReader) throws(DecodingError) -> Delete {
        Delete(try readSelection(&reader), returnPrevious: try reader.readBool())
    }

    static func write(_ compare: Compare, into writer: inout ByteWriter) {
        writer.writeBytes(compare.key)
        switch compare.target {
        case .value(let value):
            writer.write(0)
            writer.writeBytes(value)
        case .version(let value):
            writer.write(1)
            writer.writeVarint(signed: value)
        case .createRevision(let value):
            writer.write(2)
            writer.writeVarint(signed: value)
        case .modRevision(let value):
            writer.write(3)
            writer.writeVarint(signed: value)
        case .lease(let value):
            writer.write(4)
            writer.writeVarint(signed: value)
        }
        // The operator's byte has its high bit set for a range compare, whose end follows; a
        // one-key compare ends here, as compares written before ranges existed do.
        let code = ["=", "!=", "<", ">"].firstIndex(of: compare.op.rawValue).map(UInt8.init) ?? 0
        switch compare.extent {
        case .key:
            writer.write(code)
        case .range(let end):
            writer.write(code | 0x80)
            writer.writeOptionalBytes(end)
        }
    }

    func readCompare(_ reader: inout ByteReader) throws(DecodingError) -> Compare {
        let key = try reader.readBytes(limit: limits.keyBytesMax)
        let target: Compare.Target
        switch try reader.readByte() {
        case 0: target = .value(try reader.readBytes(limit: limits.valueBytesMax))
        case 1: target = .version(try reader.readSignedVarint())
        case 2: target = .createRevision(try reader.readSignedVarint())
        case 3: target = .modRevision(try reader.readSignedVarint())
        case 4: target = .lease(try reader.readSignedVarint())
        case let tag: throw .unknownTag(tag, context: "compare target")
        }
        let operators: [Compare.Operator] = [.equal, .notEqual, .less, .greater]
        let byte = try reader.readByte()
        let code = Int(byte & 0x7F)
        guard code < operators.count else { throw .unknownTag(byte, context: "compare operator") }
        let extent: Compare.Extent = byte & 0x80 != 0 ? .range(end: try reader.readOptionalBytes(limit: limits.keyBytesMax)) : .key
        return Compare(key: key, target, operators[code], extent: extent)
    }

    static func write(_ transaction: Transaction, into writer: inout ByteWriter) {
        writer.writeVarint(UInt64(transaction.compares.count))
        for compare in transaction.compares { write(compare, into: &writer) }
        for branch in [transaction.success, transaction.failure] {
            writer.writeVarint(UInt64(branch.count))
            for operation in branch { write(operation, into: &writer) }
        }
    }

    /// A transaction at nesting `depth` (1 for the command's own), refused deeper than
    /// `transactionDepthMax`.
    func readTransaction(_ reader: inout ByteReader, depth: Int) throws(DecodingError) -> Transaction {
        guard depth <= limits.transactionDepthMax else {
            throw .invalid("transactions nested deeper than transactionDepthMax (\(limits.transactionDepthMax))")
        }
        let compareCount = try reader.readCount(limit: limits.batchKeysMax)
        var compares: [Compare] = []
        for _ in 0..<compareCount { compares.append(try readCompare(&reader)) }
        var branches: [[TransactionOperation]] = []
        for _ in 0..<2 {
            let count = try reader.readCount(limit: limits.batchKeysMax)
            var branch: [TransactionOperation] = []
            for _ in 0..<count { branch.append(try readOperation(&reader, depth: depth)) }
            branches.append(branch)
        }
        return Transaction(compares: compares, success: branches[0], failure: branches[1])
    }

    static func write(_ operation: TransactionOperation, into writer: inout ByteWriter) {
        switch operation {
        case .put(let put):
            writer.write(0)
            write(put, into: &writer)
        case .delete(let delete):
            writer.write(1)
            write(delete, into: &writer)
        case .get(let request):
            writer.write(2)
            write(request.selection, into: &writer)
            writer.writeVarint(signed: request.revision)
            // Pages stop at `Limits.scanPageMax` whatever the limit; a larger one (etcd's is 64-bit)
            // is kept as the largest the decoder takes, so that a valid command always decodes.
            writer.writeVarint(signed: Int64(min(request.limit ?? 0, Int(Int32.max))))
            writer.write(request.keysOnly)
            writer.write(request.countOnly)
            writer.writeOptionalBytes(request.continuation)
        case .transaction(let nested):
            writer.write(3)
            write(nested, into: &writer)
        }
    }

    /// One operation of a transaction at nesting `depth` (a nested transaction is one deeper).
    func readOperation(_ reader: inout ByteReader, depth: Int = 1) throws(DecodingError) -> TransactionOperation {
        switch try reader.readByte() {
        case 0: return .put(try readPut(&reader))
        case 1: return .delete(try readDelete(&reader))
        case 2:
            let selection = try readSelection(&reader)
            let revision = try reader.readSignedVarint()
            let limit = try reader.readSignedVarint()
            guard limit >= 0, limit <= Int64(Int32.max) else { throw .invalid("page limit \(limit)") }
            return .get(
                RangeRequest(
                    selection, revision: revision, limit: limit == 0 ? nil : Int(limit), keysOnly: try reader.readBool(),
                    countOnly: try reader.readBool(), continuation: try reader.readOptionalBytes(limit: 4096)))
        case 3: return .transaction(try readTransaction(&reader, depth: depth + 1))
        case let tag: throw .unknownTag(tag, context: "transaction operation")
        }
    }
}
