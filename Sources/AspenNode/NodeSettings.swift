import AspenAuth
import AspenCore
import AspenTransport
import Foundation

/// Everything `aspen-node run` can be told, each setting resolved from the first of: a
/// command-line flag, an `ASPEN_*` environment variable, the config file, the default.
public struct NodeSettings: Sendable, Equatable {
    public enum Source: String, Sendable { case flag, environment, file, `default` }

    public var nodeID: NodeID
    public var dataDirectory: String
    public var listen: (host: String, port: Int)
    public var http: (host: String, port: Int)?
    /// Where to serve etcd's v3 gRPC API, if anywhere; plaintext unless `etcdTLS` is set.
    public var etcdListen: (host: String, port: Int)?
    /// The etcd endpoint's TLS certificate and key (PEM files), and the CA whose certificates
    /// clients must present when given (etcd's --cert-file, --key-file, --trusted-ca-file).
    public var etcdTLS: TLSFiles?
    /// Where to serve Vault's HTTP API (the secrets engines), if anywhere; plain HTTP on
    /// loopback only, HTTPS (`vaultTLS`) anywhere.
    public var vaultListen: (host: String, port: Int)?
    public var vaultTLS: TLSFiles?
    /// A SOPS file (YAML, JSON or TOML) read at start with the age identities of
    /// `ageIdentityFile`: trusted roots, the cookie, initial kv-v2 secrets (docs/secrets.md).
    public var bootstrapSecrets: String?
    public var ageIdentityFile: String?
    public var cookie: String?
    public var ticket: ClusterTicket?
    public var peers: [NodeID: PeerAddress]
    public var bootstrap: Bool
    public var learner: Bool
    public var storage: String
    public var heartbeatMs: Int
    public var electionTimeoutMs: ClosedRange<Int>
    public var compactAfterEntries: UInt64
    /// How the leader compacts the key-value history by itself (nil: it does not).
    public var autoCompaction: AutoCompaction.Mode?
    public var logLevel: String
    /// Whether requests need capability credentials (`auto`: when listening beyond loopback, or
    /// when the cluster was founded with auth).
    public var auth: NodeAuth.Mode = .auto
    /// Root keys trusted beside the ones the cluster records.
    public var trustedRoots: [PublicKey] = []
    /// The credential a node joining a cluster that requires credentials asks to be added with
    /// (it needs cluster-admin).
    public var joinCredential: Credential?
    public var blob = BlobSettings()
    public var jobs = JobSettings()
    /// Where each setting came from, by name.
    public var sources: [String: Source]

    /// Every setting's name as a flag, environment variable (`ASPEN_` + upper case, `_` for `-`)
    /// and config file key, with its default (nil: required or off).
    public static let known: [(name: String, defaultValue: String?)] = [
        ("node-id", nil), ("data-dir", nil), ("listen", "127.0.0.1:7000"), ("http", nil), ("etcd-listen", nil), ("vault-listen", nil), ("vault-cert-file", nil), ("vault-key-file", nil), ("bootstrap-secrets", nil), ("age-identity-file", nil), ("etcd-cert-file", nil),
        ("etcd-key-file", nil), ("etcd-trusted-ca-file", nil), ("cookie", nil), ("cookie-file", nil), ("ticket", nil),
        ("peers", ""), ("bootstrap", "false"), ("learner", "false"), ("storage", "sqlite"), ("heartbeat-ms", "100"),
        ("election-timeout-ms", nil), ("compact-after-entries", "100000"),
        ("auto-compaction-mode", "periodic"), ("auto-compaction-retention", nil), ("log-level", "info"),
        ("auth", "auto"), ("trusted-roots", ""), ("join-credential-file", nil), ("blob-replicas", "3"), ("blob-min-replicas", "0"),
        ("blob-gc-grace-ms", "\(Limits.standard.blobGcGraceMs)"), ("blob-gc-interval-ms", "600000"), ("blob-scrub-interval-ms", "86400000"),
        ("blob-scrub-rate", "\(Limits.standard.blobScrubBytesPerSecond)"), ("blob-quota", "0"), ("job-workers", "2"), ("job-worker-tags", ""),
        ("ci-artifact-max", "\(Limits.standard.ciArtifactBytesMax)"), ("ci-runs-kept", "\(Limits.standard.ciRunsKeptPerRepo)"),
        ("ci-active-runs-per-repo", "\(Limits.standard.ciActiveRunsPerRepoMax)"), ("ci-active-runs", "\(Limits.standard.ciActiveRunsMax)"),
        ("ci-caches-kept", "\(Limits.standard.ciCachesPerRepoMax)"), ("ci-cache-repo-max", "\(Limits.standard.ciCacheBytesPerRepoMax)"),
        ("ci-untrusted-network", "none"),
        ("job-lease-ms", "30000"), ("job-retention-ms", "604800000"),
    ]

