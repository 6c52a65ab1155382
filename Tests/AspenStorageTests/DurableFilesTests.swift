import AspenCore
import AspenRaft
import AspenStorage
import Foundation
import Testing

/// What a new node's store leaves on disk: directories only its user can enter, files only its
/// user can read.
@Suite("Store files")
struct DurableFilesTests {
    static func mode(_ path: String) throws -> Int {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    @Test("a new store creates its data directory 0700 and its database, WAL and log files 0600")
    func permissions() throws {
        let directory = TempDirectory()
        let data = directory.path("data/node")
        let path = data + "/aspen.db"
        let storage = try SQLiteNodeStorage(path: path)
        try storage.bootstrap(.bootstrap(Raft.Membership(voters: [NodeID(1)])))
        _ = try storage.commit(StorageBatch(entries: SegmentedLogTests.entries(1...3), hardState: Raft.HardState(term: 1, commit: 3)))
        #expect(try Self.mode(directory.path("data")) == 0o700)
        #expect(try Self.mode(data) == 0o700)
        #expect(try Self.mode(path) == 0o600)
        #expect(try Self.mode(path + "-wal") == 0o600)
        let log = SQLiteNodeStorage.logDirectory(path)
        #expect(try Self.mode(log) == 0o700)
        for segment in try SegmentedLogTests.segments(path) { #expect(try Self.mode(segment) == 0o600) }
        try storage.close()
    }
}
