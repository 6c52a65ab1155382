import Synchronization

/// One open connection per key (an endpoint, a peer), shared by every caller: connections are
/// multiplexed, so concurrent requests ride one connection, and a handshake is paid once rather
/// than per request. A connection found closed (a node closes idle ones) is replaced on next use.
public final class TransportConnectionPool<Key: Hashable & Sendable>: Sendable {
    private let connections = Mutex<[Key: Task<TransportConnection, any Error>]>([:])

    public init() {}

    /// The open connection for `key`, made with `connect` when there is none or the one there
    /// has closed. A failed connect is not remembered: the next call tries again.
    public func connection(
        _ key: Key, connect: @escaping @Sendable () async throws -> TransportConnection
    ) async throws -> TransportConnection {
        for _ in 0..<2 {
            let task = self.task(key, connect)
            do {
                let connection = try await task.value
                if connection.isActive { return connection }
            } catch {
                drop(key, task)
                throw error
            }
            drop(key, task)
        }
        throw TransportError.connectionClosed
    }

    private func task(_ key: Key, _ connect: @escaping @Sendable () async throws -> TransportConnection) -> Task<TransportConnection, any Error> {
        connections.withLock { connections in
            if let existing = connections[key] { return existing }
            let task = Task { try await connect() }
            connections[key] = task
            return task
        }
    }

    /// Forgets `task` for `key`, unless another call replaced it meanwhile.
    private func drop(_ key: Key, _ task: Task<TransportConnection, any Error>) {
        connections.withLock { connections in
            if connections[key] == task { connections[key] = nil }
        }
    }

    /// Forgets and closes `connection`, if it is still the one for `key` (after it failed: a
    /// connection made since to replace it stays); the next use makes another.
    public func forget(_ key: Key, ifItIs connection: TransportConnection) async {
        guard let task = connections.withLock({ $0[key] }), (try? await task.value) === connection else { return }
        let removed = connections.withLock { connections -> Bool in
            guard connections[key] == task else { return false }
            connections[key] = nil
            return true
        }
        if removed { await connection.close() }
    }

    /// Forgets the connection for `key` (after it failed), closing it; the next use makes another.
    public func forget(_ key: Key) async {
        let task = connections.withLock { $0.removeValue(forKey: key) }
        task?.cancel()
        await (try? task?.value)?.close()
    }

    public func closeAll() async {
        let all = connections.withLock { connections -> [Task<TransportConnection, any Error>] in
            defer { connections = [:] }
            return Array(connections.values)
        }
        for task in all { await (try? task.value)?.close() }
    }
}
