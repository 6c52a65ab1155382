import AspenCore
import AspenKV
import Crypto
import Foundation
import _CryptoExtras

/// RSA as Vault does it with Go's `crypto/rsa`: OAEP-SHA256 (or PKCS #1 v1.5) encryption through
/// swift-crypto, and signatures whose encoding this file writes itself — PSS with any salt
/// length (Vault signs with the longest salt the key allows unless told otherwise, and verifies
/// with the salt length detected), PKCS #1 v1.5 with any of Vault's hashes, or none — because
/// swift-crypto signs PSS only with a hash-length salt. The private operation is BoringSSL's
/// (`RSA_sign_raw`, blinded, via swift-crypto's RSA blind-signing key); the public one, on
/// public values only, is the Montgomery exponentiation below.
enum TransitRSA {
    static func generate(bits: Int) throws(SecretsError) -> Bytes {
        do {
            return Array(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: bits)).derRepresentation)
        } catch {
            throw .internalError("RSA key generation failed: \(error)")
        }
    }

    static func signingKey(_ material: Bytes, type: TransitKeyType) throws(SecretsError) -> _RSA.Signing.PrivateKey {
        do {
            let key = try _RSA.Signing.PrivateKey(derRepresentation: material)
            guard key.keySizeInBits == type.rsaBits else { throw SecretsError.internalError("\(key.keySizeInBits) bits") }
            return key
        } catch {
            throw .internalError("an \(type.vaultName) key version does not load: \(error)")
        }
    }

    /// SubjectPublicKeyInfo DER.
    static func publicKeyDER(_ material: Bytes, type: TransitKeyType) throws(SecretsError) -> Bytes {
        Array(try signingKey(material, type: type).publicKey.derRepresentation)
    }

    // MARK: Encryption

    static func encrypt(_ material: Bytes, type: TransitKeyType, plaintext: Bytes, pkcs1v15: Bool) throws(SecretsError) -> Bytes {
        let key = try encryptionKey(material, type: type).publicKey
        let padding: _RSA.Encryption.Padding = pkcs1v15 ? ._WEAK_AND_INSECURE_PKCS_V1_5 : .PKCS1_OAEP_SHA256
        guard plaintext.count <= key.maximumEncryptSize(with: padding) else {
            throw .badRequest("failed to RSA encrypt the plaintext: crypto/rsa: message too long for RSA key size")
        }
        do {
            return Array(try key.encrypt(plaintext, padding: padding))
        } catch {
            throw .internalError("failed to RSA encrypt the plaintext: \(error)")
        }
    }

    static func decrypt(_ material: Bytes, type: TransitKeyType, ciphertext: Bytes, pkcs1v15: Bool) throws(SecretsError) -> Bytes {
        let key = try encryptionKey(material, type: type)
        let padding: _RSA.Encryption.Padding = pkcs1v15 ? ._WEAK_AND_INSECURE_PKCS_V1_5 : .PKCS1_OAEP_SHA256
        do {
            return Array(try key.decrypt(ciphertext, padding: padding))
        } catch {
            throw .badRequest("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error")
        }
    }

    private static func encryptionKey(_ material: Bytes, type: TransitKeyType) throws(SecretsError) -> _RSA.Encryption.PrivateKey {
        do {
            let key = try _RSA.Encryption.PrivateKey(derRepresentation: material)
            guard key.keySizeInBits == type.rsaBits else { throw SecretsError.internalError("\(key.keySizeInBits) bits") }
            return key
        } catch {
            throw .internalError("an \(type.vaultName) key version does not load: \(error)")
        }
    }

    // MARK: Signatures

    /// The signature of `hashed` (the input already hashed by `hash`, or `.unhashed`).
    static func sign(
        _ material: Bytes, type: TransitKeyType, hashed: Bytes, hash: TransitHashAlgorithm, algorithm: TransitSignatureAlgorithm,
        saltLength: TransitSaltLength
    ) throws(SecretsError) -> Bytes {
        let key = try signingKey(material, type: type)
        let modulusBits = key.keySizeInBits
        let modulusBytes = (modulusBits + 7) / 8
        let encoded: Bytes
        switch algorithm {
        case .pss:
            let hashBytes = try hash.requireHashFunction()
            let salt = try pssSaltBytes(saltLength, modulusBits: modulusBits, hashBytes: hashBytes)
            guard hashed.count == hashBytes else { throw .badRequest("crypto/rsa: input must be hashed with given hash") }
            encoded = try pssEncode(hashed, emBits: modulusBits - 1, salt: TransitCrypto.randomBytes(salt), hash: hash)
        case .pkcs1v15:
            encoded = try pkcs1Encode(hashed, hash: hash, modulusBytes: modulusBytes)
        }
        let padded = Bytes(repeating: 0, count: modulusBytes - encoded.count) + encoded
        do {
            let raw = try _RSA.BlindSigning.PrivateKey<SHA384>(derRepresentation: material, parameters: .RSABSSA_SHA384_PSS_Deterministic)
            return Array(try raw.blindSignature(for: padded).rawRepresentation)
        } catch {
            throw .internalError("RSA signing failed: \(error)")
        }
    }

    static func verify(
        _ material: Bytes, type: TransitKeyType, hashed: Bytes, signature: Bytes, hash: TransitHashAlgorithm,
        algorithm: TransitSignatureAlgorithm, saltLength: TransitSaltLength
    ) throws(SecretsError) -> Bool {
        let key = try signingKey(material, type: type).publicKey
        let modulusBits = key.keySizeInBits
        let modulusBytes = (modulusBits + 7) / 8
        if algorithm == .pss {
            // Vault checks the salt length against the key before anything else.
            _ = try pssSaltBytes(saltLength, modulusBits: modulusBits, hashBytes: try hash.requireHashFunction())
        }
        let operation: RSAPublicOperation
        do {
            let primitives = try key.getKeyPrimitives()
            operation = RSAPublicOperation(modulus: Array(primitives.modulus), exponent: Array(primitives.publicExponent))
        } catch {
            throw .internalError("an \(type.vaultName) key version does not load: \(error)")
        }
        guard signature.count == modulusBytes, let message = operation.apply(signature) else { return false }
        switch algorithm {
        case .pss:
            let hashBytes = try hash.requireHashFunction()
            guard hashed.count == hashBytes else { return false }
            let emBits = modulusBits - 1
            let emLength = (emBits + 7) / 8
            guard message.prefix(modulusBytes - emLength).allSatisfy({ $0 == 0 }) else { return false }
            let salt: Int? =
                switch saltLength.normalized {
                case .auto: nil
                case .hash: hashBytes
                case .bytes(let count): count
                }
            return try pssVerify(hashed, encoded: Array(message.suffix(emLength)), emBits: emBits, saltBytes: salt, hash: hash)
        case .pkcs1v15:
            guard let expected = try? pkcs1Encode(hashed, hash: hash, modulusBytes: modulusBytes) else { return false }
            return expected == message
        }
    }

    /// Go's salt lengths: auto (0) signs with the longest salt, hash (-1) with the hash's length;
    /// anything outside -1 ... longest is Vault's "requested salt length N is invalid".
    static func pssSaltBytes(_ saltLength: TransitSaltLength, modulusBits: Int, hashBytes: Int) throws(SecretsError) -> Int {
        let longest = (modulusBits - 1 + 7) / 8 - 2 - hashBytes
        switch saltLength.normalized {
        case .auto: return longest
        case .hash: return hashBytes
        case .bytes(let count):
            guard count >= 1, count <= longest else { throw .badRequest("requested salt length \(count) is invalid") }
            return count
        }
    }

    /// EMSA-PSS-ENCODE (RFC 8017 §9.1.1), MGF1 with the message's hash.
    static func pssEncode(_ digest: Bytes, emBits: Int, salt: Bytes, hash: TransitHashAlgorithm) throws(SecretsError) -> Bytes {
        let hashBytes = digest.count
        let emLength = (emBits + 7) / 8
        guard emLength >= hashBytes + salt.count + 2 else { throw .badRequest("crypto/rsa: key size too small for PSS signature") }
        let h = try hash.digest(Bytes(repeating: 0, count: 8) + digest + salt)
        var db = Bytes(repeating: 0, count: emLength - salt.count - hashBytes - 2) + [0x01] + salt
        let mask = try mgf1(seed: h, count: db.count, hash: hash)
        for index in db.indices { db[index] ^= mask[index] }
        db[0] &= 0xFF >> (8 * emLength - emBits)
        return db + h + [0xBC]
    }

    /// EMSA-PSS-VERIFY; a nil salt length is Go's `PSSSaltLengthAuto`: the length is read from
    /// the encoding itself.
    static func pssVerify(_ digest: Bytes, encoded: Bytes, emBits: Int, saltBytes: Int?, hash: TransitHashAlgorithm) throws(SecretsError)
        -> Bool
    {
        let hashBytes = digest.count
        let emLength = encoded.count
        guard emLength >= hashBytes + (saltBytes ?? 0) + 2, encoded.last == 0xBC else { return false }
        let unusedBits = 8 * emLength - emBits
        var db = Array(encoded[0..<(emLength - hashBytes - 1)])
        let h = Array(encoded[(emLength - hashBytes - 1)..<(emLength - 1)])
        guard db[0] & ~(0xFF >> unusedBits) == 0 else { return false }
        let mask = try mgf1(seed: h, count: db.count, hash: hash)
        for index in db.indices { db[index] ^= mask[index] }
        db[0] &= 0xFF >> unusedBits
        guard let marker = db.firstIndex(where: { $0 != 0 }), db[marker] == 0x01 else { return false }
        let salt = Array(db[(marker + 1)...])
        if let saltBytes, salt.count != saltBytes { return false }
        return try hash.digest(Bytes(repeating: 0, count: 8) + digest + salt) == h
    }

    static func mgf1(seed: Bytes, count: Int, hash: TransitHashAlgorithm) throws(SecretsError) -> Bytes {
        var mask: Bytes = []
        var counter: UInt32 = 0
        while mask.count < count {
            mask += try hash.digest(seed + withUnsafeBytes(of: counter.bigEndian) { Array($0) })
            counter += 1
        }
        return Array(mask.prefix(count))
    }

    /// EMSA-PKCS1-v1_5: 00 01 FF…FF 00 DigestInfo(hash) — or, for `.unhashed`, the input alone
    /// (Go's `SignPKCS1v15` with hash 0, Vault's `hash_algorithm=none`).
    static func pkcs1Encode(_ hashed: Bytes, hash: TransitHashAlgorithm, modulusBytes: Int) throws(SecretsError) -> Bytes {
        if let expected = hash.digestByteCount, hashed.count != expected {
            throw .badRequest("crypto/rsa: input must be hashed message")
        }
        let payload = hash.digestInfoPrefix + hashed
        guard modulusBytes >= payload.count + 11 else { throw .badRequest("crypto/rsa: message too long for RSA key size") }
        return [0x00, 0x01] + Bytes(repeating: 0xFF, count: modulusBytes - payload.count - 3) + [0x00] + payload
    }
}

