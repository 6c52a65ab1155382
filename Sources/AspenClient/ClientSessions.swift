import AspenCore
import AspenKV
import Synchronization

/// The client's session for exactly-once writes: a random id, a sequence for each write (kept
/// by its retries), and the sequence through which every write has its answer (the state
/// machine then forgets those results).
final class ClientSessions: Sendable {
    private struct State {
        var id: UInt64
        /// The first sequence of the current session (a renewed session starts past the old).
        var start: UInt64 = 1
        var next: UInt64 = 1
        var pending: Set<UInt64> = []
    }

    private let state: Mutex<State>

    init() {
        state = Mutex(State(id: Self.newID()))
    }

    private static func newID() -> UInt64 {
        var generator = SystemRandomNumberGenerator()
        return UInt64.random(in: 1...UInt64.max, using: &generator)
    }

    /// A stamp for a new write; call `finished` once it has its answer, whatever it was.
    func begin() -> ClientStamp {
        state.withLock { state in
            let sequence = state.next
            state.next += 1
            state.pending.insert(sequence)
            let answered = (state.pending.min() ?? sequence) - 1
            return ClientStamp(session: state.id, sequence: sequence, acknowledgedThrough: answered >= state.start ? answered : 0)
        }
    }

    func finished(_ stamp: ClientStamp) {
        state.withLock { _ = $0.pending.remove(stamp.sequence) }
    }

    /// The cluster forgot `session`: later writes start a new one (once, however many writes
    /// learn it at the same time).
    func renew(after session: UInt64) {
        state.withLock { state in
            guard state.id == session else { return }
            state.id = Self.newID()
            state.start = state.next
        }
    }
}
