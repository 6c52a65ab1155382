#if os(Linux)
import Glibc
import Subprocess

/// What the watch of one attempt saw, for the outcome.
struct Supervision: Sendable {
    var stopCause: StopCause?
    var output: OutputBudget
    /// When the child was seen to have exited.
    var exitedAt: ContinuousClock.Instant
    var sweep: SweepReport
    /// The child was in the attempt's cgroup when it exited (it joined it before its exec).
    var childJoinedCgroup: Bool
    /// Why the output could not be read, if it could not.
    var failure: String?
}

/// Why the runner stopped a job.
enum StopCause: Sendable, Equatable {
    case timedOut
    case cancelled
    case outputFailed
}

/// What the stopper waits for: a reason to stop the job, or the child's exit.
final class SupervisorEvents: Sendable {
    enum Event: Sendable {
        case stop(StopCause)
        case childExited
    }

    let stream: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    func send(_ event: Event) {
        continuation.yield(event)
    }

    func finish() {
        continuation.finish()
    }
}

extension ShellRunner {
    /// Streams the child's output, stops the job when asked, and once the child has exited sweeps
    /// what it left. All of it runs before swift-subprocess reaps the child (after this returns),
    /// so the child's pid, which is the job's process group id, cannot be reused meanwhile: no
    /// `kill(-group)` here can reach another group.
    func watch(
        _ execution: Execution<NoInput, SequenceOutput, SequenceOutput>, _ command: ShellCommand, marker: String, cgroup: JobCgroup?,
        events: SupervisorEvents, onOutput: @escaping @Sendable (ShellOutputChunk) async -> Void, clock: ContinuousClock
    ) async -> Supervision {
        let child = execution.processIdentifier.value
        let meter = OutputMeter(bytesMax: command.outputBytesMax)
        // Chunks queue here so that a slow `onOutput` never stalls the reads (and so the child);
        // the queue holds at most `outputBytesMax` bytes, all that is ever admitted.
        let (chunks, chunkSink) = AsyncStream.makeStream(of: ShellOutputChunk.self)
        async let delivered: Void = {
            for await chunk in chunks { await onOutput(chunk) }
        }()
        async let stopCause = stopWhenAsked(group: child, cgroup: cgroup, command: command, events: events)

        let failure = await Self.pump(execution, meter: meter, into: chunkSink, events: events)
        chunkSink.finish()
        await Self.waitForExit(of: child)
        let exitedAt = clock.now
        events.send(.childExited)
        let cause = await stopCause
        events.finish()

        // The child is a zombie until swift-subprocess reaps it, and /proc still shows its cgroup.
        let childJoinedCgroup = cgroup?.contains(child) ?? false
        let sweep = await ProcessSweep(group: child, marker: marker, matchesMarker: sweepsMarkedProcesses, cgroup: cgroup).run()
        await delivered
        return Supervision(
            stopCause: cause, output: meter.budget, exitedAt: exitedAt, sweep: sweep, childJoinedCgroup: childJoinedCgroup, failure: failure)
    }

    /// Reads both streams to their end, which the child's exit brings even while a descendant
    /// holds the pipes open. On a read failure, asks for a stop and returns the failure.
    private static func pump(
        _ execution: Execution<NoInput, SequenceOutput, SequenceOutput>, meter: OutputMeter,
        into sink: AsyncStream<ShellOutputChunk>.Continuation, events: SupervisorEvents
    ) async -> String? {
        await withTaskGroup(of: String?.self) { group in
            group.addTask { await drain(execution.standardOutput, as: .standardOutput, meter: meter, into: sink, events: events) }
            group.addTask { await drain(execution.standardError, as: .standardError, meter: meter, into: sink, events: events) }
            var failure: String?
            for await streamFailure in group where failure == nil {
                failure = streamFailure
            }
            return failure
        }
    }

    private static func drain(
        _ output: SubprocessOutputSequence, as stream: ShellOutputChunk.Stream, meter: OutputMeter,
        into sink: AsyncStream<ShellOutputChunk>.Continuation, events: SupervisorEvents
    ) async -> String? {
        do {
            for try await buffer in output {
                let admitted = meter.admit(buffer.count)
                if admitted > 0 {
                    sink.yield(ShellOutputChunk(stream: stream, bytes: buffer.withUnsafeBytes { Array($0.prefix(admitted)) }))
                }
            }
            return nil
        } catch {
            events.send(.stop(.outputFailed))
            return "reading \(stream == .standardOutput ? "stdout" : "stderr"): \(error)"
        }
    }

    /// Waits for the deadline, a stop request or the child's exit. On a stop, sends the group and
    /// each process of the cgroup SIGTERM (and SIGCONT, so a stopped process sees it), waits up to
    /// `killGraceMs` for all of them to exit, then SIGKILLs the group and the cgroup. Returns the
    /// cause, or nil when the child exited unasked (a stop that comes after the exit is no stop).
    private func stopWhenAsked(group: pid_t, cgroup: JobCgroup?, command: ShellCommand, events: SupervisorEvents) async -> StopCause? {
        guard let cause = await Self.firstStop(timeoutMs: command.timeoutMs, events: events), !Self.hasExited(group) else {
            return nil
        }
        kill(-group, SIGTERM)
        kill(-group, SIGCONT)
        cgroup?.signalMembers(SIGTERM, SIGCONT)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(command.killGraceMs)
        while clock.now < deadline, ProcessTable.hasLiveMember(inGroup: group) || cgroup?.isPopulated == true {
            try? await Task.sleep(for: min(.milliseconds(Self.sweepIntervalMs), deadline - clock.now))
        }
        kill(-group, SIGKILL)
        cgroup?.killAll()
        return cause
    }

    private static func firstStop(timeoutMs: Int64, events: SupervisorEvents) async -> StopCause? {
        await withTaskGroup(of: StopCause?.self) { group in
            if timeoutMs > 0 {
                group.addTask {
                    do {
                        try await Task.sleep(for: .milliseconds(timeoutMs))
                        return .timedOut
                    } catch {
                        return nil
                    }
                }
            }
            group.addTask {
                for await event in events.stream {
                    switch event {
                    case .stop(let cause): return cause
                    case .childExited: return nil
                    }
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Polls, because swift-subprocess keeps the child's exit to itself until `run` returns.
    /// Returns at once in the usual case, where the output ended because the child exited.
    ///
    /// The output can end a moment before the exit shows (the kernel closes a dying process's
    /// files before it makes it a zombie): the first looks come soon after (1 ms, doubling up to
    /// `sweepIntervalMs`), so that a short job is not held up by a whole interval.
    private static func waitForExit(of child: pid_t) async {
        var pauseMs: Int64 = 1
        while !hasExited(child) {
            try? await Task.sleep(for: .milliseconds(pauseMs))
            pauseMs = min(pauseMs * 2, sweepIntervalMs)
        }
    }

    /// Whether the (unreaped) child has exited. WNOWAIT: looks without reaping, which is
    /// swift-subprocess's to do.
    private static func hasExited(_ child: pid_t) -> Bool {
        var info = siginfo_t()
        while waitid(P_PID, id_t(child), &info, WEXITED | WNOHANG | WNOWAIT) != 0 {
            guard errno == EINTR else { return true }
        }
        return info._sifields._sigchld.si_pid != 0
    }
}
#endif
