#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file, mapped shared, where a worker writes each input before running it and counts its
/// executions: when the worker dies (a trap, a stack overflow, a kill after a hang) the
/// supervisor reads the input that did it from the file. The worker's writes are to memory
/// only, so keeping the input costs one copy.
///
/// Layout: executions (UInt64), input length (UInt64), then up to `inputBytesMax` input bytes.
final class InputRecord {
    static let headerBytes = 16
    private let base: UnsafeMutableRawPointer
    private let size: Int
    let inputBytesMax: Int

    /// Maps `path` (created at the right size) for writing.
    init(path: String, inputBytesMax: Int) throws(FuzzToolError) {
        self.inputBytesMax = inputBytesMax
        size = Self.headerBytes + inputBytesMax
        let descriptor = open(path, O_RDWR | O_CREAT, 0o600)
        guard descriptor >= 0 else { throw .system("open \(path)", errno) }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw .system("ftruncate \(path)", errno) }
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED else {
            throw .system("mmap \(path)", errno)
        }
        base = mapped
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.headerBytes)
    }

    deinit { munmap(base, size) }

    /// Keeps `input` (the length last, so that a reader never sees a length with old bytes).
    func keep(_ input: [UInt8]) {
        let count = min(input.count, inputBytesMax)
        input.withUnsafeBytes { (base + Self.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: count) }
        base.storeBytes(of: UInt64(count), toByteOffset: 8, as: UInt64.self)
        base.storeBytes(of: base.load(fromByteOffset: 0, as: UInt64.self) + 1, toByteOffset: 0, as: UInt64.self)
    }

    /// What a worker left in the file at `path`: its executions and its last input.
    static func read(path: String) -> (executions: UInt64, input: [UInt8])? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var header = [UInt8](repeating: 0, count: headerBytes)
        guard fread(&header, 1, headerBytes, file) == headerBytes else { return nil }
        let executions = header.withUnsafeBytes { $0.load(fromByteOffset: 0, as: UInt64.self) }
        let length = Int(header.withUnsafeBytes { $0.load(fromByteOffset: 8, as: UInt64.self) })
        var input = [UInt8](repeating: 0, count: length)
        guard length == 0 || fread(&input, 1, length, file) == length else { return nil }
        return (executions, input)
    }
}

enum FuzzToolError: Error, CustomStringConvertible {
    case system(String, Int32)
    case usage(String)

    var description: String {
        switch self {
        case .system(let what, let code): return "\(what) failed: \(String(cString: strerror(code)))"
        case .usage(let what): return what
        }
    }
}
