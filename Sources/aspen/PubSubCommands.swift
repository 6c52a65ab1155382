import AspenClient
import AspenCore
import AspenJobs
import AspenKV
import ArgumentParser
import Foundation

/// `aspen pub SUBJECT DATA`: a durable publish.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pub", abstract: "Publish a durable message on a subject; prints its cursor.",
        discussion: "aspen pub orders.eu.created '{\"id\": 7}' --header source=web --msg-id order-7")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The subject: tokens separated by '.', no wildcards.") var subject: String
    @Argument(help: "The payload; - or nothing reads standard input.") var data: String?
    @Option(name: .customLong("header"), help: "A header NAME=VALUE (repeatable).") var headers: [String] = []
    @Option(help: "A message id: publishing it again within the dedup window returns the first cursor.") var msgId: String?

    func run() async throws {
        try await runJob {
            let payload = data.flatMap { $0 == "-" ? nil : Array($0.utf8) } ?? Array(FileHandle.standardInput.readDataToEndOfFile())
            let message = TopicMessage(subject: subject, payload: payload, headers: try parseTags(headers), messageID: msgId)
            try message.validate(limits: .standard)
            guard case .published(let cursors) = try await cluster.client().job(.publish([message])), let cursor = cursors.first else {
                throw CLIError.unexpectedAnswer
            }
            output(cluster.json, ["cursor": cursor, "subject": subject], text: "\(cursor)")
        }
    }
}

func describe(_ message: TopicMessage) -> [String: Any] {
    var object: [String: Any] = [
        "cursor": message.cursor, "subject": message.subject, "published_ms": message.publishedAtMs,
        "data": String(decoding: message.payload, as: UTF8.self),
    ]
    if !message.headers.isEmpty { object["headers"] = message.headers }
    if let id = message.messageID { object["msg_id"] = id }
    return object
}

/// `aspen sub PATTERN`: the stream's messages on matching subjects, live and resumable.
struct SubscribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sub", abstract: "Follow durable messages whose subject matches a pattern ('*' one token, '>' one or more).",
        discussion: """
            aspen sub 'orders.*.created'                 # new messages, until interrupted
            aspen sub 'orders.>' --from-cursor 1200      # from a cursor on (resume where you stopped), then live
            Each line: CURSOR SUBJECT DATA (--json: one object per line). A cursor older than the
            oldest kept message is refused: "cursor N expired, oldest is M".
            """)
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The subject pattern.") var pattern: String
    @Option(help: "Start at this cursor (0: the oldest kept) instead of with new messages.") var fromCursor: UInt64?
    @Option(help: "Stop after this many messages.") var count: Int?
    @Option(help: "Stop after this long without a message (250ms, 30s, …).") var idle: String?
    @Option(help: "Share the messages with the group's other consumers (made if new; it starts at --from-cursor, or with new messages).")
    var group: String?
    @Option(help: "With --group: run this command (sh -c) per message, payload on stdin; exit 0 acknowledges, else the message comes back.")
    var exec: String?
    @Option(help: "With --group: this consumer's name (default HOST-PID).") var consumer: String?
    @Option(help: "With --group (when made): redeliver what is not acknowledged within this.") var ackWait: String = "30s"
    @Option(help: "With --group (when made): deliveries before the group's dead letters.") var maxDeliveries: Int = 5
    @Option(help: "With --group (when made): unacknowledged messages one consumer may hold.") var maxPending: Int = 1000

    func run() async throws {
        try await runJob {
            let selector: SubjectPattern
            do {
                selector = try SubjectPattern(pattern)
            } catch {
                throw CLIError.badInput("\(error)")
            }
            let client = try cluster.client()
            let idleMs = try idle.map(JobDuration.parseMs)
            if let group {
                try await consume(client, group: group, idleMs: idleMs)
                return
            }
            var cursor: UInt64
            if let fromCursor {
                cursor = fromCursor
            } else {
                guard case .page(let head) = try await client.job(.read(pattern: pattern, from: UInt64(Int64.max), limit: 1)) else {
                    throw CLIError.unexpectedAnswer
                }
                cursor = head.last + 1
            }
            var shown = 0
            func show(_ message: TopicMessage) -> Bool {
                // Written at once, not buffered: a reader of a pipe sees each message as it comes.
                let line: String
                if cluster.json, let data = try? JSONSerialization.data(withJSONObject: describe(message), options: [.sortedKeys]) {
                    line = String(decoding: data, as: UTF8.self)
                } else {
                    line = "\(message.cursor) \(message.subject) \(String(decoding: message.payload, as: UTF8.self))"
                }
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
                shown += 1
                return count.map { shown >= $0 } ?? false
            }
            while true {
                // History first, a page at a time; then the live stream from the page's revision.
                guard case .page(let page) = try await client.job(.read(pattern: pattern, from: cursor, limit: 1000)) else {
                    throw CLIError.unexpectedAnswer
                }
                for message in page.messages where show(message) { return }
                cursor = page.next
                // Until the page reaches the stream's head as of its read, history comes by pages.
                if page.next <= page.last { continue }
                let watch = try await client.watch(
                    WatchRequest(bounds: KeySelection.prefix(TopicLog.messagesPrefix).bounds, startRevision: page.revision + 1, progressIntervalMs: 1000))
                var quiet = ContinuousClock.now
                do {
                    for try await event in watch {
                        if case .events(let events) = event {
                            for change in events where change.kind == .put {
                                guard let at = TopicLog.cursor(ofKey: change.keyValue.key), at >= cursor else { continue }
                                let message = try TopicMessage(decoding: change.keyValue.value)
                                cursor = at + 1
                                quiet = .now
                                if selector.matches(message.subject), show(message) { return }
                            }
                        } else if case .ended = event {
                            break
                        }
                        if let idleMs, ContinuousClock.now - quiet > .milliseconds(idleMs) { return }
                    }
                } catch {
                    // The stream broke (a node stopped): read on from the cursor.
                }
            }
        }
    }
}

