import AspenCore
import AspenKV
import Crypto

/// The seal's system records (outside the keyspace: no client request can read or change them):
///
/// - `secrets/seal`: the current split — its epoch, threshold, which voter holds which share,
///   and a verifier of the cluster secret (an HMAC of a constant under it), never the secret;
/// - `secrets/share/EPOCH/NODE`: that node's share, sealed under a key only that node can
///   derive (from its identity key), the record's name bound in as associated data.
///
/// One stolen disk holds its node's identity and so its one share: fewer than the threshold
/// whenever the cluster has two voters or more.
public struct SealRecord: Sendable, Equatable {
    public var epoch: UInt64
    public var threshold: Int
    /// Each voter of the split and its share's evaluation point.
    public var members: [NodeID: UInt8]
    public var verifier: Bytes

    public static let name = Array("secrets/seal".utf8)
    public static let sharePrefix = Array("secrets/share/".utf8)
    static let codecVersion: UInt8 = 1

    public static func shareName(epoch: UInt64, node: NodeID) -> Bytes {
        sharePrefix + withUnsafeBytes(of: epoch.bigEndian) { Array($0) } + withUnsafeBytes(of: node.rawValue.bigEndian) { Array($0) }
    }

    public static func shares(epoch: UInt64) -> Bytes { sharePrefix + withUnsafeBytes(of: epoch.bigEndian) { Array($0) } }

    /// ⌊N/2⌋+1: a quorum of the voters.
    public static func threshold(voters: Int) -> Int { voters / 2 + 1 }

    public static func verifier(of secret: Bytes) -> Bytes {
        Array(HMAC<SHA256>.authenticationCode(for: Array("aspen-secrets-seal-verifier-v1".utf8), using: SymmetricKey(data: secret)))
    }

    /// The key that seals this node's share, derived from its identity key.
    public static func shareKey(identityKey: Bytes) -> DataKey {
        DataKey(
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: identityKey), info: Array("aspen-secrets-share-key-v1".utf8), outputByteCount: 32))
    }

    public func encoded() -> Bytes {
        var writer = ByteWriter()
        writer.write(Self.codecVersion)
        writer.writeVarint(epoch)
        writer.writeVarint(UInt64(threshold))
        writer.writeVarint(UInt64(members.count))
        for (node, x) in members.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            writer.writeVarint(node.rawValue)
            writer.write(x)
        }
        writer.writeBytes(verifier)
        return writer.bytes
    }

    public init(epoch: UInt64, threshold: Int, members: [NodeID: UInt8], verifier: Bytes) {
        self.epoch = epoch
        self.threshold = threshold
        self.members = members
        self.verifier = verifier
    }

    public init(decoding bytes: Bytes) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw SecretsError.internalError("a seal record of an unknown version") }
            epoch = try reader.readVarint()
            threshold = Int(try reader.readVarint())
            let count = try reader.readCount(limit: 255)
            members = [:]
            for _ in 0..<count { members[NodeID(try reader.readVarint())] = try reader.readByte() }
            verifier = try reader.readBytes(limit: 32)
            try reader.expectEnd()
            guard threshold >= 1, threshold <= members.count else { throw SecretsError.internalError("a seal record with threshold \(threshold) of \(members.count)") }
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .internalError("an undecodable seal record: \(error)")
        }
    }
}
