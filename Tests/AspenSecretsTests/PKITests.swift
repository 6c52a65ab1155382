import AspenCore
import AspenSecrets
import Foundation
import Testing

/// The PKI engine checked by the real `openssl`: chains verify, CRLs verify and revoke, keys are
/// the type asked for. Without `openssl` on PATH these tests fail (they never skip).
@Suite struct PKITests {
    // MARK: Chains

    @Test func rootIntermediateLeafChainVerifiesWithOpenSSL() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        let (root, intermediate) = try Self.rootAndIntermediate(now: now)
        let leaf = try intermediate.issue(role: Self.exampleRole, commonName: "www.example.com", altNames: ["api.example.com"], ipSANs: ["10.1.2.3"], now: now)
        #expect(leaf.caChainPEM == [try intermediate.certificatePEM(), try root.certificatePEM()])
        #expect(leaf.issuingCAPEM == (try intermediate.certificatePEM()))

        let rootFile = try openssl.write("root.pem", try root.certificatePEM())
        let intermediateFile = try openssl.write("int.pem", try intermediate.certificatePEM())
        let leafFile = try openssl.write("leaf.pem", leaf.certificatePEM)
        let verified = try openssl.run(["verify", "-CAfile", rootFile, "-untrusted", intermediateFile, leafFile])
        #expect(verified.status == 0, "openssl verify: \(verified.output)")
        #expect(verified.output.contains("leaf.pem: OK"))

        let intermediateText = try openssl.run(["x509", "-in", intermediateFile, "-noout", "-text"]).output
        #expect(intermediateText.contains("CA:TRUE, pathlen:0"), "\(intermediateText)")
        #expect(intermediateText.contains("Certificate Sign, CRL Sign"))
        let rootText = try openssl.run(["x509", "-in", rootFile, "-noout", "-text"]).output
        #expect(rootText.contains("CA:TRUE, pathlen:1"))
        #expect(root.keyType == .rsa && root.keyBits == 2048 && intermediate.keyType == .ec && intermediate.keyBits == 384)
        #expect(rootText.contains("rsaEncryption") && rootText.contains("Public-Key: (2048 bit)"), "\(rootText)")
        #expect(rootText.contains("X509v3 Subject Key Identifier") && rootText.contains("X509v3 Authority Key Identifier"))
        let leafText = try openssl.run(["x509", "-in", leafFile, "-noout", "-text"]).output
        for expected in [
            "DNS:api.example.com", "DNS:www.example.com", "IP Address:10.1.2.3", "TLS Web Server Authentication, TLS Web Client Authentication",
            "Digital Signature, Key Encipherment, Key Agreement", "Subject: CN = www.example.com", "Issuer: CN = Example Intermediate",
        ] {
            #expect(leafText.contains(expected), "the leaf lacks \(expected):\n\(leafText)")
        }
        #expect(!leafText.contains("CA:TRUE"))

