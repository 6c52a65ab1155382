import AspenCore
import Testing

@testable import AspenSecrets

/// What a node takes from a decrypted SOPS file: only entries that were encrypted in it.
struct BootstrapSecretsTests {
    static func document(_ fields: [SopsField], encrypted: Set<String>, macOnlyEncrypted: Bool = false) -> SopsDocument {
        SopsDocument(
            tree: .map(fields), version: "3.11.0", lastModified: "2026-01-02T03:04:05Z", openedFor: "age1x", encryptedPaths: encrypted,
            macOnlyEncrypted: macOnlyEncrypted)
    }

    @Test("entries read; a cleartext or mac_only_encrypted entry the node would trust is refused")
    func onlyEncryptedEntries() throws {
        let root = String(repeating: "ab", count: 32)
        let fields = [
            SopsField(key: "trusted_roots", value: .list([.string(root)])), SopsField(key: "cookie", value: .string("c")),
            SopsField(key: "kv", value: .map([SopsField(key: "secret/app/db", value: .map([SopsField(key: "user", value: .string("a"))]))])),
            SopsField(key: "note", value: .string("cleartext, not used")),
        ]
        let all: Set<String> = ["trusted_roots:", "cookie:", "kv:secret/app/db:user:"]
        let read = try BootstrapSecrets.from(Self.document(fields, encrypted: all), source: "f")
        #expect(read.trustedRoots == [root] && read.cookie == "c" && read.secrets.count == 1 && read.secrets[0].mount == "secret")
        for missing in all {
            #expect(throws: BootstrapSecrets.Problem.self, "\(missing) cleartext") {
                try BootstrapSecrets.from(Self.document(fields, encrypted: all.subtracting([missing])), source: "f")
            }
        }
        #expect(throws: BootstrapSecrets.Problem.self) {
            try BootstrapSecrets.from(Self.document(fields, encrypted: all, macOnlyEncrypted: true), source: "f")
        }
    }
}