    /// The join ticket's variable is `ASPEN_JOIN_TICKET`, not `ASPEN_TICKET`: that one is the
    /// CLI's, which users export in their shell, and a node started there must not join the
    /// cluster (as a voter) unless told to.
    /// Whether `host` names this machine only: localhost, 127.0.0.0/8 or ::1.
    static func isLoopback(host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    public static func environmentName(_ name: String) -> String {
        if name == "ticket" { return "ASPEN_JOIN_TICKET" }
        return "ASPEN_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    public static func == (lhs: NodeSettings, rhs: NodeSettings) -> Bool {
        lhs.nodeID == rhs.nodeID && lhs.dataDirectory == rhs.dataDirectory && lhs.listen == rhs.listen
            && lhs.http?.host == rhs.http?.host && lhs.http?.port == rhs.http?.port && lhs.cookie == rhs.cookie
            && lhs.vaultListen?.host == rhs.vaultListen?.host && lhs.vaultListen?.port == rhs.vaultListen?.port
            && lhs.etcdListen?.host == rhs.etcdListen?.host && lhs.etcdListen?.port == rhs.etcdListen?.port && lhs.etcdTLS == rhs.etcdTLS
            && lhs.ticket == rhs.ticket && lhs.peers == rhs.peers && lhs.bootstrap == rhs.bootstrap && lhs.learner == rhs.learner
            && lhs.storage == rhs.storage && lhs.heartbeatMs == rhs.heartbeatMs && lhs.electionTimeoutMs == rhs.electionTimeoutMs
            && lhs.compactAfterEntries == rhs.compactAfterEntries && lhs.autoCompaction == rhs.autoCompaction && lhs.logLevel == rhs.logLevel && lhs.sources == rhs.sources
            && lhs.auth == rhs.auth && lhs.trustedRoots == rhs.trustedRoots && lhs.joinCredential?.id == rhs.joinCredential?.id
            && lhs.blob == rhs.blob && lhs.jobs == rhs.jobs
    }

    /// How a node keeps blobs: see docs/blobs.md.
    public struct BlobSettings: Sendable, Equatable {
        /// Copies of each new blob made before its add is acknowledged (at most the cluster's size).
        public var replicas = 3
        /// Copies that must hold a blob before its add is acknowledged; the rest are made as
        /// members answer (0: a majority of the copies asked for).
        public var minReplicas = 0
        /// See `Limits.blobGcGraceMs`; every node of a cluster should have the same.
        public var gcGraceMs = Limits.standard.blobGcGraceMs
        /// How often the leader collects garbage by itself (0: only when asked).
        public var gcIntervalMs: Int64 = 600_000
        /// How often the node re-verifies its blobs by itself (0: only when asked).
        public var scrubIntervalMs: Int64 = 86_400_000
        public var scrubBytesPerSecond = Limits.standard.blobScrubBytesPerSecond
        /// The bytes of blobs this node may hold (0: no budget but the disk's).
        public var quotaBytes: UInt64 = 0

        public init() {}
    }

    /// The largest file a CI job may keep as an artifact (`Limits.ciArtifactBytesMax`).
    public var ciArtifactBytesMax = Limits.standard.ciArtifactBytesMax
    /// Ended CI runs each repository keeps (`Limits.ciRunsKeptPerRepo`).
    public var ciRunsKept = Limits.standard.ciRunsKeptPerRepo
    /// CI runs not yet ended, per repository and in all (`Limits.ciActiveRunsPerRepoMax`, `ciActiveRunsMax`).
    public var ciActiveRunsPerRepo = Limits.standard.ciActiveRunsPerRepoMax
    public var ciActiveRuns = Limits.standard.ciActiveRunsMax
    /// CI caches each repository keeps, and their bytes together (`Limits.ciCachesPerRepoMax`, `ciCacheBytesPerRepoMax`).
    public var ciCachesKept = Limits.standard.ciCachesPerRepoMax
    public var ciCacheBytesPerRepo = Limits.standard.ciCacheBytesPerRepoMax
    /// Whether untrusted CI jobs (patches: anyone's code, run as `nobody` on a root node) see the
    /// host's network; false: a namespace with only a loopback.
    public var ciUntrustedNetwork = false

    /// The node's built-in job worker: see docs/jobs.md.
    public struct JobSettings: Sendable, Equatable {
        /// Shell jobs the node runs at once (0: none; separate `aspen worker` processes do the work).
        public var workers = 2
        /// The tags the node's worker carries, for jobs that require tags.
        public var workerTags: [String: String] = [:]
        /// The lease of each attempt the node's worker holds, renewed every third of it: how long a
        /// job whose node died waits before it runs elsewhere.
        public var leaseMs: Int64 = 30_000
        /// How long a finished job (record, history, output, idempotency key) is kept.
        public var retentionMs: Int64 = 7 * 86_400_000

        public init() {}
    }

    public struct TLSFiles: Sendable, Equatable {
        public var certificate: String
        public var key: String
        /// Clients must present a certificate signed by this CA (nil: no client certificates).
        public var clientCA: String?
        public init(certificate: String, key: String, clientCA: String? = nil) {
            self.certificate = certificate
            self.key = key
            self.clientCA = clientCA
        }
    }

    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Resolves the settings. `flags` holds only the flags actually given; `file` the parsed
    /// config file (see `ConfigFile`). Every problem names the setting and where it came from.
    public static func resolve(flags: [String: String], environment: [String: String], file: [String: String]) throws(Problem)
        -> NodeSettings
    {
        let names = Set(known.map(\.name))
        if let unknown = file.keys.sorted().first(where: { !names.contains($0) }) {
            throw Problem("unknown setting '\(unknown)' in the config file (known: \(known.map(\.name).joined(separator: ", ")))")
        }
        var sources: [String: Source] = [:]
        func value(_ name: String) -> String? {
            if let given = flags[name] {
                sources[name] = .flag
                return given
            }
            if let given = environment[environmentName(name)] {
                sources[name] = .environment
                return given
            }
            if let given = file[name] {
                sources[name] = .file
                return given
            }
            sources[name] = .default
            return known.first { $0.name == name }?.defaultValue
        }
        func origin(_ name: String) -> String {
            switch sources[name] ?? .default {
            case .flag: return "--\(name)"
            case .environment: return environmentName(name)
            case .file: return "'\(name)' in the config file"
            case .default: return "the default of \(name)"
            }
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(Problem) -> Int {
            guard let text = value(name), let number = Int(text), range.contains(number) else {
                throw Problem("\(origin(name)) must be an integer in \(range.lowerBound)...\(range.upperBound), not '\(value(name) ?? "")'")
            }
            return number
        }
        /// A byte count: a number with an optional KiB, MiB, GiB or TiB after it.
        func size(_ name: String, minimum: Int) throws(Problem) -> Int {
            let text = (value(name) ?? "").trimmingCharacters(in: .whitespaces)
            let units: [(String, Int)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("", 1)]
            for (suffix, scale) in units where text.hasSuffix(suffix) {
                guard let number = Int(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), number >= minimum,
                    number <= Int.max / scale
                else { break }
                return number * scale
            }
            throw Problem("\(origin(name)) must be a byte count of at least \(minimum) (like 512MiB or 20GiB), not '\(text)'")
        }
        func boolean(_ name: String) throws(Problem) -> Bool {
            switch value(name) {
            case "true", "1", "yes": return true
            case "false", "0", "no", nil: return false
            case let other?: throw Problem("\(origin(name)) must be true or false, not '\(other)'")
            }
        }
        func address(_ name: String) throws(Problem) -> (String, Int)? {
            guard let text = value(name) else { return nil }
            do {
                return try PeerList.parseAddress(text)
            } catch {
                throw Problem("\(origin(name)) is not HOST:PORT: '\(text)'")
            }
        }

        guard let idText = value("node-id"), let id = UInt64(idText), id > 0 else {
            throw Problem("a positive node id is required: --node-id, \(environmentName("node-id")) or 'node-id' in the config file")
        }
        guard let given = value("data-dir"), !given.isEmpty else {
            throw Problem("a data directory is required: --data-dir, \(environmentName("data-dir")) or 'data-dir' in the config file")
        }
        // Absolute, so that paths the node hands to git (a CI checkout's alternates, a cache's
        // hooks) mean the same from any working directory.
        let dataDirectory = given.hasPrefix("/") ? given : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(given)
        let listen = try address("listen")!
        let http = try address("http")
        let etcdListen = try address("etcd-listen")
        var etcdTLS: TLSFiles?
        switch (value("etcd-cert-file"), value("etcd-key-file")) {
        case (let certificate?, let key?):
            guard etcdListen != nil else { throw Problem("\(origin("etcd-cert-file")) needs etcd-listen: there is no etcd endpoint to secure") }
            etcdTLS = TLSFiles(certificate: certificate, key: key, clientCA: value("etcd-trusted-ca-file"))
        case (nil, nil):
            if value("etcd-trusted-ca-file") != nil {
                throw Problem("\(origin("etcd-trusted-ca-file")) needs etcd-cert-file and etcd-key-file: client certificates need TLS")
            }
        case (.some, nil): throw Problem("\(origin("etcd-cert-file")) needs etcd-key-file too")
        case (nil, .some): throw Problem("\(origin("etcd-key-file")) needs etcd-cert-file too")
        }
        // Reachable from other machines, the etcd endpoint needs client certificates, or TLS and
        // capability tokens (its clients then authenticate, and their credentials must not cross
        // the network in clear).
        let tokensRequired = value("auth") == "required" || ((value("auth") ?? "auto") == "auto" && !Self.isLoopback(host: listen.0))
        if let (etcdHost, _) = etcdListen, !Self.isLoopback(host: etcdHost), etcdTLS?.clientCA == nil, !(tokensRequired && etcdTLS != nil) {
            let reason =
                "the etcd endpoint then needs client certificates (etcd-cert-file, etcd-key-file and etcd-trusted-ca-file), "
                + "or TLS (etcd-cert-file, etcd-key-file) with --auth required, or listen on 127.0.0.1"
            throw Problem("\(origin("etcd-listen")) \(etcdHost) is reachable from other machines: \(reason)")
        }
        let storage = value("storage") ?? "sqlite"
        guard storage == "sqlite" else {
            // The memory store forgets the term and vote on restart, so a restarted voter could
            // vote twice in one term: it serves tests and the simulator only.
            throw Problem(
                "\(origin("storage")) must be sqlite, not '\(storage)' (a node's vote must survive a restart; the memory store is for tests only)")
        }
        let heartbeat = try integer("heartbeat-ms", 1...60_000)
        var election = (10 * heartbeat)...(20 * heartbeat - 1)
        if let text = value("election-timeout-ms") {
            let parts = text.split(separator: "-").map { Int($0) }
            guard parts.count == 2, let low = parts[0], let high = parts[1], low > heartbeat, high >= low else {
                throw Problem("\(origin("election-timeout-ms")) must be MIN-MAX in milliseconds with heartbeat-ms < MIN <= MAX, not '\(text)'")
            }
            election = low...high
        }
        var ticket: ClusterTicket?
        if let text = value("ticket") {
            do {
                ticket = try ClusterTicket(parsing: text)
            } catch {
                throw Problem("\(origin("ticket")): \(error)")
            }
        }
        let peers: [NodeID: PeerAddress]
        do {
            peers = try PeerList.parse(value("peers") ?? "")
        } catch {
            throw Problem("\(origin("peers")): \(error) (expected ID=KEYHEX@HOST:PORT,...)")
        }
        let bootstrap = try boolean("bootstrap")
        guard !(bootstrap && ticket != nil) else {
            throw Problem("bootstrap (from \(origin("bootstrap"))) founds a cluster and ticket (from \(origin("ticket"))) joins one: give one of them")
        }
        var autoCompaction: AutoCompaction.Mode?
        let mode = value("auto-compaction-mode") ?? "periodic"
        guard AutoCompaction.Mode.names.contains(mode) else {
            throw Problem("\(origin("auto-compaction-mode")) must be periodic or revision, not '\(mode)'")
        }
        if let retention = value("auto-compaction-retention"), retention != "0" {
            switch AutoCompaction.Mode.parse(mode: mode, retention: retention) {
            case .success(let parsed): autoCompaction = parsed
            case .failure(.badMode(let why)), .failure(.badRetention(let why)):
                throw Problem("\(origin("auto-compaction-retention")) in \(mode) mode: \(why)")
            }
        }
        let logLevel = value("log-level") ?? "info"
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw Problem("\(origin("log-level")) must be trace, debug, info, notice, warning, error or critical")
        }
        var cookie = value("cookie")
        if let cookie, cookie.isEmpty { throw Problem("\(origin("cookie")) must not be empty") }
        // From a file (mode 0600, say), so that the secret need not be on the command line,
        // where every user of the machine can read it.
        if let path = value("cookie-file") {
            guard cookie == nil else { throw Problem("\(origin("cookie")) and \(origin("cookie-file")) both give the cookie: give one") }
            guard let text = ValueFile.read(path) else { throw Problem("\(origin("cookie-file")): cannot read \(path)") }
            guard !text.isEmpty else { throw Problem("\(origin("cookie-file")): \(path) is empty") }
            cookie = text
        }
        guard let auth = NodeAuth.Mode(rawValue: value("auth") ?? "auto") else {
            throw Problem("\(origin("auth")) must be off, required or auto, not '\(value("auth") ?? "")'")
        }
        var trustedRoots: [PublicKey] = []
        for text in (value("trusted-roots") ?? "").split(separator: ",") {
            guard let key = PublicKey(hex: text.trimmingCharacters(in: .whitespaces)) else {
                throw Problem("\(origin("trusted-roots")): '\(text)' is not a public key (64 hexadecimal digits)")
            }
            trustedRoots.append(key)
        }
        var settings = NodeSettings(
            nodeID: NodeID(id), dataDirectory: dataDirectory, listen: listen, http: http, etcdListen: etcdListen, etcdTLS: etcdTLS, cookie: cookie, ticket: ticket, peers: peers,
            bootstrap: bootstrap, learner: try boolean("learner"), storage: storage, heartbeatMs: heartbeat, electionTimeoutMs: election,
            compactAfterEntries: UInt64(try integer("compact-after-entries", 1...100_000_000)), autoCompaction: autoCompaction,
            logLevel: logLevel, sources: sources)
        settings.auth = auth
        switch (value("vault-cert-file"), value("vault-key-file")) {
        case (let certificate?, let key?): settings.vaultTLS = TLSFiles(certificate: certificate, key: key)
        case (nil, nil): break
        case (.some, nil): throw Problem("\(origin("vault-cert-file")) needs vault-key-file too")
        case (nil, .some): throw Problem("\(origin("vault-key-file")) needs vault-cert-file too")
        }
        if let vault = try address("vault-listen") {
            guard Self.isLoopback(host: vault.0) || settings.vaultTLS != nil else {
                throw Problem(
                    "\(origin("vault-listen")) \(vault.0) is reachable from other machines: serve the Vault API with TLS there "
                        + "(vault-cert-file and vault-key-file), or listen on 127.0.0.1")
            }
            guard Self.isLoopback(host: vault.0) || auth != .off else {
                throw Problem("\(origin("vault-listen")) \(vault.0) is reachable from other machines: it needs credentials, not --auth off")
            }
            settings.vaultListen = vault
        } else if settings.vaultTLS != nil {
            throw Problem("\(origin("vault-cert-file")) needs vault-listen: there is no Vault endpoint to secure")
        }
        settings.trustedRoots = trustedRoots
        switch (value("bootstrap-secrets"), value("age-identity-file")) {
        case (let file?, let identity?):
            settings.bootstrapSecrets = file
            settings.ageIdentityFile = identity
        case (nil, nil): break
        case (.some, nil): throw Problem("\(origin("bootstrap-secrets")) needs age-identity-file: the age key that opens it")
        case (nil, .some): throw Problem("\(origin("age-identity-file")) is used only with bootstrap-secrets")
        }
        settings.blob.replicas = try integer("blob-replicas", 1...Limits.standard.blobReplicasMax)
        settings.blob.minReplicas = try integer("blob-min-replicas", 0...Limits.standard.blobReplicasMax)
        settings.blob.gcGraceMs = Int64(try integer("blob-gc-grace-ms", 0...365 * 86_400_000))
        settings.blob.gcIntervalMs = Int64(try integer("blob-gc-interval-ms", 0...365 * 86_400_000))
        settings.blob.scrubIntervalMs = Int64(try integer("blob-scrub-interval-ms", 0...365 * 86_400_000))
        settings.blob.scrubBytesPerSecond = UInt64(try size("blob-scrub-rate", minimum: 1))
        settings.blob.quotaBytes = UInt64(try size("blob-quota", minimum: 0))
        settings.ciArtifactBytesMax = UInt64(try size("ci-artifact-max", minimum: 1))
        settings.ciRunsKept = try integer("ci-runs-kept", 1...1_000_000)
        settings.ciActiveRunsPerRepo = try integer("ci-active-runs-per-repo", 1...1_000_000)
        settings.ciActiveRuns = try integer("ci-active-runs", 1...1_000_000)
        settings.ciCachesKept = try integer("ci-caches-kept", 1...1_000_000)
        settings.ciCacheBytesPerRepo = UInt64(try size("ci-cache-repo-max", minimum: 1))
        switch value("ci-untrusted-network") ?? "none" {
        case "none": settings.ciUntrustedNetwork = false
        case "host": settings.ciUntrustedNetwork = true
        case let other: throw Problem("\(origin("ci-untrusted-network")) must be none or host, not '\(other)'")
        }
        settings.jobs.workers = try integer("job-workers", 0...256)
        settings.jobs.leaseMs = Int64(try integer("job-lease-ms", 250...600_000))
        settings.jobs.retentionMs = Int64(try integer("job-retention-ms", 1000...3650 * 86_400_000))
        for pair in (value("job-worker-tags") ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw Problem("\(origin("job-worker-tags")): '\(pair)' is not NAME=VALUE") }
            settings.jobs.workerTags[parts[0]] = parts[1]
        }
        if let path = value("join-credential-file") {
            guard let text = ValueFile.read(path) else { throw Problem("\(origin("join-credential-file")): cannot read \(path)") }
            do {
                settings.joinCredential = try Credential(text: text, limits: .standard)
            } catch {
                throw Problem("\(origin("join-credential-file")): \(error)")
            }
        }
        return settings
    }

