import AspenCore
import AspenSecrets

/// The secrets engines' inputs: Vault API requests as the native protocol carries them and as
/// HTTP gives them (method, target, body through the router), the records a node reads back
/// (mounts, kv-v2 metadata, the seal), and JSON bodies (the depth scan and the bounded parse).
extension FuzzTarget {
    static let secretsTargets: [FuzzTarget] = [secretsWire, vaultRouter]

    static let secretsWire = FuzzTarget(
        name: "secrets-wire",
        summary: "VaultRequest, VaultResponse, MountRecord, KV2Metadata, SealRecord: the secrets wire and stored records",
        seeds: {
            let requests = [
                VaultRequest(method: "POST", path: "team-a/data/app/db", query: ["version": "2"], body: Array(#"{"data":{"a":1},"options":{"cas":0}}"#.utf8)),
                VaultRequest(method: "LIST", path: "secret/metadata/"),
            ]
            let responses = [VaultResponse(status: 200, body: Array(#"{"data":{}}"#.utf8)), VaultResponse.noContent]
            let mounts = [
                MountRecord(path: "team-a", type: .kv2, id: Array(repeating: 9, count: 16), description: "d", createdMs: 1, kv: KV2Config(maxVersions: 3, casRequired: true, deleteVersionAfterMs: 60_000)),
                MountRecord(path: "transit", type: .transit, id: Array(repeating: 1, count: 16), createdMs: -5),
            ]
            var metadata = KV2Metadata(createdMs: 10)
            metadata.currentVersion = 2
            metadata.oldestVersion = 1
            metadata.customMetadata = ["owner": "a"]
            metadata.versions = [1: KV2Version(createdMs: 10, deletionMs: 20), 2: KV2Version(createdMs: 30, destroyed: true)]
            let seal = SealRecord(epoch: 3, threshold: 2, members: [NodeID(1): 1, NodeID(2): 2, NodeID(3): 3], verifier: Array(repeating: 4, count: 32))
            var seeds = selected(0, requests.map { $0.encoded() })
            seeds += selected(1, responses.map { $0.encoded() })
            seeds += selected(2, mounts.map { $0.encoded() })
            seeds += selected(3, [metadata.encoded(), KV2Metadata(createdMs: 0).encoded()])
            seeds += selected(4, [seal.encoded()])
            seeds += selected(5, [Array(#"{"a":[1,{"b":"\"]"}],"c":null}"#.utf8), Array("[[[[]]]]".utf8)])
            return seeds
        }
    ) { input in
        let limits = Limits.standard
        return FuzzCheck.select(input, [
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try VaultRequest(decoding: $0, limits: limits) }, encode: { $0.encoded() },
                    bounds: { $0.body.count > limits.secretsRequestBytesMax ? "a body of \($0.body.count) bytes" : nil })
            },
            { FuzzCheck.roundTrip($0, decode: { try VaultResponse(decoding: $0, limits: limits) }, encode: { $0.encoded() }) },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try MountRecord(decoding: $0, limits: limits) }, encode: { $0.encoded() },
                    bounds: { $0.path.utf8.count > limits.secretsMountPathBytesMax || $0.id.count > 16 ? "an oversized mount" : nil })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try KV2Metadata(decoding: $0, limits: limits) }, encode: { $0.encoded() },
                    bounds: { $0.versions.count > limits.secretVersionsMax + 1 || $0.customMetadata.count > limits.secretCustomMetadataMax ? "too many entries" : nil })
            },
            {
                FuzzCheck.roundTrip(
                    $0, decode: { try SealRecord(decoding: $0) }, encode: { $0.encoded() },
                    bounds: { $0.threshold < 1 || $0.threshold > $0.members.count ? "threshold \($0.threshold) of \($0.members.count)" : nil })
            },
            { bytes in
                // JSON: the scan and the parse never crash, and nothing deeper than the bound parses.
                let depth = SecretsJSON.depth(of: bytes, limit: limits.secretJSONDepthMax)
                if (try? SecretsJSON.parse(bytes, limits: limits)) != nil, depth == nil { return .failed("JSON deeper than secretJSONDepthMax parsed") }
                return depth == nil ? .rejected(shape: "too deep") : .decoded
            },
        ])
    }

    /// Requests as HTTP delivers them: the target line's parsing and the router's decisions,
    /// against a fixed mount table. The input is METHOD, TARGET and BODY separated by 0x00.
    static let vaultRouter = FuzzTarget(
        name: "vault-router",
        summary: "Vault API requests (method, target, body) through the request parser and the router",
        seeds: {
            [
                "GET\u{0}/v1/team-a/data/app/db?version=2\u{0}",
                "POST\u{0}/v1/team-a/data/app/db\u{0}{\"data\":{\"a\":\"b\"},\"options\":{\"cas\":1}}",
                "GET\u{0}/v1/team-a/metadata/app/?list=true\u{0}",
                "POST\u{0}/v1/sys/mounts/new\u{0}{\"type\":\"kv\",\"options\":{\"version\":\"2\"}}",
                "POST\u{0}/v1/team-a/destroy/x\u{0}{\"versions\":[1,\"2\"]}",
                "PATCH\u{0}/v1/team-a/metadata/x\u{0}{\"custom_metadata\":{\"k\":\"v\"},\"delete_version_after\":\"1h30m\"}",
            ].map { Array($0.utf8) }
        }
    ) { input in
        let parts = input.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .rejected(shape: "not METHOD, TARGET and BODY") }
        let router = SecretsRouter(
            mounts: [
                MountRecord(path: "team-a", type: .kv2, id: Array(repeating: 1, count: 16), createdMs: 0),
                MountRecord(path: "team-a/nested", type: .kv2, id: Array(repeating: 2, count: 16), createdMs: 0),
            ], limits: .standard)
        do {
            let request = try VaultRequest(
                method: String(decoding: parts[0], as: UTF8.self), target: String(decoding: parts[1], as: UTF8.self), body: Array(parts[2]), token: nil)
            let operation = try router.route(request)
            if let mount = operation.mount, !request.path.hasPrefix(mount.path) { return .failed("routed \(request.path) to mount \(mount.path)") }
            return .decoded
        } catch let error as SecretsError {
            return .rejected(shape: FuzzCheck.shape(of: error))
        } catch {
            return .failed("an error that is not a SecretsError: \(error)")
        }
    }
}
