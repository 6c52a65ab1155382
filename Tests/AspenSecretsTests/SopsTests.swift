import AspenCore
import Foundation
import AspenTesting
import Testing

@testable import AspenSecrets

/// Files written by the real sops 3.11.0 (`sops encrypt --age …`), and the test identity they
/// are for; plus files built here by a Python script (the `cryptography` package and the real
/// `age`) following sops's rules, in YAML, JSON and TOML.
@Suite struct SopsTests {
    static let fixtureIdentity = "AGE-SECRET-KEY-1LXEGC9HES5W0X7SYC6Y0TWMKWAV9E23ZAVFJLRL8W69FPHFQS3YQFH4YFN"
    static let fixtureRecipient = "age1e5wed9y6w23es05j08c9ardv5fcrjmx7kurf0hmgss8lj0tp849qrf03a3"

    /// sops 3.11.0 of (comments, a block string, a timestamp, an unencrypted key, an empty
    /// string and a null included):
    ///
    ///     # bootstrap secrets
    ///     db: {password: "hunter2", port: 5432, ratio: 0.25, tls: true, user_unencrypted: admin, empty: "", nothing: null}
    ///     hosts: [alpha, {name: beta, weight: 3}]
    ///     created_unencrypted: 2024-01-02T03:04:05.120Z
    ///     expires: 2025-06-30
    ///     note: "line one\nline two\n"
    static let yamlFixture = #"""
#ENC[AES256_GCM,data:t0JCbLivfRK8XyKZFheB4whE,iv:JFQeigMl9Ih9xW44cn6XExw0Jblh76s223wLXL9m7kg=,tag:X8oKGaGnb7ZicqrpQ5VwuA==,type:comment]
db:
    password: ENC[AES256_GCM,data:SYXzT9e9Cw==,iv:NkqXp1nwD9WixWu1TKfyS+WfA0idcuHAuODWWXFM0LM=,tag:I5B6AQFwxn2/KVlfL8Xxdg==,type:str]
    port: ENC[AES256_GCM,data:wXBviA==,iv:SXy4GBwfkhErdOWcmm0msJZ672TtbdY+ueZdx1pjHQ8=,tag:vEDsucdNIKrbI2+S/HNA9Q==,type:int]
    ratio: ENC[AES256_GCM,data:Oa/xBQ==,iv:p1VyrOhk/7ZJkl9MotZVrihPGGs15Jgkjt0tThxjsAk=,tag:icyoOUdO6iDjPCiFmWyGEg==,type:float]
    tls: ENC[AES256_GCM,data:I7qDiw==,iv:RAR8YlGSFXHz1LyznP27c3yn5kMrrXyrSGKnV+ma55k=,tag:4M7SYNkgbxXj7pJuj+Pa7w==,type:bool]
    user_unencrypted: admin
    empty: ""
    nothing: null
hosts:
    - ENC[AES256_GCM,data:z1b0f6w=,iv:DY880wmINmzgKCVxGKsX1kekn+MfSfRGCGPs8la/q8Q=,tag:8dbBSY9467qxvb435aNQfw==,type:str]
    - name: ENC[AES256_GCM,data:7tLu+Q==,iv:LbVN9xxlKv0fjwzToxeDEZvbii3tUuVSVZW5bGT0Yz4=,tag:+IR/bwNHXT4ijn+ZgipggA==,type:str]
      weight: ENC[AES256_GCM,data:uA==,iv:dAFbs4XUgEyBDIz7xOwGoah0SF9PZq3AGenAKrfK3cM=,tag:76OEAUuJEfwPtqndKky1WA==,type:int]
created_unencrypted: 2024-01-02T03:04:05.12Z
expires: ENC[AES256_GCM,data:Jvm/AyjOSFUs48/30/q4RVZMPpc=,iv:nuPtCRiLujS9D4GZJ7ZsJvjoZz5RrS43DMkoIYfq6Rs=,tag:tKC+vn6yELtOB5pfDgGV7Q==,type:time]
note: ENC[AES256_GCM,data:ZX9o0Y9kd8GsuIrbaw4mBt2D,iv:YoQ90WF0I11MyOuk/0LrBtpPczSkacTbxyzWbvO/0rc=,tag:bJWUfjfYt9C0XA1pFBI4Ww==,type:str]
sops:
    age:
        - recipient: age1e5wed9y6w23es05j08c9ardv5fcrjmx7kurf0hmgss8lj0tp849qrf03a3
          enc: |
            -----BEGIN AGE ENCRYPTED FILE-----
            YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSB0V2JxNW9OM2FYR2VaNEI1
            alFjb1ZxTUNLSnoxWXdnS1dUSTF2Q1NVV1NnCjVvRkFaRmJic1pFTnB1NWpCVS9k
            andNQnF5VGF5RHZXUE43TkdMd21JdmsKLS0tIDdFVWFnTUZKYTVOMGY1SThOOVZs
            YVJKSy91bkl6MFFUUk1EY3JtQnpWN2cKf7NgWqVFzxQL+CdIG4FkqOmvhV8rEDWq
            j9APqphR5BfLmcJy2WR570RAUtuwf4EFtX6+7iOsQCXCTkAjuQXsIg==
            -----END AGE ENCRYPTED FILE-----
    lastmodified: "2026-12-05T20:19:21Z"
    mac: ENC[AES256_GCM,data:GE4m9kU01G1uiYdirLrac2vNzoCA8KeLUOBCrF+4CWNfg5W0P9lV27v069zIDNS/boF19ZlxNPExcFPClLQtbJCStEvubwgaRJtO6Bfawhp1shnsabKyFV3ldRdh1mHIByZ9y2Xb8k7CPODxiD/DVDbexx5YmrIslCnI6iJxkb4=,iv:3RYCsOSZu0Kp4sfzDM9w24zABeLPmYozW347n9y2umI=,tag:N4h/jPJ+vRD/dD0APZo4GQ==,type:str]
    unencrypted_suffix: _unencrypted
    version: 3.11.0
"""#

    /// sops 3.11.0 of `{"service": {"token": "s3cr3t", "retries": 7, "timeout": 1.5, "enabled": false,
    /// "name_unencrypted": "api"}, "list": ["a", 2, {"k": "v"}], "big": 1e21, "none": null}`.
    static let jsonFixture = #"""
{
	"service": {
		"token": "ENC[AES256_GCM,data:avK/lnkO,iv:IO+W5yJPrBX2Vmv7FIh+Yr/NEFbSMItyqvIrovI+YxQ=,tag:uo0Nio3HVqXqAh5ViBlz6g==,type:str]",
		"retries": "ENC[AES256_GCM,data:YQ==,iv:JiEzp1N6fs+eXJERt1VEiEkK7e1qVOfIIXwidt7gzYE=,tag:jecLCDa2A7yZ6ixkOv8IgQ==,type:float]",
		"timeout": "ENC[AES256_GCM,data:s4K4,iv:7QyPbZyf+28PQURAb4oeAFBBg9b0l0MAD3A+yNAmhPo=,tag:XOWMQt6gh5FlGl2UjPjfuQ==,type:float]",
		"enabled": "ENC[AES256_GCM,data:RwzYAdg=,iv:7xsOwKIXhYocrBv0wKRZOZuSYevrpnz0y+bzLdKzGSk=,tag:mKAJ0pL834u2GZU26PcnNQ==,type:bool]",
		"name_unencrypted": "api"
	},
	"list": [
		"ENC[AES256_GCM,data:sA==,iv:j9bQoeK6eef5xfNxzuEBE5bB2aYNzwoYc70p5QiTS94=,tag:kpOljnFgaunfF/Q5kR/Elg==,type:str]",
		"ENC[AES256_GCM,data:dg==,iv:2Bi1TjrGEP+SCoWwmyccbRrr9bOYtSNZrQmFLSjgf4A=,tag:wssAsEWWjXQ+uTvIHmVCKA==,type:float]",
		{
			"k": "ENC[AES256_GCM,data:zg==,iv:89N/Woyy1+LiVFZ7Ya/+whytezYgVs+sDy4A3JPHxlw=,tag:jHawzVohwdm/Ep4ouGdT2A==,type:str]"
		}
	],
	"big": "ENC[AES256_GCM,data:LoFNrPe7Oop2bCQaecxUfjTh2j+Khg==,iv:weri3AlkqnUr7A03HfnSIKdlUt+Gbh7wVFDeUDADx5U=,tag:ZV48zQWceOJ/IcT79htkGA==,type:float]",
	"none": null,
	"sops": {
		"age": [
			{
				"recipient": "age1e5wed9y6w23es05j08c9ardv5fcrjmx7kurf0hmgss8lj0tp849qrf03a3",
				"enc": "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBIL1FpTWo0a2lwa1pKcjFJ\nQWQxZzJWUStwVGFhTDhFT280UDIwQlk3Nm1VCjI4UTVtWFhyQnlaS0prbkUxNDRj\nWGFuTHRqMlFvZ1VOUUg1QTJiTkE0ZWMKLS0tIE9Sc3AweTFZcnhkZUZCcTNFQ3RU\nNlR3U08ycjFLVkxuY2FCR3IwSUFTancKGl06Bb93MM45Ejnn8ZSVV9pn9NdydWr9\nrfvXaYnzyI2/l/EksZdjti5Z6y97UagelqTk+zM14aLVY7TLJgCmkQ==\n-----END AGE ENCRYPTED FILE-----\n"
			}
		],
		"lastmodified": "2026-12-05T20:19:21Z",
		"mac": "ENC[AES256_GCM,data:pIchFUDazPf49nwOCILbduK9rfni8NBmLbQM9/fqFx8fnSpWsh04JBZTChpoKTUFd4kWA6BMXHTFOo95PfXBhw81jzZVQEj2iQoK43cMshMliSPb+6d4BV2h6TCAjkezbQESmO3Qjt+zUFDOK06nT3agxpGPasMOVf307nh8EuQ=,iv:rApwJwUaKyyTMeRt/XglTrenG6V9w3GiLXh9m61tXHI=,tag:ZqC2Q0w/O/NGxlQo/yyxRQ==,type:str]",
		"unencrypted_suffix": "_unencrypted",
		"version": "3.11.0"
	}
}
"""#

    /// sops 3.11.0 with `encrypted_regex: ^(password|token)$` and `mac_only_encrypted: true`.
    static let regexFixture = #"""
app:
    password: ENC[AES256_GCM,data:L7PJ,iv:Chva85+lmsjIHV0X3QrEHpTzUgRYaRaCaXhLVcoMgCQ=,tag:9CD3C/XnPk/lS7/3HAMMLw==,type:str]
    url: https://example.com
    token: ENC[AES256_GCM,data:f/c=,iv:Ak2B92saXRW3uIDcEmX/IHfx/0LpnucNGbpwoN79MfQ=,tag:H/6ctK6HJjz8fFRLxBZXdA==,type:str]
    port: 8080
sops:
    age:
        - recipient: age1e5wed9y6w23es05j08c9ardv5fcrjmx7kurf0hmgss8lj0tp849qrf03a3
          enc: |
            -----BEGIN AGE ENCRYPTED FILE-----
            YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBtbGVEUnhYanplNWZCNUV2
            Wm9uN2lHV2tUNjdBaTI4MEpGWHlNbHlNcjNVCnVJbmF1OCtKSGxuZFBYbXNqQzIw
            TWtvbHBhQTh6Sm1uNFp2cDNnSDJaSVUKLS0tIDhhMjNSLzJSQUQ0SGNNbkU3eVJ2
            ZEZQd0JKRlBzemp1c2NlakN6VUlhQUUKhslGcwwElVdgyrV1Epc3s5r8cmAb3sFb
            Lr7mJc87Rkiz600eW0H496fO9I2ykz6V9jubggG+BV0tsMIDCCrqww==
            -----END AGE ENCRYPTED FILE-----
    lastmodified: "2026-12-05T20:19:25Z"
    mac: ENC[AES256_GCM,data:MCNuTTf/mNOfNGj3eDeV5kg+rDVUjdR08maSeRXT9HAwc1ZgB9p84czIf0yk+QaKoeK8ok2gDFEz7slY9dmL8kyeMmpNWwJ3WE4+PFfnJIbkwHiFdfZwP5kBl5SzWmCat0JvhMvYyo+QapV0M/rIBGieDTioovSeKtCIZj7iPcw=,iv:PKQrFwfnLPrd8WF95c5xkzaRmcQasZihaQlagjMvw4o=,tag:ONVgQeprHRJ0r25QL2jWkQ==,type:str]
    encrypted_regex: ^(password|token)$
    mac_only_encrypted: true
    version: 3.11.0
"""#

    static func identities() throws -> [AgeIdentity] { try AgeIdentity.parseFile(fixtureIdentity + "\n") }

    static func open(_ text: String, _ format: SopsFormat, limits: Limits = .standard) throws(SopsError) -> SopsDocument {
        let identities: [AgeIdentity]
        do { identities = try AgeIdentity.parseFile(fixtureIdentity) } catch { throw .dataKey("the test identity does not parse: \(error)") }
        return try Sops.decrypt(Array(text.utf8), format: format, identities: identities, limits: limits)
    }

    static func lines(_ document: SopsDocument) -> [String] {
        document.flattened.map { $0.path.joined(separator: ".") + "=" + $0.value }
    }

    // MARK: Files the real sops wrote

    @Test func readsRealSopsYAML() throws {
        let document = try Self.open(Self.yamlFixture, .yaml)
        #expect(Self.lines(document) == [
            "db.password=hunter2", "db.port=5432", "db.ratio=0.25", "db.tls=true", "db.user_unencrypted=admin", "db.empty=",
            "hosts.0=alpha", "hosts.1.name=beta", "hosts.1.weight=3", "created_unencrypted=2024-01-02T03:04:05.12Z",
            "expires=2025-06-30T00:00:00Z", "note=line one\nline two\n",
        ])
        #expect(document.tree["db"]?["port"] == .integer(5432))
        #expect(document.tree["db"]?["ratio"] == .float(0.25))
        #expect(document.tree["db"]?["tls"] == .bool(true))
        #expect(document.tree["db"]?["nothing"] == .null)
        #expect(document.tree["sops"] == nil)
        #expect(document.version == "3.11.0")
        #expect(document.openedFor == Self.fixtureRecipient)
    }

    @Test func readsRealSopsJSON() throws {
        let document = try Self.open(Self.jsonFixture, .json)
        #expect(Self.lines(document) == [
            "service.token=s3cr3t", "service.retries=7", "service.timeout=1.5", "service.enabled=false", "service.name_unencrypted=api",
            "list.0=a", "list.1=2", "list.2.k=v", "big=1000000000000000000000",
        ])
    }

    @Test func readsRealSopsEncryptedRegexWithMACOnlyEncrypted() throws {
        let document = try Self.open(Self.regexFixture, .yaml)
        #expect(Self.lines(document) == ["app.password=pw1", "app.url=https://example.com", "app.token=tk", "app.port=8080"])
        // With mac_only_encrypted, sops's MAC does not cover cleartext values: an altered url passes.
        let altered = try Self.open(Self.regexFixture.replacingOccurrences(of: "https://example.com", with: "https://evil.example"), .yaml)
        #expect(altered.tree["app"]?["url"] == .string("https://evil.example"))
    }

    // MARK: Refusals

    @Test func alteredCleartextValueBreaksTheMAC() throws {
        let altered = Self.yamlFixture.replacingOccurrences(of: "user_unencrypted: admin", with: "user_unencrypted: root")
        #expect(altered != Self.yamlFixture)
        do {
            _ = try Self.open(altered, .yaml)
            Issue.record("an altered file opened")
        } catch {
            #expect(error == .macMismatch)
            #expect(error.message == "the SOPS file's MAC does not match: it was altered")
        }
        let reordered = Self.jsonFixture.replacingOccurrences(of: "\"name_unencrypted\": \"api\"", with: "\"name_unencrypted\": \"apj\"")
        #expect(throws: SopsError.macMismatch) { try Self.open(reordered, .json) }
    }

    @Test func flippedCiphertextByteIsRefused() throws {
        let line = try #require(Self.yamlFixture.split(separator: "\n").first { $0.contains("password: ENC[") })
        let data = try #require(line.range(of: "data:"))
        var flipped = String(line)
        let index = flipped.index(flipped.startIndex, offsetBy: line.distance(from: line.startIndex, to: data.upperBound))
        flipped.replaceSubrange(index...index, with: flipped[index] == "A" ? "B" : "A")
        let altered = Self.yamlFixture.replacingOccurrences(of: String(line), with: flipped)
        do {
            _ = try Self.open(altered, .yaml)
            Issue.record("a flipped ciphertext opened")
        } catch {
            guard case .value(let path, let reason) = error else { Issue.record("unexpected \(error)"); return }
            #expect(path == "db:password:")
            #expect(reason.contains("does not decrypt"))
        }
    }

    @Test func valueMovedToAnotherKeyIsRefused() throws {
        // The path is the associated data: the same ciphertext under another key does not open.
        let moved = Self.yamlFixture.replacingOccurrences(of: "    password: ENC[", with: "    passwd: ENC[")
        #expect(throws: SopsError.self) { try Self.open(moved, .yaml) }
        do {
            _ = try Self.open(moved, .yaml)
        } catch {
            #expect(error.message.contains("db:passwd:"))
        }
        let retimed = Self.yamlFixture.replacingOccurrences(of: "lastmodified: \"2026", with: "lastmodified: \"2027")
        #expect(throws: SopsError.self) { try Self.open(retimed, .yaml) }
    }

    @Test func wrongIdentityIsRefused() throws {
        let (file, _) = try BootstrapTools.keygen()
        let stranger = try AgeIdentity.parseFile(file)
        do {
            _ = try Sops.decrypt(Array(Self.yamlFixture.utf8), format: .yaml, identities: stranger)
            Issue.record("a stranger opened the file")
        } catch {
            #expect(error == .noMatchingIdentity(recipients: [Self.fixtureRecipient]))
            #expect(error.message.contains("no identity matches any age recipient"))
        }
    }

    @Test func fileOverTheLimitIsRefused() throws {
        var limits = Limits()
        limits.sopsFileBytesMax = 1000
        do {
            _ = try Self.open(Self.yamlFixture, .yaml, limits: limits)
            Issue.record("a file over the limit was read")
        } catch {
            guard case .tooLarge(let message) = error else { Issue.record("unexpected \(error)"); return }
            #expect(message.contains("sopsFileBytesMax"))
            #expect(message.contains("1000 bytes"))
        }
        let directory = try BootstrapTools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("big.sops.yaml").path
        try Self.yamlFixture.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: SopsError.self) { try Sops.decryptFile(atPath: path, identities: try Self.identities(), limits: limits) }
    }

    @Test func readsFilesChoosingTheFormatByExtension() throws {
        let directory = try BootstrapTools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (name, text) in [("a.sops.yml", Self.yamlFixture), ("b.JSON", Self.jsonFixture)] {
            let path = directory.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try Sops.decryptFile(atPath: path, identities: try Self.identities()).openedFor == Self.fixtureRecipient)
        }
        #expect(SopsFormat(path: "/etc/aspen/secrets.sops.yaml") == .yaml)
        #expect(SopsFormat(path: "x.toml") == .toml)
        #expect(SopsFormat(path: "x.env") == nil)
        #expect(throws: SopsError.self) { try Sops.decryptFile(atPath: directory.appendingPathComponent("c.txt").path, identities: []) }
        #expect(throws: SopsError.self) { try Sops.decryptFile(atPath: directory.appendingPathComponent("missing.yaml").path, identities: []) }
    }

    @Test func unsupportedOrMissingMetadataIsRefused() throws {
        #expect(throws: SopsError.metadata("there is none: the file is not SOPS-encrypted")) { try Self.open("a: 1\n", .yaml) }
        let groups = Self.yamlFixture.replacingOccurrences(of: "sops:\n", with: "sops:\n    key_groups:\n        - age: []\n")
        do {
            _ = try Self.open(groups, .yaml)
            Issue.record("key_groups were accepted")
        } catch {
            #expect(error.message.contains("key_groups"))
        }
        #expect(throws: SopsError.self) { try Self.open("[1, 2]", .yaml) }
        #expect(throws: SopsError.self) { try Self.open("a: 1\n---\nb: 2\n", .yaml) }
        #expect(throws: SopsError.self) { try Self.open("{\"a\": 1, \"a\": 2, \"sops\": {}}", .json) }
        #expect(throws: SopsError.self) { try Self.open("a: 1\na: 2\n", .yaml) }
    }

    // MARK: Bounds

    @Test func nestingAndValueCountAreBounded() throws {
        let deepJSON = String(repeating: "{\"a\":", count: 40) + "1" + String(repeating: "}", count: 40)
        #expect(throws: SopsError.tooDeep(limit: Sops.depthMax)) { try Self.open(deepJSON, .json) }
        let deepYAML = "a: " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "\n"
        #expect(throws: SopsError.tooDeep(limit: Sops.depthMax)) { try Self.open(deepYAML, .yaml) }
        let veryDeepYAML = "a: " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "\n"
        #expect(throws: SopsError.self) { try Self.open(veryDeepYAML, .yaml) }
        let veryDeepJSON = String(repeating: "[", count: 100_000)
        #expect(throws: SopsError.self) { try Self.open("{\"a\":" + veryDeepJSON, .json) }
        let wide = "{\"a\": [" + Array(repeating: "0", count: Sops.valueCountMax + 1).joined(separator: ",") + "]}"
        #expect(throws: SopsError.tooManyValues(limit: Sops.valueCountMax)) { try Self.open(wide, .json) }
        // A billion laughs: aliases expand to 10⁶ values; the count stops it.
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for (name, previous) in [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("f", "e")] {
            bomb += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]\n"
        }
        #expect(throws: SopsError.tooManyValues(limit: Sops.valueCountMax)) { try Self.open(bomb, .yaml) }
        #expect(throws: SopsError.self) { try Self.open("{\"a\": \"\u{1}\"}", .json) }
        #expect(throws: SopsError.self) { try Sops.decrypt([0xFF, 0xFE], format: .yaml, identities: []) }
    }

    // MARK: Files built here with Python's cryptography and the real age



    static let tree = #"""
{"db": {"password": "hunter2", "port": 5432, "ratio": 0.25, "tls": true, "user_unencrypted": "admin", "empty": "", "zeta": "z"},
 "hosts": ["alpha", {"name": "beta", "weight": 3}, ["x", 1.5e21]], "note": "line one\nline two\n", "unicode": "h\u00e9llo \u2713"}
"""#

    /// A SOPS file of `tree` built by the Python generator, its data key wrapped (by the real age)
    /// for `recipients`, with a PGP entry no identity here can use.
    static func generate(_ format: SopsFormat, recipients: [String], tamper: String? = nil) throws -> [UInt8] {
        let directory = try BootstrapTools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            return try SopsFixture.make(format: format.rawValue, tree: tree, recipients: recipients, tamper: tamper, in: directory, pgp: true)
        } catch {
            Issue.record("\(error)")
            throw error
        }
    }

    @Test(arguments: [SopsFormat.yaml, .json, .toml])
    func readsGeneratedFiles(format: SopsFormat) throws {
        let stranger = try BootstrapTools.keygen()
        let bytes = try Self.generate(format, recipients: [stranger.recipient, Self.fixtureRecipient])
        let document = try Sops.decrypt(bytes, format: format, identities: try Self.identities())
        #expect(document.openedFor == Self.fixtureRecipient)
        let db = ["db.password=hunter2", "db.port=5432", "db.ratio=0.25", "db.tls=true", "db.user_unencrypted=admin", "db.empty=", "db.zeta=z"]
        let rest = [
            "hosts.0=alpha", "hosts.1.name=beta", "hosts.1.weight=3", "hosts.2.0=x", "hosts.2.1=1500000000000000000000",
            "note=line one\nline two\n", "unicode=héllo ✓",
        ]
        if format == .toml {
            // TOML keys in byte order.
            #expect(Self.lines(document) == [db[5], db[0], db[1], db[2], db[3], db[4], db[6]] + rest)
        } else {
            #expect(Self.lines(document) == db + rest)
        }
        #expect(document.tree["db"]?["port"] == .integer(5432))
        let beta = SopsValue.map([SopsField(key: "name", value: .string("beta")), SopsField(key: "weight", value: .integer(3))])
        #expect(document.tree["hosts"] == .list([.string("alpha"), beta, .list([.string("x"), .float(1.5e21)])]))
    }

    @Test(arguments: [SopsFormat.yaml, .json, .toml])
    func generatedFileWithAWrongMACIsRefused(format: SopsFormat) throws {
        let bytes = try Self.generate(format, recipients: [Self.fixtureRecipient], tamper: "mac")
        #expect(throws: SopsError.macMismatch) { try Sops.decrypt(bytes, format: format, identities: try Self.identities()) }
    }

    // MARK: Go's forms of scalars

    @Test func floatsAreWrittenAsGoWritesThem() {
        let cases: [(Double, String)] = [
            (1, "1"), (0.25, "0.25"), (100, "100"), (1e21, "1000000000000000000000"), (1e-7, "0.0000001"), (-0.0, "-0"),
            (123.456, "123.456"), (0.1 + 0.2, "0.30000000000000004"), (-2.5e-3, "-0.0025"), (.infinity, "+Inf"),
            (-.infinity, "-Inf"), (.nan, "NaN"), (1.5e300, "15" + String(repeating: "0", count: 299)),
            (Double.leastNonzeroMagnitude, "0." + String(repeating: "0", count: 323) + "5"),
        ]
        for (value, text) in cases { #expect(SopsNumbers.formatFloat(value) == text, "\(value)") }
    }

    @Test func plainYAMLScalarsResolveAsGoYAMLDoes() {
        let cases: [(String, SopsValue)] = [
            ("true", .bool(true)), ("False", .bool(false)), ("yes", .string("yes")), ("~", .null), ("null", .null),
            ("0x1F", .integer(31)), ("0o17", .integer(15)), ("017", .integer(15)), ("1_000", .integer(1000)), ("+12", .integer(12)),
            ("-9223372036854775808", .integer(Int.min)), ("9223372036854775808", .string("9223372036854775808")),
            ("1e3", .float(1000)), (".5", .float(0.5)), ("08", .float(8)), ("-0", .float(-0.0)), (".inf", .float(.infinity)),
            ("1.2.3", .string("1.2.3")), ("3.11.0", .string("3.11.0")),
            ("2024-01-02", .timestamp("2024-01-02T00:00:00Z")), ("2024-1-2 3:04:05.120", .timestamp("2024-01-02T03:04:05.12Z")),
            ("2024-01-02T03:04:05+02:00", .timestamp("2024-01-02T03:04:05+02:00")), ("2024-02-30", .string("2024-02-30")),
        ]
        for (text, expected) in cases { #expect(SopsYAML.resolvePlain(text) == expected, "\(text)") }
    }

    @Test func lastModifiedIsReformattedAsGoDoes() {
        #expect(SopsTime.canonical("2026-01-02T03:04:05.5+00:00", yaml: false, nanoseconds: false) == "2026-01-02T03:04:05Z")
        #expect(SopsTime.canonical("2026-01-02T03:04:05-07:30", yaml: false, nanoseconds: false) == "2026-01-02T03:04:05-07:30")
        #expect(SopsTime.canonical("2026-1-02T03:04:05Z", yaml: false, nanoseconds: false) == nil)
        #expect(SopsTime.canonical("2026-01-02 03:04:05", yaml: false, nanoseconds: false) == nil)
    }
}
