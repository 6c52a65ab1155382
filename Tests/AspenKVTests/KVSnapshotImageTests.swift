import AspenCore
@testable import AspenKV
import Testing

/// The snapshot image format: what a writer frames, a reader gives back; anything damaged,
/// cut short, reordered or oversized is refused with a `DecodingError` that says where.
@Suite("Snapshot image format")
struct KVSnapshotImageTests {
    static func change(_ key: String, _ revision: Revision, value: Bytes? = [1, 2, 3], lease: LeaseID = 0) -> KVChange {
        KVChange(
            key: Array(key.utf8), revision: revision,
            keyValue: value.map { KeyValue(key: Array(key.utf8), value: $0, createRevision: revision, modRevision: revision, version: 1, lease: lease) })
    }

    /// Changes over many revisions, a deletion, leases, and sessions, one of them with more
    /// result bytes than a frame of `frameBytes` holds.
    static func sample(changes: Int = 300) -> KVSnapshot {
        var list: [KVChange] = []
        for revision in 1...Revision(changes) {
            list.append(change("k\(revision % 17)", revision, value: Array(repeating: UInt8(truncatingIfNeeded: revision), count: Int(revision % 40))))
        }
        list.append(change("k3", Revision(changes) + 1, value: nil))
        let sessions = [
            ClientSessionState(record: ClientSessionRecord(id: 5, lastSeenMs: 10, acknowledgedThrough: 2), results: []),
            ClientSessionState(
                record: ClientSessionRecord(id: 9, lastSeenMs: -4, acknowledgedThrough: 0),
                results: (1...40).map { (UInt64($0), Array(repeating: UInt8($0), count: 50)) }),
            ClientSessionState(record: ClientSessionRecord(id: .max, lastSeenMs: 7, acknowledgedThrough: 1), results: [(3, [9])]),
        ]
        return KVSnapshot(
            revision: Revision(changes) + 2, compactedRevision: 4, leaseSequence: 12, changes: list,
            leases: [Lease(id: 3, ttlMs: 1000, expiresAtMs: 5000), Lease(id: 12, ttlMs: 10, expiresAtMs: -1)], sessions: sessions)
    }

    /// `snapshot` written with small frames, so that every section spans several.
    static func image(_ snapshot: KVSnapshot, frameBytes: Int = 512) throws -> Bytes {
        var writer = KVSnapshotImage.Writer(into: KVSnapshotImage.MemorySink(), frameTargetBytes: frameBytes)
        try writer.begin(revision: snapshot.revision, compactedRevision: snapshot.compactedRevision, leaseSequence: snapshot.leaseSequence)
        for change in snapshot.changes { try writer.add(change) }
        for lease in snapshot.leases { try writer.add(lease) }
        for session in snapshot.sessions { try writer.add(session) }
        for record in snapshot.systemRecords { try writer.add(record) }
        try writer.finish()
        #expect(writer.bytesWritten == writer.sink.bytes.count)
        return writer.sink.bytes
    }

    /// Every frame of `image`, read one at a time.
    static func frames(_ image: Bytes, limits: Limits = .standard) throws -> [KVSnapshotImage.Frame] {
        var reader = KVSnapshotImage.Reader(from: KVSnapshotImage.MemorySource(image), limits: limits)
        var frames: [KVSnapshotImage.Frame] = []
        while true {
            let frame = try reader.next()
            frames.append(frame)
            if frame == .end { return frames }
        }
    }

    static func decodingFails(_ bytes: Bytes, limits: Limits = .standard) -> String? {
        do {
            _ = try KVSnapshot(decoding: bytes, limits: limits)
            return nil
        } catch {
            return error.description
        }
    }

