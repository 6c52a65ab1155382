import Foundation

extension PKIRole {
    /// Vault's name check (`ValidateNames`): the first of `names` (DNS names, or emails, whose
    /// domain part is checked) that this role does not allow, or nil when it allows them all.
    ///
    /// In order: a wildcard must be allowed and well formed (one `*`, in the leftmost label);
    /// with `enforce_hostnames` the name must be a hostname; `allow_any_name` then allows it;
    /// otherwise it must be `localhost`/`localdomain` (with `allow_localhost`), or match an
    /// allowed domain — exactly (`allow_bare_domains`), as a name under it such as
    /// `www.example.com` or `*.example.com` (`allow_subdomains`), or as a glob
    /// (`allow_glob_domains`).
    public func firstDisallowedName(_ names: [String]) -> String? {
        names.first { !allows($0) }
    }

    func allows(_ name: String) -> Bool {
        var reduced = Substring(name)
        var emailDomain = Substring(name)
        var isEmail = false
        if name.contains("@") {
            let parts = name.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2 else { return false }
            reduced = parts[1]
            emailDomain = parts[1]
            isEmail = true
        }
        var wildcardLabel: Substring = ""
        let isWildcard = reduced.contains("*")
        if isWildcard {
            guard allowWildcardCertificates, !isEmail, reduced.filter({ $0 == "*" }).count == 1 else { return false }
            if let dot = reduced.firstIndex(of: ".") {
                wildcardLabel = reduced[..<dot]
                reduced = reduced[reduced.index(after: dot)...]
                guard !reduced.contains("*") else { return false }
            } else {
                wildcardLabel = reduced
                reduced = ""
            }
        }
        if enforceHostnames && !reduced.isEmpty {
            let candidate = isWildcard ? "\(wildcardLabel).\(reduced)" : String(reduced)
            guard PKIHostname.isWildHostname(candidate) else { return false }
        }
        if allowAnyName { return true }
        if allowLocalhost && allowsLocal(reduced, isWildcard: isWildcard) { return true }
        return allowedDomains.contains { domain in
            matches(domain: domain, name: name, reduced: reduced, emailDomain: isEmail ? emailDomain : nil, isWildcard: isWildcard)
        }
    }

    private func allowsLocal(_ reduced: Substring, isWildcard: Bool) -> Bool {
        for local in ["localhost", "localdomain"] {
            if reduced == local { return true }
            if allowSubdomains && (reduced.hasSuffix("." + local) || (isWildcard && reduced == local)) { return true }
        }
        return false
    }

    private func matches(domain: String, name: String, reduced: Substring, emailDomain: Substring?, isWildcard: Bool) -> Bool {
        if domain.isEmpty { return false }
        if allowBareDomains
            && (name.lowercased() == domain.lowercased() || emailDomain.map { $0.lowercased() == domain.lowercased() } == true)
        {
            return true
        }
        if allowSubdomains && (reduced.hasSuffix("." + domain) || (isWildcard && reduced.lowercased() == domain.lowercased())) {
            return true
        }
        return allowGlobDomains && domain.contains("*") && PKIHostname.glob(domain.lowercased(), matches: name.lowercased())
    }
}

/// Hostname syntax as Vault checks it (its `wildHostnameRegex`), and its glob.
enum PKIHostname {
    /// A hostname of letters, digits and inner hyphens, with an optional trailing dot, whose
    /// leftmost label may hold one `*` (`*`, `*x`, `x*`, `x*y`) when more labels follow. Names
    /// must be ASCII (an internationalized name in its `xn--` form); at most 253 bytes.
    static func isWildHostname(_ name: String) -> Bool {
        var text = Substring(name)
        if text.hasSuffix(".") { text.removeLast() }
        guard !text.isEmpty, text.utf8.count <= 253, text.allSatisfy(\.isASCII) else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        for (index, label) in labels.enumerated() {
            if index == 0 && label.contains("*") && labels.count > 1 {
                guard label.count <= 63 else { return false }
                let sides = label.split(separator: "*", maxSplits: 1, omittingEmptySubsequences: false)
                guard sides.allSatisfy({ $0.isEmpty || isLabel($0) }) else { return false }
            } else if !isLabel(label) {
                return false
            }
        }
        return true
    }

    static func isLabel(_ label: Substring) -> Bool {
        guard let first = label.first, let last = label.last, label.count <= 63 else { return false }
        func alphanumeric(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
        return alphanumeric(first) && alphanumeric(last) && label.allSatisfy { alphanumeric($0) || $0 == "-" }
    }

    /// The glob Vault uses (`ryanuber/go-glob`): `*` matches any run of characters, dots included.
    static func glob(_ pattern: String, matches subject: String) -> Bool {
        if pattern.isEmpty { return subject.isEmpty }
        if pattern == "*" { return true }
        let parts = pattern.components(separatedBy: "*")
        if parts.count == 1 { return subject == pattern }
        var rest = Substring(subject)
        for (index, part) in parts.dropLast().enumerated() {
            guard let range = part.isEmpty ? rest.startIndex..<rest.startIndex : rest.range(of: part) else { return false }
            if index == 0 && !pattern.hasPrefix("*") && range.lowerBound != rest.startIndex { return false }
            rest = rest[range.upperBound...]
        }
        return pattern.hasSuffix("*") || rest.hasSuffix(parts[parts.count - 1])
    }
}
