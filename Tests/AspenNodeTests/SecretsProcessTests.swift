import AspenClient
import AspenCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `executable` (killed after `seconds`); its exit status and its output with its errors.
func runProgram(
    _ executable: String, _ arguments: [String], in directory: URL? = nil, environment: [String: String] = [:], seconds: Double = 300
) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let deadline = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: deadline)
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    deadline.cancel()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Runs a Python script (hvac, Vault's Python client) against the cluster's Vault endpoints;
/// returns its exit status and output. A machine without python3 and hvac fails the test with
/// what to install: the check never passes by not running.
func python(_ script: String, in directory: URL, environment: [String: String]) throws -> (Int32, String) {
    let path = directory.appendingPathComponent("script-\(UUID().uuidString).py")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try Data(script.utf8).write(to: path)
    return try runProgram("/usr/bin/env", ["python3", path.path], environment: environment)
}

extension ProcessCluster {
    /// Node `id`'s Vault endpoint when started with `vaultArguments(id)`.
    func vaultURL(_ id: Int) -> String { "http://127.0.0.1:\(basePort + 60 + id)" }
    func vaultArguments(_ id: Int) -> [String] { ["--vault-listen", "127.0.0.1:\(basePort + 60 + id)"] }
    var vaultEnvironment: [String: String] {
        ["VAULT_ADDRS": (1...entries.count).map(vaultURL).joined(separator: ","), "VAULT_TOKEN": "unused"]
    }

    /// Starts every node with its Vault endpoint (and `extra`) and waits until they answer.
    func startWithVault(_ extra: [String] = []) async throws {
        for id in 1...entries.count { try start(id, adding: vaultArguments(id) + extra) }
        try await eventually("the Vault endpoints answer") { try await self.aspen(["secrets", "list"]).0 == 0 }
    }
}

/// The prelude every script starts with: `clients` has one hvac client per node.
let hvacPrelude = """
    import os, sys, json, threading, time
    try:
        import hvac
    except ImportError:
        print("python3 -m pip install hvac: the Vault client these tests drive Aspen with is missing"); sys.exit(3)
    addrs = os.environ["VAULT_ADDRS"].split(",")
    clients = [hvac.Client(url=a, token=os.environ.get("VAULT_TOKEN", "")) for a in addrs]
    kv = lambda i: clients[i].secrets.kv.v2
    def expect(cond, what):
        if not cond:
            print("FAILED: " + what); sys.exit(1)
    def fails(call, kind, text=None):
        try:
            call()
        except kind as e:
            if text is not None and text not in str(e):
                print("FAILED: expected %r in %s" % (text, e)); sys.exit(1)
            return str(e)
        print("FAILED: expected %s" % kind.__name__); sys.exit(1)

    """

extension ClusterSuites {
    @Suite("Secrets engines on real processes (hvac, the CLI)", .serialized, .timeLimit(.minutes(5)))
    struct SecretsProcessTests {
        @Test("hvac writes nested JSON on one node and reads it on the others; check-and-set, cas_required and the version lifecycle behave as Vault's")
        func kvRoundTripAndLifecycle() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try await cluster.startWithVault()
            let (status, output) = try python(
                hvacPrelude + """
                    clients[0].sys.enable_secrets_engine(backend_type="kv", path="team-a", options={"version": "2"})
                    mounts = clients[1].sys.list_mounted_secrets_engines()["data"]
                    expect(mounts["team-a/"]["type"] == "kv" and mounts["team-a/"]["options"]["version"] == "2", "mount listed: %r" % mounts)
                    secret = {"user": "a", "n": 7, "nested": {"list": [1, 2, {"x": None}], "ok": True, "pi": 3.5}}
                    kv(0).create_or_update_secret("app/db", secret, cas=0, mount_point="team-a")
                    for i in (1, 2):
                        got = kv(i).read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True)["data"]
                        expect(got["data"] == secret, "node %d read %r" % (i + 1, got["data"]))
                        expect(got["metadata"]["version"] == 1, "version 1: %r" % got["metadata"])
                    fails(lambda: kv(1).create_or_update_secret("app/db", {"u": "b"}, cas=0, mount_point="team-a"), hvac.exceptions.InvalidRequest,
                          "check-and-set parameter did not match the current version")
                    kv(2).create_or_update_secret("app/db", {"u": "b"}, cas=1, mount_point="team-a")
                    # Versions, soft delete, undelete, destroy, max_versions.
                    kv(0).configure(max_versions=3, mount_point="team-a")
                    # Every node routes by its own copy of the mount table, renewed when a mount changes:
                    # at once on the node that made the change, as soon as it applies it on the others.
                    expect(kv(0).read_configuration(mount_point="team-a")["data"]["max_versions"] == 3, "node 1 routes by the old mount settings")
                    for i in (1, 2):
                        deadline = time.time() + 5
                        while kv(i).read_configuration(mount_point="team-a")["data"]["max_versions"] != 3:
                            expect(time.time() < deadline, "node %d still routes by the old mount settings" % (i + 1))
                            time.sleep(0.05)
                    for n in range(3, 7):
                        kv(n % 3).create_or_update_secret("app/db", {"n": n}, mount_point="team-a")
                    meta = kv(1).read_secret_metadata("app/db", mount_point="team-a")["data"]
                    expect(meta["current_version"] == 6 and sorted(meta["versions"]) == ["4", "5", "6"], "kept 3 versions: %r" % meta)
                    expect(meta["oldest_version"] == 4, "oldest version 4: %r" % meta)
                    kv(0).delete_latest_version_of_secret("app/db", mount_point="team-a")
                    fails(lambda: kv(1).read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True), hvac.exceptions.InvalidPath)
                    kv(2).undelete_secret_versions("app/db", versions=[6], mount_point="team-a")
                    expect(kv(0).read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True)["data"]["data"] == {"n": 6}, "undeleted")
                    kv(0).destroy_secret_versions("app/db", versions=[5], mount_point="team-a")
                    fails(lambda: kv(1).read_secret_version("app/db", version=5, mount_point="team-a", raise_on_deleted_version=True), hvac.exceptions.InvalidPath)
                    meta = kv(2).read_secret_metadata("app/db", mount_point="team-a")["data"]
                    expect(meta["versions"]["5"]["destroyed"] is True, "version 5 destroyed: %r" % meta["versions"])
                    expect(kv(0).read_secret_version("app/db", version=4, mount_point="team-a", raise_on_deleted_version=True)["data"]["data"] == {"n": 4}, "version 4 kept")
                    # cas_required on the secret.
                    kv(0).update_metadata("app/db", cas_required=True, custom_metadata={"owner": "team-a"}, mount_point="team-a")
                    fails(lambda: kv(1).create_or_update_secret("app/db", {"n": 0}, mount_point="team-a"), hvac.exceptions.InvalidRequest,
                          "check-and-set parameter required for this call")
                    kv(1).create_or_update_secret("app/db", {"n": 7}, cas=6, mount_point="team-a")
                    meta = kv(2).read_secret_metadata("app/db", mount_point="team-a")["data"]
                    expect(meta["custom_metadata"] == {"owner": "team-a"} and meta["cas_required"] is True, "metadata: %r" % meta)
                    # Patch merges into a new version.
                    kv(0).patch("app/db", {"extra": "x"}, mount_point="team-a")
                    got = kv(1).read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True)["data"]
                    expect(got["data"] == {"n": 7, "extra": "x"} and got["metadata"]["version"] == 8, "patched: %r" % got)
                    # Listing with folders.
                    kv(0).create_or_update_secret("app/cache", {"a": "1"}, mount_point="team-a")
                    kv(0).create_or_update_secret("app/sub/deep", {"a": "1"}, mount_point="team-a")
                    kv(0).create_or_update_secret("top", {"a": "1"}, mount_point="team-a")
                    expect(kv(1).list_secrets("", mount_point="team-a")["data"]["keys"] == ["app/", "top"], "root listing")
                    expect(kv(2).list_secrets("app", mount_point="team-a")["data"]["keys"] == ["cache", "db", "sub/"], "folder listing")
                    fails(lambda: kv(2).list_secrets("nothing-here", mount_point="team-a"), hvac.exceptions.InvalidPath)
                    # Delete everything.
                    kv(0).delete_metadata_and_all_versions("app/db", mount_point="team-a")
                    fails(lambda: kv(1).read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True), hvac.exceptions.InvalidPath)
                    # Unknown mounts and bad input are Vault's errors.
                    fails(lambda: kv(0).read_secret_version("x", mount_point="nope", raise_on_deleted_version=True), hvac.exceptions.InvalidPath)
                    fails(lambda: clients[0].sys.enable_secrets_engine(backend_type="kv", path="team-a", options={"version": "2"}), hvac.exceptions.InvalidRequest, "already in use")
                    deep = {"a": 1}
                    for _ in range(40):
                        deep = {"d": deep}
                    fails(lambda: kv(0).create_or_update_secret("deep", deep, mount_point="team-a"), hvac.exceptions.InvalidRequest, "secretJSONDepthMax")
                    health = clients[2].sys.read_health_status(method="GET")
                    expect(health["sealed"] is False and health["initialized"] is True, "health: %r" % health)
                    print("ok")
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            #expect(status == 0 && output.contains("ok"), "\(output)")
        }

        @Test("20 writers with cas=1 through three nodes at once: exactly one wins, the others get Vault's check-and-set error")
        func casRace() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try await cluster.startWithVault()
            #expect(try await cluster.aspen(["secrets", "enable", "kv-v2"]).0 == 0)
            let (status, output) = try python(
                hvacPrelude + """
                    kv(0).create_or_update_secret("race", {"v": 0}, cas=0)
                    results = []
                    lock = threading.Lock()
                    gate = threading.Barrier(20)
                    def writer(n):
                        client = hvac.Client(url=addrs[n % 3])
                        gate.wait()
                        try:
                            client.secrets.kv.v2.create_or_update_secret("race", {"v": n}, cas=1)
                            outcome = "won"
                        except hvac.exceptions.InvalidRequest as e:
                            outcome = "cas" if "check-and-set parameter did not match the current version" in str(e) else "other: %s" % e
                        except Exception as e:
                            outcome = "other: %r" % e
                        with lock:
                            results.append((n, outcome))
                    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
                    for t in threads: t.start()
                    for t in threads: t.join()
                    winners = [n for n, o in results if o == "won"]
                    others = [o for n, o in results if o not in ("won", "cas")]
                    expect(len(results) == 20 and not others, "outcomes: %r" % results)
                    expect(len(winners) == 1, "exactly one winner: %r" % results)
                    got = kv(1).read_secret_version("race", raise_on_deleted_version=True)["data"]
                    expect(got["metadata"]["version"] == 2 and got["data"] == {"v": winners[0]}, "the winner's write is version 2: %r" % got)
                    print("ok")
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            #expect(status == 0 && output.contains("ok"), "\(output)")
        }

        @Test("transit through hvac: round trips across nodes, rotation, rewrap, the decryption floor, every tampered ciphertext refused, datakeys, signatures checked by openssl")
        func transit() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try await cluster.startWithVault()
            #expect(try await cluster.aspen(["secrets", "enable", "transit"]).0 == 0)
            let (status, output) = try python(
                hvacPrelude + """
                    import base64, subprocess, hashlib, tempfile
                    b64 = lambda b: base64.b64encode(b).decode()
                    tr = lambda i: clients[i].secrets.transit
                    tr(0).create_key("k")
                    secret = b"\\x00attack at dawn\\xff" * 64
                    c1 = tr(0).encrypt_data("k", b64(secret))["data"]["ciphertext"]
                    expect(c1.startswith("vault:v1:"), c1)
                    for i in (1, 2):
                        expect(base64.b64decode(tr(i).decrypt_data("k", c1)["data"]["plaintext"]) == secret, "node %d decrypts" % (i + 1))
                    tr(1).rotate_key("k")
                    c2 = tr(2).encrypt_data("k", b64(b"two"))["data"]["ciphertext"]
                    expect(c2.startswith("vault:v2:"), c2)
                    expect(base64.b64decode(tr(0).decrypt_data("k", c1)["data"]["plaintext"]) == secret, "the old version still decrypts")
                    r = tr(0).rewrap_data("k", c1)["data"]["ciphertext"]
                    expect(r.startswith("vault:v2:") and base64.b64decode(tr(1).decrypt_data("k", r)["data"]["plaintext"]) == secret, "rewrapped")
                    tr(2).update_key_configuration("k", min_decryption_version=2)
                    fails(lambda: tr(0).decrypt_data("k", c1), hvac.exceptions.InvalidRequest, "ciphertext or signature version is disallowed by policy (too old)")
                    # Tampering: each refused with 400 and no plaintext.
                    raw = base64.b64decode(r.split(":")[2])
                    flipped = bytearray(raw); flipped[20] ^= 1
                    bad = {
                        "flipped byte": "vault:v2:" + b64(bytes(flipped)),
                        "cut tag": "vault:v2:" + b64(raw[:-4]),
                        "wrong version": "vault:v9:" + r.split(":")[2],
                        "no prefix": r.split(":")[2],
                    }
                    for what, ciphertext in bad.items():
                        fails(lambda: tr(1).decrypt_data("k", ciphertext), hvac.exceptions.InvalidRequest)
                    tr(0).create_key("other")
                    tr(0).rotate_key("other")
                    fails(lambda: tr(1).decrypt_data("other", r), hvac.exceptions.InvalidRequest, "message authentication failed")
                    ad = tr(0).encrypt_data("k", b64(b"x"), associated_data=b64(b"ad-1"))["data"]["ciphertext"]
                    expect(base64.b64decode(tr(1).decrypt_data("k", ad, associated_data=b64(b"ad-1"))["data"]["plaintext"]) == b"x", "ad round trip")
                    fails(lambda: tr(2).decrypt_data("k", ad, associated_data=b64(b"ad-2")), hvac.exceptions.InvalidRequest, "message authentication failed")
                    tr(0).create_key("derived", derived=True)
                    dc = tr(0).encrypt_data("derived", b64(b"y"), context=b64(b"tenant-1"))["data"]["ciphertext"]
                    expect(base64.b64decode(tr(1).decrypt_data("derived", dc, context=b64(b"tenant-1"))["data"]["plaintext"]) == b"y", "derived")
                    fails(lambda: tr(2).decrypt_data("derived", dc, context=b64(b"tenant-2")), hvac.exceptions.InvalidRequest)
                    fails(lambda: tr(2).decrypt_data("derived", dc), hvac.exceptions.InvalidRequest, "missing 'context'")
                    # Batches.
                    batch = tr(0).encrypt_data("k", batch_input=[{"plaintext": b64(b"a")}, {"plaintext": b64(b"b")}])["data"]["batch_results"]
                    back = tr(1).decrypt_data("k", batch_input=[{"ciphertext": x["ciphertext"]} for x in batch])["data"]["batch_results"]
                    expect([base64.b64decode(x["plaintext"]) for x in back] == [b"a", b"b"], "batch")
                    # Data keys.
                    dk = tr(0).generate_data_key("k", key_type="plaintext")["data"]
                    expect(base64.b64decode(tr(1).decrypt_data("k", dk["ciphertext"])["data"]["plaintext"]) == base64.b64decode(dk["plaintext"]), "datakey")
                    wrapped = tr(0).generate_data_key("k", key_type="wrapped")["data"]
                    expect("plaintext" not in wrapped and wrapped["ciphertext"].startswith("vault:v2:"), "wrapped datakey")
                    # Signatures, checked by openssl with the exported public key.
                    work = tempfile.mkdtemp()
                    def openssl(*args):
                        return subprocess.run(["openssl"] + list(args), cwd=work, capture_output=True, text=True)
                    message = b"the message to sign"
                    for kind in ("ed25519", "ecdsa-p256"):
                        tr(0).create_key("s-" + kind, key_type=kind)
                        sig = tr(1).sign_data("s-" + kind, b64(message))["data"]["signature"]
                        expect(tr(2).verify_signed_data("s-" + kind, b64(message), signature=sig)["data"]["valid"] is True, kind + " verifies")
                        expect(tr(2).verify_signed_data("s-" + kind, b64(b"other"), signature=sig)["data"]["valid"] is False, kind + " refuses another input")
                        key = tr(0).read_key("s-" + kind)["data"]["keys"]["1"]["public_key"]
                        raw_sig = base64.b64decode(sig.split(":")[2])
                        open(work + "/sig", "wb").write(raw_sig)
                        if kind == "ed25519":
                            der = bytes.fromhex("302a300506032b6570032100") + base64.b64decode(key)
                            open(work + "/pub.pem", "w").write("-----BEGIN PUBLIC KEY-----\\n" + b64(der) + "\\n-----END PUBLIC KEY-----\\n")
                            open(work + "/msg", "wb").write(message)
                            done = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg", "-sigfile", "sig")
                        else:
                            open(work + "/pub.pem", "w").write(key)
                            open(work + "/digest", "wb").write(hashlib.sha256(message).digest())
                            done = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "digest", "-sigfile", "sig")
                        expect(done.returncode == 0 and "Signature Verified Successfully" in done.stdout, "openssl verifies %s: %s %s" % (kind, done.stdout, done.stderr))
                    print("ok")
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            #expect(status == 0 && output.contains("ok"), "\(output)")

            // Beyond Vault: ciphertexts an application keeps in the key-value store, counted by
            // version and rewrapped in place after a rotation.
            func aspen(_ arguments: [String]) async throws -> (Int32, String) { try await cluster.aspen(arguments, withErrors: true) }
            let unknown = try await aspen(["transit", "encrypt", "app-key", "--plaintext", "x"])
            #expect(unknown.0 != 0 && unknown.1.contains("encryption key not found"), "encrypting never creates a key: \(unknown)")
            #expect(try await aspen(["transit", "create", "app-key"]).0 == 0)
            for index in 0..<5 {
                let ciphertext = try await aspen(["transit", "encrypt", "app-key", "--plaintext", "row-\(index)"]).1
                #expect(ciphertext.hasPrefix("vault:v1:"), "\(ciphertext)")
                #expect(try await aspen(["kv", "put", "app/rows/\(index)", ciphertext]).0 == 0)
            }
            #expect(try await aspen(["transit", "rotate", "app-key"]).0 == 0)
            let before = try await aspen(["transit", "inventory", "app-key", "--prefix", "app/rows/"])
            #expect(before.1.contains("5 behind") && before.1.contains("v1\t5"), "\(before)")
            let rewrap = try await aspen(["transit", "rewrap-prefix", "app-key", "--prefix", "app/rows/"])
            #expect(rewrap.0 == 0 && rewrap.1.contains("rewrapped 5"), "\(rewrap)")
            let after = try await aspen(["transit", "inventory", "app-key", "--prefix", "app/rows/"])
            #expect(after.1.contains("0 behind") && after.1.contains("v2\t5"), "\(after)")
            let stored = try await aspen(["kv", "get", "app/rows/3"]).1
            #expect(stored.contains("vault:v2:"), "\(stored)")
            let value = stored.split(separator: "\n").last.map(String.init) ?? stored
            let plain = try await aspen(["transit", "decrypt", "app-key", value.trimmingCharacters(in: .whitespaces)])
            #expect(plain.1 == "row-3", "\(plain)")
            // The same as a job on the job system, after another rotation.
            #expect(try await aspen(["transit", "rotate", "app-key"]).0 == 0)
            // Submitted through a follower: the job goes to the leader's job system.
            let leader = try await cluster.leader()
            let job = try await cluster.aspen(
                ["transit", "rewrap-prefix", "app-key", "--prefix", "app/rows/", "--background"], endpoints: cluster.entries[leader % 3], withErrors: true)
            #expect(job.0 == 0 && UInt64(job.1) != nil, "\(job)")
            let result = try await aspen(["job", "result", job.1, "--wait", "60s"])
            #expect(result.0 == 0 && result.1.contains("\"rewrapped\":5"), "\(result)")
            let moved = try await aspen(["transit", "inventory", "app-key", "--prefix", "app/rows/"])
            #expect(moved.1.contains("0 behind") && moved.1.contains("v3\t5"), "\(moved)")
        }

        @Test("capabilities: a credential reaches only its mount and prefix, an encrypt-only one cannot decrypt, none is refused, a revoked one stops working")
        func capabilities() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try FileManager.default.createDirectory(at: cluster.directory, withIntermediateDirectories: true)
            let file = { (name: String) in cluster.directory.appendingPathComponent(name).path }
            let (keyStatus, rootKey) = try AuthProcessTests.offline(["token", "keygen", "--out", file("root.key")])
            #expect(keyStatus == 0, "\(rootKey)")
            #expect(try AuthProcessTests.offline([
                "token", "create", "--root-key-file", file("root.key"), "--cap", "full:", "--cap", "cluster-admin", "--cap", "delegate",
                "--cap", "secrets-full:", "--cap", "transit-full:", "--cap", "pki-full:", "--lifetime", "1d", "--out", file("root.cred"),
            ]).0 == 0)
            for id in 1...3 {
                let peers = cluster.entries.enumerated().filter { $0.offset != id - 1 }.map(\.element).joined(separator: ",")
                try cluster.start(id, arguments: ["--peers", peers, "--bootstrap", "--auth", "required", "--trusted-roots", rootKey] + cluster.vaultArguments(id))
            }
            func aspen(_ arguments: [String]) async throws -> (Int32, String) {
                try await cluster.aspen(["--credential-file", file("root.cred")] + arguments, withErrors: true)
            }
            try await eventually("the cluster takes the root credential") { try await aspen(["secrets", "enable", "kv-v2", "--path", "team-a"]).0 == 0 }
            #expect(try await aspen(["secrets", "enable", "kv-v2", "--path", "team-b"]).0 == 0)
            #expect(try await aspen(["secrets", "enable", "transit"]).0 == 0)
            #expect(try await aspen(["kv2", "put", "team-a/app/db", "u=a"]).0 == 0)
            #expect(try await aspen(["kv2", "put", "team-b/app/db", "u=b"]).0 == 0)
            #expect(try await aspen(["transit", "create", "k"]).0 == 0)
            #expect(try AuthProcessTests.offline([
                "token", "create", "--credential-file", file("root.cred"), "--cap", "secrets-read:team-a/app/", "--cap", "secrets-write:team-a/app/",
                "--lifetime", "1h", "--out", file("team-a.cred"),
            ]).0 == 0)
            #expect(try AuthProcessTests.offline([
                "token", "create", "--credential-file", file("root.cred"), "--cap", "transit-encrypt:transit/k/", "--lifetime", "1h", "--out", file("enc.cred"),
            ]).0 == 0)
            let tokens = [
                "TEAM_A": try String(contentsOfFile: file("team-a.cred"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                "ENC": try String(contentsOfFile: file("enc.cred"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            ]
            let (status, output) = try python(
                hvacPrelude + """
                    import base64
                    a = hvac.Client(url=addrs[1], token=os.environ["TEAM_A"]).secrets.kv.v2
                    expect(a.read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True)["data"]["data"] == {"u": "a"}, "own mount")
                    a.create_or_update_secret("app/other", {"v": "1"}, mount_point="team-a")
                    fails(lambda: a.read_secret_version("app/db", mount_point="team-b", raise_on_deleted_version=True), hvac.exceptions.Forbidden, "permission denied")
                    fails(lambda: a.create_or_update_secret("top", {"v": "1"}, mount_point="team-a"), hvac.exceptions.Forbidden)
                    fails(lambda: a.list_secrets("app", mount_point="team-a"), hvac.exceptions.Forbidden)
                    fails(lambda: a.destroy_secret_versions("app/db", versions=[1], mount_point="team-a"), hvac.exceptions.Forbidden)
                    fails(lambda: hvac.Client(url=addrs[1], token=os.environ["TEAM_A"]).sys.enable_secrets_engine("transit", path="mine"), hvac.exceptions.Forbidden)
                    e = hvac.Client(url=addrs[2], token=os.environ["ENC"]).secrets.transit
                    c = e.encrypt_data("k", base64.b64encode(b"x").decode())["data"]["ciphertext"]
                    fails(lambda: e.decrypt_data("k", c), hvac.exceptions.Forbidden, "permission denied")
                    fails(lambda: e.encrypt_data("other-key", base64.b64encode(b"x").decode()), hvac.exceptions.Forbidden)
                    nobody = hvac.Client(url=addrs[0])
                    fails(lambda: nobody.secrets.kv.v2.read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True), hvac.exceptions.Forbidden)
                    expect(nobody.sys.read_health_status(method="GET")["sealed"] is False, "health needs no token")
                    expect(not nobody.is_authenticated(), "no token: not authenticated")
                    expect(hvac.Client(url=addrs[0], token=os.environ["TEAM_A"]).is_authenticated(), "a credential is a token")
                    print("ok")
                    """, in: cluster.directory, environment: cluster.vaultEnvironment.merging(tokens) { $1 })
            #expect(status == 0 && output.contains("ok"), "\(output)")
            // Revoked: refused on every node.
            #expect(try await aspen(["token", "revoke", file("team-a.cred")]).0 == 0)
            try await eventually("every node refuses the revoked credential") {
                let (status, output) = try python(
                    hvacPrelude + """
                        for url in addrs:
                            try:
                                hvac.Client(url=url, token=os.environ["TEAM_A"]).secrets.kv.v2.read_secret_version("app/db", mount_point="team-a", raise_on_deleted_version=True)
                                print("still served by " + url); sys.exit(1)
                            except hvac.exceptions.Forbidden:
                                pass
                        print("ok")
                        """, in: cluster.directory, environment: cluster.vaultEnvironment.merging(tokens) { $1 })
                return status == 0 && output.contains("ok")
            }
        }

        @Test("the Vault API over HTTPS: hvac verifies the node's certificate; plain HTTP on that port gets nothing")
        func https() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            let directory = cluster.directory
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let made = try openssl(
                ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "vault.key", "-out", "vault.pem",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], in: directory)
            #expect(made.0 == 0, "\(made.1)")
            let tls = ["--vault-cert-file", directory.appendingPathComponent("vault.pem").path, "--vault-key-file", directory.appendingPathComponent("vault.key").path]
            for id in 1...3 { try cluster.start(id, adding: cluster.vaultArguments(id) + (id == 1 ? tls : [])) }
            try await eventually("the cluster answers") { try await cluster.aspen(["secrets", "enable", "kv-v2"]).0 == 0 }
            let (status, output) = try python(
                hvacPrelude + """
                    import requests
                    url = addrs[0].replace("http://", "https://")
                    c = hvac.Client(url=url, verify=os.environ["CA"])
                    c.secrets.kv.v2.create_or_update_secret("over/tls", {"a": "b"})
                    expect(c.secrets.kv.v2.read_secret_version("over/tls", raise_on_deleted_version=True)["data"]["data"] == {"a": "b"}, "https round trip")
                    try:
                        requests.get(addrs[0] + "/v1/sys/health", timeout=5)
                        print("FAILED: plain HTTP answered on the TLS port"); sys.exit(1)
                    except requests.exceptions.RequestException:
                        pass
                    print("ok")
                    """, in: directory, environment: cluster.vaultEnvironment.merging(["CA": directory.appendingPathComponent("vault.pem").path]) { $1 })
            #expect(status == 0 && output.contains("ok"), "\(output)")
        }

        @Test("the CLI: enable, put, get, list, metadata, delete, undelete, destroy, with its exit codes")
        func commandLine() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try await cluster.startWithVault()
            func aspen(_ arguments: [String]) async throws -> (Int32, String) { try await cluster.aspen(arguments, withErrors: true) }
            #expect(try await aspen(["secrets", "enable", "kv-v2", "--path", "team-a"]).0 == 0)
            #expect(try await aspen(["secrets", "list"]).1.contains("team-a/\tkv-v2"))
            #expect(try await aspen(["kv2", "put", "team-a/app/db", "user=a", "password=b", "--cas", "0"]).0 == 0)
            let conflict = try await aspen(["kv2", "put", "team-a/app/db", "user=c", "--cas", "0"])
            #expect(conflict.0 == 2 && conflict.1.contains("check-and-set"), "\(conflict)")
            #expect(try await aspen(["kv2", "put", "team-a/app/db", "--json-data", #"{"user": "c", "ports": [1, 2]}"#, "--cas", "1"]).0 == 0)
            #expect(try await aspen(["kv2", "get", "team-a/app/db", "--field", "user"]).1 == "c")
            #expect(try await aspen(["kv2", "get", "team-a/app/db", "--version", "1", "--field", "password"]).1 == "b")
            #expect(try await aspen(["kv2", "list", "team-a/app"]).1 == "db")
            #expect(try await aspen(["kv2", "delete", "team-a/app/db"]).0 == 0)
            let deleted = try await aspen(["kv2", "get", "team-a/app/db"])
            #expect(deleted.0 == 1 && deleted.1.contains("deleted"), "\(deleted)")
            #expect(try await aspen(["kv2", "undelete", "team-a/app/db", "--versions", "2"]).0 == 0)
            #expect(try await aspen(["kv2", "get", "team-a/app/db", "--field", "ports"]).1.filter { !$0.isWhitespace } == "[1,2]")
            #expect(try await aspen(["kv2", "destroy", "team-a/app/db", "--versions", "1"]).0 == 0)
            let metadata = try await aspen(["kv2", "metadata", "team-a/app/db", "--max-versions", "5"])
            #expect(metadata.0 == 0 && metadata.1.contains("max_versions\t5") && metadata.1.contains("version 1") && metadata.1.contains("destroyed"), "\(metadata)")
            // Raw key-value writes cannot touch the secrets' subspace, even a delete of everything.
            let wipe = try await aspen(["kv", "delete", "--prefix", ""])
            #expect(wipe.0 == 4 && wipe.1.contains("reserved"), "\(wipe)")
            #expect(try await aspen(["kv2", "get", "team-a/app/db", "--field", "user"]).1 == "c")
            let missing = try await aspen(["kv2", "get", "nowhere/x"])
            #expect(missing.0 == 1, "\(missing)")
            #expect(try await aspen(["secrets", "disable", "team-a"]).0 == 0)
            #expect(try await aspen(["kv2", "get", "team-a/app/db"]).0 == 1)
        }

        @Test("a cluster that grows from one voter splits its secret again: with the founder killed, the voters that joined unseal alone")
        func growingCluster() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            try cluster.start(1, arguments: cluster.vaultArguments(1))
            let one = cluster.entries[0]
            var founded = (Int32(-1), "")
            try await eventually("cluster init succeeds", seconds: 15) {
                founded = try await cluster.aspen(["cluster", "init", "--json"], endpoints: one)
                return founded.0 == 0
            }
            let ticket = try #require(founded.1.split(separator: "\"").first { $0.hasPrefix("aspen1") }.map(String.init))
            // The secret is made while node 1 is the only voter (threshold 1 of 1).
            #expect(try await cluster.aspen(["secrets", "enable", "kv-v2"], endpoints: one).0 == 0)
            #expect(try await cluster.aspen(["kv2", "put", "secret/grown", "v=1"], endpoints: one).0 == 0)
            for id in [2, 3] { try cluster.start(id, arguments: ["--ticket", ticket] + cluster.vaultArguments(id)) }
            let (status, output) = try python(
                hvacPrelude + """
                    deadline = time.time() + 30
                    while time.time() < deadline:
                        try:
                            if clients[1].sys.read_seal_status()["n"] == 3: break
                        except Exception:
                            pass
                        time.sleep(0.2)
                    expect(clients[1].sys.read_seal_status()["n"] == 3, "split among three voters: %r" % clients[1].sys.read_seal_status())
                    expect(clients[2].sys.read_seal_status()["t"] == 2, "threshold two")
                    print("ok")
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            #expect(status == 0 && output.contains("ok"), "\(output)")
            cluster.kill9(1)
            try await eventually("node 2 unseals without the founder") {
                try await cluster.aspen(["kv2", "get", "secret/grown", "--field", "v"], endpoints: cluster.entries[1]).1 == "1"
            }
        }

        @Test("at rest: no secret value or key byte is in any data directory, log or snapshot; one node down serves, two down answer 503 quickly; a restarted node unseals from its peers")
        func atRestAndQuorum() async throws {
            let cluster = try ProcessCluster(nodes: 3)
            defer { cluster.terminateAll() }
            // A short log: the writes below are compacted into snapshots too.
            try await cluster.startWithVault(["--compact-after-entries", "16"])
            let canary = "canary-\(UUID().uuidString)"
            #expect(try await cluster.aspen(["secrets", "enable", "kv-v2"]).0 == 0)
            #expect(try await cluster.aspen(["kv2", "put", "secret/app/canary", "value=\(canary)"]).0 == 0)
            // Enough writes that the log is compacted into a snapshot too.
            for index in 0..<20 { #expect(try await cluster.aspen(["kv2", "put", "secret/app/n\(index)", "value=\(canary)-\(index)"]).0 == 0) }
            #expect(try await cluster.aspen(["kv2", "get", "secret/app/canary", "--field", "value"]).1 == canary)
            // A transit key's material, exported once so the scan below can look for its bytes.
            #expect(try await cluster.aspen(["secrets", "enable", "transit"]).0 == 0)
            #expect(try await cluster.aspen(["transit", "create", "canary-key", "--exportable"]).0 == 0)
            let exported = try python(
                hvacPrelude + """
                    print("KEY=" + clients[0].secrets.transit.export_key("canary-key", key_type="encryption-key")["data"]["keys"]["1"])
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            let keyText = try #require(exported.1.split(separator: "\n").first { $0.hasPrefix("KEY=") }.map { String($0.dropFirst(4)) }, "\(exported.1)")
            let keyBytes = try #require(Data(base64Encoded: keyText).map(Array.init))
            #expect(keyBytes.count == 32)
            // One node down: the other two still hold a quorum of key shares and of the log.
            let leader = try await cluster.leader()
            cluster.kill9(leader)
            let alive = (1...3).filter { $0 != leader }
            try await eventually("a survivor serves the secret") {
                try await cluster.aspen(["kv2", "get", "secret/app/canary", "--field", "value"], endpoints: cluster.entries[alive[0] - 1]).1 == canary
            }
            #expect(try await cluster.aspen(["kv2", "put", "secret/app/after", "value=\(canary)-after"], endpoints: cluster.entries[alive[1] - 1]).0 == 0)
            // The killed node comes back with nothing in memory: it unseals from the others.
            try cluster.start(leader, adding: cluster.vaultArguments(leader) + ["--compact-after-entries", "16"])
            try await eventually("the restarted node unseals and serves") {
                try await cluster.aspen(["kv2", "get", "secret/app/after", "--field", "value"], endpoints: cluster.entries[leader - 1]).1 == "\(canary)-after"
            }
            // Two down: the last node answers 503 (sealed or no quorum) rather than hang.
            cluster.kill9(alive[0])
            cluster.kill9(alive[1])
            let started = Date()
            let (status, output) = try python(
                hvacPrelude + """
                    try:
                        clients[\(leader - 1)].secrets.kv.v2.read_secret_version("app/canary", raise_on_deleted_version=True)
                        print("FAILED: read without a quorum"); sys.exit(1)
                    except hvac.exceptions.VaultDown as e:
                        print("503: %s" % e)
                    """, in: cluster.directory, environment: cluster.vaultEnvironment)
            #expect(status == 0 && output.contains("503"), "\(output)")
            #expect(Date().timeIntervalSince(started) < 30, "a request without a quorum is answered, not left to hang")
            cluster.terminateAll()
            // Nothing secret on disk: every file of every data directory, in full.
            var scanned = 0
            let needle = Array(canary.utf8)
            let enumerator = FileManager.default.enumerator(at: cluster.directory, includingPropertiesForKeys: [.isRegularFileKey])
            while let url = enumerator?.nextObject() as? URL {
                guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true,
                    !url.lastPathComponent.hasPrefix("script-"), let data = try? Data(contentsOf: url)
                else { continue }
                scanned += data.count
                let leaked = Array(data).contains(needle)
                #expect(!leaked, "\(url.path) holds the secret in plaintext")
                let keyLeaked = Array(data).contains(keyBytes)
                #expect(!keyLeaked, "\(url.path) holds the transit key's material")
            }
            #expect(scanned > 100_000, "the data directories were read (\(scanned) bytes)")
        }
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs anywhere in the bytes.
    func contains(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return needle.isEmpty }
        let first = needle[0]
        var index = 0
        while index <= count - needle.count {
            if self[index] == first, self[index..<(index + needle.count)].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
