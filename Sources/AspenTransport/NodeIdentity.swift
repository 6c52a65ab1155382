import AspenCore
import Crypto
import Foundation
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A node's public Ed25519 key: its identity on the network, pinned by every peer.
public struct NodeKey: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// From 64 hex digits.
    public init?(hex: String) {
        guard hex.utf8.count == 64, let bytes = Hex.decode(hex) else { return nil }
        self.bytes = bytes
    }

    public var hex: String { Hex.encode(bytes) }
    public var description: String { String(hex.prefix(12)) }

    /// The DER SubjectPublicKeyInfo prefix of every Ed25519 key; the 32 key bytes follow it.
    static let spkiPrefix: [UInt8] = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00]

    /// The key inside an Ed25519 SubjectPublicKeyInfo, or nil if it is not one.
    public init?(spki: [UInt8]) {
        guard spki.count == Self.spkiPrefix.count + 32, Array(spki.prefix(Self.spkiPrefix.count)) == Self.spkiPrefix else {
            return nil
        }
        self.bytes = Array(spki.suffix(32))
    }
}

/// A node's Ed25519 key pair, kept in its data directory.
public struct NodeIdentity: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey
    public var key: NodeKey { NodeKey(bytes: Array(privateKey.publicKey.rawRepresentation))! }

    public init(privateKey: Curve25519.Signing.PrivateKey = .init()) {
        self.privateKey = privateKey
    }

    /// The key file's name inside a data directory.
    public static let fileName = "node.key"

    /// Loads the identity from `directory`, creating it (mode 0600) on first start. Refuses a key
    /// file that others can read, or one that does not hold an Ed25519 key.
    public static func loadOrCreate(directory: String) throws -> NodeIdentity {
        let path = (directory as NSString).appendingPathComponent(fileName)
        var status = stat()
        if stat(path, &status) == 0 {
            let mode = status.st_mode & 0o777
            guard mode & 0o077 == 0 else { throw TransportError.keyFileTooOpen(path: path, mode: UInt32(mode)) }
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw TransportError.invalidKeyFile(path: path, reason: "cannot read it")
            }
            guard let key = Self.decodePEM(text) else {
                throw TransportError.invalidKeyFile(path: path, reason: "it does not hold a PKCS#8 Ed25519 private key")
            }
            return NodeIdentity(privateKey: key)
        }
        try createDurableDirectory(directory, path: path)
        let identity = NodeIdentity()
        let pem = identity.pemRepresentation
        let descriptor = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        guard descriptor >= 0 else { throw TransportError.invalidKeyFile(path: path, reason: "cannot create it") }
        defer { close(descriptor) }
        let bytes = Array(pem.utf8)
        guard write(descriptor, bytes, bytes.count) == bytes.count, fsync(descriptor) == 0 else {
            throw TransportError.invalidKeyFile(path: path, reason: "cannot write it")
        }
        // The key's name is on the disk only once its directory is.
        guard synchronizeDirectory(directory) else { throw TransportError.invalidKeyFile(path: path, reason: "cannot fsync its directory") }
        return identity
    }

    /// Creates the data directory and its missing parents with mode 0700 (the node's data is
    /// its own), each made durable in its parent directory.
    static func createDurableDirectory(_ directory: String, path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) && isDirectory.boolValue { return }
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != directory { try createDurableDirectory(parent, path: path) }
        guard mkdir(directory, 0o700) == 0 || errno == EEXIST, synchronizeDirectory(parent.isEmpty ? "." : parent) else {
            throw TransportError.invalidKeyFile(path: path, reason: "cannot create its directory \(directory)")
        }
    }

    static func synchronizeDirectory(_ directory: String) -> Bool {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return fsync(descriptor) == 0
    }

    /// PKCS#8 DER of an Ed25519 private key: this fixed prefix, then the 32-byte seed.
    static let pkcs8Prefix: [UInt8] = [
        0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    /// The private key as a PKCS#8 PEM document (what TLS libraries load).
    public var pemRepresentation: String {
        let der = Self.pkcs8Prefix + Array(privateKey.rawRepresentation)
        return "-----BEGIN PRIVATE KEY-----\n\(Data(der).base64EncodedString())\n-----END PRIVATE KEY-----\n"
    }

    /// From a PKCS#8 PEM document of an Ed25519 key (what `pemRepresentation` writes and
    /// `openssl genpkey -algorithm ed25519` makes); nil if it is not one.
    public init?(pem text: String) {
        guard let key = Self.decodePEM(text) else { return nil }
        self.init(privateKey: key)
    }

    static func decodePEM(_ text: String) -> Curve25519.Signing.PrivateKey? {
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let der = Data(base64Encoded: body).map(Array.init), der.count == pkcs8Prefix.count + 32,
            Array(der.prefix(pkcs8Prefix.count)) == pkcs8Prefix
        else { return nil }
        return try? Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32))
    }
}
