import AspenFuzz

#if ASPEN_LIBFUZZER
// Built for libFuzzer (see docs/fuzzing.md): libFuzzer's own main drives the target named by
// ASPEN_FUZZ_TARGET, with coverage feedback; a property failure traps, which libFuzzer reports
// and saves as its crash-… file.
#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) private var libFuzzerTarget: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func libFuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let name = getenv("ASPEN_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget.named(name) else {
        print("set ASPEN_FUZZ_TARGET to one of: \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
        exit(2)
    }
    libFuzzerTarget = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func libFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    if case .failed(let message) = libFuzzerTarget!.run(input) { fatalError("\(libFuzzerTarget!.name): \(message)") }
    return 0
}
#else
@main
enum Entry {
    static func main() { AspenFuzzCommand.main() }
}
#endif
