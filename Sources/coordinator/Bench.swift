import ArgumentParser
import Coordinator
import CoordinatorCore
import CoordinatorHTTP
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `coordinator bench http|exact|approximate|propagation|postgres|core` — see README, "Benchmarks".
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (see README, \"Benchmarks\").",
        subcommands: [BenchHTTP.self, BenchExact.self, BenchApproximate.self, BenchPropagation.self, BenchPostgres.self, BenchCore.self]
    )
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - bench http

/// Runs `wrk` against a bare Hummingbird route and against `POST /v1/limits/{policy}/check` of a real
/// node, both served by this process on 127.0.0.1, one after the other with the same settings, and
/// prints the ratio.
struct BenchHTTP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "POST /v1/limits/{policy}/check vs a bare Hummingbird route with a body of the same size (wrk, 127.0.0.1)."
    )

    @Option(help: "Seconds of load per route (a warm-up of up to 2 s precedes each).") var duration: Int = 10
    @Option(help: "Open connections (wrk -c).") var connections: Int = 32
    @Option(help: "wrk threads (wrk -t).") var threads: Int = 1

    static let goalRatio = 0.5
    static let requestBody = #"{"key":"bench-key"}"#

    func validate() throws {
        guard (1...600).contains(duration) else { throw ValidationError("--duration must be between 1 and 600 seconds") }
        guard (1...10_000).contains(connections) else { throw ValidationError("--connections must be between 1 and 10000") }
        guard (1...64).contains(threads), threads <= connections else {
            throw ValidationError("--threads must be between 1 and 64 and at most --connections")
        }
    }

    func run() async throws {
        guard let wrk = findExecutable("wrk") else {
            FileHandle.standardError.write(Data("error: wrk not found on PATH; install it: apt-get install wrk\n".utf8))
            throw ExitCode(2)
        }
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("coordinator-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: temp) }
        let script = temp.appendingPathComponent("post.lua")
        try """
        wrk.method = "POST"
        wrk.body = '\(Self.requestBody)'
        wrk.headers["Content-Type"] = "application/json"

        """.write(to: script, atomically: true, encoding: .utf8)

        var logger = Logger(label: "coordinator-bench")
        logger.logLevel = .warning
        // As `serve` does, so the metrics middleware and the node's counters do their real work.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        // (2) A real node with a policy that allows every check.
        var configuration = NodeConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.dataDirectory = temp.appendingPathComponent("data").path
        configuration.sqliteSynchronous = .normal
        configuration.logLevel = "warning"
        let limit = LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)
        configuration.policies = ["bench": LimitPolicy(algorithm: .gcra, limits: [limit])]
        configuration.defaultPolicyName = "bench"
        let started = try await CoordinatorNode.start(configuration: configuration, logger: logger)
        let api = CoordinatorAPI(node: started.node, registry: registry)
        let (coordinatorPorts, coordinatorPort) = AsyncStream<Int>.makeStream()
        let coordinatorApp = Application(
            router: api.makeRouter(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "coordinator"),
            onServerRunning: { channel in coordinatorPort.yield(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        let coordinatorGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: NodeService(node: started.node)), .init(service: coordinatorApp)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await coordinatorGroup.run() }
            defer { tasks.cancelAll() }
            do {
                let port = try await firstPort(coordinatorPorts, "coordinator")
                let checkPath = "/v1/limits/bench/check"
                let real = try await httpPost(port: port, path: checkPath, body: Self.requestBody)
                guard real.status == 200 else {
                    throw BenchError("the coordinator answered \(real.status) to \(checkPath): \(real.body)")
                }

                // (1) A bare route answering a constant JSON body exactly as long as the real one.
                let bareBody = Self.constantBody(length: real.body.utf8.count)
                let router = Router()
                router.post("/bare") { request, _ -> Response in
                    var request = request
                    _ = try await request.collectBody(upTo: 65_536)
                    return Response(
                        status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: bareBody)))
                }
                let (barePorts, barePort) = AsyncStream<Int>.makeStream()
                let bareApp = Application(
                    router: router,
                    configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "bare"),
                    onServerRunning: { channel in barePort.yield(channel.localAddress?.port ?? 0) },
                    logger: logger
                )
                let bareGroup = ServiceGroup(
                    configuration: .init(services: [.init(service: bareApp)], gracefulShutdownSignals: [], logger: logger))
                tasks.addTask { try await bareGroup.run() }
                let bare = try await firstPort(barePorts, "bare")
                let check = try await httpPost(port: bare, path: "/bare", body: Self.requestBody)
                guard check.status == 200, check.body.utf8.count == real.body.utf8.count else {
                    throw BenchError("the bare route answered \(check.status) with \(check.body.utf8.count) bytes")
                }

                print("coordinator bench http: wrk -t\(threads) -c\(connections) -d\(duration)s --latency, POST \(Self.requestBody)")
                print("response body: \(real.body.utf8.count) bytes on both routes; coordinator body: \(real.body)")
                let warmup = min(2, duration)
                let bareURL = "http://127.0.0.1:\(bare)/bare"
                let coordinatorURL = "http://127.0.0.1:\(port)\(checkPath)"
                _ = try await runWrk(wrk, url: bareURL, script: script.path, seconds: warmup)
                let bareResult = try await runWrk(wrk, url: bareURL, script: script.path, seconds: duration)
                _ = try await runWrk(wrk, url: coordinatorURL, script: script.path, seconds: warmup)
                let coordinatorResult = try await runWrk(wrk, url: coordinatorURL, script: script.path, seconds: duration)

                await bareGroup.triggerGracefulShutdown()
                await coordinatorGroup.triggerGracefulShutdown()
                try await tasks.waitForAll()
                try report(bare: bareResult, coordinator: coordinatorResult)
            } catch {
                await coordinatorGroup.triggerGracefulShutdown()
                throw error
            }
        }
    }

    /// `{"allowed":true,"padding":"xxx…"}` of exactly `length` bytes.
    static func constantBody(length: Int) -> String {
        let prefix = #"{"allowed":true,"padding":""#
        let suffix = #""}"#
        let fill = max(0, length - prefix.utf8.count - suffix.utf8.count)
        return prefix + String(repeating: "x", count: fill) + suffix
    }

    func report(bare: WrkResult, coordinator: WrkResult) throws {
        func row(_ name: String, _ r: WrkResult) -> String {
            let name = name.padding(toLength: 34, withPad: " ", startingAt: 0)
            let rps = String(format: "%12.0f", r.requestsPerSecond)
            let p50 = (r.p50.map { String(format: "%.3f ms", $0 * 1000) } ?? "n/a").leftPadded(11)
            let p99 = (r.p99.map { String(format: "%.3f ms", $0 * 1000) } ?? "n/a").leftPadded(11)
            return "\(name) \(rps) \(p50) \(p99)  \(r.requests) requests, socket errors \(r.socketErrors)"
        }
        print("")
        print("route                                   req/s         p50         p99")
        print(row("POST /bare (Hummingbird, baseline)", bare))
        print(row("POST /v1/limits/bench/check", coordinator))
        let ratio = bare.requestsPerSecond > 0 ? coordinator.requestsPerSecond / bare.requestsPerSecond : 0
        let verdict = ratio >= Self.goalRatio ? "goal met" : "GOAL MISSED"
        print(String(format: "ratio coordinator/bare: %.1f %% (goal ≥ %.0f %%): %@", ratio * 100, Self.goalRatio * 100, verdict))
        var failures: [String] = []
        for (name, r) in [("bare", bare), ("coordinator", coordinator)] where r.non2xx > 0 {
            failures.append("\(name): \(r.non2xx) non-2xx responses")
        }
        if !failures.isEmpty { throw BenchError(failures.joined(separator: "; ")) }
    }

    // MARK: wrk

    struct WrkResult {
        var requestsPerSecond: Double = 0
        var requests: Int = 0
        var p50: Double?
        var p99: Double?
        var non2xx: Int = 0
        var socketErrors: String = "none"
    }

    func runWrk(_ wrk: String, url: String, script: String, seconds: Int) async throws -> WrkResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: wrk)
        process.arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, url]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let finished = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { finished.continuation.yield($0.terminationStatus); finished.continuation.finish() }
        try process.run()
        // wrk stops by itself after `seconds`; past a generous grace it is killed.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(seconds + 30))
            process.terminate()
        }
        var status: Int32 = -1
        for await code in finished.stream { status = code }
        watchdog.cancel()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard status == 0 else { throw BenchError("wrk exited with status \(status) for \(url):\n\(text)") }
        return try Self.parse(text, url: url)
    }

    static func parse(_ text: String, url: String) throws -> WrkResult {
        var result = WrkResult()
        var sawRate = false
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if line.hasPrefix("Requests/sec:"), parts.count >= 2, let value = Double(parts[1]) {
                result.requestsPerSecond = value
                sawRate = true
            } else if line.hasPrefix("50%"), parts.count >= 2 {
                result.p50 = seconds(String(parts[1]))
            } else if line.hasPrefix("99%"), parts.count >= 2 {
                result.p99 = seconds(String(parts[1]))
            } else if line.hasPrefix("Non-2xx or 3xx responses:"), let last = parts.last, let value = Int(last) {
                result.non2xx = value
            } else if line.hasPrefix("Socket errors:") {
                result.socketErrors = String(line.dropFirst("Socket errors:".count)).trimmingCharacters(in: .whitespaces)
            } else if parts.count >= 3, parts[1] == "requests", parts[2] == "in", let value = Int(parts[0]) {
                result.requests = value
            }
        }
        guard sawRate else { throw BenchError("could not read \"Requests/sec\" from wrk's output for \(url):\n\(text)") }
        return result
    }

    /// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.5m`.
    static func seconds(_ text: String) -> Double? {
        for (unit, scale) in [("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(unit) {
            return Double(text.dropLast(unit.count)).map { $0 * scale }
        }
        return nil
    }
}

