/// Every bound in Aspen, named once.
///
/// A request over a bound is refused with an error that names the bound; nothing is silently
/// truncated or dropped. The defaults are the production values; tests and the simulator may
/// lower them to reach the edges quickly.
public struct Limits: Sendable, Equatable {
    // MARK: Data model
    /// Largest key, in bytes.
    public var keyBytesMax = 1024
    /// Largest value, in bytes.
    public var valueBytesMax = 1024 * 1024
    /// Most keys in one atomic batch write or transaction.
    public var batchKeysMax = 1000
    /// Deepest nesting of transactions inside transactions.
    public var transactionDepthMax = 8
    /// Tuples nested inside tuples, counting the outermost as 1 (the tuple layer; coordination
    /// calls are tuples). Decoding is recursive, one frame per level: the bound keeps hostile
    /// input (a long run of 0x05 bytes) from exhausting the stack.
    public var tupleDepthMax = 32
    /// Default and largest scan page.
    public var scanPageDefault = 1000
    public var scanPageMax = 10_000
    /// Most key and value bytes in one scan page: the page stops before the entry that would
    /// pass it (never before the first) and continues with a token. Below `grpcMessageBytesMax`,
    /// so that a page always fits one answer; a page of 10 000 values of 1 MiB is never built.
    public var responseBytesMax = 3 * 1024 * 1024

    // MARK: Client sessions (exactly-once writes)
    /// Most client sessions the state machine remembers; a new one past it evicts the least
    /// recently seen.
    public var clientSessionsMax = 10_000
    /// A session unseen this long (by the leaders' clocks) is forgotten: one hour.
    public var clientSessionIdleMsMax: Int64 = 3_600_000
    /// Most requests of one session awaiting the client's acknowledgement, whose results are kept
    /// to answer a retry.
    public var clientSessionResultsMax = 1024

    // MARK: Blobs
    /// Largest blob, in bytes (4 GiB).
    public var blobBytesMax: UInt64 = 4 << 30
    /// Most transfers (uploads, slices served, replications) a node runs at once; past it a new
    /// one is refused as unavailable and the client tries again or elsewhere.
    public var blobTransfersMax = 64
    /// Chunk groups in one slice request or answer (64 × 16 KiB = 1 MiB of data).
    public var blobSliceGroupsMax: UInt64 = 64
    /// Bytes of blob data in one upload frame.
    public var blobUploadFrameBytesMax = 1024 * 1024
    /// An upload with nothing received for this long is abandoned and its partial data removed.
    public var blobUploadIdleMsMax: Int64 = 60_000
    /// Most replicas of one blob (and the largest replication factor).
    public var blobReplicasMax = 7
    /// Blobs (or tags) in one list page.
    public var blobListPageMax = 1000
    /// Longest tag name, in bytes.
    public var blobTagBytesMax = 200
    /// Garbage collection deletes an unreferenced blob only once it was last added this long ago
    /// (1 hour), and a node's files of a blob it no longer holds only once they are this old:
    /// longer than any transfer, so no add, replication or tag in flight loses its data.
    public var blobGcGraceMs: Int64 = 3_600_000
    /// Bytes a background scrub re-verifies per second (an explicit `aspen blob scrub` runs at
    /// full speed).
    public var blobScrubBytesPerSecond: UInt64 = 32 << 20

    // MARK: Jobs
    /// A shell job's command and arguments, together, in bytes.
    public var jobCommandBytesMax = 64 * 1024
    /// Another job type's input, in bytes (larger inputs go to the blob store).
    public var jobPayloadBytesMax = 256 * 1024
    /// Jobs one job may depend on.
    public var jobDependenciesMax = 256
    /// Worker tags one job may require.
    public var jobTagsMax = 32
    /// A job type, tag or idempotency key, in bytes.
    public var jobNameBytesMax = 200
    /// Attempts one job may have.
    public var jobAttemptsMax = 100
    /// What a job's attempt returns, in bytes (larger results go to the blob store).
    public var jobResultBytesMax = 64 * 1024
    /// A job's error message or history note, in bytes (longer ones are cut).
    public var jobMessageBytesMax = 4096
    /// Output one attempt keeps (`aspen job logs`), in bytes.
    public var jobOutputBytesMax = 16 << 20
    /// One piece of output a worker sends, in bytes.
    public var jobOutputChunkBytesMax = 64 * 1024
    /// Steps of one saga.
    public var sagaStepsMax = 64

