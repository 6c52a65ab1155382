import AspenCore
import Foundation
import AspenNode
import AspenTransport
import Testing

@Suite("Node settings")
struct NodeSettingsTests {
    let file = """
        # a node's config
        node-id = 3
        data_dir = "/var/lib/aspen"   # underscores work too
        listen = "127.0.0.1:7103"
        heartbeat-ms = 50
        bootstrap = true
        """

    @Test("flags win over the environment, which wins over the file, which wins over the defaults")
    func precedence() throws {
        let parsed = try ConfigFile.parse(file)
        #expect(parsed["data-dir"] == "/var/lib/aspen")
        let settings = try NodeSettings.resolve(
            flags: ["listen": "127.0.0.1:9000"], environment: ["ASPEN_LISTEN": "127.0.0.1:8000", "ASPEN_HEARTBEAT_MS": "20"],
            file: parsed)
        #expect(settings.nodeID == 3)
        #expect(settings.listen.port == 9000)
        #expect(settings.sources["listen"] == .flag)
        #expect(settings.heartbeatMs == 20)
        #expect(settings.sources["heartbeat-ms"] == .environment)
        #expect(settings.dataDirectory == "/var/lib/aspen")
        #expect(settings.sources["data-dir"] == .file)
        #expect(settings.storage == "sqlite")
        #expect(settings.sources["storage"] == .default)
        #expect(settings.bootstrap)
        // The election timeout defaults to 10 to 20 heartbeats.
        #expect(settings.electionTimeoutMs == 200...399)
        #expect(settings.summary.contains("listen = 127.0.0.1:9000    # from flag"))
    }

    @Test("a relative data directory is made absolute, from the working directory (git reads paths the node writes from elsewhere)")
    func relativeDataDirectory() throws {
        let settings = try NodeSettings.resolve(flags: ["node-id": "1", "data-dir": "d1"], environment: [:], file: [:])
        #expect(settings.dataDirectory == FileManager.default.currentDirectoryPath + "/d1")
        #expect(try NodeSettings.resolve(flags: ["node-id": "1", "data-dir": "/srv/aspen"], environment: [:], file: [:]).dataDirectory == "/srv/aspen")
    }

    @Test("a node joins only when told to: ASPEN_TICKET, which the CLI reads, is not a join ticket; ASPEN_JOIN_TICKET is")
    func joinTicketVariable() throws {
        let base = ["node-id": "4", "data-dir": "/tmp/x"]
        let unasked = try NodeSettings.resolve(flags: base, environment: ["ASPEN_TICKET": Self.ticket], file: [:])
        #expect(unasked.ticket == nil)
        let told = try NodeSettings.resolve(flags: base, environment: ["ASPEN_JOIN_TICKET": Self.ticket], file: [:])
        #expect(told.ticket != nil)
        #expect(told.sources["ticket"] == .environment)
    }