/// The Redis tools a bench needs, found on PATH (exit status 2 with an install hint otherwise), a
/// temporary directory and a private `redis-server` in it; both are removed when `body` returns.
func withBenchRedis(
    tools names: [String], _ body: (_ redis: RedisServerChild, _ tools: [String: String], _ temp: URL) async throws -> Void
) async throws {
    var tools: [String: String] = [:]
    for name in ["redis-server", "redis-cli"] + names {
        guard let path = findExecutable(name) else {
            FileHandle.standardError.write(Data("error: \(name) not found on PATH; install it: apt-get install redis-server\n".utf8))
            throw ExitCode(2)
        }
        tools[name] = path
    }
    let temp = FileManager.default.temporaryDirectory.appendingPathComponent("coordinator-bench-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: temp) }
    let redis = try await RedisServerChild.start(
        server: tools["redis-server"]!, cli: tools["redis-cli"]!, directory: temp.appendingPathComponent("redis"))
    defer { redis.stop() }
    try await body(redis, tools, temp)
}

func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

func firstPort(_ ports: AsyncStream<Int>, _ name: String) async throws -> Int {
    for await port in ports {
        guard port > 0 else { throw BenchError("the \(name) server did not report its port") }
        return port
    }
    throw BenchError("the \(name) server stopped before it listened")
}

/// One HTTP/1.1 POST over a plain socket (`Connection: close`), on its own thread so the
/// cooperative pool stays free for the servers. Bounded by 5 s socket timeouts.
func httpPost(port: Int, path: String, body: String) async throws -> (status: Int, body: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try blockingPost(port: port, path: path, body: body) })
        }
    }
}

private func blockingPost(port: Int, path: String, body: String) throws -> (status: Int, body: String) {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw BenchError("connect to 127.0.0.1:\(port) failed: errno \(errno)") }
    let request = Array(
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw BenchError("send failed: errno \(errno)") }
        sent += n
    }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { break }
        guard n > 0 else { throw BenchError("recv failed: errno \(errno)") }
        received.append(contentsOf: chunk[0..<n])
    }
    let text = String(decoding: received, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw BenchError("malformed HTTP response: \(text)") }
    let statusLine = text[..<split.lowerBound].split(separator: "\r\n").first ?? ""
    let fields = statusLine.split(separator: " ")
    guard fields.count >= 2, let status = Int(fields[1]) else { throw BenchError("malformed status line: \(statusLine)") }
    return (status, String(text[split.upperBound...]))
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

// MARK: - bench exact

