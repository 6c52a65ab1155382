import AspenCore
import AspenKV

extension Capability: CustomStringConvertible, LosslessStringConvertible {
    /// `read:PREFIX`, `write:…`, `delete:…`, `watch:…`, `full:…`, `coordination:…`,
    /// `cluster-admin`, `delegate`, and `SERVICE-ACCESS:PREFIX` (`blob-read:tags/`,
    /// `secrets-full:team-a/`). A prefix is text; bytes outside printable ASCII, and `%`, are
    /// written `%XX`. An empty prefix (`read:`) is every key.
    public var description: String {
        switch self {
        case .read(let prefix): "read:\(Self.escape(prefix))"
        case .write(let prefix): "write:\(Self.escape(prefix))"
        case .delete(let prefix): "delete:\(Self.escape(prefix))"
        case .watch(let prefix): "watch:\(Self.escape(prefix))"
        case .full(let prefix): "full:\(Self.escape(prefix))"
        case .coordination(let prefix): "coordination:\(Self.escape(prefix))"
        case .clusterAdmin: "cluster-admin"
        case .delegate: "delegate"
        case .service(let service, let access, let prefix): "\(service.name)-\(access.name):\(Self.escape(prefix))"
        }
    }

    public init?(_ text: String) {
        guard let parsed = try? Self.parse(text) else { return nil }
        self = parsed
    }

    /// Parses the text form, saying what is wrong with it.
    public static func parse(_ text: String) throws(CapabilityParseError) -> Capability {
        switch text {
        case "cluster-admin": return .clusterAdmin
        case "delegate": return .delegate
        default: break
        }
        guard let colon = text.firstIndex(of: ":") else { throw .unknown(text) }
        let kind = String(text[..<colon])
        let prefix = try unescape(String(text[text.index(after: colon)...]))
        switch kind {
        case "read": return .read(prefix: prefix)
        case "write": return .write(prefix: prefix)
        case "delete": return .delete(prefix: prefix)
        case "watch": return .watch(prefix: prefix)
        case "full": return .full(prefix: prefix)
        case "coordination": return .coordination(prefix: prefix)
        default:
            for service in Service.allCases {
                for access in Access.allCases where kind == "\(service.name)-\(access.name)" {
                    return .service(service, access, prefix: prefix)
                }
            }
            throw .unknown(text)
        }
    }

    static func escape(_ bytes: Bytes) -> String {
        var text = ""
        for byte in bytes {
            if byte > 0x20, byte < 0x7F, byte != UInt8(ascii: "%") {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                text += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return text
    }

    static func unescape(_ text: String) throws(CapabilityParseError) -> Bytes {
        var bytes: Bytes = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) else {
                throw .badEscape(text)
            }
            bytes.append(value)
            utf8 = utf8.dropFirst(2)
        }
        return bytes
    }
}

public enum CapabilityParseError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(String)
    case badEscape(String)

    public var description: String {
        switch self {
        case .unknown(let text):
            "unknown capability '\(text)': expected read:PREFIX, write:PREFIX, delete:PREFIX, watch:PREFIX, full:PREFIX, "
                + "coordination:PREFIX, cluster-admin, delegate, or SERVICE-ACCESS:PREFIX (services: "
                + Capability.Service.allCases.map(\.name).joined(separator: ", ") + "; access: read, write, full)"
        case .badEscape(let text): "capability prefix '\(text)' has a '%' not followed by two hexadecimal digits"
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
