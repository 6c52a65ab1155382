import AspenCore
import AspenKV
import Foundation
import GRPCCore

/// etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.
struct EtcdKVService: Etcdserverpb_KV.SimpleServiceProtocol {
    let gateway: EtcdGateway

    /// Most keys one Range gathers when it must sort or filter them all first.
    static let sortedRangeKeysMax = 100_000

    func range(request: Etcdserverpb_RangeRequest, context: ServerContext) async throws -> Etcdserverpb_RangeResponse {
        var response = Etcdserverpb_RangeResponse()
        guard let selection = EtcdGateway.selection(key: request.key, rangeEnd: request.rangeEnd) else {
            response.header = await gateway.header()
            return response
        }
        let result = try await Self.range(request, selection: selection, gateway: gateway)
        response.header = await gateway.header(revision: result.revision)
        response.kvs = result.kvs.map(EtcdGateway.keyValue)
        response.count = Int64(result.count)
        response.more = result.more
        return response
    }

    /// A Range as etcd defines it (all keys unless limited, sorted and filtered as asked), read
    /// in pages at one revision.
    static func range(_ request: Etcdserverpb_RangeRequest, selection: KeySelection, gateway: EtcdGateway) async throws
        -> (kvs: [KeyValue], count: Int, more: Bool, revision: Revision)
    {
        let limit = request.limit > 0 ? Int(request.limit) : Int.max
        if request.countOnly {
            let counted = try await gateway.read(
                RangeRequest(selection, revision: request.revision, countOnly: true), serializable: request.serializable)
            return ([], counted.count, false, counted.revision)
        }
        let ordered = request.sortOrder == .none || (request.sortOrder == .ascend && request.sortTarget == .key)
        let filtered = request.minModRevision > 0 || request.maxModRevision > 0 || request.minCreateRevision > 0 || request.maxCreateRevision > 0
        let wanted = ordered && !filtered ? limit : sortedRangeKeysMax + 1
        var kvs: [KeyValue] = []
        var continuation: Bytes?
        var count = 0
        var revision = request.revision
        var more = false
        repeat {
            let page = try await gateway.read(
                RangeRequest(
                    selection, revision: revision, limit: min(gateway.limits.scanPageMax, wanted - kvs.count), keysOnly: request.keysOnly,
                    continuation: continuation), serializable: request.serializable)
            if continuation == nil {
                count = page.count
                revision = page.revision
            }
            kvs += page.kvs
            continuation = page.continuation
            more = page.more
        } while more && continuation != nil && kvs.count < wanted
        if ordered && !filtered { return (kvs, count, more || count > kvs.count, revision) }
        guard kvs.count <= sortedRangeKeysMax else {
            throw RPCError(code: .resourceExhausted, message: "sorting or filtering more than \(sortedRangeKeysMax) keys in one Range is not supported; narrow the range")
        }
        kvs.removeAll { kv in
            (request.minModRevision > 0 && kv.modRevision < request.minModRevision)
                || (request.maxModRevision > 0 && kv.modRevision > request.maxModRevision)
                || (request.minCreateRevision > 0 && kv.createRevision < request.minCreateRevision)
                || (request.maxCreateRevision > 0 && kv.createRevision > request.maxCreateRevision)
        }
        if !ordered {
            let ascending: (KeyValue, KeyValue) -> Bool
            switch request.sortTarget {
            case .version: ascending = { $0.version < $1.version }
            case .create: ascending = { $0.createRevision < $1.createRevision }
            case .mod: ascending = { $0.modRevision < $1.modRevision }
            case .value: ascending = { $0.value.lexicographicallyPrecedes($1.value) }
            default: ascending = { $0.key.lexicographicallyPrecedes($1.key) }
            }
            kvs.sort(by: request.sortOrder == .descend ? { ascending($1, $0) } : ascending)
        }
        let total = kvs.count
        return (Array(kvs.prefix(limit)), filtered ? total : count, total > limit, revision)
    }

    func put(request: Etcdserverpb_PutRequest, context: ServerContext) async throws -> Etcdserverpb_PutResponse {
        let result = try await gateway.write(.put(try Self.put(request)))
        guard case .put(let put) = result else { throw RPCError(code: .internalError, message: "unexpected result \(result)") }
        var response = Etcdserverpb_PutResponse()
        response.header = await gateway.header(revision: put.revision)
        if let previous = put.previous { response.prevKv = EtcdGateway.keyValue(previous) }
        return response
    }

    func deleteRange(request: Etcdserverpb_DeleteRangeRequest, context: ServerContext) async throws -> Etcdserverpb_DeleteRangeResponse {
        var response = Etcdserverpb_DeleteRangeResponse()
        guard let selection = EtcdGateway.selection(key: request.key, rangeEnd: request.rangeEnd) else {
            response.header = await gateway.header()
            return response
        }
        let result = try await gateway.write(.delete(Delete(selection, returnPrevious: request.prevKv)))
        guard case .delete(let delete) = result else { throw RPCError(code: .internalError, message: "unexpected result \(result)") }
        response.header = await gateway.header(revision: delete.revision)
        response.deleted = Int64(delete.deleted)
        response.prevKvs = delete.previous.map(EtcdGateway.keyValue)
        return response
    }

    func txn(request: Etcdserverpb_TxnRequest, context: ServerContext) async throws -> Etcdserverpb_TxnResponse {
        let result = try await gateway.write(.transaction(try Self.transaction(request, gateway)))
        guard case .transaction(let outcome) = result else { throw RPCError(code: .internalError, message: "unexpected result \(result)") }
        return Self.response(outcome, header: await gateway.header(revision: outcome.revision))
    }