/// x^e mod n for a public RSA key, in Montgomery form over 64-bit limbs. Only public values pass
/// through it (a signature and the public key), so it need not be constant-time.
struct RSAPublicOperation {
    /// Little-endian limbs of the modulus.
    let modulus: [UInt64]
    let exponent: Bytes
    /// -n⁻¹ mod 2⁶⁴.
    let inverse: UInt64
    /// R² mod n, R = 2^(64 · limbs).
    let rSquared: [UInt64]
    let byteCount: Int

    init(modulus bigEndian: Bytes, exponent: Bytes) {
        let trimmed = Array(bigEndian.drop(while: { $0 == 0 }))
        byteCount = trimmed.count
        modulus = Self.limbs(trimmed, count: (trimmed.count + 7) / 8)
        self.exponent = Array(exponent.drop(while: { $0 == 0 }))
        // Newton's iteration doubles the correct low bits each step: 1 → 64 in six.
        let lowest = modulus.first ?? 1
        var inverse: UInt64 = 1
        for _ in 0..<6 { inverse = inverse &* (2 &- lowest &* inverse) }
        self.inverse = 0 &- inverse
        var value = [UInt64](repeating: 0, count: modulus.count)
        if !value.isEmpty { value[0] = 1 }
        for _ in 0..<(128 * modulus.count) { Self.doubleModulo(&value, modulus) }
        rSquared = value
    }

