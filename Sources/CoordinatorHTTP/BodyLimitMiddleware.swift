import HTTPTypes
import Hummingbird

/// Refuses, on every route, a request whose declared `Content-Length` exceeds the body limit —
/// also on routes that never read their body — with a 413 problem. Streamed bodies without a
/// length are capped where they are read (`RequestObject.readData`).
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > maxBodyBytes {
            throw Problem(
                status: .contentTooLarge, code: "body-too-large", title: "Body too large",
                detail: "request bodies are limited to \(maxBodyBytes) bytes; this one declares \(declared)"
            )
        }
        return try await next(request, context)
    }
}