/// Exact (cluster) mode against its own `redis-server`: `redis-benchmark` running the node's GCRA
/// script with `EVALSHA` (same script, key and arguments) as the baseline, then a real node in
/// cluster mode deciding `checkLimit` from many concurrent tasks; prints both rates and the ratio.
struct BenchExact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exact",
        abstract: "Exact-mode decisions/s of a cluster node vs redis-benchmark running the same GCRA script (own redis-server on 127.0.0.1)."
    )

    @Option(help: "Seconds of load per side and round (the node gets a warm-up of up to 2 s first; redis-benchmark a calibration run).")
    var seconds: Int = 10
    @Option(help: "redis-benchmark connections (-c); also the node's concurrent callers unless --node-concurrency is given.")
    var concurrency: Int = 32
    @Option(help: "redis-benchmark pipeline depth (-P). The node pipelines concurrent calls on its one connection by itself.")
    var pipeline: Int = 1
    @Option(help: "Concurrent tasks calling node.checkLimit (default: --concurrency × --pipeline, the same number of commands in flight).")
    var nodeConcurrency: Int?
    @Option(help: "Rounds; each runs redis-benchmark, then the node, for --seconds each. The best round of each side is compared.")
    var rounds: Int = 3
    @Option(help: "The node's redisDeadlineMs (every call's deadline sits in the Redis client's timer heap until it passes).")
    var redisDeadlineMs: Int = 1_000

    static let goalRatio = 0.8
    static let policyName = "bench"
    static let key = "bench-key"
    /// Always allows (1e9 per second, burst 1e9), so every decision also writes the key's TAT.
    static let limit = LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)

    func validate() throws {
        guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be between 1 and 600") }
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 10000") }
        guard (1...1_000).contains(pipeline) else { throw ValidationError("--pipeline must be between 1 and 1000") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 100") }
        guard (1...10_000).contains(redisDeadlineMs) else { throw ValidationError("--redis-deadline-ms must be between 1 and 10000") }
        if let nodeConcurrency, !(1...100_000).contains(nodeConcurrency) {
            throw ValidationError("--node-concurrency must be between 1 and 100000")
        }
    }

    func run() async throws {
        try await withBenchRedis(tools: ["redis-benchmark"]) { redis, tools, temp in
            do {
                try await measure(redis: redis, benchmark: tools["redis-benchmark"]!, temp: temp)
            } catch {
                redis.stop()
                throw error
            }
        }
    }

    func measure(redis: RedisServerChild, benchmark: String, temp: URL) async throws {
        var logger = Logger(label: "coordinator-bench")
        logger.logLevel = .warning
        // As `serve` does, so the node's counters do their real work.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        var configuration = NodeConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.dataDirectory = temp.appendingPathComponent("data").path
        configuration.sqliteSynchronous = .normal
        configuration.logLevel = "warning"
        configuration.policies = [Self.policyName: LimitPolicy(algorithm: .gcra, limits: [Self.limit])]
        configuration.defaultPolicyName = Self.policyName
        configuration.redisURL = "redis://127.0.0.1:\(redis.port)"
        configuration.clusterSecret = "bench-cluster-secret-0123456789"
        configuration.redisDeadlineMilliseconds = Int64(redisDeadlineMs)
        // A lost Redis must not look like throughput: degraded decisions would all be refusals.
        configuration.onSharedStateLoss = .deny

        // The exact command ClusterLink.check sends for this policy: EVALSHA sha 1 key cost T tau.
        let redisKey = ClusterKeys(cluster: configuration.clusterName).limit(policy: Self.policyName, key: Self.key, index: 0)
        let interval = Double(Self.limit.periodMs) * 1000 / Double(Self.limit.rate)
        let scriptArguments = [redisKey, "1", String(interval), String(interval * Double(Self.limit.burst))]
        let sha = try await redis.cli(["SCRIPT", "LOAD", ClusterScripts.gcra]).trimmingCharacters(in: .whitespacesAndNewlines)
        guard sha.count == 40 else { throw BenchError("SCRIPT LOAD answered \(sha)") }
        let probe = try await redis.cli(["EVALSHA", sha, "1"] + scriptArguments).split(separator: "\n")
        guard probe.count == 6, probe.first == "1" else { throw BenchError("the GCRA script did not allow: \(probe)") }
        let version = try await redis.info("server")["redis_version"] ?? "?"
        let callers = nodeConcurrency ?? concurrency * pipeline

        print("coordinator bench exact: redis-server \(version) on 127.0.0.1:\(redis.port) (--save '' --appendonly no), \(seconds) s per side")
        print("command: EVALSHA \(sha) 1 \(scriptArguments.joined(separator: " "))  (the node's GCRA script; every call allowed and written)")

        // (1) Redis alone. redis-benchmark counts error replies as requests, so the server's own
        // command statistics must show exactly as many successful EVALSHA calls.
        func runBenchmark(requests: Int) async throws -> (rate: Double, p50: String, cpu: Double, redisCPU: Double) {
            let before = try await redis.snapshot()
            let childrenBefore = cpuSeconds(children: true)
            let arguments = ["-h", "127.0.0.1", "-p", "\(redis.port)", "-c", "\(concurrency)", "-P", "\(pipeline)", "-n", "\(requests)", "-q", "EVALSHA", sha, "1"] + scriptArguments
            let (status, text) = try await runTool(benchmark, arguments, timeout: .seconds(seconds * 10 + 60))
            guard status == 0 else { throw BenchError("redis-benchmark exited with status \(status):\n\(text)") }
            let after = try await redis.snapshot()
            let cpu = cpuSeconds(children: true) - childrenBefore
            // With -P it may send up to one pipeline per connection more than -n.
            let succeeded = after.evalsha - before.evalsha
            guard succeeded >= requests, succeeded <= requests + concurrency * pipeline, after.failed == before.failed else {
                let last = text.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).last ?? ""
                throw BenchError("redis-benchmark -n \(requests): \(succeeded) EVALSHA calls succeeded, \(after.failed - before.failed) failed; it printed: \(last)")
            }
            let (rate, p50) = try Self.parseBenchmark(text)
            return (rate, p50, cpu / Double(requests), (after.cpu - before.cpu) / Double(requests))
        }
        let calibration = try await runBenchmark(requests: 20_000)
        let requests = max(20_000, Int(calibration.rate * Double(seconds)))

        // (2) A real node in cluster mode against the same Redis.
        let started = try await CoordinatorNode.start(configuration: configuration, logger: logger)
        let node = started.node
        typealias NodeRound = (rate: Double, decisions: Int, cpu: Double, redisCPU: Double)
        var results: [(baseline: (rate: Double, p50: String, cpu: Double, redisCPU: Double), node: NodeRound)] = []
        do {
            let first = try await node.checkLimit(policy: Self.policyName, key: Self.key, cost: 1)
            let degradedAtStart = await node.clusterInfo().degraded
            guard first.decision.allowed, degradedAtStart.isEmpty else {
                throw BenchError("the node's first shared decision failed: \(first.decision), degraded \(degradedAtStart)")
            }
            _ = try await Self.load(node: node, callers: callers, duration: .seconds(min(2, seconds)))
            // Rounds alternate the two sides, so a neighbour's burst of CPU on this shared machine
            // hits both rather than one; the best round of each side is compared.
            for _ in 0..<rounds {
                let baseline = try await runBenchmark(requests: requests)
                let before = try await redis.snapshot()
                let selfBefore = cpuSeconds(children: false)
                let (decisions, elapsed) = try await Self.load(node: node, callers: callers, duration: .seconds(seconds))
                let cpu = cpuSeconds(children: false) - selfBefore
                let after = try await redis.snapshot()
                let degraded = await node.clusterInfo().degraded
                guard degraded.isEmpty else { throw BenchError("the node went degraded during the run: \(degraded)") }
                // Every decision must have been one script run in Redis (no local refusals, no degraded mode).
                guard after.evalsha - before.evalsha == decisions, after.failed == before.failed else {
                    throw BenchError("\(decisions) decisions but \(after.evalsha - before.evalsha) EVALSHA calls (\(after.failed - before.failed) failed) in Redis")
                }
                let nodeRound = (Double(decisions) / elapsed, decisions, cpu / Double(decisions), (after.cpu - before.cpu) / Double(decisions))
                results.append((baseline, nodeRound))
            }
        } catch {
            await node.shutdown()
            throw error
        }
        await node.shutdown()

        func row(_ name: String, _ rate: Double, _ unit: String, _ clientCPU: Double, _ redisCPU: Double, _ extra: String) -> String {
            name.padding(toLength: 60, withPad: " ", startingAt: 0) + String(format: "%10.0f", rate) + " " + unit.padding(toLength: 12, withPad: " ", startingAt: 0)
                + String(format: "%10.2f %10.2f", clientCPU * 1e6, redisCPU * 1e6) + "  " + extra
        }
        print("")
        print("side".padding(toLength: 60, withPad: " ", startingAt: 0) + "      rate             client µs  redis µs  (CPU per op)")
        for (index, result) in results.enumerated() {
            print(row("round \(index + 1): Redis alone: redis-benchmark -c \(concurrency) -P \(pipeline)", result.baseline.rate, "req/s",
                      result.baseline.cpu, result.baseline.redisCPU, "\(requests) requests, p50 \(result.baseline.p50)"))
            print(row("round \(index + 1): coordinator: \(callers) callers, deadline \(redisDeadlineMs) ms", result.node.rate, "decisions/s",
                      result.node.cpu, result.node.redisCPU, "\(result.node.decisions) decisions, all allowed, all in Redis"))
        }
        let bestBaseline = results.map(\.baseline.rate).max() ?? 0
        let bestNode = results.map(\.node.rate).max() ?? 0
        let ratio = bestBaseline > 0 ? bestNode / bestBaseline : 0
        let verdict = ratio >= Self.goalRatio ? "goal met" : "GOAL MISSED"
        let perRound = results.map { String(format: "%.0f %%", $0.node.rate / max(1, $0.baseline.rate) * 100) }.joined(separator: ", ")
        print(String(format: "best of %d: Redis alone %.0f req/s, coordinator %.0f decisions/s", rounds, bestBaseline, bestNode))
        print(String(format: "ratio coordinator/Redis: %.1f %% (goal ≥ %.0f %%): %@", ratio * 100, Self.goalRatio * 100, verdict) + " (per round: \(perRound))")
    }

    /// `callers` tasks deciding as fast as they can until `duration` has passed; any error or
    /// refusal fails the run. Returns the decisions and the elapsed seconds.
    static func load(node: CoordinatorNode, callers: Int, duration: Duration) async throws -> (Int, Double) {
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + duration
        let decisions = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    var count = 0
                    while clock.now < end {
                        let result = try await node.checkLimit(policy: policyName, key: key, cost: 1)
                        guard result.decision.allowed else { throw BenchError("a decision was refused: \(result.decision)") }
                        count += 1
                    }
                    return count
                }
            }
            var total = 0
            for try await count in group { total += count }
            return total
        }
        let elapsed = clock.now - start
        return (decisions, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
    }

    /// `… 1000000.0: 98765.43 requests per second, p50=0.287 msec` (the last such line; progress
    /// lines are separated by carriage returns).
    static func parseBenchmark(_ text: String) throws -> (Double, String) {
        let lines = text.split(whereSeparator: { $0 == "\r" || $0 == "\n" })
        guard let line = lines.last(where: { $0.contains(" requests per second") }),
              let range = line.range(of: " requests per second"),
              let number = line[..<range.lowerBound].split(separator: " ").last, let rate = Double(number)
        else { throw BenchError("could not read \"requests per second\" from redis-benchmark's output:\n\(text)") }
        let p50 = line.range(of: "p50=").map { String(line[$0.upperBound...]) } ?? "n/a"
        return (rate, p50)
    }
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`) or its waited-for children.
func cpuSeconds(children: Bool) -> Double {
    var usage = rusage()
    #if canImport(Glibc)
    _ = getrusage(children ? RUSAGE_CHILDREN.rawValue : RUSAGE_SELF.rawValue, &usage)
    #else
    _ = getrusage(children ? RUSAGE_CHILDREN : RUSAGE_SELF, &usage)
    #endif
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs a tool to completion (killed past `timeout`) and returns its exit status and combined output.
func runTool(_ path: String, _ arguments: [String], timeout: Duration) async throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let finished = AsyncStream<Int32>.makeStream()
    process.terminationHandler = { finished.continuation.yield($0.terminationStatus); finished.continuation.finish() }
    try process.run()
    let watchdog = Task {
        try await Task.sleep(for: timeout)
        process.terminate()
    }
    // Read on a thread of its own while the tool runs, so a full pipe never blocks it.
    let handle = output.fileHandleForReading
    let data: Data = await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: handle.readDataToEndOfFile()) }
    }
    var status: Int32 = -1
    for await code in finished.stream { status = code }
    watchdog.cancel()
    return (status, String(decoding: data, as: UTF8.self))
}

/// A `redis-server` child on a free 127.0.0.1 port, no persistence, stopped by `stop()`.
final class RedisServerChild: Sendable {
    let process: Process
    let port: Int
    let cliPath: String

    private init(process: Process, port: Int, cliPath: String) {
        self.process = process
        self.port = port
        self.cliPath = cliPath
    }

    static func start(server: String, cli: String, directory: URL) async throws -> RedisServerChild {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let port = try freeLoopbackPort()
        let log = directory.appendingPathComponent("redis.log").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: server)
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", directory.path, "--logfile", log,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let child = RedisServerChild(process: process, port: port, cliPath: cli)
        for _ in 0..<100 {
            if !process.isRunning { break }
            if let pong = try? await child.cli(["PING"]), pong.hasPrefix("PONG") { return child }
            try? await Task.sleep(for: .milliseconds(50))
        }
        child.stop()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw BenchError("redis-server did not answer PING on 127.0.0.1:\(port):\n\(text.suffix(2_000))")
    }

    /// `redis-cli -h 127.0.0.1 -p port args…`; its raw output (one line per reply element).
    func cli(_ arguments: [String]) async throws -> String {
        let (status, text) = try await runTool(cliPath, ["-h", "127.0.0.1", "-p", "\(port)"] + arguments, timeout: .seconds(10))
        guard status == 0, !text.hasPrefix("ERR"), !text.hasPrefix("NOSCRIPT"), !text.hasPrefix("Could not connect") else {
            throw BenchError("redis-cli \(arguments.prefix(3).joined(separator: " ")) failed (\(status)): \(text)")
        }
        return text
    }

    /// `INFO section` as key → value.
    func info(_ section: String) async throws -> [String: String] {
        var values: [String: String] = [:]
        for line in try await cli(["INFO", section]).split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            values[String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
        return values
    }

    /// Successful and failed EVALSHA calls so far, and the server's CPU seconds.
    func snapshot() async throws -> (evalsha: Int, failed: Int, cpu: Double) {
        let stats = try await info("commandstats")
        var fields: [String: String] = [:]
        for pair in (stats["cmdstat_evalsha"] ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        let cpu = try await info("cpu")
        let seconds = (Double(cpu["used_cpu_user"] ?? "") ?? 0) + (Double(cpu["used_cpu_sys"] ?? "") ?? 0)
        let calls = Int(fields["calls"] ?? "0") ?? 0
        let failed = (Int(fields["failed_calls"] ?? "0") ?? 0) + (Int(fields["rejected_calls"] ?? "0") ?? 0)
        return (calls - failed, failed, seconds)
    }

    /// SIGTERM, then SIGKILL after 3 s; idempotent.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<300 where process.isRunning { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// A port that was free on 127.0.0.1 a moment ago (bound to 0, read back, closed).
func freeLoopbackPort() throws -> Int {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw BenchError("bind to 127.0.0.1:0 failed: errno \(errno)") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw BenchError("getsockname failed: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

// MARK: - bench core

/// Quick in-process loops over the pure cores (ns per operation, no allocation counts; the
/// package-benchmark suite in Benchmarks/ measures those). Each figure is the best of 5 rounds.
struct BenchCore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core", abstract: "Breaker and GCRA hot paths in ns/op (quick loops; see Benchmarks/ for the full suite)."
    )

    @Option(help: "Operations per round.") var iterations: Int = 5_000_000

    func validate() throws {
        guard (1_000...1_000_000_000).contains(iterations) else { throw ValidationError("--iterations must be between 1000 and 1000000000") }
    }

    func run() async throws {
        let n = iterations
        let keys = (0..<1000).map { "tenant-7:user-\(String(100_000 + $0))" }
        let baseline = Self.measure {
            var counters: [String: Int64] = [:]
            for key in keys { counters[key] = 0 }
            return Self.timed {
                var index = 0
                for _ in 0..<n {
                    counters[keys[index], default: 0] &+= 1
                    index = index == 999 ? 0 : index + 1
                }
                blackHole(counters.count)
            }
        }
        func breaker(_ window: BreakerConfig.Window) -> Double {
            Self.measure {
                var breaker = CircuitBreaker(config: BreakerConfig(window: window), now: .zero)
                return Self.timed {
                    var clock: Int64 = 0
                    for _ in 0..<n {
                        clock &+= 1_000
                        let now = Instant(nanoseconds: clock)
                        let acquisition = breaker.acquire(now: now)
                        blackHole(breaker.record(.success, duration: Span(nanoseconds: 5_000_000), permit: acquisition.permit!, now: now))
                    }
                }
            }
        }
        let huge = LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)
        let day = LimitSpec(rate: 1_000_000_000, periodMs: 86_400_000, burst: 1_000_000_000)
        func gcra(_ limits: [LimitSpec], keyCount: Int) -> Double {
            Self.measure {
                var limiter = RateLimiter(policy: LimitPolicy(algorithm: .gcra, limits: limits))
                for key in keys.prefix(keyCount) { _ = limiter.check(key: key, cost: 1, now: .zero) }
                return Self.timed {
                    var clock: Int64 = 0
                    var index = 0
                    for _ in 0..<n {
                        clock &+= 100
                        blackHole(limiter.check(key: keys[index], cost: 1, now: Instant(nanoseconds: clock)))
                        index = index + 1 == keyCount ? 0 : index + 1
                    }
                }
            }
        }
        let rows: [(String, Double, String)] = [
            ("Breaker.acquire+record (closed, count window)", breaker(.count(100)), "≤ 150 ns"),
            ("Breaker.acquire+record (closed, time window)", breaker(.time(seconds: 60)), "≤ 150 ns"),
            ("GCRA.check (1 key)", gcra([huge], keyCount: 1), "≥ 5 M/s"),
            ("GCRA.check (1000 keys, 2 limits)", gcra([huge, day], keyCount: 1000), "≥ 5 M/s"),
            ("Baseline.Dictionary<String,Int64> update (1000 keys)", baseline, "-"),
        ]
        print("coordinator bench core: best of 5 rounds of \(n) operations (release build expected)")
        print("benchmark".padding(toLength: 54, withPad: " ", startingAt: 0) + "     ns/op    M ops/s  × baseline  goal")
        for (name, seconds, goal) in rows {
            let ns = seconds * 1e9 / Double(n)
            let line = name.padding(toLength: 54, withPad: " ", startingAt: 0)
                + String(format: "%10.1f %10.2f %11.2f", ns, 1e3 / ns, seconds / baseline) + "  " + goal
            print(line)
        }
    }

    /// The best (smallest) time in seconds over 5 rounds; `round` prepares its state and returns the timed part.
    static func measure(_ round: () -> Double) -> Double {
        var best = Double.infinity
        for _ in 0..<5 { best = min(best, round()) }
        return best
    }

    static func timed(_ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let elapsed = clock.measure(body)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }
}

/// Keeps a value alive so the optimiser cannot drop the work that produced it.
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

// MARK: - bench approximate

/// Approximate mode against its own `redis-server`: N in-process cluster nodes (each with its own
/// data directory and a running `ClusterService`). Part A: decisions/s of an always-allowing policy in
/// exact mode, then the same policy in approximate mode (same nodes × callers shape), and the ratio.
/// Part B: a real limit (sliding window, 1000 per 10 s) driven on one key for exactly one (Redis-aligned)
/// window by every node at full speed, and — at the same time, on another key — paced traffic spread
/// evenly over the nodes; admitted vs the limit and vs `ApproximateLimitSync.overshootBound`.
struct BenchApproximate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approximate",
        abstract: "Approximate-mode decisions/s vs exact mode on N in-process cluster nodes, and the measured overshoot (own redis-server)."
    )

    @Option(help: "Seconds of load per mode in part A (each preceded by a warm-up of up to 2 s).") var seconds: Int = 10
    @Option(help: "Concurrent callers of checkLimit per node.") var concurrency: Int = 32
    @Option(help: "In-process cluster nodes.") var nodes: Int = 2
    @Option(help: "Part B's limit: admitted requests per window.") var limit: Int = 1_000
    @Option(help: "Part B's window (periodMs).") var periodMs: Int = 10_000
    @Option(help: "Approximate mode's syncIntervalMs.") var syncIntervalMs: Int = 50

    static let goalRatio = 10.0
    static let secret = "bench-cluster-secret-0123456789"
    static let allowAll = LimitSpec(rate: 1_000_000_000, periodMs: 1_000, burst: 1_000_000_000)

    func validate() throws {
        guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be between 1 and 600") }
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 10000") }
        guard (1...16).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 16") }
        guard (1...1_000_000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1000000") }
        guard (1_000...60_000).contains(periodMs) else { throw ValidationError("--period-ms must be between 1000 and 60000") }
        guard (1...10_000).contains(syncIntervalMs) else { throw ValidationError("--sync-interval-ms must be between 1 and 10000") }
    }

    func run() async throws {
        try await withBenchRedis(tools: []) { redis, tools, temp in
            var logger = Logger(label: "coordinator-bench")
            logger.logLevel = .warning
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            do {
                try await measure(redis: redis, temp: temp, logger: logger)
            } catch {
                redis.stop()
                throw error
            }
        }
    }

    /// N started nodes of one cluster, each with its `ClusterService` running in a task.
    struct Cluster {
        var nodes: [CoordinatorNode]
        var services: [Task<Void, Never>]

        func stop() async {
            for service in services { service.cancel() }
            for node in nodes { await node.shutdown() }
            for service in services { await service.value }
        }
    }

    func startCluster(name: String, policies: [String: LimitPolicy], redis: RedisServerChild, temp: URL, logger: Logger) async throws -> Cluster {
        var cluster = Cluster(nodes: [], services: [])
        do {
            for index in 0..<nodes {
                var configuration = NodeConfiguration()
                configuration.host = "127.0.0.1"
                configuration.port = 0
                configuration.dataDirectory = temp.appendingPathComponent("\(name)-\(index)").path
                configuration.sqliteSynchronous = .normal
                configuration.logLevel = "warning"
                configuration.nodeID = "\(name)-\(index)"
                configuration.policies = policies
                configuration.defaultPolicyName = policies.keys.sorted().first!
                configuration.redisURL = "redis://127.0.0.1:\(redis.port)"
                configuration.clusterName = name
                configuration.clusterSecret = Self.secret
                configuration.redisDeadlineMilliseconds = 1_000
                // A lost Redis must not look like throughput or like a tight limit: fail loudly instead.
                configuration.onSharedStateLoss = .deny
                let started = try await CoordinatorNode.start(configuration: configuration, logger: logger)
                let node = started.node
                cluster.nodes.append(node)
                cluster.services.append(Task { try? await ClusterService(node: node).run() })
            }
        } catch {
            await cluster.stop()
            throw error
        }
        return cluster
    }

    /// `callers` tasks per node deciding on `key` as fast as they can for `duration`; returns the
    /// decisions, the allowed ones per node and the elapsed seconds.
    static func load(_ nodes: [CoordinatorNode], policy: String, key: String, callers: Int, duration: Duration, requireAllowed: Bool)
        async throws -> (decisions: Int, allowed: [Int], seconds: Double)
    {
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + duration
        let counts = try await withThrowingTaskGroup(of: (Int, Int, Int).self) { group in
            for (index, node) in nodes.enumerated() {
                for _ in 0..<callers {
                    group.addTask {
                        var count = 0
                        var allowed = 0
                        while clock.now < end {
                            let result = try await node.checkLimit(policy: policy, key: key, cost: 1)
                            if result.decision.allowed {
                                allowed += 1
                            } else if requireAllowed {
                                throw BenchError("a decision was refused: \(result.decision)")
                            }
                            count += 1
                        }
                        return (index, count, allowed)
                    }
                }
            }
            var total = 0
            var allowed = Array(repeating: 0, count: nodes.count)
            for try await (index, count, ok) in group {
                total += count
                allowed[index] += ok
            }
            return (total, allowed)
        }
        let elapsed = clock.now - start
        return (counts.0, counts.1, seconds(elapsed))
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    func redisCommands(_ redis: RedisServerChild) async throws -> Int {
        Int(try await redis.info("stats")["total_commands_processed"] ?? "0") ?? 0
    }

    func measure(redis: RedisServerChild, temp: URL, logger: Logger) async throws {
        let version = try await redis.info("server")["redis_version"] ?? "?"
        print("coordinator bench approximate: redis-server \(version) on 127.0.0.1:\(redis.port), \(nodes) in-process nodes, \(concurrency) callers per node, one key")

        // Part A: exact first, then approximate, same shape.
        var rates: [(mode: String, rate: Double, decisions: Int, redisPerSecond: Double, cpu: Double)] = []
        for mode in [LimitMode.exact, .approximate] {
            let policy = LimitPolicy(algorithm: .gcra, limits: [Self.allowAll], mode: mode, syncIntervalMs: syncIntervalMs)
            let cluster = try await startCluster(name: "bench-a-\(mode.rawValue)", policies: ["bench": policy], redis: redis, temp: temp, logger: logger)
            do {
                _ = try await Self.load(cluster.nodes, policy: "bench", key: "bench-key", callers: concurrency, duration: .seconds(min(2, seconds)), requireAllowed: true)
                let commandsBefore = try await redisCommands(redis)
                let cpuBefore = cpuSeconds(children: false)
                let run = try await Self.load(cluster.nodes, policy: "bench", key: "bench-key", callers: concurrency, duration: .seconds(seconds), requireAllowed: true)
                let cpu = cpuSeconds(children: false) - cpuBefore
                let commands = try await redisCommands(redis) - commandsBefore
                for node in cluster.nodes {
                    let degraded = await node.clusterInfo().degraded
                    guard degraded.isEmpty else { throw BenchError("a node went degraded during the \(mode.rawValue) run: \(degraded)") }
                }
                rates.append((mode.rawValue, Double(run.decisions) / run.seconds, run.decisions, Double(commands) / run.seconds, cpu / Double(max(1, run.decisions))))
                print(String(format: "  %@: %.0f decisions/s", mode.rawValue, Double(run.decisions) / run.seconds))
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }
        print("")
        print("part A: always-allowing GCRA policy (1e9/s), \(nodes) nodes × \(concurrency) callers, \(seconds) s after a warm-up")
        print("mode          decisions/s   decisions   Redis commands/s   node CPU µs/decision")
        for r in rates {
            print(r.mode.padding(toLength: 12, withPad: " ", startingAt: 0) + String(format: "%13.0f %11d %18.0f %22.3f", r.rate, r.decisions, r.redisPerSecond, r.cpu * 1e6))
        }
        let ratio = rates[0].rate > 0 ? rates[1].rate / rates[0].rate : 0
        print(String(format: "ratio approximate/exact: %.1f × (goal ≥ %.0f ×): %@", ratio, Self.goalRatio, ratio >= Self.goalRatio ? "goal met" : "GOAL MISSED"))

        // Part B: one Redis-aligned window of a real limit.
        let spec = LimitSpec(rate: limit, periodMs: periodMs)
        let policy = LimitPolicy(algorithm: .slidingWindow, limits: [spec], mode: .approximate, syncIntervalMs: syncIntervalMs)
        let cluster = try await startCluster(name: "bench-b", policies: ["limited": policy], redis: redis, temp: temp, logger: logger)
        let bound = ApproximateLimitSync.overshootBound(nodes: nodes, limit: spec, syncIntervalMs: Int64(syncIntervalMs))
        let burstKey = "burst-\(UUID().uuidString.prefix(8))"
        let pacedKey = "paced-\(UUID().uuidString.prefix(8))"
        let offeredPaced = 2 * limit
        var burst: (decisions: Int, allowed: [Int], seconds: Double) = (0, [], 0)
        var paced: [Int] = []
        let margin = 50
        do {
            // Start just after a window boundary of the Redis clock (the windows are aligned on it),
            // and stop just before the next, so every decision falls in one fresh window.
            let clock = ContinuousClock()
            let time = try await redis.cli(["TIME"]).split(whereSeparator: \.isNewline).compactMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
            let readAt = clock.now
            guard time.count == 2 else { throw BenchError("TIME answered \(time)") }
            let redisMs = time[0] * 1000 + time[1] / 1000
            let boundary = (redisMs / Int64(periodMs) + 1) * Int64(periodMs)
            let start = readAt + .milliseconds(boundary - redisMs + Int64(margin))
            let runFor = Duration.milliseconds(periodMs - 2 * margin)
            print("")
            print("part B: sliding_window \(limit) per \(periodMs) ms, approximate, syncIntervalMs \(syncIntervalMs), \(nodes) nodes; waiting \(boundary - redisMs + Int64(margin)) ms for a window boundary of the Redis clock")
            try await clock.sleep(until: start)
            async let burstRun = Self.load(cluster.nodes, policy: "limited", key: burstKey, callers: concurrency, duration: runFor, requireAllowed: false)
            async let pacedRun: [Int] = withThrowingTaskGroup(of: Int.self) { group in
                let perNode = offeredPaced / nodes
                let step = Duration.nanoseconds(Int64(periodMs - 2 * margin) * 1_000_000 / Int64(max(1, perNode)))
                for node in cluster.nodes {
                    group.addTask {
                        var allowed = 0
                        var next = clock.now
                        for _ in 0..<perNode {
                            if try await node.checkLimit(policy: "limited", key: pacedKey, cost: 1).decision.allowed { allowed += 1 }
                            next = next + step
                            try await clock.sleep(until: next)
                        }
                        return allowed
                    }
                }
                var all: [Int] = []
                for try await a in group { all.append(a) }
                return all
            }
            burst = try await burstRun
            paced = try await pacedRun
            for node in cluster.nodes {
                let degraded = await node.clusterInfo().degraded
                guard degraded.isEmpty else { throw BenchError("a node went degraded during part B: \(degraded)") }
            }
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
        let admitted = burst.allowed.reduce(0, +)
        let pacedAdmitted = paced.reduce(0, +)
        func verdict(_ n: Int) -> String {
            n <= limit ? "within the limit" : n <= limit + bound ? "within limit + bound" : "EXCEEDS limit + bound by \(n - limit - bound)"
        }
        print("documented steady-state bound: limit + ⌈nodes × rate × sync / period⌉ = \(limit) + \(bound) = \(limit + bound) per window")
        print(String(format: "burst (all nodes, %d callers each, full speed, one key): %d decisions, admitted %d (per node %@) = %.2f × limit, overshoot %d: %@",
                     concurrency, burst.decisions, admitted, burst.allowed.map(String.init).joined(separator: "+"), Double(admitted) / Double(limit), admitted - limit, verdict(admitted)))
        print(String(format: "paced (%d requests spread evenly over the window and the nodes = 2 × limit): admitted %d (per node %@) = %.3f × limit, overshoot %d: %@",
                     offeredPaced, pacedAdmitted, paced.map(String.init).joined(separator: "+"), Double(pacedAdmitted) / Double(limit), pacedAdmitted - limit, verdict(pacedAdmitted)))
        if admitted > limit + bound {
            print("  the burst case is outside the bound's premise: every node admits its share ⌈remaining / nodes⌉ of a fresh key at once; a node whose sync reaches Redis before the others' pushes sees a stale remaining and takes a share of it again (see ApproximateLimitSync's documentation)")
        }
    }
}

// MARK: - bench propagation

/// Trip propagation across N `coordinator serve` child processes sharing one `redis-server`:
/// forces breaker `bench` open on node 0 (admin `PUT …/state`) and polls `GET /v1/breakers/bench` on
/// every other node over keep-alive connections until each reports `forced_open`; then closes it the
/// same way. Latency = first response showing the new state − the moment just before the PUT was sent.
struct BenchPropagation: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propagation",
        abstract: "Breaker trip propagation latency across N `coordinator serve` processes (own redis-server, loopback)."
    )

    @Option(help: "Node processes.") var nodes: Int = 5
    @Option(help: "Trips measured (one unmeasured warm-up trip precedes them).") var trips: Int = 50
    @Option(help: "Children's heartbeatIntervalMs.") var heartbeatMs: Int = 200
    @Option(help: "Children's sqlite.synchronous (full or normal); node 0 persists the forced state before it transitions.")
    var sqliteSynchronous: String = "normal"

    static let goalP99Ms = 5.0
    static let adminToken = "bench-admin-token-0123456789abcdef0123"
    static let secret = "bench-cluster-secret-0123456789"

    func validate() throws {
        guard (2...32).contains(nodes) else { throw ValidationError("--nodes must be between 2 and 32") }
        guard (1...10_000).contains(trips) else { throw ValidationError("--trips must be between 1 and 10000") }
        guard (100...60_000).contains(heartbeatMs) else { throw ValidationError("--heartbeat-ms must be between 100 and 60000") }
        guard ["full", "normal"].contains(sqliteSynchronous) else { throw ValidationError("--sqlite-synchronous must be full or normal") }
    }

    func run() async throws {
        guard let executable = Bundle.main.executablePath ?? CommandLine.arguments.first else { throw BenchError("cannot find this executable") }
        try await withBenchRedis(tools: []) { redis, tools, temp in
            let children = ChildProcesses()
            defer { children.stopAll() }
            do {
                var ports: [Int] = []
                for index in 0..<nodes {
                    let directory = temp.appendingPathComponent("n\(index)")
                    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                    let out = directory.appendingPathComponent("stdout.log")
                    let err = directory.appendingPathComponent("stderr.log")
                    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
                    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: executable)
                    process.arguments = [
                        "serve", "--port", "0", "--data-dir", directory.appendingPathComponent("data").path,
                        "--redis-url", "redis://127.0.0.1:\(redis.port)", "--cluster-name", "bench-propagation",
                        "--cluster-secret", Self.secret, "--node-id", "n\(index)",
                    ]
                    var environment = ProcessInfo.processInfo.environment
                    environment["COORDINATOR_ADMIN_TOKEN"] = Self.adminToken
                    environment["COORDINATOR_HEARTBEAT_INTERVAL_MS"] = "\(heartbeatMs)"
                    environment["COORDINATOR_LOG_LEVEL"] = "warning"
                    environment["COORDINATOR_SQLITE_SYNCHRONOUS"] = sqliteSynchronous
                    process.environment = environment
                    process.standardOutput = try FileHandle(forWritingTo: out)
                    process.standardError = try FileHandle(forWritingTo: err)
                    try process.run()
                    children.add(process)
                    ports.append(try await Self.waitForListening(process: process, stdout: out, stderr: err, index: index))
                }
                print("coordinator bench propagation: \(nodes) `coordinator serve` processes (heartbeatIntervalMs \(heartbeatMs), sqlite.synchronous \(sqliteSynchronous), log level warning) on ports \(ports.map(String.init).joined(separator: ", ")), redis-server on \(redis.port)")
                let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PropagationResult, any Error>) in
                    let trips = self.trips
                    let ports = ports
                    Thread.detachNewThread {
                        continuation.resume(with: Result { try Self.measure(ports: ports, trips: trips) })
                    }
                }
                report(result)
            } catch {
                children.stopAll()
                redis.stop()
                throw error
            }
        }
    }

    static func waitForListening(process: Process, stdout: URL, stderr: URL, index: Int) async throws -> Int {
        for _ in 0..<600 {
            let text = (try? String(contentsOf: stdout, encoding: .utf8)) ?? ""
            if let range = text.range(of: "listening on http://") {
                let rest = text[range.upperBound...].prefix(while: { !$0.isNewline })
                if let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) { return port }
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let errors = (try? String(contentsOf: stderr, encoding: .utf8)) ?? ""
        throw BenchError("node \(index) did not report \"listening on\" within 30 s:\n\(errors.suffix(2_000))")
    }

    struct PropagationResult {
        var open: [Double] = []  // ms, per (trip, other node)
        var close: [Double] = []
        var pollRoundTrips: [Double] = []  // ms
        var putMs: [Double] = []
        var openAfterPut: [Double] = []  // ms after the PUT's response arrived (negative: before)
        var polls = 0
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    static func measure(ports: [Int], trips: Int) throws -> PropagationResult {
        let admin = try BlockingHTTPConnection(port: ports[0])
        let pollers = try ports.dropFirst().map { try BlockingHTTPConnection(port: $0) }
        let auth = ["Authorization: Bearer \(adminToken)", "Content-Type: application/json"]
        var result = PropagationResult()
        for trip in 0...trips {
            for target in ["forced_open", "closed"] {
                let shared = PollResults(count: pollers.count)
                let started = DispatchSemaphore(value: 0)
                let done = DispatchSemaphore(value: 0)
                let needle = "\"state\":\"\(target)\""
                for (index, connection) in pollers.enumerated() {
                    Thread.detachNewThread {
                        started.signal()
                        var local: [Double] = []
                        var observed: UInt64?
                        var problem: String?
                        let deadline = now() + 5_000_000_000
                        while observed == nil {
                            let sent = now()
                            do {
                                let response = try connection.request("GET", "/v1/breakers/bench")
                                let received = now()
                                local.append(Double(received - sent) / 1e6)
                                if response.status == 200, response.body.contains(needle) { observed = received }
                                else if response.status != 200 && response.status != 404 { problem = "GET answered \(response.status): \(response.body)" }
                            } catch {
                                problem = "\(error)"
                            }
                            if problem != nil || now() > deadline { break }
                        }
                        shared.lock.withLock {
                            shared.seen[index] = observed
                            shared.roundTrips += local
                            if observed == nil { shared.failure = shared.failure ?? (problem ?? "node \(index + 1) did not reach \(target) within 5 s") }
                        }
                        done.signal()
                    }
                }
                for _ in pollers { started.wait() }
                usleep(1_000)  // let every poller get a request or two in flight
                let t0 = now()
                let put = try admin.request("PUT", "/v1/breakers/bench/state", headers: auth, body: "{\"state\":\"\(target)\"}")
                let putDone = now()
                for _ in pollers { done.wait() }
                let (seen, roundTrips, failure) = shared.lock.withLock { (shared.seen, shared.roundTrips, shared.failure) }
                guard put.status == 200 else { throw BenchError("PUT state answered \(put.status): \(put.body)") }
                if let failure { throw BenchError("trip \(trip), \(target): \(failure)") }
                guard trip > 0 else { continue }  // warm-up
                let latencies = seen.map { Double(Int64(bitPattern: $0! &- t0)) / 1e6 }
                if target == "forced_open" {
                    result.open += latencies
                    result.openAfterPut += seen.map { Double(Int64(bitPattern: $0! &- putDone)) / 1e6 }
                } else {
                    result.close += latencies
                }
                result.pollRoundTrips += roundTrips
                result.polls += roundTrips.count
                result.putMs.append(Double(putDone - t0) / 1e6)
            }
        }
        return result
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(sorted.count - 1, max(0, rank))]
    }

    func report(_ r: PropagationResult) {
        func line(_ name: String, _ v: [Double]) -> String {
            name.padding(toLength: 44, withPad: " ", startingAt: 0)
                + String(format: "%8d %9.3f %9.3f %9.3f %9.3f", v.count, Self.percentile(v, 50), Self.percentile(v, 99), v.max() ?? .nan, v.min() ?? .nan)
        }
        print("")
        print("\(trips) trips (after one warm-up trip), \(nodes - 1) polled nodes each; ms from just before the PUT was sent")
        print("measure".padding(toLength: 44, withPad: " ", startingAt: 0) + "   count       p50       p99       max       min")
        print(line("forced_open reached every other node", r.open))
        print(line("closed reached every other node", r.close))
        print(line("forced_open, counted from the PUT's response", r.openAfterPut))
        print(line("PUT round trip on node 0", r.putMs))
        print(line("poll resolution: one GET round trip", r.pollRoundTrips))
        let p99 = Self.percentile(r.open, 99)
        print(String(format: "trip propagation p99 %.3f ms (goal ≤ %.0f ms): %@", p99, Self.goalP99Ms, p99 <= Self.goalP99Ms ? "goal met" : "GOAL MISSED"))
    }
}

final class PollResults: @unchecked Sendable {
    let lock = NSLock()
    var seen: [UInt64?]
    var roundTrips: [Double] = []
    var failure: String?
    init(count: Int) { seen = Array(repeating: nil, count: count) }
}

/// Child processes stopped together: SIGTERM to all, SIGKILL to those still running after 3 s.
final class ChildProcesses: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [Process] = []

    func add(_ process: Process) { lock.withLock { processes.append(process) } }

    func stopAll() {
        let all = lock.withLock { let all = processes; processes = []; return all }
        for process in all where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        for _ in 0..<300 where all.contains(where: \.isRunning) { usleep(10_000) }
        for process in all where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in all { process.waitUntilExit() }
    }
}

/// A blocking HTTP/1.1 keep-alive connection to 127.0.0.1 (TCP_NODELAY, 5 s timeouts); one thread at a time.
final class BlockingHTTPConnection: @unchecked Sendable {
    let fd: Int32
    let port: Int
    private var buffer: [UInt8] = []

    init(port: Int) throws {
        #if canImport(Glibc)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        self.port = port
        guard fd >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw BenchError("connect to 127.0.0.1:\(port) failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    func request(_ method: String, _ path: String, headers: [String] = [], body: String = "") throws -> (status: Int, body: String) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        for header in headers { head += header + "\r\n" }
        if method != "GET" || !body.isEmpty { head += "Content-Length: \(body.utf8.count)\r\n" }
        let request = Array((head + "\r\n" + body).utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw BenchError("send failed: errno \(errno)") }
            sent += n
        }
        // Headers, then Content-Length bytes of body.
        var headerEnd: Int?
        while true {
            if headerEnd == nil, buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                    headerEnd = i
                    break
                }
            }
            if let end = headerEnd {
                let headText = String(decoding: buffer[0..<end], as: UTF8.self)
                let lines = headText.split(separator: "\r\n")
                let fields = (lines.first ?? "").split(separator: " ")
                guard fields.count >= 2, let status = Int(fields[1]) else { throw BenchError("malformed status line: \(lines.first ?? "")") }
                var length = 0
                for line in lines.dropFirst() where line.lowercased().hasPrefix("content-length:") {
                    length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
                if buffer.count >= end + 4 + length {
                    let body = String(decoding: buffer[(end + 4)..<(end + 4 + length)], as: UTF8.self)
                    buffer.removeFirst(end + 4 + length)
                    return (status, body)
                }
            }
            var chunk = [UInt8](repeating: 0, count: 16_384)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw BenchError(n == 0 ? "connection closed by 127.0.0.1:\(port)" : "recv failed: errno \(errno)") }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}