    /// The public operation on a signature of the modulus' byte length; nil when the signature
    /// is not below the modulus (Go's verification fails it too).
    func apply(_ signature: Bytes) -> Bytes? {
        guard modulus.count > 0, modulus[0] & 1 == 1, !exponent.isEmpty else { return nil }
        let base = Self.limbs(signature, count: modulus.count)
        guard signature.count <= byteCount, Self.compare(base, modulus) < 0 else { return nil }
        let baseMontgomery = multiply(base, rSquared)
        var accumulator = baseMontgomery
        var started = false
        for byte in exponent {
            for bit in (0..<8).reversed() {
                if started { accumulator = multiply(accumulator, accumulator) }
                if byte >> bit & 1 == 1 {
                    if started { accumulator = multiply(accumulator, baseMontgomery) }
                    started = true
                }
            }
        }
        var one = [UInt64](repeating: 0, count: modulus.count)
        one[0] = 1
        return Self.bytes(multiply(accumulator, one), count: byteCount)
    }

    /// a · b · R⁻¹ mod n (CIOS), for a, b < n.
    func multiply(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        let count = modulus.count
        var t = [UInt64](repeating: 0, count: count + 2)
        for i in 0..<count {
            var carry: UInt64 = 0
            for j in 0..<count {
                let (high, low) = a[i].multipliedFullWidth(by: b[j])
                let (sum, overflow1) = t[j].addingReportingOverflow(low)
                let (total, overflow2) = sum.addingReportingOverflow(carry)
                t[j] = total
                carry = high &+ (overflow1 ? 1 : 0) &+ (overflow2 ? 1 : 0)
            }
            var (sum, overflow) = t[count].addingReportingOverflow(carry)
            t[count] = sum
            t[count + 1] &+= overflow ? 1 : 0
            let m = t[0] &* inverse
            let (high0, low0) = m.multipliedFullWidth(by: modulus[0])
            (_, overflow) = t[0].addingReportingOverflow(low0)
            carry = high0 &+ (overflow ? 1 : 0)
            for j in 1..<count {
                let (high, low) = m.multipliedFullWidth(by: modulus[j])
                let (sum1, overflow1) = t[j].addingReportingOverflow(low)
                let (total, overflow2) = sum1.addingReportingOverflow(carry)
                t[j - 1] = total
                carry = high &+ (overflow1 ? 1 : 0) &+ (overflow2 ? 1 : 0)
            }
            (sum, overflow) = t[count].addingReportingOverflow(carry)
            t[count - 1] = sum
            t[count] = t[count + 1] &+ (overflow ? 1 : 0)
            t[count + 1] = 0
        }
        var result = Array(t[0..<count])
        if t[count] != 0 || Self.compare(result, modulus) >= 0 { Self.subtract(&result, modulus) }
        return result
    }

