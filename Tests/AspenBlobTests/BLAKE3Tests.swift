@testable import AspenBlob
import AspenCore
import Foundation
import Testing

@Suite("BLAKE3")
struct BLAKE3Tests {
    /// The official vector file, shared by developers and CI and never copied into the project.
    static let vectorsURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // AspenBlobTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // the package root
        .appendingPathComponent("../shared/data/blake3/test_vectors.json")
        .standardizedFileURL

    static let b3sumPath = "/usr/bin/b3sum"

    struct VectorFile: Decodable {
        struct Case: Decodable {
            let input_len: Int
            let hash: String
            let keyed_hash: String
            let derive_key: String
        }
        let key: String
        let context_string: String
        let cases: [Case]
    }

    static func loadVectors() throws -> VectorFile? {
        guard FileManager.default.fileExists(atPath: vectorsURL.path) else {
            Issue.record("BLAKE3 test vectors missing at \(vectorsURL.path)")
            return nil
        }
        return try JSONDecoder().decode(VectorFile.self, from: Data(contentsOf: vectorsURL))
    }

    /// The vectors' input: 0, 1, …, 250 repeating.
    static func vectorInput(count: Int) -> [UInt8] {
        (0..<count).map { UInt8($0 % 251) }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func randomBytes(count: Int, using generator: inout SplitMix64) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(count + 8)
        while bytes.count < count {
            withUnsafeBytes(of: generator.next().littleEndian) { bytes.append(contentsOf: $0) }
        }
        return Array(bytes.prefix(count))
    }

    /// Checks one mode against every case: the 32-byte digest and the whole extended output.
    static func checkVectors(
        mode: String, expected: (VectorFile.Case) -> String, makeHasher: (VectorFile) -> BLAKE3
    ) throws {
        guard let file = try loadVectors() else { return }
        #expect(file.cases.count > 30, "the vector file lists \(file.cases.count) cases")
        for testCase in file.cases {
            var hasher = makeHasher(file)
            hasher.update(vectorInput(count: testCase.input_len))
            let expectedHex = expected(testCase)
            let extended = hex(hasher.finalize(count: expectedHex.count / 2))
            #expect(extended == expectedHex, "\(mode), input length \(testCase.input_len): extended output")
            #expect(
                hex(hasher.finalize()) == String(expectedHex.prefix(64)),
                "\(mode), input length \(testCase.input_len): 32-byte digest")
        }
    }

    @Test(
        "the four-lane and the eight-lane (AVX2) kernels agree on sixteen-chunk subtrees, across keys, flags and a counter's high word",
        .enabled(if: BLAKE3Lanes.wide, "the eight-lane kernel is not in use here (no AVX2, or ASPEN_BLAKE3_LANES=4)"))
    func kernelsAgree() {
        var generator = SplitMix64(seed: 16)
        var bytes = [UInt8](repeating: 0, count: 16 * 1024)
        let keyed = SIMD8<UInt32>(1, 2, 3, 4, 5, 6, 7, 8)
        for counter: UInt64 in [0, 16, 1 << 20, (1 << 32) - 16, (1 << 32) - 8, 1 << 40] {
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: generator.next()) }
            for (key, flags) in [(BLAKE3Core.initialVector, UInt32(0)), (keyed, BLAKE3Core.keyedHash)] {
                let values = bytes.withUnsafeBytes { buffer in
                    [false, true].map { wide in
                        BLAKE3Lanes.subtreeChainingValue16(buffer.baseAddress!, counter: counter, key: key, flags: flags, wide: wide)
                    }
                }
                #expect(values[0] == values[1], "counter \(counter), flags \(flags)")
            }
        }
    }

    @Test("hash mode matches every official vector")
    func hashVectors() throws {
        try Self.checkVectors(mode: "hash", expected: \.hash) { _ in BLAKE3() }
    }

    @Test("keyed-hash mode matches every official vector")
    func keyedHashVectors() throws {
        try Self.checkVectors(mode: "keyed_hash", expected: \.keyed_hash) { BLAKE3(key: Array($0.key.utf8))! }
        #expect(BLAKE3(key: [1, 2, 3]) == nil, "a key of 3 bytes was taken")
    }

    @Test("derive-key mode matches every official vector")
    func deriveKeyVectors() throws {
        try Self.checkVectors(mode: "derive_key", expected: \.derive_key) { BLAKE3(deriveKeyContext: $0.context_string) }
    }

    @Test("the hash convenience equals the streaming hasher's digest")
    func hashConvenience() {
        let input = Self.vectorInput(count: 5000)
        var hasher = BLAKE3()
        hasher.update(input)
        #expect(BLAKE3.hash(input) == hasher.finalize())
        #expect(BLAKE3.hash([]).count == 32)
        #expect(BLAKE3().finalize(count: 0).isEmpty)
    }

    @Test("any split of the input gives the one-shot result", arguments: [0, 1, 1023, 1024, 1025, 2048, 3073, 65536 + 7, 200_000 + 3])
    func streamingSplits(length: Int) {
        let seed = UInt64(0xB1A4_E300) &+ UInt64(length)
        var generator = SplitMix64(seed: seed)
        let input = Self.randomBytes(count: length, using: &generator)
        let expected = BLAKE3.hash(input)
        for round in 0..<8 {
            var hasher = BLAKE3()
            var offset = 0
            // Small pieces in early rounds, up to several chunks in later ones.
            let pieceMax = UInt64([1, 7, 64, 65, 1024, 1500, 4096, 10_000][round])
            while offset < length {
                let piece = min(Int(generator.next(in: 0...pieceMax)), length - offset)
                if round % 2 == 0 {
                    hasher.update(input[offset..<(offset + piece)])
                } else {
                    input.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + piece)])) }
                }
                offset += piece
            }
            #expect(hasher.finalize() == expected, "length \(length), round \(round), seed \(seed)")
        }
    }

    @Test("digests match the b3sum tool")
    func matchesB3sum() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.b3sumPath) else {
            Issue.record("\(Self.b3sumPath) is not installed: apt-get install b3sum")
            return
        }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("aspen-blake3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let seed: UInt64 = 0x00B3_5E11
        var generator = SplitMix64(seed: seed)
        for size in [0, 1, 1024, 100_000, 3_000_001] {
            let bytes = Self.randomBytes(count: size, using: &generator)
            let file = directory.appendingPathComponent("input-\(size)")
            try Data(bytes).write(to: file)
            let toolHex = try Self.runB3sum(file: file)
            #expect(toolHex == Self.hex(BLAKE3.hash(bytes)), "size \(size), seed \(seed)")
        }
    }

    static func runB3sum(file: URL) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: b3sumPath)
        process.arguments = ["--no-names", file.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "b3sum exited with \(process.terminationStatus)")
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