    static func transaction(_ request: Etcdserverpb_TxnRequest, _ gateway: EtcdGateway) throws -> Transaction {
        Transaction(
            compares: try request.compare.map(Self.compare), success: try request.success.map { try Self.operation($0, gateway) },
            failure: try request.failure.map { try Self.operation($0, gateway) })
    }

    /// A Txn's response, nested Txns' included; every one carries the same header.
    static func response(_ outcome: TransactionResult, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_TxnResponse {
        var response = Etcdserverpb_TxnResponse()
        response.header = header
        response.succeeded = outcome.succeeded
        for operation in outcome.results {
            var op = Etcdserverpb_ResponseOp()
            switch operation {
            case .put(let put):
                var out = Etcdserverpb_PutResponse()
                out.header = header
                if let previous = put.previous { out.prevKv = EtcdGateway.keyValue(previous) }
                op.responsePut = out
            case .delete(let delete):
                var out = Etcdserverpb_DeleteRangeResponse()
                out.header = header
                out.deleted = Int64(delete.deleted)
                out.prevKvs = delete.previous.map(EtcdGateway.keyValue)
                op.responseDeleteRange = out
            case .get(let range):
                var out = Etcdserverpb_RangeResponse()
                out.header = header
                out.kvs = range.kvs.map(EtcdGateway.keyValue)
                out.count = Int64(range.count)
                out.more = range.more
                op.responseRange = out
            case .transaction(let nested):
                op.responseTxn = Self.response(nested, header: header)
            }
            response.responses.append(op)
        }
        return response
    }

    static func compare(_ compare: Etcdserverpb_Compare) throws -> Compare {
        let op: Compare.Operator
        switch compare.result {
        case .equal: op = .equal
        case .notEqual: op = .notEqual
        case .greater: op = .greater
        case .less: op = .less
        case .UNRECOGNIZED(let value): throw RPCError(code: .invalidArgument, message: "unknown compare result \(value)")
        }
        let target: Compare.Target
        switch (compare.target, compare.targetUnion) {
        case (.version, let union):
            if case .version(let value)? = union { target = .version(value) } else { target = .version(0) }
        case (.create, let union):
            if case .createRevision(let value)? = union { target = .createRevision(value) } else { target = .createRevision(0) }
        case (.mod, let union):
            if case .modRevision(let value)? = union { target = .modRevision(value) } else { target = .modRevision(0) }
        case (.value, let union):
            if case .value(let value)? = union { target = .value(Bytes(value)) } else { target = .value([]) }
        case (.lease, let union):
            if case .lease(let value)? = union { target = .lease(value) } else { target = .lease(0) }
        case (.UNRECOGNIZED(let value), _): throw RPCError(code: .invalidArgument, message: "unknown compare target \(value)")
        }
        // A range_end makes it a compare over every key in [key, range_end); "\0" runs to the end.
        let extent: Compare.Extent =
            compare.rangeEnd.isEmpty ? .key : .range(end: compare.rangeEnd == Data([0]) ? nil : Bytes(compare.rangeEnd))
        return Compare(key: Bytes(compare.key), target, op, extent: extent)
    }

    /// etcd's Put, with its checks of `ignore_value` and `ignore_lease`.
    static func put(_ put: Etcdserverpb_PutRequest) throws -> Put {
        if put.ignoreValue && !put.value.isEmpty { throw RPCError(code: .invalidArgument, message: "etcdserver: value is provided") }
        if put.ignoreLease && put.lease != 0 { throw RPCError(code: .invalidArgument, message: "etcdserver: lease is provided") }
        return Put(
            key: Bytes(put.key), value: Bytes(put.value), lease: put.lease, returnPrevious: put.prevKv, ignoreValue: put.ignoreValue,
            ignoreLease: put.ignoreLease)
    }

    static func operation(_ op: Etcdserverpb_RequestOp, _ gateway: EtcdGateway) throws -> TransactionOperation {
        switch op.request {
        case .requestPut(let put)?:
            return .put(try Self.put(put))
        case .requestDeleteRange(let delete)?:
            guard let selection = EtcdGateway.selection(key: delete.key, rangeEnd: delete.rangeEnd) else {
                throw RPCError(code: .invalidArgument, message: "etcdserver: the range's end is not after its start")
            }
            return .delete(Delete(selection, returnPrevious: delete.prevKv))
        case .requestRange(let range)?:
            guard let selection = EtcdGateway.selection(key: range.key, rangeEnd: range.rangeEnd) else {
                throw RPCError(code: .invalidArgument, message: "etcdserver: the range's end is not after its start")
            }
            guard range.sortOrder == .none, range.minModRevision == 0, range.maxModRevision == 0 else {
                throw EtcdGateway.unsupported("sorting or filtering a Range inside a Txn")
            }
            return .get(
                RangeRequest(
                    selection, revision: range.revision, limit: range.limit > 0 ? Int(range.limit) : gateway.limits.scanPageMax,
                    keysOnly: range.keysOnly, countOnly: range.countOnly))
        case .requestTxn(let nested)?: return .transaction(try transaction(nested, gateway))
        case nil: throw RPCError(code: .invalidArgument, message: "etcdserver: an empty request op")
        }
    }

    func compact(request: Etcdserverpb_CompactionRequest, context: ServerContext) async throws -> Etcdserverpb_CompactionResponse {
        _ = try await gateway.write(.compact(request.revision))
        var response = Etcdserverpb_CompactionResponse()
        response.header = await gateway.header()
        return response
    }
}