    @Test("the cookie can come from a file, never both from a file and the command line")
    func cookieFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aspen-cookie-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("cookie")
        try Data("  s3cret\n".utf8).write(to: file)
        let base = ["node-id": "1", "data-dir": "/tmp/x"]
        let settings = try NodeSettings.resolve(flags: base, environment: ["ASPEN_COOKIE_FILE": file.path], file: [:])
        #expect(settings.cookie == "s3cret")
        func problem(_ flags: [String: String]) -> String {
            do {
                _ = try NodeSettings.resolve(flags: base.merging(flags) { $1 }, environment: [:], file: [:])
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(problem(["cookie": "x", "cookie-file": file.path]).contains("both give the cookie"))
        #expect(problem(["cookie-file": directory.appendingPathComponent("missing").path]).contains("cannot read"))
        let empty = directory.appendingPathComponent("empty")
        try Data("\n".utf8).write(to: empty)
        #expect(problem(["cookie-file": empty.path]).contains("is empty"))
    }

    @Test("every bad setting is refused with its name and where it came from")
    func problems() throws {
        func problem(flags: [String: String] = [:], environment: [String: String] = [:], file: [String: String] = [:]) -> String {
            do {
                _ = try NodeSettings.resolve(flags: flags, environment: environment, file: file)
                return "accepted"
            } catch {
                return error.description
            }
        }
        let base = ["node-id": "1", "data-dir": "/tmp/x"]
        #expect(problem(flags: ["data-dir": "/tmp/x"]).contains("node id is required"))
        #expect(problem(flags: base, environment: ["ASPEN_HEARTBEAT_MS": "fast"]).contains("ASPEN_HEARTBEAT_MS must be an integer"))
        #expect(problem(flags: base, file: ["storage": "floppy"]).contains("'storage' in the config file must be sqlite"))
        // A memory store would forget the node's vote on restart.
        #expect(problem(flags: base.merging(["storage": "memory"]) { $1 }).contains("--storage must be sqlite, not 'memory'"))
        #expect(problem(flags: base.merging(["election-timeout-ms": "900-100"]) { $1 }).contains("--election-timeout-ms must be MIN-MAX"))
        #expect(problem(flags: base.merging(["ticket": "aspen1broken"]) { $1 }).contains("--ticket"))
        #expect(problem(flags: base, file: ["colour": "blue"]).contains("unknown setting 'colour'"))
        #expect(problem(flags: base, environment: ["ASPEN_CI_UNTRUSTED_NETWORK": "open"]).contains("ASPEN_CI_UNTRUSTED_NETWORK must be none or host, not 'open'"))
        #expect(problem(flags: base, file: ["blob-min-replicas": "8"]).contains("'blob-min-replicas' in the config file"))
        #expect(problem(flags: base.merging(["peers": "2=nokey@host"]) { $1 }).contains("--peers"))
        #expect(problem(flags: base.merging(["bootstrap": "true", "ticket": Self.ticket]) { $1 }).contains("give one of them"))
        #expect(problem(flags: base.merging(["listen": "nowhere"]) { $1 }).contains("--listen is not HOST:PORT"))
        // The etcd endpoint's TLS files come as certificate and key, for an endpoint that exists.
        let etcd = base.merging(["etcd-listen": "127.0.0.1:2379"]) { $1 }
        #expect(problem(flags: etcd.merging(["etcd-cert-file": "c.pem"]) { $1 }).contains("--etcd-cert-file needs etcd-key-file too"))
        #expect(problem(flags: etcd, environment: ["ASPEN_ETCD_KEY_FILE": "k.pem"]).contains("ASPEN_ETCD_KEY_FILE needs etcd-cert-file too"))
        #expect(problem(flags: etcd, file: ["etcd-trusted-ca-file": "ca.pem"]).contains("client certificates need TLS"))
        // Reachable from other machines, the etcd endpoint needs client certificates: it has no
        // other authentication, and it can change the membership.
        let open = base.merging(["etcd-listen": "0.0.0.0:2379"]) { $1 }
        #expect(problem(flags: open).contains("--etcd-listen 0.0.0.0 is reachable from other machines"))
        #expect(problem(flags: open.merging(["etcd-cert-file": "c.pem", "etcd-key-file": "k.pem"]) { $1 }).contains("needs client certificates"))
        #expect(problem(flags: open.merging(["etcd-cert-file": "c.pem", "etcd-key-file": "k.pem", "etcd-trusted-ca-file": "ca.pem"]) { $1 }) == "accepted")
        // With capability tokens required, TLS alone will do: clients authenticate with them.
        #expect(problem(flags: open.merging(["etcd-cert-file": "c.pem", "etcd-key-file": "k.pem", "auth": "required"]) { $1 }) == "accepted")
        #expect(problem(flags: open.merging(["auth": "required"]) { $1 }).contains("or TLS (etcd-cert-file, etcd-key-file) with --auth required"))
        #expect(problem(flags: base.merging(["auth": "sometimes"]) { $1 }).contains("must be off, required or auto"))
        #expect(problem(flags: base.merging(["trusted-roots": "abc"]) { $1 }).contains("is not a public key"))
        #expect(problem(flags: base.merging(["etcd-cert-file": "c.pem", "etcd-key-file": "k.pem"]) { $1 }).contains("needs etcd-listen"))
        let secured = try NodeSettings.resolve(
            flags: etcd.merging(["etcd-cert-file": "c.pem", "etcd-key-file": "k.pem"]) { $1 }, environment: [:], file: [:])
        #expect(secured.etcdTLS == NodeSettings.TLSFiles(certificate: "c.pem", key: "k.pem"))
        // Automatic compaction: etcd's spellings, each mistake named.
        #expect(problem(flags: base.merging(["auto-compaction-retention": "soon"]) { $1 }).contains("--auto-compaction-retention in periodic mode"))
        #expect(
            problem(flags: base.merging(["auto-compaction-retention": "1h", "auto-compaction-mode": "revision"]) { $1 })
                .contains("not a positive number of revisions"))
        #expect(problem(flags: base, environment: ["ASPEN_AUTO_COMPACTION_MODE": "daily"]).contains("ASPEN_AUTO_COMPACTION_MODE must be periodic or revision"))
        func autoCompaction(_ settings: [String: String]) throws -> AutoCompaction.Mode? {
            try NodeSettings.resolve(flags: base.merging(settings) { $1 }, environment: [:], file: [:]).autoCompaction
        }
        #expect(try autoCompaction([:]) == nil)
        #expect(try autoCompaction(["auto-compaction-retention": "0"]) == nil)
        #expect(try autoCompaction(["auto-compaction-retention": "30m"]) == .periodic(retentionMs: 1_800_000))
        #expect(try autoCompaction(["auto-compaction-retention": "2"]) == .periodic(retentionMs: 7_200_000))
        #expect(try autoCompaction(["auto-compaction-retention": "1000", "auto-compaction-mode": "revision"]) == .revision(revisions: 1000))
        let summary = try NodeSettings.resolve(flags: base.merging(["auto-compaction-retention": "90s"]) { $1 }, environment: [:], file: [:]).summary
        #expect(summary.contains("auto-compaction-retention = 90s    # from flag"))
    }