        // Vault's serial format, and the serial openssl reads.
        let serial = leaf.serialNumber.colonHex
        #expect(serial.split(separator: ":").count == 20 && serial.allSatisfy { $0 == ":" || $0.isHexDigit && !$0.isUppercase }, "\(serial)")
        let opensslSerial = try openssl.run(["x509", "-in", leafFile, "-noout", "-serial"]).output
        #expect(opensslSerial.lowercased().contains("serial=" + serial.replacingOccurrences(of: ":", with: "")))
        #expect(leaf.record.serialNumber == leaf.serialNumber && leaf.record.revocationTime == nil)
    }

    @Test func anIntermediateMustMatchItsKeyAndBeACA() throws {
        let now = Date()
        let root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        var (pending, csr) = try PKIIssuer.generateIntermediateCSR(commonName: "Int", keyType: .ec)
        #expect(pending.isPending)
        #expect(throws: SecretsError.self) { try pending.issue(role: Self.exampleRole, commonName: "www.example.com", now: now) }
        let (_, otherCSR) = try PKIIssuer.generateIntermediateCSR(commonName: "Other", keyType: .ec)
        let other = try root.signIntermediate(csrPEM: otherCSR, ttl: .seconds(3600), now: now)
        #expect(throws: SecretsError.badRequest("public key of certificate does not match private key")) {
            try pending.setSigned(certificatePEM: other.certificatePEM)
        }
        let signed = try root.signIntermediate(csrPEM: csr, ttl: .seconds(3600), now: now)
        // The root's certificate alone is a CA, but not this key's.
        #expect(throws: SecretsError.self) { try pending.setSigned(certificatePEM: try root.certificatePEM()) }
        try pending.setSigned(certificatePEM: signed.certificatePEM + "\n" + (try root.certificatePEM()))
        #expect(!pending.isPending)
        #expect(try pending.caChainPEM().count == 2)

        // A CA with path length 0 cannot sign another CA (Vault's words).
        let (_, thirdCSR) = try PKIIssuer.generateIntermediateCSR(commonName: "Third", keyType: .ec)
        let rootAtZero = try PKIIssuer.generateRoot(commonName: "Root0", keyType: .ec, ttl: .seconds(86_400), maxPathLength: 0, now: now)
        #expect(throws: SecretsError.badRequest("signing certificate has a max path length of zero, and cannot issue further CA certificates")) {
            try rootAtZero.signIntermediate(csrPEM: thirdCSR, ttl: .seconds(3600), now: now)
        }
    }

    // MARK: Roles and names

    @Test func aDisallowedDomainIsRefusedInVaultsWords() throws {
        let now = Date()
        let root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        let role = Self.exampleRole
        #expect(throws: SecretsError.badRequest("common name www.evil.com not allowed by this role")) {
            try root.issue(role: role, commonName: "www.evil.com", now: now)
        }
        #expect(throws: SecretsError.badRequest("subject alternate name api.evil.com not allowed by this role")) {
            try root.issue(role: role, commonName: "www.example.com", altNames: ["api.evil.com"], now: now)
        }
        #expect(throws: SecretsError.badRequest("common name example.com not allowed by this role")) {
            try root.issue(role: role, commonName: "example.com", now: now)
        }
        #expect(throws: SecretsError.badRequest("subject alternate name not a host! is not a valid DNS name and cannot be included as a SAN")) {
            try root.issue(role: role, commonName: "www.example.com", altNames: ["not a host!"], now: now)
        }
        #expect(throws: SecretsError.badRequest("common name www.example.com.evil.com not allowed by this role")) {
            try root.issue(role: role, commonName: "www.example.com.evil.com", now: now)
        }
        var noIPs = role
        noIPs.allowIPSANs = false
        #expect(throws: SecretsError.badRequest("IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.1]")) {
            try root.issue(role: noIPs, commonName: "www.example.com", ipSANs: ["10.0.0.1"], now: now)
        }
        #expect(throws: SecretsError.badRequest("the value \"10.0.0.300\" is not a valid IP address")) {
            try root.issue(role: role, commonName: "www.example.com", ipSANs: ["10.0.0.300"], now: now)
        }
        var bare = role
        bare.allowBareDomains = true
        #expect(try root.issue(role: bare, commonName: "example.com", now: now).certificatePEM.hasPrefix("-----BEGIN CERTIFICATE-----"))
        var anyKey = role
        anyKey.keyType = .any
        #expect(throws: SecretsError.badRequest("role key type \"any\" not allowed for issuing certificates, only signing")) {
            try root.issue(role: anyKey, commonName: "www.example.com", now: now)
        }
    }

    @Test func roleNameRulesFollowVault() {
        var role = PKIRole()
        role.allowedDomains = ["example.com"]
        role.allowLocalhost = false
        #expect(role.firstDisallowedName(["www.example.com"]) == "www.example.com")  // subdomains are off by default
        role.allowSubdomains = true
        #expect(role.firstDisallowedName(["www.example.com", "a.b.example.com", "*.example.com", "x*.example.com"]) == nil)
        #expect(role.firstDisallowedName(["example.com"]) == "example.com")  // bare needs allow_bare_domains
        #expect(role.firstDisallowedName(["a.*.example.com"]) == "a.*.example.com")  // wildcard only leftmost
        #expect(role.firstDisallowedName(["**.example.com"]) == "**.example.com")
        #expect(role.firstDisallowedName(["badexample.com"]) == "badexample.com")
        #expect(role.firstDisallowedName(["under_score.example.com"]) == "under_score.example.com")  // enforce_hostnames
        #expect(role.firstDisallowedName(["user@mail.example.com"]) == nil)
        #expect(role.firstDisallowedName(["localhost"]) == "localhost")
        role.allowLocalhost = true
        #expect(role.firstDisallowedName(["localhost", "db.localhost"]) == nil)
        role.allowWildcardCertificates = false
        #expect(role.firstDisallowedName(["*.example.com"]) == "*.example.com")

        var glob = PKIRole()
        glob.allowedDomains = ["*.svc.internal"]
        glob.allowGlobDomains = true
        #expect(glob.firstDisallowedName(["api.ns.svc.internal"]) == nil)
        #expect(glob.firstDisallowedName(["svc.internal.evil.com"]) == "svc.internal.evil.com")

        var anything = PKIRole()
        anything.allowAnyName = true
        #expect(anything.firstDisallowedName(["whatever.test"]) == nil)
        #expect(anything.firstDisallowedName(["not a hostname"]) == "not a hostname")  // enforce_hostnames still applies
        anything.enforceHostnames = false
        #expect(anything.firstDisallowedName(["not a hostname"]) == nil)
    }

    @Test func roleValidationRefusesBadSettings() {
        var role = PKIRole()
        role.keyType = .ec
        role.keyBits = 224
        #expect(throws: SecretsError.badRequest("unsupported bit length for EC key: 224")) { try role.validate() }
        role = PKIRole()
        role.keyBits = 1024
        #expect(throws: SecretsError.badRequest("unsupported bit length for RSA key: 1024")) { try role.validate() }
        role = PKIRole()
        role.ttl = .seconds(7200)
        role.maxTTL = .seconds(3600)
        #expect(throws: SecretsError.badRequest("\"ttl\" value must be less than \"max_ttl\" value")) { try role.validate() }
        role = PKIRole()
        role.keyUsage = ["DigitalSignatur"]
        #expect(throws: SecretsError.self) { try role.validate() }
        #expect(throws: SecretsError.self) { try PKIIssuer.generateRoot(commonName: "", keyType: .ec, ttl: .seconds(60), now: Date()) }
        #expect(throws: SecretsError.self) { try PKIIssuer.generateRoot(commonName: "R", keyType: .any, ttl: .seconds(60), now: Date()) }
    }

    // MARK: Keys

    @Test func eachRoleKeyTypeGivesThatKeyType() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        // An EC CA issuing RSA keys: RSA stays RSA whatever the CA's type.
        let root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        let rootFile = try openssl.write("root.pem", try root.certificatePEM())
        let cases: [(PKIKeyType, Int, String, String, String)] = [
            (.rsa, 0, "-----BEGIN RSA PRIVATE KEY-----", "Private-Key: (2048 bit", "rsaEncryption"),
            (.rsa, 3072, "-----BEGIN RSA PRIVATE KEY-----", "Private-Key: (3072 bit", "rsaEncryption"),
            (.ec, 0, "-----BEGIN EC PRIVATE KEY-----", "prime256v1", "id-ecPublicKey"),
            (.ec, 384, "-----BEGIN EC PRIVATE KEY-----", "secp384r1", "id-ecPublicKey"),
            (.ed25519, 0, "-----BEGIN PRIVATE KEY-----", "ED25519 Private-Key", "ED25519"),
        ]
        for (index, (type, bits, header, keyText, certificateText)) in cases.enumerated() {
            var role = Self.exampleRole
            role.keyType = type
            role.keyBits = bits
            let issued = try root.issue(role: role, commonName: "k\(index).example.com", now: now)
            #expect(issued.privateKeyType == type)
            let key = try #require(issued.privateKeyPEM)
            #expect(key.hasPrefix(header), "\(type) key starts \(key.prefix(40))")
            let keyFile = try openssl.write("key\(index).pem", key)
            let certificateFile = try openssl.write("cert\(index).pem", issued.certificatePEM)
            let parsed = try openssl.run(["pkey", "-in", keyFile, "-noout", "-text"])
            #expect(parsed.status == 0 && parsed.output.contains(keyText), "\(type)/\(bits): \(parsed.output.prefix(200))")
            #expect(try openssl.run(["x509", "-in", certificateFile, "-noout", "-text"]).output.contains(certificateText))
            // The private key is the certificate's.
            let keyPublic = try openssl.run(["pkey", "-in", keyFile, "-pubout"]).output
            let certificatePublic = try openssl.run(["x509", "-in", certificateFile, "-noout", "-pubkey"]).output
            #expect(keyPublic == certificatePublic && keyPublic.contains("BEGIN PUBLIC KEY"))
            #expect(try openssl.run(["verify", "-CAfile", rootFile, certificateFile]).status == 0)
        }
        var role = Self.exampleRole
        role.keyType = .ec
        let pkcs8 = try root.issue(role: role, commonName: "p8.example.com", privateKeyFormat: .pkcs8, now: now)
        #expect(pkcs8.privateKeyPEM?.hasPrefix("-----BEGIN PRIVATE KEY-----") == true)
        #expect(try openssl.run(["pkey", "-in", try openssl.write("p8.pem", pkcs8.privateKeyPEM ?? ""), "-noout"]).status == 0)
    }

    // MARK: CSRs

    @Test func aCSRIsSignedUnderTheRolesRules() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        let root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .rsa, ttl: .seconds(86_400), now: now)
        let rootFile = try openssl.write("root.pem", try root.certificatePEM())
        let csrFile = openssl.path("req.pem")
        let made = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", openssl.path("req-key.pem"),
            "-subj", "/CN=api.example.com", "-addext", "subjectAltName=DNS:api.example.com,DNS:v2.api.example.com,IP:10.0.0.7", "-out", csrFile,
        ])
        #expect(made.status == 0, "\(made.output)")
        let csr = try String(contentsOfFile: csrFile, encoding: .utf8)

        var role = Self.exampleRole
        role.keyType = .ec
        let signed = try root.sign(role: role, csrPEM: csr, ttl: .seconds(3600), now: now)
        #expect(signed.privateKeyPEM == nil && signed.privateKeyType == nil)
        let certificateFile = try openssl.write("signed.pem", signed.certificatePEM)
        let verified = try openssl.run(["verify", "-CAfile", rootFile, certificateFile])
        #expect(verified.status == 0, "\(verified.output)")
        let text = try openssl.run(["x509", "-in", certificateFile, "-noout", "-text"]).output
        for expected in ["DNS:api.example.com", "DNS:v2.api.example.com", "IP Address:10.0.0.7", "Subject: CN = api.example.com", "sha256WithRSAEncryption"] {
            #expect(text.contains(expected), "the signed certificate lacks \(expected)")
        }
        let csrPublic = try openssl.run(["req", "-in", csrFile, "-noout", "-pubkey"]).output
        #expect(csrPublic == (try openssl.run(["x509", "-in", certificateFile, "-noout", "-pubkey"]).output))

        var rsaOnly = role
        rsaOnly.keyType = .rsa
        #expect(throws: SecretsError.badRequest("role requires keys of type rsa")) { try root.sign(role: rsaOnly, csrPEM: csr, now: now) }
        var bigEC = role
        bigEC.keyBits = 384
        #expect(throws: SecretsError.badRequest("role requires a minimum of a 384-bit key, but CSR's key is 256 bits")) {
            try root.sign(role: bigEC, csrPEM: csr, now: now)
        }
        var anyKey = role
        anyKey.keyType = .any
        #expect(try root.sign(role: anyKey, csrPEM: csr, now: now).serialNumber != signed.serialNumber)
        var narrow = role
        narrow.allowedDomains = ["api.example.com"]
        narrow.allowBareDomains = true
        narrow.allowSubdomains = false
        #expect(throws: SecretsError.badRequest("subject alternate name v2.api.example.com not allowed by this role")) {
            try root.sign(role: narrow, csrPEM: csr, now: now)
        }
        var noIPs = role
        noIPs.allowIPSANs = false
        #expect(throws: SecretsError.badRequest("IP Subject Alternative Names are not allowed in this role, but was provided some via CSR")) {
            try root.sign(role: noIPs, csrPEM: csr, now: now)
        }
        // A CSR whose signature does not match its content is refused.
        #expect(throws: SecretsError.badRequest("request signature invalid")) { try root.sign(role: role, csrPEM: try Self.tamperedSignature(csr), now: now) }
        #expect(throws: SecretsError.self) { try root.sign(role: role, csrPEM: "not a CSR", now: now) }
    }

    // MARK: TTLs

    @Test func ttlIsCutToMaxTTLAndHeldToTheIssuersExpiry() throws {
        let now = Date(timeIntervalSince1970: 1_900_000_000)
        var root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(100 * 86_400), now: now)
        var role = Self.exampleRole
        role.maxTTL = .seconds(3600)
        let cut = try root.issue(role: role, commonName: "www.example.com", ttl: .seconds(7200), now: now)
        #expect(cut.warnings == ["TTL \"2h0m0s\" is longer than permitted maxTTL \"1h0m0s\", so maxTTL is being used"])
        #expect(cut.expiration == now.addingTimeInterval(3600))
        role.maxTTL = nil
        role.ttl = .seconds(600)
        #expect(try root.issue(role: role, commonName: "www.example.com", now: now).expiration == now.addingTimeInterval(600))
        role.ttl = nil
        #expect(try root.issue(role: role, commonName: "www.example.com", now: now).expiration == now.addingTimeInterval(768 * 3600))

        role.maxTTL = .seconds(365 * 86_400)
        #expect(throws: SecretsError.badRequest(
            "cannot satisfy request, as TTL would result in notAfter of 2030-10-03T17:46:40Z that is beyond the expiration of the CA certificate at 2030-06-25T17:46:40Z"
        )) {
            try root.issue(role: role, commonName: "www.example.com", ttl: .seconds(200 * 86_400), now: now)
        }
        root.leafNotAfterBehavior = .truncate
        let truncated = try root.issue(role: role, commonName: "www.example.com", ttl: .seconds(200 * 86_400), now: now)
        #expect(truncated.expiration == now.addingTimeInterval(100 * 86_400))
        #expect(throws: SecretsError.badRequest("notBefore before signer's notBefore")) {
            try root.issue(role: role, commonName: "www.example.com", now: now.addingTimeInterval(-3600))
        }
    }

    // MARK: Revocation and the CRL

    @Test func aRevokedLeafFailsTheCRLCheckAndAnotherPasses() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        let (root, chained) = try Self.rootAndIntermediate(now: now)
        var intermediate = chained
        let revokedLeaf = try intermediate.issue(role: Self.exampleRole, commonName: "gone.example.com", now: now)
        let keptLeaf = try intermediate.issue(role: Self.exampleRole, commonName: "kept.example.com", now: now)
        let revoked = try intermediate.revoke(serial: revokedLeaf.serialNumber.colonHex, record: revokedLeaf.record, now: now)
        #expect(revoked.revocationTime == Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down)))
        let entry = try #require(revoked.record.revocation)
        let crl = try intermediate.crl(revoked: [entry], now: now)
        #expect(crl.number == 1 && intermediate.crlNumber == 1)
        #expect(crl.serialNumbers == [revokedLeaf.serialNumber])
        #expect(crl.nextUpdate == crl.thisUpdate.addingTimeInterval(72 * 3600))

        let rootFile = try openssl.write("root.pem", try root.certificatePEM())
        let intermediateFile = try openssl.write("int.pem", try intermediate.certificatePEM())
        let crlFile = try openssl.write("crl.pem", crl.pem)
        let checked = try openssl.run(["crl", "-in", crlFile, "-CAfile", intermediateFile, "-noout", "-verify"])
        #expect(checked.status == 0 && checked.output.contains("verify OK"), "openssl crl -verify: \(checked.output)")
        // Signed by the intermediate, the CRL does not verify against the root's key.
        let wrongKey = try openssl.run(["crl", "-in", crlFile, "-CAfile", rootFile, "-noout", "-verify"])
        #expect(wrongKey.status != 0 || !wrongKey.output.contains("verify OK"), "\(wrongKey.output)")
        let text = try openssl.run(["crl", "-in", crlFile, "-noout", "-text"]).output
        let listed = revokedLeaf.serialNumber.colonHex.replacingOccurrences(of: ":", with: "").uppercased()
        for expected in ["Version 2 (0x1)", "Issuer: CN = Example Intermediate", "X509v3 CRL Number", "X509v3 Authority Key Identifier", listed] {
            #expect(text.contains(expected), "the CRL lacks \(expected):\n\(text)")
        }
        #expect(!text.contains(keptLeaf.serialNumber.colonHex.replacingOccurrences(of: ":", with: "").uppercased()))

        let revokedFile = try openssl.write("revoked.pem", revokedLeaf.certificatePEM)
        let keptFile = try openssl.write("kept.pem", keptLeaf.certificatePEM)
        let failing = try openssl.run(["verify", "-crl_check", "-CAfile", rootFile, "-untrusted", intermediateFile, "-CRLfile", crlFile, revokedFile])
        #expect(failing.status != 0 && failing.output.contains("certificate revoked"), "\(failing.output)")
        let passing = try openssl.run(["verify", "-crl_check", "-CAfile", rootFile, "-untrusted", intermediateFile, "-CRLfile", crlFile, keptFile])
        #expect(passing.status == 0 && passing.output.contains("kept.pem: OK"), "\(passing.output)")

        // The next CRL counts on.
        #expect(try intermediate.crl(revoked: [entry], now: now).number == 2)
    }

    @Test func crlsSignedByEveryKeyTypeVerify() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        for (type, bits) in [(PKIKeyType.rsa, 2048), (.ec, 256), (.ec, 384), (.ec, 521), (.ed25519, 0)] {
            var root = try PKIIssuer.generateRoot(commonName: "Root \(type) \(bits)", keyType: type, keyBits: bits, ttl: .seconds(86_400), now: now)
            let leaf = try root.issue(role: Self.exampleRole, commonName: "www.example.com", now: now)
            let revoked = try root.revoke(serial: leaf.serialNumber.hyphenHex, record: leaf.record, now: now)
            let empty = try root.crl(revoked: [], now: now)
            let full = try root.crl(revoked: [try #require(revoked.record.revocation)], now: now)
            let rootFile = try openssl.write("root-\(type)-\(bits).pem", try root.certificatePEM())
            for (name, crl) in [("empty", empty), ("full", full)] {
                let crlFile = try openssl.write("crl-\(type)-\(bits)-\(name).pem", crl.pem)
                let checked = try openssl.run(["crl", "-in", crlFile, "-CAfile", rootFile, "-noout", "-verify"])
                #expect(checked.status == 0 && checked.output.contains("verify OK"), "\(type)-\(bits) \(name) CRL: \(checked.output)")
            }
            let leafFile = try openssl.write("leaf-\(type)-\(bits).pem", leaf.certificatePEM)
            let crlFile = openssl.path("crl-\(type)-\(bits)-full.pem")
            let failing = try openssl.run(["verify", "-crl_check", "-CAfile", rootFile, "-CRLfile", crlFile, leafFile])
            #expect(failing.status != 0 && failing.output.contains("certificate revoked"), "\(type)-\(bits): \(failing.output)")
        }
    }

    @Test func anExpiredCertificateIsPrunedFromTheCRL() throws {
        let openssl = try PKIOpenSSL()
        let now = Date()
        var root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        let shortLived = try root.issue(role: Self.exampleRole, commonName: "short.example.com", ttl: .seconds(60), now: now)
        let longLived = try root.issue(role: Self.exampleRole, commonName: "long.example.com", ttl: .seconds(7200), now: now)
        let entries = try [shortLived, longLived].map { issued in
            try #require(try root.revoke(serial: issued.serialNumber.colonHex, record: issued.record, now: now).record.revocation)
        }
        #expect(try root.crl(revoked: entries, now: now).serialNumbers.count == 2)
        let later = try root.crl(revoked: entries, now: now.addingTimeInterval(3600))
        #expect(later.serialNumbers == [longLived.serialNumber])
        let evenLater = try root.crl(revoked: entries, now: now.addingTimeInterval(3 * 3600))
        #expect(evenLater.serialNumbers.isEmpty)
        let text = try openssl.run(["crl", "-in", try openssl.write("pruned.pem", evenLater.pem), "-noout", "-text"]).output
        #expect(text.contains("No Revoked Certificates"), "\(text)")
        let laterText = try openssl.run(["crl", "-in", try openssl.write("later.pem", later.pem), "-noout", "-text"]).output
        #expect(!laterText.contains(shortLived.serialNumber.colonHex.replacingOccurrences(of: ":", with: "").uppercased()))
        #expect(laterText.contains(longLived.serialNumber.colonHex.replacingOccurrences(of: ":", with: "").uppercased()))
    }

    @Test func revocationFollowsVault() throws {
        let now = Date(timeIntervalSince1970: 1_900_000_000)
        let root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        let leaf = try root.issue(role: Self.exampleRole, commonName: "www.example.com", ttl: .seconds(3600), now: now)
        let first = try root.revoke(serial: leaf.serialNumber.colonHex.uppercased(), record: leaf.record, now: now)
        #expect(first.revocationTime == now && first.warnings.isEmpty)
        let again = try root.revoke(serial: leaf.serialNumber.hyphenHex, record: first.record, now: now.addingTimeInterval(60))
        #expect(again.revocationTime == now && again.record == first.record)
        let expired = try root.revoke(serial: leaf.serialNumber.colonHex, record: leaf.record, now: now.addingTimeInterval(7200))
        #expect(expired.revocationTime == nil && expired.record == leaf.record)
        #expect(expired.warnings == ["certificate with serial \(leaf.serialNumber.colonHex) already expired; refusing to add to CRL"])
        let own = try #require(root.serialNumber)
        #expect(throws: SecretsError.self) { try root.revoke(serial: own.colonHex, record: leaf.record, now: now) }
        #expect(throws: SecretsError.badRequest("certificate with serial 01:02 not found")) { try root.revoke(serial: "01-02", record: nil, now: now) }
        #expect(throws: SecretsError.self) { try root.revoke(serial: "zz:01", record: leaf.record, now: now) }
    }

    @Test func theCRLIsBoundedByPkiCRLEntriesMax() throws {
        let now = Date()
        var root = try PKIIssuer.generateRoot(commonName: "Root", keyType: .ec, ttl: .seconds(86_400), now: now)
        var limits = Limits()
        limits.pkiCRLEntriesMax = 2
        let entries = (1...3).map { index in
            PKIRevocation(serialNumber: PKISerialNumber(bytes: [UInt8(index)])!, revocationTime: now, certificateNotAfter: now.addingTimeInterval(60))
        }
        #expect(throws: SecretsError.tooLarge("the CRL would list 3 certificates, more than pkiCRLEntriesMax (2)")) {
            try root.crl(revoked: entries, now: now, limits: limits)
        }
        #expect(root.crlNumber == 0)
        // A serial listed twice counts once.
        #expect(try root.crl(revoked: [entries[0], entries[0], entries[1]], now: now, limits: limits).serialNumbers.count == 2)
    }

    // MARK: Records

    @Test func recordsRoundTrip() throws {
        let now = Date()
        var role = Self.exampleRole
        role.ttl = .seconds(600)
        role.maxTTL = .seconds(7200)
        role.keyType = .ec
        role.keyBits = 384
        role.allowGlobDomains = true
        role.serverFlag = false
        role.extKeyUsage = ["CodeSigning"]
        role.notBeforeDuration = .seconds(90)
        #expect(try PKIRole(decoding: role.encoded()) == role)
        #expect(try PKIRole(decoding: PKIRole().encoded()) == PKIRole())

        let (generatedRoot, intermediate) = try Self.rootAndIntermediate(now: now)
        var root = generatedRoot
        root.leafNotAfterBehavior = .truncate
        _ = try root.crl(revoked: [], now: now)
        let decodedRoot = try PKIIssuer(decoding: try root.encoded())
        #expect(decodedRoot == root && decodedRoot.crlNumber == 1 && decodedRoot.leafNotAfterBehavior == .truncate)
        #expect(try PKIIssuer(decoding: try intermediate.encoded()) == intermediate)
        let (pending, _) = try PKIIssuer.generateIntermediateCSR(commonName: "Pending", keyType: .ed25519)
        #expect(try PKIIssuer(decoding: try pending.encoded()) == pending)
        // A decoded issuer still signs, with the same key.
        let leaf = try PKIIssuer(decoding: try intermediate.encoded()).issue(role: Self.exampleRole, commonName: "www.example.com", now: now)
        let openssl = try PKIOpenSSL()
        let verified = try openssl.run([
            "verify", "-CAfile", try openssl.write("root.pem", try root.certificatePEM()), "-untrusted",
            try openssl.write("int.pem", try intermediate.certificatePEM()), try openssl.write("leaf.pem", leaf.certificatePEM),
        ])
        #expect(verified.status == 0, "\(verified.output)")

        let record = leaf.record
        #expect(try PKICertificateRecord(decoding: record.encoded()) == record)
        let revoked = try intermediate.revoke(serial: leaf.serialNumber.colonHex, record: record, now: now).record
        #expect(try PKICertificateRecord(decoding: revoked.encoded()) == revoked)
        #expect(try PKICertificateRecord(decoding: revoked.encoded()).certificatePEM == leaf.certificatePEM)
    }

    @Test func corruptedRecordsAreRefused() throws {
        let now = Date()
        let (_, intermediate) = try Self.rootAndIntermediate(now: now)
        let leaf = try intermediate.issue(role: Self.exampleRole, commonName: "www.example.com", now: now)
        let revoked = try intermediate.revoke(serial: leaf.serialNumber.colonHex, record: leaf.record, now: now).record
        let encodings: [(String, [UInt8], ([UInt8]) throws -> Void)] = [
            ("role", Self.exampleRole.encoded(), { _ = try PKIRole(decoding: $0) }),
            ("issuer", try intermediate.encoded(), { _ = try PKIIssuer(decoding: $0) }),
            ("certificate", revoked.encoded(), { _ = try PKICertificateRecord(decoding: $0) }),
        ]
        for (name, bytes, decode) in encodings {
            for length in 0..<bytes.count {
                #expect(throws: SecretsError.self, "\(name) cut to \(length) bytes") { try decode(Array(bytes.prefix(length))) }
            }
            #expect(throws: SecretsError.self, "\(name) with a trailing byte") { try decode(bytes + [0]) }
            var otherVersion = bytes
            otherVersion[0] = 0x7F
            #expect(throws: SecretsError.self, "\(name) of another version") { try decode(otherVersion) }
        }
        // A role whose stored settings are invalid is refused like a bad request.
        var badRole = Self.exampleRole.encoded()
        let keyTypeAt = try #require(Self.range(of: [2] + Array("ec".utf8), in: badRole))
        badRole.replaceSubrange(keyTypeAt, with: [2] + Array("dh".utf8))
        #expect(throws: SecretsError.self) { try PKIRole(decoding: badRole) }
        var badBits = Self.exampleRole
        badBits.keyBits = 384
        var badBitsBytes = badBits.encoded()
        let bitsAt = try #require(Self.range(of: [2] + Array("ec".utf8) + [0x80, 0x06], in: badBitsBytes))
        badBitsBytes[bitsAt.upperBound - 2] = 0x82  // 384 → 385 bits (zig-zag varint), which no curve has
        #expect(throws: SecretsError.self) { try PKIRole(decoding: badBitsBytes) }
        // An issuer whose certificate is not its key's.
        let (other, _) = try PKIIssuer.generateIntermediateCSR(commonName: "Other", keyType: .ec)
        #expect(throws: SecretsError.self) {
            try PKIIssuer(decoding: Self.swapKey(of: try intermediate.encoded(), with: try other.encoded()))
        }

        // Random damage never crashes a decoder (seeded: the seed prints on failure).
        let seed = UInt64(Date().timeIntervalSince1970 * 1000)
        var generator = SplitMix64(seed: seed)
        for (name, bytes, decode) in encodings {
            for _ in 0..<300 {
                var damaged = bytes
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    let index = Int.random(in: 0..<damaged.count, using: &generator)
                    damaged[index] ^= UInt8.random(in: 1...255, using: &generator)
                }
                do { try decode(damaged) } catch is SecretsError {} catch {
                    Issue.record("\(name) decoder threw a non-SecretsError \(error) (seed \(seed))")
                }
            }
        }
    }

    // MARK: Helpers

    /// A role for `example.com` and names under it.
    static var exampleRole: PKIRole {
        var role = PKIRole()
        role.allowedDomains = ["example.com"]
        role.allowSubdomains = true
        role.keyType = .ec
        role.ttl = .seconds(3600)
        return role
    }

    /// An RSA root with path length 1, and an EC intermediate it signed (path length 0).
    static func rootAndIntermediate(now: Date) throws -> (PKIIssuer, PKIIssuer) {
        let root = try PKIIssuer.generateRoot(
            commonName: "Example Root", keyType: .rsa, ttl: .seconds(30 * 86_400), maxPathLength: 1, now: now)
        var (intermediate, csr) = try PKIIssuer.generateIntermediateCSR(commonName: "Example Intermediate", keyType: .ec, keyBits: 384)
        let signed = try root.signIntermediate(csrPEM: csr, ttl: .seconds(10 * 86_400), now: now)
        try intermediate.setSigned(certificatePEM: signed.certificatePEM + "\n" + (try root.certificatePEM()))
        return (root, intermediate)
    }

    /// `pem` with the last byte of its DER (inside the signature) changed.
    static func tamperedSignature(_ pem: String) throws -> String {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        var der = try #require(Data(base64Encoded: body))
        der[der.count - 1] ^= 0x01
        let lines = stride(from: 0, to: der.base64EncodedString().count, by: 64).map { offset in
            let text = der.base64EncodedString()
            let start = text.index(text.startIndex, offsetBy: offset)
            return String(text[start..<(text.index(start, offsetBy: 64, limitedBy: text.endIndex) ?? text.endIndex)])
        }
        return (["-----BEGIN CERTIFICATE REQUEST-----"] + lines + ["-----END CERTIFICATE REQUEST-----"]).joined(separator: "\n")
    }

    static func range(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
        guard needle.count <= haystack.count else { return nil }
        for start in 0...(haystack.count - needle.count) where Array(haystack[start..<start + needle.count]) == needle {
            return start..<start + needle.count
        }
        return nil
    }

    /// An issuer record with its key bytes replaced by another record's (same layout: version,
    /// then the key as a length-prefixed field).
    static func swapKey(of record: [UInt8], with donor: [UInt8]) throws -> [UInt8] {
        func keyField(_ bytes: [UInt8]) throws -> Range<Int> {
            var length = 0
            var shift = 0
            var index = 1
            while true {
                let byte = bytes[index]
                length |= Int(byte & 0x7F) << shift
                index += 1
                if byte < 0x80 { break }
                shift += 7
            }
            return 1..<(index + length)
        }
        var swapped = record
        swapped.replaceSubrange(try keyField(record), with: donor[try keyField(donor)])
        return swapped
    }
}

/// The real `openssl`, run in a fresh temporary directory that goes when the value does.
final class PKIOpenSSL {
    let executable: String
    let directory: URL

    /// Finds `openssl` on PATH; a test that needs it fails here, with a message, when it is missing.
    init() throws {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") + ["/usr/bin", "/usr/local/bin"]
        let found = paths.map { "\($0)/openssl" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        executable = try #require(found, "openssl was not found on PATH: the PKI tests check certificates with the real openssl; install it")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Writes `text` (with a final newline) and returns its path.
    func write(_ name: String, _ text: String) throws -> String {
        try (text.hasSuffix("\n") ? text : text + "\n").write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    /// Runs openssl with `arguments`; its exit status and its stdout and stderr, together.
    func run(_ arguments: [String]) throws -> (status: Int32, output: String) { try runProgram(executable, arguments, in: directory) }
}

