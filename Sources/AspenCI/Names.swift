import AspenCore

/// The characters each kind of name may hold. Names end up in job names, environment variables,
/// scheduler keys and (matrix values, through `${matrix.NAME}`) shell scripts, so each kind is
/// held to a small safe set rather than escaped later.
enum Names {
    /// `build`, `unit-tests`, `lint.swift`: a letter or digit, then letters, digits, `_ . -`.
    static func isJobName(_ name: String) -> Bool {
        matches(name, first: isAlphanumeric) { isAlphanumeric($0) || "_.-".utf8.contains($0) }
    }

    /// A matrix axis: a letter or `_`, then letters, digits, `_ -`.
    static func isAxisName(_ name: String) -> Bool {
        matches(name, first: { isLetter($0) || $0 == UInt8(ascii: "_") }) { isAlphanumeric($0) || "_-".utf8.contains($0) }
    }

    /// An environment variable or secret: a letter or `_`, then letters, digits, `_`.
    static func isEnvironmentName(_ name: String) -> Bool {
        matches(name, first: { isLetter($0) || $0 == UInt8(ascii: "_") }) { isAlphanumeric($0) || $0 == UInt8(ascii: "_") }
    }

    /// A worker tag: a letter or digit, then letters, digits, `_ . : = / -`.
    static func isTagName(_ name: String) -> Bool {
        matches(name, first: isAlphanumeric) { isAlphanumeric($0) || "_.:=/-".utf8.contains($0) }
    }

    /// A matrix value (`debug`, `5.10`, `ubuntu-22.04`): letters, digits, `_ . + : / @ -`,
    /// nothing a shell would read as syntax.
    static func isMatrixValue(_ value: String) -> Bool {
        matches(value, first: { isAlphanumeric($0) || "_.+:/@-".utf8.contains($0) }) { isAlphanumeric($0) || "_.+:/@-".utf8.contains($0) }
    }

    /// A path inside the checkout: not empty, not absolute, no empty or `..` segment, no
    /// control character.
    static func isRelativePath(_ path: String) -> Bool {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            return false
        }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != ".." }
    }

    static func matches(_ name: String, first: (UInt8) -> Bool, rest: (UInt8) -> Bool) -> Bool {
        guard let head = name.utf8.first, first(head) else { return false }
        return name.utf8.dropFirst().allSatisfy(rest)
    }

    static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }
    static func isAlphanumeric(_ byte: UInt8) -> Bool { isLetter(byte) || (0x30...0x39).contains(byte) }
}
