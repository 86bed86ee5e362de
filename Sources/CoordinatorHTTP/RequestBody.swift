import Coordinator
import Foundation
import Hummingbird

/// A JSON object from a request body, read strictly: unknown keys, wrong types and missing
/// required fields are 400 problems that name the field.
struct RequestObject {
    let fields: [String: Any]

    /// Reads the body (at most `maxBytes`, else 413) and parses it as a JSON object whose keys are
    /// all in `allowed`.
    static func read(_ request: Request, maxBytes: Int, allowed: Set<String>) async throws -> RequestObject {
        let data = try await readData(request, maxBytes: maxBytes)
        return try parse(data, allowed: allowed)
    }

    static func readData(_ request: Request, maxBytes: Int) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBytes {
            throw Problem(status: .contentTooLarge, code: "body-too-large", title: "Body too large", detail: "request bodies are limited to \(maxBytes) bytes; this one declares \(length)")
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maxBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw Problem(status: .contentTooLarge, code: "body-too-large", title: "Body too large", detail: "request bodies are limited to \(maxBytes) bytes")
        }
        return Data(buffer.readableBytesView)
    }

    static func parse(_ data: Data, allowed: Set<String>) throws -> RequestObject {
        guard !data.isEmpty else { throw invalid("the request body is empty; a JSON object is required") }
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw invalid("the request body is not valid JSON")
        }
        guard let object = value as? [String: Any] else { throw invalid("the request body must be a JSON object") }
        for key in object.keys where !allowed.contains(key) {
            throw invalid("unknown field \"\(key)\" (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        return RequestObject(fields: object)
    }

    static func invalid(_ detail: String) -> Problem {
        Problem(status: .badRequest, code: "invalid-request", title: "Invalid request", detail: detail)
    }

    func string(_ key: String, maxLength: Int = 1024) throws -> String? {
        guard let value = fields[key], !(value is NSNull) else { return nil }
        guard let text = value as? String else { throw Self.invalid("\"\(key)\" must be a string") }
        guard !text.isEmpty else { throw Self.invalid("\"\(key)\" must not be empty") }
        guard text.utf8.count <= maxLength else { throw Self.invalid("\"\(key)\" must be at most \(maxLength) bytes") }
        return text
    }

    func requiredString(_ key: String, maxLength: Int = 1024) throws -> String {
        guard let text = try string(key, maxLength: maxLength) else { throw Self.invalid("\"\(key)\" is required") }
        return text
    }

    func integer(_ key: String) throws -> Int64? {
        guard let value = fields[key], !(value is NSNull) else { return nil }
        if Self.isBoolean(value) { throw Self.invalid("\"\(key)\" must be an integer, not a boolean") }
        if let number = value as? Int64 { return number }
        if let number = value as? Int { return Int64(number) }
        if let number = value as? Double, let exact = Int64(exactly: number) { return exact }
        if let number = value as? NSNumber, let exact = Int64(exactly: number.doubleValue) { return exact }
        throw Self.invalid("\"\(key)\" must be an integer")
    }

    func object(_ key: String) throws -> [String: Any]? {
        guard let value = fields[key], !(value is NSNull) else { return nil }
        guard let object = value as? [String: Any] else { throw Self.invalid("\"\(key)\" must be a JSON object") }
        return object
    }

    static func isBoolean(_ value: Any) -> Bool {
        if type(of: value) == Bool.self { return true }
        if let number = value as? NSNumber {
            return String(cString: number.objCType) == "c" || CFBooleanCheck(number)
        }
        return false
    }

    private static func CFBooleanCheck(_ number: NSNumber) -> Bool {
        // swift-corelibs-foundation bridges JSON booleans to NSNumber(value: Bool).
        number === NSNumber(value: true) || number === NSNumber(value: false)
    }
}

/// Decodes a typed body (policy, breaker config) with the types' own strict decoders, turning
/// decoding errors into 400 problems that name the field.
func decodeBody<T: Decodable>(_ type: T.Type, from data: Data, code: String, title: String) throws -> T {
    guard !data.isEmpty else { throw Problem(status: .badRequest, code: code, title: title, detail: "the request body is empty; a JSON object is required") }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch {
        let (path, reason) = JSONProblem.describe(error)
        throw Problem(status: .badRequest, code: code, title: title, detail: path.isEmpty ? reason : "\(path): \(reason)")
    }
}
