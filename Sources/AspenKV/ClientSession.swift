import AspenCore

/// What makes a client's write exactly-once (the Raft dissertation's client sessions, §6.3):
/// the client's session, the request's sequence in it (a retry reuses it), and the sequence
/// through which the client has every answer (the state machine may forget those results).
public struct ClientStamp: Sendable, Equatable {
    public var session: UInt64
    public var sequence: UInt64
    public var acknowledgedThrough: UInt64

    public init(session: UInt64, sequence: UInt64, acknowledgedThrough: UInt64) {
        self.session = session
        self.sequence = sequence
        self.acknowledgedThrough = acknowledgedThrough
    }
}

/// A session as the state machine keeps it: when it was last seen (by the leader's clock, from
/// the commands) and the sequence through which its results have been forgotten.
public struct ClientSessionRecord: Sendable, Equatable {
    public var id: UInt64
    public var lastSeenMs: Int64
    public var acknowledgedThrough: UInt64

    public init(id: UInt64, lastSeenMs: Int64, acknowledgedThrough: UInt64) {
        self.id = id
        self.lastSeenMs = lastSeenMs
        self.acknowledgedThrough = acknowledgedThrough
    }
}

/// One session with the results it keeps (sequence, encoded result), for snapshots.
public struct ClientSessionState: Sendable, Equatable {
    public var record: ClientSessionRecord
    public var results: [(sequence: UInt64, result: Bytes)]

    public init(record: ClientSessionRecord, results: [(sequence: UInt64, result: Bytes)]) {
        self.record = record
        self.results = results
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.record == rhs.record && lhs.results.elementsEqual(rhs.results) { $0.sequence == $1.sequence && $0.result == $1.result }
    }
}

extension KVStateMachine {
    /// Applies a client's command once: a retry of a sequence already applied gets the result
    /// recorded then, never a second application. The command and the session's bookkeeping
    /// apply together, whole or not at all; a command that fails leaves only its recorded
    /// failure (so every retry fails the same way).
    static func applyOnce<Backend: KVBackend>(
        _ command: KVCommand, stamp: ClientStamp, nowMs: Int64, to backend: inout Backend, limits: Limits
    ) throws -> (result: Result<KVResult, KVError>, events: [WatchEvent]) {
        let stored = try backend.clientSession(stamp.session)
        let known = stored.flatMap { $0.lastSeenMs + limits.clientSessionIdleMsMax < nowMs ? nil : $0 }
        if let known {
            guard stamp.sequence > known.acknowledgedThrough else {
                return (.failure(.sessionResultDiscarded(session: stamp.session, sequence: stamp.sequence)), [])
            }
            if let recorded = try backend.sessionResult(stamp.session, sequence: stamp.sequence) { return (try decodeRecorded(recorded), []) }
        } else if stamp.acknowledgedThrough > 0 {
            // A session the client has had answers in, that the state no longer knows, expired:
            // what its earlier attempts did cannot be known any more.
            return (.failure(.sessionExpired(session: stamp.session)), [])
        }
        let acknowledged = max(known?.acknowledgedThrough ?? 0, stamp.acknowledgedThrough)
        guard stamp.sequence - acknowledged <= UInt64(limits.clientSessionResultsMax) else {
            return (.failure(.sessionWindowExceeded(sequence: stamp.sequence, acknowledgedThrough: acknowledged, limit: limits.clientSessionResultsMax)), [])
        }
        // When it was last seen moves in steps of a sixteenth of the idle limit, so most writes
        // leave the session's row in the expiry index alone.
        var lastSeenMs = known?.lastSeenMs ?? nowMs
        if nowMs - lastSeenMs >= limits.clientSessionIdleMsMax / 16 { lastSeenMs = nowMs }
        let session = ClientSessionRecord(id: stamp.session, lastSeenMs: lastSeenMs, acknowledgedThrough: acknowledged)
        let applied = try atomically(&backend) { backend in
            let (result, events) = try run(command, on: &backend, limits: limits)
            try record(.success(result), of: stamp, in: session, previous: known, to: &backend, limits: limits)
            return (result, events)
        }
        switch applied {
        case .success(let (result, events)):
            return (.success(result), events)
        case .failure(let error):
            // The command failed whole; its failure is what every retry of it gets.
            let recorded = try atomically(&backend) {
                try record(.failure(error), of: stamp, in: session, previous: known, to: &$0, limits: limits)
            }
            if case .failure(let bookkeeping) = recorded { return (.failure(bookkeeping), []) }
            return (.failure(error), [])
        }
    }

    /// Saves the session (making room for a new one) and the result that answers its retries;
    /// forgets the results the client acknowledged.
    static func record<Backend: KVBackend>(
        _ result: Result<KVResult, KVError>, of stamp: ClientStamp, in session: ClientSessionRecord, previous: ClientSessionRecord?,
        to backend: inout Backend, limits: Limits
    ) throws {
        if let previous {
            if session.acknowledgedThrough > previous.acknowledgedThrough {
                try backend.dropSessionResults(session.id, through: session.acknowledgedThrough)
            }
        } else {
            // An expired record of the same id goes first, with its results.
            try backend.removeClientSession(session.id)
            try makeRoomForSession(nowMs: session.lastSeenMs, in: &backend, limits: limits)
        }
        if session != previous { try backend.saveClientSession(session, previous: previous) }
        try backend.saveSessionResult(session.id, sequence: stamp.sequence, encodeRecorded(result))
    }

    /// Forgets the sessions idle past the limit, and the least recently seen while the table
    /// is full: all by the commands' own time, so every member forgets the same ones.
    static func makeRoomForSession<Backend: KVBackend>(nowMs: Int64, in backend: inout Backend, limits: Limits) throws {
        for id in try backend.clientSessions(lastSeenBeforeMs: nowMs - limits.clientSessionIdleMsMax, limit: 64) {
            try backend.removeClientSession(id)
        }
        var count = try backend.clientSessionCount()
        while count >= limits.clientSessionsMax, let oldest = try backend.clientSessions(lastSeenBeforeMs: .max, limit: 1).first {
            try backend.removeClientSession(oldest)
            count -= 1
        }
    }

    static func encodeRecorded(_ result: Result<KVResult, KVError>) -> Bytes {
        var writer = ByteWriter()
        switch result {
        case .success(let value):
            writer.write(UInt8(0))
            writer.writeRaw(KVWire.encode(value))
        case .failure(let error):
            writer.write(UInt8(1))
            writer.writeRaw(KVWire.encode(error))
        }
        return writer.bytes
    }

    /// A result the state itself recorded: one that does not decode is damage, not a client's error.
    static func decodeRecorded(_ bytes: Bytes) throws -> Result<KVResult, KVError> {
        guard let tag = bytes.first else { throw DecodingError.invalid("an empty recorded session result") }
        let body = Array(bytes.dropFirst())
        switch tag {
        case 0: return .success(try KVWire.decodeResult(body))
        case 1: return .failure(try KVWire.decodeError(body))
        default: throw DecodingError.unknownTag(tag, context: "recorded session result")
        }
    }
}
