import AspenStorage

/// The node's database as files on disk, for the endpoints that report its size (etcd's
/// Status) without importing AspenStorage themselves: only AspenNode and the executables may.
public enum NodeDatabase {
    /// The database at `path`, its write-ahead log and its log segments, in bytes (0 for what
    /// does not exist).
    public static func fileBytes(at path: String) -> Int64 { SQLiteNodeStorage.fileBytes(at: path) }
}
