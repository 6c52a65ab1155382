import AspenCore
import AspenKV
import AspenLayer
import Foundation
import X509

/// The PKI engine's calls (Vault's `pki` paths), decided by the router.
public enum PKICall: Sendable {
    case generateRoot(commonName: String, keyType: PKIKeyType, keyBits: Int, ttl: Duration, maxPathLength: Int?)
    case generateIntermediate(commonName: String, keyType: PKIKeyType, keyBits: Int)
    case signIntermediate(csr: String, commonName: String, ttl: Duration, maxPathLength: Int?)
    case setSigned(certificate: String)
    case roleWrite(name: String, PKIRole)
    case roleRead(name: String)
    case roleDelete(name: String)
    case roles
    case issue(role: String, commonName: String, altNames: [String], ipSANs: [String], ttl: Duration?, format: PKIPrivateKeyFormat)
    case sign(role: String, csr: String, commonName: String, altNames: [String], ipSANs: [String], ttl: Duration?)
    case revoke(serial: String)
    /// The CA certificate: `der` raw, `pem` raw, or `json` (`cert/ca`).
    case caCertificate(PKIFormat)
    /// The CRL, as the CA certificate.
    case crl(PKIFormat)
    case rotateCRL
    case certificate(serial: String)
    case certificates

    public enum PKIFormat: Sendable { case der, pem, json }
}

/// PKI over a `KeyValueStore`: the mount's issuer (its key sealed like every secret), roles,
/// every issued certificate (the certificate only: Vault keeps no issued private key), the
/// revocations and the last CRL. A change is one transaction comparing what it read.
public struct PKIEngine: MountEngine {
    public let context: MountContext

    public init(_ context: MountContext) { self.context = context }

    var issuerKey: Bytes { space.pack(["issuer"]) }
    var crlKey: Bytes { space.pack(["crl"]) }
    func roleKey(_ name: String) -> Bytes { space.pack(["role", .string(name)]) }
    func certificateKey(_ serial: PKISerialNumber) -> Bytes { space.pack(["cert", .string(serial.hyphenHex)]) }
    func revokedKey(_ serial: PKISerialNumber) -> Bytes { space.pack(["revoked", .string(serial.hyphenHex)]) }
    var now: Date { Date(timeIntervalSince1970: Double(nowMs()) / 1000) }

    func open(_ entry: KeyValue) throws(SecretsError) -> Bytes { try key.open(entry.value, storageKey: entry.key) }
    func sealed(_ plain: Bytes, at storage: Bytes) -> TransactionOperation { .put(Put(key: storage, value: key.seal(plain, storageKey: storage))) }

    func issuer() async throws -> (PKIIssuer, KeyValue)? {
        guard let entry = try await store.get(issuerKey) else { return nil }
        return (try PKIIssuer(decoding: try open(entry), limits: limits), entry)
    }

    func activeIssuer() async throws -> (PKIIssuer, KeyValue) {
        guard let (issuer, entry) = try await issuer(), !issuer.isPending else {
            throw SecretsError.badRequest("no default issuer currently configured: generate a root or set a signed intermediate first")
        }
        return (issuer, entry)
    }

    func role(_ name: String) async throws -> PKIRole {
        guard let entry = try await store.get(roleKey(name)) else { throw SecretsError.badRequest("unknown role: \(name)") }
        return try PKIRole(decoding: try open(entry), limits: limits)
    }

    /// Commits `operations` if every compared record still holds what was read.
    func commit(_ compares: [Compare], _ operations: [TransactionOperation]) async throws {
        let result = try await store.transaction(Transaction(compares: compares + [context.mountHolds], success: operations))
        guard result.succeeded else { throw SecretsError.unavailable("the PKI mount \(mount.path)/ changed during this request; try again") }
    }

    static func unchanged(_ entry: KeyValue?, _ key: Bytes) -> Compare {
        entry.map { Compare(key: $0.key, .modRevision($0.modRevision)) } ?? Compare.absent(key)
    }

