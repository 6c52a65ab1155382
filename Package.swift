// swift-tools-version:6.1
import PackageDescription

let strictSwift: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

/// Haswell's instruction set (AVX2) for the one module that is called only on CPUs that have it.
#if arch(x86_64)
let avx2: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let avx2: [SwiftSetting] = []
#endif

let package = Package(
    name: "Aspen",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AspenCore", targets: ["AspenCore"]),
        .library(name: "AspenRaft", targets: ["AspenRaft"]),
        .library(name: "AspenKV", targets: ["AspenKV"]),
        .library(name: "AspenStorage", targets: ["AspenStorage"]),
        .library(name: "AspenTransport", targets: ["AspenTransport"]),
        .library(name: "AspenNode", targets: ["AspenNode"]),
        .library(name: "AspenClient", targets: ["AspenClient"]),
        .library(name: "AspenAuth", targets: ["AspenAuth"]),
        .library(name: "AspenEtcd", targets: ["AspenEtcd"]),
        .library(name: "AspenLayer", targets: ["AspenLayer"]),
        .library(name: "AspenCoordination", targets: ["AspenCoordination"]),
        .library(name: "AspenBlob", targets: ["AspenBlob"]),
        .library(name: "AspenJobs", targets: ["AspenJobs"]),
        .library(name: "AspenWorker", targets: ["AspenWorker"]),
        .library(name: "AspenForge", targets: ["AspenForge"]),
        .library(name: "AspenSecrets", targets: ["AspenSecrets"]),
        .library(name: "AspenTesting", targets: ["AspenTesting"]),
        .executable(name: "aspen-sim", targets: ["aspen-sim"]),
        .executable(name: "aspen-storage-bench", targets: ["aspen-storage-bench"]),
        .executable(name: "aspen-node", targets: ["aspen-node"]),
        .executable(name: "aspen", targets: ["aspen"]),
        .executable(name: "aspen-fuzz", targets: ["aspen-fuzz"]),
        .executable(name: "git-remote-aspen", targets: ["git-remote-aspen"]),
        .executable(name: "aspen-job-trampoline", targets: ["aspen-job-trampoline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // Foundation of everything: ids, limits, hashing, seeded randomness. No I/O.
        .target(name: "AspenCore", swiftSettings: strictSwift),
        // The pure Raft instance. Imports only AspenCore; no I/O, clocks, randomness or async.
        .target(name: "AspenRaft", dependencies: ["AspenCore"], swiftSettings: strictSwift),
        // The key-value data model, the deterministic state machine, the KeyValueStore protocol. No I/O.
        .target(name: "AspenKV", dependencies: ["AspenCore"], swiftSettings: strictSwift),
        // The durable node store: Raft log, hard state and KV state in one SQLite file (GRDB).
        .target(
            name: "AspenStorage",
            dependencies: [
                "AspenCore", "AspenRaft", "AspenKV", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: strictSwift
        ),
        // Node identity (Ed25519), TLS 1.3 with pinned keys, ALPN routing, bounded framing.
        .target(
            name: "AspenTransport",
            dependencies: [
                "AspenCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // The node shell: RaftNode (Ready loop, group commit, ReadIndex), peer network, services, runtime.
        .target(
            name: "AspenNode",
            dependencies: [
                "AspenAuth", "AspenBlob", "AspenCore", "AspenJobs", "AspenWorker", "AspenRaft", "AspenKV", "AspenStorage", "AspenTransport", "AspenClient",
                "AspenCoordination", "AspenForge", "AspenSecrets", "AspenCI", "AspenLayer",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSwift
        ),
        // etcd's v3 gRPC API over Aspen's own state machine (generated protobuf code in Generated/).
        .target(
            name: "AspenEtcd",
            dependencies: [
                "AspenAuth", "AspenCore", "AspenKV", "AspenRaft", "AspenTransport", "AspenNode", "AspenClient",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSwift
        ),
        // Layers over KeyValueStore: tuple encoding, subspaces (and, next, the directory layer).
        .target(name: "AspenLayer", dependencies: ["AspenCore", "AspenKV"], swiftSettings: strictSwift),
        .testTarget(name: "AspenLayerTests", dependencies: ["AspenCore", "AspenKV", "AspenLayer"], swiftSettings: strictSwift),
        // Coordination primitives (locks, counters, sequences, ...), each a layer over KeyValueStore.
        .target(name: "AspenCoordination", dependencies: ["AspenCore", "AspenKV", "AspenLayer"], swiftSettings: strictSwift),
        .testTarget(
            name: "AspenCoordinationTests", dependencies: ["AspenCore", "AspenKV", "AspenLayer", "AspenCoordination"],
            swiftSettings: strictSwift),
        // Content-addressed blobs, starting with the BLAKE3 hash (pure Swift). No I/O.
        .target(name: "AspenBlob", dependencies: ["AspenCore", "AspenBlobAVX2"], swiftSettings: strictSwift),
        // Jobs, schedules and pub/sub: layers over the key-value store (docs/jobs.md).
        .target(name: "AspenJobs", dependencies: ["AspenCore", "AspenKV", "AspenLayer", "AspenForge"], swiftSettings: strictSwift),
        // The forge's shared vocabulary: its keys, names, records and wire (docs/forge.md).
        .target(
            name: "AspenForge", dependencies: ["AspenCore", "AspenLayer", "AspenBlob", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift),
        .testTarget(
            name: "AspenForgeTests", dependencies: ["AspenCore", "AspenKV", "AspenForge", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift),
        // Secrets: the engines (KV v2, transit, PKI), encryption at rest, the Shamir-split seal,
        // SOPS/age bootstrap (docs/secrets.md). Pure: no I/O but reading a file it is given.
        .target(
            name: "AspenSecrets",
            dependencies: [
                "AspenCore", "AspenKV", "AspenLayer",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "AspenSecretsTests", dependencies: ["AspenCore", "AspenKV", "AspenSecrets", "AspenTesting", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift),
        .testTarget(name: "AspenJobsTests", dependencies: ["AspenCore", "AspenKV", "AspenJobs", "AspenForge"], swiftSettings: strictSwift),
        // CI pipeline definitions (`.aspen/ci.yml`): strict parsing, the job graph, triggers. Pure: no I/O.
        .target(name: "AspenCI", dependencies: ["AspenCore", .product(name: "Yams", package: "Yams")], swiftSettings: strictSwift),
        .testTarget(
            name: "AspenCITests", dependencies: ["AspenCI", "AspenCore", .product(name: "Yams", package: "Yams")], swiftSettings: strictSwift),
        // The worker's side of jobs: running a claimed job on this machine (shell jobs so far) and
        // leaving none of its processes behind. Linux only.
        .target(
            name: "AspenWorker",
            dependencies: [
                "AspenCore", "AspenJobs", "CAspenLinux", .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift),
        .testTarget(name: "AspenWorkerTests", dependencies: ["AspenWorker"], swiftSettings: strictSwift),
        // The Linux process-control calls Swift's Glibc module lacks: prctl, pidfd_open, pidfd_send_signal.
        .target(name: "CAspenLinux"),
        // A shell job's first process: joins the job's cgroup, then execs the command (C, so that
        // it loads in a fraction of a millisecond); the worker finds it beside its own program.
        .executableTarget(name: "aspen-job-trampoline"),
        // BLAKE3's lane kernel again (the same source file, linked), eight lanes wide and compiled
        // for AVX2; AspenBlob calls it only where the CPU has AVX2.
        .target(name: "AspenBlobAVX2", swiftSettings: strictSwift + avx2),
        .testTarget(name: "AspenBlobTests", dependencies: ["AspenCore", "AspenBlob"], swiftSettings: strictSwift),
        // Capability tokens: Ed25519-signed, delegable with attenuation, verified offline at every link.
        .target(
            name: "AspenAuth",
            dependencies: ["AspenCore", "AspenKV", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift),
        .testTarget(name: "AspenAuthTests", dependencies: ["AspenCore", "AspenKV", "AspenAuth"], swiftSettings: strictSwift),
        // The client: leader discovery, retries, KeyValueStore over aspen/client/1.
        .target(
            name: "AspenClient", dependencies: ["AspenAuth", "AspenBlob", "AspenCI", "AspenCore", "AspenForge", "AspenJobs", "AspenKV", "AspenSecrets", "AspenTransport", "AspenCoordination", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strictSwift),
        // Deterministic cluster simulator and linearizability checker. Never used in production.
        .target(name: "AspenTesting", dependencies: ["AspenCore", "AspenRaft", "AspenKV", "AspenStorage"], swiftSettings: strictSwift),
        .executableTarget(
            name: "aspen-sim",
            dependencies: [
                "AspenCore", "AspenRaft", "AspenTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(name: "AspenKVTests", dependencies: ["AspenCore", "AspenKV", "AspenStorage"], swiftSettings: strictSwift),
        .testTarget(
            name: "AspenStorageTests", dependencies: ["AspenCore", "AspenRaft", "AspenKV", "AspenStorage", "aspen-storage-bench"],
            swiftSettings: strictSwift),
        .executableTarget(
            name: "aspen-storage-bench",
            dependencies: [
                "AspenCore", "AspenRaft", "AspenKV", "AspenStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AspenTransportTests", dependencies: ["AspenCore", "AspenTransport", "AspenTesting", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSwift),
        .testTarget(
            name: "AspenNodeTests",
            dependencies: [
                "AspenCore", "AspenRaft", "AspenKV", "AspenStorage", "AspenTransport", "AspenNode", "AspenClient", "AspenTesting",
                "AspenCoordination", "AspenEtcd", "AspenJobs", "AspenForge", "aspen-node", "aspen", "git-remote-aspen",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strictSwift),
        // The node's commands, run by aspen-node and by `aspen node`.
        .target(
            name: "AspenNodeCommands",
            dependencies: [
                "AspenCore", "AspenNode", "AspenTransport", "AspenEtcd", "AspenForge",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "aspen-node",
            dependencies: ["AspenNodeCommands", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "aspen",
            dependencies: [
                "AspenCI",
                "AspenAuth", "AspenBlob", "AspenCore", "AspenKV", "AspenClient", "AspenNode", "AspenTransport", "AspenEtcd", "AspenCoordination", "AspenLayer",
                "AspenNodeCommands", "AspenJobs", "AspenWorker", "AspenForge", "AspenSecrets",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift
        ),
        // git's remote helper for aspen:// URLs: runs `aspen git-remote-helper` from beside itself.
        .executableTarget(name: "git-remote-aspen", swiftSettings: strictSwift),
        // A fuzz target per decoder, with seed corpora and a seeded mutator. Never used in production.
        .target(
            name: "AspenFuzz",
            dependencies: [
                "AspenAuth", "AspenBlob", "AspenCore", "AspenRaft", "AspenKV", "AspenLayer", "AspenCoordination", "AspenTransport", "AspenEtcd",
                "AspenForge", "AspenSecrets", "AspenCI", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "aspen-fuzz",
            dependencies: ["AspenCore", "AspenFuzz", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSwift
        ),
        .testTarget(name: "AspenFuzzTests", dependencies: ["AspenCore", "AspenFuzz"], swiftSettings: strictSwift),
        .testTarget(name: "AspenCoreTests", dependencies: ["AspenCore"], swiftSettings: strictSwift),
        .testTarget(name: "AspenRaftTests", dependencies: ["AspenCore", "AspenRaft", "AspenTesting"], swiftSettings: strictSwift),
        .testTarget(name: "AspenTestingTests", dependencies: ["AspenCore", "AspenRaft", "AspenTesting"], swiftSettings: strictSwift),
    ],
    swiftLanguageModes: [.v6]
)
