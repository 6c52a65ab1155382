import AspenAuth
import AspenCoordination
import AspenJobs
import AspenCore
import AspenForge
import AspenKV
import AspenSecrets

/// The `cluster.*` operations of the native protocol.
public enum ClusterOperation: String, Sendable, CaseIterable {
    case status, members, metrics, snapshot, hash, defragment
    case transferLeader = "transfer-leader"
    case initialize = "init"
    case adopt
    case addMember = "add-member"
    case promote, remove
    case setVoters = "set-voters"
    /// Whether the cluster requires credentials, which roots it trusts, what it revoked.
    case authStatus = "auth-status"
    /// Add or remove a trusted root.
    case authRoots = "auth-roots"
    /// Revoke a token (and its descendants), or everything an issuer issued before a time.
    case authRevoke = "auth-revoke"
    /// Record, or remove, that the cluster requires credentials (etcd's AuthEnable/AuthDisable).
    case authRequire = "auth-require"
}

/// What each request of each protocol needs, decided by exhaustive switches: a new request
/// kind does not compile until it is given a requirement here. Public requests (`.nothing`) are
/// the published allow-list: `cluster.status` and `cluster.members` (how a client finds the
/// leader; the cluster ticket already tells as much), `cluster.auth-status`, and (on the etcd
/// endpoint) `Authenticate`, `AuthStatus`, `MemberList`, `Status` and `Alarm` reads; and `/health`.
public enum RequestRequirements {
    /// A `cluster.*` operation.
    public static func of(_ operation: ClusterOperation) -> Requirement {
        switch operation {
        case .status, .members, .authStatus:
            return .nothing
        case .metrics, .snapshot, .hash, .defragment, .transferLeader, .initialize, .adopt, .addMember, .promote, .remove, .setVoters,
            .authRoots, .authRevoke, .authRequire:
            return .clusterAdmin
        }
    }

    /// A write. Lease revocation deletes the keys attached to the lease: `leaseKeys` says which.
    public static func of(_ write: KVWriteRequest, leaseKeys: (LeaseID) throws -> [Bytes]) rethrows -> Requirement {
        switch write {
        case .put(let put): return of(put)
        case .delete(let delete): return of(delete)
        case .transaction(let transaction): return of(transaction)
        case .batch(let operations):
            return .all(
                operations.map {
                    switch $0 {
                    case .put(let put): return of(put)
                    case .delete(let delete): return of(delete)
                    }
                })
        case .leaseGrant, .leaseKeepAlive: return .lease
        case .leaseRevoke(let id): return .all([.lease] + (try leaseKeys(id)).map { .delete(.key($0)) })
        case .compact: return .clusterAdmin
        }
    }

    /// A read: the range it names (a continuation token never widens it).
    public static func of(_ range: RangeRequest) -> Requirement { .read(range.selection) }

    /// A lease's status; with its keys, a read of each.
    public static func leaseStatus(keys: [Bytes]) -> Requirement { .all([.lease] + keys.map { .read(.key($0)) }) }

    static func of(_ put: Put) -> Requirement {
        put.returnPrevious || put.ignoreValue || put.ignoreLease ? .all([.write(put.key), .read(.key(put.key))]) : .write(put.key)
    }

    static func of(_ delete: Delete) -> Requirement {
        delete.returnPrevious ? .all([.delete(delete.selection), .read(delete.selection)]) : .delete(delete.selection)
    }

    /// Every compare and every operation of both branches: whichever branch runs, it was allowed.
    static func of(_ transaction: Transaction) -> Requirement {
        var parts: [Requirement] = transaction.compares.map { compare in
            switch compare.extent {
            case .key: return .read(.key(compare.key))
            case .range(let end): return .read(KeyBounds(start: compare.key, end: end))
            }
        }
        for operation in transaction.success + transaction.failure {
            switch operation {
            case .put(let put): parts.append(of(put))
            case .delete(let delete): parts.append(of(delete))
            case .get(let range): parts.append(of(range))
            case .transaction(let nested): parts.append(of(nested))
            }
        }
        return .all(parts)
    }

