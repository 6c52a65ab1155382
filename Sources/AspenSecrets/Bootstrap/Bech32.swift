/// Bech32 (BIP-173, the original checksum constant 1, not bech32m), as age spells its keys:
/// `age1…` recipients and `AGE-SECRET-KEY-1…` identities. Unlike BIP-173, age sets no 90-character
/// limit, so the bound here is `lengthMax`, long enough for age's longest (post-quantum) recipients.
/// A string is all lowercase or all uppercase; the checksum is always over the lowercase form.
public enum Bech32 {
    /// Longest string `decode` reads (age's post-quantum recipients run to about 1,960 characters).
    public static let lengthMax = 4096

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case tooLong(length: Int, limit: Int)
        case mixedCase
        case invalidCharacter(String)
        case missingSeparator
        case emptyHumanReadablePart
        case tooShort
        case badChecksum
        case badPadding

        public var description: String {
            switch self {
            case .tooLong(let length, let limit): "a Bech32 string of \(length) characters is longer than the limit of \(limit)"
            case .mixedCase: "a Bech32 string mixes uppercase and lowercase letters"
            case .invalidCharacter(let what): "a Bech32 string has a character outside its alphabet (\(what))"
            case .missingSeparator: "a Bech32 string has no '1' separating its prefix from its data"
            case .emptyHumanReadablePart: "a Bech32 string has an empty prefix"
            case .tooShort: "a Bech32 string is shorter than its 6-character checksum"
            case .badChecksum: "a Bech32 string's checksum does not match (a typo, or a truncated key)"
            case .badPadding: "a Bech32 string's data does not end on a whole byte"
            }
        }
    }

    static let alphabet = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)
    static let generators: [UInt32] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3]

    /// The prefix (lowercased) and the bytes of a Bech32 string.
    public static func decode(_ text: String) throws(Failure) -> (humanReadablePart: String, data: [UInt8]) {
        let characters = Array(text.utf8)
        guard characters.count <= lengthMax else { throw .tooLong(length: characters.count, limit: lengthMax) }
        var hasLower = false
        var hasUpper = false
        for character in characters {
            guard character >= 33, character <= 126 else { throw .invalidCharacter("byte \(character)") }
            if character >= UInt8(ascii: "a") && character <= UInt8(ascii: "z") { hasLower = true }
            if character >= UInt8(ascii: "A") && character <= UInt8(ascii: "Z") { hasUpper = true }
        }
        guard !(hasLower && hasUpper) else { throw .mixedCase }
        let lower = characters.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }
        guard let separator = lower.lastIndex(of: UInt8(ascii: "1")) else { throw .missingSeparator }
        guard separator > 0 else { throw .emptyHumanReadablePart }
        guard lower.count - separator - 1 >= 6 else { throw .tooShort }
        let prefix = Array(lower[..<separator])
        var values: [UInt8] = []
        values.reserveCapacity(lower.count - separator - 1)
        for character in lower[(separator + 1)...] {
            guard let value = alphabet.firstIndex(of: character) else {
                throw .invalidCharacter("'\(Character(Unicode.Scalar(character)))'")
            }
            values.append(UInt8(value))
        }
        guard polymod(expand(prefix) + values) == 1 else { throw .badChecksum }
        let data = try regroup(values.dropLast(6), from: 5, to: 8, pad: false)
        return (String(decoding: prefix, as: UTF8.self), data)
    }

    /// The lowercase Bech32 string of `data` under `humanReadablePart` (callers uppercase it where
    /// the format wants, as age does for secret keys).
    public static func encode(humanReadablePart: String, data: [UInt8]) throws(Failure) -> String {
        let prefix = Array(humanReadablePart.lowercased().utf8)
        guard !prefix.isEmpty else { throw .emptyHumanReadablePart }
        for character in prefix where character < 33 || character > 126 {
            throw .invalidCharacter("byte \(character)")
        }
        let values = try regroup(data[...], from: 8, to: 5, pad: true)
        let checksumValue = polymod(expand(prefix) + values + [0, 0, 0, 0, 0, 0]) ^ 1
        let checksum = (0..<6).map { UInt8((checksumValue >> (5 * (5 - UInt32($0)))) & 31) }
        let length = prefix.count + 1 + values.count + 6
        guard length <= lengthMax else { throw .tooLong(length: length, limit: lengthMax) }
        return String(decoding: prefix + [UInt8(ascii: "1")] + (values + checksum).map { alphabet[Int($0)] }, as: UTF8.self)
    }

    static func polymod(_ values: [UInt8]) -> UInt32 {
        var checksum: UInt32 = 1
        for value in values {
            let top = checksum >> 25
            checksum = ((checksum & 0x1ff_ffff) << 5) ^ UInt32(value)
            for bit in 0..<5 where (top >> UInt32(bit)) & 1 == 1 { checksum ^= generators[bit] }
        }
        return checksum
    }

    static func expand(_ prefix: [UInt8]) -> [UInt8] {
        prefix.map { $0 >> 5 } + [0] + prefix.map { $0 & 31 }
    }

    /// Regroups bits: 8→5 pads the last group with zeros; 5→8 refuses more than 4 leftover bits
    /// or leftover bits that are not zero (so each byte string has exactly one encoding).
    static func regroup(_ values: ArraySlice<UInt8>, from: Int, to: Int, pad: Bool) throws(Failure) -> [UInt8] {
        var accumulator: UInt32 = 0
        var bits = 0
        var result: [UInt8] = []
        result.reserveCapacity(values.count * from / to + 1)
        let mask: UInt32 = (1 << UInt32(to)) - 1
        for value in values {
            accumulator = (accumulator << UInt32(from)) | UInt32(value)
            bits += from
            while bits >= to {
                bits -= to
                result.append(UInt8((accumulator >> UInt32(bits)) & mask))
            }
            accumulator &= (1 << UInt32(bits)) - 1
        }
        if pad {
            if bits > 0 { result.append(UInt8((accumulator << UInt32(to - bits)) & mask)) }
        } else if bits >= from || accumulator != 0 {
            throw .badPadding
        }
        return result
    }
}
