import AspenAuth
import AspenCoordination
import AspenCore
import AspenJobs
import AspenKV
import AspenNode
import AspenRaft
import AspenStorage
import AspenTransport
import Logging
import Testing

@Suite("What each request needs under capability tokens")
struct RequestRequirementsTests {
    static func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    @Test("jobs: submitting needs write on the job's type, working needs full on it, looking needs read on every type")
    func jobs() {
        func granted(_ capability: Capability, _ call: JobCall) -> Bool {
            RequestRequirements.of(call).atoms.allSatisfy { capability.grants($0) }
        }
        let submitShell = Capability.service(.jobs, .write, prefix: Self.bytes("shell"))
        let workShell = Capability.service(.jobs, .full, prefix: Self.bytes("shell"))
        let look = Capability.service(.jobs, .read, prefix: [])
        let shell = JobSpec(type: "shell", command: ["true"])
        #expect(granted(submitShell, .submit(shell)))
        #expect(!granted(submitShell, .submit(JobSpec(type: "resize"))))
        #expect(!granted(look, .submit(shell)), "a shell job needs a capability to submit")
        #expect(!granted(submitShell, .claim(WorkerInfo(name: "w", types: ["shell"]), leaseMs: 1000, waitMs: 0)))
        #expect(granted(workShell, .claim(WorkerInfo(name: "w", types: ["shell"]), leaseMs: 1000, waitMs: 0)))
        #expect(!granted(workShell, .claim(WorkerInfo(name: "w", types: ["shell", "gpu"]), leaseMs: 1000, waitMs: 0)))
        #expect(granted(workShell, .finish(1, type: "shell", token: 2, outcome: .succeeded(result: []), exitCode: 0)))
        let report = JobReport(id: 1, type: "shell", token: 2, outcome: .succeeded(result: []), exitCode: 0)
        var resize = report
        resize.type = "resize"
        #expect(granted(workShell, .finishMany([report, report])))
        #expect(!granted(workShell, .finishMany([report, resize])), "each report's type needs the capability")
        #expect(granted(workShell, .appendOutput(1, type: "shell", token: 2, chunk: JobOutputChunk(offset: 0, isError: false, bytes: []))))
        #expect(!granted(workShell, .renew(1, type: "resize", token: 2, leaseMs: 1000)))
        #expect(granted(look, .job(1)) && granted(look, .list(state: nil, type: nil, after: 0, limit: 1)) && granted(look, .output(1, attempt: nil, from: 0)))
        #expect(!granted(look, .cancel(1)) && !granted(submitShell, .cancel(1)), "cancel names only an id: write on every type")
        #expect(granted(Capability.service(.jobs, .write, prefix: []), .cancel(1)))
        let schedule = CronRecord(name: "n", expression: "@daily", spec: shell)
        #expect(granted(submitShell, .scheduleCreate(schedule, replace: false)) && !granted(look, .scheduleCreate(schedule, replace: false)))
    }

