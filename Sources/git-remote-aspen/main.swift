// git runs `git-remote-aspen REMOTE URL` for aspen:// URLs. The helper itself is a command of
// `aspen` (it needs the client, the cluster options and the credential); this program only
// finds that `aspen` — beside itself first, then on PATH — and becomes it.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func fail(_ message: String) -> Never {
    let bytes = Array(("fatal: git-remote-aspen: " + message + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(128)
}

func executable(_ path: String) -> Bool { access(path, X_OK) == 0 }

func ownDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path: String
    if count > 0 {
        path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    } else {
        path = CommandLine.arguments[0]
    }
    guard let slash = path.lastIndex(of: "/") else { return nil }
    return String(path[..<slash])
}

var candidates: [String] = []
if let directory = ownDirectory() { candidates.append(directory + "/aspen") }
if let path = getenv("PATH") {
    for directory in String(cString: path).split(separator: ":") where !directory.isEmpty { candidates.append(directory + "/aspen") }
}
guard let aspen = candidates.first(where: executable) else {
    fail("cannot find the aspen command beside it or on PATH")
}
let arguments = [aspen, "git-remote-helper"] + CommandLine.arguments.dropFirst()
var pointers = arguments.map { strdup($0) } + [nil]
execv(aspen, &pointers)
fail("cannot run \(aspen): \(String(cString: strerror(errno)))")
