#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SwiftASN1
import X509

/// The PKI engine's own bounds, beside `Limits.pkiRolesMax`, `pkiCertificatesMax` and
/// `pkiCRLEntriesMax`: what one request, role or stored record may hold. Each is checked where
/// the data enters (a request, or a record read back), and a refusal names it.
public enum PKIBounds {
    /// Largest PEM text a request may carry (a CSR, or a signed certificate with its chain).
    public static let pemBytesMax = 256 * 1024
    /// Largest DER certificate stored or accepted.
    public static let certificateBytesMax = 64 * 1024
    /// Largest stored private key (an RSA-4096 PKCS#1 key is about 2.4 KiB).
    public static let privateKeyBytesMax = 8 * 1024
    /// Most certificates above an issuer in its chain.
    public static let chainCertificatesMax = 8
    /// Most names (DNS, email and IP, the common name included) in one certificate.
    public static let namesPerCertificateMax = 100
    /// Longest name, common name or allowed domain, in bytes (a DNS name is at most 253).
    public static let nameBytesMax = 255
    /// Most entries in a role's `allowed_domains`.
    public static let allowedDomainsMax = 1000
    /// Most entries in a role's `key_usage` and `ext_key_usage`.
    public static let keyUsagesMax = 16
}

/// Small helpers the PKI files share.
enum PKISupport {
    /// Runs a swift-certificates or SwiftASN1 call, turning its untyped error into ours.
    static func attempt<T>(_ what: String, _ body: () throws -> T) throws(SecretsError) -> T {
        do {
            return try body()
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .internalError("\(what): \(error)")
        }
    }

    /// The first common name in a distinguished name, or "" when it has none.
    static func commonName(_ name: DistinguishedName) -> String {
        for rdn in name {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let text = String(attribute.value) { return text }
            }
        }
        return ""
    }

    static func subject(commonName: String) throws(SecretsError) -> DistinguishedName {
        guard commonName.utf8.count <= PKIBounds.nameBytesMax else {
            throw .badRequest("common name is longer than \(PKIBounds.nameBytesMax) bytes (PKIBounds.nameBytesMax)")
        }
        return try attempt("could not build a subject name") { try DistinguishedName { CommonName(commonName) } }
    }

    /// The octets of an IP address (4 for IPv4 and IPv4-mapped IPv6, as Go writes them; 16 for
    /// IPv6), or nil when `text` is not one. `inet_pton` parses; it touches nothing else.
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count <= 64, !text.utf8.contains(0) else { return nil }
        var v4 = [UInt8](repeating: 0, count: 4)
        if inet_pton(AF_INET, text, &v4) == 1 { return v4 }
        var v6 = [UInt8](repeating: 0, count: 16)
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        if v6[0..<10].allSatisfy({ $0 == 0 }) && v6[10] == 0xFF && v6[11] == 0xFF { return Array(v6[12...]) }
        return v6
    }

    /// PEM text bounded by `PKIBounds.pemBytesMax`, then split into its documents.
    static func pemDocuments(_ text: String, _ what: String) throws(SecretsError) -> [PEMDocument] {
        guard text.utf8.count <= PKIBounds.pemBytesMax else {
            throw .tooLarge("\(what) is larger than \(PKIBounds.pemBytesMax) bytes (PKIBounds.pemBytesMax)")
        }
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw .badRequest("\(what) is not valid PEM: \(error)")
        }
        guard !documents.isEmpty else { throw .badRequest("\(what) contains no data") }
        return documents
    }

    static func certificate(der: [UInt8], _ what: String) throws(SecretsError) -> Certificate {
        guard der.count <= PKIBounds.certificateBytesMax else {
            throw .tooLarge("\(what) is larger than \(PKIBounds.certificateBytesMax) bytes (PKIBounds.certificateBytesMax)")
        }
        do {
            return try Certificate(derEncoded: der)
        } catch {
            throw .badRequest("\(what) could not be parsed: \(error)")
        }
    }

    static func der(_ certificate: Certificate) throws(SecretsError) -> [UInt8] {
        try attempt("could not encode a certificate") { try derBytes(certificate) }
    }

    /// `value` in DER (SwiftASN1 keeps its one-call form internal).
    static func derBytes(_ value: some DERSerializable) throws -> [UInt8] {
        var coder = DER.Serializer()
        try coder.serialize(value)
        return coder.serializedBytes
    }

    static func pem(_ certificate: Certificate) throws(SecretsError) -> String {
        try attempt("could not encode a certificate") { try certificate.serializeAsPEM().pemString }
    }

    /// The key identifier a certificate signed by `issuer` names in its AKI: the issuer's own SKI
    /// when it has one, else RFC 5280's SHA-1 of its public key.
    static func keyIdentifier(of issuer: Certificate) -> [UInt8] {
        if let ski = try? issuer.extensions.subjectKeyIdentifier { return Array(ski.keyIdentifier) }
        return Array(SubjectKeyIdentifier(hash: issuer.publicKey).keyIdentifier)
    }
}