    /// A coordination call: `coordination` on `KIND/NAME` (`lock/build`, `queue/jobs`, …), so a
    /// capability can name one primitive, every primitive of a kind, or everything.
    public static func of(_ call: CoordinationCall) -> Requirement {
        func on(_ kind: String, _ name: String) -> Requirement { .coordination(name: Array("\(kind)/\(name)".utf8)) }
        switch call {
        case .lockAcquire(let name, _, _, _), .lockRenew(let name, _, _), .lockRelease(let name, _, _), .lockHolder(let name):
            return on("lock", name)
        case .lockSetAcquire(let names, _, _, _), .lockSetRelease(let names, _, _):
            return .all(names.map { on("lock", $0) })
        case .campaign(let name, _, _, _), .electionLeader(let name), .electionRenew(let name, _, _), .resign(let name, _, _):
            return on("election", name)
        case .counter(let name, _, _): return on("counter", name)
        case .sequenceReserve(let name, _): return on("sequence", name)
        case .rateAcquire(let name, _, _, _, _), .rateReset(let name, _, _): return on("rate", name)
        case .enqueue(let queue, _, _, _), .dequeue(let queue, _, _), .peek(let queue), .queueStatus(let queue), .redrive(let queue):
            return on("queue", queue)
        case .ack(let delivery), .nack(let delivery, _), .extend(let delivery, _): return on("queue", delivery.queue)
        case .semaphoreAcquire(let name, _, _, _, _), .semaphoreHolders(let name, _): return on("semaphore", name)
        case .semaphoreRelease(let permit, _, _):
            // A permit is "NAME\0SLOT".
            return on("semaphore", String(permit.prefix { $0 != "\0" }))
        case .barrierEnter(let name, _, _, _), .barrierLeave(let name, _), .barrierStatus(let name): return on("barrier", name)
        case .readLock(let name, _, _, _), .writeLock(let name, _, _, _): return on("rwlock", name)
        case .readUnlock(let grant), .writeUnlock(let grant), .downgrade(let grant): return on("rwlock", grant.name)
        case .register(let instance, _): return on("service", instance.service)
        case .deregister(let service, _): return on("service", service)
        case .discover(let service, _): return on("service", service)
        case .heartbeat:
            // It names only a lease: it needs the right to every service.
            return on("service", "")
        }
    }
}

extension RequestRequirements {
    /// A job call needs the jobs service on the job's type: `write` to submit, `full` to work
    /// (claim, renew, finish), `read` on every type to look, `write` on every type to cancel or
    /// retry (those name only an id).
    public static func of(_ call: JobCall) -> Requirement {
        func jobs(_ access: Capability.Access, _ type: String) -> Requirement { .service(.jobs, access, resource: Array(type.utf8)) }
        switch call {
        case .submit(let spec): return jobs(.write, spec.type)
        case .job, .history, .list: return jobs(.read, "")
        case .claim(let worker, _, _, _, _): return .all(worker.types.map { jobs(.full, $0) })
        case .renew(_, let type, _, _), .finish(_, let type, _, _, _), .appendOutput(_, let type, _, _): return jobs(.full, type)
        case .finishMany(let reports): return .all(Set(reports.map(\.type)).sorted().map { jobs(.full, $0) })
        case .output, .saga: return jobs(.read, "")
        case .sagaStart(_, _, let type, _): return jobs(.write, type)
        case .publish(let messages): return .all(messages.map { .service(.hooks, .write, resource: Array($0.subject.utf8)) })
        case .read(let pattern, _, _):
            // A pattern's literal tokens before its first wildcard: the subjects it can select.
            let tokens = (pattern ?? "").split(separator: ".", omittingEmptySubsequences: false)
            let literal = tokens.prefix { $0 != "*" && $0 != ">" }.joined(separator: ".")
            let resource = pattern == nil ? "" : literal.count < (pattern ?? "").count && !literal.isEmpty ? literal + "." : literal
            return .service(.hooks, .read, resource: Array(resource.utf8))
        case .retentionSet, .retentions: return .service(.hooks, .full, resource: [])
        case .groupCreate(let group, _): return .service(.hooks, .full, resource: Array("group/\(group.name)".utf8))
        case .fetch(let group, _, _, _), .settle(let group, _, _, _), .groupStatus(let group):
            return .service(.hooks, .full, resource: Array("group/\(group)".utf8))
        case .hookCreate(let hook):
            return .all([.service(.hooks, .full, resource: Array("hook/\(hook.name)".utf8)), jobs(.write, hook.job.type)])
        case .hookRemove(let name): return .service(.hooks, .full, resource: Array("hook/\(name)".utf8))
        case .hooks: return .service(.hooks, .read, resource: [])
        case .cancel, .retry, .schedulePause, .scheduleRemove: return jobs(.write, "")
        case .scheduleCreate(let record, _): return jobs(.write, record.spec.type)
        case .schedules, .scheduleHistory: return jobs(.read, "")
        }
    }

