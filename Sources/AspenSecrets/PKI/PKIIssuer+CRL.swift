import AspenCore
import Foundation
import SwiftASN1
import X509

/// One revoked certificate, as the CRL needs it.
public struct PKIRevocation: Sendable, Equatable {
    public var serialNumber: PKISerialNumber
    public var revocationTime: Date
    /// The certificate's own expiry: once it passes, the entry leaves the CRL.
    public var certificateNotAfter: Date

    public init(serialNumber: PKISerialNumber, revocationTime: Date, certificateNotAfter: Date) {
        self.serialNumber = serialNumber
        self.revocationTime = PKITime.wholeSeconds(revocationTime)
        self.certificateNotAfter = PKITime.wholeSeconds(certificateNotAfter)
    }
}

/// What `revoke` answers, in the shape of Vault's `pki/revoke` response.
public struct PKIRevokeResult: Sendable, Equatable {
    /// The record to store back (unchanged when nothing was revoked).
    public var record: PKICertificateRecord
    /// `revocation_time`: now, or the earlier revocation's time; nil when nothing was revoked
    /// (the certificate had already expired).
    public var revocationTime: Date?
    public var warnings: [String]
}

/// A signed X.509 v2 CRL.
public struct PKICRL: Sendable, Equatable {
    public var der: [UInt8]
    /// `-----BEGIN X509 CRL-----`, as Vault's `pki/crl/pem` serves it.
    public var pem: String
    /// The CRL number extension's value.
    public var number: UInt64
    public var thisUpdate: Date
    public var nextUpdate: Date
    /// The serials listed, in ascending order.
    public var serialNumbers: [PKISerialNumber]
}

extension PKIIssuer {
    /// Vault's default CRL lifetime (`pki/config/crl` `expiry`): 72 hours.
    public static let crlExpiryDefault: Duration = .seconds(72 * 3600)

    /// `pki/revoke`: marks the certificate `record` (the one stored under `serial`) revoked at
    /// `now`. As Vault does: revoking again keeps the first time; an expired certificate is not
    /// revoked (a warning says so); the issuer's own certificate is refused.
    public func revoke(serial: String, record: PKICertificateRecord?, now: Date) throws(SecretsError) -> PKIRevokeResult {
        guard let parsed = PKISerialNumber(parsing: serial) else {
            throw .badRequest("\(serial) is not a serial number (hex bytes separated by colons or hyphens)")
        }
        if let own = serialNumber, own == parsed { throw .badRequest("adding issuer (serial: \(own)) to its own CRL is not allowed") }
        guard let record, record.serialNumber == parsed else { throw .badRequest("certificate with serial \(parsed) not found") }
        if let earlier = record.revocationTime { return PKIRevokeResult(record: record, revocationTime: earlier, warnings: []) }
        // Vault's two seconds of wiggle room, for expiries stored at second granularity.
        if record.notAfter < PKITime.wholeSeconds(now).addingTimeInterval(2) {
            return PKIRevokeResult(
                record: record, revocationTime: nil, warnings: ["certificate with serial \(parsed) already expired; refusing to add to CRL"])
        }
        var revoked = record
        revoked.revocationTime = PKITime.wholeSeconds(now)
        return PKIRevokeResult(record: revoked, revocationTime: revoked.revocationTime, warnings: [])
    }