    // MARK: Pub/sub
    /// A published message's payload, in bytes (larger ones go to the blob store).
    public var topicPayloadBytesMax = 256 * 1024
    /// Headers of one message, and their bytes together.
    public var topicHeadersMax = 32
    public var topicHeaderBytesMax = 4096
    /// Messages of one publish batch (and of one group commit), and their encoded bytes: one
    /// transaction, within `batchKeysMax` operations and `raftEntryBytesMax`.
    public var topicBatchMax = 200
    public var topicBatchBytesMax = 1024 * 1024
    /// Longest subject or subject pattern, in bytes.
    public var subjectBytesMax = 255
    /// Most tokens (dot-separated parts) of a subject or pattern.
    public var subjectTokensMax = 32

    // MARK: Forge
    /// Longest repository name, in bytes.
    public var forgeRepoNameBytesMax = 100
    /// Longest repository description, in bytes.
    public var forgeDescriptionBytesMax = 1024
    /// Refs one repository holds.
    public var forgeRefsMax = 10_000
    /// Refs one push changes (all of them in one transaction, with the pack record and the
    /// event: three keys each, within `batchKeysMax`).
    public var forgeRefUpdatesMax = 300
    /// git sessions (fetches and pushes) one node runs at once; past it a client is told the
    /// node is busy.
    public var forgeSessionsMax = 64
    /// Longest ref name, in bytes.
    public var forgeRefNameBytesMax = 255
    /// Largest pack one push sends, in bytes.
    public var forgePackBytesMax: UInt64 = 2 << 30
    /// Packs one repository's pack set holds before a push is refused until it is repacked.
    public var forgePacksMax = 2000
    /// An issue's (or patch's) title, in bytes.
    public var forgeTitleBytesMax = 256
    /// A comment or an issue's body, in bytes.
    public var forgeCommentBytesMax = 64 * 1024
    /// Labels one change adds or removes (each list).
    public var forgeLabelsMax = 32
    /// One label, in bytes.
    public var forgeLabelBytesMax = 64
    /// Parents of one collaborative-object change (the heads its author saw).
    public var forgeCobParentsMax = 64
    /// Operations in one change.
    public var forgeCobOperationsMax = 16
    /// One signed change, in bytes.
    public var forgeCobChangeBytesMax = 128 * 1024
    /// Changes one collaborative object holds.
    public var forgeCobChangesMax = 10_000
    /// Packs a repack replaced stay referenced this long (1 hour), longer than any clone that
    /// read the pack set before the repack, then go to blob collection.
    public var forgePackGraceMs: Int64 = 3_600_000

    // MARK: System records
    /// Most system records (replicated cluster metadata outside the keyspace) the state holds; a
    /// system write that would leave more fails whole.
    public var systemRecordsMax = 100_000
    /// Most record changes in one system write.
    public var systemRecordChangesMax = 1000
    /// Longest system record name (or name prefix), in bytes.
    public var systemRecordNameBytesMax = 256
    /// Largest system record value, in bytes.
    public var systemRecordValueBytesMax = 64 * 1024