    @Test("a transaction needs every compare and both branches; a returned previous value needs read; a lease revocation needs delete of its keys")
    func writes() throws {
        let transaction = Transaction(
            compares: [Compare(key: Self.bytes("a/x"), .value(Self.bytes("1"))), Compare(key: Self.bytes("r/"), .version(0), extent: .range(end: Self.bytes("r0")))],
            success: [.put(Put(key: Self.bytes("b/1"), value: []))],
            failure: [.delete(Delete(.prefix(Self.bytes("c/")))), .get(RangeRequest(.key(Self.bytes("d")))),
                .transaction(Transaction(compares: [], success: [.put(Put(key: Self.bytes("e"), value: []))]))])
        let needed = try RequestRequirements.of(.transaction(transaction)) { _ in [] }.atoms
        #expect(needed.contains(.read(KeySelection.key(Self.bytes("a/x")))))
        #expect(needed.contains(.read(KeyBounds(start: Self.bytes("r/"), end: Self.bytes("r0")))))
        #expect(needed.contains(.write(Self.bytes("b/1"))))
        #expect(needed.contains(.delete(KeySelection.prefix(Self.bytes("c/")))), "the failure branch")
        #expect(needed.contains(.read(KeySelection.key(Self.bytes("d")))))
        #expect(needed.contains(.write(Self.bytes("e"))), "a nested transaction's branch")
        #expect(needed.count == 6)

        let put = try RequestRequirements.of(.put(Put(key: Self.bytes("k"), value: [], returnPrevious: true))) { _ in [] }.atoms
        #expect(put == [.write(Self.bytes("k")), .read(KeySelection.key(Self.bytes("k")))])
        let delete = try RequestRequirements.of(.delete(Delete(.prefix(Self.bytes("p/")), returnPrevious: true))) { _ in [] }.atoms
        #expect(delete == [.delete(KeySelection.prefix(Self.bytes("p/"))), .read(KeySelection.prefix(Self.bytes("p/")))])
        let revoke = try RequestRequirements.of(.leaseRevoke(7)) { id in id == 7 ? [Self.bytes("s/1"), Self.bytes("t/2")] : [] }.atoms
        #expect(revoke == [.lease, .delete(KeySelection.key(Self.bytes("s/1"))), .delete(KeySelection.key(Self.bytes("t/2")))])
        #expect(try RequestRequirements.of(.compact(3)) { _ in [] } == .clusterAdmin)
        // A delete: capability on s/ alone cannot revoke a lease that also holds t/2.
        let onlyS = Capability.full(prefix: Self.bytes("s/"))
        #expect(revoke.contains { atom in !onlyS.grants(atom) })
    }

    @Test("coordination calls need their KIND/NAME; only status, members and auth status are public")
    func coordinationAndCluster() {
        #expect(RequestRequirements.of(.lockAcquire(name: "build", holder: "h", ttlMs: 1, waitMs: 0)) == .coordination(name: Self.bytes("lock/build")))
        #expect(RequestRequirements.of(.enqueue(queue: "jobs", payloads: [], dedupID: nil, delayMs: 0)) == .coordination(name: Self.bytes("queue/jobs")))
        #expect(RequestRequirements.of(.semaphoreRelease(permit: "pool\u{0}3", holder: "h", token: 1)) == .coordination(name: Self.bytes("semaphore/pool")))
        #expect(RequestRequirements.of(.lockSetAcquire(names: ["a", "b"], holder: "h", ttlMs: 1, waitMs: 0)).atoms.count == 2)
        let publicOnes = ClusterOperation.allCases.filter { RequestRequirements.of($0) == .nothing }
        #expect(Set(publicOnes) == [.status, .members, .authStatus])
    }

    @Test("token revocations are bounded: past revocationsMax the node refuses, naming the limit and the issuer cutoff")
    func revocationsBounded() async throws {
        let storage = MemoryNodeStorage()
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [1])))
        let node = try await startSoloLeader(storage)
        defer { Task { await node.stop() } }
        var limits = Limits()
        limits.revocationsMax = 2
        var logger = Logger(label: "aspen.requirements.test")
        logger.logLevel = .critical
        let service = ClientService(node: node, limits: limits, logger: logger)
        let caller = TransportCaller(key: NodeIdentity().key, isLoopback: true)
        func revoke(_ fill: UInt8, expiresAtMs: Int64 = .max) async -> RPCResponse {
            let revocation = AuthWire.Revocation.token(TokenID(exactly: Array(repeating: fill, count: 32)), expiresAtMs: expiresAtMs)
            return await service.handle(RPCRequest(domain: "cluster", operation: "auth-revoke", body: revocation.encoded).encoded(), from: caller)
        }
        // One revocation of a token long expired, one of a live token.
        #expect(await revoke(1, expiresAtMs: -1_000_000_000) == .ok([]))
        #expect(await revoke(2) == .ok([]))
        // The expired one is dropped to make room for the next.
        #expect(await revoke(3) == .ok([]))
        guard case .failure(let failure) = await revoke(4) else {
            Issue.record("a third live revocation was kept past revocationsMax 2")
            return
        }
        #expect(failure.message.contains("revocationsMax") && failure.message.contains("--issuer"), "\(failure)")
        let kept = try await node.systemRecords(prefix: NodeAuth.Records.revokedPrefix).map(\.name)
        #expect(kept == [NodeAuth.Records.revokedPrefix + Array(repeating: 2, count: 32), NodeAuth.Records.revokedPrefix + Array(repeating: 3, count: 32)])
    }
}