    public func run(_ call: PKICall) async throws -> VaultResponse {
        switch call {
        case .generateRoot(let commonName, let keyType, let keyBits, let ttl, let maxPathLength):
            let existing = try await store.get(issuerKey)
            let issuer = try PKIIssuer.generateRoot(
                commonName: commonName, keyType: keyType, keyBits: keyBits, ttl: ttl, maxPathLength: maxPathLength, now: now)
            try await commit([Self.unchanged(existing, issuerKey)], [sealed(try issuer.encoded(), at: issuerKey)] + forgetRevocations)
            _ = try await rotateCRL()
            let pem = try issuer.certificatePEM()
            return .data([
                "certificate": pem, "issuing_ca": pem, "serial_number": issuer.serialNumber?.colonHex ?? "", "key_type": issuer.keyType.rawValue,
                "expiration": Int(issuer.certificate?.notValidAfter.timeIntervalSince1970 ?? 0),
            ])
        case .generateIntermediate(let commonName, let keyType, let keyBits):
            let existing = try await store.get(issuerKey)
            let (pending, csr) = try PKIIssuer.generateIntermediateCSR(commonName: commonName, keyType: keyType, keyBits: keyBits)
            try await commit([Self.unchanged(existing, issuerKey)], [sealed(try pending.encoded(), at: issuerKey)])
            return .data(["csr": csr, "key_type": keyType.rawValue])
        case .signIntermediate(let csr, let commonName, let ttl, let maxPathLength):
            let (issuer, _) = try await activeIssuer()
            let signed = try issuer.signIntermediate(csrPEM: csr, commonName: commonName, ttl: ttl, maxPathLength: maxPathLength, now: now)
            try await store(signed)
            return .data(Self.json(signed))
        case .setSigned(let certificate):
            guard let (current, entry) = try await issuer() else { throw SecretsError.badRequest("no pending intermediate: generate one first") }
            var issuer = current
            try issuer.setSigned(certificatePEM: certificate)
            try await commit([Self.unchanged(entry, issuerKey)], [sealed(try issuer.encoded(), at: issuerKey)] + forgetRevocations)
            _ = try await rotateCRL()
            return .noContent
        case .roleWrite(let name, let role):
            try role.validate()
            let existing = try await store.get(roleKey(name))
            if existing == nil {
                let count = try await store.read(RangeRequest(.prefix(space.subspace(["role"]).prefix), countOnly: true), consistency: .linearizable).count
                guard count < limits.pkiRolesMax else {
                    throw SecretsError.badRequest("the mount has \(count) roles, the most pkiRolesMax (\(limits.pkiRolesMax)) allows")
                }
            }
            try await commit([Self.unchanged(existing, roleKey(name))], [sealed(role.encoded(), at: roleKey(name))])
            return .noContent
        case .roleRead(let name):
            return .data(Self.json(try await role(name)))
        case .roleDelete(let name):
            try await commit([], [.delete(Delete(.key(roleKey(name))))])
            return .noContent
        case .roles:
            let names = try await listNames(space.subspace(["role"]))
            return names.isEmpty ? .notFound : .data(["keys": names])
        case .issue(let roleName, let commonName, let altNames, let ipSANs, let ttl, let format):
            let role = try await role(roleName)
            let (issuer, _) = try await activeIssuer()
            let issued = try issuer.issue(
                role: role, commonName: commonName, altNames: altNames, ipSANs: ipSANs, ttl: ttl, privateKeyFormat: format, now: now)
            try await store(issued)
            return .data(Self.json(issued), warnings: issued.warnings.isEmpty ? nil : issued.warnings)
        case .sign(let roleName, let csr, let commonName, let altNames, let ipSANs, let ttl):
            let role = try await role(roleName)
            let (issuer, _) = try await activeIssuer()
            let signed = try issuer.sign(role: role, csrPEM: csr, commonName: commonName, altNames: altNames, ipSANs: ipSANs, ttl: ttl, now: now)
            try await store(signed)
            return .data(Self.json(signed), warnings: signed.warnings.isEmpty ? nil : signed.warnings)
        case .revoke(let serial):
            return try await revoke(serial)
        case .caCertificate(let format):
            let (issuer, _) = try await activeIssuer()
            let pem = try issuer.certificatePEM()
            return Self.document(pem: pem, der: issuer.certificate.map { _ in Self.der(fromPEM: pem) } ?? [], format)
        case .crl(let format):
            // Signed when the CA is made and at every revocation; a read never writes.
            guard let der = try await store.get(crlKey).map({ entry throws(SecretsError) in try open(entry) }) else {
                throw SecretsError.badRequest("no CRL: the mount has no issuer yet")
            }
            return Self.document(pem: PKICRLText.pem(der), der: der, format)
        case .rotateCRL:
            _ = try await rotateCRL()
            return .data(["success": true])
        case .certificate(let serial):
            guard let parsed = PKISerialNumber(parsing: serial) else { throw SecretsError.badRequest("\(serial) is not a serial number") }
            guard let entry = try await store.get(certificateKey(parsed)) else { return .notFound }
            let record = try PKICertificateRecord(decoding: try open(entry), limits: limits)
            return .data([
                "certificate": record.certificatePEM, "revocation_time": Int(record.revocationTime?.timeIntervalSince1970 ?? 0),
                "revocation_time_rfc3339": record.revocationTime.map { VaultTime.format(ms: Int64($0.timeIntervalSince1970 * 1000)) } ?? "",
            ])
        case .certificates:
            let serials = try await listNames(space.subspace(["cert"])).map { $0.replacingOccurrences(of: "-", with: ":") }
            return serials.isEmpty ? .notFound : .data(["keys": serials])
        }
    }