    // MARK: Raft
    /// Most entries in one proposal batch, one append message, and one group-commit batch.
    public var raftBatchEntriesMax = 1000
    /// Largest payload of one log entry, in bytes (a value plus its key and framing).
    public var raftEntryBytesMax = 2 * 1024 * 1024
    /// Most entry bytes in one append message. Stays well below `rpcMessageBytesMax`.
    public var raftAppendBytesMax = 4 * 1024 * 1024
    /// Most append messages in flight to one follower in the replicate state.
    public var raftInflightAppendsMax = 256
    /// Most proposed entries the leader holds uncommitted; beyond it proposals are refused.
    public var raftPendingProposalsMax = 10_000
    /// Most proposed bytes the leader holds uncommitted.
    public var raftPendingProposalBytesMax = 64 * 1024 * 1024
    /// Most Raft messages a node holds received but not yet handed to its instance; beyond it,
    /// messages are dropped and Raft's retries recover.
    public var raftInboxMessagesMax = 10_000
    /// Most linearizable reads waiting for a ReadIndex round.
    public var raftPendingReadsMax = 10_000
    /// Most committed entries handed to the state machine in one Ready.
    public var raftApplyEntriesMax = 1000
    /// Most new entries, and entry bytes, one Ready hands the shell to persist (one group-commit
    /// batch); the rest follow in the next Ready. As many as a leader may hold uncommitted, so a
    /// leader's batch is never cut; a follower that received many appends at once persists them
    /// in several batches.
    public var raftReadyEntriesMax = 10_000
    public var raftReadyBytesMax = 64 * 1024 * 1024
    /// Most entries in a Raft instance's in-memory log (those after its snapshot). Compaction
    /// keeps it far below; if compaction stops, the leader refuses proposals past it and a
    /// follower takes only the part of an append that fits, rather than grow without end.
    public var raftLogEntriesMax = 1_000_000
    /// Snapshot chunk size, and how many chunks a leader has in flight to one follower. An
    /// image is streamed from a file on both sides, so its own size has no bound but the disk's.
    public var raftSnapshotChunkBytes = 1024 * 1024
    public var raftSnapshotChunksInFlightMax = 4
    /// Most members (voters and learners) of one Raft group.
    public var raftMembersMax = 64

    // MARK: Node
    /// A batch that only applies at most this many committed entries, of this many bytes, of
    /// bounded work, is committed on the node's event loop instead of a pool thread.
    public var inlineApplyEntriesMax = 4
    public var inlineApplyBytesMax = 64 * 1024
    /// Lease keep-alives a new leader has in flight at once while it extends every lease.
    public var leaseRefreshesInFlightMax = 256

    // MARK: Network
    /// Largest RPC frame on the wire.
    public var rpcMessageBytesMax = 10 * 1024 * 1024
    /// Longest domain, operation and error code of an RPC, in bytes.
    public var rpcNameBytesMax = 64
    /// Longest cookie proof carried by a request, in bytes.
    public var rpcProofBytesMax = 64
    /// Longest error message and typed error detail of a response, in bytes.
    public var rpcErrorMessageBytesMax = 4096
    public var rpcErrorDetailBytesMax = 64 * 1024
    /// Largest message one call may send to the etcd gRPC endpoint (larger ones fail with
    /// RESOURCE_EXHAUSTED).
    public var grpcMessageBytesMax = 4 * 1024 * 1024
    /// The receive window the etcd endpoint grants each connection (HTTP/2 starts it at 64 KiB):
    /// room for a few large requests at once.
    public var grpcConnectionWindowBytes = 4 * 1024 * 1024
    /// Largest answer the etcd endpoint's own gRPC client (the benchmark's) accepts.
    public var grpcAnswerBytesMax = 64 * 1024 * 1024
    /// Most peer connections a node keeps (connections that chose the Raft protocol).
    public var peersMax = 1000
    /// Most client connections a node serves at once (the native protocols other than Raft),
    /// counted apart from peers so that clients cannot crowd out the cluster's own traffic.
    public var clientConnectionsMax = 1024
    /// Most connections still in their TLS handshake (each is cut after the handshake timeout).
    public var handshakesMax = 256
    /// Requests one client connection may have in flight; past it the node stops reading from
    /// that connection until an answer leaves.
    public var connectionRequestsMax = 1024
    /// Request bytes one client connection may have in flight, likewise.
    public var connectionRequestBytesMax = 64 * 1024 * 1024
    /// Most connections the etcd endpoint serves at once.
    public var grpcConnectionsMax = 1024
    /// Calls open at once on one etcd endpoint connection (HTTP/2 concurrent streams).
    public var grpcStreamsMax = 1024
    /// Request bytes one etcd endpoint connection may hold: messages not yet whole, unary
    /// requests being served, stream messages not yet read. A frame that would pass it ends its
    /// call with RESOURCE_EXHAUSTED.
    public var grpcConnectionBufferedBytesMax = 64 * 1024 * 1024
    /// Watch streams one node serves at once.
    public var watchersMax = 1000
    /// Messages queued for one watcher before it is cut off as lagging.
    public var watchQueueMessagesMax = 1024
    /// Events per watch message when replaying history.
    public var watchReplayPageEvents = 1000