    static let ticket = ClusterTicket(clusterID: [1], peers: [.init(id: 1, key: NodeIdentity().key, host: "127.0.0.1", port: 1)]).encoded

    @Test("the config file format: strings, integers, booleans, comments; anything else names its line")
    func configFile() throws {
        #expect(try ConfigFile.parse("a = \"x # not a comment\" # comment\nb = 1_000\nc = false") == ["a": "x # not a comment", "b": "1000", "c": "false"])
        func problem(_ text: String) -> String {
            do {
                _ = try ConfigFile.parse(text, name: "node.toml")
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(problem("[server]\nport = 1") == "node.toml, line 1: tables are not supported; write every setting at the top level")
        #expect(problem("a = 1\nb = [1, 2]").hasPrefix("node.toml, line 2:"))
        #expect(problem("a = \"open").contains("unterminated string"))
        #expect(problem("a = 1\na = 2").contains("'a' is set twice"))
        #expect(problem("just words").contains("expected key = value"))
    }
}

extension NodeSettingsTests {
    @Test("a Vault endpoint beyond loopback needs TLS and credentials: it makes auto require them, and --auth off is refused")
    func vaultBeyondLoopback() throws {
        let base = ["node-id": "1", "data-dir": "/tmp/aspen-settings-vault"]
        func problem(_ flags: [String: String]) -> String {
            do {
                _ = try NodeSettings.resolve(flags: base.merging(flags) { $1 }, environment: [:], file: [:])
                return ""
            } catch {
                return error.description
            }
        }
        #expect(problem(["vault-listen": "0.0.0.0:8200"]).contains("vault-cert-file"))
        let tls = ["vault-listen": "0.0.0.0:8200", "vault-cert-file": "c.pem", "vault-key-file": "k.pem"]
        #expect(problem(tls.merging(["auth": "off"]) { $1 }).contains("needs credentials"))
        let settings = try NodeSettings.resolve(flags: base.merging(tls) { $1 }, environment: [:], file: [:])
        #expect(settings.listensBeyondLoopback, "auth auto then requires credentials")
        let local = try NodeSettings.resolve(flags: base.merging(["vault-listen": "127.0.0.1:8200"]) { $1 }, environment: [:], file: [:])
        #expect(!local.listensBeyondLoopback)
    }
}
