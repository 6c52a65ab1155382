import AspenCore
import Crypto
import Foundation
import NIOCore
import NIOSSL
import X509

/// The TLS side of a node identity: a self-signed certificate for its Ed25519 key, and the TLS 1.3
/// configurations that present it and pin the peer's key instead of trusting any authority.
public struct TLSMaterial: Sendable {
    public let identity: NodeIdentity
    let certificate: NIOSSLCertificate
    let privateKey: NIOSSLPrivateKey

    public init(identity: NodeIdentity) throws {
        self.identity = identity
        let key = Certificate.PrivateKey(identity.privateKey)
        let name = try DistinguishedName { CommonName("aspen-node-\(identity.key.hex.prefix(16))") }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(20 * 365 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ed25519, extensions: Certificate.Extensions(),
            issuerPrivateKey: key)
        self.certificate = try NIOSSLCertificate(bytes: try certificate.serializeAsPEM().derBytes, format: .der)
        self.privateKey = try NIOSSLPrivateKey(bytes: Array(identity.pemRepresentation.utf8), format: .pem)
    }

    private func base(_ configuration: TLSConfiguration) -> TLSConfiguration {
        var configuration = configuration
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        // Peers are pinned by key in the verification callback; no authority is trusted and no
        // hostname is checked. Ed25519 must be allowed explicitly or the handshake fails.
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([])
        configuration.verifySignatureAlgorithms = [.ed25519]
        configuration.signingSignatureAlgorithms = [.ed25519]
        return configuration
    }

    func serverConfiguration(protocols: [String]) -> TLSConfiguration {
        var configuration = base(
            .makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(privateKey)))
        configuration.applicationProtocols = protocols
        return configuration
    }

    func clientConfiguration(protocol name: String) -> TLSConfiguration {
        var configuration = base(.makeClientConfiguration())
        configuration.certificateChain = [.certificate(certificate)]
        configuration.privateKey = .privateKey(privateKey)
        configuration.applicationProtocols = [name]
        return configuration
    }

    /// The Ed25519 key a peer's leaf certificate carries.
    static func peerKey(_ certificates: [NIOSSLCertificate]) -> NodeKey? {
        guard let leaf = certificates.first, let spki = try? leaf.extractPublicKey().toSPKIBytes() else { return nil }
        return NodeKey(spki: spki)
    }
}

/// The application protocols Aspen speaks on its one port.
public enum AspenProtocol {
    public static let raft = "aspen/raft/1"
    public static let client = "aspen/client/1"
    public static let logs = "aspen/logs/1"
    public static let blobs = "aspen/blobs/1"
    /// git's smart protocol (upload-pack, receive-pack) tunnelled to the node's forge.
    public static let git = "aspen/git/1"
    /// The forge's receive hook calling its own node (only the node's own key may).
    public static let gitHook = "aspen/git-hook/1"
}
