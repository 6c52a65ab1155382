import Foundation
import SwiftASN1
import X509

/// What `issue`, `sign` and `signIntermediate` answer, in the shape of Vault's response.
public struct PKIIssuedCertificate: Sendable, Equatable {
    /// `certificate`.
    public var certificatePEM: String
    /// `issuing_ca`.
    public var issuingCAPEM: String
    /// `ca_chain`: the issuing CA, then the certificates above it.
    public var caChainPEM: [String]
    /// `private_key` and `private_key_type`: only when the engine generated the key (`issue`).
    public var privateKeyPEM: String?
    public var privateKeyType: PKIKeyType?
    /// `serial_number`, formatted as Vault formats it (`serialNumber.colonHex`).
    public var serialNumber: PKISerialNumber
    /// `expiration`: the certificate's `notAfter`.
    public var expiration: Date
    /// What to store under `("cert", serial)`, for listing and revocation.
    public var record: PKICertificateRecord
    /// Vault's warnings (a TTL cut to `max_ttl`, for one).
    public var warnings: [String]
}

/// The names a leaf certificate will carry, checked against its role.
struct PKILeafNames: Equatable {
    var commonName = ""
    var dnsNames: [String] = []
    var emails: [String] = []
    var ipAddresses: [[UInt8]] = []
}

extension PKIIssuer {
    /// `pki/issue/:role`: a new key of the role's type and size (RSA stays RSA), and a
    /// certificate for `commonName`, `altNames` (DNS names and emails) and `ipSANs`, each name
    /// checked against the role. The lifetime is `ttl`, else the role's, else the mount's; cut
    /// to the role's `max_ttl` with a warning; past the issuer's expiry per
    /// `leafNotAfterBehavior` (Vault's default: refused).
    public func issue(
        role: PKIRole, commonName: String, altNames: [String] = [], ipSANs: [String] = [], ttl: Duration? = nil,
        privateKeyFormat: PKIPrivateKeyFormat = .pem, now: Date
    ) throws(SecretsError) -> PKIIssuedCertificate {
        try role.validate()
        guard role.keyType != .any else { throw .badRequest("role key type \"any\" not allowed for issuing certificates, only signing") }
        let signer = try active()
        let names = try leafNames(role: role, commonName: commonName, altNames: altNames, ipSANs: ipSANs, csr: nil)
        var warnings: [String] = []
        let validity = try leafValidity(role: role, ttl: ttl, now: now, warnings: &warnings)
        let key = try PKIPrivateKey.generate(role.keyType, bits: try role.keyType.resolvedBits(role.keyBits))
        let certificate = try mintLeaf(signer: signer, names: names, publicKey: key.publicKey, role: role, validity: validity)
        return try issued(certificate, privateKey: key, format: privateKeyFormat, warnings: warnings)
    }

    /// `pki/sign/:role`: a certificate for a CSR's key. The key must be of the role's type and at
    /// least its size (`key_type = any` takes any type, RSA from 2048 bits). The common name and
    /// SANs come from the CSR (`use_csr_common_name`, `use_csr_sans`, both on by default), else
    /// from the arguments, and are checked against the role exactly as `issue` checks them.
    public func sign(
        role: PKIRole, csrPEM: String, commonName: String = "", altNames: [String] = [], ipSANs: [String] = [],
        ttl: Duration? = nil, now: Date
    ) throws(SecretsError) -> PKIIssuedCertificate {
        try role.validate()
        let signer = try active()
        let csr = try Self.parseCSR(csrPEM)
        try Self.checkCSRKey(csr.publicKey, role: role)
        let names = try leafNames(role: role, commonName: commonName, altNames: altNames, ipSANs: ipSANs, csr: csr)
        var warnings: [String] = []
        let validity = try leafValidity(role: role, ttl: ttl, now: now, warnings: &warnings)
        let certificate = try mintLeaf(signer: signer, names: names, publicKey: csr.publicKey, role: role, validity: validity)
        return try issued(certificate, privateKey: nil, format: .pem, warnings: warnings)
    }

