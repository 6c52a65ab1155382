import AspenCore
import AspenKV
import AspenRaft
import Foundation
import GRDB
import Synchronization

// Reads of the applied state: ranges, history for watches, revisions, leases and system records.
extension SQLiteNodeStorage {
    public func changes(in bounds: KeyBounds, from: Revision, through: Revision, withPrevious: Bool, limit: Int) throws
        -> Result<(events: [WatchEvent], nextRevision: Revision), KVError>
    {
        try guarded {
            try reading { _, backend in
                try KVStateMachine.changes(
                    in: bounds, from: from, through: through, withPrevious: withPrevious, limit: limit, backend: backend)
            }
        }
    }

    public func revisions() throws -> (current: Revision, compacted: Revision) {
        try guarded {
            try reading { _, backend in (backend.revision(), backend.compactedRevision()) }
        }
    }

    public func read(_ request: RangeRequest) throws -> Result<RangeResult, KVError> {
        try guarded {
            try reading { _, backend in try KVStateMachine.read(request, from: backend, limits: limits) }
        }
    }

    public func leases() throws -> [Lease] {
        try reading { _, backend in try backend.leases() }
    }

    public func earliestLeaseExpiry() throws -> Int64? {
        try guarded { try pool.read { db in try Int64.fetchOne(db.cachedStatement(sql: "SELECT MIN(expires_at_ms) FROM leases")) } }
    }

    public func lease(_ id: LeaseID) throws -> (lease: Lease, keys: [Bytes])? {
        try guarded {
            try reading { _, backend in try backend.lease(id).map { ($0, try backend.keys(attachedTo: id)) } }
        }
    }

    public func systemRecords(prefix: Bytes) throws -> [(name: Bytes, value: Bytes)] {
        try guarded {
            try reading { _, backend in try backend.systemRecords(prefix: prefix) }
        }
    }
}
