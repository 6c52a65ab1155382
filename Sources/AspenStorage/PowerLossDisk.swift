import AspenCore
import Synchronization

/// A disk with a page cache under the segmented log, that loses power when told to: for the
/// power-loss tests and the simulator's nodes, never for a running node.
///
/// Writes land in the cache (what reads see) and reach the disk only when the file is
/// synchronized; names created or removed reach it only when their directory is. At a power
/// loss (`powerCycle`) each write not yet synchronized reaches the disk whole, not at all, or
/// torn after a random byte, independently of the others (so they may land out of order), and
/// each pending name change lands or not. Then the cache is what the disk holds.
///
/// Deterministic: what lands is drawn from the generator handed to `powerCycle`, in an order
/// that does not depend on hashing, so one seed replays one power loss exactly.
package final class PowerLossDisk: LogFileSystem {
    /// What every call answers once the power is off.
    package struct PowerLost: Error {}

    /// What became of the changes that were pending when the power went.
    package struct Landing: Sendable, Equatable, CustomStringConvertible {
        package var writesWhole = 0
        /// Writes of which only a first part reached the disk.
        package var writesTorn = 0
        /// Writes of which no byte reached the disk.
        package var writesDropped = 0
        /// Cuts of a file and names created or removed in a directory that did not land.
        package var otherChangesLost = 0

        /// Whether bytes written but not synchronized were lost, in whole or in part.
        package var lostWrittenBytes: Bool { writesTorn + writesDropped > 0 }

        package init() {}

        package var description: String {
            "writes \(writesWhole) whole, \(writesTorn) torn, \(writesDropped) lost; \(otherChangesLost) other changes lost"
        }
    }

    private enum Change {
        case write(offset: Int, bytes: [UInt8])
        case truncate(Int)
    }

    private struct Inode {
        var durable: [UInt8] = []
        var cached: [UInt8] = []
        var pending: [Change] = []
    }

    private enum NameChange {
        case link(String, inode: Int)
        case unlink(String)
    }

    private struct Model {
        var inodes: [Int: Inode] = [:]
        var nextInode = 1
        var names: [String: Int] = [:]
        var durableNames: [String: Int] = [:]
        var pendingNames: [(directory: String, change: NameChange)] = []
        var descriptors: [Int32: Int] = [:]
        var nextDescriptor: Int32 = 3
        /// Calls left before the power goes (nil: it stays on).
        var callsBeforePowerLoss: Int?
        /// Synchronizations left before the power goes (nil: it stays on).
        var synchronizationsBeforePowerLoss: Int?
        var isOff = false
    }

    private let model = Mutex(Model())

    package init() {}

    /// The power goes instead of the call after the next `calls` ones.
    package func losePower(afterCalls calls: Int) {
        model.withLock { $0.callsBeforePowerLoss = calls }
    }

    /// The power goes instead of the synchronization (of a file or a directory, or a cut)
    /// after the next `count` ones: whatever was written since the last one is pending then.
    package func losePower(atSynchronization count: Int) {
        model.withLock { $0.synchronizationsBeforePowerLoss = count }
    }

    /// Power comes back: what reached the disk is all there is. Returns what became of the
    /// changes that were pending.
    @discardableResult
    package func powerCycle(_ random: inout SplitMix64) -> Landing {
        model.withLock { model in
            var landing = Landing()
            // In inode order: a dictionary's order changes from one process to the next.
            for number in model.inodes.keys.sorted() {
                var inode = model.inodes[number]!
                for change in inode.pending { Self.land(change, on: &inode.durable, random: &random, landing: &landing) }
                inode.pending = []
                inode.cached = inode.durable
                model.inodes[number] = inode
            }
            for (_, change) in model.pendingNames {
                guard random.next(in: 0...1) == 1 else {
                    landing.otherChangesLost += 1
                    continue
                }
                switch change {
                case .link(let path, let inode): model.durableNames[path] = inode
                case .unlink(let path): model.durableNames[path] = nil
                }
            }
            model.pendingNames = []
            model.names = model.durableNames
            model.descriptors = [:]
            let named = Set(model.names.values)
            model.inodes = model.inodes.filter { named.contains($0.key) }
            model.callsBeforePowerLoss = nil
            model.synchronizationsBeforePowerLoss = nil
            model.isOff = false
            return landing
        }
    }

    private static func land(_ change: Change, on bytes: inout [UInt8], random: inout SplitMix64, landing: inout Landing) {
        switch change {
        case .truncate(let size):
            if random.next(in: 0...1) == 1 { resize(&bytes, to: size) } else { landing.otherChangesLost += 1 }
        case .write(let offset, let written):
            let landed: Int
            switch random.next(in: 0...2) {
            case 0: landed = written.count
            case 1: landed = 0
            default: landed = Int(random.next(in: 0...UInt64(written.count)))
            }
            put(written.prefix(landed), on: &bytes, at: offset)
            if landed == written.count {
                landing.writesWhole += 1
            } else if landed == 0 {
                landing.writesDropped += 1
            } else {
                landing.writesTorn += 1
            }
        }
    }

    private static func put(_ written: ArraySlice<UInt8>, on bytes: inout [UInt8], at offset: Int) {
        guard !written.isEmpty else { return }
        if bytes.count < offset + written.count { resize(&bytes, to: offset + written.count) }
        bytes.replaceSubrange(offset..<(offset + written.count), with: written)
    }

    private static func resize(_ bytes: inout [UInt8], to size: Int) {
        if size < bytes.count { bytes.removeLast(bytes.count - size) } else { bytes += [UInt8](repeating: 0, count: size - bytes.count) }
    }

    /// Every file as it reads now.
    package func files() -> [String: [UInt8]] {
        model.withLock { model in model.names.mapValues { model.inodes[$0]?.cached ?? [] } }
    }

    /// Damages a byte at rest (the power is on and nothing is pending).
    package func flipBit(in path: String, at offset: Int, bit: Int) {
        model.withLock { model in
            guard let number = model.names[path] else { return }
            model.inodes[number]!.durable[offset] ^= UInt8(1 << bit)
            model.inodes[number]!.cached[offset] ^= UInt8(1 << bit)
        }
    }

    /// Counts a call toward the power loss, and refuses it once the power is off.
    private func call<T>(_ body: (inout Model) throws -> T) throws -> T {
        try model.withLock { model in
            if let calls = model.callsBeforePowerLoss {
                if calls == 0 { model.isOff = true }
                model.callsBeforePowerLoss = calls - 1
            }
            guard !model.isOff else { throw PowerLost() }
            return try body(&model)
        }
    }

    /// A call that makes something durable: counted toward the power loss at a synchronization too.
    private func synchronizing(_ body: (inout Model) throws -> Void) throws {
        try call { model in
            if let count = model.synchronizationsBeforePowerLoss {
                model.synchronizationsBeforePowerLoss = count - 1
                if count == 0 {
                    model.isOff = true
                    throw PowerLost()
                }
            }
            try body(&model)
        }
    }

    private static func inode(_ file: LogFile, in model: Model) throws -> Int {
        guard let number = model.descriptors[file.descriptor] else { throw StorageError.io(file: file.path, detail: "bad descriptor") }
        return number
    }

    private static func directory(of path: String) -> String {
        String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
    }

    // MARK: LogFileSystem

    package func createDirectory(_ path: String) throws {
        try call { _ in }
    }

    package func names(in directory: String) throws -> [String] {
        try call { model in
            model.names.keys.filter { Self.directory(of: $0) == directory }.map { String($0.dropFirst(directory.count + 1)) }
        }
    }

    package func contents(of path: String) throws -> [UInt8] {
        try call { model in
            guard let number = model.names[path] else { throw StorageError.io(file: path, detail: "no such file") }
            return model.inodes[number]!.cached
        }
    }

    package func open(_ path: String, create: Bool) throws -> LogFile {
        try call { model in
            var number = model.names[path]
            if create, let existing = number {
                model.inodes[existing]!.pending.append(.truncate(0))
                model.inodes[existing]!.cached = []
            } else if create {
                number = model.nextInode
                model.nextInode += 1
                model.inodes[number!] = Inode()
                model.names[path] = number
                model.pendingNames.append((Self.directory(of: path), .link(path, inode: number!)))
            }
            guard let number else { throw StorageError.io(file: path, detail: "no such file") }
            let descriptor = model.nextDescriptor
            model.nextDescriptor += 1
            model.descriptors[descriptor] = number
            return LogFile(path: path, descriptor: descriptor)
        }
    }

    package func write(_ bytes: UnsafeRawBufferPointer, to file: LogFile, at offset: Int) throws {
        try call { model in
            let number = try Self.inode(file, in: model)
            model.inodes[number]!.pending.append(.write(offset: offset, bytes: Array(bytes)))
            Self.put(Array(bytes)[...], on: &model.inodes[number]!.cached, at: offset)
        }
    }

    package func synchronize(_ file: LogFile) throws {
        try synchronizing { model in
            let number = try Self.inode(file, in: model)
            var inode = model.inodes[number]!
            inode.durable = inode.cached
            inode.pending = []
            model.inodes[number] = inode
        }
    }

    package func truncate(_ file: LogFile, to size: Int) throws {
        try synchronizing { model in
            let number = try Self.inode(file, in: model)
            Self.resize(&model.inodes[number]!.cached, to: size)
            model.inodes[number]!.durable = model.inodes[number]!.cached
            model.inodes[number]!.pending = []
        }
    }

    package func close(_ file: LogFile) {
        model.withLock { _ = $0.descriptors.removeValue(forKey: file.descriptor) }
    }

    package func remove(_ path: String) throws {
        try call { model in
            model.names[path] = nil
            model.pendingNames.append((Self.directory(of: path), .unlink(path)))
        }
    }

    package func synchronizeDirectory(_ path: String) throws {
        try synchronizing { model in
            for (directory, change) in model.pendingNames where directory == path {
                switch change {
                case .link(let name, let inode): model.durableNames[name] = inode
                case .unlink(let name): model.durableNames[name] = nil
                }
            }
            model.pendingNames.removeAll { $0.directory == path }
        }
    }
}
