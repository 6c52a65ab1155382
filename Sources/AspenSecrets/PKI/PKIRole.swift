import Foundation
import X509

/// A PKI role (`pki/roles/:name`): the names a certificate may carry, its key, its lifetime and
/// its usages. Field names follow Vault's; every default is Vault's default.
public struct PKIRole: Sendable, Equatable {
    /// `ttl`: the lifetime when a request names none; nil takes the mount's default.
    public var ttl: Duration?
    /// `max_ttl`: the longest lifetime; a longer request is cut to it (with a warning). Nil
    /// takes the mount's maximum.
    public var maxTTL: Duration?
    public var allowedDomains: [String] = []
    public var allowLocalhost = true
    public var allowBareDomains = false
    public var allowSubdomains = false
    /// `allow_glob_domains`: an allowed domain with `*` matches names as a glob.
    public var allowGlobDomains = false
    public var allowWildcardCertificates = true
    public var allowAnyName = false
    /// `enforce_hostnames`: names must be valid hostnames (wildcards allowed) or emails.
    public var enforceHostnames = true
    public var allowIPSANs = true
    public var serverFlag = true
    public var clientFlag = true
    /// `key_type`: `.any` lets `sign` accept every key type and `issue` none.
    public var keyType: PKIKeyType = .rsa
    /// `key_bits`: 0 takes the type's default; for `sign`, the smallest key accepted.
    public var keyBits = 0
    /// `key_usage`, in Vault's spelling (`DigitalSignature`, `KeyEncipherment`, …).
    public var keyUsage = ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]
    /// `ext_key_usage`, in Vault's spelling (`ServerAuth`, `CodeSigning`, …), beside the flags.
    public var extKeyUsage: [String] = []
    /// `use_csr_common_name` and `use_csr_sans`: what `sign` takes from the CSR.
    public var useCSRCommonName = true
    public var useCSRSANs = true
    /// `require_cn`: a certificate must have a common name.
    public var requireCN = true
    /// `not_before_duration`: how far back `notBefore` is set, for clocks running behind.
    public var notBeforeDuration: Duration = .seconds(30)

    /// Vault's system default and maximum lease, which a mount without its own uses (768h).
    public static let mountTTLDefault: Duration = .seconds(768 * 3600)
    public static let mountTTLMax: Duration = .seconds(768 * 3600)

    public init() {}

    /// Checks what Vault checks when a role is written, and the engine's bounds.
    public func validate() throws(SecretsError) {
        guard keyBits >= 0 else { throw .badRequest("key_bits must not be negative") }
        _ = try keyType.resolvedBits(keyBits)
        let ttlSeconds = try ttl.map { d throws(SecretsError) in try PKITime.seconds(d, "ttl") } ?? 0
        let maxSeconds = try maxTTL.map { d throws(SecretsError) in try PKITime.seconds(d, "max_ttl") } ?? 0
        _ = try PKITime.seconds(notBeforeDuration, "not_before_duration")
        if maxSeconds > 0 && ttlSeconds > maxSeconds { throw .badRequest("\"ttl\" value must be less than \"max_ttl\" value") }
        guard allowedDomains.count <= PKIBounds.allowedDomainsMax else {
            throw .tooLarge("allowed_domains has more than \(PKIBounds.allowedDomainsMax) entries (PKIBounds.allowedDomainsMax)")
        }
        for domain in allowedDomains where domain.utf8.count > PKIBounds.nameBytesMax {
            throw .badRequest("allowed domain is longer than \(PKIBounds.nameBytesMax) bytes (PKIBounds.nameBytesMax)")
        }
        guard keyUsage.count <= PKIBounds.keyUsagesMax, extKeyUsage.count <= PKIBounds.keyUsagesMax else {
            throw .tooLarge("key_usage and ext_key_usage hold at most \(PKIBounds.keyUsagesMax) entries each (PKIBounds.keyUsagesMax)")
        }
        _ = try parsedKeyUsage()
        _ = try parsedExtendedKeyUsage()
    }

    /// `key_usage` as the extension's bits. Vault ignores names it does not know; this refuses
    /// them, so that a typo does not silently issue a certificate without the usage.
    func parsedKeyUsage() throws(SecretsError) -> KeyUsage {
        var usage = KeyUsage()
        for name in keyUsage {
            switch name.trimmingCharacters(in: .whitespaces).lowercased() {
            case "digitalsignature": usage.digitalSignature = true
            case "contentcommitment", "nonrepudiation": usage.nonRepudiation = true
            case "keyencipherment": usage.keyEncipherment = true
            case "dataencipherment": usage.dataEncipherment = true
            case "keyagreement": usage.keyAgreement = true
            case "certsign": usage.keyCertSign = true
            case "crlsign": usage.cRLSign = true
            case "encipheronly": usage.encipherOnly = true
            case "decipheronly": usage.decipherOnly = true
            default: throw .badRequest("unknown key_usage \(name)")
            }
        }
        return usage
    }

    /// `ext_key_usage` plus `server_flag` and `client_flag`, in Vault's order (any, server,
    /// client, then the rest), without repeats.
    func parsedExtendedKeyUsage() throws(SecretsError) -> [ExtendedKeyUsage.Usage] {
        var named: [ExtendedKeyUsage.Usage] = []
        for name in extKeyUsage {
            switch name.trimmingCharacters(in: .whitespaces).lowercased() {
            case "any": named.append(.any)
            case "serverauth": named.append(.serverAuth)
            case "clientauth": named.append(.clientAuth)
            case "codesigning": named.append(.codeSigning)
            case "emailprotection": named.append(.emailProtection)
            case "timestamping": named.append(.timeStamping)
            case "ocspsigning": named.append(.ocspSigning)
            default: throw .badRequest("unknown ext_key_usage \(name)")
            }
        }
        if serverFlag { named.append(.serverAuth) }
        if clientFlag { named.append(.clientAuth) }
        let order: [ExtendedKeyUsage.Usage] = [.any, .serverAuth, .clientAuth, .codeSigning, .emailProtection, .timeStamping, .ocspSigning]
        return order.filter { named.contains($0) }
    }
}