    // MARK: Capability tokens
    /// Largest signed token (body and signature), checked before any decoding or signature work.
    public var tokenBytesMax = 8 * 1024
    /// Largest credential: a token and its proof chain, and the holder's key if it carries one.
    public var credentialBytesMax = 64 * 1024
    /// Most capabilities in one token.
    public var capabilitiesPerTokenMax = 32
    /// Deepest delegation: a root token has depth 0, its child 1, and so on.
    public var delegationDepthMax = 8
    /// Longest lifetime of a bearer token (one usable by whoever holds it): one hour.
    public var bearerLifetimeMsMax: Int64 = 3_600_000
    /// How far the clocks of the token's issuer and a verifying node may disagree: a token is
    /// valid from `notBefore - skew` until `expires + skew`.
    public var tokenClockSkewMs: Int64 = 30_000
    /// Verified chains a node remembers, so that a credential's signatures are checked once.
    public var verifiedCredentialsMax = 4096
    /// Token revocations the cluster keeps (each until its token expires); past it, revoke by
    /// issuer and time instead: one record revokes everything an issuer issued before then.
    public var revocationsMax = 10_000

    // MARK: Secrets (docs/secrets.md)
    /// Most secrets engine mounts in a cluster.
    public var secretsMountsMax = 64
    /// Longest mount path, in bytes.
    public var secretsMountPathBytesMax = 128
    /// Longest mount description, in bytes.
    public var secretsMountDescriptionBytesMax = 1024
    /// Longest secret path (or transit key or PKI role name) inside a mount, in bytes.
    public var secretPathBytesMax = 512
    /// Largest KV v2 secret (its JSON data), in bytes.
    public var secretBytesMax = 512 * 1024
    /// Deepest nesting of a JSON document the secrets API accepts (objects and arrays).
    public var secretJSONDepthMax = 32
    /// Largest request body the Vault API reads, in bytes.
    public var secretsRequestBytesMax = 1024 * 1024
    /// Most versions a KV v2 secret keeps (`max_versions` may not be set above it; 0 means the default).
    public var secretVersionsMax = 100
    /// Versions kept when neither the secret nor the mount sets `max_versions` (Vault's default).
    public var secretVersionsDefault = 10
    /// Most custom metadata entries on a secret, and the longest key and value (Vault's bounds).
    public var secretCustomMetadataMax = 64
    public var secretCustomMetadataKeyBytesMax = 128
    public var secretCustomMetadataValueBytesMax = 512
    /// Most keys one LIST answers (a listing past it is refused, naming the bound).
    public var secretsListKeysMax = 10_000
    /// Largest transit plaintext (before base64), in bytes.
    public var transitPlaintextBytesMax = 1024 * 1024
    /// Most items in one transit batch request.
    public var transitBatchMax = 1000
    /// Most transit keys, and PKI roles and certificates, in one mount.
    public var transitKeysMax = 10_000
    public var pkiRolesMax = 1000
    public var pkiCertificatesMax = 100_000
    /// Most versions one transit key keeps (rotations past it are refused until old ones are trimmed).
    public var transitKeyVersionsMax = 1000
    /// Most entries in a PKI mount's certificate revocation list: the signed CRL is one value,
    /// under `valueBytesMax` (about 40 bytes an entry).
    public var pkiCRLEntriesMax = 20_000
    /// Largest SOPS file a node reads at start, in bytes.
    public var sopsFileBytesMax = 1024 * 1024
    /// How long a secrets request waits for the cluster (a quorum for reads and writes, key shares
    /// to unseal) before it is answered 503.
    public var secretsQuorumWaitMs: Int64 = 3000

