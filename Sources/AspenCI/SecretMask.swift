/// Replaces every secret value in a job's output with `***` as it streams: a value cut between
/// two pieces of output is still found (the end of each piece that could start a value waits
/// for the next).
public struct SecretMask: Sendable {
    let values: [[UInt8]]
    private var carry: [UInt8] = []
    public static let replacement = Array("***".utf8)

    /// Values shorter than 4 bytes are not masked (they would mask ordinary output, and hide nothing).
    public init(_ secrets: [String]) {
        values = Set(secrets.map { Array($0.utf8) }.filter { $0.count >= 4 }).sorted { $0.count > $1.count }
    }

    public var isEmpty: Bool { values.isEmpty }

    /// The masked output of `bytes` that can be let out now; `final`: nothing follows.
    public mutating func mask(_ bytes: [UInt8], final: Bool = false) -> [UInt8] {
        guard !values.isEmpty else { return bytes }
        let input = carry + bytes
        carry = []
        var output: [UInt8] = []
        output.reserveCapacity(input.count)
        var index = 0
        scan: while index < input.count {
            for value in values where input[index] == value[0] {
                let end = index + value.count
                if end <= input.count {
                    if input[index..<end].elementsEqual(value) {
                        output += Self.replacement
                        index = end
                        continue scan
                    }
                } else if !final, input[index...].elementsEqual(value.prefix(input.count - index)) {
                    // Could be the start of a value whose rest is yet to come.
                    carry = Array(input[index...])
                    break scan
                }
            }
            output.append(input[index])
            index += 1
        }
        return output
    }
}