    /// `pki/crl/rotate`: a CRL listing every revocation in `revoked` whose certificate has not
    /// expired by `now` (expired ones are pruned; a serial listed twice appears once), with
    /// thisUpdate `now`, nextUpdate `now + nextUpdateAfter`, the CRL number (this issuer's last
    /// plus one; store the issuer back), and the AKI of the issuer's key, signed by it.
    ///
    /// swift-certificates 1.21 has no CRL type (it reads and writes certificates, CSRs, OCSP
    /// and CMS only), so the TBSCertList (RFC 5280 §5.1) is written here with SwiftASN1's DER
    /// serializer and signed with the issuer's key through `Certificate.PrivateKey.sign`.
    public mutating func crl(
        revoked: [PKIRevocation], now: Date, nextUpdateAfter: Duration = PKIIssuer.crlExpiryDefault, limits: Limits = .standard
    ) throws(SecretsError) -> PKICRL {
        let signer = try active()
        let thisUpdate = PKITime.wholeSeconds(now)
        let nextUpdate = try PKITime.adding(try PKITime.seconds(nextUpdateAfter, "nextUpdateAfter"), to: PKITime.seconds(thisUpdate))
        var bySerial: [PKISerialNumber: PKIRevocation] = [:]
        for entry in revoked where entry.certificateNotAfter >= thisUpdate {
            if let kept = bySerial[entry.serialNumber], kept.revocationTime <= entry.revocationTime { continue }
            bySerial[entry.serialNumber] = entry
        }
        guard bySerial.count <= limits.pkiCRLEntriesMax else {
            throw .tooLarge("the CRL would list \(bySerial.count) certificates, more than pkiCRLEntriesMax (\(limits.pkiCRLEntriesMax))")
        }
        let entries = bySerial.values.sorted { $0.serialNumber < $1.serialNumber }
        let number = crlNumber + 1
        let der = try PKISupport.attempt("could not build the CRL") {
            let tbs = try Self.tbsCertList(
                signer: signer, algorithm: key, thisUpdate: thisUpdate, nextUpdate: nextUpdate, entries: entries, number: number)
            let signature = try key.certificateKey.sign(bytes: tbs, signatureAlgorithm: key.signatureAlgorithm)
            var coder = DER.Serializer()
            try coder.appendConstructedNode(identifier: .sequence) { coder in
                coder.serializeRawBytes(tbs)
                try Self.serializeAlgorithm(of: key, into: &coder)
                try coder.serialize(ASN1BitString(bytes: signature.rawRepresentation[...]))
            }
            return coder.serializedBytes
        }
        crlNumber = number
        return PKICRL(
            der: der, pem: PEMDocument(type: "X509 CRL", derBytes: der).pemString, number: number, thisUpdate: thisUpdate,
            nextUpdate: nextUpdate, serialNumbers: entries.map(\.serialNumber))
    }

    /// RFC 5280's TBSCertList, version 2; the revoked list is left out when empty, as §5.1.2.6 asks.
    static func tbsCertList(
        signer: Certificate, algorithm key: PKIPrivateKey, thisUpdate: Date, nextUpdate: Date, entries: [PKIRevocation], number: UInt64
    ) throws -> [UInt8] {
        var coder = DER.Serializer()
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)
            try serializeAlgorithm(of: key, into: &coder)
            try coder.serialize(signer.subject)
            try PKITime.serialize(thisUpdate, into: &coder)
            try PKITime.serialize(nextUpdate, into: &coder)
            if !entries.isEmpty {
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    for entry in entries {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            try coder.serialize(entry.serialNumber.bytes[...])
                            try PKITime.serialize(entry.revocationTime, into: &coder)
                        }
                    }
                }
            }
            let authority = AuthorityKeyIdentifier(keyIdentifier: PKISupport.keyIdentifier(of: signer)[...])
            let crlNumber = Certificate.Extension(
                oid: PKIOID.crlNumber, critical: false, value: try PKISupport.derBytes(number)[...])
            try coder.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { coder in
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    try coder.serialize(Certificate.Extension(authority, critical: false))
                    try coder.serialize(crlNumber)
                }
            }
        }
        return coder.serializedBytes
    }

    /// The AlgorithmIdentifier of `key`'s signatures (RSA's carries an explicit NULL).
    static func serializeAlgorithm(of key: PKIPrivateKey, into coder: inout DER.Serializer) throws {
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            switch key {
            case .rsa:
                try coder.serialize(PKIOID.sha256WithRSA)
                try coder.serialize(ASN1Null())
            case .p256: try coder.serialize(PKIOID.ecdsaWithSHA256)
            case .p384: try coder.serialize(PKIOID.ecdsaWithSHA384)
            case .p521: try coder.serialize(PKIOID.ecdsaWithSHA512)
            case .ed25519: try coder.serialize(PKIOID.ed25519)
            }
        }
    }
}
