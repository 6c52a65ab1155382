import Synchronization

/// A job's output accounting: how much was read, and how much of it may be delivered.
struct OutputBudget: Sendable, Equatable {
    let bytesMax: Int
    private(set) var producedBytes = 0
    private(set) var deliveredBytes = 0

    init(bytesMax: Int) {
        precondition(bytesMax >= 0, "bytesMax must not be negative")
        self.bytesMax = bytesMax
    }

    /// Some output was read and not delivered.
    var truncated: Bool { producedBytes > deliveredBytes }

    /// Counts `count` bytes read; returns how many of them, from their start, may be delivered.
    mutating func admit(_ count: Int) -> Int {
        precondition(count >= 0, "count must not be negative")
        let admitted = min(count, bytesMax - deliveredBytes)
        producedBytes += count
        deliveredBytes += admitted
        return admitted
    }
}

/// The budget the two streams' readers share.
final class OutputMeter: Sendable {
    private let state: Mutex<OutputBudget>

    init(bytesMax: Int) {
        state = Mutex(OutputBudget(bytesMax: bytesMax))
    }

    func admit(_ count: Int) -> Int {
        state.withLock { $0.admit(count) }
    }

    var budget: OutputBudget {
        state.withLock { $0 }
    }
}
