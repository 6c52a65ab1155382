import AspenAuth
import AspenClient
import AspenCore
import AspenKV
import AspenTransport
import ArgumentParser
import Foundation

/// Reading and writing credentials and keys.
enum CredentialFiles {
    /// A credential from a file, `-` (standard input), or its text itself (`aspen-credential-1:…`).
    static func read(_ source: String) throws -> Credential {
        let text: String
        if source.hasPrefix(Credential.textPrefix) {
            text = source
        } else if source == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let contents = ValueFile.read(source) else { throw CLIError.badInput("cannot read the credential file \(source)") }
            text = contents
        }
        do {
            return try Credential(text: text, limits: .standard)
        } catch {
            throw CLIError.badInput("\(source.hasPrefix(Credential.textPrefix) ? "the credential" : source): \(error)")
        }
    }

    /// A signing key from a PEM file (`aspen token keygen` writes one).
    static func readKey(_ path: String) throws -> SigningKey {
        guard let text = ValueFile.read(path) else { throw CLIError.badInput("cannot read the key file \(path)") }
        guard let identity = NodeIdentity(pem: text) else { throw CLIError.badInput("\(path) is not an Ed25519 private key in PEM") }
        return SigningKey(identity.privateKey)
    }

    /// Writes a secret (a credential or key) readable by its owner only.
    static func writeSecret(_ text: String, to path: String) throws {
        if FileManager.default.fileExists(atPath: path) { throw CLIError.badInput("\(path) exists; not overwriting it") }
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError.badInput("cannot write \(path)")
        }
    }

    static func capabilities(_ texts: [String]) throws -> [Capability] {
        try texts.map { text in
            do {
                return try Capability.parse(text)
            } catch {
                throw CLIError.badInput("\(error)")
            }
        }
    }

    static func lifetime(_ text: String) throws -> Int64 {
        guard let ms = AuthTime.parseDuration(text) else {
            throw CLIError.badInput("lifetime '\(text)' is not a duration like 90s, 30m, 24h or 7d")
        }
        return ms
    }

    static func audience(_ text: String?) throws -> (audience: Audience?, holder: SigningKey?) {
        switch text {
        case nil: let holder = SigningKey(); return (.key(holder.publicKey), holder)
        case "bearer": return (.bearer, nil)
        case let hex?:
            guard let key = PublicKey(hex: hex) else { throw CLIError.badInput("--audience must be a public key (64 hexadecimal digits) or bearer") }
            return (.key(key), nil)
        }
    }

    static func facts(_ texts: [String]) throws -> [Token.Fact] {
        try texts.map { text in
            guard let equals = text.firstIndex(of: "=") else { throw CLIError.badInput("--fact takes NAME=VALUE, not '\(text)'") }
            return Token.Fact(name: String(text[..<equals]), value: String(text[text.index(after: equals)...]))
        }
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    static func describe(_ credential: Credential) -> [String: Any] {
        var object: [String: Any] = [
            "id": credential.id.hex,
            "chain": credential.chain.enumerated().map { link, signed in describe(signed.token, id: signed.id, link: link) },
        ]
        if let holder = credential.holderKey { object["holderKey"] = holder.publicKey.hex }
        return object
    }

    static func describe(_ token: Token, id: TokenID, link: Int) -> [String: Any] {
        var object: [String: Any] = [
            "link": link, "id": id.hex, "issuer": token.issuer.hex, "capabilities": token.capabilities.map(\.description),
            "issuedAt": AuthTime.format(token.issuedAtMs), "notBefore": AuthTime.format(token.notBeforeMs),
            "expires": AuthTime.format(token.expiresAtMs), "depth": token.depth,
            "facts": Dictionary(token.facts.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 }),
        ]
        switch token.audience {
        case .bearer: object["audience"] = "bearer"
        case .key(let key): object["audience"] = key.hex
        }
        if let parent = token.parent { object["parent"] = parent.hex }
        return object
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Make, inspect, check and revoke capability credentials.",
        discussion: """
            A credential is a token and the chain it was delegated through, up to a root key the
            cluster trusts; with it, the key of its holder. Capabilities: read:PREFIX, write:PREFIX,
            delete:PREFIX, watch:PREFIX, full:PREFIX, coordination:KIND/NAME-PREFIX, cluster-admin,
            delegate, and SERVICE-ACCESS:PREFIX for blob, jobs, hooks, secrets, forge and ci.
            """,
        subcommands: [Keygen.self, Create.self, Delegate.self, Inspect.self, Check.self, Revoke.self])

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an Ed25519 key (a root key, or a holder's key); print its public key.")
        @Option(help: "Write the private key here (PEM, mode 0600).") var out: String
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await runReporting {
                let identity = NodeIdentity()
                try CredentialFiles.writeSecret(identity.pemRepresentation, to: out)
                output(json, ["publicKey": identity.key.hex, "file": out], text: identity.key.hex)
            }
        }
    }

    /// What `create` and `delegate` share.
    struct Minting: ParsableArguments {
        @Option(name: .customLong("cap"), help: "A capability the new token holds (repeat for more).")
        var capabilities: [String] = []
        @Option(help: "Whom the token is for: a public key (KEYHEX), or bearer (anyone holding it; at most an hour). Default: a new key, carried in the credential.")
        var audience: String?
        @Option(help: "How long the token lives: 90s, 30m, 24h, 7d.") var lifetime: String = "24h"
        @Option(name: .customLong("fact"), help: "NAME=VALUE noted in the token (never used to authorize).") var facts: [String] = []
        @Option(help: "Write the credential here (mode 0600) instead of printing it.") var out: String?
        @Flag(help: "Print JSON instead of text.") var json = false

        func mint(_ make: (_ audience: Audience?, _ holder: SigningKey?, _ capabilities: [Capability], _ lifetime: Int64, _ facts: [Token.Fact]) throws -> Credential) throws {
            guard !capabilities.isEmpty else { throw CLIError.badInput("give at least one --cap") }
            let (audience, holder) = try CredentialFiles.audience(audience)
            let credential = try make(audience, holder, try CredentialFiles.capabilities(capabilities), try CredentialFiles.lifetime(lifetime), try CredentialFiles.facts(facts))
            if let out {
                try CredentialFiles.writeSecret(credential.text + "\n", to: out)
                output(json, ["id": credential.id.hex, "file": out], text: "OK, credential \(credential.id.hex) written to \(out)")
            } else {
                output(json, ["id": credential.id.hex, "credential": credential.text], text: credential.text)
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a credential: delegated from yours (which must hold delegate), or signed by a root key.",
            discussion: "aspen token create --cap read:app/ --cap write:app/jobs/ --lifetime 24h --out app.cred")
        @OptionGroup var minting: Minting
        @Option(help: "Sign with this root key (PEM) instead of delegating from your credential.") var rootKeyFile: String?
        @Option(help: "Your credential (default: $ASPEN_CREDENTIAL_FILE, $ASPEN_CREDENTIAL).") var credentialFile: String?

        func run() async throws {
            try await runReporting {
                try minting.mint { audience, holder, capabilities, lifetime, facts in
                    do {
                        if let rootKeyFile {
                            return try TokenIssuer.root(
                                rootKey: try CredentialFiles.readKey(rootKeyFile), holderKey: holder, audience: audience, capabilities: capabilities,
                                lifetimeMs: lifetime, nowMs: CredentialFiles.nowMs, facts: facts)
                        }
                        guard let parent = try ClusterOptions.credential(file: credentialFile) else {
                            throw CLIError.badInput("no credential to delegate from: pass --credential-file (or set ASPEN_CREDENTIAL_FILE), or --root-key-file")
                        }
                        return try TokenIssuer.delegate(
                            from: parent, holderKey: holder, audience: audience, capabilities: capabilities, lifetimeMs: lifetime,
                            nowMs: CredentialFiles.nowMs, facts: facts)
                    } catch let problem as TokenIssuer.Problem {
                        throw CLIError.badInput("\(problem)")
                    }
                }
            }
        }
    }

    struct Delegate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a narrower credential from a parent credential that holds delegate.",
            discussion: "aspen token delegate --from parent.cred --cap read:app/reports/ --lifetime 1h")
        @Option(help: "The parent credential (a file, - for standard input, or its text).") var from: String
        @OptionGroup var minting: Minting

        func run() async throws {
            try await runReporting {
                let parent = try CredentialFiles.read(from)
                try minting.mint { audience, holder, capabilities, lifetime, facts in
                    do {
                        return try TokenIssuer.delegate(
                            from: parent, holderKey: holder, audience: audience, capabilities: capabilities, lifetimeMs: lifetime,
                            nowMs: CredentialFiles.nowMs, facts: facts)
                    } catch {
                        throw CLIError.badInput("\(error)")
                    }
                }
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a credential's tokens: issuer, audience, capabilities, times, chain, ids.")
        @Argument(help: "The credential: a file, - for standard input, or its text.") var credential: String
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await runReporting {
                let credential = try CredentialFiles.read(credential)
                var lines = ["credential \(credential.id.hex)"]
                if let holder = credential.holderKey { lines.append("holder key: included (public \(holder.publicKey.hex))") }
                for (link, signed) in credential.chain.enumerated() {
                    let token = signed.token
                    let audience = if case .key(let key) = token.audience { key.hex } else { "bearer" }
                    lines.append("link \(link)\(link == credential.chain.count - 1 ? " (root)" : ""): token \(signed.id.hex)")
                    lines.append("  issuer:       \(token.issuer.hex)")
                    lines.append("  audience:     \(audience)")
                    lines.append("  capabilities: \(token.capabilities.map(\.description).joined(separator: " "))")
                    lines.append("  valid:        \(AuthTime.format(token.notBeforeMs)) to \(AuthTime.format(token.expiresAtMs)) (issued \(AuthTime.format(token.issuedAtMs)))")
                    if !token.facts.isEmpty { lines.append("  facts:        " + token.facts.map { "\($0.name)=\($0.value)" }.joined(separator: " ")) }
                }
                output(json, CredentialFiles.describe(credential), text: lines.joined(separator: "\n"))
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say whether a credential allows an operation, and if not, which link and capability deny it. Sends nothing.",
            discussion: """
                Verifies the whole chain here (signatures, delegation, times) and trusts its root unless --root is given.
                aspen token check app.cred --op put --key app/x
                aspen token check app.cred --op get --key app/ --prefix
                aspen token check app.cred --op coordination --key lock/build
                """)
        @Argument(help: "The credential: a file, - for standard input, or its text.") var credential: String
        @Option(help: "get, put, delete, watch, coordination, lease or admin.") var op: String
        @Option(help: "The key (for coordination: KIND/NAME, e.g. lock/build).") var key: String = ""
        @Flag(help: "The key is a prefix.") var prefix = false
        @Option(help: "The end of a key range [key, end).") var rangeEnd: String?
        @Option(help: "The root key the cluster trusts (default: the chain's own root).") var root: String?
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await runReporting {
                let credential = try CredentialFiles.read(credential)
                let selection: KeySelection =
                    prefix ? .prefix(Array(key.utf8)) : rangeEnd.map { .range(start: Array(key.utf8), end: $0.isEmpty ? nil : Array($0.utf8)) } ?? .key(Array(key.utf8))
                let needed: Requirement
                switch op {
                case "get", "read", "range": needed = .read(selection)
                case "put", "write": needed = .write(selection.bounds)
                case "delete", "del": needed = .delete(selection)
                case "watch": needed = .watch(selection)
                case "coordination": needed = .coordination(name: Array(key.utf8))
                case "lease": needed = .lease
                case "admin", "cluster-admin": needed = .clusterAdmin
                default: throw CLIError.badInput("--op must be get, put, delete, watch, coordination, lease or admin")
                }
                let trusted: PublicKey
                if let root {
                    guard let key = PublicKey(hex: root) else { throw CLIError.badInput("--root must be a public key (64 hexadecimal digits)") }
                    trusted = key
                } else {
                    trusted = credential.chain.last!.token.issuer
                }
                let verifier = TokenVerifier(trust: TrustState(roots: [trusted]))
                let holder: PublicKey? = if case .key(let key) = credential.leaf.token.audience { key } else { nil }
                do throws(Denial) {
                    let verified = try verifier.verify(credential, nowMs: CredentialFiles.nowMs)
                    try verifier.authorize(verified, presented: holder, needed: needed, nowMs: CredentialFiles.nowMs)
                    output(json, ["allowed": true, "root": trusted.hex], text: "allowed (if the cluster trusts root \(trusted.hex.prefix(16))…)")
                } catch {
                    output(json, ["allowed": false, "reason": "\(error)", "check": error.reason], text: "denied: \(error)")
                    throw ExitCode(6)
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token and every token delegated from it, or everything a key issued before a time, on every node.",
            discussion: """
                aspen token revoke ID|CREDENTIAL
                aspen token revoke --issuer KEYHEX --before 2026-12-01T00:00:00Z
                Returns once every member it can reach has applied the revocation, and names those it could not reach.
                """)
        @Argument(help: "The token's id, or a credential (its own token is revoked).") var token: String?
        @Option(help: "Revoke everything this key issued...") var issuer: String?
        @Option(help: "...before this time (ISO 8601, UTC), e.g. 2026-12-01T00:00:00Z.") var before: String?
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let revocation: AuthWire.Revocation
                switch (token, issuer, before) {
                case (let token?, nil, nil):
                    if let id = TokenID(hex: token) {
                        // Without the token its expiry is unknown: the record never lapses.
                        revocation = .token(id, expiresAtMs: .max)
                    } else {
                        let credential = try CredentialFiles.read(token)
                        revocation = .token(credential.id, expiresAtMs: credential.leaf.token.expiresAtMs)
                    }
                case (nil, let issuer?, let before?):
                    guard let key = PublicKey(hex: issuer) else { throw CLIError.badInput("--issuer must be a public key (64 hexadecimal digits)") }
                    guard let cutoff = AuthTime.parse(before) else { throw CLIError.badInput("--before must be an ISO 8601 time like 2026-12-01T00:00:00Z") }
                    revocation = .issuedBefore(key, cutoffMs: cutoff)
                default:
                    throw CLIError.badInput("give a token id (or credential), or --issuer and --before")
                }
                let client = try await cluster.everyMember()
                try await client.revoke(revocation)
                let (applied, missing) = try await AppliedEverywhere.wait(client, timeoutMs: cluster.timeoutMs)
                let what: String
                switch revocation {
                case .token(let id, _): what = "token \(id.hex)"
                case .issuedBefore(let key, let cutoff): what = "everything \(key.hex) issued before \(AuthTime.format(cutoff))"
                }
                output(
                    cluster.json, ["revoked": what, "appliedOn": applied, "notConfirmed": missing],
                    text: "OK, revoked \(what); applied on \(applied.count) member(s)"
                        + (missing.isEmpty ? "" : "; not confirmed by \(missing.joined(separator: ", ")) (they refuse it once they catch up)"))
                if !missing.isEmpty { throw ExitCode(5) }
            }
        }
    }
}

