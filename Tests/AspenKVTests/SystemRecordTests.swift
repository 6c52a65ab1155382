import AspenCore
@testable import AspenKV
import Testing

/// System records: cluster metadata the state machine applies like any command, kept outside the
/// keyspace. A system write is bounded, atomic, invisible to every key operation, and no client
/// can send one.
@Suite("System records")
struct SystemRecordTests {
    static func name(_ text: String) -> Bytes { Array(text.utf8) }

    static func set(_ name: String, _ value: String) -> SystemRecordChange { .set(name: Self.name(name), value: Array(value.utf8)) }

    static func records(_ backend: MemoryKVBackend, prefix: String = "") -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: backend.systemRecords(prefix: name(prefix)).map {
                (String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self))
            })
    }

    /// Applies `command` and requires that it succeeded.
    static func applied(_ command: KVCommand, to backend: inout MemoryKVBackend, limits: Limits = .standard) throws
        -> (KVResult, [WatchEvent])
    {
        let (result, events) = try KVStateMachine.applyRecording(command, to: &backend, limits: limits)
        return (try result.get(), events)
    }

    @Test("a system write sets, replaces and removes records in order, by name and by prefix, with no revision and no watch event")
    func applyOnMemory() throws {
        var backend = MemoryKVBackend()
        _ = try Self.applied(.put(Put(key: Self.name("k"), value: [1])), to: &backend)
        let write = SystemWrite(changes: [
            Self.set("auth/mode", "open"), Self.set("auth/root/b", "key-b"), Self.set("auth/root/a", "key-a"),
            Self.set("auth/revoked/1", "x"), Self.set("auth/revoked/2", "y"), Self.set("auth/mode", "required"),
        ])
        let (result, events) = try Self.applied(.system(write), to: &backend)
        #expect(result == .systemWritten(changed: 6))
        #expect(events.isEmpty)
        #expect(backend.revision() == 1)
        #expect(Self.records(backend) == [
            "auth/mode": "required", "auth/root/a": "key-a", "auth/root/b": "key-b", "auth/revoked/1": "x", "auth/revoked/2": "y",
        ])
        // Sorted by name; a prefix selects its records only.
        #expect(backend.systemRecords(prefix: []).map { String(decoding: $0.name, as: UTF8.self) } == [
            "auth/mode", "auth/revoked/1", "auth/revoked/2", "auth/root/a", "auth/root/b",
        ])
        #expect(Self.records(backend, prefix: "auth/root/").keys.sorted() == ["auth/root/a", "auth/root/b"])
        // Setting a value it already has, or removing what is not there, changes nothing.
        let second = SystemWrite(changes: [
            Self.set("auth/mode", "required"), .remove(name: Self.name("missing")), .removePrefix(Self.name("auth/revoked/")),
            .remove(name: Self.name("auth/root/a")),
        ])
        #expect(try Self.applied(.system(second), to: &backend).0 == .systemWritten(changed: 3))
        #expect(Self.records(backend) == ["auth/mode": "required", "auth/root/b": "key-b"])
        #expect(backend.systemRecordCount() == 2)
        #expect(backend.revision() == 1)
        #expect(try Self.applied(.system(SystemWrite(changes: [.removePrefix([])])), to: &backend).0 == .systemWritten(changed: 2))
        #expect(backend.systemRecordCount() == 0)
        #expect(backend.get(Self.name("k"), at: nil)?.value == [1])
    }

    @Test("a write that would leave more than systemRecordsMax records is refused whole, naming the limit; one that leaves fewer still applies")
    func countBound() throws {
        var limits = Limits()
        limits.systemRecordsMax = 3
        var backend = MemoryKVBackend()
        _ = try Self.applied(.system(SystemWrite(changes: [Self.set("a", "1"), Self.set("b", "2")])), to: &backend, limits: limits)
        let before = KVSnapshot(of: backend)
        // Replacing values and removing one first would not be enough: the write ends at four.
        let over = SystemWrite(changes: [Self.set("a", "changed"), .remove(name: Self.name("b")), Self.set("c", "3"), Self.set("d", "4"), Self.set("e", "5")])
        let (result, events) = try KVStateMachine.applyRecording(.system(over), to: &backend, limits: limits)
        #expect(result == .failure(.systemRecordsExceeded(count: 4, limit: 3)))
        guard case .failure(let error) = result else { return }
        #expect(error.description.contains("systemRecordsMax (3)"))
        #expect(error.code == "system_records_exceeded")
        #expect(events.isEmpty)
        #expect(KVSnapshot(of: backend) == before, "the refused write left a trace")
        // Ending at exactly the bound is fine.
        _ = try Self.applied(.system(SystemWrite(changes: [Self.set("c", "3")])), to: &backend, limits: limits)
        #expect(backend.systemRecordCount() == 3)
        // Over a lowered bound, a write that leaves no more records than it found still applies.
        limits.systemRecordsMax = 1
        #expect(try Self.applied(.system(SystemWrite(changes: [.remove(name: Self.name("a"))])), to: &backend, limits: limits).0 == .systemWritten(changed: 1))
        let grow = try KVStateMachine.apply(.system(SystemWrite(changes: [Self.set("z", "9")])), to: &backend, limits: limits)
        #expect(grow == .failure(.systemRecordsExceeded(count: 3, limit: 1)))
        // The error travels to a client unchanged.
        #expect(try KVWire.decodeError(KVWire.encode(KVError.systemRecordsExceeded(count: 4, limit: 3))) == .systemRecordsExceeded(count: 4, limit: 3))
    }

    @Test("a system write's conditions are checked where it applies: one that fails undoes the changes before it, naming the record")
    func conditions() throws {
        var backend = MemoryKVBackend()
        _ = try Self.applied(.system(SystemWrite(changes: [Self.set("blob/m/x", "1"), Self.set("blob/r/x/tag", "")])), to: &backend)
        let before = KVSnapshot(of: backend)
        // Each failing condition: a wrong value, a record expected absent, one expected present,
        // a prefix expected empty. The set before it must not survive.
        let failing: [(SystemRecordChange, String)] = [
            (.expect(name: Self.name("blob/m/x"), value: Array("2".utf8)), "holds another value"),
            (.expect(name: Self.name("blob/m/x"), value: nil), "exists"),
            (.expect(name: Self.name("blob/m/y"), value: Array("1".utf8)), "does not exist"),
            (.expectNone(prefix: Self.name("blob/r/x")), "blob/r/x/tag"),
        ]
        for (condition, reason) in failing {
            let write = SystemWrite(changes: [Self.set("blob/other", "3"), condition, .remove(name: Self.name("blob/m/x"))])
            let (result, _) = try KVStateMachine.applyRecording(.system(write), to: &backend, limits: .standard)
            guard case .failure(.systemConditionFailed(let text)) = result else {
                Issue.record("\(condition) did not fail: \(result)")
                continue
            }
            #expect(text.contains(reason), "\(text)")
            #expect(KVSnapshot(of: backend) == before, "a failed condition left a trace")
        }
        // Conditions that hold let the write through.
        let holding = SystemWrite(changes: [
            .expect(name: Self.name("blob/m/x"), value: Array("1".utf8)), .expect(name: Self.name("blob/m/y"), value: nil),
            .expectNone(prefix: Self.name("blob/r/y")), .remove(name: Self.name("blob/m/x")),
        ])
        #expect(try Self.applied(.system(holding), to: &backend).0 == .systemWritten(changed: 1))
        #expect(Self.records(backend) == ["blob/r/x/tag": ""])
        let error = KVError.systemConditionFailed("system record a exists")
        #expect(try KVWire.decodeError(KVWire.encode(error)) == error)
        #expect(error.code == "system_condition_failed")
    }

    @Test("a system write and its result survive the log's encoding")
    func codecRoundTrip() throws {
        let write = SystemWrite(changes: [
            Self.set("auth/mode", "required"), .set(name: [0, 0xFF], value: []),
            .set(name: Array(repeating: 1, count: Limits.standard.systemRecordNameBytesMax), value: Array(repeating: 2, count: Limits.standard.systemRecordValueBytesMax)),
            .remove(name: Self.name("auth/revoked/9")), .removePrefix([]), .removePrefix(Self.name("auth/")),
            .expect(name: Self.name("blob/m/1"), value: nil), .expect(name: [7], value: [1, 2]), .expectNone(prefix: []),
        ])
        for command in [KVCommand.system(write), .system(SystemWrite(changes: []))] {
            #expect(try KVCommand(decoding: command.encoded()) == command)
            // A prefix removal can touch any number of rows: never applied inline.
            #expect(!KVCommand.hasBoundedWork(encoded: command.encoded()))
        }
        #expect(try KVWire.decodeResult(KVWire.encode(KVResult.systemWritten(changed: 1234))) == .systemWritten(changed: 1234))
    }

    /// The tag and count of a system write, then `body`, as the log would hold them.
    static func encodedSystemWrite(count: UInt64, body: (inout ByteWriter) -> Void) -> Bytes {
        var writer = ByteWriter()
        writer.write(KVCommand.codecVersion)
        writer.write(11)
        writer.writeVarint(count)
        body(&writer)
        return writer.bytes
    }

    @Test("decoding refuses a count, name, prefix or value past its limit before reading on, and an unknown change kind")
    func boundedDecoding() throws {
        let limits = Limits.standard
        func refused(_ bytes: Bytes) -> String? {
            do {
                _ = try KVCommand(decoding: bytes)
                return nil
            } catch {
                return "\(error)"
            }
        }
        // A count past the limit, with nothing after it: refused on the count alone.
        let count = refused(Self.encodedSystemWrite(count: UInt64(limits.systemRecordChangesMax) + 1) { _ in })
        #expect(count?.contains("\(limits.systemRecordChangesMax)") == true, "\(count ?? "accepted")")
        let huge = refused(Self.encodedSystemWrite(count: .max) { _ in })
        #expect(huge != nil)
        let longName = refused(
            Self.encodedSystemWrite(count: 1) {
                $0.write(0)
                $0.writeBytes(Array(repeating: 1, count: limits.systemRecordNameBytesMax + 1))
                $0.writeBytes([1])
            })
        #expect(longName?.contains("\(limits.systemRecordNameBytesMax)") == true, "\(longName ?? "accepted")")
        let longPrefix = refused(
            Self.encodedSystemWrite(count: 1) {
                $0.write(2)
                $0.writeBytes(Array(repeating: 1, count: limits.systemRecordNameBytesMax + 1))
            })
        #expect(longPrefix != nil)
        // A value length past the limit, claimed without the bytes behind it.
        let largeValue = refused(
            Self.encodedSystemWrite(count: 1) {
                $0.write(0)
                $0.writeBytes([1])
                $0.writeVarint(UInt64(limits.systemRecordValueBytesMax) + 1)
            })
        #expect(largeValue?.contains("\(limits.systemRecordValueBytesMax)") == true, "\(largeValue ?? "accepted")")
        #expect(refused(Self.encodedSystemWrite(count: 1) { $0.write(5); $0.writeBytes([1]) })?.contains("system record change") == true)
        // More changes promised than follow.
        #expect(refused(Self.encodedSystemWrite(count: 2) { $0.write(1); $0.writeBytes([1]) }) != nil)
    }

    @Test("the validator refuses empty or long names, long prefixes, large values and too many changes, naming the limit")
    func validation() throws {
        let limits = Limits.standard
        func message(_ changes: [SystemRecordChange]) -> String? {
            do {
                try KVValidator.validate(KVCommand.system(SystemWrite(changes: changes)), limits: limits)
                return nil
            } catch {
                return error.description
            }
        }
        let long = Array(repeating: UInt8(1), count: limits.systemRecordNameBytesMax + 1)
        #expect(message([.set(name: [], value: [1])])?.contains("must not be empty") == true)
        #expect(message([.remove(name: [])])?.contains("must not be empty") == true)
        #expect(message([.set(name: long, value: [])])?.contains("systemRecordNameBytesMax") == true)
        #expect(message([.remove(name: long)])?.contains("systemRecordNameBytesMax") == true)
        #expect(message([.removePrefix(long)])?.contains("systemRecordNameBytesMax") == true)
        #expect(message([.set(name: [1], value: Array(repeating: 0, count: limits.systemRecordValueBytesMax + 1))])?.contains("systemRecordValueBytesMax") == true)
        let many = (0...limits.systemRecordChangesMax).map { SystemRecordChange.remove(name: Array("n\($0)".utf8)) }
        #expect(message(many)?.contains("systemRecordChangesMax") == true)
        #expect(message([.removePrefix([]), .set(name: [1], value: [])]) == nil)
        // The state machine checks again when it applies: every member refuses it the same way.
        var backend = MemoryKVBackend()
        let result = try KVStateMachine.apply(.system(SystemWrite(changes: [.set(name: long, value: [])])), to: &backend)
        guard case .failure(.invalidCommand(let reason)) = result else {
            Issue.record("applied: \(result)")
            return
        }
        #expect(reason.contains("systemRecordNameBytesMax"))
        #expect(backend.systemRecordCount() == 0)
    }

    @Test("a client cannot send a system write: the wire refuses it bare and under a session stamp, and a stamp may not wrap one")
    func clientsCannotWrite() throws {
        let system = KVCommand.system(SystemWrite(changes: [Self.set("auth/mode", "open")]))
        #expect(throws: DecodingError.invalid("system records are written by the node, not by clients")) {
            _ = try KVWire.decodeWrite(system.encoded())
        }
        #expect(throws: DecodingError.self) { _ = try KVWire.decodeClientWrite(system.encoded()) }
        let stamp = ClientStamp(session: 3, sequence: 1, acknowledgedThrough: 0)
        let stamped = KVCommand.sessioned(stamp, nowMs: 5, system)
        #expect(throws: DecodingError.self) { _ = try KVWire.decodeClientWrite(stamped.encoded()) }
        // Not even the log takes a stamped one, and the validator (run before proposing and at
        // apply) refuses it too.
        #expect(throws: DecodingError.self) { _ = try KVCommand(decoding: stamped.encoded()) }
        #expect(throws: KVError.self) { try KVValidator.validate(stamped, limits: .standard) }
        var backend = MemoryKVBackend()
        #expect(try KVStateMachine.apply(stamped, to: &backend) == .failure(.invalidCommand("a session stamp wraps one client command")))
        #expect(backend.systemRecordCount() == 0 && backend.clientSessionCount() == 0)
        // The same expiry is refused the same way: both are the node's own.
        #expect(throws: DecodingError.self) { _ = try KVWire.decodeWrite(KVCommand.expireLeases(nowMs: 1).encoded()) }
    }

    @Test("a delete of the whole keyspace, a scan, a count, a range compare and a watch replay never see or remove system records")
    func outsideTheKeyspace() throws {
        var backend = MemoryKVBackend()
        let records = SystemWrite(changes: [Self.set("auth/mode", "required"), .set(name: [0], value: [0]), .set(name: [0xFF, 0xFF], value: [1])])
        _ = try Self.applied(.system(records), to: &backend)
        _ = try Self.applied(.put(Put(key: Self.name("auth/mode"), value: Array("a key of the same bytes".utf8))), to: &backend)
        _ = try Self.applied(.put(Put(key: [0xFF], value: [2])), to: &backend)
        let everything = try KVStateMachine.read(RangeRequest(.range(start: [], end: nil)), from: backend).get()
        #expect(everything.kvs.map(\.key) == [Self.name("auth/mode"), [0xFF]])
        #expect(everything.count == 2)
        #expect(try KVStateMachine.read(RangeRequest(.prefix([]), countOnly: true), from: backend).get().count == 2)
        let compare = Compare(key: [0], .version(0), .greater, extent: .range(end: nil))
        let transaction = Transaction(compares: [compare], success: [.delete(Delete(.prefix([]))), .get(RangeRequest(.prefix([])))])
        guard case .transaction(let result) = try Self.applied(.transaction(transaction), to: &backend).0 else {
            Issue.record("not a transaction result")
            return
        }
        #expect(result.succeeded)
        guard case .delete(let deleted) = result.results[0] else { return }
        #expect(deleted.deleted == 2)
        let (_, events) = try Self.applied(.delete(Delete(.range(start: [], end: nil))), to: &backend)
        #expect(events.isEmpty)
        #expect(backend.systemRecordCount() == 3)
        #expect(backend.systemRecord(Self.name("auth/mode")) == Array("required".utf8))
        let replay = try KVStateMachine.changes(
            in: KeyBounds(start: [], end: nil), from: 1, through: backend.revision(), withPrevious: true, limit: 100, backend: backend
        ).get()
        #expect(replay.events.allSatisfy { $0.keyValue.key == Self.name("auth/mode") || $0.keyValue.key == [0xFF] })
        #expect(replay.events.count == 4)
    }

    @Test("a memory state's image carries its system records, in small frames too, and installs them")
    func memorySnapshot() throws {
        var backend = MemoryKVBackend()
        _ = try Self.applied(.put(Put(key: Self.name("k"), value: [1])), to: &backend)
        let changes = (0..<40).map { SystemRecordChange.set(name: Array("auth/revoked/\($0 + 100)".utf8), value: Array(repeating: UInt8($0), count: $0)) }
        _ = try Self.applied(.system(SystemWrite(changes: changes + [Self.set("auth/mode", "required")])), to: &backend)
        let snapshot = KVSnapshot(of: backend)
        #expect(snapshot.systemRecords.count == 41)
        #expect(snapshot.systemRecords.first?.name == Self.name("auth/mode"))
        let restored = MemoryKVBackend(snapshot: try KVSnapshot(decoding: snapshot.encoded()))
        #expect(Self.records(restored) == Self.records(backend))
        #expect(restored.get(Self.name("k"), at: nil)?.value == [1])
        #expect(try KVSnapshot.capture(from: restored) == snapshot)
        // Written a few records to a frame: the section spans frames and reads back whole.
        let image = try KVSnapshotImageTests.image(snapshot, frameBytes: 64)
        let frames = try KVSnapshotImageTests.frames(image)
        let recordFrames = frames.compactMap { if case .systemRecords(let records) = $0 { records } else { nil } }
        #expect(recordFrames.count > 5)
        #expect(Array(recordFrames.joined()) == snapshot.systemRecords)
        #expect(frames.last == .end)
        #expect(try KVSnapshot(decoding: image) == snapshot)
    }

    @Test("an image without system records is framed as before they existed, and one with them is checked like every section")
    func imageFormat() throws {
        // No records: no frame of theirs and three totals, so earlier builds read it.
        let plain = KVSnapshotImageTests.sample(changes: 20)
        let plainImage = plain.encoded()
        let plainOffsets = try KVSnapshotImage.frameOffsets(plainImage)
        #expect(!plainOffsets.contains { $0.kind == 6 })
        let endPayload = Array(plainImage[(plainOffsets.last!.offset + 5)..<(plainImage.count - 4)])
        #expect(endPayload == [21, 2, 3])
        #expect(try KVSnapshot(decoding: plainImage).systemRecords.isEmpty)

        var snapshot = plain
        snapshot.systemRecords = [
            SystemRecord(name: Self.name("a"), value: [1]), SystemRecord(name: Self.name("b"), value: []), SystemRecord(name: Self.name("c"), value: [3]),
        ]
        let image = try KVSnapshotImageTests.image(snapshot, frameBytes: 4)
        #expect(try KVSnapshot(decoding: image) == snapshot)
        let offsets = try KVSnapshotImage.frameOffsets(image)
        let recordFrames = offsets.indices.filter { offsets[$0].kind == 6 }
        #expect(recordFrames.count == 3)
        let first = recordFrames[0]
        // A records frame left out: the end frame's totals say so.
        let missing = Array(image[..<offsets[first].offset] + image[offsets[first + 1].offset...])
        #expect(KVSnapshotImageTests.decodingFails(missing)?.contains("3 system records") == true, "\(KVSnapshotImageTests.decodingFails(missing) ?? "accepted")")
        // Two swapped: the names go back.
        let swapped = Array(
            image[..<offsets[first].offset] + image[offsets[first + 1].offset..<offsets[first + 2].offset]
                + image[offsets[first].offset..<offsets[first + 1].offset] + image[offsets[first + 2].offset...])
        #expect(KVSnapshotImageTests.decodingFails(swapped)?.contains("after system record") == true)
        // A records frame before the sessions.
        let session = try #require(offsets.firstIndex { $0.kind == 4 })
        let early = Array(
            image[..<offsets[session].offset] + image[offsets[first].offset..<offsets[first + 1].offset]
                + image[offsets[session].offset..<offsets[first].offset] + image[offsets[first + 1].offset...])
        #expect(KVSnapshotImageTests.decodingFails(early)?.contains("out of order after the system records frames") == true, "\(KVSnapshotImageTests.decodingFails(early) ?? "accepted")")
        // A name twice, and more records than the limit.
        var twice = plain
        twice.systemRecords = [SystemRecord(name: [1], value: []), SystemRecord(name: [1], value: [])]
        #expect(KVSnapshotImageTests.decodingFails(twice.encoded())?.contains("after system record") == true)
        var limits = Limits()
        limits.systemRecordsMax = 2
        #expect(KVSnapshotImageTests.decodingFails(snapshot.encoded(), limits: limits)?.contains("systemRecordsMax (2)") == true)
    }

    @Test("an end frame that counts zero system records is refused: an image has one encoding")
    func zeroRecordsCounted() throws {
        let image = KVSnapshotImageTests.sample(changes: 5).encoded()
        let end = try #require(try KVSnapshotImage.frameOffsets(image).last)
        var payload = Array(image[(end.offset + 5)..<(image.count - 4)])
        payload.append(0)
        var frame = ByteWriter()
        frame.write(5)
        frame.writeFixed(UInt32(payload.count))
        frame.writeRaw(payload)
        frame.writeFixed(CRC32C.checksum(frame.bytes))
        let counted = Array(image[..<end.offset]) + frame.bytes
        #expect(KVSnapshotImageTests.decodingFails(counted)?.contains("counts 0 system records") == true, "\(KVSnapshotImageTests.decodingFails(counted) ?? "accepted")")
    }
}