    /// A forge call: creating and deleting a repository take full access to its name; reading
    /// takes read access (a listing: to every name).
    public static func of(_ call: ForgeCall) -> Requirement {
        switch call {
        case .create(let record): return .service(.forge, .full, resource: Array(record.name.utf8))
        case .delete(let name): return .service(.forge, .full, resource: Array(name.utf8))
        case .show(let name), .refs(let name), .packs(let name), .protections(let name): return .service(.forge, .read, resource: Array(name.utf8))
        case .protect(let name, _, _): return .service(.forge, .full, resource: Array(name.utf8))
        case .cobHeads(let name, _, _), .issues(let name), .issue(let name, _), .patches(let name), .patch(let name, _), .patchDiff(let name, _, _, _):
            return .service(.forge, .read, resource: Array(name.utf8))
        // Writing issues takes write access; who may change what in an issue is the fold's rule.
        case .cobAdd(let name, _), .patchMerge(let name, _): return .service(.forge, .write, resource: Array(name.utf8))
        case .repack(let name): return .service(.forge, .write, resource: Array(name.utf8))
        case .list(let prefix): return .service(.forge, .read, resource: Array(prefix.utf8))
        }
    }
}

extension RequestRequirements {
    /// A secrets request (the Vault API): kv-v2 by `MOUNT/PATH` and verb (read, write, delete,
    /// list; undelete is a write, destroy a delete), the mount table by `MOUNT/` with `manage`
    /// (a listing: `list` on every mount); health and seal status are public, and the token
    /// lookup needs only a credential.
    public static func of(_ operation: SecretsOperation) -> Requirement {
        func secrets(_ access: Capability.Access, _ resource: String) -> Requirement { .service(.secrets, access, resource: Array(resource.utf8)) }
        switch operation {
        case .health, .sealStatus, .lookupSelf: return .nothing
        case .mounts: return secrets(.list, "")
        case .mountRead(let path): return secrets(.read, path + "/")
        case .mountEnable(let path, _, _, _), .mountDisable(let path), .mountTune(let path, _): return secrets(.manage, path + "/")
        case .kvConfig(let mount): return secrets(.read, mount.path + "/")
        case .kvConfigWrite(let mount, _): return secrets(.manage, mount.path + "/")
        case .kvRead(let mount, let path, _), .kvMetadata(let mount, let path): return secrets(.read, mount.path + "/" + path)
        case .kvWrite(let mount, let path, _, _), .kvPatch(let mount, let path, _, _), .kvMetadataWrite(let mount, let path, _, _):
            return secrets(.write, mount.path + "/" + path)
        case .kvVersions(let mount, let action, let path, _):
            return secrets(action == .undelete ? .write : .delete, mount.path + "/" + path)
        case .kvMetadataDelete(let mount, let path): return secrets(.delete, mount.path + "/" + path)
        case .kvList(let mount, let prefix): return secrets(.list, mount.path + "/" + prefix)
        case .pki(let mount, let call): return of(call, mount: mount.path)
        case .transit(let mount, let call): return of(call, mount: mount.path)
        }
    }