    static func limbs(_ bigEndian: Bytes, count: Int) -> [UInt64] {
        var limbs = [UInt64](repeating: 0, count: max(count, (bigEndian.count + 7) / 8))
        for (offset, byte) in bigEndian.reversed().enumerated() { limbs[offset / 8] |= UInt64(byte) << (8 * UInt64(offset % 8)) }
        return limbs
    }

    static func bytes(_ limbs: [UInt64], count: Int) -> Bytes {
        var bytes = Bytes(repeating: 0, count: count)
        for index in 0..<count {
            let offset = count - 1 - index
            bytes[offset] = UInt8(truncatingIfNeeded: limbs[index / 8] >> (8 * UInt64(index % 8)))
        }
        return bytes
    }

    static func compare(_ a: [UInt64], _ b: [UInt64]) -> Int {
        for index in (0..<max(a.count, b.count)).reversed() {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            if x != y { return x < y ? -1 : 1 }
        }
        return 0
    }

    /// a -= b, for a ≥ b (mod 2^(64·count) when a carried out of its top limb).
    static func subtract(_ a: inout [UInt64], _ b: [UInt64]) {
        var borrow = false
        for index in a.indices {
            let (difference, borrow1) = a[index].subtractingReportingOverflow(b[index])
            let (result, borrow2) = difference.subtractingReportingOverflow(borrow ? 1 : 0)
            a[index] = result
            borrow = borrow1 || borrow2
        }
    }

    /// value = 2 · value mod n, for value < n.
    static func doubleModulo(_ value: inout [UInt64], _ modulus: [UInt64]) {
        var carry: UInt64 = 0
        for index in value.indices {
            let next = value[index] >> 63
            value[index] = value[index] << 1 | carry
            carry = next
        }
        if carry != 0 || compare(value, modulus) >= 0 { subtract(&value, modulus) }
    }
}
