import Foundation
import SwiftASN1
import X509

/// Vault's `leaf_not_after_behavior`: what happens when a certificate would outlive its issuer.
public enum PKILeafNotAfterBehavior: String, Sendable, CaseIterable {
    /// Refuse the request (Vault's default).
    case err
    /// Cut the certificate's `notAfter` to the issuer's.
    case truncate
    /// Issue it as asked (clients will not trust it past the issuer's expiry).
    case permit
}

/// A mount's certificate authority: its private key and certificate, and the chain above it.
/// An intermediate begins pending (a key and a CSR, no certificate) until `setSigned` gives it
/// the certificate its parent signed. Operations return new values; the caller stores them.
public struct PKIIssuer: Sendable, Equatable {
    let key: PKIPrivateKey
    /// The CA's certificate; nil while an intermediate waits for `setSigned`.
    public private(set) var certificate: Certificate?
    /// The certificates above this one, nearest first (empty for a root).
    public private(set) var chain: [Certificate]
    public var leafNotAfterBehavior: PKILeafNotAfterBehavior
    /// The number of the last CRL this issuer signed (0: none yet); `crl` counts on from it.
    public internal(set) var crlNumber: UInt64

    init(key: PKIPrivateKey, certificate: Certificate?, chain: [Certificate], leafNotAfterBehavior: PKILeafNotAfterBehavior, crlNumber: UInt64) {
        self.key = key
        self.certificate = certificate
        self.chain = chain
        self.leafNotAfterBehavior = leafNotAfterBehavior
        self.crlNumber = crlNumber
    }

    public var keyType: PKIKeyType { key.keyType }
    public var keyBits: Int { key.bits }
    /// True for an intermediate still waiting for its signed certificate.
    public var isPending: Bool { certificate == nil }

    /// The CA's serial number, or nil while pending.
    public var serialNumber: PKISerialNumber? { certificate.flatMap { try? PKISerialNumber($0.serialNumber) } }

    /// Vault's `pki/ca/pem`.
    public func certificatePEM() throws(SecretsError) -> String { try PKISupport.pem(try active()) }

    /// Vault's `ca_chain`: this CA's certificate, then the ones above it.
    public func caChainPEM() throws(SecretsError) -> [String] {
        var chainPEM = [try certificatePEM()]
        for parent in chain { chainPEM.append(try PKISupport.pem(parent)) }
        return chainPEM
    }

    /// The certificate, or Vault's refusal when the mount has none to sign with yet.
    func active() throws(SecretsError) -> Certificate {
        guard let certificate else {
            throw .badRequest("this mount's issuer has no certificate yet: set the signed intermediate certificate first (intermediate/set-signed)")
        }
        return certificate
    }

    /// Vault requires a common name for every CA.
    static let commonNameRequired =
        "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false"

    /// How far back a CA's `notBefore` goes (Vault's `not_before_duration` default).
    static let caNotBeforeSeconds: Int64 = 30

    // MARK: Root

    /// `pki/root/generate/internal`: a new key and a self-signed CA certificate (basic
    /// constraints CA, critical; key usage certSign and cRLSign, critical; SKI, and AKI naming
    /// itself). `maxPathLength` nil leaves the path length open, as Vault's -1 does.
    public static func generateRoot(
        commonName: String, keyType: PKIKeyType = .rsa, keyBits: Int = 0, ttl: Duration, maxPathLength: Int? = nil, now: Date
    ) throws(SecretsError) -> PKIIssuer {
        guard !commonName.isEmpty else { throw .badRequest(commonNameRequired) }
        if let maxPathLength, maxPathLength < 0 { throw .badRequest("max_path_length must not be negative (leave it out for no limit)") }
        let subject = try PKISupport.subject(commonName: commonName)
        let key = try PKIPrivateKey.generate(keyType, bits: try keyType.resolvedBits(keyBits))
        let start = PKITime.seconds(now)
        let notAfter = try PKITime.adding(try PKITime.seconds(ttl, "ttl"), to: start)
        let ownIdentifier = Array(SubjectKeyIdentifier(hash: key.publicKey).keyIdentifier)
        let certificate = try mint(
            serial: .random(), publicKey: key.publicKey, notBefore: PKITime.date(start - caNotBeforeSeconds), notAfter: notAfter,
            issuer: subject, subject: subject,
            extensions: try caExtensions(publicKey: key.publicKey, authorityKeyIdentifier: ownIdentifier, maxPathLength: maxPathLength),
            signer: key)
        return PKIIssuer(key: key, certificate: certificate, chain: [], leafNotAfterBehavior: .err, crlNumber: 0)
    }