    /// A transit call, by `MOUNT/KEY`: each use by its verb (`transit-encrypt`, `-decrypt`,
    /// `-sign`, `-verify`; a rewrap both decrypts and encrypts), every change to a key
    /// `transit-manage`, reading a key `transit-read`. The prefix operations also need the
    /// key-value rights on the prefix they scan (and rewrite).
    static func of(_ call: TransitCall, mount: String) -> Requirement {
        // `MOUNT/KEY/`: a grant on `transit/app/` names the key app alone, not app2.
        func transit(_ access: Capability.Access, _ name: String) -> Requirement {
            .service(.transit, access, resource: Array((mount + "/" + name + (name.isEmpty ? "" : "/")).utf8))
        }
        switch call {
        case .list: return transit(.read, "")
        case .read(let name): return transit(.read, name)
        case .create(let name, _, _, _, _, _, _), .delete(let name), .configure(let name, _, _, _, _, _, _), .rotate(let name), .trim(let name, _),
            .export(let name, _, _):
            return transit(.manage, name)
        case .encrypt(let name, _, _, _), .dataKey(let name, _, _, _): return transit(.encrypt, name)
        case .decrypt(let name, _, _): return transit(.decrypt, name)
        case .rewrap(let name, _, _): return .all([transit(.decrypt, name), transit(.encrypt, name)])
        case .sign(let name, _, _, _): return transit(.sign, name)
        case .verify(let name, _, _, _): return transit(.verify, name)
        case .inventory(let name, let prefix): return .all([transit(.manage, name), .read(.prefix(prefix))])
        case .rewrapPrefix(let name, let prefix, _): return .all([transit(.manage, name), .read(.prefix(prefix)), .write(KeySelection.prefix(prefix).bounds)])
        }
    }

    /// A PKI call: issuing and signing by `MOUNT/ROLE` (`pki-issue`), revocation (`pki-revoke`)
    /// and everything that changes the CA or roles (`pki-manage`) by `MOUNT/`; reading roles
    /// and certificates takes `pki-read`; the CA certificate and CRL are public, as in Vault.
    static func of(_ call: PKICall, mount: String) -> Requirement {
        // `MOUNT/ROLE/`: a grant on `pki/web/` names the role web alone, not web-admin.
        func pki(_ access: Capability.Access, _ resource: String = "") -> Requirement {
            .service(.pki, access, resource: Array((mount + "/" + resource + (resource.isEmpty ? "" : "/")).utf8))
        }
        switch call {
        case .caCertificate, .crl: return .nothing
        case .generateRoot, .generateIntermediate, .signIntermediate, .setSigned, .roleWrite, .roleDelete, .rotateCRL: return pki(.manage)
        case .roleRead(let name): return pki(.read, name)
        case .roles, .certificate, .certificates: return pki(.read)
        case .issue(let role, _, _, _, _, _), .sign(let role, _, _, _, _, _): return pki(.issue, role)
        case .revoke: return pki(.revoke)
        }
    }
}

extension RequestRequirements {
    /// Why a client's key-value write may not run, if it writes or deletes inside the secrets'
    /// subspace: only the secrets engines change it (every value there is sealed, and a raw
    /// write could drop or replace a secret). Reads there see only sealed envelopes. Callers
    /// refuse only while the subspace holds anything (`RaftNode.holdsSecrets`), so that deleting
    /// every key stays possible on a cluster that keeps no secrets.
    public static func reservedWriteProblem(_ requirement: Requirement) -> String? {
        let reserved = SecretsKeys.space.prefix
        let reservedEnd = KeyBounds.prefixEnd(reserved)
        for atom in requirement.atoms {
            switch atom {
            case .write(let bounds), .delete(let bounds):
                let startsBefore = reservedEnd.map { bounds.start.lexicographicallyPrecedes($0) } ?? true
                let endsAfter = bounds.end.map { reserved.lexicographicallyPrecedes($0) } ?? true
                if startsBefore && endsAfter {
                    return "keys under the secrets subspace (\"aspen\", \"secrets\") are reserved: change secrets through the secrets API (aspen secrets, aspen kv2, Vault clients)"
                }
            default: continue
            }
        }
        return nil
    }
}

extension RaftNode {
    /// Whether this node's state holds anything under the secrets' subspace.
    public func holdsSecrets() async throws -> Bool {
        try await read(RangeRequest(.prefix(SecretsKeys.space.prefix), limit: 1, keysOnly: true), consistency: .stale).kvs.isEmpty == false
    }
}