    /// Vault's key checks for `sign`, in its words.
    static func checkCSRKey(_ publicKey: Certificate.PublicKey, role: PKIRole) throws(SecretsError) {
        guard let kind = PKIPublicKeyKind.of(publicKey) else { throw .badRequest("Unknown key type in CSR") }
        if role.keyType != .any && kind.type != role.keyType { throw .badRequest("role requires keys of type \(role.keyType.rawValue)") }
        let minimumBits = role.keyType == .any ? 0 : try role.keyType.resolvedBits(role.keyBits)
        switch kind.type {
        case .rsa:
            if role.keyType == .any && kind.bits < 2048 { throw .badRequest("RSA keys < 2048 bits are unsafe and not supported") }
            if kind.bits < minimumBits {
                throw .badRequest("role requires a minimum of a \(minimumBits)-bit key, but CSR's key is \(kind.bits) bits")
            }
            if kind.bits < 2048 { throw .badRequest("Vault requires a minimum of a 2048-bit key, but CSR's key is \(kind.bits) bits") }
        case .ec:
            if kind.bits < minimumBits {
                throw .badRequest("role requires a minimum of a \(minimumBits)-bit key, but CSR's key is \(kind.bits) bits")
            }
        case .ed25519, .any:
            break
        }
    }

    // MARK: Names

