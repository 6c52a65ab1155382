import AspenCore

/// What a submitted job asks for: its type and work, how it is retried, when it may start, what
/// it waits for, and where it may run. Checked against `Limits` at submit (`validate`), and
/// stored in the job's record in this encoding (`encoded`, `init(decoding:)`).
public struct JobSpec: Sendable, Equatable {
    /// The worker kind that runs it: `shell`, or a name a worker registered.
    public var type: String
    /// A shell job's command and arguments (run without a shell unless the command is one).
    public var command: [String]
    /// Other types' input, opaque to the job system.
    public var payload: [UInt8]
    public var priority: JobPriority
    /// Attempts before the job goes to the dead letters (at least 1).
    public var maxAttempts: Int
    public var backoff: JobBackoff
    /// An attempt running longer is stopped (0: no limit but the lease's renewals).
    public var timeoutMs: Int64
    /// Submits with the same key return the first job instead of making another.
    public var idempotencyKey: String?
    /// Jobs that must succeed first.
    public var dependsOn: [UInt64]
    public var onDependencyFailure: DependencyFailure
    /// Not before this time (cluster milliseconds); nil: at once.
    public var runAtMs: Int64?
    /// A worker must carry every one of these tags (`gpu=true`, `region=eu`).
    public var requiredTags: [String: String]
    /// Placement wishes: a node to prefer or avoid, a blob whose holders are preferred.
    public var preferNode: UInt64?
    public var avoidNode: UInt64?
    public var nearBlob: [UInt8]?

    public enum DependencyFailure: String, Sendable, CaseIterable {
        /// The job is cancelled when a dependency fails for good.
        case cancel
        /// The job runs once every dependency has ended, failed or not.
        case `continue`
    }

    public init(
        type: String, command: [String] = [], payload: [UInt8] = [], priority: JobPriority = .normal, maxAttempts: Int = 3,
        backoff: JobBackoff = .standard, timeoutMs: Int64 = 0, idempotencyKey: String? = nil, dependsOn: [UInt64] = [],
        onDependencyFailure: DependencyFailure = .cancel, runAtMs: Int64? = nil, requiredTags: [String: String] = [:],
        preferNode: UInt64? = nil, avoidNode: UInt64? = nil, nearBlob: [UInt8]? = nil
    ) {
        self.type = type
        self.command = command
        self.payload = payload
        self.priority = priority
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.timeoutMs = timeoutMs
        self.idempotencyKey = idempotencyKey
        self.dependsOn = dependsOn
        self.onDependencyFailure = onDependencyFailure
        self.runAtMs = runAtMs
        self.requiredTags = requiredTags
        self.preferNode = preferNode
        self.avoidNode = avoidNode
        self.nearBlob = nearBlob
    }

