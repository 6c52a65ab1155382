import AspenCore
import Foundation
import SwiftASN1
import X509

/// An issued certificate as the mount stores it (`("cert", serial)`): enough to list it, serve
/// it, revoke it and build the CRL without parsing it again.
public struct PKICertificateRecord: Sendable, Equatable {
    public var serialNumber: PKISerialNumber
    public var certificateDER: [UInt8]
    public var notAfter: Date
    /// When it was revoked; nil while it is not.
    public var revocationTime: Date?

    public init(serialNumber: PKISerialNumber, certificateDER: [UInt8], notAfter: Date, revocationTime: Date?) {
        self.serialNumber = serialNumber
        self.certificateDER = certificateDER
        self.notAfter = PKITime.wholeSeconds(notAfter)
        self.revocationTime = revocationTime.map(PKITime.wholeSeconds)
    }

    /// Vault's `pki/cert/:serial` `certificate`.
    public var certificatePEM: String { PEMDocument(type: "CERTIFICATE", derBytes: certificateDER).pemString }

    /// The CRL's entry for it, when it is revoked.
    public var revocation: PKIRevocation? {
        revocationTime.map { PKIRevocation(serialNumber: serialNumber, revocationTime: $0, certificateNotAfter: notAfter) }
    }
}

// MARK: Codecs
//
// Each record: a version byte, then its fields with ByteWriter; every length is bounded
// (PKIBounds) before it is read, a record is decoded whole (trailing bytes refused), and what is
// decoded is checked as if it had been written by a request (a role validates, an issuer's
// certificate must carry its key). Any fault is an `internalError` naming the record: records
// are sealed at rest, so a bad one is corruption or a bug, never the caller's input.

extension PKICertificateRecord {
    static let codecVersion: UInt8 = 1

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: certificateDER.count + 48)
        writer.write(Self.codecVersion)
        writer.writeBytes(serialNumber.bytes)
        writer.writeVarint(signed: PKITime.seconds(notAfter))
        writer.write(revocationTime != nil)
        if let revocationTime { writer.writeVarint(signed: PKITime.seconds(revocationTime)) }
        writer.writeBytes(certificateDER)
        return writer.bytes
    }

    /// Decodes a record; `limits` is the cluster's (the PKI engine's own bounds are `PKIBounds`).
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw DecodingError.invalid("unknown version") }
            guard let serial = PKISerialNumber(bytes: try reader.readBytes(limit: PKISerialNumber.bytesMax)) else {
                throw DecodingError.invalid("empty serial number")
            }
            let notAfter = try reader.readSignedVarint()
            let revocation: Int64? = try reader.readBool() ? try reader.readSignedVarint() : nil
            let der = try reader.readBytes(limit: PKIBounds.certificateBytesMax)
            try reader.expectEnd()
            guard !der.isEmpty else { throw DecodingError.invalid("no certificate") }
            guard PKITime.isWritable(notAfter), PKITime.isWritable(revocation ?? 0) else {
                throw DecodingError.invalid("a time out of range")
            }
            self.init(serialNumber: serial, certificateDER: der, notAfter: PKITime.date(notAfter), revocationTime: revocation.map(PKITime.date))
        } catch {
            throw .internalError("a stored PKI certificate record is corrupt: \(error)")
        }
    }
}

extension PKIIssuer {
    static let codecVersion: UInt8 = 1

    public func encoded() throws(SecretsError) -> [UInt8] {
        var writer = ByteWriter(capacity: 4096)
        writer.write(Self.codecVersion)
        writer.writeBytes(key.storedBytes)
        writer.writeOptionalBytes(try certificate.map { c throws(SecretsError) in try PKISupport.der(c) })
        writer.writeVarint(UInt64(chain.count))
        for parent in chain { writer.writeBytes(try PKISupport.der(parent)) }
        writer.writeString(leafNotAfterBehavior.rawValue)
        writer.writeVarint(crlNumber)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(SecretsError) {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw DecodingError.invalid("unknown version") }
            let key = try PKIPrivateKey(stored: try reader.readBytes(limit: PKIBounds.privateKeyBytesMax))
            let certificate = try reader.readOptionalBytes(limit: PKIBounds.certificateBytesMax).map { der throws in
                try PKISupport.certificate(der: der, "the issuer's certificate")
            }
            var chain: [Certificate] = []
            for _ in 0..<(try reader.readCount(limit: PKIBounds.chainCertificatesMax)) {
                chain.append(try PKISupport.certificate(der: try reader.readBytes(limit: PKIBounds.certificateBytesMax), "a chain certificate"))
            }
            guard let behavior = PKILeafNotAfterBehavior(rawValue: try reader.readString(limit: 16)) else {
                throw DecodingError.invalid("unknown leaf_not_after_behavior")
            }
            let crlNumber = try reader.readVarint()
            try reader.expectEnd()
            if let certificate, certificate.publicKey != key.publicKey { throw DecodingError.invalid("the certificate does not carry the key") }
            self.init(key: key, certificate: certificate, chain: chain, leafNotAfterBehavior: behavior, crlNumber: crlNumber)
        } catch {
            throw .internalError("a stored PKI issuer is corrupt: \(error)")
        }
    }
}