    /// Records an issued certificate (bounded by `pkiCertificatesMax`).
    func store(_ issued: PKIIssuedCertificate) async throws {
        let count = try await store.read(RangeRequest(.prefix(space.subspace(["cert"]).prefix), countOnly: true), consistency: .linearizable).count
        guard count < limits.pkiCertificatesMax else {
            throw SecretsError.badRequest("the mount holds \(count) certificates, the most pkiCertificatesMax (\(limits.pkiCertificatesMax)) allows")
        }
        let storage = certificateKey(issued.serialNumber)
        try await commit([Compare.absent(storage)], [sealed(issued.record.encoded(), at: storage)])
    }

    func revoke(_ serial: String) async throws -> VaultResponse {
        let (issuer, _) = try await activeIssuer()
        guard let parsed = PKISerialNumber(parsing: serial) else { throw SecretsError.badRequest("\(serial) is not a serial number") }
        let entry = try await store.get(certificateKey(parsed))
        let record = try entry.map { entry throws(SecretsError) in try PKICertificateRecord(decoding: try open(entry), limits: limits) }
        let result = try issuer.revoke(serial: serial, record: record, now: now)
        if let time = result.revocationTime, let revocation = result.record.revocation {
            if record?.revocationTime == nil {
                try await commit(
                    [Self.unchanged(entry, certificateKey(parsed))],
                    [sealed(result.record.encoded(), at: certificateKey(parsed)), sealed(PKICRLText.encode(revocation), at: revokedKey(parsed))])
            }
            // Revoking again signs the CRL again too: a revocation whose CRL was not signed
            // (a lost race, a cut request) is published by the retry.
            _ = try await rotateCRL()
            return .data(["revocation_time": Int(time.timeIntervalSince1970), "revocation_time_rfc3339": VaultTime.format(ms: Int64(time.timeIntervalSince1970 * 1000))])
        }
        let time = result.revocationTime.map { Int($0.timeIntervalSince1970) } ?? 0
        return .data(["revocation_time": time], warnings: result.warnings.isEmpty ? nil : result.warnings)
    }

    /// Deletes of every revocation and the last CRL (a new CA starts with none).
    var forgetRevocations: [TransactionOperation] {
        [.delete(Delete(.key(crlKey))), .delete(Delete(.prefix(space.subspace(["revoked"]).prefix)))]
    }

    /// Signs a new CRL of every unexpired revocation and keeps it (with the issuer's new CRL
    /// number), again on a lost race: two revocations at once both end up on the CRL.
    func rotateCRL() async throws -> PKICRL {
        for _ in 0..<8 {
            if let crl = try await rotateCRLOnce() { return crl }
        }
        throw SecretsError.unavailable("the CRL of \(mount.path)/ changed under this request 8 times in a row; try again")
    }

    func rotateCRLOnce() async throws -> PKICRL? {
        var (issuer, entry) = try await activeIssuer()
        var revocations: [PKIRevocation] = []
        var cursor: Bytes? = nil
        let revoked = space.subspace(["revoked"])
        repeat {
            let page = try await store.read(RangeRequest(.prefix(revoked.prefix), limit: 1000, continuation: cursor), consistency: .linearizable)
            for item in page.kvs { revocations.append(try PKICRLText.decode(try open(item))) }
            cursor = page.more ? page.continuation : nil
            guard revocations.count <= limits.pkiCRLEntriesMax * 2 else { break }
        } while cursor != nil
        let crl = try issuer.crl(revoked: revocations, now: now, limits: limits)
        // The expired are pruned from the index as well as from the list, a bounded number at a time.
        let expired = revocations.filter { $0.certificateNotAfter < now }.prefix(max(0, limits.batchKeysMax - 8))
            .map { TransactionOperation.delete(Delete(.key(revokedKey($0.serialNumber)))) }
        let result = try await store.transaction(
            Transaction(
                compares: [Self.unchanged(entry, issuerKey), context.mountHolds],
                success: [sealed(try issuer.encoded(), at: issuerKey), sealed(crl.der, at: crlKey)] + expired))
        return result.succeeded ? crl : nil
    }

