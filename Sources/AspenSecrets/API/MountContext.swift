import AspenCore
import AspenKV
import AspenLayer

/// What every engine works with: the store, the mount it serves, the data key that seals its
/// values, the limits and the clock.
public struct MountContext: Sendable {
    public let store: any KeyValueStore
    public let mount: MountRecord
    public let key: DataKey
    public let limits: Limits
    public let nowMs: @Sendable () -> Int64

    public init(store: any KeyValueStore, mount: MountRecord, key: DataKey, limits: Limits, nowMs: @escaping @Sendable () -> Int64) {
        self.store = store
        self.mount = mount
        self.key = key
        self.limits = limits
        self.nowMs = nowMs
    }

    /// The compare every engine transaction carries: the mount's record is still the one this
    /// request read, so a change racing a disable (or a settings change) does not land.
    public var mountHolds: Compare { Compare(key: SecretsKeys.mount(mount.path), .value(mount.encoded())) }
}

/// An engine of one mount (kv-v2, transit, pki): its context's parts, by name.
public protocol MountEngine: Sendable {
    var context: MountContext { get }
    init(_ context: MountContext)
}

extension MountEngine {
    public init(store: any KeyValueStore, mount: MountRecord, key: DataKey, limits: Limits, nowMs: @escaping @Sendable () -> Int64) {
        self.init(MountContext(store: store, mount: mount, key: key, limits: limits, nowMs: nowMs))
    }

    public var store: any KeyValueStore { context.store }
    public var mount: MountRecord { context.mount }
    public var key: DataKey { context.key }
    public var limits: Limits { context.limits }
    public var nowMs: @Sendable () -> Int64 { context.nowMs }
    /// Where the mount's data lives.
    var space: Subspace { SecretsKeys.data(context.mount) }
}