extension PKIRole {
    static let codecVersion: UInt8 = 1

    /// TTLs are stored in whole seconds, as Vault keeps them.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 256)
        writer.write(Self.codecVersion)
        for duration in [ttl, maxTTL] {
            writer.write(duration != nil)
            if let duration { writer.writeVarint(signed: duration.components.seconds) }
        }
        writer.writeVarint(signed: notBeforeDuration.components.seconds)
        writer.writeVarint(UInt64(allowedDomains.count))
        for domain in allowedDomains { writer.writeString(domain) }
        for flag in flags { writer.write(flag) }
        writer.writeString(keyType.rawValue)
        writer.writeVarint(signed: Int64(keyBits))
        for list in [keyUsage, extKeyUsage] {
            writer.writeVarint(UInt64(list.count))
            for name in list { writer.writeString(name) }
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(SecretsError) {
        self.init()
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == Self.codecVersion else { throw DecodingError.invalid("unknown version") }
            ttl = try reader.readBool() ? .seconds(try reader.readSignedVarint()) : nil
            maxTTL = try reader.readBool() ? .seconds(try reader.readSignedVarint()) : nil
            notBeforeDuration = .seconds(try reader.readSignedVarint())
            allowedDomains = try Self.readStrings(&reader, countMax: PKIBounds.allowedDomainsMax, bytesMax: PKIBounds.nameBytesMax)
            var flags = self.flags
            for index in flags.indices { flags[index] = try reader.readBool() }
            self.flags = flags
            guard let type = PKIKeyType(rawValue: try reader.readString(limit: 16)) else { throw DecodingError.invalid("unknown key type") }
            keyType = type
            guard let bits = Int(exactly: try reader.readSignedVarint()) else { throw DecodingError.invalid("key bits out of range") }
            keyBits = bits
            keyUsage = try Self.readStrings(&reader, countMax: PKIBounds.keyUsagesMax, bytesMax: 64)
            extKeyUsage = try Self.readStrings(&reader, countMax: PKIBounds.keyUsagesMax, bytesMax: 64)
            try reader.expectEnd()
            try validate()
        } catch {
            throw .internalError("a stored PKI role is corrupt: \(error)")
        }
    }

    static func readStrings(_ reader: inout ByteReader, countMax: Int, bytesMax: Int) throws(DecodingError) -> [String] {
        var strings: [String] = []
        for _ in 0..<(try reader.readCount(limit: countMax)) { strings.append(try reader.readString(limit: bytesMax)) }
        return strings
    }

    /// The role's switches, in their stored order (append new ones at the end, with a new version).
    var flags: [Bool] {
        get {
            [
                allowLocalhost, allowBareDomains, allowSubdomains, allowGlobDomains, allowWildcardCertificates, allowAnyName, enforceHostnames,
                allowIPSANs, serverFlag, clientFlag, useCSRCommonName, useCSRSANs, requireCN,
            ]
        }
        set {
            precondition(newValue.count == 13, "a PKI role has 13 switches")
            (allowLocalhost, allowBareDomains, allowSubdomains, allowGlobDomains, allowWildcardCertificates) =
                (newValue[0], newValue[1], newValue[2], newValue[3], newValue[4])
            (allowAnyName, enforceHostnames, allowIPSANs, serverFlag, clientFlag) = (newValue[5], newValue[6], newValue[7], newValue[8], newValue[9])
            (useCSRCommonName, useCSRSANs, requireCN) = (newValue[10], newValue[11], newValue[12])
        }
    }
}
