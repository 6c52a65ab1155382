/// A hybrid logical clock timestamp: wall-clock milliseconds plus a logical counter that orders
/// events within one millisecond (or while a node's clock lags the others). Compared wall first,
/// then counter, then node id, so timestamps from different nodes never tie.
public struct HLCTimestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var wallMs: Int64
    public var logical: UInt32
    public var node: NodeID

    public init(wallMs: Int64, logical: UInt32, node: NodeID) {
        self.wallMs = wallMs
        self.logical = logical
        self.node = node
    }

    public static func < (lhs: HLCTimestamp, rhs: HLCTimestamp) -> Bool {
        (lhs.wallMs, lhs.logical, lhs.node.rawValue) < (rhs.wallMs, rhs.logical, rhs.node.rawValue)
    }

    public var description: String { "\(wallMs).\(logical)@\(node)" }

    /// 20 bytes that sort like the timestamps (for keys).
    public var encoded: [UInt8] {
        func bigEndian(_ value: UInt64, bytes: Int) -> [UInt8] {
            (0..<bytes).reversed().map { UInt8(truncatingIfNeeded: value >> UInt64($0 * 8)) }
        }
        // The sign bit flipped, so negative walls sort first.
        return bigEndian(UInt64(bitPattern: wallMs) ^ (1 << 63), bytes: 8) + bigEndian(UInt64(logical), bytes: 4)
            + bigEndian(node.rawValue, bytes: 8)
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        guard bytes.count == 20 else { throw .invalid("an HLC timestamp is 20 bytes, not \(bytes.count)") }
        func number(_ range: Range<Int>) -> UInt64 { bytes[range].reduce(0) { $0 << 8 | UInt64($1) } }
        wallMs = Int64(bitPattern: number(0..<8) ^ (1 << 63))
        logical = UInt32(number(8..<12))
        node = NodeID(number(12..<20))
    }
}

/// A hybrid logical clock (Kulkarni et al.): `now()` never goes backwards and is never behind a
/// timestamp this node has received, even when its own wall clock is behind or jumps back; it
/// stays within the largest clock skew of the physical time. The wall clock is injected.
public struct HybridLogicalClock: Sendable {
    public let node: NodeID
    let physicalMs: @Sendable () -> Int64
    public private(set) var last: HLCTimestamp

    public init(node: NodeID, physicalMs: @escaping @Sendable () -> Int64) {
        self.node = node
        self.physicalMs = physicalMs
        last = HLCTimestamp(wallMs: .min, logical: 0, node: node)
    }

    /// A timestamp for a local event or a message being sent: after every earlier one.
    public mutating func now() -> HLCTimestamp {
        let physical = physicalMs()
        if physical > last.wallMs {
            last = HLCTimestamp(wallMs: physical, logical: 0, node: node)
        } else {
            last = HLCTimestamp(wallMs: last.wallMs, logical: last.logical &+ 1, node: node)
        }
        return last
    }

    /// Takes a received timestamp into account; the result is after it and after every earlier
    /// local timestamp.
    @discardableResult
    public mutating func update(received: HLCTimestamp) -> HLCTimestamp {
        let physical = physicalMs()
        let wall = max(physical, last.wallMs, received.wallMs)
        let logical: UInt32
        if wall == last.wallMs && wall == received.wallMs {
            logical = max(last.logical, received.logical) &+ 1
        } else if wall == last.wallMs {
            logical = last.logical &+ 1
        } else if wall == received.wallMs {
            logical = received.logical &+ 1
        } else {
            logical = 0
        }
        last = HLCTimestamp(wallMs: wall, logical: logical, node: node)
        return last
    }
}