/// Waits until every member the client can reach has applied what the leader has applied.
enum AppliedEverywhere {
    static func wait(_ client: AspenClient, timeoutMs: Int) async throws -> (applied: [String], missing: [String]) {
        let first = await client.status()
        guard let target = first.compactMap({ try? $0.status.get() }).filter({ $0.role == "leader" }).map(\.appliedIndex).max() else {
            throw CLIError.unavailable("no member answered as leader")
        }
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            let answers = await client.status()
            let name = { (endpoint: Endpoint) in "\(endpoint.id.map { "\($0.rawValue)" } ?? "?")@\(endpoint.host):\(endpoint.port)" }
            let applied = answers.filter { ((try? $0.status.get())?.appliedIndex ?? 0) >= target }.map { name($0.endpoint) }
            let missing = answers.filter { ((try? $0.status.get())?.appliedIndex ?? 0) < target }.map { name($0.endpoint) }
            if missing.isEmpty || Date() >= deadline { return (applied, missing) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth", abstract: "The cluster's auth: whether it requires credentials, the root keys it trusts.",
        subcommands: [Status.self, Root.self, Require.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Whether each member requires credentials; the trusted roots; revocations.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let status = try await cluster.client().authStatus()
                output(
                    cluster.json,
                    [
                        "required": status.required, "clusterRequires": status.clusterRequires, "roots": status.roots.map(\.hex),
                        "revokedTokens": status.revokedTokens, "issuerCutoffs": status.issuerCutoffs, "denials": status.denials,
                    ],
                    text: """
                        required: \(status.required)\(status.clusterRequires ? " (the cluster was founded with auth)" : "")
                        trusted roots: \(status.roots.isEmpty ? "none" : status.roots.map(\.hex).joined(separator: ", "))
                        revoked tokens: \(status.revokedTokens), issuer cutoffs: \(status.issuerCutoffs), requests refused: \(status.denials)
                        """)
            }
        }
    }

