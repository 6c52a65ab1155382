extension SQLiteNodeStorage {
    /// What opening cut off the end of the log: a batch that a crash tore before it was
    /// acknowledged (nil: nothing). The node logs it; it is never silent.
    public var logCut: LogCut? { log.cut }
}
