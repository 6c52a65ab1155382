import AspenCore
import AspenJobs
import Testing

@Suite("Job specs")
struct JobSpecTests {
    static let full = JobSpec(
        type: "shell", command: ["./build.sh", "--release", "ünïcode arg"], payload: [1, 2, 3], priority: .high, maxAttempts: 5,
        backoff: .exponential(initialMs: 1000, factor: 2, maxMs: 300_000), timeoutMs: 600_000, idempotencyKey: "build-42",
        dependsOn: [7, 9], onDependencyFailure: .continue, runAtMs: 1_796_000_000_000, requiredTags: ["gpu": "true", "region": "eu"],
        preferNode: 2, avoidNode: 3, nearBlob: Array(repeating: 0xAB, count: 32))

    @Test("a spec survives its encoding, every field, and its encoding is the same whatever the order of its tags")
    func roundTrip() throws {
        for spec in [Self.full, JobSpec(type: "resize", payload: Array("{\"w\":3}".utf8))] {
            try spec.validate()
            let decoded = try JobSpec(decoding: spec.encoded)
            #expect(decoded == spec)
            #expect(decoded.encoded == spec.encoded)
        }
    }

    @Test("specs past a bound or malformed are refused at submit, naming the bound or the problem")
    func refusals() {
        func refused(_ change: (inout JobSpec) -> Void) -> String {
            var spec = Self.full
            change(&spec)
            do {
                try spec.validate()
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(refused { $0.command = [String(repeating: "x", count: 64 * 1024)] }.contains("jobCommandBytesMax (65536)"))
        #expect(refused { $0.command = [] }.contains("needs a command"))
        #expect(refused { $0.command = ["a\u{0}b"] }.contains("NUL"))
        #expect(refused { $0.payload = Array(repeating: 0, count: 256 * 1024 + 1) }.contains("jobPayloadBytesMax"))
        #expect(refused { $0.maxAttempts = 0 }.contains("max attempts must be 1 to 100"))
        #expect(refused { $0.dependsOn = Array(0..<257) }.contains("jobDependenciesMax (256)"))
        #expect(refused { $0.dependsOn = [4, 4] }.contains("listed twice"))
        #expect(refused { $0.idempotencyKey = "" }.contains("an idempotency key must be 1 to 200 bytes"))
        #expect(refused { $0.type = "she\nll" }.contains("control characters"))
        #expect(refused { $0.requiredTags = Dictionary(uniqueKeysWithValues: (0..<33).map { ("t\($0)", "") }) }.contains("jobTagsMax (32)"))
        #expect(refused { $0.nearBlob = [1] }.contains("blob hash"))
        #expect(refused { $0.avoidNode = 2 }.contains("both preferred and avoided"))
        #expect(refused { $0.timeoutMs = -1 }.contains("timeout"))
    }

    @Test("decoding refuses unknown versions, priorities and policies, duplicate tags and trailing bytes")
    func decodingRefusals() {
        let good = Self.full.encoded
        var version = good
        version[0] = 9
        #expect(throws: DecodingError.self) { try JobSpec(decoding: version) }
        #expect(throws: DecodingError.self) { try JobSpec(decoding: good + [0]) }
        #expect(throws: DecodingError.self) { try JobSpec(decoding: Array(good.dropLast())) }
        #expect(throws: DecodingError.self) { try JobSpec(decoding: []) }
    }
}
