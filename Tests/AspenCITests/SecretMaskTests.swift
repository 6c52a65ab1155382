import AspenCI
import Testing

@Suite("Secret values masked in a job's output as it streams")
struct SecretMaskTests {
    func masked(_ secrets: [String], _ pieces: [String]) -> String {
        var mask = SecretMask(secrets)
        var output: [UInt8] = []
        for piece in pieces { output += mask.mask(Array(piece.utf8)) }
        output += mask.mask([], final: true)
        return String(decoding: output, as: UTF8.self)
    }

    @Test("a value is replaced wherever it falls, cut between pieces or not; other output passes unchanged")
    func masks() {
        #expect(masked(["hunter22"], ["token=hunter22\n"]) == "token=***\n")
        #expect(masked(["hunter22"], ["token=hun", "ter22 and ", "hunter22"]) == "token=*** and ***")
        #expect(masked(["hunter22"], ["h", "u", "n", "t", "e", "r", "2", "2", "!"]) == "***!")
        #expect(masked(["hunter22"], ["hunter2", "x"]) == "hunter2x")
        // A near miss at the very end is let out at the end.
        #expect(masked(["hunter22"], ["ends with hunt"]) == "ends with hunt")
        // Overlapping values: the longest wins where both start.
        #expect(masked(["abcd", "abcdefgh"], ["xabcdefghy abcdz"]) == "x***y ***z")
        // Short values are not masked; no secrets, no change.
        #expect(masked(["ab"], ["ab cd"]) == "ab cd")
        #expect(masked([], ["plain"]) == "plain")
    }

    @Test("the output never holds a value, whatever the cuts")
    func everyCut() {
        let secret = "s3cr3t-value"
        let text = "a \(secret) b \(secret)\(secret) c"
        for first in 0...text.utf8.count {
            for second in first...text.utf8.count {
                let bytes = Array(text.utf8)
                let pieces = [bytes[0..<first], bytes[first..<second], bytes[second...]].map { String(decoding: $0, as: UTF8.self) }
                let output = masked([secret], pieces)
                #expect(output == "a *** b ****** c", "cut at \(first), \(second)")
            }
        }
    }
}

@Suite("Commit statuses a required check accepts")
struct RequiredStatusTests {
    @Test("success passes; skipped passes only when its run did not fail (a job skipped after a failed need never does)")
    func satisfied() {
        let statuses = [
            CommitStatus(context: "ci/ci", state: .failure, run: 5, updatedMs: 0),
            CommitStatus(context: "ci/ci/build", state: .failure, run: 5, updatedMs: 0),
            CommitStatus(context: "ci/ci/test", state: .skipped, run: 5, updatedMs: 0),
            CommitStatus(context: "ci/ci/lint", state: .success, run: 5, updatedMs: 0),
            CommitStatus(context: "ci/docs", state: .skipped, run: 6, updatedMs: 0),
            CommitStatus(context: "ci/docs/spell", state: .skipped, run: 6, updatedMs: 0),
            CommitStatus(context: "ci/other/x", state: .skipped, run: 7, updatedMs: 0),
            CommitStatus(context: "ci/other/y", state: .pending, run: 7, updatedMs: 0),
        ]
        #expect(CommitStatus.satisfied(statuses) == ["ci/ci/lint", "ci/docs", "ci/docs/spell"])
    }
}
