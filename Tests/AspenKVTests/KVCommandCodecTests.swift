import AspenCore
import AspenKV
import Testing

@Suite("Command codec")
struct KVCommandCodecTests {
    @Test("a transaction whose range has a page limit past 32 bits (etcd's is 64-bit) passes validation and decodes after encoding")
    func largePageLimit() throws {
        let range = RangeRequest(.prefix(Array("app/".utf8)), limit: 3_000_000_000)
        let command = KVCommand.transaction(Transaction(compares: [], success: [.get(range)]))
        try KVValidator.validate(command, limits: .standard)
        // Before, the validator took it and every member then failed to decode it from the log.
        let decoded = try KVCommand(decoding: command.encoded())
        guard case .transaction(let transaction) = decoded, case .get(let request)? = transaction.success.first else {
            Issue.record("decoded as \(decoded)")
            return
        }
        #expect(request.limit == Int(Int32.max))
        #expect(request.selection == range.selection)
    }
}
