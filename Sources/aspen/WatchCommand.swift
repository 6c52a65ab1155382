import AspenClient
import AspenCore
import AspenKV
import ArgumentParser
import Foundation

extension KV {
    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print changes to keys with a prefix as they commit (history first with --from-revision).",
            discussion: """
                One line per event: PUT KEY VALUE (revision N) or DELETE KEY (revision N); with --json one
                JSON object per line. Runs until Ctrl-C, --count events, or the node ends the watch
                (compacted: exit 1; lagged or shutdown: exit 3, resume with --from-revision LAST+1).
                """)
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Key prefix (empty: every key).") var prefix: String = ""
        @Flag(help: "Watch exactly this key instead of a prefix.") var exact = false
        @Option(help: "Replay history from this revision first.") var fromRevision: Int64 = 0
        @Flag(help: "Include each change's previous value.") var prev = false
        @Option(help: "Exit after this many events.") var count: Int?
        @Option(help: "Print a progress line while idle, every this many milliseconds (0: never).") var progressMs: Int = 0

        func run() async throws {
            try await runReporting {
                let key = Array(prefix.utf8)
                let bounds = exact ? KeySelection.key(key).bounds : KeySelection.prefix(key).bounds
                guard fromRevision >= 0 else { throw CLIError.badInput("--from-revision must not be negative") }
                let client = try cluster.client()
                let stream = try await client.watch(
                    WatchRequest(bounds: bounds, startRevision: fromRevision, withPrevious: prev, progressIntervalMs: max(0, progressMs)))
                var seen = 0
                do {
                    for try await message in stream {
                        switch message {
                        case .created: break
                        case .progress(let revision):
                            emit(["progress": revision], text: "-- no changes through revision \(revision)")
                        case .events(let events):
                            for event in events {
                                print(event)
                                seen += 1
                                if let count, seen >= count { return }
                            }
                        case .ended(let end):
                            switch end {
                            case .compacted: throw CLIError.notFound("watch ended: \(end)")
                            case .failed(let reason) where reason.hasPrefix("unauthorized") || reason.hasPrefix("permission_denied"):
                                FileHandle.standardError.write(Data("error: watch refused: \(reason)\n".utf8))
                                throw ExitCode(6)
                            default: throw CLIError.unavailable("watch ended: \(end)")
                            }
                        }
                    }
                } catch let error as CLIError {
                    throw error
                } catch let exit as ExitCode {
                    throw exit
                } catch {
                    throw CLIError.unavailable("watch broken: \(error)")
                }
                throw CLIError.unavailable("the watch ended without a reason")
            }
        }

        func print(_ event: WatchEvent) {
            let key = String(decoding: event.keyValue.key, as: UTF8.self)
            var object: [String: Any] = [
                "type": event.kind == .put ? "PUT" : "DELETE", "key": key, "revision": event.revision,
            ]
            var text: String
            if event.kind == .put {
                let value = String(decoding: event.keyValue.value, as: UTF8.self)
                object["value"] = value
                object["version"] = event.keyValue.version
                object["lease"] = event.keyValue.lease
                text = "PUT \(key) \(value) (revision \(event.revision))"
            } else {
                text = "DELETE \(key) (revision \(event.revision))"
            }
            if let previous = event.previous {
                object["previous"] = describe(previous)
                text += "\n  previous: \(String(decoding: previous.value, as: UTF8.self))"
            }
            emit(object, text: text)
        }

        func emit(_ object: [String: Any], text: String) {
            // Unbuffered, so that a pipe sees each event as it happens.
            if cluster.json, let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
                FileHandle.standardOutput.write(data + Data("\n".utf8))
            } else {
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
            }
        }
    }
}