    /// Refuses a spec past a bound or malformed, naming the bound or the problem.
    public func validate(limits: Limits = .standard) throws(JobPolicyError) {
        func name(_ text: String, _ what: String, max: Int) throws(JobPolicyError) {
            guard !text.isEmpty, text.utf8.count <= max else { throw JobPolicyError("\(what) must be 1 to \(max) bytes, not \(text.utf8.count)") }
            guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw JobPolicyError("\(what) must not contain control characters")
            }
        }
        try name(type, "a job type", max: limits.jobNameBytesMax)
        if type == "shell" {
            guard !command.isEmpty, !command[0].isEmpty else { throw JobPolicyError("a shell job needs a command (after --)") }
        }
        let commandBytes = command.reduce(0) { $0 + $1.utf8.count + 1 }
        guard commandBytes <= limits.jobCommandBytesMax else {
            throw JobPolicyError("a command of \(commandBytes) bytes exceeds jobCommandBytesMax (\(limits.jobCommandBytesMax))")
        }
        guard command.allSatisfy({ !$0.utf8.contains(0) }) else { throw JobPolicyError("a command argument must not contain a NUL byte") }
        guard payload.count <= limits.jobPayloadBytesMax else {
            throw JobPolicyError("a payload of \(payload.count) bytes exceeds jobPayloadBytesMax (\(limits.jobPayloadBytesMax))")
        }
        guard (1...limits.jobAttemptsMax).contains(maxAttempts) else {
            throw JobPolicyError("max attempts must be 1 to \(limits.jobAttemptsMax), not \(maxAttempts)")
        }
        guard (0...JobDuration.maxMs).contains(timeoutMs) else { throw JobPolicyError("a timeout must be 0 to 365 days") }
        if let idempotencyKey { try name(idempotencyKey, "an idempotency key", max: limits.jobNameBytesMax) }
        guard dependsOn.count <= limits.jobDependenciesMax else {
            throw JobPolicyError("\(dependsOn.count) dependencies exceed jobDependenciesMax (\(limits.jobDependenciesMax))")
        }
        guard Set(dependsOn).count == dependsOn.count else { throw JobPolicyError("a dependency is listed twice") }
        guard requiredTags.count <= limits.jobTagsMax else {
            throw JobPolicyError("\(requiredTags.count) tags exceed jobTagsMax (\(limits.jobTagsMax))")
        }
        for (key, value) in requiredTags {
            try name(key, "a tag name", max: limits.jobNameBytesMax)
            guard value.utf8.count <= limits.jobNameBytesMax else { throw JobPolicyError("tag \(key)'s value exceeds \(limits.jobNameBytesMax) bytes") }
        }
        if let nearBlob, nearBlob.count != 32 { throw JobPolicyError("--near-blob takes a blob hash (32 bytes)") }
        if let preferNode, preferNode == avoidNode { throw JobPolicyError("node \(preferNode) is both preferred and avoided") }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.writeString(type)
        writer.writeVarint(UInt64(command.count))
        for argument in command { writer.writeString(argument) }
        writer.writeBytes(payload)
        writer.write(UInt8(priority.rank))
        writer.writeVarint(UInt64(max(0, maxAttempts)))
        writer.writeString(backoff.description)
        writer.writeVarint(signed: timeoutMs)
        writer.writeOptionalBytes(idempotencyKey.map { Array($0.utf8) })
        writer.writeVarint(UInt64(dependsOn.count))
        for id in dependsOn { writer.writeVarint(id) }
        writer.write(onDependencyFailure == .cancel ? 0 : 1)
        writer.write(runAtMs != nil)
        if let runAtMs { writer.writeVarint(signed: runAtMs) }
        writer.writeVarint(UInt64(requiredTags.count))
        for (key, value) in requiredTags.sorted(by: { $0.key < $1.key }) {
            writer.writeString(key)
            writer.writeString(value)
        }
        for node in [preferNode, avoidNode] {
            writer.write(node != nil)
            if let node { writer.writeVarint(node) }
        }
        writer.writeOptionalBytes(nearBlob)
        return writer.bytes
    }

    static let version: UInt8 = 1

    /// Decodes a spec, every count and length bounded by `limits` before anything is allocated.
    public init(decoding bytes: [UInt8], limits: Limits = .standard) throws(DecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == Self.version else { throw .invalid("unknown job spec version") }
        type = try reader.readString(limit: limits.jobNameBytesMax)
        var command: [String] = []
        for _ in 0..<(try reader.readCount(limit: limits.jobCommandBytesMax)) { command.append(try reader.readString(limit: limits.jobCommandBytesMax)) }
        self.command = command
        payload = try reader.readBytes(limit: limits.jobPayloadBytesMax)
        let rank = Int(try reader.readByte())
        guard rank < JobPriority.allCases.count else { throw .invalid("unknown job priority \(rank)") }
        priority = JobPriority.allCases[rank]
        maxAttempts = try reader.readCount(limit: limits.jobAttemptsMax)
        let backoffText = try reader.readString(limit: 128)
        do throws(JobPolicyError) {
            backoff = try JobBackoff(parsing: backoffText)
        } catch {
            throw .invalid("\(error)")
        }
        timeoutMs = try reader.readSignedVarint()
        idempotencyKey = try reader.readOptionalBytes(limit: limits.jobNameBytesMax).map { String(decoding: $0, as: UTF8.self) }
        var dependsOn: [UInt64] = []
        for _ in 0..<(try reader.readCount(limit: limits.jobDependenciesMax)) { dependsOn.append(try reader.readVarint()) }
        self.dependsOn = dependsOn
        switch try reader.readByte() {
        case 0: onDependencyFailure = .cancel
        case 1: onDependencyFailure = .continue
        case let other: throw .invalid("unknown dependency-failure policy \(other)")
        }
        runAtMs = try reader.readBool() ? try reader.readSignedVarint() : nil
        var tags: [String: String] = [:]
        for _ in 0..<(try reader.readCount(limit: limits.jobTagsMax)) {
            let key = try reader.readString(limit: limits.jobNameBytesMax)
            let value = try reader.readString(limit: limits.jobNameBytesMax)
            guard tags.updateValue(value, forKey: key) == nil else { throw .invalid("tag \(key) appears twice") }
        }
        requiredTags = tags
        preferNode = try reader.readBool() ? try reader.readVarint() : nil
        avoidNode = try reader.readBool() ? try reader.readVarint() : nil
        nearBlob = try reader.readOptionalBytes(limit: 32)
        try reader.expectEnd()
    }
}