    func listNames(_ subspace: Subspace) async throws -> [String] {
        var names: [String] = []
        var cursor: Bytes? = nil
        repeat {
            let page = try await store.read(RangeRequest(.prefix(subspace.prefix), limit: 1000, keysOnly: true, continuation: cursor), consistency: .linearizable)
            for item in page.kvs {
                if let tuple = try? subspace.unpack(item.key), case .string(let name)? = tuple.elements.first { names.append(name) }
            }
            guard names.count <= limits.secretsListKeysMax else {
                throw SecretsError.tooLarge("the listing passes secretsListKeysMax (\(limits.secretsListKeysMax)) names")
            }
            cursor = page.more ? page.continuation : nil
        } while cursor != nil
        return names
    }

    static func json(_ issued: PKIIssuedCertificate) -> [String: Any] {
        var data: [String: Any] = [
            "certificate": issued.certificatePEM, "issuing_ca": issued.issuingCAPEM, "ca_chain": issued.caChainPEM,
            "serial_number": issued.serialNumber.colonHex, "expiration": Int(issued.expiration.timeIntervalSince1970),
        ]
        if let key = issued.privateKeyPEM { data["private_key"] = key }
        if let type = issued.privateKeyType { data["private_key_type"] = type.rawValue }
        return data
    }

    static func json(_ role: PKIRole) -> [String: Any] {
        [
            "allowed_domains": role.allowedDomains, "allow_localhost": role.allowLocalhost, "allow_bare_domains": role.allowBareDomains,
            "allow_subdomains": role.allowSubdomains, "allow_glob_domains": role.allowGlobDomains,
            "allow_wildcard_certificates": role.allowWildcardCertificates, "allow_any_name": role.allowAnyName,
            "enforce_hostnames": role.enforceHostnames, "allow_ip_sans": role.allowIPSANs, "server_flag": role.serverFlag,
            "client_flag": role.clientFlag, "key_type": role.keyType.rawValue, "key_bits": role.keyBits, "key_usage": role.keyUsage,
            "ext_key_usage": role.extKeyUsage, "use_csr_common_name": role.useCSRCommonName, "use_csr_sans": role.useCSRSANs,
            "require_cn": role.requireCN, "ttl": Int(role.ttl?.components.seconds ?? 0), "max_ttl": Int(role.maxTTL?.components.seconds ?? 0),
        ]
    }

    static func document(pem: String, der: Bytes, _ format: PKICall.PKIFormat) -> VaultResponse {
        switch format {
        case .der: return VaultResponse(status: 200, body: der, contentType: "application/pkix-cert")
        case .pem: return VaultResponse(status: 200, body: Array(pem.utf8), contentType: "application/pem-certificate-chain")
        case .json: return .data(["certificate": pem])
        }
    }

    static func der(fromPEM pem: String) -> Bytes {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return Data(base64Encoded: body).map(Array.init) ?? []
    }
}

/// The CRL's PEM form and the revocation index's records.
enum PKICRLText {
    static func pem(_ der: Bytes) -> String {
        let text = Data(der).base64EncodedString()
        var lines: [String] = []
        var index = text.startIndex
        while index < text.endIndex {
            let end = text.index(index, offsetBy: 64, limitedBy: text.endIndex) ?? text.endIndex
            lines.append(String(text[index..<end]))
            index = end
        }
        return "-----BEGIN X509 CRL-----\n" + lines.joined(separator: "\n") + "\n-----END X509 CRL-----\n"
    }

    static func encode(_ revocation: PKIRevocation) -> Bytes {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeBytes(revocation.serialNumber.bytes)
        writer.writeVarint(signed: Int64(revocation.revocationTime.timeIntervalSince1970))
        writer.writeVarint(signed: Int64(revocation.certificateNotAfter.timeIntervalSince1970))
        return writer.bytes
    }

    static func decode(_ bytes: Bytes) throws(SecretsError) -> PKIRevocation {
        do {
            var reader = ByteReader(bytes)
            guard try reader.readByte() == 1, let serial = PKISerialNumber(bytes: try reader.readBytes(limit: PKISerialNumber.bytesMax)) else {
                throw SecretsError.internalError("a corrupt revocation record")
            }
            let time = Date(timeIntervalSince1970: Double(try reader.readSignedVarint()))
            let notAfter = Date(timeIntervalSince1970: Double(try reader.readSignedVarint()))
            try reader.expectEnd()
            return PKIRevocation(serialNumber: serial, revocationTime: time, certificateNotAfter: notAfter)
        } catch let error as SecretsError {
            throw error
        } catch {
            throw .internalError("a corrupt revocation record: \(error)")
        }
    }
}