    // MARK: CI
    /// Largest pipeline file (`.aspen/ci.yml`), in bytes, checked before the YAML parser sees it.
    public var ciPipelineFileBytesMax = 1024 * 1024
    /// Largest stored (encoded) pipeline, in bytes: above the file bound, for the defaults a
    /// file may leave out.
    public var ciPipelineEncodedBytesMax = 2 * 1024 * 1024
    /// Deepest nesting of mappings and sequences in a pipeline file (the schema needs 5).
    public var ciYAMLDepthMax = 16
    /// Most YAML nodes (scalars, mappings, sequences) in a pipeline file.
    public var ciYAMLNodesMax = 50_000
    /// Most jobs in one pipeline, counting each matrix combination as a job.
    public var ciJobsPerPipelineMax = 256
    /// Longest job name, in bytes.
    public var ciJobNameBytesMax = 64
    /// Longest other name (matrix axis and value, environment variable, secret, worker tag), in bytes.
    public var ciNameBytesMax = 128
    /// Axes of one job's matrix, and values of one axis.
    public var ciMatrixAxesMax = 8
    public var ciMatrixValuesMax = 64
    /// A job's timeout when it names none (30 minutes), and the longest it may name (24 hours).
    public var ciJobTimeoutMsDefault: Int64 = 1_800_000
    public var ciJobTimeoutMsMax: Int64 = 86_400_000
    /// A job's `run` script, in bytes.
    public var ciRunBytesMax = 64 * 1024
    /// Any text after interpolation (`run`, an environment value, a cache key, a concurrency
    /// group), in bytes.
    public var ciInterpolatedBytesMax = 128 * 1024
    /// Environment variables of one job, and the longest value, in bytes.
    public var ciEnvVarsMax = 64
    public var ciEnvValueBytesMax = 8 * 1024
    /// Secrets one job may read.
    public var ciSecretsPerJobMax = 32
    /// Worker tags one job may require.
    public var ciWorkerTagsPerJobMax = 16
    /// Entries of one list of patterns or paths (branches, tags, paths, artifacts, cache
    /// paths), and the longest entry, in bytes.
    public var ciPatternsMax = 64
    public var ciPatternBytesMax = 1024
    /// Longest cache key and concurrency group, in bytes.
    public var ciCacheKeyBytesMax = 512
    /// Retries of one job, and exit codes that may ask for one.
    public var ciJobRetriesMax = 10
    public var ciRetryExitCodesMax = 16
    /// Longest `if` condition, in bytes, and deepest nesting of its parentheses.
    public var ciConditionBytesMax = 1024
    public var ciConditionDepthMax = 8
    /// Changed paths a trigger's path filters look at; a push that changes more runs without
    /// filtering (running too much is safe, skipping wrongly is not).
    public var ciChangedPathsMax = 10_000
    /// Work of matching changed paths against path filters (the sum, over the matches made, of
    /// pattern bytes × path bytes, a match's worst cost); past it the pipeline runs unfiltered.
    public var ciPathMatchWorkMax = 200_000_000
    /// Log one try of a job keeps, in bytes (the rest is dropped and the drop noted in the log).
    public var ciLogBytesPerJobMax = 128 << 20
    /// Longest CI secret value, in bytes, and secrets one repository may hold.
    public var ciSecretBytesMax = 32 * 1024
    public var ciSecretsPerRepoMax = 256
    /// Artifacts: files one job keeps, the largest file, all of one job's, in bytes, and the
    /// longest path.
    public var ciArtifactsPerJobMax = 1000
    public var ciArtifactBytesMax: UInt64 = 256 << 20
    public var ciArtifactsBytesPerJobMax: UInt64 = 1 << 30
    public var ciArtifactPathBytesMax = 1024
    /// A cache's archive, in bytes.
    public var ciCacheBytesMax: UInt64 = 1 << 30
    /// Caches one repository keeps, and their archives' bytes together: past either, the
    /// leader deletes the least recently used (saved or restored) first.
    public var ciCachesPerRepoMax = 64
    public var ciCacheBytesPerRepoMax: UInt64 = 10 << 30
    /// Runs not yet ended, of one repository and in all: a push past either makes a run in
    /// `error` naming the bound (nothing is lost silently), a manual run is refused.
    public var ciActiveRunsPerRepoMax = 64
    public var ciActiveRunsMax = 1024
    /// Ended runs a repository keeps (with their logs, artifacts and statuses); older ones are
    /// deleted by the leader (node setting `ci-runs-kept`).
    public var ciRunsKeptPerRepo = 1000

    public init() {}

    /// The production limits.
    public static let standard = Limits()
}
