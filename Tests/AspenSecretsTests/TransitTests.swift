import AspenCore
import AspenSecrets
import Crypto
import Foundation
import Testing

/// The transit engine's pure core (TransitKey): Vault's formats and messages, checked against an
/// independent implementation (known answers made with Python's `cryptography`) and the real
/// `openssl`. Without `openssl` on PATH the tests that need it fail, with a message; they never skip.
@Suite struct TransitTests {
    static let nowMs: Int64 = 1_700_000_000_000
    static let message = Array("hello transit".utf8)
    static let context = Array("tenant-7".utf8)

    // MARK: Known answers

    @Test func aeadCiphertextsFromAnotherImplementationDecrypt() throws {
        let aes256 = try Self.keyWithMaterial(type: .aes256GCM96, tag: 0, material: Array(0..<32))
        #expect(try aes256.decrypt(ciphertext: TransitVectors.aes256) == Self.message)
        let aes128 = try Self.keyWithMaterial(type: .aes128GCM96, tag: 8, material: Array(0..<16))
        #expect(try aes128.decrypt(ciphertext: TransitVectors.aes128) == Self.message)
        let chacha = try Self.keyWithMaterial(type: .chacha20Poly1305, tag: 5, material: Array(0..<32))
        #expect(try chacha.decrypt(ciphertext: TransitVectors.chacha) == Self.message)

        // Derived: HKDF-SHA256(key, no salt, info = context), with associated data.
        let derived = try Self.keyWithMaterial(type: .aes256GCM96, tag: 0, flags: 1, material: Array(0..<32))
        #expect(try derived.decrypt(ciphertext: TransitVectors.aes256DerivedWithAD, context: Self.context, associatedData: Array("row-42".utf8)) == Self.message)
        #expect(throws: SecretsError.badRequest("cipher: message authentication failed")) {
            try derived.decrypt(ciphertext: TransitVectors.aes256DerivedWithAD, context: Array("tenant-8".utf8), associatedData: Array("row-42".utf8))
        }