    struct Root: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add or remove a trusted root key (to rotate: add the new one, re-issue credentials, revoke or remove the old).")
        @Argument(help: "add or remove") var action: String
        @Argument(help: "The root's public key (64 hexadecimal digits), or its key file (PEM).") var key: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                let publicKey: PublicKey
                if let parsed = PublicKey(hex: key) {
                    publicKey = parsed
                } else {
                    publicKey = try CredentialFiles.readKey(key).publicKey
                }
                let client = try cluster.client()
                switch action {
                case "add": try await client.changeRoots(.add(publicKey))
                case "remove": try await client.changeRoots(.remove(publicKey))
                default: throw CLIError.badInput("the action is add or remove, not '\(action)'")
                }
                output(cluster.json, ["root": publicKey.hex, "action": action], text: "OK, root \(publicKey.hex) \(action == "add" ? "added" : "removed")")
            }
        }
    }

    struct Require: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record whether the cluster requires credentials (nodes started with --auth auto follow).")
        @Argument(help: "on or off") var state: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runReporting {
                guard state == "on" || state == "off" else { throw CLIError.badInput("on or off, not '\(state)'") }
                try await cluster.client().setAuthRequired(state == "on")
                output(cluster.json, ["required": state == "on"], text: "OK")
            }
        }
    }
}