    /// Vault's `GenerateCreationBundle` for names: the common name (from the CSR first when the
    /// role says so), joined to the DNS or email SANs; alt names; IP SANs; each checked.
    func leafNames(role: PKIRole, commonName: String, altNames: [String], ipSANs: [String], csr: CertificateSigningRequest?) throws(SecretsError)
        -> PKILeafNames
    {
        guard altNames.count <= PKIBounds.namesPerCertificateMax, ipSANs.count <= PKIBounds.namesPerCertificateMax else {
            throw .tooLarge("a certificate may carry at most \(PKIBounds.namesPerCertificateMax) names (PKIBounds.namesPerCertificateMax)")
        }
        var names = PKILeafNames()
        if let csr, role.useCSRCommonName { names.commonName = PKISupport.commonName(csr.subject) }
        if names.commonName.isEmpty { names.commonName = commonName }
        if names.commonName.isEmpty && role.requireCN { throw .badRequest(Self.commonNameRequired) }
        let requested = try csr.flatMap { csr throws(SecretsError) in role.useCSRSANs ? try Self.requestedNames(csr) : nil }
        if let requested {
            names.dnsNames = requested.dnsNames
            names.emails = requested.emails
        }
        let commonName = names.commonName
        if commonName.contains("@") {
            names.emails.append(commonName)
        } else if !commonName.isEmpty && PKIHostname.isWildHostname(commonName) {
            names.dnsNames.append(commonName)
        }
        if requested == nil {
            for name in Set(altNames.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }).sorted() {
                if name.contains("@") {
                    names.emails.append(name)
                } else if PKIHostname.isWildHostname(name) {
                    names.dnsNames.append(name)
                } else {
                    throw .badRequest("subject alternate name \(name) is not a valid DNS name and cannot be included as a SAN")
                }
            }
        }
        try Self.checkNames(&names, role: role)
        names.ipAddresses = try Self.ipAddresses(requested: requested, ipSANs: ipSANs, role: role)
        guard names.dnsNames.count + names.emails.count + names.ipAddresses.count <= PKIBounds.namesPerCertificateMax else {
            throw .tooLarge("a certificate may carry at most \(PKIBounds.namesPerCertificateMax) names (PKIBounds.namesPerCertificateMax)")
        }
        return names
    }

    static func checkNames(_ names: inout PKILeafNames, role: PKIRole) throws(SecretsError) {
        for name in names.dnsNames + names.emails + [names.commonName] where name.utf8.count > PKIBounds.nameBytesMax {
            throw .badRequest("a name is longer than \(PKIBounds.nameBytesMax) bytes (PKIBounds.nameBytesMax)")
        }
        if !names.commonName.isEmpty && !role.allows(names.commonName) {
            throw .badRequest("common name \(names.commonName) not allowed by this role")
        }
        if let bad = role.firstDisallowedName(names.dnsNames) { throw .badRequest("subject alternate name \(bad) not allowed by this role") }
        if let bad = role.firstDisallowedName(names.emails) { throw .badRequest("email address \(bad) not allowed by this role") }
        names.dnsNames = Array(Set(names.dnsNames)).sorted()
        names.emails = Array(Set(names.emails)).sorted()
    }

    static func ipAddresses(requested: PKIRequestedNames?, ipSANs: [String], role: PKIRole) throws(SecretsError) -> [[UInt8]] {
        if let requested {
            if !requested.ipAddresses.isEmpty && !role.allowIPSANs {
                throw .badRequest("IP Subject Alternative Names are not allowed in this role, but was provided some via CSR")
            }
            return requested.ipAddresses
        }
        guard !ipSANs.isEmpty else { return [] }
        guard role.allowIPSANs else {
            throw .badRequest("IP Subject Alternative Names are not allowed in this role, but was provided [\(ipSANs.joined(separator: " "))]")
        }
        return try ipSANs.map { text throws(SecretsError) in
            guard let bytes = PKISupport.ipAddressBytes(text) else { throw .badRequest("the value \"\(text)\" is not a valid IP address") }
            return bytes
        }
    }

    /// The SANs a CSR asks for. Names of kinds the engine does not issue (URIs, other names)
    /// are refused, as Vault refuses URI SANs a role does not allow.
    static func requestedNames(_ csr: CertificateSigningRequest) throws(SecretsError) -> PKIRequestedNames {
        let alternativeNames: SubjectAlternativeNames?
        do {
            alternativeNames = try csr.attributes.extensionRequest?.extensions.subjectAlternativeNames
        } catch {
            throw .badRequest("the CSR's requested extensions could not be parsed: \(error)")
        }
        var requested = PKIRequestedNames()
        guard let alternativeNames else { return requested }
        guard alternativeNames.count <= PKIBounds.namesPerCertificateMax else {
            throw .tooLarge("a certificate may carry at most \(PKIBounds.namesPerCertificateMax) names (PKIBounds.namesPerCertificateMax)")
        }
        for name in alternativeNames {
            switch name {
            case .dnsName(let dns): requested.dnsNames.append(dns)
            case .rfc822Name(let email): requested.emails.append(email)
            case .ipAddress(let octets):
                guard octets.bytes.count == 4 || octets.bytes.count == 16 else { throw .badRequest("the CSR asks for a malformed IP address") }
                requested.ipAddresses.append(Array(octets.bytes))
            case .uniformResourceIdentifier:
                throw .badRequest("URI Subject Alternative Names are not allowed in this role, but were provided via CSR")
            default:
                throw .badRequest("the CSR asks for a subject alternative name of a kind this engine does not issue: \(name)")
            }
        }
        return requested
    }

    // MARK: Validity

    /// Vault's `GetCertificateNotAfter`: ttl, else the role's, else the mount's; cut to max_ttl.
    func leafValidity(role: PKIRole, ttl: Duration?, now: Date, warnings: inout [String]) throws(SecretsError) -> (notBefore: Date, notAfter: Date) {
        var ttlSeconds = try ttl.map { d throws(SecretsError) in try PKITime.seconds(d, "ttl") } ?? 0
        if ttlSeconds == 0 { ttlSeconds = try role.ttl.map { d throws(SecretsError) in try PKITime.seconds(d, "ttl") } ?? 0 }
        var maxSeconds = try role.maxTTL.map { d throws(SecretsError) in try PKITime.seconds(d, "max_ttl") } ?? 0
        if ttlSeconds == 0 { ttlSeconds = PKIRole.mountTTLDefault.components.seconds }
        if maxSeconds == 0 { maxSeconds = PKIRole.mountTTLMax.components.seconds }
        if ttlSeconds > maxSeconds {
            warnings.append(
                "TTL \"\(PKITime.goDuration(ttlSeconds))\" is longer than permitted maxTTL \"\(PKITime.goDuration(maxSeconds))\", so maxTTL is being used"
            )
            ttlSeconds = maxSeconds
        }
        let notBeforeSeconds = try PKITime.seconds(role.notBeforeDuration, "not_before_duration")
        return try validity(ttlSeconds: ttlSeconds, notBeforeSeconds: notBeforeSeconds, now: now, warnings: &warnings)
    }

    /// `now + ttl`, held to the issuer's expiry per `leafNotAfterBehavior`, and `now` less the
    /// back-dating, which may not precede the issuer's `notBefore`.
    func validity(ttlSeconds: Int64, notBeforeSeconds: Int64, now: Date, warnings: inout [String]) throws(SecretsError)
        -> (notBefore: Date, notAfter: Date)
    {
        let signer = try active()
        let start = PKITime.seconds(now)
        var notAfter = try PKITime.adding(ttlSeconds, to: start)
        if notAfter > signer.notValidAfter {
            switch leafNotAfterBehavior {
            case .permit: break
            case .truncate: notAfter = signer.notValidAfter
            case .err:
                throw .badRequest(
                    "cannot satisfy request, as TTL would result in notAfter of \(PKITime.rfc3339(notAfter)) that is beyond the expiration of the CA certificate at \(PKITime.rfc3339(signer.notValidAfter))"
                )
            }
        }
        let (backdated, overflow) = start.subtractingReportingOverflow(notBeforeSeconds)
        guard !overflow else { throw .badRequest("not_before_duration is too long") }
        let notBefore = PKITime.date(backdated)
        if notAfter < notBefore { throw .badRequest("notAfter before notBefore") }
        if notBefore < signer.notValidBefore { throw .badRequest("notBefore before signer's notBefore") }
        return (notBefore, notAfter)
    }

    // MARK: Minting

    /// A leaf certificate as Vault writes one: the role's key usage (critical) and extended key
    /// usage, SKI, AKI, SANs; no basic constraints.
    func mintLeaf(
        signer: Certificate, names: PKILeafNames, publicKey: Certificate.PublicKey, role: PKIRole, validity: (notBefore: Date, notAfter: Date)
    ) throws(SecretsError) -> Certificate {
        let keyUsage = try role.parsedKeyUsage()
        let extendedKeyUsage = try role.parsedExtendedKeyUsage()
        let subject = names.commonName.isEmpty ? DistinguishedName() : try PKISupport.subject(commonName: names.commonName)
        var alternativeNames = names.dnsNames.map(GeneralName.dnsName) + names.emails.map(GeneralName.rfc822Name)
        alternativeNames += names.ipAddresses.map { GeneralName.ipAddress(ASN1OctetString(contentBytes: $0[...])) }
        let extensions = try PKISupport.attempt("could not build the certificate's extensions") {
            var extensions = Certificate.Extensions()
            if keyUsage != KeyUsage() { try extensions.append(Certificate.Extension(keyUsage, critical: true)) }
            if !extendedKeyUsage.isEmpty { try extensions.append(Certificate.Extension(try ExtendedKeyUsage(extendedKeyUsage), critical: false)) }
            try extensions.append(Certificate.Extension(SubjectKeyIdentifier(hash: publicKey), critical: false))
            let authority = AuthorityKeyIdentifier(keyIdentifier: PKISupport.keyIdentifier(of: signer)[...])
            try extensions.append(Certificate.Extension(authority, critical: false))
            if !alternativeNames.isEmpty {
                // RFC 5280: with an empty subject the SAN extension is critical.
                try extensions.append(Certificate.Extension(SubjectAlternativeNames(alternativeNames), critical: names.commonName.isEmpty))
            }
            return extensions
        }
        return try Self.mint(
            serial: .random(), publicKey: publicKey, notBefore: validity.notBefore, notAfter: validity.notAfter, issuer: signer.subject,
            subject: subject, extensions: extensions, signer: key)
    }

    /// The response and the record for a certificate this issuer just signed.
    func issued(_ certificate: Certificate, privateKey: PKIPrivateKey?, format: PKIPrivateKeyFormat, warnings: [String]) throws(SecretsError)
        -> PKIIssuedCertificate
    {
        let serial = try PKISerialNumber(certificate.serialNumber)
        let record = PKICertificateRecord(
            serialNumber: serial, certificateDER: try PKISupport.der(certificate), notAfter: certificate.notValidAfter, revocationTime: nil)
        let chain = try caChainPEM()
        return PKIIssuedCertificate(
            certificatePEM: try PKISupport.pem(certificate), issuingCAPEM: chain[0], caChainPEM: chain,
            privateKeyPEM: privateKey?.pem(format), privateKeyType: privateKey?.keyType, serialNumber: serial,
            expiration: certificate.notValidAfter, record: record, warnings: warnings)
    }
}

/// The SANs a CSR asks for, by kind.
struct PKIRequestedNames {
    var dnsNames: [String] = []
    var emails: [String] = []
    var ipAddresses: [[UInt8]] = []
}
