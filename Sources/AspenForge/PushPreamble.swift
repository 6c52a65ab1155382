import AspenCore

/// The start of what git sends receive-pack: its commands (`OLD NEW REF`, the first with the
/// capabilities after a NUL), then, when it asked for `push-options`, the options; both end with a
/// flush packet. The remote helper reads it as it passes by, to sign the patch changes a push to
/// `refs/for/…` makes, before the pack that follows.
public struct PushPreamble: Sendable, Equatable {
    public var commands: [RefUpdate] = []
    public var capabilities: [String] = []
    public var options: [String] = []

    /// The most bytes looked at: a preamble longer than this is not parsed (nothing is signed).
    public static let bytesMax = 1 << 20

    public init() {}

    /// The preamble, once `bytes` hold all of it; nil while more is needed. Throws on what is
    /// not a preamble.
    public static func parse(_ bytes: [UInt8]) throws(DecodingError) -> PushPreamble? {
        var preamble = PushPreamble()
        var offset = 0
        var inOptions = false
        while true {
            guard offset + 4 <= bytes.count else { return nil }
            guard let length = Int(String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self), radix: 16) else {
                throw .invalid("not a pkt-line length")
            }
            if length == 0 {
                offset += 4
                if !inOptions, preamble.capabilities.contains("push-options"), !preamble.commands.isEmpty {
                    inOptions = true
                    continue
                }
                return preamble
            }
            guard length >= 4 else { throw .invalid("a pkt-line length of \(length)") }
            guard offset + length <= bytes.count else { return nil }
            var line = Array(bytes[(offset + 4)..<(offset + length)])
            offset += length
            if line.last == UInt8(ascii: "\n") { line.removeLast() }
            if inOptions {
                preamble.options.append(String(decoding: line, as: UTF8.self))
                continue
            }
            if let nul = line.firstIndex(of: 0) {
                preamble.capabilities = String(decoding: line[(nul + 1)...], as: UTF8.self).split(separator: " ").map(String.init)
                line = Array(line[..<nul])
            }
            let text = String(decoding: line, as: UTF8.self)
            if text.hasPrefix("shallow ") { continue }
            let parts = text.split(separator: " ", maxSplits: 2)
            guard parts.count == 3, ForgeNames.isObjectID(String(parts[0])), ForgeNames.isObjectID(String(parts[1])), parts[2].hasPrefix("refs/") else {
                throw .invalid("not a push command: \(text.prefix(80))")
            }
            preamble.commands.append(RefUpdate(old: String(parts[0]), new: String(parts[1]), name: String(parts[2])))
        }
    }

    /// The option `name=value`'s value, if given.
    public func option(_ name: String) -> String? {
        options.last { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
    }
}
