import Foundation

/// A working copy of a node's cache of a repository, borrowing the cache's objects: the layout
/// `git clone --shared --no-checkout CACHE DIR` leaves — `origin` pointing at the cache, its
/// branches as `refs/remotes/origin/*`, its tags, the default branch checked out — written
/// here from the refs the node already holds instead of by a `git clone` process (15–25 ms
/// of every CI job, most of a trivial job's checkout). `git checkout` then fills the tree:
/// with no index yet, git treats it as the first checkout, as it does after a clone. The one
/// difference from git's clone: no "clone: from …" entry opens HEAD's reflog.
enum SharedClone {
    /// Writes the repository at `directory/.git` (`directory` must not exist yet).
    /// - Parameters:
    ///   - cache: The cache's path (a bare repository).
    ///   - refs: The cache's refs (name → object id), as the cluster holds them.
    static func create(at directory: String, cache: String, refs: [String: String], defaultBranch: String) throws {
        let git = (directory as NSString).appendingPathComponent(".git")
        let manager = FileManager.default
        for path in ["objects/info", "objects/pack", "refs/heads", "refs/tags", "refs/remotes/origin", "info"] {
            try manager.createDirectory(atPath: (git as NSString).appendingPathComponent(path), withIntermediateDirectories: true)
        }
        func write(_ path: String, _ text: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: (git as NSString).appendingPathComponent(path)))
        }
        // Absolute, as git clone writes them: git reads a relative alternate from the clone's
        // objects directory.
        let cache = ((cache.hasPrefix("/") ? cache : (manager.currentDirectoryPath as NSString).appendingPathComponent(cache)) as NSString).standardizingPath
        let cacheObjects = (cache as NSString).appendingPathComponent("objects")
        try write("objects/info/alternates", cacheObjects + "\n")

        let defaultRef = "refs/heads/\(defaultBranch)"
        let hasDefault = refs[defaultRef] != nil
        var config = """
            [core]
            \trepositoryformatversion = 0
            \tfilemode = true
            \tbare = false
            \tlogallrefupdates = true
            [remote "origin"]
            \turl = \(quoted(cache))
            \tfetch = +refs/heads/*:refs/remotes/origin/*

            """
        if hasDefault {
            config += "[branch \(quoted(defaultBranch))]\n\tremote = origin\n\tmerge = \(quoted(defaultRef))\n"
        }
        try write("config", config)

        // What clone keeps of the cache's refs: branches as origin's, tags as they are, and the
        // default branch as a local one.
        var packed: [(ref: String, id: String)] = []
        for (ref, id) in refs {
            if ref.hasPrefix("refs/heads/") {
                packed.append(("refs/remotes/origin/" + ref.dropFirst("refs/heads/".count), id))
            } else if ref.hasPrefix("refs/tags/") {
                packed.append((ref, id))
            }
        }
        if let id = refs[defaultRef] {
            packed.append((defaultRef, id))
            try write("refs/remotes/origin/HEAD", "ref: refs/remotes/origin/\(defaultBranch)\n")
        }
        packed.sort { Array($0.ref.utf8).lexicographicallyPrecedes(Array($1.ref.utf8)) }
        try write("packed-refs", "# pack-refs with: sorted \n" + packed.map { "\($0.id) \($0.ref)\n" }.joined())
        try write("HEAD", "ref: \(defaultRef)\n")
        try write("description", "Unnamed repository; edit this file 'description' to name the repository.\n")
    }

    /// A value for git's config file: in double quotes, with `\` and `"` escaped.
    static func quoted(_ value: String) -> String {
        "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