    @Test("an image written in small frames reads back the same, each section spanning frames, a session continued")
    func roundTrip() throws {
        let snapshot = Self.sample()
        let image = try Self.image(snapshot)
        #expect(try KVSnapshot(decoding: image) == snapshot)
        let frames = try Self.frames(image)
        #expect(frames.first == .header(KVSnapshotImage.Header(revision: 302, compactedRevision: 4, leaseSequence: 12)))
        let changeFrames = frames.compactMap { if case .changes(let changes) = $0 { changes } else { nil } }
        let sessionFrames = frames.compactMap { if case .sessions(let sessions) = $0 { sessions } else { nil } }
        #expect(changeFrames.count > 5 && changeFrames.joined().count == snapshot.changes.count)
        // The session with 2 KB of results went on in later frames, each part first in its frame.
        #expect(sessionFrames.count > 2)
        #expect(sessionFrames.dropFirst().allSatisfy { $0.first?.record.id == 9 || $0.first?.record.id == .max })
        #expect(sessionFrames.joined().filter { $0.record.id == 9 }.count > 1)
        // And the same state written with the default frames (one of each) reads back too.
        #expect(try KVSnapshot(decoding: snapshot.encoded()) == snapshot)
        #expect(try Self.frames(snapshot.encoded()).count == 5)
    }

    @Test("one change larger than a frame's target gets a frame of its own")
    func oversizedChange() throws {
        let big = Self.change("big", 2, value: Array(repeating: 7, count: 2_000))
        let snapshot = KVSnapshot(revision: 3, compactedRevision: 0, leaseSequence: 0, changes: [Self.change("a", 1), big, Self.change("b", 3)], leases: [])
        let frames = try Self.frames(try Self.image(snapshot, frameBytes: 100))
        #expect(frames.compactMap { if case .changes(let changes) = $0 { changes.count } else { nil } } == [1, 1, 1])
    }

