import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import RedisClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `coordinator proxy` (the chaos suite's fault proxy: this kernel has no netem) between a real Redis
/// client and a real Redis: latency per direction, black hole, reset, clearing, and bad control input.
@Suite("coordinator proxy in front of real Redis", .serialized)
struct FaultProxyTests {
    static func control(_ method: String, _ url: String, body: String? = nil) async throws -> (Int, String) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        if let body { request.httpBody = Data(body.utf8) }
        request.timeoutInterval = 5
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    static func roundTrip(_ connection: RedisConnection) async throws -> Duration {
        let start = ContinuousClock.now
        #expect(try await connection.send(["PING"]) == .status("PONG"))
        return ContinuousClock.now - start
    }

    @Test("latency per direction, black hole, reset and clearing, through the proxy's control API")
    func toxics() async throws {
        let redisURL = try TestEnvironment.redisURL
        let redisPort = try #require(URL(string: redisURL)?.port)
        let listen = try TestEnvironment.closedLoopbackPort()
        let controlPort = try TestEnvironment.closedLoopbackPort()
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: ServerChild.binary())
        proxy.arguments = ["proxy", "--route", "redis=127.0.0.1:\(listen)=127.0.0.1:\(redisPort)", "--control", "127.0.0.1:\(controlPort)"]
        proxy.standardOutput = FileHandle.nullDevice
        proxy.standardError = FileHandle.nullDevice
        try proxy.run()
        defer {
            kill(proxy.processIdentifier, SIGKILL)
            Thread.detachNewThread { proxy.waitUntilExit() }
        }
        let base = "http://127.0.0.1:\(controlPort)"
        #expect(try await ClusterTestSupport.eventually(10) { (try? await Self.control("GET", base + "/routes"))?.0 == 200 })
        let through = "redis://127.0.0.1:\(listen)/0"

        let plain = try await RedisConnection.connect(url: through, commandTimeout: .seconds(5))
        _ = try await Self.roundTrip(plain)
        #expect(try await Self.roundTrip(plain) < .milliseconds(40))

        // 40 ms each way: a round trip takes at least 80 ms.
        let (set, _) = try await Self.control("PUT", base + "/routes/redis/toxics",
                                              body: #"{"upstream":{"latencyMs":40},"downstream":{"latencyMs":40,"jitterMs":5}}"#)
        #expect(set == 200)
        let slow = try await Self.roundTrip(plain)
        #expect(slow >= .milliseconds(75) && slow < .seconds(1), "\(slow)")

        // Black hole: the request vanishes; the client's own timeout ends the wait.
        _ = try await Self.control("PUT", base + "/routes/redis/toxics", body: #"{"upstream":{"blackhole":true}}"#)
        let holed = try await RedisConnection.connect(url: through, commandTimeout: .milliseconds(300))
        let start = ContinuousClock.now
        let timeout = await #expect(throws: RedisError.self) { try await holed.send(["PING"]) }
        #expect(timeout?.code == .timeout)
        #expect(ContinuousClock.now - start < .seconds(2))
        await holed.close()

        // Reset: the next byte on an existing connection resets it.
        _ = try await Self.control("PUT", base + "/routes/redis/toxics", body: #"{"resetPeer":true}"#)
        await #expect(throws: RedisError.self) { try await plain.send(["PING"]) }
        await plain.close()

        // Cleared: a new connection works at full speed again.
        let (cleared, _) = try await Self.control("DELETE", base + "/routes/redis/toxics")
        #expect(cleared == 200)
        let fresh = try await RedisConnection.connect(url: through, commandTimeout: .seconds(5))
        #expect(try await Self.roundTrip(fresh) < .milliseconds(200))
        await fresh.close()

        // Bad control input is refused, nothing changes.
        let (bad, problem) = try await Self.control("PUT", base + "/routes/redis/toxics", body: #"{"upstream":{"latencyMs":-5}}"#)
        #expect(bad == 400 && problem.contains("latencyMs"))
        let (garbage, _) = try await Self.control("PUT", base + "/routes/redis/toxics", body: "{not json")
        #expect(garbage == 400)
        let (unknown, _) = try await Self.control("PUT", base + "/routes/nope/toxics", body: "{}")
        #expect(unknown == 404)
        let (_, listing) = try await Self.control("GET", base + "/routes")
        #expect(listing.contains(#""latencyMs":0"#) && !listing.contains(#""blackhole":true"#), "\(listing)")
    }
}
