import AspenCI
import AspenCore

extension AspenClient {
    /// Runs a CI call (`aspen ci …`) on any node; refusals come back as `CIError`.
    public func ci(_ call: CICall) async throws -> CIAnswer {
        let repeatable: Bool
        switch call {
        case .list, .show, .logs, .status, .artifacts: repeatable = true
        // A cancel sent again finds the cancel requested (or the run ended) and changes nothing.
        case .cancel: repeatable = true
        // A start sent again carries the same request id and finds the run the first one made.
        case .start: repeatable = true
        // A rerun sent again after a lost answer would start a second run: the caller is told
        // the outcome is unknown instead.
        case .rerun: repeatable = false
        // Setting a secret again sets the same value; deleting again finds it gone.
        case .secretSet, .secretList, .secretDelete: repeatable = true
        case .caches: repeatable = true
        // Deleting every cache again deletes what is left; deleting one key again would call a
        // cache deleted by the first send unknown.
        case .cacheDelete(_, let key): repeatable = key == nil
        }
        // A log request may wait for new bytes: that wait is not the node being slow.
        let waitMs: Int64 = if case .logs(_, _, _, _, let waitMs) = call { waitMs } else { 0 }
        let body: [UInt8]
        do {
            body = try await self.call("ci", "call", call.encoded, extraSeconds: Double(waitMs) / 1000, repeatable: repeatable)
        } catch ClientError.rejected(let failure) where failure.code == CIError.rpcCode {
            throw CIError(code: String(decoding: failure.detail, as: UTF8.self), message: failure.message)
        }
        do {
            return try CIAnswer(decoding: body, limits: options.limits)
        } catch {
            throw ClientError.malformedResponse("\(error)")
        }
    }
}