    @Test("a frame past rpcMessageBytesMax is refused naming the limit, before its payload is read")
    func frameBound() throws {
        var limits = Limits()
        limits.rpcMessageBytesMax = 1_000
        let image = try Self.image(KVSnapshot(revision: 1, compactedRevision: 0, leaseSequence: 0, changes: [Self.change("a", 1, value: Array(repeating: 1, count: 1_500))], leases: []))
        let message = try #require(Self.decodingFails(image, limits: limits))
        #expect(message.contains("frame at byte"))
        #expect(message.contains("rpcMessageBytesMax (1000)"), "\(message)")
        // A length of 4 GiB in a frame of an image of a few bytes: refused, nothing allocated.
        let huge = KVSnapshotImage.magic + [2, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(Self.decodingFails(huge)?.contains("rpcMessageBytesMax") == true)
    }

    @Test("images out of order, cut at a frame boundary, with a frame missing or bytes after the end are refused")
    func structure() throws {
        let snapshot = Self.sample(changes: 60)
        let image = try Self.image(snapshot)
        let offsets = try KVSnapshotImage.frameOffsets(image)
        // Cut after a whole frame: no end frame.
        let cut = Array(image.prefix(offsets[3].offset))
        #expect(Self.decodingFails(cut)?.contains("ends without its end frame") == true)
        // A whole changes frame left out: every frame checks, the totals do not.
        let missing = Array(image[..<offsets[2].offset] + image[offsets[3].offset...])
        #expect(Self.decodingFails(missing)?.contains("it counts") == true, "\(Self.decodingFails(missing) ?? "accepted")")
        // Two frames swapped: the changes go back in revision.
        let swapped = Array(image[..<offsets[1].offset] + image[offsets[2].offset..<offsets[3].offset] + image[offsets[1].offset..<offsets[2].offset] + image[offsets[3].offset...])
        #expect(Self.decodingFails(swapped)?.contains("not in revision and key order") == true)
        // A leases frame before the changes.
        let lease = try #require(offsets.firstIndex { $0.kind == 3 })
        let early = Array(image[..<offsets[1].offset] + image[offsets[lease].offset..<offsets[lease + 1].offset] + image[offsets[1].offset..<offsets[lease].offset] + image[offsets[lease + 1].offset...])
        #expect(Self.decodingFails(early)?.contains("out of order after the leases frames") == true, "\(Self.decodingFails(early) ?? "accepted")")
        #expect(Self.decodingFails(image + [0])?.contains("bytes follow the end frame") == true)
        // Sections checked beyond the order of frames.
        let unordered = KVSnapshot(revision: 5, compactedRevision: 0, leaseSequence: 0, changes: [Self.change("b", 3), Self.change("a", 3)], leases: [])
        #expect(Self.decodingFails(unordered.encoded())?.contains("not in revision and key order") == true)
        let future = KVSnapshot(revision: 2, compactedRevision: 0, leaseSequence: 0, changes: [Self.change("a", 3)], leases: [])
        #expect(Self.decodingFails(future.encoded())?.contains("outside 1...2") == true)
        let leases = KVSnapshot(revision: 2, compactedRevision: 0, leaseSequence: 0, changes: [], leases: [Lease(id: 4, ttlMs: 1, expiresAtMs: 1), Lease(id: 4, ttlMs: 1, expiresAtMs: 1)])
        #expect(Self.decodingFails(leases.encoded())?.contains("lease 4 after lease 4") == true)
        let record = ClientSessionRecord(id: 1, lastSeenMs: 0, acknowledgedThrough: 0)
        let sessions = KVSnapshot(
            revision: 2, compactedRevision: 0, leaseSequence: 0, changes: [], leases: [],
            sessions: [ClientSessionState(record: record, results: []), ClientSessionState(record: record, results: [(1, [1])])])
        #expect(Self.decodingFails(sessions.encoded())?.contains("session 1 appears twice") == true)
        var limits = Limits()
        limits.clientSessionsMax = 2
        #expect(Self.decodingFails(Self.sample().encoded(), limits: limits)?.contains("clientSessionsMax") == true)
    }

    @Test("version 1 and 2 snapshots still decode")
    func olderVersions() throws {
        // Version 2: magic, revision, compacted revision, lease sequence, changes, leases,
        // sessions, then a CRC-32C of everything before it.
        var v2 = ByteWriter()
        v2.writeRaw(Array("AKV2".utf8))
        for number: Int64 in [4, 1, 9] { v2.writeVarint(signed: number) }
        v2.writeVarint(UInt64(2))
        v2.write(UInt8(1))
        KVWire.write(KeyValue(key: [0x61], value: [1], createRevision: 2, modRevision: 2, version: 1, lease: 0), into: &v2)
        v2.write(UInt8(0))
        v2.writeBytes([0x61])
        v2.writeVarint(signed: 4)
        v2.writeVarint(UInt64(1))
        KVWire.write(Lease(id: 9, ttlMs: 5, expiresAtMs: 6), into: &v2)
        v2.writeVarint(UInt64(1))
        v2.writeVarint(UInt64(3))
        v2.writeVarint(signed: 100)
        v2.writeVarint(UInt64(0))
        v2.writeVarint(UInt64(1))
        v2.writeVarint(UInt64(1))
        v2.writeBytes([7, 7])
        v2.writeFixed(CRC32C.checksum(v2.bytes))
        let decoded = try KVSnapshot(decoding: v2.bytes)
        #expect(decoded.revision == 4 && decoded.compactedRevision == 1 && decoded.leaseSequence == 9)
        #expect(decoded.changes == [Self.change("a", 2, value: [1]), KVChange(key: [0x61], revision: 4, keyValue: nil)])
        #expect(decoded.leases == [Lease(id: 9, ttlMs: 5, expiresAtMs: 6)])
        #expect(decoded.sessions == [ClientSessionState(record: ClientSessionRecord(id: 3, lastSeenMs: 100, acknowledgedThrough: 0), results: [(1, [7, 7])])])
        // Version 1: current keys only, no compacted revision, no sessions.
        var v1 = ByteWriter()
        v1.writeRaw(Array("AKV1".utf8))
        v1.writeVarint(signed: 2)
        v1.writeVarint(signed: 0)
        KVWire.write([KeyValue(key: [0x62], value: [2], createRevision: 2, modRevision: 2, version: 1, lease: 0)], into: &v1)
        v1.writeVarint(UInt64(0))
        v1.writeFixed(CRC32C.checksum(v1.bytes))
        let old = try KVSnapshot(decoding: v1.bytes)
        #expect(old.compactedRevision == 2 && old.changes.map(\.key) == [[0x62]] && old.sessions.isEmpty)
    }

    /// A version 2 snapshot of `snapshot`, as version 2 wrote them.
    static func version2(_ snapshot: KVSnapshot) -> Bytes {
        var v2 = ByteWriter()
        v2.writeRaw(Array("AKV2".utf8))
        for number in [snapshot.revision, snapshot.compactedRevision, snapshot.leaseSequence] { v2.writeVarint(signed: number) }
        v2.writeVarint(UInt64(snapshot.changes.count))
        for change in snapshot.changes { KVSnapshotImage.write(change, into: &v2) }
        v2.writeVarint(UInt64(snapshot.leases.count))
        for lease in snapshot.leases { KVWire.write(lease, into: &v2) }
        v2.writeVarint(UInt64(snapshot.sessions.count))
        for session in snapshot.sessions {
            KVSnapshotImage.writeRecord(session.record, into: &v2)
            v2.writeVarint(UInt64(session.results.count))
            for result in session.results {
                v2.writeVarint(result.sequence)
                v2.writeBytes(result.result)
            }
        }
        v2.writeFixed(CRC32C.checksum(v2.bytes))
        return v2.bytes
    }

    /// Found by fuzzing (`aspen-fuzz run kv-snapshot-sealed`): a version 2 snapshot with a change
    /// at revision 0 decoded, and the image written from it was refused by every reader, so a
    /// member that installed it could never bring a follower up to date by snapshot.
    @Test("an older snapshot holds only what an image may hold: changes within 1...revision, leases, sessions and results in order")
    func olderVersionsKeepTheImageRules() throws {
        var sample = Self.sample(changes: 20)
        let whole = try KVSnapshot(decoding: Self.version2(sample))
        #expect(whole == sample)
        #expect(try KVSnapshot(decoding: whole.encoded()) == sample)
        var broken: [(String, KVSnapshot)] = []
        var changeAtZero = sample
        changeAtZero.changes.insert(Self.change("a", 0), at: 0)
        broken.append(("a change at revision 0, outside 1...", changeAtZero))
        var changeAhead = sample
        changeAhead.changes.append(Self.change("z", sample.revision + 1))
        broken.append(("a change at revision \(sample.revision + 1), outside 1...\(sample.revision)", changeAhead))
        var leasesBackwards = sample
        leasesBackwards.leases.reverse()
        broken.append(("lease 3 after lease 12", leasesBackwards))
        var sessionsBackwards = sample
        sessionsBackwards.sessions.reverse()
        broken.append(("session 9 after session", sessionsBackwards))
        sample.sessions[1].results.swapAt(0, 1)
        broken.append(("result 1 after result 2", sample))
        for (reason, snapshot) in broken {
            let failure = Self.decodingFails(Self.version2(snapshot))
            #expect(failure?.contains(reason) == true, "\(reason): \(failure ?? "decoded")")
        }
    }

    /// Seeded: a failure prints the seed, and the same seed replays it.
    @Test("random bytes, truncations and single-byte flips of a valid image are refused with a DecodingError", arguments: [UInt64(0x5EED_1A6E)])
    func fuzz(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let image = try Self.image(Self.sample(changes: 120), frameBytes: 400)
        #expect(try KVSnapshot(decoding: image) == Self.sample(changes: 120))
        var limits = Limits()
        // Small enough that a flipped length is often within it (so the payload is read).
        limits.rpcMessageBytesMax = 64 * 1024
        func refused(_ bytes: Bytes, _ what: String) {
            do {
                _ = try KVSnapshot(decoding: bytes, limits: limits)
                Issue.record("seed \(seed): \(what) was accepted")
            } catch {
                // A DecodingError is the only error `KVSnapshot(decoding:)` can throw.
            }
        }
        for round in 0..<1_000 {
            let length = Int(random.next(in: 0...2_000))
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if round % 2 == 0 { bytes = KVSnapshotImage.magic + bytes }
            if round % 4 == 0, bytes.count > 9 {
                // A frame header that claims a plausible kind and length.
                bytes[4] = UInt8(1 + random.next() % 5)
                bytes[7] = 0
                bytes[8] = 0
            }
            refused(bytes, "random bytes (round \(round))")
        }
        for _ in 0..<1_500 {
            let length = Int(random.next(in: 0...UInt64(image.count - 1)))
            refused(Array(image.prefix(length)), "the image cut to \(length) bytes")
        }
        for _ in 0..<2_500 {
            var flipped = image
            let position = Int(random.next(in: 0...UInt64(image.count - 1)))
            flipped[position] ^= UInt8(1 + random.next() % 255)
            refused(flipped, "the image with byte \(position) changed")
        }
    }
}