    /// Whether the native port, or the Vault endpoint, is reachable from other machines (then
    /// `auth auto` requires credentials).
    public var listensBeyondLoopback: Bool {
        !Self.isLoopback(host: listen.host) || vaultListen.map { !Self.isLoopback(host: $0.host) } ?? false
    }

    /// The effective settings with their sources, one per line (`aspen-node run --print-config`).
    public var summary: String {
        func line(_ name: String, _ value: String) -> String { "\(name) = \(value)    # from \(sources[name]?.rawValue ?? "default")" }
        return [
            line("node-id", "\(nodeID.rawValue)"), line("data-dir", dataDirectory), line("listen", "\(listen.host):\(listen.port)"),
            line("http", http.map { "\($0.host):\($0.port)" } ?? "(off)"),
            line("etcd-listen", etcdListen.map { "\($0.host):\($0.port)" } ?? "(off)"),
            line("vault-listen", vaultListen.map { "\($0.host):\($0.port)" } ?? "(off)"),
            line("etcd-cert-file", etcdTLS?.certificate ?? "(plaintext)"), line("etcd-key-file", etcdTLS?.key ?? "(plaintext)"),
            line("etcd-trusted-ca-file", etcdTLS?.clientCA ?? "(no client certificates)"), line("cookie", cookie == nil ? "(none)" : "(set)"),
            line("ticket", ticket == nil ? "(none)" : "(set)"), line("peers", PeerList.format(peers)), line("bootstrap", "\(bootstrap)"),
            line("learner", "\(learner)"), line("storage", storage), line("heartbeat-ms", "\(heartbeatMs)"),
            line("election-timeout-ms", "\(electionTimeoutMs.lowerBound)-\(electionTimeoutMs.upperBound)"),
            line("compact-after-entries", "\(compactAfterEntries)"),
            line("auto-compaction-mode", autoCompaction?.name ?? "(off)"),
            line("auto-compaction-retention", autoCompaction?.retention ?? "(off)"),
            line("log-level", logLevel),
            line("auth", auth.rawValue), line("trusted-roots", trustedRoots.map(\.hex).joined(separator: ",")),
            line("join-credential-file", joinCredential == nil ? "(none)" : "(set)"),
            line("blob-replicas", "\(blob.replicas)"),
            line("blob-min-replicas", blob.minReplicas == 0 ? "(a majority)" : "\(blob.minReplicas)"), line("blob-gc-grace-ms", "\(blob.gcGraceMs)"),
            line("blob-gc-interval-ms", "\(blob.gcIntervalMs)"), line("blob-scrub-interval-ms", "\(blob.scrubIntervalMs)"),
            line("blob-scrub-rate", "\(blob.scrubBytesPerSecond)"), line("blob-quota", blob.quotaBytes == 0 ? "(none)" : "\(blob.quotaBytes)"),
            line("job-workers", "\(jobs.workers)"), line("job-lease-ms", "\(jobs.leaseMs)"),
            line("job-retention-ms", "\(jobs.retentionMs)"), line("ci-artifact-max", "\(ciArtifactBytesMax)"),
            line("ci-runs-kept", "\(ciRunsKept)"), line("ci-active-runs-per-repo", "\(ciActiveRunsPerRepo)"),
            line("ci-active-runs", "\(ciActiveRuns)"), line("ci-caches-kept", "\(ciCachesKept)"),
            line("ci-untrusted-network", ciUntrustedNetwork ? "host" : "none"),
            line("ci-cache-repo-max", "\(ciCacheBytesPerRepo)"),
            line("job-worker-tags", jobs.workerTags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")),
        ].joined(separator: "\n")
    }
}

/// The node's config file: a TOML document of top-level `key = value` lines (strings in double
/// quotes, integers, booleans; `#` comments). Tables and arrays are refused with the line number.
public enum ConfigFile {
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String, name: String = "the config file") throws(Problem) -> [String: String] {
        var values: [String: String] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func problem(_ what: String) -> Problem { Problem(description: "\(name), line \(number + 1): \(what)") }
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") { throw problem("tables are not supported; write every setting at the top level") }
            guard let equals = line.firstIndex(of: "=") else { throw problem("expected key = value") }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "-")
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else { throw problem("invalid key '\(key)'") }
            var rest = Substring(line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces))
            let value: String
            if rest.hasPrefix("\"") {
                rest = rest.dropFirst()
                var parsed = ""
                var closed = false
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped {
                        switch character {
                        case "n": parsed.append("\n")
                        case "t": parsed.append("\t")
                        case "\"", "\\": parsed.append(character)
                        default: throw problem("unsupported escape \\\(character)")
                        }
                        escaped = false
                    } else if character == "\\" {
                        escaped = true
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        parsed.append(character)
                    }
                }
                guard closed else { throw problem("unterminated string") }
                let trailing = rest.trimmingCharacters(in: .whitespaces)
                guard trailing.isEmpty || trailing.hasPrefix("#") else { throw problem("unexpected text after the string") }
                value = parsed
            } else {
                let bare = rest.split(separator: "#", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                guard bare == "true" || bare == "false" || Int(bare.replacingOccurrences(of: "_", with: "")) != nil else {
                    throw problem("value of '\(key)' must be a \"string\", an integer or true/false, not '\(bare)'")
                }
                value = bare.replacingOccurrences(of: "_", with: "")
            }
            guard values[key] == nil else { throw problem("'\(key)' is set twice") }
            values[key] = value
        }
        return values
    }
}
