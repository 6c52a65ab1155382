import Testing

/// Every suite that runs a cluster (real processes or in-process nodes over TLS) is nested
/// here and runs one at a time: on two cores, several clusters at once (with debug builds)
/// starve each other's timers, elections churn, and latency checks such as `etcdctl check perf`
/// fail for reasons that are not Aspen's.
@Suite(.serialized)
enum ClusterSuites {}
