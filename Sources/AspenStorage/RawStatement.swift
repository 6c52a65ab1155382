import AspenCore
import GRDB
import GRDBSQLite

/// The hot paths of the store (log appends, point reads, key writes) bind and step GRDB's cached
/// statements through SQLite's C API directly: the same prepared statements, without building
/// argument arrays and `Data` copies for every row.
struct RawStatement {
    let handle: OpaquePointer
    let connection: OpaquePointer?
    let file: String

    /// SQLite copies bound bytes at once, so the Swift buffer need not outlive the call.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(_ db: Database, _ sql: String, file: String) throws {
        let statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        connection = db.sqliteConnection
        self.file = file
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func bind(_ position: Int32, _ value: Int64) {
        sqlite3_bind_int64(handle, position, value)
    }

    func bind(_ position: Int32, _ bytes: [UInt8]) {
        if bytes.isEmpty {
            // A NULL pointer would bind NULL; an empty value is a zero-length blob.
            sqlite3_bind_zeroblob(handle, position, 0)
        } else {
            bytes.withUnsafeBytes { buffer in
                _ = sqlite3_bind_blob(handle, position, buffer.baseAddress, Int32(buffer.count), Self.transient)
            }
        }
    }

    func bindNull(_ position: Int32) { sqlite3_bind_null(handle, position) }

    /// Steps once: true when a row is available.
    func step() throws -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code:
            let message = connection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(code)"
            sqlite3_reset(handle)
            if code == SQLITE_CORRUPT || code == SQLITE_NOTADB {
                throw StorageError.corrupted(file: file, detail: message)
            }
            throw StorageError.sqlite(file: file, detail: message)
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws {
        _ = try step()
        sqlite3_reset(handle)
    }

    func finish() { sqlite3_reset(handle) }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func bytes(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