extension SubscribeCommand {
    /// As one consumer of a group: fetch, run or print, acknowledge.
    func consume(_ client: AspenClient, group name: String, idleMs: Int64?) async throws {
        let made = ConsumerGroup(
            name: name, pattern: pattern, ackWaitMs: try JobDuration.parseMs(ackWait), maxDeliveries: maxDeliveries, maxPending: maxPending)
        _ = try await client.job(.groupCreate(made, from: fromCursor))
        let me = consumer ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        var shown = 0
        var quiet = ContinuousClock.now
        while true {
            guard case .deliveries(let deliveries) = try await client.job(.fetch(group: name, consumer: me, max: 16, waitMs: 1000)) else {
                throw CLIError.unexpectedAnswer
            }
            if deliveries.isEmpty {
                if let idleMs, ContinuousClock.now - quiet > .milliseconds(idleMs) { return }
                continue
            }
            quiet = .now
            for delivery in deliveries {
                let message = delivery.message
                var action = GroupAction.ack
                if let exec {
                    action = try Self.run(exec, message) ? .ack : .nak(delayMs: 1000)
                } else {
                    FileHandle.standardOutput.write(Data("\(message.cursor) \(message.subject) \(String(decoding: message.payload, as: UTF8.self))\n".utf8))
                }
                _ = try await client.job(.settle(group: name, cursor: message.cursor, receipt: delivery.receipt, action: action))
                shown += 1
                if let count, shown >= count { return }
            }
        }
    }

    /// Runs `command` with the message on standard input; whether it exited 0.
    static func run(_ command: String, _ message: TopicMessage) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        var environment = ProcessInfo.processInfo.environment
        environment["ASPEN_MSG_SUBJECT"] = message.subject
        environment["ASPEN_MSG_CURSOR"] = String(message.cursor)
        process.environment = environment
        let input = Pipe()
        process.standardInput = input
        try process.run()
        // A command that does not read its input may have exited already: that is no error.
        try? input.fileHandleForWriting.write(contentsOf: Data(message.payload))
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}

/// `aspen topic …`: the stream's retention and state.
struct TopicCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topic", abstract: "Retention of durable messages, the stream's state, consumer groups.",
        subcommands: [Retention.self, Info.self, Group.self])

    struct Group: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "group", abstract: "A consumer group: its pattern, where it is, what is pending, its dead letters.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The group's name.") var name: String

        func run() async throws {
            try await runJob {
                guard case .groupStatus(let group, let pending, let dead) = try await cluster.client().job(.groupStatus(name)) else {
                    throw CLIError.unexpectedAnswer
                }
                let object: [String: Any] = [
                    "name": group.name, "pattern": group.pattern, "next": group.next, "pending": pending, "dead": dead,
                    "ack_wait_ms": group.ackWaitMs, "max_deliveries": group.maxDeliveries, "max_pending": group.maxPending,
                ]
                output(
                    cluster.json, object,
                    text: "group \(group.name) on \(group.pattern): next cursor \(group.next), \(pending) pending, \(dead.count) dead"
                        + (dead.isEmpty ? "" : " (\(dead.map(String.init).joined(separator: ", ")))"))
            }
        }
    }

    struct Retention: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "retention", abstract: "Keep messages matching a pattern at most this long, or this many newer messages.",
            discussion: "aspen topic retention 'orders.>' --max-age 7d --max-msgs 1000000")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The subject pattern the rule applies to.") var pattern: String
        @Option(help: "Oldest message kept (250ms … 365d).") var maxAge: String?
        @Option(help: "A message goes once this many newer messages are in the stream.") var maxMsgs: UInt64?

        func run() async throws {
            try await runJob {
                let rule = TopicRetention(pattern: pattern, maxAgeMs: try maxAge.map(JobDuration.parseMs) ?? 0, maxMessages: maxMsgs ?? 0)
                _ = try await cluster.client().job(.retentionSet(rule))
                output(cluster.json, ["pattern": pattern, "max_age_ms": rule.maxAgeMs, "max_msgs": rule.maxMessages], text: "retention of \(pattern) set")
            }
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "info", abstract: "The oldest and last cursor, and the retention rules.")
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await runJob {
                let client = try cluster.client()
                guard case .page(let head) = try await client.job(.read(pattern: nil, from: 0, limit: 1)),
                    case .retentions(let rules) = try await client.job(.retentions)
                else { throw CLIError.unexpectedAnswer }
                let described = rules.map { ["pattern": $0.pattern, "max_age_ms": $0.maxAgeMs, "max_msgs": $0.maxMessages] as [String: Any] }
                let lines =
                    ["oldest cursor \(head.oldest), last \(head.last)"]
                    + rules.map { "retention \($0.pattern): max age \(JobDuration.format(ms: $0.maxAgeMs)), max msgs \($0.maxMessages)" }
                output(cluster.json, ["oldest": head.oldest, "last": head.last, "retention": described], text: lines.joined(separator: "\n"))
            }
        }
    }
}
