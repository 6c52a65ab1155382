import AspenCore
import AspenTransport
import Foundation

/// Peers as written on a command line: `ID=KEYHEX@HOST:PORT`, comma-separated.
public enum PeerList {
    public static func parse(_ text: String) throws(TransportError) -> [NodeID: PeerAddress] {
        var peers: [NodeID: PeerAddress] = [:]
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            guard let equals = item.firstIndex(of: "="), let at = item.firstIndex(of: "@"), equals < at,
                let id = UInt64(item[..<equals]), id > 0,
                let key = NodeKey(hex: String(item[item.index(after: equals)..<at]))
            else { throw .invalidAddress(item) }
            let (host, port) = try parseAddress(String(item[item.index(after: at)...]))
            peers[NodeID(id)] = PeerAddress(host: host, port: port, key: key)
        }
        return peers
    }

    public static func format(_ peers: [NodeID: PeerAddress]) -> String {
        peers.keys.sorted().map { id in
            let peer = peers[id]!
            return "\(id.rawValue)=\(peer.key.hex)@\(peer.host):\(peer.port)"
        }.joined(separator: ",")
    }

    /// `HOST:PORT`, with IPv6 hosts in brackets.
    public static func parseAddress(_ text: String) throws(TransportError) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw .invalidAddress(text)
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .invalidAddress(text) }
        return (host, port)
    }
}