    // MARK: Intermediate

    /// `pki/intermediate/generate/internal`: a new key, kept in a pending issuer, and a CSR for
    /// the parent CA to sign.
    public static func generateIntermediateCSR(
        commonName: String, keyType: PKIKeyType = .rsa, keyBits: Int = 0
    ) throws(SecretsError) -> (issuer: PKIIssuer, csrPEM: String) {
        guard !commonName.isEmpty else { throw .badRequest(commonNameRequired) }
        let subject = try PKISupport.subject(commonName: commonName)
        let key = try PKIPrivateKey.generate(keyType, bits: try keyType.resolvedBits(keyBits))
        let csrPEM = try PKISupport.attempt("could not create the CSR") {
            try CertificateSigningRequest(
                version: .v1, subject: subject, privateKey: key.certificateKey, attributes: CertificateSigningRequest.Attributes(),
                signatureAlgorithm: key.signatureAlgorithm
            ).serializeAsPEM().pemString
        }
        return (PKIIssuer(key: key, certificate: nil, chain: [], leafNotAfterBehavior: .err, crlNumber: 0), csrPEM)
    }

    /// `pki/root/sign-intermediate`: signs an intermediate CA's CSR with this CA. The subject is
    /// `commonName` (or the CSR's when empty); the path length is `maxPathLength`, or one less
    /// than this CA's (open when this CA's is). A CA whose path length is 0 cannot sign one.
    public func signIntermediate(
        csrPEM: String, commonName: String = "", ttl: Duration, maxPathLength: Int? = nil, now: Date
    ) throws(SecretsError) -> PKIIssuedCertificate {
        let signer = try active()
        let csr = try Self.parseCSR(csrPEM)
        guard let kind = PKIPublicKeyKind.of(csr.publicKey) else { throw .badRequest("Unknown key type in CSR") }
        if kind.type == .rsa && kind.bits < 2048 { throw .badRequest("RSA keys < 2048 bits are unsafe and not supported") }
        let name = commonName.isEmpty ? PKISupport.commonName(csr.subject) : commonName
        guard !name.isEmpty else { throw .badRequest(Self.commonNameRequired) }
        if let maxPathLength, maxPathLength < 0 { throw .badRequest("max_path_length must not be negative (leave it out for no limit)") }
        let pathLength = try childPathLength(signer, requested: maxPathLength)
        var warnings: [String] = []
        let validity = try validity(
            ttlSeconds: try PKITime.seconds(ttl, "ttl"), notBeforeSeconds: Self.caNotBeforeSeconds, now: now, warnings: &warnings)
        let certificate = try Self.mint(
            serial: .random(), publicKey: csr.publicKey, notBefore: validity.notBefore, notAfter: validity.notAfter,
            issuer: signer.subject, subject: try PKISupport.subject(commonName: name),
            extensions: try Self.caExtensions(
                publicKey: csr.publicKey, authorityKeyIdentifier: PKISupport.keyIdentifier(of: signer), maxPathLength: pathLength),
            signer: key)
        return try issued(certificate, privateKey: nil, format: .pem, warnings: warnings)
    }

    /// Vault's rule for an intermediate's path length: the one asked for, else one less than the
    /// signer's (open when the signer's is open); a signer at 0 issues no CA at all.
    func childPathLength(_ signer: Certificate, requested: Int?) throws(SecretsError) -> Int? {
        let constraints = try? signer.extensions.basicConstraints
        guard case .isCertificateAuthority(let signerLength)? = constraints else { return requested }
        if signerLength == 0 { throw .badRequest("signing certificate has a max path length of zero, and cannot issue further CA certificates") }
        return requested ?? signerLength.map { $0 - 1 }
    }

