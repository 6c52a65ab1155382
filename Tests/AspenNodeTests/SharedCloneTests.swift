import AspenBlob
import Foundation
import Testing

@testable import AspenNode

/// The CI checkout's hand-written clone against `git clone --shared --no-checkout` itself, and
/// the cache's refs read from its files against `git for-each-ref`.
@Suite("A shared clone written by hand, against git's own")
struct SharedCloneTests {
    static func git(_ arguments: [String], in directory: String) throws -> String {
        let (status, output) = try runProgram(
            "/usr/bin/git", arguments, in: URL(fileURLWithPath: directory),
            environment: [
                "GIT_CONFIG_NOSYSTEM": "1", "HOME": directory, "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.com",
                "GIT_COMMITTER_NAME": "C", "GIT_COMMITTER_EMAIL": "c@example.com",
            ])
        guard status == 0 else { throw GitFailed(text: "git \(arguments.joined(separator: " ")): \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct GitFailed: Error, CustomStringConvertible { let text: String; var description: String { text } }

    /// A bare repository with two branches, a lightweight and an annotated tag, a ref outside
    /// heads and tags, some refs packed and one of them then moved loose. Returns its path and
    /// the commit to check out (not the default branch's).
    static func cache(in root: String) throws -> (path: String, sha: String) {
        let source = (root as NSString).appendingPathComponent("source")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        _ = try git(["init", "-q", "-b", "trunk"], in: source)
        for (index, file) in ["a.txt", "dir/b.txt", "dir/sub/c.txt"].enumerated() {
            let path = (source as NSString).appendingPathComponent(file)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try "line \(index)\n".write(toFile: path, atomically: true, encoding: .utf8)
            _ = try git(["add", "-A"], in: source)
            _ = try git(["commit", "-qm", "commit \(index)"], in: source)
        }
        _ = try git(["tag", "light"], in: source)
        _ = try git(["tag", "-a", "v1", "-m", "release 1", "HEAD~1"], in: source)
        _ = try git(["branch", "feature", "HEAD~1"], in: source)
        let cache = (root as NSString).appendingPathComponent("cache.git")
        _ = try git(["clone", "-q", "--bare", source, cache], in: root)
        _ = try git(["update-ref", "refs/for/trunk", "HEAD~2"], in: cache)
        _ = try git(["pack-refs", "--all"], in: cache)
        // Loose over packed: the loose file is the ref's value.
        _ = try git(["update-ref", "refs/heads/feature", "trunk"], in: cache)
        // A ref being written: its lock file already holds an id, but it is not a ref yet.
        try (try git(["rev-parse", "trunk"], in: cache) + "\n").write(
            toFile: (cache as NSString).appendingPathComponent("refs/heads/half.lock"), atomically: true, encoding: .utf8)
        return (cache, try git(["rev-parse", "trunk~1"], in: cache))
    }

    @Test("the refs read from the cache's files are git for-each-ref's, loose over packed, lock files left out; a reftable repository is left to git")
    func storedRefs() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("shared-clone-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (cache, _) = try Self.cache(in: root)
        var expected: [String: String] = [:]
        for line in try Self.git(["for-each-ref", "--format=%(objectname) %(refname)"], in: cache).split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            expected[String(parts[1])] = String(parts[0])
        }
        #expect(expected.count == 5, "\(expected)")
        #expect(RepoCache.storedRefs(in: cache) == expected)
        #expect(try await RepoCache.listedRefs(in: cache) == expected)
        // Refs in a reftable are not files to read.
        try FileManager.default.createDirectory(atPath: (cache as NSString).appendingPathComponent("reftable"), withIntermediateDirectories: false)
        #expect(RepoCache.storedRefs(in: cache) == nil)
    }

    /// The one difference: git's clone leaves a first reflog entry ("clone: from …") before the
    /// checkout's.
    @Test("a checkout in the hand-written clone equals one in git's clone: refs, config, HEAD, last reflog entry, tree, status")
    func sameAsGit() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("shared-clone-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (cache, sha) = try Self.cache(in: root)
        let cloned = (root as NSString).appendingPathComponent("cloned")
        let written = (root as NSString).appendingPathComponent("written")
        _ = try Self.git(["clone", "--quiet", "--shared", "--no-checkout", cache, cloned], in: root)
        try SharedClone.create(at: written, cache: cache, refs: try #require(RepoCache.storedRefs(in: cache)), defaultBranch: "trunk")
        for directory in [cloned, written] {
            _ = try Self.git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha], in: directory)
        }
        for question in [
            ["for-each-ref", "--format=%(objectname) %(refname) %(symref)"], ["rev-parse", "HEAD"], ["status", "--porcelain", "--ignored"],
            ["branch", "-a", "-vv"], ["config", "--local", "--list"], ["describe", "--tags", "--always"], ["log", "--format=%H %an %s", "--all"],
            ["ls-files", "-s"], ["reflog", "-1", "--format=%gs"], ["rev-parse", "--git-path", "objects/info/alternates"], ["fsck", "--no-dangling"],
            ["remote", "show", "-n", "origin"],
        ] {
            let (a, b) = (try Self.git(question, in: cloned), try Self.git(question, in: written))
            #expect(a == b, "git \(question.joined(separator: " ")):\n--- clone\n\(a)\n--- written\n\(b)")
        }
        #expect(try Self.git(["rev-parse", "HEAD"], in: written) == sha)
        let files = { (directory: String) in
            (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? []).filter { !$0.hasPrefix(".git") }.sorted()
        }
        #expect(files(written) == files(cloned) && files(written).contains("dir/b.txt"), "\(files(written))")
        for file in files(written) where !file.hasSuffix("sub") && file != "dir" {
            #expect(FileManager.default.contentsEqual(atPath: (written as NSString).appendingPathComponent(file), andPath: (cloned as NSString).appendingPathComponent(file)))
        }
    }

    @Test("a log chunk is a blob reference or at most inlineBytesMax bytes after its marker; anything else is refused")
    func logChunks() throws {
        let reference = BlobReference(hash: BlobHash.of(Array("x".utf8)), size: 1)
        #expect(CILogChunk(decoding: CILogChunk.blob(reference).encoded) == .blob(reference))
        for bytes in [[], [0], Array("ok\n".utf8), Array(repeating: 0xFF, count: CILogChunk.inlineBytesMax)] as [[UInt8]] {
            #expect(CILogChunk(decoding: CILogChunk.inline(bytes).encoded) == .inline(bytes))
            #expect(CILogChunk.inline(bytes).size == UInt64(bytes.count))
        }
        #expect(CILogChunk(decoding: CILogChunk.inlineMarker + Array(repeating: 1, count: CILogChunk.inlineBytesMax + 1)) == nil)
        #expect(CILogChunk(decoding: Array(CILogChunk.inlineMarker.dropLast())) == nil)
        #expect(CILogChunk(decoding: Array("plain text".utf8)) == nil)
        #expect(CILogChunk(decoding: Array(reference.encoded.dropLast())) == nil)
    }
}
