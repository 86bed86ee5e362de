import Coordinator
import CoordinatorCore
import CoordinatorHTTP
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("HTTP API")
struct APITests {
    @Test("health, readiness, cluster, metrics and the OpenAPI document")
    func health() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            let health = try await client.send(.get, "/healthz")
            #expect(health.status == .ok)
            #expect(health.json["status"] as? String == "ok")

            let ready = try await client.send(.get, "/readyz")
            #expect(ready.status == .ok)
            #expect(ready.json["ready"] as? Bool == true)

            let cluster = try await client.send(.get, "/v1/cluster")
            #expect(cluster.status == .ok)
            #expect(cluster.json["mode"] as? String == "pilot")
            #expect(cluster.json["nodeId"] as? String == test.node.nodeID)
            let backends = cluster.json["backends"] as? [[String: Any]] ?? []
            #expect(backends.contains { $0["role"] as? String == "store" && $0["kind"] as? String == "sqlite" && $0["status"] as? String == "ok" })

            try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"metrics-probe"}"#)
            let metrics = try await client.send(.get, "/metrics")
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains("coordinator_limiter_decisions_total"))

            let document = try await client.send(.get, "/openapi.yaml")
            #expect(document.status == .ok)
            #expect(document.text.hasPrefix("openapi: 3.1"))
        }
    }

    @Test("every route in the OpenAPI document exists, and every route is in the document")
    func openAPIMatchesRouter() async throws {
        let test = try await TestNode.make()
        let router = test.api.makeRouter()
        let served = Set(router.routes.map { "\($0.method.rawValue.uppercased()) \($0.path.description)" })
        var documented = Set<String>()
        var currentPath: String?
        for line in CoordinatorAPI.openAPIDocument.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                currentPath = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("paths:") {
                currentPath = nil
            } else if let path = currentPath, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast()
                if ["get", "put", "post", "delete", "patch"].contains(String(method)) {
                    documented.insert("\(method.uppercased()) \(path)")
                }
            } else if !line.hasPrefix(" ") && !line.isEmpty {
                currentPath = nil
            }
        }
        #expect(documented.count >= 19)
        #expect(served.subtracting(documented).isEmpty, "served but undocumented: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
        await test.node.shutdown()
    }

    @Test("limit check: burst 5 at 10/s passes 5, refuses the 6th with ≈100 ms, headers and problem body")
    func limitCheck() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            let put = try await client.send(.put, "/v1/limits/api", json: #"{"algorithm":"gcra","limits":[{"rate":10,"periodMs":1000,"burst":5}]}"#, admin: true)
            #expect(put.status == .ok, "\(put.text)")
            #expect(put.json["name"] as? String == "api")

            for expectedRemaining in [4, 3, 2, 1, 0] {
                let response = try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-1"}"#)
                #expect(response.status == .ok)
                #expect(response.json["allowed"] as? Bool == true)
                #expect(int(response.json["remaining"]) == expectedRemaining)
                #expect(int(response.json["limit"]) == 5)
                #expect(response.headers[HTTPField.Name("RateLimit-Policy")!] == "\"api.0\";q=5;w=1")
                #expect(response.headers[HTTPField.Name("RateLimit-Remaining")!] == "\(expectedRemaining)")
            }
            let refused = try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-1","cost":1}"#)
            #expect(refused.status == .tooManyRequests)
            #expect(refused.headers[.contentType] == "application/problem+json")
            #expect(refused.headers[.retryAfter] == "1")
            #expect(refused.json["allowed"] as? Bool == false)
            #expect(int(refused.json["retryAfterMs"]) == 100)
            #expect(refused.json["code"] as? String == "rate-limited")
            #expect(int(refused.json["status"]) == 429)

            // Another key is independent; after 100 ms the first key gets one more.
            #expect(try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-2"}"#).status == .ok)
            test.clock.advance(milliseconds: 100)
            #expect(try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-1"}"#).status == .ok)
            #expect(try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-1"}"#).status == .tooManyRequests)

            // cost 0 queries without consuming; a cost above the burst can never pass.
            let query = try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-3","cost":0}"#)
            #expect(query.status == .ok)
            #expect(int(query.json["remaining"]) == 5)
            let impossible = try await client.send(.post, "/v1/limits/api/check", json: #"{"key":"user-3","cost":6}"#)
            #expect(impossible.status == .unprocessableContent)
            #expect(impossible.json["code"] as? String == "cost-exceeds-capacity")

            let list = try await client.send(.get, "/v1/limits")
            let names = (list.json["policies"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            #expect(names.contains("api") && names.contains("default"))
        }
    }

    @Test("Coordinator-LSN: a malformed request header is a 400 problem; the SQLite store returns none")
    func coordinatorLSNHeader() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            for bad in ["16", "G/1", "1/2/3", "123456789/0", ""] {
                var headers = HTTPFields()
                headers[HTTPField.Name("Coordinator-LSN")!] = bad
                let response = try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"lsn"}"#, headers: headers)
                #expect(response.status == .badRequest, "\(bad)")
                #expect(response.json["code"] as? String == "invalid-lsn")
            }
            var headers = HTTPFields()
            headers[HTTPField.Name("Coordinator-LSN")!] = "0/16B3748"
            let accepted = try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"lsn"}"#, headers: headers)
            #expect(accepted.status == .ok)
            let write = try await client.send(.put, "/v1/limits/lsn-policy", json: #"{"algorithm":"gcra","limits":[{"rate":5,"periodMs":1000}]}"#, admin: true)
            #expect(write.status == .ok)
            #expect(write.headers[HTTPField.Name("Coordinator-LSN")!] == nil)
        }
    }

    @Test("malformed limit requests get clear 4xx problems")
    func limitErrors() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            func expectProblem(_ response: TestResponse, _ status: HTTPResponse.Status, _ code: String, _ fragment: String = "") {
                #expect(response.status == status, "\(response.text)")
                #expect(response.headers[.contentType] == "application/problem+json")
                #expect(response.json["code"] as? String == code, "\(response.text)")
                if !fragment.isEmpty { #expect((response.json["detail"] as? String ?? "").contains(fragment), "\(response.text)") }
            }
            expectProblem(try await client.send(.post, "/v1/limits/nope/check", json: #"{"key":"k"}"#), .notFound, "unknown-policy")
            expectProblem(try await client.send(.post, "/v1/limits/bad%20name/check", json: #"{"key":"k"}"#), .badRequest, "invalid-name")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: "{"), .badRequest, "invalid-request", "not valid JSON")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: "[1]"), .badRequest, "invalid-request", "JSON object")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: ""), .badRequest, "invalid-request", "empty")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"cost":1}"#), .badRequest, "invalid-request", "\"key\" is required")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"k","coast":1}"#), .badRequest, "invalid-request", "unknown field \"coast\"")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"k","cost":"1"}"#), .badRequest, "invalid-request", "integer")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"k","cost":1.5}"#), .badRequest, "invalid-request", "integer")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"k","cost":true}"#), .badRequest, "invalid-request", "integer")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":"k","cost":-1}"#), .badRequest, "invalid-request", "cost")
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: #"{"key":12}"#), .badRequest, "invalid-request", "string")
            let longKey = String(repeating: "k", count: 257)
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: "{\"key\":\"\(longKey)\"}"), .badRequest, "invalid-key")
            let okKey = String(repeating: "k", count: 256)
            #expect(try await client.send(.post, "/v1/limits/default/check", json: "{\"key\":\"\(okKey)\"}").status == .ok)
            let huge = "{\"key\":\"" + String(repeating: "x", count: 70_000) + "\"}"
            expectProblem(try await client.send(.post, "/v1/limits/default/check", json: huge), .contentTooLarge, "body-too-large")
            expectProblem(try await client.send(.get, "/v1/nothing-here"), .notFound, "not-found")
            // Also on routes that never read a body.
            let bigBody = String(repeating: "x", count: 70_000)
            expectProblem(try await client.send(.post, "/v1/breakers/b1/acquire", json: bigBody), .contentTooLarge, "body-too-large")

            // Policy administration.
            expectProblem(try await client.send(.put, "/v1/limits/p1", json: #"{"limits":[{"rate":1,"periodMs":1000}]}"#), .unauthorized, "unauthorized")
            let wrongAdmin = try await client.send(.put, "/v1/limits/p1", json: #"{"limits":[{"rate":1,"periodMs":1000}]}"#, headers: [.authorization: "Bearer wrong-token-wrong-token"])
            expectProblem(wrongAdmin, .unauthorized, "unauthorized")
            expectProblem(try await client.send(.put, "/v1/limits/p1", json: #"{"limits":[{"rate":0,"periodMs":1000}]}"#, admin: true), .badRequest, "invalid-policy", "limits[0].rate")
            expectProblem(try await client.send(.put, "/v1/limits/p1", json: #"{"limits":[{"rate":1,"periodMs":1000,"brust":2}]}"#, admin: true), .badRequest, "invalid-policy", "brust")
            expectProblem(try await client.send(.put, "/v1/limits/p1", json: #"{"algorithm":"leaky","limits":[{"rate":1,"periodMs":1000}]}"#, admin: true), .badRequest, "invalid-policy")
            expectProblem(try await client.send(.put, "/v1/limits/p1", json: #"{"limits":[]}"#, admin: true), .badRequest, "invalid-policy")
        }
    }

    @Test("breaker acquire/record through HTTP trips, rejects with 503 and recovers through half-open")
    func breakers() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            let config = #"{"window":{"type":"count","size":4},"minimumCalls":4,"failureRateThreshold":50,"openWaitMs":1000,"halfOpenPermittedCalls":2}"#
            let configured = try await client.send(.put, "/v1/breakers/payments/config", json: config, admin: true)
            #expect(configured.status == .ok, "\(configured.text)")
            #expect(configured.json["state"] as? String == "closed")

            for outcome in ["success", "success", "failure", "failure"] {
                let acquired = try await client.send(.post, "/v1/breakers/payments/acquire")
                #expect(acquired.status == .ok)
                let permit = try #require(acquired.json["permit"] as? String)
                let recorded = try await client.send(.post, "/v1/breakers/payments/record", json: "{\"permit\":\"\(permit)\",\"outcome\":\"\(outcome)\",\"durationMs\":5}")
                #expect(recorded.status == .ok, "\(recorded.text)")
            }
            let status = try await client.send(.get, "/v1/breakers/payments")
            #expect(status.json["state"] as? String == "open")
            let transition = status.json["lastTransition"] as? [String: Any]
            #expect(transition?["reason"] as? String == "failure_rate")

            let rejected = try await client.send(.post, "/v1/breakers/payments/acquire")
            #expect(rejected.status == .serviceUnavailable)
            #expect(rejected.json["permitted"] as? Bool == false)
            #expect(int(rejected.json["retryAfterMs"]) == 1000)
            #expect(rejected.headers[.retryAfter] == "1")

            test.clock.advance(milliseconds: 1000)
            var permits: [String] = []
            for _ in 0..<2 {
                let probe = try await client.send(.post, "/v1/breakers/payments/acquire")
                #expect(probe.status == .ok)
                #expect(probe.json["state"] as? String == "half_open")
                permits.append(probe.json["permit"] as? String ?? "")
            }
            #expect(try await client.send(.post, "/v1/breakers/payments/acquire").status == .serviceUnavailable)
            for permit in permits {
                #expect(try await client.send(.post, "/v1/breakers/payments/record", json: "{\"permit\":\"\(permit)\",\"outcome\":\"success\",\"durationMs\":1}").status == .ok)
            }
            #expect(try await client.send(.get, "/v1/breakers/payments").json["state"] as? String == "closed")

            // Permits are single-use; unknown permits and bad bodies are refused.
            let reused = try await client.send(.post, "/v1/breakers/payments/record", json: "{\"permit\":\"\(permits[0])\",\"outcome\":\"success\",\"durationMs\":1}")
            #expect(reused.status == .conflict)
            #expect(reused.json["code"] as? String == "permit-already-recorded")
            let unknown = try await client.send(.post, "/v1/breakers/payments/record", json: #"{"permit":"pmt_nope","outcome":"success","durationMs":1}"#)
            #expect(unknown.status == .conflict)
            #expect(unknown.json["code"] as? String == "unknown-permit")
            #expect(try await client.send(.post, "/v1/breakers/payments/record", json: #"{"permit":"x","outcome":"maybe","durationMs":1}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/breakers/payments/record", json: #"{"permit":"x","outcome":"success"}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/breakers/payments/record", json: #"{"permit":"x","outcome":"success","durationMs":-4}"#).status == .badRequest)

            // Operator state changes.
            #expect(try await client.send(.put, "/v1/breakers/payments/state", json: #"{"state":"forced_open"}"#).status == .unauthorized)
            let forced = try await client.send(.put, "/v1/breakers/payments/state", json: #"{"state":"forced_open"}"#, admin: true)
            #expect(forced.json["state"] as? String == "forced_open")
            #expect(try await client.send(.post, "/v1/breakers/payments/acquire").status == .serviceUnavailable)
            #expect(try await client.send(.put, "/v1/breakers/payments/state", json: #"{"state":"sideways"}"#, admin: true).status == .badRequest)
            #expect(try await client.send(.put, "/v1/breakers/payments/state", json: #"{"state":"closed"}"#, admin: true).json["state"] as? String == "closed")

            // Config errors name the field.
            let badConfig = try await client.send(.put, "/v1/breakers/payments/config", json: #"{"failureRateThreshold":150}"#, admin: true)
            #expect(badConfig.status == .badRequest)
            #expect((badConfig.json["detail"] as? String ?? "").contains("failureRateThreshold"))
            let unknownField = try await client.send(.put, "/v1/breakers/payments/config", json: #"{"windw":{"size":3}}"#, admin: true)
            #expect(unknownField.status == .badRequest)
            #expect((unknownField.json["detail"] as? String ?? "").contains("windw"))

            let list = try await client.send(.get, "/v1/breakers")
            #expect((list.json["breakers"] as? [[String: Any]] ?? []).count == 1)
            #expect(try await client.send(.get, "/v1/breakers/unknown-one").status == .notFound)
        }
    }

    @Test("unknown breakers are created from the default config up to breakers.maxBreakers")
    func breakerLimit() async throws {
        let test = try await TestNode.make { $0.maxBreakers = 2 }
        try await test.withClient { client in
            #expect(try await client.send(.post, "/v1/breakers/a/acquire").status == .ok)
            #expect(try await client.send(.post, "/v1/breakers/b/acquire").status == .ok)
            let third = try await client.send(.post, "/v1/breakers/c/acquire")
            #expect(third.status == .conflict)
            #expect(third.json["code"] as? String == "breaker-limit-reached")
            let config = try await client.send(.get, "/v1/breakers/a")
            #expect(int((config.json["config"] as? [String: Any])?["minimumCalls"]) == 100)
        }
    }

    @Test("tokens: create (secret once), list without secrets, verify, revoke, expiry")
    func tokens() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            #expect(try await client.send(.post, "/v1/tokens", json: #"{"subject":"agent-7"}"#).status == .unauthorized)
            let created = try await client.send(.post, "/v1/tokens", json: #"{"subject":"agent-7","policy":"default","ttlSeconds":60}"#, admin: true)
            #expect(created.status == .created, "\(created.text)")
            let secret = try #require(created.json["secret"] as? String)
            let id = try #require(created.json["id"] as? String)
            #expect(secret.hasPrefix("ic_") && secret.count == 46)

            let list = try await client.send(.get, "/v1/tokens", admin: true)
            #expect(!list.text.contains(secret))
            #expect(list.text.contains(id))

            let verified = try await client.send(.post, "/v1/tokens/verify", json: "{\"token\":\"\(secret)\"}")
            #expect(verified.status == .ok)
            #expect(verified.json["subject"] as? String == "agent-7")

            let unknown = try await client.send(.post, "/v1/tokens/verify", json: #"{"token":"ic_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#)
            #expect(unknown.status == .unauthorized)
            #expect(unknown.json["reason"] as? String == "unknown")
            let garbage = try await client.send(.post, "/v1/tokens/verify", json: #"{"token":"not a token"}"#)
            #expect(garbage.json["reason"] as? String == "unknown")

            test.clock.advance(milliseconds: 61_000)
            let expired = try await client.send(.post, "/v1/tokens/verify", json: "{\"token\":\"\(secret)\"}")
            #expect(expired.status == .unauthorized)
            #expect(expired.json["reason"] as? String == "expired")

            let second = try await client.send(.post, "/v1/tokens", json: #"{"subject":"agent-8"}"#, admin: true)
            let secondSecret = try #require(second.json["secret"] as? String)
            let secondID = try #require(second.json["id"] as? String)
            #expect(try await client.send(.post, "/v1/tokens/verify", json: "{\"token\":\"\(secondSecret)\"}").status == .ok)
            let revoked = try await client.send(.delete, "/v1/tokens/\(secondID)", admin: true)
            #expect(revoked.status == .ok)
            #expect(revoked.json["status"] as? String == "revoked")
            let afterRevoke = try await client.send(.post, "/v1/tokens/verify", json: "{\"token\":\"\(secondSecret)\"}")
            #expect(afterRevoke.status == .unauthorized)
            #expect(afterRevoke.json["reason"] as? String == "revoked")
            #expect(try await client.send(.delete, "/v1/tokens/tok_unknown", admin: true).status == .notFound)

            #expect(try await client.send(.post, "/v1/tokens", json: #"{"subject":"x","policy":"nope"}"#, admin: true).status == .notFound)
            #expect(try await client.send(.post, "/v1/tokens", json: #"{"subject":"bad subject"}"#, admin: true).status == .badRequest)
            #expect(try await client.send(.post, "/v1/tokens", json: #"{"subject":"x","ttlSeconds":0}"#, admin: true).status == .badRequest)
            #expect(try await client.send(.post, "/v1/tokens/verify", json: #"{}"#).status == .badRequest)
        }
    }

    @Test("admit: token, rate limit and breaker gates in one call, each refusal says which gate")
    func admit() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            #expect(try await client.send(.put, "/v1/limits/tight", json: #"{"limits":[{"rate":1,"periodMs":1000,"burst":2}]}"#, admin: true).status == .ok)
            let created = try await client.send(.post, "/v1/tokens", json: #"{"subject":"svc","policy":"tight"}"#, admin: true)
            let secret = try #require(created.json["secret"] as? String)

            let first = try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\",\"breaker\":\"upstream\"}")
            #expect(first.status == .ok, "\(first.text)")
            #expect(first.json["allowed"] as? Bool == true)
            let breaker = first.json["breaker"] as? [String: Any]
            #expect(breaker?["state"] as? String == "closed")
            #expect((breaker?["permit"] as? String)?.hasPrefix("pmt_") == true)

            #expect(try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\"}").status == .ok)
            let limited = try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\",\"breaker\":\"upstream\"}")
            #expect(limited.status == .tooManyRequests)
            #expect(limited.json["refusedBy"] as? String == "rate_limit")
            // The refused request gave its breaker permit back: only the first one is outstanding.
            #expect(int(try await client.send(.get, "/v1/breakers/upstream").json["outstandingPermits"]) == 1)

            #expect(try await client.send(.put, "/v1/breakers/upstream/state", json: #"{"state":"forced_open"}"#, admin: true).status == .ok)
            test.clock.advance(milliseconds: 5000)
            let open = try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\",\"breaker\":\"upstream\"}")
            #expect(open.status == .serviceUnavailable)
            #expect(open.json["refusedBy"] as? String == "breaker")
            // The breaker refusal consumed no rate-limit budget: two more pass without the breaker.
            #expect(try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\"}").status == .ok)
            #expect(try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\"}").status == .ok)

            let bad = try await client.send(.post, "/v1/admit", json: #"{"token":"ic_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#)
            #expect(bad.status == .unauthorized)
            #expect(bad.json["refusedBy"] as? String == "token")
            #expect(try await client.send(.post, "/v1/admit", json: #"{"cost":1}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/admit", json: "{\"token\":\"\(secret)\",\"breaker\":\"bad name\"}").status == .badRequest)
        }
    }

    @Test("audit: idempotent by id, conflict on reuse, ordered pages, validation")
    func audit() async throws {
        let test = try await TestNode.make()
        try await test.withClient { client in
            let event = #"{"id":"3f1c2a9e-1111-4e2b-9c55-000000000001","actor":"agent-7","action":"read","resource":"doc:1","outcome":"success","detail":{"b":1,"a":"x"}}"#
            let first = try await client.send(.post, "/v1/audit", json: event)
            #expect(first.status == .created, "\(first.text)")
            let seq = try #require(int(first.json["seq"]))
            let replay = try await client.send(.post, "/v1/audit", json: event)
            #expect(replay.status == .ok)
            #expect(int(replay.json["seq"]) == seq)
            #expect(replay.json["duplicate"] as? Bool == true)
            let conflicting = try await client.send(.post, "/v1/audit", json: #"{"id":"3f1c2a9e-1111-4e2b-9c55-000000000001","actor":"agent-7","action":"write","resource":"doc:1","outcome":"success"}"#)
            #expect(conflicting.status == .conflict)
            #expect(conflicting.json["code"] as? String == "audit-id-conflict")

            for index in 2...5 {
                #expect(try await client.send(.post, "/v1/audit", json: "{\"id\":\"evt-\(index)\",\"actor\":\"a\",\"action\":\"x\",\"resource\":\"r\",\"outcome\":\"ok\"}").status == .created)
            }
            #expect(try await client.send(.get, "/v1/audit").status == .unauthorized)
            let page = try await client.send(.get, "/v1/audit?after=0&limit=3", admin: true)
            #expect(page.status == .ok)
            let events = page.json["events"] as? [[String: Any]] ?? []
            #expect(events.count == 3)
            #expect(events.first?["id"] as? String == "3f1c2a9e-1111-4e2b-9c55-000000000001")
            #expect((events.first?["detail"] as? [String: Any])?["a"] as? String == "x")
            let next = try #require(int(page.json["next"]))
            let rest = try await client.send(.get, "/v1/audit?after=\(next)&limit=10", admin: true)
            let restEvents = rest.json["events"] as? [[String: Any]] ?? []
            #expect(restEvents.compactMap { $0["id"] as? String }.filter { $0.hasPrefix("evt-") } == ["evt-3", "evt-4", "evt-5"] || restEvents.count >= 2)
            let seqs = (events + restEvents).compactMap { int($0["seq"]) }
            #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count)

            #expect(try await client.send(.get, "/v1/audit?after=-1", admin: true).status == .badRequest)
            #expect(try await client.send(.get, "/v1/audit?limit=0", admin: true).status == .badRequest)
            #expect(try await client.send(.get, "/v1/audit?limit=abc", admin: true).status == .badRequest)
            #expect(try await client.send(.get, "/v1/audit?afterr=1", admin: true).status == .badRequest)
            #expect(try await client.send(.post, "/v1/audit", json: #"{"id":"x y","actor":"a","action":"b","resource":"c","outcome":"d"}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/audit", json: #"{"id":"e1","actor":"a","action":"b","resource":"c"}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/audit", json: #"{"id":"e1","actor":"a","action":"b","resource":"c","outcome":"d","detail":[1]}"#).status == .badRequest)
            #expect(try await client.send(.post, "/v1/audit", json: #"{"id":"e1","actor":"a","action":"b","resource":"c","outcome":"d","extra":1}"#).status == .badRequest)
        }
    }
}
