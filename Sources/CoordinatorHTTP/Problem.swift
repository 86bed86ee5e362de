import Coordinator
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// An RFC 9457 problem document (`application/problem+json`), thrown by handlers and rendered by
/// `ProblemMiddleware`. Extension members carry machine-readable details (e.g. `retryAfterMs`).
public struct Problem: Error, Sendable {
    public var status: HTTPResponse.Status
    /// Stable code; the problem `type` is `urn:coordinator:problem:<code>`.
    public var code: String
    public var title: String
    public var detail: String
    /// Extra members, already encoded as JSON values, in order.
    var extensions: [(String, String)]
    /// Extra members already encoded as `"name":value,…` (no braces), appended after `extensions`.
    var encodedMembers: String = ""
    /// Extra response headers.
    var headers: HTTPFields

    init(status: HTTPResponse.Status, code: String, title: String, detail: String, extensions: [(String, String)] = [], headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extensions = extensions
        self.headers = headers
    }

    init(_ error: CoordinatorError, extensions: [(String, String)] = [], headers: HTTPFields = [:]) {
        self.init(
            status: HTTPResponse.Status(code: error.httpStatus), code: error.code.rawValue, title: Problem.title(for: error.code),
            detail: error.message, extensions: extensions, headers: headers
        )
    }

    static func title(for code: CoordinatorError.Code) -> String {
        switch code {
        case .invalidRequest: "Invalid request"
        case .invalidName: "Invalid name"
        case .invalidKey: "Invalid rate-limit key"
        case .invalidPolicy: "Invalid policy"
        case .invalidBreakerConfig: "Invalid breaker configuration"
        case .unknownPolicy: "Unknown policy"
        case .unknownBreaker: "Unknown breaker"
        case .unknownToken: "Unknown token"
        case .unknownPermit: "Unknown permit"
        case .permitAlreadyRecorded: "Permit already recorded"
        case .breakerLimitReached: "Too many breakers"
        case .permitLimitReached: "Too many outstanding permits"
        case .limiterFull: "Rate limiter full"
        case .costExceedsCapacity: "Cost exceeds capacity"
        case .auditIDConflict: "Audit id reused"
        case .unauthorized: "Unauthorized"
        case .tokenInvalid: "Token refused"
        case .rateLimited: "Rate limited"
        case .breakerOpen: "Circuit breaker open"
        case .notFound: "Not found"
        case .methodNotAllowed: "Method not allowed"
        case .bodyTooLarge: "Body too large"
        case .unsupportedMediaType: "Unsupported media type"
        case .storeUnavailable: "Store unavailable"
        case .shuttingDown: "Shutting down"
        case .internalError: "Internal error"
        }
    }

    func response(instance: String) -> Response {
        var json = JSONText()
        json.string("type", "urn:coordinator:problem:\(code)")
        json.string("title", title)
        json.int("status", status.code)
        json.string("detail", detail)
        json.string("instance", instance)
        json.string("code", code)
        var body = json.finish()
        if !extensions.isEmpty || !encodedMembers.isEmpty {
            body.removeLast()
            for (name, value) in extensions {
                body.append(",")
                JSONText.appendQuoted(name, to: &body)
                body.append(":")
                body.append(value)
            }
            if !encodedMembers.isEmpty {
                body.append(",")
                body.append(encodedMembers)
            }
            body.append("}")
        }
        var fields = headers
        fields[.contentType] = "application/problem+json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Renders every error that escapes a handler — our `Problem`s, `CoordinatorError`s, Hummingbird's
/// own errors (404, 413) and anything unexpected (500, logged) — as `application/problem+json`.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            return problem.response(instance: request.uri.path)
        } catch let error as CoordinatorError {
            return Problem(error).response(instance: request.uri.path)
        } catch let error as HTTPError {
            let problem: Problem
            switch error.status {
            case .notFound:
                problem = Problem(status: .notFound, code: "not-found", title: "Not found", detail: "no route \(request.method) \(request.uri.path)")
            case .contentTooLarge:
                problem = Problem(status: .contentTooLarge, code: "body-too-large", title: "Body too large", detail: "request bodies are limited to the configured server.maxBodyBytes")
            default:
                problem = Problem(status: error.status, code: "http-\(error.status.code)", title: error.status.reasonPhrase, detail: error.body ?? error.status.reasonPhrase)
            }
            return problem.response(instance: request.uri.path)
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return Problem(status: .internalServerError, code: "internal-error", title: "Internal error", detail: "an unexpected error occurred; see the node's log")
                .response(instance: request.uri.path)
        }
    }
}
