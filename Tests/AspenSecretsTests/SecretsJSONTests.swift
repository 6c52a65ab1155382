import AspenCore
import AspenKV
import Crypto
import Foundation
import Testing

@testable import AspenSecrets

/// The Vault API's JSON writer and time format against Foundation's, which they replaced.
struct SecretsJSONTests {
    func text(_ value: Any) -> String { String(decoding: SecretsJSON.encode(value), as: UTF8.self) }

    @Test("parsed JSON is written back to the same value: numbers stay numbers, booleans booleans")
    func roundTrip() throws {
        let documents = [
            #"{"a":true,"b":1,"c":1.5,"d":12345678901234567890,"e":false,"f":0,"g":-3,"h":1e300,"i":null,"j":"s"}"#,
            #"{"nested":{"list":[1,"two",{"three":[true,null]}],"empty":{},"none":[]},"quote":"a\"b\\c\n\t\u0001é/😀"}"#,
            #"[0.1,-0.000001,123456789012,1e-7,-9223372036854775808,18446744073709551615]"#,
            #"{"big":12345678901234567890123,"long":0.1234567890123456789,"huge":-99999999999999999999}"#,
            #""only a string""#, "42", "true", "null",
        ]
        for document in documents {
            let parsed = try JSONSerialization.jsonObject(with: Data(document.utf8), options: [.fragmentsAllowed])
            let written = SecretsJSON.encode(parsed)
            let reparsed = try JSONSerialization.jsonObject(with: Data(written), options: [.fragmentsAllowed])
            // Foundation's sorted writer is the judge of "the same value".
            let before = try JSONSerialization.data(withJSONObject: parsed, options: [.fragmentsAllowed, .sortedKeys])
            let after = try JSONSerialization.data(withJSONObject: reparsed, options: [.fragmentsAllowed, .sortedKeys])
            #expect(before == after, "\(document) → \(text(parsed))")
            // Types survive: a `1` is not written as `true`, nor `true` as `1`.
            #expect(text(parsed).contains("true") == document.contains("true"), "\(document) → \(text(parsed))")
        }
        #expect(text(try JSONSerialization.jsonObject(with: Data(#"{"b":1,"t":true}"#.utf8))) == #"{"b":1,"t":true}"#)
        // Numbers beyond a double's 17 digits keep every digit (a stored secret is not rounded).
        let big = text(try JSONSerialization.jsonObject(with: Data(#"[12345678901234567890123,0.1234567890123456789]"#.utf8)))
        #expect(big == "[12345678901234567890123,0.1234567890123456789]", "\(big)")
    }

    @Test("Swift values: keys in byte order, escapes, integers, doubles")
    func swiftValues() {
        #expect(text(["b": 1, "a": "x", "C": true, "é": NSNull()] as [String: Any]) == #"{"C":true,"a":"x","b":1,"é":null}"#)
        #expect(text(["v": Int64(-5), "d": 2.5, "w": 3.0, "l": [1, 2] as [Any], "s": ["k": "v"]] as [String: Any]) == #"{"d":2.5,"l":[1,2],"s":{"k":"v"},"v":-5,"w":3}"#)
        #expect(text("line\n\"q\"\\ \u{7}") == #""line\n\"q\"\\ \u0007""#)
        // A value the writer does not know goes through Foundation's, or becomes null.
        #expect(text(Double.nan) == "null")
    }

    @Test("request ids are version 4 UUIDs in lower case")
    func requestIDs() {
        for _ in 0..<50 {
            let id = String(decoding: SecureRandom.uuid(), as: UTF8.self)
            let parts = id.split(separator: "-").map(\.count)
            #expect(parts == [8, 4, 4, 4, 12] && id.allSatisfy { "0123456789abcdef-".contains($0) }, "\(id)")
            #expect(Array(id)[14] == "4" && "89ab".contains(Array(id)[19]), "\(id)")
        }
    }

    @Test("times are RFC 3339 in UTC to the millisecond, as the C library's gmtime makes them")
    func times() {
        var random = SplitMix64(seed: 7)
        let samples: [Int64] = [0, 1, 999, 86_399_999, 951_782_400_000, 4_107_542_399_999, -1, -86_400_001, 1_733_443_200_123]
            + (0..<2000).map { _ in Int64.random(in: -30_610_224_000_000...253_402_300_799_999, using: &random) }
        for ms in samples {
            var seconds = time_t(ms >= 0 ? ms / 1000 : (ms - 999) / 1000)
            let millis = ms - Int64(seconds) * 1000
            var parts = tm()
            gmtime_r(&seconds, &parts)
            var buffer = [CChar](repeating: 0, count: 64)
            let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
            let expected = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) + String(format: ".%03lldZ", millis)
            #expect(VaultTime.format(ms: ms) == expected, "\(ms)")
        }
    }
}

struct EnvelopeTests {
    @Test("the envelope's key and nonce are HKDF-SHA256 of the data key and salt, byte for byte")
    func derivation() {
        var random = SplitMix64(seed: 11)
        for _ in 0..<200 {
            let key = DataKey(SymmetricKey(data: (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }))
            let salt = (0..<DataKey.saltBytes).map { _ in UInt8.random(in: 0...255, using: &random) }
            let (subkey, nonce) = key.derive(salt)
            let derived = subkey.withUnsafeBytes { Array($0) } + Array(nonce)
            #expect(derived == key.derivedWithHKDF(salt))
        }
        // And what is sealed opens, under its storage key only.
        let key = DataKey.random()
        let sealed = key.seal(Array("canary".utf8), storageKey: [1, 2])
        #expect((try? key.open(sealed, storageKey: [1, 2])) == Array("canary".utf8))
        #expect((try? key.open(sealed, storageKey: [1, 3])) == nil)
    }
}
