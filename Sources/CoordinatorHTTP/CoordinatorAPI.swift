import Coordinator
import CoordinatorCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Prometheus

/// The HTTP API over a `CoordinatorNode`: a thin adapter — every route parses its input, calls one
/// node method and renders the result. The OpenAPI document (`GET /openapi.yaml`) is the contract.
public struct CoordinatorAPI: Sendable {
    public let node: CoordinatorNode
    public let registry: PrometheusCollectorRegistry
    public let maxBodyBytes: Int
    let clock: any NodeClock

    public init(node: CoordinatorNode, registry: PrometheusCollectorRegistry, maxBodyBytes: Int? = nil, clock: any NodeClock = SystemClock()) {
        self.node = node
        self.registry = registry
        self.maxBodyBytes = maxBodyBytes ?? node.configuration.maxBodyBytes
        self.clock = clock
    }

    /// The OpenAPI 3.1 document served at `/openapi.yaml`.
    public static let openAPIDocument: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return "openapi: 3.1.0\n" }
        return text
    }()

    /// A router with every route of the API.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: BodyLimitMiddleware(maxBodyBytes: maxBodyBytes))
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ConsistencyMiddleware())

        router.get("/healthz") { _, _ in json(.ok, #"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ in await self.readyz() }
        router.get("/metrics") { _, _ in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16_384)
            self.registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(string: Self.openAPIDocument)))
        }
        router.get("/v1/cluster") { _, _ in await self.cluster() }

        router.post("/v1/limits/{policy}/check") { request, context in try await self.checkLimit(request, context) }
        router.get("/v1/limits") { _, _ in await self.listPolicies() }
        router.put("/v1/limits/{policy}") { request, context in try await self.putPolicy(request, context) }

        router.post("/v1/breakers/{name}/acquire") { _, context in try await self.acquire(context) }
        router.post("/v1/breakers/{name}/record") { request, context in try await self.record(request, context) }
        router.get("/v1/breakers") { _, _ in await self.listBreakers() }
        router.get("/v1/breakers/{name}") { _, context in try await self.getBreaker(context) }
        router.put("/v1/breakers/{name}/config") { request, context in try await self.configureBreaker(request, context) }
        router.put("/v1/breakers/{name}/state") { request, context in try await self.setBreakerState(request, context) }

        router.post("/v1/tokens") { request, _ in try await self.createToken(request) }
        router.get("/v1/tokens") { request, _ in try await self.listTokens(request) }
        router.post("/v1/tokens/verify") { request, _ in try await self.verifyToken(request) }
        router.delete("/v1/tokens/{id}") { request, context in try await self.revokeToken(request, context) }

        router.post("/v1/admit") { request, _ in try await self.admit(request) }

        router.post("/v1/audit") { request, _ in try await self.appendAudit(request) }
        router.get("/v1/audit") { request, _ in try await self.listAudit(request) }
        return router
    }

    // MARK: Health

    func readyz() async -> Response {
        let (ready, checks) = await node.readiness()
        var body = JSONText()
        body.bool("ready", ready)
        body.raw("checks", "{" + checks.sorted(by: { $0.key < $1.key }).map { JSONText.quoted($0.key) + ":" + JSONText.quoted($0.value) }.joined(separator: ",") + "}")
        return json(ready ? .ok : .serviceUnavailable, body.finish())
    }

    func cluster() async -> Response {
        let info = await node.clusterInfo()
        var body = JSONText()
        body.string("nodeId", info.nodeID)
        body.string("mode", info.mode)
        body.string("version", info.version)
        body.int("startedAtMs", info.startedAtMilliseconds)
        body.raw("backends", JSONText.array(info.backends.map { backend in
            var item = JSONText()
            item.string("role", backend.role)
            item.string("kind", backend.kind)
            item.string("status", backend.status)
            item.string("detail", backend.detail)
            item.int("sinceMs", backend.sinceMilliseconds)
            return item.finish()
        }))
        body.raw("members", JSONText.array(info.members.map { member in
            var item = JSONText()
            item.string("nodeId", member.nodeID)
            item.bool("self", member.isSelf)
            item.int("heartbeatAgeMs", member.heartbeatAgeMilliseconds)
            return item.finish()
        }))
        body.raw("degraded", JSONText.array(info.degraded.map { feature in
            var item = JSONText()
            item.string("feature", feature.feature)
            item.string("mode", feature.mode)
            item.int("sinceMs", feature.sinceMilliseconds)
            item.string("reason", feature.reason)
            item.int("shareDivisor", feature.shareDivisor)
            return item.finish()
        }))
        if let postgres = info.postgres {
            var topology = JSONText()
            topology.string("primary", postgres.primary?.description)
            topology.bool("splitBrain", postgres.splitBrain)
            topology.bool("failover", postgres.failoverSince != nil)
            topology.raw("hosts", JSONText.array(postgres.hosts.map { host in
                var item = JSONText()
                item.string("host", host.id.description)
                item.string("role", host.role.rawValue)
                item.string("observedRole", host.observedRole.rawValue)
                item.int("timeline", host.timeline.map { Int64($0) })
                item.int("lagBytes", host.lagBytes.map { Int64(clamping: $0) })
                item.int("lagMs", host.lagMs)
                item.bool("replayPaused", host.replayPaused)
                item.string("walReceiver", host.walReceiverStatus)
                item.bool("fenced", host.fenced)
                item.int("lastProbeAgeMs", host.lastProbeAgeMs)
                item.int("consecutiveFailures", host.consecutiveFailures)
                item.string("lastError", host.lastError)
                item.int("outstandingRequests", host.outstandingRequests)
                return item.finish()
            }))
            body.raw("postgres", topology.finish())
        }
        return json(.ok, body.finish())
    }

    // MARK: Limits

    func checkLimit(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let policy = try pathName(context, "policy")
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["key", "cost"])
        let key = try body.requiredString("key", maxLength: 4096)
        let cost = try body.integer("cost") ?? 1
        guard cost >= 0, cost <= 1_000_000_000 else { throw RequestObject.invalid("\"cost\" must be between 0 and 1000000000") }
        let result = try await node.checkLimit(policy: policy, key: key, cost: Int(cost))
        var headers = rateLimitHeaders(result)
        let fields = limitFields(result)
        if result.decision.allowed {
            return json(.ok, "{" + fields + "}", headers: headers)
        }
        let retry = result.decision.retryAfter ?? .zero
        headers[.retryAfter] = String(max(1, (retry.nanoseconds + 999_999_999) / 1_000_000_000))
        return problemWithFields(
            status: .tooManyRequests, code: "rate-limited", title: "Rate limited",
            detail: "policy \"\(result.policy)\" refused cost \(cost) for this key; retry after \(retry.millisecondsRoundedUp) ms",
            fields: fields, headers: headers, instance: request.uri.path
        )
    }

    func limitFields(_ result: LimitCheckResult) -> String {
        var body = JSONText()
        body.bool("allowed", result.decision.allowed)
        body.string("policy", result.policy)
        body.int("limit", result.decision.limit)
        body.int("remaining", result.decision.remaining)
        body.int("resetAfterMs", result.decision.resetAfter.millisecondsRoundedUp)
        body.int("retryAfterMs", (result.decision.retryAfter ?? .zero).millisecondsRoundedUp)
        var text = body.finish()
        text.removeFirst()
        text.removeLast()
        return text
    }

    func policyIsSliding(_ result: LimitCheckResult) -> Bool { result.algorithm == .slidingWindow }

    /// `RateLimit-Policy` / `RateLimit` (IETF httpapi rate-limit-headers draft, structured fields)
    /// plus the older `RateLimit-Limit` / `-Remaining` / `-Reset` trio many clients still read.
    func rateLimitHeaders(_ result: LimitCheckResult) -> HTTPFields {
        var headers = HTTPFields()
        let binding = result.decision.bindingLimit
        var policies: [String] = []
        policies.reserveCapacity(result.limits.count)
        for (index, spec) in result.limits.enumerated() {
            let windowSeconds = max(1, (spec.periodMs + 999) / 1000)
            let quota = policyIsSliding(result) ? spec.rate : spec.burst
            policies.append("\"\(result.policy).\(index)\";q=\(quota);w=\(windowSeconds)")
        }
        let resetSeconds = (result.decision.resetAfter.nanoseconds + 999_999_999) / 1_000_000_000
        headers[HTTPField.Name("RateLimit-Policy")!] = policies.joined(separator: ", ")
        headers[HTTPField.Name("RateLimit")!] = "\"\(result.policy).\(binding)\";r=\(result.decision.remaining);t=\(resetSeconds)"
        headers[HTTPField.Name("RateLimit-Limit")!] = String(result.decision.limit)
        headers[HTTPField.Name("RateLimit-Remaining")!] = String(result.decision.remaining)
        headers[HTTPField.Name("RateLimit-Reset")!] = String(resetSeconds)
        return headers
    }

    func listPolicies() async -> Response {
        let policies = await node.limitPolicies()
        let items = policies.keys.sorted().map { name in policyJSON(name: name, policy: policies[name]!) }
        return json(.ok, "{\"policies\":" + JSONText.array(items) + "}")
    }

    func policyJSON(name: String, policy: LimitPolicy) -> String {
        var body = JSONText()
        body.string("name", name)
        body.string("algorithm", policy.algorithm.rawValue)
        body.string("mode", policy.mode.rawValue)
        body.int("syncIntervalMs", policy.syncIntervalMs)
        body.raw("limits", JSONText.array(policy.limits.map { spec in
            var item = JSONText()
            item.int("rate", spec.rate)
            item.int("periodMs", spec.periodMs)
            if policy.algorithm == .gcra { item.int("burst", spec.burst) }
            return item.finish()
        }))
        return body.finish()
    }

    func putPolicy(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        try await requireAdmin(request)
        let name = try pathName(context, "policy")
        let data = try await RequestObject.readData(request, maxBytes: maxBodyBytes)
        let policy = try decodeBody(LimitPolicy.self, from: data, code: "invalid-policy", title: "Invalid policy")
        let stored = try await node.putPolicy(name: name, policy: policy)
        return json(.ok, policyJSON(name: name, policy: stored))
    }

    // MARK: Breakers

    func acquire(_ context: BasicRequestContext) async throws -> Response {
        let name = try pathName(context, "name")
        let result = try await node.acquire(breaker: name)
        if result.permitted {
            var body = JSONText()
            body.bool("permitted", true)
            body.string("permit", result.permitID ?? "")
            body.string("state", result.state.rawValue)
            return json(.ok, body.finish())
        }
        var fields = JSONText()
        fields.bool("permitted", false)
        fields.string("breaker", name)
        fields.string("state", result.state.rawValue)
        fields.int("retryAfterMs", result.retryAfter.map { $0.millisecondsRoundedUp })
        var text = fields.finish()
        text.removeFirst()
        text.removeLast()
        var headers = HTTPFields()
        if let retry = result.retryAfter {
            headers[.retryAfter] = String(max(1, (retry.nanoseconds + 999_999_999) / 1_000_000_000))
        }
        return problemWithFields(
            status: .serviceUnavailable, code: "breaker-open", title: "Circuit breaker open",
            detail: "breaker \"\(name)\" is \(result.state.rawValue) and refuses calls", fields: text, headers: headers,
            instance: "/v1/breakers/\(name)/acquire"
        )
    }

    func record(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let name = try pathName(context, "name")
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["permit", "outcome", "durationMs"])
        let permit = try body.requiredString("permit", maxLength: 128)
        let outcomeText = try body.requiredString("outcome", maxLength: 32)
        guard let outcome = CallOutcome(rawValue: outcomeText) else {
            throw RequestObject.invalid("\"outcome\" must be one of success, failure, ignored")
        }
        guard let duration = try body.integer("durationMs") else { throw RequestObject.invalid("\"durationMs\" is required") }
        let status = try await node.record(breaker: name, permitID: permit, outcome: outcome, durationMilliseconds: duration)
        return json(.ok, breakerJSON(status))
    }

    func listBreakers() async -> Response {
        let statuses = await node.breakerStatuses()
        return json(.ok, "{\"breakers\":" + JSONText.array(statuses.map(breakerJSON)) + "}")
    }

    func getBreaker(_ context: BasicRequestContext) async throws -> Response {
        let name = try pathName(context, "name")
        guard let status = await node.breakerStatus(name) else {
            throw CoordinatorError(.unknownBreaker, "no breaker named \"\(name)\" (breakers are created by their first acquire or by PUT …/config)")
        }
        return json(.ok, breakerJSON(status))
    }

    func configureBreaker(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        try await requireAdmin(request)
        let name = try pathName(context, "name")
        let data = try await RequestObject.readData(request, maxBytes: maxBodyBytes)
        let config = try decodeBody(BreakerConfig.self, from: data, code: "invalid-breaker-config", title: "Invalid breaker configuration")
        let status = try await node.configureBreaker(name: name, config: config)
        return json(.ok, breakerJSON(status))
    }

    func setBreakerState(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        try await requireAdmin(request)
        let name = try pathName(context, "name")
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["state"])
        let text = try body.requiredString("state", maxLength: 32)
        guard let state = BreakerState(rawValue: text) else {
            throw RequestObject.invalid("\"state\" must be one of closed, open, half_open, forced_open, disabled, metrics_only")
        }
        let status = try await node.setBreakerState(name: name, state: state)
        return json(.ok, breakerJSON(status))
    }

    func breakerJSON(_ status: BreakerStatus) -> String {
        let snapshot = status.snapshot
        let nowMono = clock.monotonicNow()
        let nowWall = clock.wallMilliseconds()
        var body = JSONText()
        body.string("name", status.name)
        body.string("state", snapshot.state.rawValue)
        body.string("sharing", status.sharing)
        body.double("failureRate", snapshot.failureRate)
        body.double("slowCallRate", snapshot.slowCallRate)
        var calls = JSONText()
        calls.int("buffered", snapshot.numberOfCalls)
        calls.int("failed", snapshot.failedCalls)
        calls.int("slow", snapshot.slowCalls)
        calls.int("successful", snapshot.successfulCalls)
        calls.int("notPermitted", Int64(clamping: snapshot.notPermittedCalls))
        calls.int("stale", Int64(clamping: snapshot.staleOutcomes))
        body.raw("calls", calls.finish())
        body.int("outstandingPermits", status.outstandingPermits)
        if snapshot.state == .open, let openUntil = snapshot.openUntil {
            body.int("retryAfterMs", max(0, (openUntil - nowMono).millisecondsRoundedUp))
        }
        if let transition = snapshot.lastTransition {
            var item = JSONText()
            item.string("from", transition.from.rawValue)
            item.string("to", transition.to.rawValue)
            item.string("reason", transition.reason.rawValue)
            item.int("atMs", nowWall - (nowMono - transition.at).nanoseconds / 1_000_000)
            if let rate = transition.failureRate { item.double("failureRate", rate) }
            if let rate = transition.slowCallRate { item.double("slowCallRate", rate) }
            body.raw("lastTransition", item.finish())
        } else {
            body.raw("lastTransition", "null")
        }
        body.raw("config", encodeJSON(snapshot.config))
        return body.finish()
    }

    // MARK: Tokens

    func createToken(_ request: Request) async throws -> Response {
        try await requireAdmin(request)
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["subject", "policy", "ttlSeconds"])
        let subject = try body.requiredString("subject", maxLength: 128)
        let policy = try body.string("policy", maxLength: 128)
        let ttl = try body.integer("ttlSeconds")
        let created = try await node.createToken(subject: subject, policy: policy, ttlSeconds: ttl)
        var json = tokenFields(created.token)
        json.string("secret", created.secret)
        return jsonResponse(.created, json.finish())
    }

    func tokenFields(_ token: TokenRecord) -> JSONText {
        var body = JSONText()
        body.string("id", token.id)
        body.string("subject", token.subject)
        body.string("policy", token.policy)
        body.int("createdAtMs", token.createdAt)
        body.int("expiresAtMs", token.expiresAt)
        body.int("revokedAtMs", token.revokedAt)
        let status: String
        if token.revokedAt != nil {
            status = "revoked"
        } else if let expires = token.expiresAt, expires <= clock.wallMilliseconds() {
            status = "expired"
        } else {
            status = "active"
        }
        body.string("status", status)
        return body
    }

    func listTokens(_ request: Request) async throws -> Response {
        try await requireAdmin(request)
        let tokens = try await node.tokens()
        return json(.ok, "{\"tokens\":" + JSONText.array(tokens.map { var fields = tokenFields($0); return fields.finish() }) + "}")
    }

    func verifyToken(_ request: Request) async throws -> Response {
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["token"])
        let secret = try body.requiredString("token", maxLength: 512)
        switch try await node.verifyToken(secret) {
        case .valid(let token):
            var fields = tokenFields(token)
            fields.bool("valid", true)
            return json(.ok, fields.finish())
        case .invalid(let reason):
            throw tokenProblem(reason, instance: request.uri.path)
        }
    }

    func tokenProblem(_ reason: TokenRefusal, instance: String) -> Problem {
        let detail: String
        switch reason {
        case .unknown: detail = "the token is not known"
        case .revoked: detail = "the token was revoked"
        case .expired: detail = "the token has expired"
        }
        return Problem(
            status: .unauthorized, code: "token-invalid", title: "Token refused", detail: detail,
            extensions: [("valid", "false"), ("reason", JSONText.quoted(reason.rawValue))],
            headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""]
        )
    }

    func revokeToken(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        try await requireAdmin(request)
        guard let id = context.parameters.get("id"), ResourceName.isValid(id) else {
            throw CoordinatorError(.invalidName, "token ids look like tok_…")
        }
        let token = try await node.revokeToken(id: id)
        var fields = tokenFields(token)
        return json(.ok, fields.finish())
    }

    // MARK: Admit

    func admit(_ request: Request) async throws -> Response {
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["token", "cost", "breaker"])
        let secret = try body.requiredString("token", maxLength: 512)
        let cost = try body.integer("cost") ?? 1
        guard cost >= 0, cost <= 1_000_000_000 else { throw RequestObject.invalid("\"cost\" must be between 0 and 1000000000") }
        let breaker = try body.string("breaker", maxLength: 128)
        let result = try await node.admit(token: secret, cost: Int(cost), breaker: breaker)
        if result.allowed, let token = result.token, let limit = result.limit {
            var text = "{\"allowed\":true,\"tokenId\":" + JSONText.quoted(token.id) + ",\"subject\":" + JSONText.quoted(token.subject)
            text += ",\"limit\":{" + limitFields(limit) + "}"
            if let acquisition = result.breaker {
                text += ",\"breaker\":{\"name\":" + JSONText.quoted(acquisition.breaker) + ",\"permit\":" + JSONText.quoted(acquisition.permitID ?? "")
                text += ",\"state\":" + JSONText.quoted(acquisition.state.rawValue) + "}"
            }
            text += "}"
            return json(.ok, text, headers: rateLimitHeaders(limit))
        }
        switch result.refusedBy {
        case .token:
            var problem = tokenProblem(result.tokenRefusal ?? .unknown, instance: request.uri.path)
            problem.extensions.insert(("allowed", "false"), at: 0)
            problem.extensions.append(("refusedBy", "\"token\""))
            throw problem
        case .rateLimit:
            let limit = result.limit!
            var headers = rateLimitHeaders(limit)
            let retry = limit.decision.retryAfter ?? .zero
            headers[.retryAfter] = String(max(1, (retry.nanoseconds + 999_999_999) / 1_000_000_000))
            return problemWithFields(
                status: .tooManyRequests, code: "rate-limited", title: "Rate limited",
                detail: "policy \"\(limit.policy)\" refused this token; retry after \(retry.millisecondsRoundedUp) ms",
                fields: "\"refusedBy\":\"rate_limit\"," + limitFields(limit), headers: headers, instance: request.uri.path
            )
        case .breaker, .none:
            let acquisition = result.breaker
            var headers = HTTPFields()
            if let retry = acquisition?.retryAfter {
                headers[.retryAfter] = String(max(1, (retry.nanoseconds + 999_999_999) / 1_000_000_000))
            }
            var fields = JSONText()
            fields.bool("allowed", false)
            fields.string("refusedBy", "breaker")
            fields.string("breaker", acquisition?.breaker ?? "")
            fields.string("state", acquisition?.state.rawValue ?? "open")
            fields.int("retryAfterMs", acquisition?.retryAfter.map { $0.millisecondsRoundedUp })
            var text = fields.finish()
            text.removeFirst()
            text.removeLast()
            return problemWithFields(
                status: .serviceUnavailable, code: "breaker-open", title: "Circuit breaker open",
                detail: "breaker \"\(acquisition?.breaker ?? "")\" refuses calls", fields: text, headers: headers, instance: request.uri.path
            )
        }
    }

    // MARK: Audit

    func appendAudit(_ request: Request) async throws -> Response {
        let body = try await RequestObject.read(request, maxBytes: maxBodyBytes, allowed: ["id", "actor", "action", "resource", "outcome", "detail"])
        let id = try body.requiredString("id", maxLength: 128)
        guard ResourceName.isValid(id) else { throw RequestObject.invalid("\"id\" must match [A-Za-z0-9._:-]{1,128} (a UUID is recommended)") }
        let detail = try body.object("detail") ?? [:]
        let detailData = try JSONSerialization.data(withJSONObject: detail, options: [.sortedKeys])
        let result = try await node.appendAudit(
            id: id,
            actor: try body.requiredString("actor", maxLength: 256),
            action: try body.requiredString("action", maxLength: 256),
            resource: try body.requiredString("resource", maxLength: 1024),
            outcome: try body.requiredString("outcome", maxLength: 64),
            detailJSON: String(decoding: detailData, as: UTF8.self)
        )
        var json = JSONText()
        json.string("id", id)
        if result.buffered {
            // The store is unreachable: spooled durably on this node, stored (in order) when it returns.
            json.bool("duplicate", result.duplicate)
            json.bool("buffered", true)
            return jsonResponse(.accepted, json.finish())
        }
        json.int("seq", result.seq)
        json.bool("duplicate", result.duplicate)
        return jsonResponse(result.duplicate ? .ok : .created, json.finish())
    }

    func listAudit(_ request: Request) async throws -> Response {
        try await requireAdmin(request)
        let query = request.uri.queryParameters
        for (key, _) in query where key != "after" && key != "limit" {
            throw RequestObject.invalid("unknown query parameter \"\(key)\" (allowed: after, limit)")
        }
        func integer(_ name: String, default value: Int64) throws -> Int64 {
            guard let text = query[name[...]] else { return value }
            guard let number = Int64(text) else { throw RequestObject.invalid("query parameter \"\(name)\" must be an integer") }
            return number
        }
        let after = try integer("after", default: 0)
        let limit = try integer("limit", default: 100)
        guard after >= 0 else { throw RequestObject.invalid("\"after\" must be ≥ 0") }
        guard (1...1000).contains(limit) else { throw RequestObject.invalid("\"limit\" must be between 1 and 1000") }
        let events = try await node.auditEvents(after: after, limit: Int(limit))
        let items = events.map { stored in
            var item = JSONText()
            item.int("seq", stored.seq)
            item.string("id", stored.event.id)
            item.string("actor", stored.event.actor)
            item.string("action", stored.event.action)
            item.string("resource", stored.event.resource)
            item.string("outcome", stored.event.outcome)
            item.raw("detail", stored.event.detailJSON)
            item.int("recordedAtMs", stored.event.recordedAt)
            item.string("nodeId", stored.event.nodeID)
            return item.finish()
        }
        return json(.ok, "{\"events\":" + JSONText.array(items) + ",\"next\":\(events.last?.seq ?? after)}")
    }

    // MARK: Helpers

    func requireAdmin(_ request: Request) async throws {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") || header.hasPrefix("bearer ") else {
            throw Problem(
                status: .unauthorized, code: "unauthorized", title: "Unauthorized", detail: "this route needs the admin token: Authorization: Bearer <admin token>",
                headers: [.wwwAuthenticate: "Bearer"]
            )
        }
        let token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        guard await node.isAdmin(token: token) else {
            throw Problem(
                status: .unauthorized, code: "unauthorized", title: "Unauthorized", detail: "the admin token is wrong",
                headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""]
            )
        }
    }

    func pathName(_ context: BasicRequestContext, _ parameter: String) throws -> String {
        guard let value = context.parameters.get(parameter) else { throw RequestObject.invalid("missing path parameter \(parameter)") }
        guard ResourceName.isValid(value) else {
            throw Problem(status: .badRequest, code: "invalid-name", title: "Invalid name", detail: "\(parameter) \"\(value.prefix(140))\" must match [A-Za-z0-9._:-]{1,128}")
        }
        return value
    }

    func problemWithFields(status: HTTPResponse.Status, code: String, title: String, detail: String, fields: String, headers: HTTPFields, instance: String) -> Response {
        var problem = Problem(status: status, code: code, title: title, detail: detail, headers: headers)
        problem.encodedMembers = fields
        return problem.response(instance: instance)
    }

    func jsonResponse(_ status: HTTPResponse.Status, _ body: String) -> Response {
        json(status, body)
    }

    func encodeJSON<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "null"
    }
}

/// A JSON response.
func json(_ status: HTTPResponse.Status, _ body: String, headers: HTTPFields = [:]) -> Response {
    var headers = headers
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
}
