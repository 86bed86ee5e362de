import Coordinator
import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    /// `Coordinator-LSN`: on a response, the commit LSN of the request's writes (PostgreSQL store);
    /// on a request, "read at least this": reads are served by a replica that has replayed it, or
    /// by the primary.
    static let coordinatorLSN = Self("Coordinator-LSN")!
}

/// Read-your-writes across nodes: binds the `Coordinator-LSN` request header to the reads of the
/// request and returns the highest commit LSN of its writes in the `Coordinator-LSN` response header.
/// A malformed header is a 400 problem. With the SQLite store no write reports an LSN, so no header
/// is returned and the request header has no effect.
struct ConsistencyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var requirement: ReadRequirement?
        if let text = request.headers[.coordinatorLSN] {
            guard let lsn = LSNText.parse(text.trimmingSpaces()) else {
                throw Problem(
                    status: .badRequest, code: "invalid-lsn", title: "Invalid Coordinator-LSN",
                    detail: "Coordinator-LSN must be a PostgreSQL LSN such as 16/B374D848, as returned by a previous write")
            }
            requirement = .readYourWrites(minimumLSN: lsn)
        }
        let sink = LSNSink()
        var response = try await RequestConsistency.$lsnSink.withValue(sink) {
            try await RequestConsistency.$readRequirement.withValue(requirement ?? RequestConsistency.readRequirement) {
                try await next(request, context)
            }
        }
        if let lsn = sink.value {
            response.headers[.coordinatorLSN] = LSNText.format(lsn)
        }
        return response
    }
}

extension StringProtocol {
    fileprivate func trimmingSpaces() -> Substring {
        let text = Substring(self)
        guard let first = text.firstIndex(where: { $0 != " " }) else { return "" }
        let last = text.lastIndex(where: { $0 != " " })!
        return text[first...last]
    }
}
