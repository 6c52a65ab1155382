import AspenCore

/// Everything a client or a joining node needs to reach a cluster, as one string:
/// `aspen1` followed by lowercase base32 (RFC 4648, no padding) of a version byte, the cluster id,
/// the bootstrap peers (id, key, host, port) and a CRC-32C of all that. A truncated or altered
/// ticket fails its checksum with a clear error instead of pointing somewhere wrong.
public struct ClusterTicket: Sendable, Equatable {
    public struct Peer: Sendable, Equatable {
        public var id: NodeID
        public var key: NodeKey
        public var host: String
        public var port: Int

        public init(id: NodeID, key: NodeKey, host: String, port: Int) {
            self.id = id
            self.key = key
            self.host = host
            self.port = port
        }
    }

    public var clusterID: [UInt8]
    public var peers: [Peer]

    public init(clusterID: [UInt8], peers: [Peer]) {
        self.clusterID = clusterID
        self.peers = peers
    }

    public enum ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        case notATicket
        case invalidCharacter(Character)
        case checksumMismatch
        case malformed(String)
        case tooLong(bytes: Int, limit: Int)

        public var description: String {
            switch self {
            case .notATicket: return "not an Aspen cluster ticket (it must start with 'aspen1')"
            case .invalidCharacter(let character): return "invalid character '\(character)' in the ticket"
            case .checksumMismatch: return "the ticket is truncated or altered (checksum mismatch)"
            case .malformed(let reason): return "malformed ticket: \(reason)"
            case .tooLong(let bytes, let limit): return "a ticket of \(bytes) bytes is longer than any ticket (\(limit) bytes at most)"
            }
        }
    }

    static let prefix = "aspen1"
    static let version: UInt8 = 1
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    public var encoded: String {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.writeBytes(clusterID)
        writer.writeVarint(UInt64(peers.count))
        for peer in peers {
            writer.writeVarint(peer.id.rawValue)
            writer.writeRaw(peer.key.bytes)
            writer.writeString(peer.host)
            writer.writeVarint(UInt64(peer.port))
        }
        writer.writeFixed(CRC32C.checksum(writer.bytes))
        return Self.prefix + Self.base32(writer.bytes)
    }

    /// The longest ticket text: `Limits.raftMembersMax` members with the longest host names.
    public static let textBytesMax = 32 * 1024

    public init(parsing text: String) throws(ParseError) {
        guard text.utf8.count <= Self.textBytesMax else { throw .tooLong(bytes: text.utf8.count, limit: Self.textBytesMax) }
        let trimmed = text.trimmingWhitespace
        guard trimmed.hasPrefix(Self.prefix) else { throw .notATicket }
        let bytes = try Self.unbase32(String(trimmed.dropFirst(Self.prefix.count)))
        guard bytes.count > 5 else { throw .checksumMismatch }
        var tail = ByteReader(Array(bytes.suffix(4)))
        guard (try? tail.readFixed32()) == CRC32C.checksum(Array(bytes.dropLast(4))) else { throw .checksumMismatch }
        var reader = ByteReader(Array(bytes.dropLast(4)))
        do {
            guard try reader.readByte() == Self.version else { throw ParseError.malformed("unknown ticket version") }
            clusterID = try reader.readBytes(limit: 64)
            let count = try reader.readCount(limit: Limits.standard.raftMembersMax)
            var peers: [Peer] = []
            for _ in 0..<count {
                let id = NodeID(try reader.readVarint())
                var keyBytes: [UInt8] = []
                for _ in 0..<32 { keyBytes.append(try reader.readByte()) }
                let host = try reader.readString(limit: 255)
                let port = try reader.readCount(limit: 65535)
                peers.append(Peer(id: id, key: NodeKey(bytes: keyBytes)!, host: host, port: port))
            }
            try reader.expectEnd()
            self.peers = peers
        } catch let error as ParseError {
            throw error
        } catch {
            throw .malformed("\(error)")
        }
    }

    static func base32(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }

    static func unbase32(_ text: String) throws(ParseError) -> [UInt8] {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for character in text {
            // Upper-case letters read as lower-case; nothing else is folded (0x12 is not '2').
            guard let ascii = character.asciiValue,
                let value = alphabet.firstIndex(of: (0x41...0x5A).contains(ascii) ? ascii | 0x20 : ascii)
            else {
                throw .invalidCharacter(character)
            }
            buffer = (buffer << 5) | UInt32(value)
            bits += 5
            if bits >= 8 {
                output.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return output
    }
}

extension String {
    var trimmingWhitespace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
