import ArgumentParser
import AsyncHTTPClient
import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import Synchronization

/// `coordinator load`: drives mixed traffic (admit, limit checks, breaker acquire + record against a
/// simulated upstream, token verification, audit appends) through a list of nodes, at a fixed rate
/// or as fast as it can, and reports throughput, latency percentiles, status counts and — in a JSON
/// file — every acknowledgement, for loss and limit checks.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive mixed load through nodes (admit, limits, breakers + record, tokens/verify, audit); see README.",
        discussion: "The simulated upstream fails with --failure-rate at start; --failure-schedule (SECONDS:RATE,…) and "
            + "--failure-rate-file (re-read every 200 ms) change it while the load runs. Exits 1 when any answer was "
            + "unexpected (transport errors, 5xx other than breaker refusals, 4xx other than rate-limit refusals), "
            + "unless --allow-errors.")

    @Option(help: "Node base URLs, comma-separated (http://127.0.0.1:8081,http://127.0.0.1:8082).")
    var nodes: String
    @Option(help: "Admin token for the set-up calls (default: COORDINATOR_ADMIN_TOKEN).")
    var adminToken: String?
    @Option(help: "Seconds of load.") var duration: Double = 30
    @Option(help: "Requests per second over all connections; 0 runs as fast as the nodes answer.") var rate: Double = 0
    @Option(help: "Concurrent connections (each sends one request at a time, spread over the nodes).") var connections: Int = 16
    @Option(help: "Operation weights: admit, limits, breakers, tokens, audit.")
    var mix: String = "admit=30,limits=20,breakers=20,tokens=15,audit=15"
    @Option(help: "Distinct rate-limit keys for limit checks.") var keys: Int = 16
    @Option(help: "Tokens created for admit and verify.") var tokens: Int = 4
    @Option(help: "Policy the load uses (created or replaced unless --keep-config).") var policy: String = "load"
    @Option(help: "Policy limit per key: requests per period.") var limitRate: Int = 2_000
    @Option(help: "Policy limit period in milliseconds.") var limitPeriodMs: Int = 1_000
    @Option(help: "Policy burst.") var limitBurst: Int = 200
    @Option(help: "Breaker the load acquires and records against (configured unless --keep-config).") var breaker: String = "load-upstream"
    @Flag(help: "Use the policy and breaker configuration already on the nodes.") var keepConfig = false
    @Option(help: "Simulated upstream failure rate at start, 0…1.") var failureRate: Double = 0
    @Option(help: "Failure-rate changes while running: SECONDS:RATE,… (e.g. 10:0.9,20:0).") var failureSchedule: String?
    @Option(help: "A file holding the failure rate (0…1), re-read every 200 ms while running.") var failureRateFile: String?
    @Option(help: "Simulated upstream call duration in milliseconds.") var upstreamLatencyMs: Int = 1
    @Option(help: "Per-request timeout in milliseconds.") var timeoutMs: Int = 5_000
    @Option(help: "Write every acknowledgement and the summary to this JSON file.") var output: String?
    @Option(help: "Progress line period in milliseconds (0: none).") var progressMs: Int = 1_000
    @Flag(help: "Exit 0 even when answers were unexpected.") var allowErrors = false

    func validate() throws {
        guard duration > 0, duration <= 86_400 else { throw ValidationError("--duration must be between 0 and 86400 seconds") }
        guard rate >= 0 else { throw ValidationError("--rate must be ≥ 0") }
        guard (1...4_096).contains(connections) else { throw ValidationError("--connections must be between 1 and 4096") }
        guard (1...100_000).contains(keys), (1...1_000).contains(tokens) else { throw ValidationError("--keys must be 1…100000 and --tokens 1…1000") }
        guard (0...1).contains(failureRate) else { throw ValidationError("--failure-rate must be between 0 and 1") }
        guard upstreamLatencyMs >= 0, timeoutMs > 0 else { throw ValidationError("--upstream-latency-ms must be ≥ 0 and --timeout-ms > 0") }
        _ = try LoadMix(parsing: mix)
        _ = try FailureSchedule(parsing: failureSchedule ?? "")
        _ = try Self.nodeURLs(nodes)
    }

    static func nodeURLs(_ text: String) throws -> [String] {
        let urls = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw ValidationError("--nodes names no URL") }
        for url in urls where !(url.hasPrefix("http://") || url.hasPrefix("https://")) || URL(string: url)?.host == nil {
            throw ValidationError("--nodes: \"\(url)\" is not an http(s) URL")
        }
        return urls.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    func run() async throws {
        let urls = try Self.nodeURLs(nodes)
        let mix = try LoadMix(parsing: mix)
        let schedule = try FailureSchedule(parsing: failureSchedule ?? "")
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.timeout = .init(connect: .milliseconds(Int64(timeoutMs)), read: .milliseconds(Int64(timeoutMs)))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            try await drive(client: client, urls: urls, mix: mix, schedule: schedule)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func drive(client: HTTPClient, urls: [String], mix: LoadMix, schedule: FailureSchedule) async throws {
        let http = LoadHTTP(client: client, timeout: .milliseconds(Int64(timeoutMs)))
        let admin = adminToken ?? ProcessInfo.processInfo.environment["COORDINATOR_ADMIN_TOKEN"]
        let setup = try await LoadSetup.prepare(
            http: http, urls: urls, admin: admin, policy: policy, limit: (limitRate, limitPeriodMs, limitBurst),
            breaker: breaker, keepConfig: keepConfig, tokens: tokens)
        let failure = FailureControl(initial: failureRate)
        let recorder = LoadRecorder()
        let started = ContinuousClock.now
        let startedWallMs = Int64(Date().timeIntervalSince1970 * 1000)
        let end = started + .milliseconds(Int64(duration * 1000))
        let plan = LoadPlan(
            urls: urls, mix: mix, keys: keys, policy: policy, breaker: breaker, secrets: setup.secrets,
            upstreamLatency: .milliseconds(Int64(upstreamLatencyMs)), startedWallMs: startedWallMs)
        print("coordinator load: \(urls.count) node(s), \(connections) connections, \(duration) s, "
              + (rate > 0 ? "\(rate) req/s" : "max throughput") + ", mix \(mix.description), policy \(policy) "
              + "(\(limitRate)/\(limitPeriodMs) ms, burst \(limitBurst)), breaker \(breaker)")

        await withTaskGroup(of: Void.self) { group in
            // Failure-rate control: schedule and file.
            group.addTask {
                while ContinuousClock.now < end {
                    let elapsed = ContinuousClock.now - started
                    if let scheduled = schedule.rate(at: elapsed) { failure.set(scheduled) }
                    if let path = failureRateFile, let text = try? String(contentsOfFile: path, encoding: .utf8),
                       let value = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)), (0...1).contains(value) {
                        failure.set(value)
                    }
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            if progressMs > 0 {
                let interval = Duration.milliseconds(Int64(progressMs))
                group.addTask {
                    var last = recorder.snapshot()
                    while ContinuousClock.now < end {
                        try? await Task.sleep(for: interval)
                        let now = recorder.snapshot()
                        let elapsed = ContinuousClock.now - started
                        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                        let perSecond = Double(now.requests - last.requests) / (Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
                        FileHandle.standardError.write(Data(String(
                            format: "[%6.1fs] %8d req %8.0f/s  ok %d  refused %d  unexpected %d  p99 %.2f ms  upstream failure rate %.2f\n",
                            seconds, now.requests, perSecond, now.ok, now.refused, now.unexpected,
                            Double(now.p99Microseconds) / 1000, failure.get()).utf8))
                        last = now
                    }
                }
            }
            for worker in 0..<connections {
                group.addTask {
                    var generator = SystemRandomNumberGenerator()
                    var sent = 0
                    while true {
                        let intended: ContinuousClock.Instant
                        if rate > 0 {
                            // Open model: request k of worker w is due at (k·connections + w) / rate, and its
                            // latency counts from then (no coordinated omission).
                            let index = Double(sent * connections + worker)
                            intended = started + .nanoseconds(Int64(index / rate * 1e9))
                            // Past the end, or a schedule that fell behind past the end: stop.
                            if intended >= end || ContinuousClock.now >= end { break }
                            if intended > ContinuousClock.now { try? await Task.sleep(until: intended, clock: .continuous) }
                        } else {
                            intended = ContinuousClock.now
                            if intended >= end { break }
                        }
                        let node = (worker + sent) % plan.urls.count
                        let outcome = await plan.perform(mix.pick(using: &generator), node: node, http: http, failure: failure, using: &generator)
                        recorder.record(outcome, latency: ContinuousClock.now - intended)
                        sent += 1
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - started
        let summary = recorder.summary(elapsed: elapsed)
        print(summary.text)
        if let output {
            try recorder.writeJSON(to: output, summary: summary, startedWallMs: startedWallMs, urls: urls, policy: policy, breaker: breaker)
            print("acknowledgements: \(output) (\(summary.requests) entries)")
        }
        if summary.unexpected > 0 && !allowErrors {
            FileHandle.standardError.write(Data("coordinator load: \(summary.unexpected) unexpected answers (see status counts)\n".utf8))
            throw ExitCode(1)
        }
    }
}

// MARK: - Mix and failure control

/// Operation weights.
struct LoadMix: Sendable, CustomStringConvertible {
    enum Operation: String, CaseIterable, Sendable { case admit, limits, breakers, tokens, audit }
    let weights: [(Operation, Int)]
    let total: Int

    init(parsing text: String) throws {
        var weights: [(Operation, Int)] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, let operation = Operation(rawValue: pair[0]), let weight = Int(pair[1]), weight >= 0 else {
                throw ValidationError("--mix: \"\(part)\" is not OPERATION=WEIGHT with OPERATION one of admit, limits, breakers, tokens, audit")
            }
            guard !weights.contains(where: { $0.0 == operation }) else { throw ValidationError("--mix names \(operation) twice") }
            weights.append((operation, weight))
        }
        total = weights.reduce(0) { $0 + $1.1 }
        guard total > 0 else { throw ValidationError("--mix: the weights add up to 0") }
        self.weights = weights.filter { $0.1 > 0 }
    }

    func pick(using generator: inout some RandomNumberGenerator) -> Operation {
        var point = Int.random(in: 0..<total, using: &generator)
        for (operation, weight) in weights {
            if point < weight { return operation }
            point -= weight
        }
        return weights[weights.count - 1].0
    }

    var description: String { weights.map { "\($0.0.rawValue)=\($0.1)" }.joined(separator: ",") }
}

/// `SECONDS:RATE,…`: from each time on (since the start), the upstream fails with that rate.
struct FailureSchedule: Sendable {
    let steps: [(at: Duration, rate: Double)]

    init(parsing text: String) throws {
        var steps: [(Duration, Double)] = []
        for part in text.split(separator: ",") where !part.isEmpty {
            let pair = part.split(separator: ":", maxSplits: 1)
            guard pair.count == 2, let seconds = Double(pair[0]), seconds >= 0, let rate = Double(pair[1]), (0...1).contains(rate) else {
                throw ValidationError("--failure-schedule: \"\(part)\" is not SECONDS:RATE with RATE in 0…1")
            }
            steps.append((.milliseconds(Int64(seconds * 1000)), rate))
        }
        self.steps = steps.sorted { $0.0 < $1.0 }
    }

    /// The scheduled rate at `elapsed`, if a step has begun.
    func rate(at elapsed: Duration) -> Double? { steps.last { $0.at <= elapsed }?.rate }
}

/// The simulated upstream's current failure rate.
final class FailureControl: Sendable {
    private let value: Mutex<Double>
    init(initial: Double) { value = Mutex(initial) }
    func set(_ rate: Double) { value.withLock { $0 = rate } }
    func get() -> Double { value.withLock { $0 } }
}

// MARK: - HTTP

/// JSON over HTTP with a timeout; transport failures become status 0 with the error text.
struct LoadHTTP: Sendable {
    let client: HTTPClient
    let timeout: TimeAmount

    struct Reply: Sendable {
        var status: Int
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] }
        var body: String
    }

    func call(_ method: HTTPMethod, _ url: String, body: String? = nil, bearer: String? = nil) async -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        do {
            let response = try await client.execute(request, timeout: timeout)
            let buffer = try await response.body.collect(upTo: 1 << 20)
            return Reply(status: Int(response.status.code), body: String(buffer: buffer))
        } catch {
            return Reply(status: 0, body: "\(error)")
        }
    }
}

/// Creates the policy, the breaker configuration and the tokens the load uses.
enum LoadSetup {
    struct Prepared: Sendable { var secrets: [String] }

    static func prepare(
        http: LoadHTTP, urls: [String], admin: String?, policy: String, limit: (rate: Int, periodMs: Int, burst: Int),
        breaker: String, keepConfig: Bool, tokens: Int
    ) async throws -> Prepared {
        guard let admin, !admin.isEmpty else {
            throw ValidationError("set-up needs the admin token: --admin-token or COORDINATOR_ADMIN_TOKEN")
        }
        for url in urls {
            let ready = await http.call(.GET, url + "/readyz")
            guard ready.status == 200 else {
                throw LoadFailure("\(url) is not ready (GET /readyz: \(ready.status) \(ready.body.prefix(300)))")
            }
        }
        func require(_ reply: LoadHTTP.Reply, _ what: String, _ statuses: Set<Int> = [200]) throws {
            guard statuses.contains(reply.status) else { throw LoadFailure("\(what) failed: \(reply.status) \(reply.body.prefix(300))") }
        }
        if !keepConfig {
            try require(await http.call(
                .PUT, urls[0] + "/v1/limits/\(policy)",
                body: #"{"algorithm":"gcra","limits":[{"rate":\#(limit.rate),"periodMs":\#(limit.periodMs),"burst":\#(limit.burst)}]}"#,
                bearer: admin), "PUT /v1/limits/\(policy)")
            try require(await http.call(
                .PUT, urls[0] + "/v1/breakers/\(breaker)/config",
                body: #"{"window":{"type":"count","size":50},"minimumCalls":20,"failureRateThreshold":50,"openWaitMs":2000,"halfOpenPermittedCalls":3,"permitTimeoutMs":10000}"#,
                bearer: admin), "PUT /v1/breakers/\(breaker)/config")
        }
        var secrets: [String] = []
        for index in 0..<tokens {
            let created = await http.call(
                .POST, urls[index % urls.count] + "/v1/tokens", body: #"{"subject":"load-\#(index)","policy":"\#(policy)"}"#, bearer: admin)
            try require(created, "POST /v1/tokens", [201])
            guard let secret = created.json?["secret"] as? String else { throw LoadFailure("POST /v1/tokens returned no secret: \(created.body.prefix(300))") }
            secrets.append(secret)
        }
        // Every node must know the policy and the tokens before the clock starts (cluster propagation).
        for (index, url) in urls.enumerated() {
            let deadline = ContinuousClock.now + .seconds(10)
            while true {
                let verified = await http.call(.POST, url + "/v1/tokens/verify", body: #"{"token":"\#(secrets[index % secrets.count])"}"#)
                if verified.status == 200 { break }
                if ContinuousClock.now > deadline { throw LoadFailure("\(url) does not accept the load's tokens: \(verified.status) \(verified.body.prefix(300))") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        return Prepared(secrets: secrets)
    }
}

struct LoadFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Operations

/// One answer, classified.
struct LoadOutcome: Sendable {
    enum Class: String, Sendable { case ok, refused, unexpected }
    var operation: String
    var node: Int
    var status: Int
    var classification: Class
    /// Audit event id, rate-limit key or token index.
    var subject: String?
    var seq: Int64?
    var buffered = false
    var allowed: Bool?
    /// The breaker state the node answered with (admit, breakers).
    var breakerState: String?
    var error: String?
    var atWallMs: Int64 = 0
    /// From the request's scheduled start to its answer (set when recorded).
    var latencyMicroseconds: UInt64 = 0
}

/// What the workers send.
struct LoadPlan: Sendable {
    let urls: [String]
    let mix: LoadMix
    let keys: Int
    let policy: String
    let breaker: String
    let secrets: [String]
    let upstreamLatency: Duration
    let startedWallMs: Int64

    func perform(
        _ operation: LoadMix.Operation, node: Int, http: LoadHTTP, failure: FailureControl, using generator: inout some RandomNumberGenerator
    ) async -> LoadOutcome {
        let base = urls[node]
        var outcome: LoadOutcome
        switch operation {
        case .admit:
            let token = Int.random(in: 0..<secrets.count, using: &generator)
            let reply = await http.call(.POST, base + "/v1/admit", body: #"{"token":"\#(secrets[token])","cost":1,"breaker":"\#(breaker)"}"#)
            outcome = classify("admit", node, reply, ok: [200], refused: reply.status == 429 || refusedByBreaker(reply))
            outcome.subject = "token-\(token)"
            outcome.allowed = reply.status == 200
            outcome.breakerState = ((reply.json?["breaker"] as? [String: Any])?["state"] ?? reply.json?["state"]) as? String
            if reply.status == 200, let permit = (reply.json?["breaker"] as? [String: Any])?["permit"] as? String {
                let failed = Double.random(in: 0..<1, using: &generator) < failure.get()
                if let recordFailure = await callUpstreamAndRecord(base: base, permit: permit, failed: failed, http: http) {
                    outcome.classification = .unexpected
                    outcome.error = recordFailure
                }
            }
        case .limits:
            let key = "key-\(Int.random(in: 0..<keys, using: &generator))"
            let reply = await http.call(.POST, base + "/v1/limits/\(policy)/check", body: #"{"key":"\#(key)","cost":1}"#)
            outcome = classify("limits", node, reply, ok: [200], refused: reply.status == 429)
            outcome.subject = key
            outcome.allowed = reply.status == 200
        case .breakers:
            let reply = await http.call(.POST, base + "/v1/breakers/\(breaker)/acquire")
            outcome = classify("breakers", node, reply, ok: [200], refused: refusedByBreaker(reply))
            outcome.allowed = reply.status == 200
            outcome.breakerState = reply.json?["state"] as? String
            if reply.status == 200, let permit = reply.json?["permit"] as? String {
                let failed = Double.random(in: 0..<1, using: &generator) < failure.get()
                if let recordFailure = await callUpstreamAndRecord(base: base, permit: permit, failed: failed, http: http) {
                    outcome.classification = .unexpected
                    outcome.error = recordFailure
                }
            }
        case .tokens:
            let token = Int.random(in: 0..<secrets.count, using: &generator)
            let reply = await http.call(.POST, base + "/v1/tokens/verify", body: #"{"token":"\#(secrets[token])"}"#)
            outcome = classify("tokens", node, reply, ok: [200], refused: false)
            outcome.subject = "token-\(token)"
        case .audit:
            let id = UUID().uuidString.lowercased()
            let reply = await http.call(
                .POST, base + "/v1/audit",
                body: #"{"id":"\#(id)","actor":"load","action":"call","resource":"\#(breaker)","outcome":"ok","detail":{"node":\#(node)}}"#)
            outcome = classify("audit", node, reply, ok: [201, 202], refused: false)
            outcome.subject = id
            if let json = reply.json {
                outcome.seq = (json["seq"] as? NSNumber)?.int64Value
                outcome.buffered = json["buffered"] as? Bool ?? false
            }
        }
        outcome.atWallMs = Int64(Date().timeIntervalSince1970 * 1000)
        return outcome
    }

    /// Waits the simulated upstream's latency and records the outcome; returns an error text when
    /// the record call was not accepted.
    private func callUpstreamAndRecord(base: String, permit: String, failed: Bool, http: LoadHTTP) async -> String? {
        if upstreamLatency > .zero { try? await Task.sleep(for: upstreamLatency) }
        let milliseconds = upstreamLatency.components.seconds * 1000 + upstreamLatency.components.attoseconds / 1_000_000_000_000_000
        let reply = await http.call(
            .POST, base + "/v1/breakers/\(breaker)/record",
            body: #"{"permit":"\#(permit)","outcome":"\#(failed ? "failure" : "success")","durationMs":\#(milliseconds)}"#)
        return reply.status == 200 ? nil : "record: \(reply.status) \(reply.body.prefix(200))"
    }

    private func refusedByBreaker(_ reply: LoadHTTP.Reply) -> Bool {
        guard reply.status == 503, let json = reply.json else { return false }
        return json["refusedBy"] as? String == "breaker" || json["permitted"] as? Bool == false
    }

    private func classify(_ operation: String, _ node: Int, _ reply: LoadHTTP.Reply, ok: Set<Int>, refused: Bool) -> LoadOutcome {
        let classification: LoadOutcome.Class = ok.contains(reply.status) ? .ok : refused ? .refused : .unexpected
        return LoadOutcome(
            operation: operation, node: node, status: reply.status, classification: classification,
            error: classification == .unexpected ? String(reply.body.prefix(300)) : nil)
    }
}

// MARK: - Recording

/// Collects outcomes and latencies from every worker.
final class LoadRecorder: Sendable {
    private struct State {
        var outcomes: [LoadOutcome] = []
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var counts: [String: Int] = [:]
        var ok = 0
        var refused = 0
        var unexpected = 0
    }
    private let state = Mutex(State())

    struct Progress: Sendable { var requests: Int; var ok: Int; var refused: Int; var unexpected: Int; var p99Microseconds: UInt64 }

    struct Summary: Sendable {
        var requests: Int
        var seconds: Double
        var ok: Int
        var refused: Int
        var unexpected: Int
        var percentilesMicroseconds: [(String, UInt64)]
        var counts: [(String, Int)]
        var firstErrors: [String]
        var text: String {
            var lines = [String(format: "requests %d in %.1f s = %.0f/s  (ok %d, refused %d, unexpected %d)",
                                requests, seconds, Double(requests) / max(seconds, 0.001), ok, refused, unexpected)]
            lines.append("latency ms: " + percentilesMicroseconds.map { String(format: "%@ %.2f", $0.0, Double($0.1) / 1000) }.joined(separator: "  "))
            lines.append("status counts:")
            for (key, count) in counts { lines.append("  " + key.padding(toLength: 28, withPad: " ", startingAt: 0) + String(count)) }
            if !firstErrors.isEmpty {
                lines.append("first unexpected answers:")
                lines += firstErrors.map { "  " + $0 }
            }
            return lines.joined(separator: "\n")
        }
    }

    func record(_ outcome: LoadOutcome, latency: Duration) {
        let microseconds = UInt64(max(1, latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000))
        let key = "\(outcome.operation) \(outcome.status)" + (outcome.buffered ? " buffered" : "") + (outcome.classification == .unexpected ? " UNEXPECTED" : "")
        var outcome = outcome
        outcome.latencyMicroseconds = microseconds
        state.withLock { state in
            state.outcomes.append(outcome)
            _ = state.histogram.record(min(microseconds, 600_000_000))
            state.counts[key, default: 0] += 1
            switch outcome.classification {
            case .ok: state.ok += 1
            case .refused: state.refused += 1
            case .unexpected: state.unexpected += 1
            }
        }
    }

    func snapshot() -> Progress {
        state.withLock {
            Progress(requests: $0.outcomes.count, ok: $0.ok, refused: $0.refused, unexpected: $0.unexpected,
                     p99Microseconds: $0.histogram.totalCount > 0 ? $0.histogram.valueAtPercentile(99) : 0)
        }
    }

    func summary(elapsed: Duration) -> Summary {
        state.withLock { state in
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let percentiles: [(String, UInt64)] = state.histogram.totalCount == 0 ? [] : [
                ("p50", state.histogram.valueAtPercentile(50)), ("p90", state.histogram.valueAtPercentile(90)),
                ("p99", state.histogram.valueAtPercentile(99)), ("p99.9", state.histogram.valueAtPercentile(99.9)),
                ("max", state.histogram.max),
            ]
            let errors = state.outcomes.lazy.filter { $0.classification == .unexpected }.prefix(5)
                .map { "\($0.operation) node \($0.node) status \($0.status): \($0.error ?? "")" }
            return Summary(
                requests: state.outcomes.count, seconds: seconds, ok: state.ok, refused: state.refused, unexpected: state.unexpected,
                percentilesMicroseconds: percentiles, counts: state.counts.sorted { $0.key < $1.key }, firstErrors: Array(errors))
        }
    }

    /// `{"summary": {…}, "acks": [{"op","node","status","class","subject","seq","buffered","allowed","atMs"}…]}`.
    func writeJSON(to path: String, summary: Summary, startedWallMs: Int64, urls: [String], policy: String, breaker: String) throws {
        let acks: [[String: Any]] = state.withLock { state in
            state.outcomes.map { outcome in
                var entry: [String: Any] = [
                    "op": outcome.operation, "node": outcome.node, "status": outcome.status,
                    "class": outcome.classification.rawValue, "atMs": outcome.atWallMs, "latencyUs": outcome.latencyMicroseconds,
                ]
                if let subject = outcome.subject { entry["subject"] = subject }
                if let seq = outcome.seq { entry["seq"] = seq }
                if outcome.buffered { entry["buffered"] = true }
                if let allowed = outcome.allowed { entry["allowed"] = allowed }
                if let state = outcome.breakerState { entry["breakerState"] = state }
                if let error = outcome.error { entry["error"] = error }
                return entry
            }
        }
        let document: [String: Any] = [
            "summary": [
                "startedAtMs": startedWallMs, "seconds": summary.seconds, "requests": summary.requests, "ok": summary.ok,
                "refused": summary.refused, "unexpected": summary.unexpected, "nodes": urls, "policy": policy, "breaker": breaker,
                "latencyMicroseconds": Dictionary(summary.percentilesMicroseconds.map { ($0.0, $0.1) }, uniquingKeysWith: { $1 }),
                "statusCounts": Dictionary(summary.counts.map { ($0.0, $0.1) }, uniquingKeysWith: { $1 }),
            ] as [String: Any],
            "acks": acks,
        ]
        let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