    /// `pki/intermediate/set-signed`: gives a pending (or renewed) intermediate its certificate.
    /// `certificatePEM` holds the certificate, optionally followed by the chain above it (nearest
    /// first). The certificate must be a CA's and carry this issuer's public key; each chain
    /// certificate must have signed the one before it.
    public mutating func setSigned(certificatePEM: String) throws(SecretsError) {
        let documents = try PKISupport.pemDocuments(certificatePEM, "the signed certificate")
        guard documents.count <= PKIBounds.chainCertificatesMax + 1 else {
            throw .tooLarge("the certificate's chain is longer than \(PKIBounds.chainCertificatesMax) (PKIBounds.chainCertificatesMax)")
        }
        var certificates: [Certificate] = []
        for document in documents {
            guard document.discriminator == "CERTIFICATE" else { throw .badRequest("expected certificates, found a PEM \(document.discriminator)") }
            certificates.append(try PKISupport.certificate(der: document.derBytes, "a certificate"))
        }
        let certificate = certificates[0]
        guard certificate.publicKey == key.publicKey else { throw .badRequest("public key of certificate does not match private key") }
        guard case .isCertificateAuthority? = try? certificate.extensions.basicConstraints else {
            throw .badRequest("the given certificate is not marked for CA use and cannot be used with this backend")
        }
        for index in certificates.indices.dropFirst() {
            let child = certificates[index - 1]
            guard certificates[index].publicKey.isValidSignature(child.signature, for: child) else {
                throw .badRequest("certificate \(index + 1) of the bundle did not sign the certificate before it")
            }
        }
        self.certificate = certificate
        self.chain = Array(certificates.dropFirst())
    }

    // MARK: Shared

    /// Parses and checks a CSR: PEM, bounded, and signed by the key it carries.
    static func parseCSR(_ pem: String) throws(SecretsError) -> CertificateSigningRequest {
        let documents = try PKISupport.pemDocuments(pem, "the CSR")
        guard documents.count == 1, documents[0].discriminator.hasSuffix("CERTIFICATE REQUEST") else {
            throw .badRequest("the CSR must be one PEM CERTIFICATE REQUEST")
        }
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(derEncoded: documents[0].derBytes)
        } catch {
            throw .badRequest("certificate request could not be parsed: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw .badRequest("request signature invalid") }
        return csr
    }

    /// The extensions of a CA certificate, as Vault writes them.
    static func caExtensions(
        publicKey: Certificate.PublicKey, authorityKeyIdentifier: [UInt8], maxPathLength: Int?
    ) throws(SecretsError) -> Certificate.Extensions {
        try PKISupport.attempt("could not build a CA certificate's extensions") {
            try Certificate.Extensions([
                Certificate.Extension(BasicConstraints.isCertificateAuthority(maxPathLength: maxPathLength), critical: true),
                Certificate.Extension(KeyUsage(keyCertSign: true, cRLSign: true), critical: true),
                Certificate.Extension(SubjectKeyIdentifier(hash: publicKey), critical: false),
                Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: authorityKeyIdentifier[...]), critical: false),
            ])
        }
    }

    /// Signs a certificate with `signer`, with the algorithm its key type calls for.
    static func mint(
        serial: PKISerialNumber, publicKey: Certificate.PublicKey, notBefore: Date, notAfter: Date, issuer: DistinguishedName,
        subject: DistinguishedName, extensions: Certificate.Extensions, signer: PKIPrivateKey
    ) throws(SecretsError) -> Certificate {
        try PKISupport.attempt("could not sign the certificate") {
            try Certificate(
                version: .v3, serialNumber: serial.certificateSerial, publicKey: publicKey, notValidBefore: notBefore,
                notValidAfter: notAfter, issuer: issuer, subject: subject, signatureAlgorithm: signer.signatureAlgorithm,
                extensions: extensions, issuerPrivateKey: signer.certificateKey)
        }
    }
}