        // Convergent (Vault's version 3): the nonce is HMAC(derived HMAC key, plaintext), so the
        // ciphertext is exactly the other implementation's.
        let convergent = try Self.keyWithMaterial(type: .aes256GCM96, tag: 0, flags: 1 | 2, material: Array(0..<32))
        #expect(try convergent.encrypt(plaintext: Self.message, context: Self.context) == TransitVectors.convergent)
        #expect(try convergent.decrypt(ciphertext: TransitVectors.convergent, context: Self.context) == Self.message)
    }

    @Test func ed25519SignaturesMatchAnotherImplementation() throws {
        let material = try #require(Data(base64Encoded: TransitVectors.ed25519Material))
        let key = try Self.keyWithMaterial(type: .ed25519, tag: 2, flags: 4, material: Array(material))
        // Ed25519 is deterministic: the signature is exactly the other implementation's.
        #expect(try key.sign(input: Self.message).signature == TransitVectors.ed25519Signature)
        #expect(try key.verify(input: Self.message, signature: TransitVectors.ed25519Signature))
        #expect(try key.publicKeys() == [1: TransitVectors.ed25519Public])
        #expect(try key.exportKey(type: .signingKey) == [1: TransitVectors.ed25519Material])
        #expect(try key.exportKey(type: .publicKey, version: "latest") == [1: TransitVectors.ed25519Public])

        // Derived: the seed is HKDF-SHA256(seed ‖ public, info = context), as Vault feeds it to
        // ed25519.GenerateKey; the derived public key comes back with the signature.
        let derived = try Self.keyWithMaterial(type: .ed25519, tag: 2, flags: 1, material: Array(material))
        let signed = try derived.sign(input: Self.message, context: Self.context)
        #expect(signed.signature == TransitVectors.ed25519DerivedSignature)
        #expect(signed.publicKey.map { Data($0).base64EncodedString() } == TransitVectors.ed25519DerivedPublic)
        #expect(try derived.publicKeys(context: Self.context) == [1: TransitVectors.ed25519DerivedPublic])
        #expect(try derived.publicKeys() == [1: ""])
        #expect(try derived.verify(input: Self.message, signature: signed.signature, context: Self.context))
        #expect(try !derived.verify(input: Self.message, signature: signed.signature, context: Array("tenant-8".utf8)))
    }

    @Test func ecdsaKeysMatchAnotherImplementation() throws {
        let scalar = try #require(Data(base64Encoded: TransitVectors.p256Scalar))
        let key = try Self.keyWithMaterial(type: .ecdsaP256, tag: 1, flags: 4, material: Array(scalar))
        #expect(try key.verify(input: Self.message, signature: TransitVectors.p256Signature))
        #expect(try key.verify(input: Self.message, signature: TransitVectors.p256SignatureJWS, marshaling: .jws))
        #expect(try !key.verify(input: Array("hello transit!".utf8), signature: TransitVectors.p256Signature))
        // The key read lists the PEM as Vault stores it (with its final newline); export trims it.
        #expect(try key.publicKeys() == [1: TransitVectors.p256PublicPEM])
        #expect(try key.exportKey(type: .publicKey) == [1: Self.trimmed(TransitVectors.p256PublicPEM)])
        #expect(try key.exportKey(type: .signingKey, version: "v1") == [1: Self.trimmed(TransitVectors.p256PrivatePEM)])
    }

    @Test func rsaKeysMatchAnotherImplementation() throws {
        let der = try #require(Data(base64Encoded: TransitVectors.rsaPKCS1DER))
        let key = try Self.keyWithMaterial(type: .rsa2048, tag: 3, flags: 4, material: Array(der))
        #expect(try key.decrypt(ciphertext: TransitVectors.rsaOAEPCiphertext) == Self.message)
        // PKCS #1 v1.5 signatures are deterministic.
        #expect(try key.sign(input: Self.message, signatureAlgorithm: .pkcs1v15).signature == TransitVectors.rsaPKCS1Signature)
        #expect(try key.verify(input: Self.message, signature: TransitVectors.rsaPKCS1Signature, signatureAlgorithm: .pkcs1v15))
        // PSS: Vault verifies whatever salt length the signature carries ("auto").
        #expect(try key.verify(input: Self.message, signature: TransitVectors.rsaPSSMaxSaltSignature))
        #expect(try key.verify(input: Self.message, signature: TransitVectors.rsaPSSHashSaltSignature))
        #expect(try key.verify(input: Self.message, signature: TransitVectors.rsaPSSHashSaltSignature, saltLength: .hash))
        #expect(try !key.verify(input: Self.message, signature: TransitVectors.rsaPSSMaxSaltSignature, saltLength: .hash))
        #expect(try key.verify(input: Self.message, signature: TransitVectors.rsaPSSSHA512Signature, hashAlgorithm: .sha512))
        #expect(try !key.verify(input: Self.message, signature: TransitVectors.rsaPSSSHA512Signature))
        #expect(try !key.verify(input: Array("hello transit!".utf8), signature: TransitVectors.rsaPSSMaxSaltSignature))
        #expect(try key.publicKeys() == [1: TransitVectors.rsaPublicPEM])
        #expect(try key.exportKey(type: .publicKey) == [1: TransitVectors.rsaPublicPEM])
        #expect(try key.exportKey(type: .encryptionKey) == [1: TransitVectors.rsaPrivatePEM])
        #expect(try key.exportKey(type: .signingKey) == [1: TransitVectors.rsaPrivatePEM])
    }

    // MARK: Round trips

    @Test(arguments: [TransitKeyType.aes128GCM96, .aes256GCM96, .chacha20Poly1305])
    func aeadKeysRoundTrip(type: TransitKeyType) throws {
        let key = try TransitKey.create(name: "orders", type: type, nowMs: Self.nowMs)
        let ciphertext = try key.encrypt(plaintext: Self.message)
        #expect(ciphertext.hasPrefix("vault:v1:"))
        let payload = try #require(Data(base64Encoded: String(ciphertext.dropFirst("vault:v1:".count))))
        #expect(payload.count == 12 + Self.message.count + 16, "nonce ‖ ciphertext ‖ tag")
        #expect(try key.decrypt(ciphertext: ciphertext) == Self.message)
        #expect(try key.encrypt(plaintext: Self.message) != ciphertext, "a fresh random nonce each time")
        #expect(try key.decrypt(ciphertext: key.encrypt(plaintext: [])) == [])
        let big = Array(repeating: UInt8(0x5A), count: 100_000)
        #expect(try key.decrypt(ciphertext: key.encrypt(plaintext: big)) == big)
        let associated = Array("row-42".utf8)
        #expect(try key.decrypt(ciphertext: key.encrypt(plaintext: Self.message, associatedData: associated), associatedData: associated) == Self.message)
        // A non-derived key ignores a context, as Vault does.
        #expect(try key.decrypt(ciphertext: key.encrypt(plaintext: Self.message, context: Self.context)) == Self.message)
        #expect(throws: SecretsError.badRequest("key type \(type.vaultName) does not support signing")) { try key.sign(input: Self.message) }
        #expect(try key.publicKeys().isEmpty)
    }

    @Test(arguments: [TransitKeyType.rsa2048, .rsa3072, .rsa4096])
    func rsaKeysRoundTrip(type: TransitKeyType) throws {
        let key = try TransitKey.create(name: "payroll", type: type, nowMs: Self.nowMs)
        let ciphertext = try key.encrypt(plaintext: Self.message)
        let payload = try #require(Data(base64Encoded: String(ciphertext.dropFirst("vault:v1:".count))))
        #expect(payload.count == Self.rsaBits(type) / 8)
        #expect(try key.decrypt(ciphertext: ciphertext) == Self.message)
        let legacy = try key.encrypt(plaintext: Self.message, paddingScheme: "pkcs1v15")
        #expect(try key.decrypt(ciphertext: legacy, paddingScheme: "pkcs1v15") == Self.message)
        #expect(throws: SecretsError.badRequest("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error")) {
            try key.decrypt(ciphertext: legacy)
        }
        #expect(throws: SecretsError.badRequest("'[0].associated_data' provided for non-AEAD cipher suite \(type.vaultName)")) {
            try key.encrypt(plaintext: Self.message, associatedData: [1])
        }
        for algorithm in [TransitSignatureAlgorithm.pss, .pkcs1v15] {
            let signature = try key.sign(input: Self.message, signatureAlgorithm: algorithm).signature
            #expect(try key.verify(input: Self.message, signature: signature, signatureAlgorithm: algorithm))
            #expect(try !key.verify(input: Array("hello transit!".utf8), signature: signature, signatureAlgorithm: algorithm))
        }
        let hashSalt = try key.sign(input: Self.message, hashAlgorithm: .sha384, saltLength: .hash).signature
        #expect(try key.verify(input: Self.message, signature: hashSalt, hashAlgorithm: .sha384, saltLength: .hash))
        #expect(try key.publicKeys()[1]?.hasPrefix("-----BEGIN PUBLIC KEY-----\n") == true)
    }

    @Test(arguments: [TransitKeyType.ed25519, .ecdsaP256, .ecdsaP384, .ecdsaP521])
    func signingKeysRoundTrip(type: TransitKeyType) throws {
        let key = try TransitKey.create(name: "releases", type: type, nowMs: Self.nowMs)
        for marshaling in [TransitMarshaling.asn1, .jws] {
            let signed = try key.sign(input: Self.message, marshaling: marshaling)
            #expect(signed.signature.hasPrefix("vault:v1:") && signed.keyVersion == 1 && signed.publicKey == nil)
            #expect(try key.verify(input: Self.message, signature: signed.signature, marshaling: marshaling))
            #expect(try !key.verify(input: Array("hello transit!".utf8), signature: signed.signature, marshaling: marshaling))
        }
        if type.isECDSA {
            let jws = try key.sign(input: Self.message, marshaling: .jws).signature
            let raw = try #require(Self.rawURLDecode(String(jws.dropFirst("vault:v1:".count))))
            #expect(raw.count == 2 * [TransitKeyType.ecdsaP256: 32, .ecdsaP384: 48, .ecdsaP521: 66][type, default: 0])
            let prehashed = Array(repeating: UInt8(7), count: 32)
            let signature = try key.sign(input: prehashed, prehashed: true).signature
            #expect(try key.verify(input: prehashed, signature: signature, prehashed: true))
        }
        #expect(throws: SecretsError.badRequest("message encryption not supported for key type \(type.vaultName)")) {
            try key.encrypt(plaintext: Self.message)
        }
        #expect(throws: SecretsError.badRequest("message decryption not supported for key type \(type.vaultName)")) {
            try key.decrypt(ciphertext: "vault:v1:AAAA")
        }
    }

    // MARK: Rotation and the version floors

    @Test func rotationKeepsOldCiphertextsReadableAndRewrapMovesThemForward() throws {
        var key = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        let first = try key.encrypt(plaintext: Self.message)
        try key.rotate(nowMs: Self.nowMs + 1000)
        #expect(key.latestVersion == 2 && key.versions[2]?.creationTimeMs == Self.nowMs + 1000)
        #expect(try key.decrypt(ciphertext: first) == Self.message)
        let second = try key.encrypt(plaintext: Self.message)
        #expect(second.hasPrefix("vault:v2:"))
        #expect(try key.encrypt(plaintext: Self.message, keyVersion: 1).hasPrefix("vault:v1:"))
        let rewrapped = try key.rewrap(ciphertext: first)
        #expect(rewrapped.hasPrefix("vault:v2:"))
        #expect(try key.decrypt(ciphertext: rewrapped) == Self.message)
        #expect(TransitKey.versionOf(ciphertext: first) == 1 && TransitKey.versionOf(ciphertext: rewrapped) == 2)
        #expect(TransitKey.versionOf(ciphertext: "vault:v0:AAAA") == 1)
        #expect(TransitKey.versionOf(ciphertext: "nonsense") == nil && TransitKey.versionOf(ciphertext: "vault:vx:AA") == nil)
        // Vault's "vault:v0:" is the first key.
        #expect(try key.decrypt(ciphertext: "vault:v0:" + first.dropFirst("vault:v1:".count)) == Self.message)
        #expect(throws: SecretsError.badRequest("requested version for encryption is higher than the latest key version")) {
            try key.encrypt(plaintext: Self.message, keyVersion: 3)
        }
        #expect(throws: SecretsError.badRequest("requested version for encryption is negative")) {
            try key.encrypt(plaintext: Self.message, keyVersion: -1)
        }
        #expect(!key.isDueForAutoRotation(nowMs: Self.nowMs + 10_000_000))
        try key.configure(autoRotatePeriodMs: 3_600_000)
        #expect(!key.isDueForAutoRotation(nowMs: Self.nowMs + 1000 + 3_600_000))
        #expect(key.isDueForAutoRotation(nowMs: Self.nowMs + 1000 + 3_600_001))
    }

    @Test func minDecryptionVersionIsAFloorThatCanBeLoweredAgain() throws {
        var key = try TransitKey.create(name: "orders", type: .ed25519, nowMs: Self.nowMs)
        var aead = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        let oldSignature = try key.sign(input: Self.message).signature
        let oldCiphertext = try aead.encrypt(plaintext: Self.message)
        for _ in 0..<2 {
            try key.rotate(nowMs: Self.nowMs)
            try aead.rotate(nowMs: Self.nowMs)
        }
        try key.configure(minDecryptionVersion: 2)
        try aead.configure(minDecryptionVersion: 2)
        #expect(throws: SecretsError.badRequest("ciphertext or signature version is disallowed by policy (too old)")) {
            try aead.decrypt(ciphertext: oldCiphertext)
        }
        #expect(throws: SecretsError.badRequest("ciphertext or signature version is disallowed by policy (too old)")) {
            try key.verify(input: Self.message, signature: oldSignature)
        }
        #expect(throws: SecretsError.badRequest("no such key version")) { try key.sign(input: Self.message, keyVersion: 1) }
        #expect(try key.publicKeys().keys.sorted() == [2, 3])
        // Below the floor but not trimmed: lowering the floor brings the version back (Vault's archive).
        try aead.configure(minDecryptionVersion: 1)
        #expect(try aead.decrypt(ciphertext: oldCiphertext) == Self.message)
        #expect(try aead.configure(minDecryptionVersion: 0) == ["since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"])
        #expect(throws: SecretsError.badRequest("cannot set min decryption version of 4, latest key version is 3")) {
            try aead.configure(minDecryptionVersion: 4)
        }
        #expect(throws: SecretsError.badRequest("min decryption version cannot be negative")) { try aead.configure(minDecryptionVersion: -1) }
    }

    @Test func configureAndTrimFollowVaultsRules() throws {
        var key = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        for _ in 0..<4 { try key.rotate(nowMs: Self.nowMs) }
        let before = key
        #expect(
            throws: SecretsError.badRequest(
                "cannot set min encryption/decryption values; min encryption version of 2 must be greater than or equal to min decryption version of 3")
        ) { try key.configure(minDecryptionVersion: 3, minEncryptionVersion: 2) }
        #expect(key == before, "a refused change changes nothing")
        #expect(throws: SecretsError.badRequest("cannot set min encryption version of 6, latest key version is 5")) {
            try key.configure(minEncryptionVersion: 6)
        }
        #expect(throws: SecretsError.badRequest("auto rotate period must be 0 to disable or at least an hour")) {
            try key.configure(autoRotatePeriodMs: 60_000)
        }
        #expect(throws: SecretsError.badRequest("minimum available version cannot be set when minimum encryption version is not set")) {
            try key.trim(minAvailableVersion: 2)
        }
        try key.configure(minDecryptionVersion: 3, minEncryptionVersion: 4, deletionAllowed: true, exportable: true)
        #expect(key.deletionAllowed && key.exportable && key.minEncryptionVersion == 4)
        try key.configure(exportable: false)
        #expect(key.exportable, "exportable, once set, stays set")
        #expect(throws: SecretsError.badRequest("requested version for encryption is less than the minimum encryption key version")) {
            try key.encrypt(plaintext: Self.message, keyVersion: 3)
        }
        #expect(throws: SecretsError.badRequest("minimum available version cannot be greater than minimum decryption version")) {
            try key.trim(minAvailableVersion: 4)
        }
        #expect(throws: SecretsError.badRequest("minimum available version should be positive")) { try key.trim(minAvailableVersion: 0) }
        try key.trim(minAvailableVersion: 3)
        #expect(key.versions.keys.sorted() == [3, 4, 5] && key.minAvailableVersion == 3)
        #expect(throws: SecretsError.badRequest("minimum available version cannot be decremented")) { try key.trim(minAvailableVersion: 2) }
        #expect(throws: SecretsError.badRequest("min decryption version should not be less then min available version")) {
            try key.configure(minDecryptionVersion: 2)
        }
        #expect(throws: SecretsError.badRequest("min encryption version should not be less than min available version")) {
            try key.configure(minEncryptionVersion: 0)
        }
        // Trimmed versions are gone: below the floors, whatever the request.
        #expect(throws: SecretsError.badRequest("requested version for encryption is less than the minimum encryption key version")) {
            try key.encrypt(plaintext: Self.message, keyVersion: 2)
        }
        #expect(throws: SecretsError.badRequest("ciphertext or signature version is disallowed by policy (too old)")) {
            try key.decrypt(ciphertext: "vault:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        }
        #expect(key.versions[2] == nil && key.versions[1] == nil)
    }

    @Test func rotationStopsAtTheVersionBound() throws {
        var limits = Limits()
        limits.transitKeyVersionsMax = 3
        var key = try TransitKey.create(name: "orders", nowMs: Self.nowMs, limits: limits)
        try key.rotate(nowMs: Self.nowMs, limits: limits)
        try key.rotate(nowMs: Self.nowMs, limits: limits)
        #expect(throws: SecretsError.self) { try key.rotate(nowMs: Self.nowMs, limits: limits) }
        do {
            try key.rotate(nowMs: Self.nowMs, limits: limits)
        } catch {
            #expect(error.status == 413 && error.message.contains("transitKeyVersionsMax"), "\(error)")
        }
        try key.configure(minDecryptionVersion: 3, minEncryptionVersion: 3)
        try key.trim(minAvailableVersion: 3)
        try key.rotate(nowMs: Self.nowMs, limits: limits)
        #expect(key.latestVersion == 4)
    }

    // MARK: Tampering

    @Test func tamperedCiphertextsNeverOpen() throws {
        var key = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        let associated = Array("row-42".utf8)
        let ciphertext = try key.encrypt(plaintext: Self.message, associatedData: associated)
        let payload = Array(try #require(Data(base64Encoded: String(ciphertext.dropFirst("vault:v1:".count)))))
        let failed = "cipher: message authentication failed"
        func wrap(_ bytes: [UInt8], version: Int = 1) -> String { "vault:v\(version):" + Data(bytes).base64EncodedString() }

        // Every byte of nonce, ciphertext and tag, flipped.
        for index in payload.indices {
            var flipped = payload
            flipped[index] ^= 0x01
            Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(flipped), associatedData: associated) }
        }
        Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(Array(payload.dropLast())), associatedData: associated) }
        Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(Array(payload.dropLast(16))), associatedData: associated) }
        Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(Array(payload.prefix(20))), associatedData: associated) }
        Self.expectRefused("invalid ciphertext length") { try key.decrypt(ciphertext: wrap(Array(payload.prefix(11)))) }
        Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(payload + [0]), associatedData: associated) }
        // Wrong or missing associated data.
        Self.expectRefused(failed) { try key.decrypt(ciphertext: ciphertext, associatedData: Array("row-43".utf8)) }
        Self.expectRefused(failed) { try key.decrypt(ciphertext: ciphertext) }
        // Another key.
        let other = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        Self.expectRefused(failed) { try other.decrypt(ciphertext: ciphertext, associatedData: associated) }
        // The wrong version in the prefix: another version's key, or none at all.
        try key.rotate(nowMs: Self.nowMs)
        Self.expectRefused(failed) { try key.decrypt(ciphertext: wrap(payload, version: 2), associatedData: associated) }
        Self.expectRefused("invalid ciphertext: version is too new") { try key.decrypt(ciphertext: wrap(payload, version: 3)) }
        Self.expectRefused("ciphertext or signature version is disallowed by policy (too old)") {
            try key.decrypt(ciphertext: wrap(payload, version: -1))
        }
        // Malformed text.
        Self.expectRefused("invalid ciphertext: no prefix") { try key.decrypt(ciphertext: String(ciphertext.dropFirst(6))) }
        Self.expectRefused("invalid ciphertext: no prefix") { try key.decrypt(ciphertext: "VAULT:v1:" + ciphertext.dropFirst(9)) }
        Self.expectRefused("invalid ciphertext: wrong number of fields") { try key.decrypt(ciphertext: "vault:v1") }
        Self.expectRefused("invalid ciphertext: version number could not be decoded") { try key.decrypt(ciphertext: "vault:vone:AAAA") }
        Self.expectRefused("invalid ciphertext: could not decode base64") { try key.decrypt(ciphertext: ciphertext + "*") }
        Self.expectRefused("invalid ciphertext: could not decode base64") { try key.decrypt(ciphertext: String(ciphertext.dropLast())) }
        // Go's decoder skips newlines: a wrapped base64 line still opens.
        let wrapped = String(ciphertext.prefix(20)) + "\n" + String(ciphertext.dropFirst(20))
        #expect(try key.decrypt(ciphertext: wrapped, associatedData: associated) == Self.message)

        // ChaCha20-Poly1305 answers with Go's own package name.
        let chacha = try TransitKey.create(name: "orders", type: .chacha20Poly1305, nowMs: Self.nowMs)
        var sealed = Array(try #require(Data(base64Encoded: String(try chacha.encrypt(plaintext: Self.message).dropFirst(9)))))
        sealed[15] ^= 0x80
        Self.expectRefused("chacha20poly1305: message authentication failed") { try chacha.decrypt(ciphertext: wrap(sealed)) }

        // RSA: a flipped byte does not decrypt.
        let rsa = try TransitKey.create(name: "orders", type: .rsa2048, nowMs: Self.nowMs)
        var block = Array(try #require(Data(base64Encoded: String(try rsa.encrypt(plaintext: Self.message).dropFirst(9)))))
        block[100] ^= 0x01
        Self.expectRefused("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error") { try rsa.decrypt(ciphertext: wrap(block)) }
    }

    @Test func derivedKeysNeedTheirContext() throws {
        let key = try TransitKey.create(name: "tenants", derived: true, nowMs: Self.nowMs)
        #expect(key.kdf == "hkdf_sha256")
        let missing = TransitKey.missingContextMessage
        #expect(missing.hasPrefix("missing 'context' for key derivation; the key was created using a derived key"))
        Self.expectRefused(missing) { try key.encrypt(plaintext: Self.message) }
        Self.expectRefused(missing) { try key.encrypt(plaintext: Self.message, context: []) }
        let ciphertext = try key.encrypt(plaintext: Self.message, context: Self.context)
        #expect(try key.decrypt(ciphertext: ciphertext, context: Self.context) == Self.message)
        Self.expectRefused(missing) { try key.decrypt(ciphertext: ciphertext) }
        Self.expectRefused("cipher: message authentication failed") { try key.decrypt(ciphertext: ciphertext, context: Array("tenant-8".utf8)) }
        // Two contexts, two keys: the same plaintext under each opens only with its own.
        let other = try key.encrypt(plaintext: Self.message, context: Array("tenant-8".utf8))
        Self.expectRefused("cipher: message authentication failed") { try key.decrypt(ciphertext: other, context: Self.context) }

        let convergent = try TransitKey.create(name: "emails", derived: true, convergentEncryption: true, nowMs: Self.nowMs)
        let once = try convergent.encrypt(plaintext: Self.message, context: Self.context)
        #expect(try convergent.encrypt(plaintext: Self.message, context: Self.context) == once)
        #expect(try convergent.encrypt(plaintext: Array("other".utf8), context: Self.context) != once)
        #expect(try convergent.decrypt(ciphertext: once, context: Self.context) == Self.message)

        let signer = try TransitKey.create(name: "tenants", type: .ed25519, derived: true, nowMs: Self.nowMs)
        Self.expectRefused("error deriving key: " + missing) { try signer.sign(input: Self.message) }

        Self.expectRefused("key derivation and convergent encryption not supported for keys of type ecdsa-p256") {
            try TransitKey.create(name: "x", type: .ecdsaP256, derived: true, nowMs: Self.nowMs)
        }
        Self.expectRefused("convergent encryption requires derivation to be enabled") {
            try TransitKey.create(name: "x", convergentEncryption: true, nowMs: Self.nowMs)
        }
        Self.expectRefused("convergent encryption not supported for keys of type ed25519") {
            try TransitKey.create(name: "x", type: .ed25519, derived: true, convergentEncryption: true, nowMs: Self.nowMs)
        }
    }

    @Test func base64FollowsGo() throws {
        #expect(try TransitBase64.decode(validating: "aGVsbG8gdHJhbnNpdA==") == Self.message)
        #expect(try TransitBase64.decode(validating: "aGVsbG8g\r\ndHJhbnNpdA==\n") == Self.message)
        #expect(TransitBase64.encode(Self.message) == "aGVsbG8gdHJhbnNpdA==")
        #expect(try TransitBase64.decode(validating: "") == [])
        Self.expectRefused("illegal base64 data at input byte 4") { try TransitBase64.decode(validating: "QUJD!") }
        Self.expectRefused("illegal base64 data at input byte 0") { try TransitBase64.decode(validating: "QQ") }
        Self.expectRefused("illegal base64 data at input byte 2") { try TransitBase64.decode(validating: "QQ=A") }
        Self.expectRefused("illegal base64 data at input byte 4") { try TransitBase64.decode(validating: "QQ==QQ==") }
        Self.expectRefused("illegal base64 data at input byte 0") { try TransitBase64.decode(validating: "=QQQ") }
    }

    @Test func dataKeysAreSealedByTheNamedKey() throws {
        let key = try TransitKey.create(name: "envelopes", nowMs: Self.nowMs)
        let wrapped = try key.dataKey(plaintext: false)
        #expect(wrapped.plaintext == nil && wrapped.keyVersion == 1 && wrapped.ciphertext.hasPrefix("vault:v1:"))
        #expect(try key.decrypt(ciphertext: wrapped.ciphertext).count == 32)
        for bits in [128, 256, 512] {
            let dataKey = try key.dataKey(plaintext: true, bits: bits)
            let plaintext = try #require(dataKey.plaintext)
            #expect(plaintext.count == bits / 8)
            #expect(try key.decrypt(ciphertext: dataKey.ciphertext) == plaintext)
        }
        Self.expectRefused("invalid bit length") { try key.dataKey(plaintext: true, bits: 192) }
        let derived = try TransitKey.create(name: "envelopes", derived: true, nowMs: Self.nowMs)
        let dataKey = try derived.dataKey(plaintext: true, context: Self.context)
        #expect(try derived.decrypt(ciphertext: dataKey.ciphertext, context: Self.context) == dataKey.plaintext)
        Self.expectRefused(TransitKey.missingContextMessage) { try derived.dataKey(plaintext: true) }
    }

    // MARK: Signatures checked by openssl

    @Test func ecdsaAndEd25519SignaturesVerifyWithOpenSSL() throws {
        let openssl = try TransitOpenSSL()
        let digest = Array(SHA256.hash(data: Self.message))
        for (type, hash, hashed) in [
            (TransitKeyType.ecdsaP256, TransitHashAlgorithm.sha256, digest),
            (.ecdsaP384, .sha384, Array(SHA384.hash(data: Self.message))),
        ] {
            let key = try TransitKey.create(name: "releases", type: type, nowMs: Self.nowMs)
            let signature = try key.sign(input: Self.message, hashAlgorithm: hash).signature
            let publicKey = try #require(try key.publicKeys()[1])
            let publicFile = try openssl.write("\(type.vaultName).pub.pem", publicKey)
            let signatureFile = try openssl.write("\(type.vaultName).sig", Self.payload(signature))
            let digestFile = try openssl.write("\(type.vaultName).digest", hashed)
            let verified = try openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", publicFile, "-in", digestFile, "-sigfile", signatureFile])
            #expect(verified.status == 0 && verified.output.contains("Signature Verified Successfully"), "\(type): \(verified.output)")
            let wrongFile = try openssl.write("\(type.vaultName).wrong", hashed.map { $0 ^ 1 })
            let refused = try openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", publicFile, "-in", wrongFile, "-sigfile", signatureFile])
            #expect(refused.status != 0, "openssl must refuse another digest: \(refused.output)")

            // The exported SEC 1 private key is the same key to openssl.
            var exportable = key
            try exportable.configure(exportable: true)
            let privateFile = try openssl.write("\(type.vaultName).key.pem", try #require(try exportable.exportKey(type: .signingKey)[1]))
            let derived = try openssl.run(["ec", "-in", privateFile, "-pubout"])
            #expect(derived.status == 0 && derived.output.contains(publicKey), "\(derived.output)")
        }

        let ed = try TransitKey.create(name: "releases", type: .ed25519, nowMs: Self.nowMs)
        let signature = try ed.sign(input: Self.message).signature
        let edPublic = try #require(try ed.publicKeys()[1])
        let raw = try #require(Data(base64Encoded: edPublic))
        #expect(raw.count == 32)
        let spki = Data([0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00]) + raw
        let pem = "-----BEGIN PUBLIC KEY-----\n" + spki.base64EncodedString() + "\n-----END PUBLIC KEY-----\n"
        let publicFile = try openssl.write("ed25519.pub.pem", pem)
        let signatureFile = try openssl.write("ed25519.sig", Self.payload(signature))
        let messageFile = try openssl.write("ed25519.msg", Self.message)
        let verified = try openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", publicFile, "-rawin", "-in", messageFile, "-sigfile", signatureFile])
        #expect(verified.status == 0 && verified.output.contains("Signature Verified Successfully"), "ed25519: \(verified.output)")
        let otherFile = try openssl.write("ed25519.other", Array("hello transit!".utf8))
        let refused = try openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", publicFile, "-rawin", "-in", otherFile, "-sigfile", signatureFile])
        #expect(refused.status != 0, "openssl must refuse another message: \(refused.output)")
    }

    @Test func rsaSignaturesInteroperateWithOpenSSL() throws {
        let openssl = try TransitOpenSSL()
        var key = try TransitKey.create(name: "releases", type: .rsa2048, nowMs: Self.nowMs)
        try key.configure(exportable: true)
        let publicFile = try openssl.write("rsa.pub.pem", try #require(try key.publicKeys()[1]))
        let privateFile = try openssl.write("rsa.key.pem", try #require(try key.exportKey(type: .signingKey)[1]))
        let digestFile = try openssl.write("rsa.digest", Array(SHA256.hash(data: Self.message)))
        func verify(_ signature: String, _ options: [String]) throws -> (status: Int32, output: String) {
            let signatureFile = try openssl.write("rsa.sig", Self.payload(signature))
            let pkeyopts = (["digest:sha256"] + options).flatMap { ["-pkeyopt", $0] }
            return try openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", publicFile, "-in", digestFile, "-sigfile", signatureFile] + pkeyopts)
        }

        // Vault's default: PSS with the longest salt the key allows.
        let pss = try key.sign(input: Self.message).signature
        for saltLength in ["auto", "max"] {
            let result = try verify(pss, ["rsa_padding_mode:pss", "rsa_pss_saltlen:\(saltLength)"])
            #expect(result.status == 0, "salt \(saltLength): \(result.output)")
        }
        #expect(try verify(pss, ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"]).status != 0, "the salt is the longest, not the hash's length")
        let hashSalt = try key.sign(input: Self.message, saltLength: .hash).signature
        #expect(try verify(hashSalt, ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"]).status == 0)
        let pkcs1 = try key.sign(input: Self.message, signatureAlgorithm: .pkcs1v15).signature
        let pkcs1Result = try verify(pkcs1, ["rsa_padding_mode:pkcs1"])
        #expect(pkcs1Result.status == 0, "\(pkcs1Result.output)")

        // openssl's signatures, made with the exported private key, verify here.
        for (options, algorithm) in [
            (["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"], TransitSignatureAlgorithm.pss),
            (["rsa_padding_mode:pss", "rsa_pss_saltlen:max"], .pss),
            (["rsa_padding_mode:pss", "rsa_pss_saltlen:17"], .pss),
            (["rsa_padding_mode:pkcs1"], .pkcs1v15),
        ] {
            let signatureFile = openssl.path("openssl.sig")
            let signed = try openssl.run(
                ["pkeyutl", "-sign", "-inkey", privateFile, "-in", digestFile, "-out", signatureFile]
                    + (["digest:sha256"] + options).flatMap { ["-pkeyopt", $0] })
            #expect(signed.status == 0, "\(signed.output)")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: signatureFile))
            let signature = "vault:v1:" + bytes.base64EncodedString()
            #expect(try key.verify(input: Self.message, signature: signature, signatureAlgorithm: algorithm), "\(options)")
            #expect(try !key.verify(input: Array("hello transit!".utf8), signature: signature, signatureAlgorithm: algorithm), "\(options)")
        }
        let derived = try openssl.run(["rsa", "-in", privateFile, "-pubout"])
        let rsaPublic = try #require(try key.publicKeys()[1])
        #expect(derived.status == 0 && derived.output.contains(rsaPublic), "\(derived.output)")
    }

    @Test func signingOptionsFollowVault() throws {
        let rsa = try TransitKey.create(name: "releases", type: .rsa2048, nowMs: Self.nowMs)
        Self.expectRefused("hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15") {
            try rsa.sign(input: Self.message, hashAlgorithm: .unhashed)
        }
        Self.expectRefused("hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15") {
            try rsa.sign(input: Self.message, hashAlgorithm: .unhashed, prehashed: true)
        }
        let raw = try rsa.sign(input: Self.message, hashAlgorithm: .unhashed, signatureAlgorithm: .pkcs1v15, prehashed: true).signature
        #expect(try rsa.verify(input: Self.message, signature: raw, hashAlgorithm: .unhashed, signatureAlgorithm: .pkcs1v15, prehashed: true))
        Self.expectRefused("crypto/rsa: input must be hashed with given hash") { try rsa.sign(input: [1, 2, 3], prehashed: true) }
        Self.expectRefused("requested salt length 300 is invalid") { try rsa.sign(input: Self.message, saltLength: .bytes(300)) }
        #expect(try rsa.verify(input: Self.message, signature: rsa.sign(input: Self.message, saltLength: .bytes(20)).signature, saltLength: .bytes(20)))
        Self.expectRefused("requested version for signing is higher than the latest key version") { try rsa.sign(input: Self.message, keyVersion: 2) }
        Self.expectRefused("requested version for signing is negative") { try rsa.sign(input: Self.message, keyVersion: -2) }

        let ed = try TransitKey.create(name: "releases", type: .ed25519, nowMs: Self.nowMs)
        Self.expectRefused("error generating Ed25519 options: hash algorithm of SHA2 512 is not supported feature") {
            try ed.sign(input: Self.message, hashAlgorithm: .sha512)
        }
        let signature = try ed.sign(input: Self.message, hashAlgorithm: .sha384).signature
        #expect(try ed.verify(input: Self.message, signature: signature), "Ed25519 ignores the hash")
        Self.expectRefused("invalid signature: no prefix") { try ed.verify(input: Self.message, signature: "v1:" + signature) }
        Self.expectRefused("invalid signature: version is too new") {
            try ed.verify(input: Self.message, signature: "vault:v2:" + signature.dropFirst(9))
        }
        Self.expectRefused("invalid base64 signature value") { try ed.verify(input: Self.message, signature: "vault:v1:@@@") }

        let ec = try TransitKey.create(name: "releases", type: .ecdsaP256, nowMs: Self.nowMs)
        let der = Array(try #require(Data(base64Encoded: String(try ec.sign(input: Self.message).signature.dropFirst(9)))))
        Self.expectRefused("supplied signature contains extra data") {
            try ec.verify(input: Self.message, signature: "vault:v1:" + Data(der + [0]).base64EncodedString())
        }
        Self.expectRefused("supplied signature is invalid") {
            try ec.verify(input: Self.message, signature: "vault:v1:" + Data(der.dropLast()).base64EncodedString())
        }
        Self.expectRefused("key type aes256-gcm96 does not support verification") {
            try TransitKey.create(name: "x", nowMs: Self.nowMs).verify(input: Self.message, signature: "vault:v1:AA==")
        }
    }

    @Test func optionsParseWithVaultsMessages() throws {
        #expect(try TransitKeyType(vaultName: "rsa-3072") == .rsa3072)
        #expect(throws: SecretsError.badRequest("unknown key type rsa-1024")) { try TransitKeyType(vaultName: "rsa-1024") }
        #expect(try TransitHashAlgorithm(vaultName: "sha3-256") == .sha3_256 && (try TransitHashAlgorithm(vaultName: "none")) == .unhashed)
        #expect(throws: SecretsError.badRequest("invalid hash algorithm \"md5\"")) { try TransitHashAlgorithm(vaultName: "md5") }
        #expect(throws: SecretsError.badRequest("invalid marshaling type \"der\"")) { try TransitMarshaling(vaultName: "der") }
        #expect(try TransitSignatureAlgorithm(vaultName: "") == .pss)
        #expect(throws: SecretsError.badRequest("unsupported rsa signature algorithm pss2")) { try TransitSignatureAlgorithm(vaultName: "pss2") }
        #expect(try TransitSaltLength(vaultValue: "AUTO") == .auto && (try TransitSaltLength(vaultValue: "-1")) == .hash)
        #expect(try TransitSaltLength(vaultValue: "32") == .bytes(32) && (try TransitSaltLength(vaultValue: "0")) == .auto)
        #expect(throws: SecretsError.badRequest("salt length neither 'auto', 'hash', nor an int: big")) { try TransitSaltLength(vaultValue: "big") }
        #expect(throws: SecretsError.badRequest("salt length is invalid: -2")) { try TransitSaltLength(vaultValue: "-2") }
        #expect(throws: SecretsError.badRequest("invalid export type: secret-key")) { try TransitExportType(vaultName: "secret-key") }
        let rsa = try TransitKey.create(name: "x", type: .rsa2048, nowMs: Self.nowMs)
        Self.expectRefused("'[3].padding_scheme' invalid: unknown padding scheme: oaep256") {
            try rsa.encrypt(plaintext: Self.message, paddingScheme: "oaep256", batchIndex: 3)
        }
        Self.expectRefused("'[0].padding_scheme' invalid: unsupported key type aes256-gcm96 for padding scheme") {
            try TransitKey.create(name: "x", nowMs: Self.nowMs).encrypt(plaintext: Self.message, paddingScheme: "oaep")
        }
        Self.expectRefused("'[0].associated_data' provided for non-AEAD cipher suite ed25519") {
            try TransitKey.create(name: "x", type: .ed25519, nowMs: Self.nowMs).decrypt(ciphertext: "vault:v1:AA==", associatedData: [1])
        }
    }

    // MARK: Export

    @Test func exportHonoursExportable() throws {
        var key = try TransitKey.create(name: "orders", nowMs: Self.nowMs)
        Self.expectRefused("private key material is not exportable") { try key.exportKey(type: .encryptionKey) }
        Self.expectRefused("unknown key type aes256-gcm96 for export type public-key") { try key.exportKey(type: .publicKey) }
        try key.configure(exportable: true)
        try key.rotate(nowMs: Self.nowMs)
        let all = try key.exportKey(type: .encryptionKey)
        #expect(all.keys.sorted() == [1, 2] && all.values.allSatisfy { Data(base64Encoded: $0)?.count == 32 })
        #expect(all[1] == key.versions[1].map { Data($0.material).base64EncodedString() })
        #expect(try key.exportKey(type: .encryptionKey, version: "latest") == [2: all[2]!])
        #expect(try key.exportKey(type: .hmacKey, version: "1").values.first.flatMap { Data(base64Encoded: $0) }?.count == 32)
        Self.expectRefused("signing not supported for the key") { try key.exportKey(type: .signingKey) }
        Self.expectRefused("invalid key version") { try key.exportKey(type: .encryptionKey, version: "first") }
        Self.expectRefused("version does not exist or cannot be found") { try key.exportKey(type: .encryptionKey, version: "v9") }
        try key.configure(minDecryptionVersion: 2)
        Self.expectRefused("version for export is below minimum decryption version") { try key.exportKey(type: .encryptionKey, version: "1") }
        #expect(try key.exportKey(type: .encryptionKey).keys.sorted() == [2])

        let signer = try TransitKey.create(name: "releases", type: .ecdsaP384, nowMs: Self.nowMs)
        #expect(try signer.exportKey(type: .publicKey)[1]?.hasPrefix("-----BEGIN PUBLIC KEY-----") == true, "public keys need no exportable")
        Self.expectRefused("private key material is not exportable") { try signer.exportKey(type: .signingKey) }
    }

    // MARK: The stored record

    @Test func recordsRoundTripAndKeepWorking() throws {
        var key = try TransitKey.create(name: "orders/eu", type: .chacha20Poly1305, derived: true, exportable: true, nowMs: Self.nowMs)
        let first = try key.encrypt(plaintext: Self.message, context: Self.context)
        for step in 1...4 { try key.rotate(nowMs: Self.nowMs + Int64(step)) }
        try key.configure(minDecryptionVersion: 2, minEncryptionVersion: 3, deletionAllowed: true, autoRotatePeriodMs: 7_200_000)
        let decoded = try TransitKey(decoding: key.encoded(), limits: .standard)
        #expect(decoded == key)
        #expect(decoded.encoded() == key.encoded())
        var lowered = decoded
        try lowered.configure(minDecryptionVersion: 1)
        #expect(try lowered.decrypt(ciphertext: first, context: Self.context) == Self.message)
        try lowered.configure(minDecryptionVersion: 3)
        try lowered.trim(minAvailableVersion: 3)
        #expect(try TransitKey(decoding: lowered.encoded(), limits: .standard) == lowered)

        for type in TransitKeyType.allCases where !type.isRSA || type == .rsa2048 {
            let one = try TransitKey.create(name: "k", type: type, nowMs: Self.nowMs)
            #expect(try TransitKey(decoding: one.encoded(), limits: .standard) == one, "\(type)")
        }
    }

    @Test func corruptRecordsAreRefused() throws {
        var key = try TransitKey.create(name: "orders", type: .ed25519, nowMs: Self.nowMs)
        try key.rotate(nowMs: Self.nowMs)
        let record = key.encoded()
        func refused(_ bytes: [UInt8], _ what: String, limits: Limits = .standard) {
            do {
                _ = try TransitKey(decoding: bytes, limits: limits)
                Issue.record("a record with \(what) was accepted")
            } catch {
                #expect(error.status == 500 && error.message.contains("malformed"), "\(what): \(error)")
            }
        }
        for length in 0..<record.count { refused(Array(record.prefix(length)), "only \(length) bytes") }
        refused(record + [0], "a trailing byte")
        var format = record
        format[0] = 2
        refused(format, "another format")
        var type = record
        type[1 + 1 + 6] = 99  // format, name length, "orders", then the type tag
        refused(type, "an unknown type tag")
        var flags = record
        flags[1 + 1 + 6 + 1] = 0x80
        refused(flags, "unknown flags")
        var derivedECDSA = Self.record(tag: 1, flags: 1, material: Array(1...32))
        refused(derivedECDSA, "a derived ECDSA key")
        derivedECDSA = Self.record(tag: 1, material: Array(1...31))
        refused(derivedECDSA, "a 31-byte P-256 scalar")
        refused(Self.record(tag: 0, material: Array(0..<32), latest: 2), "a missing version")
        refused(Self.record(tag: 3, material: [0x30, 0x03, 0x02, 0x01]), "RSA material with a broken DER length")
        var limits = Limits()
        limits.transitKeyVersionsMax = 1
        refused(record, "more versions than the bound", limits: limits)

        // Seeded damage: never a crash; whatever is accepted still satisfies every invariant
        // (it decodes again to itself).
        let seed = UInt64.random(in: 0...UInt64.max)
        print("TransitTests.corruptRecordsAreRefused seed \(seed)")
        var generator = SplitMix64(seed: seed)
        for _ in 0..<2000 {
            var damaged = record
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                damaged[Int.random(in: 0..<damaged.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if let decoded = try? TransitKey(decoding: damaged, limits: .standard) {
                #expect(try TransitKey(decoding: decoded.encoded(), limits: .standard) == decoded, "seed \(seed)")
            }
        }
    }

    // MARK: Helpers

    static func rsaBits(_ type: TransitKeyType) -> Int {
        [TransitKeyType.rsa2048: 2048, .rsa3072: 3072, .rsa4096: 4096][type, default: 0]
    }

    /// A stored record written field by field (the layout `TransitKey+Codec.swift` documents),
    /// so a test can hold known key material: one version unless `latest` says more are claimed.
    static func record(name: String = "kat", tag: UInt8, flags: UInt8 = 0, material: [UInt8], latest: Int = 1) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.writeString(name)
        writer.write(tag)
        writer.write(flags)
        writer.writeVarint(UInt64(latest))
        writer.writeVarint(1)  // min decryption version
        writer.writeVarint(0)  // min encryption version
        writer.writeVarint(0)  // min available version
        writer.writeVarint(signed: 0)  // auto-rotate period
        writer.writeVarint(1)
        writer.writeVarint(1)
        writer.writeVarint(signed: nowMs)
        writer.writeBytes(material)
        writer.writeBytes(Array(repeating: 7, count: 32))
        return writer.bytes
    }

    /// Flags: 1 derived, 2 convergent, 4 exportable.
    static func keyWithMaterial(type: TransitKeyType, tag: UInt8, flags: UInt8 = 0, material: [UInt8]) throws -> TransitKey {
        let key = try TransitKey(decoding: record(tag: tag, flags: flags, material: material), limits: .standard)
        #expect(key.type == type)
        return key
    }

    /// The bytes after `vault:vN:`.
    static func payload(_ versioned: String) throws -> [UInt8] {
        let text = versioned.split(separator: ":", maxSplits: 2).last.map(String.init) ?? ""
        return Array(try #require(Data(base64Encoded: text)))
    }

    static func rawURLDecode(_ text: String) -> [UInt8]? {
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard).map { Array($0) }
    }

    static func trimmed(_ text: String) -> String { text.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// The body must be refused with exactly Vault's message (a 400, never plaintext).
    static func expectRefused<R>(_ message: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R) {
        #expect(throws: SecretsError.badRequest(message), sourceLocation: sourceLocation) { _ = try body() }
    }
}

/// Values made by Python's `cryptography` 48 (an implementation independent of swift-crypto and
/// of this code) from fixed keys: AES keys 00 01 … , nonce 64 65 …, plaintext "hello transit",
/// context "tenant-7", associated data "row-42"; an Ed25519 seed 00 01 …; a P-256 scalar 01 02 …;
/// a 2048-bit RSA key made for these tests.
enum TransitVectors {
    static let aes256 = "vault:v1:ZGVmZ2hpamtsbW5vIH6yChbJIuxfDCyBrobxcqsdT45PIbsj+adgv7I="
    static let aes256DerivedWithAD = "vault:v1:ZGVmZ2hpamtsbW5vTQRWW6gnsgDYU3Cge26Gulbt5KYfGYAy2QE5hdY="
    static let chacha = "vault:v1:ZGVmZ2hpamtsbW5vXHTXpveFAiCasGYWhsREVxSr/1nmpf18u0YMIRc="
    static let aes128 = "vault:v1:ZGVmZ2hpamtsbW5vcgciybQizIj6UCR58tup8tJSs1r4czbVZQUAcmA="
    static let convergent = "vault:v1:DswT9cxW8KATJQ1WLYgXVo5mqNHEm8TyyLBBvIrejUYy0KbYXvoYAxI="
    static let ed25519Material = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA=="
    static let ed25519Public = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    static let ed25519Signature = "vault:v1:wnVkHwvfFFDdai0cGAmfgpoxbTa6VJez4uVZZLB0I+TMMgnX/VoRE3fmGzGR6JNA29mTh1SUr/Mft/EcdebnCg=="
    static let ed25519DerivedPublic = "vYMQfrIVzVQ+xKREWD5Kz1tTJLSiNMD/IMbFa4DNmj8="
    static let ed25519DerivedSignature = "vault:v1:oSZlntyaaDNY1WHIrUz+KVkbBFc5QRiZb5/DQE5tgyANhwXR4aKFB2HLeaRAwlzFT81XMFydChPFC7Zsu0iiBg=="
    static let p256Scalar = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    static let p256PublicPEM = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUVw9brnjlrkE0/7Kf1T9zQzB6Ze/
        N13KUVrQpsO0A19FNr46UPMY+/mlR1kCoiFQK+8NV+CMU7LMClbxfZ+TVA==
        -----END PUBLIC KEY-----

        """
    static let p256PrivatePEM = """
        -----BEGIN EC PRIVATE KEY-----
        MHcCAQEEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8goAoGCCqGSM49
        AwEHoUQDQgAEUVw9brnjlrkE0/7Kf1T9zQzB6Ze/N13KUVrQpsO0A19FNr46UPMY
        +/mlR1kCoiFQK+8NV+CMU7LMClbxfZ+TVA==
        -----END EC PRIVATE KEY-----

        """
    static let p256Signature = "vault:v1:MEQCHyUbcuVfCJSNhAk7TZ482B4irHBml/cMqPsaNogb++ECIQCB3iHK8FcdjWlkhlJXc6nwanEefQzTcodvv9qF2E3L0w=="
    static let p256SignatureJWS = "vault:v1:ACUbcuVfCJSNhAk7TZ482B4irHBml_cMqPsaNogb--GB3iHK8FcdjWlkhlJXc6nwanEefQzTcodvv9qF2E3L0w"
    static let rsaPKCS1DER = "MIIEowIBAAKCAQEAqwOzHwjJedw7wOgAQlUrJoaq0qWbOzPt5iga/WkI2SD5qFlXGh/YM9YIZvOl5oxBjRJhwlHCbQswzPh+s/4mAaQQ2ynpM7Aq8UKF87ihI3oL5U9vNWySjy02HfL5NN2z9jU6tg489oAR+j6wLuDhpOy4ry5NLzRLGCLWcEC5epdVxlre+APL143r9ugyAkaN7FadOGUQxysaJSD+PBQlwz6t1Fm/t1LDJjyJP1BgaVMBugze8e/j4/RVgUw6e3qIqwvlyvJUXxuhpB+xr/UWz+OQhsL3enVsO6eEjMXsyMT3+RC87vPqJPL0JvrZURdciL9msYonCtmBKyledE5DswIDAQABAoIBABeQEG+KZebjndtj++59I/oQcbFJaRyHTf7kGr08v3UvR8bW3HCjNPEGIK09YpKOqP+CKgm8pdB2y21fyxFgx1AlkL7/GicUMwPVOctNbpe1RWCoiQxFiTdaBYwAgi6zDLcz5ALZQ7QRDFO8Vx52ahCvyc3f+s7ct9YRAsEqYdlOjp74WvJY+EVr66dz5Gr/72tDNQ7INTI/eMVgT9qv6vBkL9ddva/Bmx4W68csf9uE9OFN9lpPCTW8D2YNw0jOuzfgwMaQ63gCno6ljorfswRbG64j+9uCvLgSiW+eR9RwEAADIWUK2BoowWf7AakmHIA+RmEOxP3qNXv0kRiJNM0CgYEA3TKoGaHvYtkn8aIyrrzjhqJ3XKxewM2Pfmx3nRYcZVrjbIRLSPF8mJY8wa2MUHxxpWjok9PMFGATiWllUJc2IcWpZOJj1LWwUqB5UZI7+aYM1XxgOtAvT8Jqbj1X6r929nKG99v6+IXQTwPKmir5pXfibzACTkdpL78SLCatnfcCgYEAxevFDMADfHuo0kZ4l16vMIhrSPBjIegibHXvu+0xZ0ZC7uuHM88fXbOByzlSzRuCB8EY9oRYsqf5ix2XVW/qmxdDdczX3mMtqwhG+bnDDv7/aGWJiN51rUKV+Z6zcJGRztBatyT33Md6NCFqED5M/qU93rao8cqqyf37DW9tSSUCgYEAuIDNeHv7Wl86EzIwxlHmEuInX9SjQHz16QT+jLfpvZ0fP9/lkBVl0TzXttFUzbnPbaJhBRVQD9rH0QFpsdw/GdJu5ih0DvPx/CnAqAqrHiSkZdpVxhjqrcPD1Oo0ECneR9jlvY7u+ydaxt2pvAiGrb+ezxGjirnEAkCFHvCwNqcCgYAQ/AKU7YVfEV2Tbei7VKzEBXDveXGIX1tU42oHPnuW2Ti1OBEKKSQP7m+c+PZaE5o9AB0cSo8yBagsgAWUl14SoRRw73s24lvw6Wzt0Tsj9k4Er3H2BOEkVSp5mVzctCFHFioyvUFn+NZL0vI/IpmI4LVGf3ZQCYxOeTUqGf3O4QKBgHcdGLyIv/i8vC/Q6jydBgU9tFtQIdVN9s00/3e8ybsPcANM/7SG9+RlKufcwHLilYhUMB5oN/QX9LfCTTebsO0O1ZVPan7kQ/RjGRv/MKs9ZnUdfLSpnUvitZKLSsUIq+QlQ29XTu3gB7y7bbMpWRhYF2GXb7oh/btqethQyUOI"
    static let rsaPublicPEM = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqwOzHwjJedw7wOgAQlUr
        Joaq0qWbOzPt5iga/WkI2SD5qFlXGh/YM9YIZvOl5oxBjRJhwlHCbQswzPh+s/4m
        AaQQ2ynpM7Aq8UKF87ihI3oL5U9vNWySjy02HfL5NN2z9jU6tg489oAR+j6wLuDh
        pOy4ry5NLzRLGCLWcEC5epdVxlre+APL143r9ugyAkaN7FadOGUQxysaJSD+PBQl
        wz6t1Fm/t1LDJjyJP1BgaVMBugze8e/j4/RVgUw6e3qIqwvlyvJUXxuhpB+xr/UW
        z+OQhsL3enVsO6eEjMXsyMT3+RC87vPqJPL0JvrZURdciL9msYonCtmBKyledE5D
        swIDAQAB
        -----END PUBLIC KEY-----

        """
    static let rsaPrivatePEM = """
        -----BEGIN RSA PRIVATE KEY-----
        MIIEowIBAAKCAQEAqwOzHwjJedw7wOgAQlUrJoaq0qWbOzPt5iga/WkI2SD5qFlX
        Gh/YM9YIZvOl5oxBjRJhwlHCbQswzPh+s/4mAaQQ2ynpM7Aq8UKF87ihI3oL5U9v
        NWySjy02HfL5NN2z9jU6tg489oAR+j6wLuDhpOy4ry5NLzRLGCLWcEC5epdVxlre
        +APL143r9ugyAkaN7FadOGUQxysaJSD+PBQlwz6t1Fm/t1LDJjyJP1BgaVMBugze
        8e/j4/RVgUw6e3qIqwvlyvJUXxuhpB+xr/UWz+OQhsL3enVsO6eEjMXsyMT3+RC8
        7vPqJPL0JvrZURdciL9msYonCtmBKyledE5DswIDAQABAoIBABeQEG+KZebjndtj
        ++59I/oQcbFJaRyHTf7kGr08v3UvR8bW3HCjNPEGIK09YpKOqP+CKgm8pdB2y21f
        yxFgx1AlkL7/GicUMwPVOctNbpe1RWCoiQxFiTdaBYwAgi6zDLcz5ALZQ7QRDFO8
        Vx52ahCvyc3f+s7ct9YRAsEqYdlOjp74WvJY+EVr66dz5Gr/72tDNQ7INTI/eMVg
        T9qv6vBkL9ddva/Bmx4W68csf9uE9OFN9lpPCTW8D2YNw0jOuzfgwMaQ63gCno6l
        jorfswRbG64j+9uCvLgSiW+eR9RwEAADIWUK2BoowWf7AakmHIA+RmEOxP3qNXv0
        kRiJNM0CgYEA3TKoGaHvYtkn8aIyrrzjhqJ3XKxewM2Pfmx3nRYcZVrjbIRLSPF8
        mJY8wa2MUHxxpWjok9PMFGATiWllUJc2IcWpZOJj1LWwUqB5UZI7+aYM1XxgOtAv
        T8Jqbj1X6r929nKG99v6+IXQTwPKmir5pXfibzACTkdpL78SLCatnfcCgYEAxevF
        DMADfHuo0kZ4l16vMIhrSPBjIegibHXvu+0xZ0ZC7uuHM88fXbOByzlSzRuCB8EY
        9oRYsqf5ix2XVW/qmxdDdczX3mMtqwhG+bnDDv7/aGWJiN51rUKV+Z6zcJGRztBa
        tyT33Md6NCFqED5M/qU93rao8cqqyf37DW9tSSUCgYEAuIDNeHv7Wl86EzIwxlHm
        EuInX9SjQHz16QT+jLfpvZ0fP9/lkBVl0TzXttFUzbnPbaJhBRVQD9rH0QFpsdw/
        GdJu5ih0DvPx/CnAqAqrHiSkZdpVxhjqrcPD1Oo0ECneR9jlvY7u+ydaxt2pvAiG
        rb+ezxGjirnEAkCFHvCwNqcCgYAQ/AKU7YVfEV2Tbei7VKzEBXDveXGIX1tU42oH
        PnuW2Ti1OBEKKSQP7m+c+PZaE5o9AB0cSo8yBagsgAWUl14SoRRw73s24lvw6Wzt
        0Tsj9k4Er3H2BOEkVSp5mVzctCFHFioyvUFn+NZL0vI/IpmI4LVGf3ZQCYxOeTUq
        Gf3O4QKBgHcdGLyIv/i8vC/Q6jydBgU9tFtQIdVN9s00/3e8ybsPcANM/7SG9+Rl
        KufcwHLilYhUMB5oN/QX9LfCTTebsO0O1ZVPan7kQ/RjGRv/MKs9ZnUdfLSpnUvi
        tZKLSsUIq+QlQ29XTu3gB7y7bbMpWRhYF2GXb7oh/btqethQyUOI
        -----END RSA PRIVATE KEY-----

        """
    static let rsaPKCS1Signature = "vault:v1:mReL8IlovDvo10Ucn8pewnNcIjE+tvSuFM9256NQTiTr8x3z9wY5U555MJtOVVo7/G/gMCljcT6wwz4A2EZRcP8Tl/pCfeZp2RW2V5rrp1QKGBbJPDglLBLEa5YJ74jY0pGjm+9h3kWwlJ8rcW71XezcZu6U8XYbvIwYGrb7CgbpJ2agK7RpRX9WoMgW5poBMvRjkushhENG1PsewGKu7tOnWKMkN66gV94D34SiNzME3ui2rfXVvV4fSeyuqFs2rk5qRoZlK0ov5oynbkQ87Vg4rJTDS22dLzNr62J3oNBcekTzRx/dPG9ONZYzozV5Tj3NBBxwOUXgYdOox3WR+A=="
    static let rsaPSSMaxSaltSignature = "vault:v1:RaZEESG51c/k+8+8X/wv/SJcxoeH3sZM/qyfsEe1hXR8Fs6N74EUiYLNeSMdVXUKJvCUTz+75vmQ1dwWoxb62AIlyyi6oqluEH/bbuASP5Obz626Nzc3OfnyLo1eHtSMmzVt3bHczaLysUZHLXYfHzkgQ464sPzIFy6ppYk1gixJ4HuPyh6RJDR8YtIRSmB0wjRfMrRh9Wlms35xVYg4qGO3zwteJGHxj88INPqaMzl91Zh3DGxxRUorsLaV3ogd8KM2ZOD3XQPMi12O7SYRTxC54DJd5etmCkhwOQZtLqQect/lrQDm6bNxk5ail3/WCsVmp/kgQ7A6an9JzFKxfA=="
    static let rsaPSSHashSaltSignature = "vault:v1:ghuOtCh/QkCYAilYqqUqREsDPUHcBxtZ2NB6JJz3xIi5yK4+EGiQLnn4HLAVpe0tCLeenk2YKE68K48utE9UAcCSWrSfq6q0ZcGRQ33XwOngTJN3T03xKxhLIyHCXSWwWm+ZuM5TrgIzgNbvbQG3PH1MO6C4J2oGzyEKAqpCvO+2NxWVk26JesLLzK8xubqTqx9yteQviHnZbxjeAZNd2BsedMjPvH5TOAnuFfbTOLSDrXab3P+k47FFPnW3q4hVaJ6ox7iyF7HnEJqtpzAuDXPu3EgISIIGDBbkgSFFstZm/SQX7WNYwxznum5kT8IYGiSdkGKY8ImMsuChBI9nlA=="
    static let rsaPSSSHA512Signature = "vault:v1:PaJCROj5IRI68cWxNoBiL4RA8RJ3KP+9ImZe/SzEoFC2VwhdtYZEBASbpMFKpqVxZuzHT8HN6tgXmz1kkOTaFY5swjCzzH1p7smToDBgOhjaQvn0o5xjtQtAAkrdIKEssQ0FfTzuZEebaFJsVq8axLRkzbZIJ9v9cpluoOqTIm6dMAk1DGCssAp2uNnZcTOlkMlGziJhAVXDeYucGUdO7LRpINrpcutlYhWtp1zYwqmHl6CxTwdVGak1597V1dAreadNRQ1Qz9d7BvZP+hE80IpCld+yyLH+3esmsuCwY3NTGeFYA9SfSj4HdlX2kdfT84f64Xu7Ei5Enyh0x4vbDQ=="
    static let rsaOAEPCiphertext = "vault:v1:mcwgCdvPZkpVSsC0/ISAh3ToYkeSehZMn5vhl5JFFoJqWT5COionb1P3TzEyl5hQ/msPR9DyXzRVWX1sYllf2tfIqsF1JvVONMIP7kqUAxGU6iyiIkfTsT7xy6tAt1YUzU0JLprnfTuUp5kZNvNshwtiuWZg1bsme0iu50S02WtCPmNZwdf/nHBiu6PGuw5lTTsADars8N7/YVmKV02cUuOR0IkJtP3giXQJT804f6r4UovZPUzUlwF7F2NnGCkLM06ScvIqf8jHStUM6JSexGj9PjV+8AU60Mjd3Dg95noNi6S4aY/y1nXaqiJP6zaCV86MVjwmLOFeIOyVUXtXKQ=="
}

/// Runs the real `openssl` in a directory of its own.
private struct TransitOpenSSL {
    let executable: String
    let directory: URL

    /// Finds `openssl` on PATH; a test that needs it fails here, with a message, when it is missing.
    init() throws {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        let found = paths.map { $0 + "/openssl" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        executable = try #require(found, "openssl was not found on PATH: the transit tests check signatures with the real openssl; install it")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-transit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        try Data(bytes).write(to: URL(fileURLWithPath: path(name)))
        return path(name)
    }

    /// Its exit status, and its stdout and stderr together.
    func run(_ arguments: [String]) throws -> (status: Int32, output: String) { try runProgram(executable, arguments, in: directory) }
}
