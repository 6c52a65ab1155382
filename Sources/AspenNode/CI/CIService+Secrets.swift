import AspenCI
import AspenCore
import AspenSecrets
import Foundation

// CI secrets live in the secrets engine: a kv-v2 mount per repository, `ci/REPO/.secrets-N`
// where N is the repository's creation revision (a repository deleted and made again under the
// same name does not inherit its predecessor's secrets; a repository segment never starts with
// '.', so no repository's mount is inside another's), one secret per name holding
// `{"value": …}`, sealed at rest like every secret.
extension CIService {
    /// The mount of `repo`'s secrets (the repository must exist).
    func secretsMount(_ repo: String) async throws -> String { "ci/\(repo)/.secrets-\(try await forge.state(repo).createRevision)" }

    /// A secret's name: an environment variable's (`[A-Za-z_][A-Za-z0-9_]*`), within `ciNameBytesMax`.
    func validate(secretName name: String) throws {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= limits.ciNameBytesMax else {
            throw CIError.badInput("a secret name must have 1 to \(limits.ciNameBytesMax) bytes (ciNameBytesMax)")
        }
        func letter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x5F }
        guard letter(first), bytes.allSatisfy({ letter($0) || (0x30...0x39).contains($0) }) else {
            throw CIError.badInput("secret name '\(name)' is not an environment variable name (letters, digits and '_', not starting with a digit)")
        }
    }

    /// Runs a request against the secrets engine as the node itself (the caller was authorized
    /// for the repository's CI secrets already).
    func vault(_ method: String, _ path: String, body: [String: Any]? = nil) async -> VaultResponse {
        let caller = SecretsService.Caller(authorize: { _ in }, credential: nil, credentialRequired: false)
        return await secrets.handle(VaultRequest(method: method, path: path, body: body.map { SecretsJSON.encode($0) } ?? []), caller: caller)
    }

    func failure(_ response: VaultResponse, _ what: String) -> CIError {
        let message = "\(what): \(response.errors.joined(separator: "; "))"
        switch response.status {
        case 404: return .notFound(message)
        case 400..<500: return .badInput(message)
        default: return .unavailable(message)
        }
    }

    /// Stores the secret; returns the repository's secret names after it.
    func setSecret(_ repo: String, name: String, value: [UInt8]) async throws -> [String] {
        try validate(secretName: name)
        guard value.count <= limits.ciSecretBytesMax else {
            throw CIError.badInput("a secret of \(value.count) bytes exceeds ciSecretBytesMax (\(limits.ciSecretBytesMax))")
        }
        guard let text = String(validating: value, as: UTF8.self), !text.contains("\0") else {
            throw CIError.badInput("a secret is text for an environment variable: UTF-8 without NUL bytes")
        }
        let mount = try await secretsMount(repo)
        let existing = try await secretNames(repo, in: mount)
        if !existing.contains(name), existing.count >= limits.ciSecretsPerRepoMax {
            throw CIError.badInput("\(repo) holds \(existing.count) CI secrets, at ciSecretsPerRepoMax (\(limits.ciSecretsPerRepoMax))")
        }
        var written = await vault("POST", "\(mount)/data/\(name)", body: ["data": ["value": text]])
        if written.status == 404 {
            let made = await vault("POST", "sys/mounts/\(mount)", body: ["type": "kv-v2", "description": "CI secrets of \(repo)"])
            guard made.status == 204 || made.errors.contains(where: { $0.contains("already in use at \(mount)/") }) else {
                throw failure(made, "the secrets mount \(mount) could not be made")
            }
            written = await vault("POST", "\(mount)/data/\(name)", body: ["data": ["value": text]])
        }
        guard written.status == 200 || written.status == 204 else { throw failure(written, "secret \(name) was not stored") }
        return existing.contains(name) ? existing : (existing + [name]).sorted()
    }

    func secretNames(_ repo: String) async throws -> [String] { try await secretNames(repo, in: try await secretsMount(repo)) }

    func secretNames(_ repo: String, in mount: String) async throws -> [String] {
        let listed = await vault("LIST", "\(mount)/metadata")
        if listed.status == 404 { return [] }
        guard listed.status == 200, let object = try? JSONSerialization.jsonObject(with: Data(listed.body)) as? [String: Any],
            let data = object["data"] as? [String: Any], let keys = data["keys"] as? [String]
        else { throw failure(listed, "the secrets of \(repo) could not be listed") }
        return keys.sorted()
    }

    /// Deletes the secret; returns the repository's secret names after it.
    func deleteSecret(_ repo: String, name: String) async throws -> [String] {
        try validate(secretName: name)
        let mount = try await secretsMount(repo)
        let deleted = await vault("DELETE", "\(mount)/metadata/\(name)")
        guard deleted.status == 204 || deleted.status == 200 || deleted.status == 404 else { throw failure(deleted, "secret \(name) was not deleted") }
        return try await secretNames(repo, in: mount)
    }

    /// The values of `names` for a job of `repo`; a name not set fails the job with what to do.
    func secretValues(_ repo: String, names: [String]) async throws -> [String: String] {
        var values: [String: String] = [:]
        let mount = try await secretsMount(repo)
        for name in names {
            let read = await vault("GET", "\(mount)/data/\(name)")
            if read.status == 404 { throw CIError.notFound("secret \(name) is not set for \(repo) (aspen ci secret set \(repo) \(name))") }
            guard read.status == 200, let object = try? JSONSerialization.jsonObject(with: Data(read.body)) as? [String: Any],
                let outer = object["data"] as? [String: Any], let data = outer["data"] as? [String: Any], let value = data["value"] as? String
            else { throw failure(read, "secret \(name) could not be read") }
            values[name] = value
        }
        return values
    }
}
