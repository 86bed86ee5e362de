import RedisClient
import Testing

@Suite("Redis (real server)")
struct RedisIntegrationTests {
    private func connect(commandTimeout: Duration = .seconds(5)) async throws -> RedisConnection {
        try await RedisConnection.connect(url: try TestEnvironment.redisURL, commandTimeout: commandTimeout)
    }

    @Test func ping() async throws {
        let redis = try await connect()
        #expect(try await redis.send(["PING"]) == .status("PONG"))
        #expect(try await redis.send(["PING", "hello"]) == .bulkString("hello"))
        await redis.close()
    }

    @Test func setGetRoundTrip() async throws {
        let redis = try await connect()
        let key = TestEnvironment.uniqueName("k")
        let value = "héllo 'quoted' \"double\" \r\n and a space"
        #expect(try await redis.send(["SET", key, value, "PX", "60000"]) == .status("OK"))
        #expect(try await redis.send(["GET", key]) == .bulkString(value))
        #expect(try await redis.send(["GET", key + "_missing"]) == .null)
        #expect(try await redis.send(["DEL", key]) == .integer(1))
        await redis.close()
    }

    @Test func luaEval() async throws {
        let redis = try await connect()
        let key = TestEnvironment.uniqueName("counter")
        let script = """
            local n = redis.call('INCRBY', KEYS[1], ARGV[1])
            redis.call('PEXPIRE', KEYS[1], 60000)
            return {n, 'ok', false}
            """
        let first = try await redis.send(["EVAL", script, "1", key, "5"])
        #expect(first == .array([.integer(5), .bulkString("ok"), .null]))
        let second = try await redis.send(["EVAL", script, "1", key, "2"])
        #expect(second.array?.first == .integer(7))
        await redis.close()
    }

    @Test func serverErrorReplyIsTypedError() async throws {
        let redis = try await connect()
        let key = TestEnvironment.uniqueName("str")
        _ = try await redis.send(["SET", key, "not a number", "PX", "60000"])
        let error = await #expect(throws: RedisError.self) {
            try await redis.send(["INCR", key])
        }
        #expect(error?.code == .server)
        #expect(error?.serverErrorPrefix == "ERR")
        let wrongType = await #expect(throws: RedisError.self) {
            try await redis.send(["LPUSH", key, "x"])
        }
        #expect(wrongType?.serverErrorPrefix == "WRONGTYPE")
        // A server error doesn't break the connection.
        #expect(try await redis.send(["PING"]) == .status("PONG"))
        let script = await #expect(throws: RedisError.self) {
            try await redis.send(["EVAL", "return redis.call('NOPE')", "0"])
        }
        #expect(script?.code == .server)
        await redis.close()
    }

    @Test func connectionRefusedIsTypedErrorWithinTimeout() async throws {
        let port = try TestEnvironment.closedLoopbackPort()
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.connect(url: "redis://127.0.0.1:\(port)/0", connectTimeout: .seconds(2))
        }
        #expect(error?.code == .connectionFailed)
        #expect(clock.now - start < .seconds(3))
    }

    @Test func commandTimeoutBoundsAHungCommand() async throws {
        let redis = try await connect(commandTimeout: .milliseconds(300))
        let clock = ContinuousClock()
        let start = clock.now
        // BLPOP on an empty list blocks server-side for 5 s: longer than the timeout.
        let error = await #expect(throws: RedisError.self) {
            try await redis.send(["BLPOP", TestEnvironment.uniqueName("empty"), "5"])
        }
        #expect(error?.code == .timeout)
        #expect(clock.now - start < .seconds(2))
        let after = await #expect(throws: RedisError.self) { try await redis.send(["PING"]) }
        #expect(after?.code == .connectionClosed)
        await redis.close()
    }

    @Test func selectsDatabaseFromURL() async throws {
        let url = try TestEnvironment.redisURL
        let base = String(url[..<url.lastIndex(of: "/")!])
        let key = TestEnvironment.uniqueName("db")
        let db3 = try await RedisConnection.connect(url: base + "/3")
        let db0 = try await RedisConnection.connect(url: base + "/0")
        _ = try await db3.send(["SET", key, "three", "PX", "60000"])
        #expect(try await db0.send(["GET", key]) == .null)
        #expect(try await db3.send(["GET", key]) == .bulkString("three"))
        await db3.close()
        await db0.close()
    }

    @Test func closedConnectionThrows() async throws {
        let redis = try await connect()
        await redis.close()
        await redis.close() // idempotent
        let error = await #expect(throws: RedisError.self) { try await redis.send(["PING"]) }
        #expect(error?.code == .connectionClosed)
    }

    @Test func concurrentCommandsOnOneConnection() async throws {
        let redis = try await connect()
        let key = TestEnvironment.uniqueName("incr")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<100 {
                group.addTask { _ = try await redis.send(["INCR", key]) }
            }
            try await group.waitForAll()
        }
        #expect(try await redis.send(["GET", key]) == .bulkString("100"))
        _ = try await redis.send(["DEL", key])
        await redis.close()
    }

    @Test func serverClosingTheConnectionIsTypedError() async throws {
        let victim = try await connect()
        let admin = try await connect()
        guard case .integer(let id) = try await victim.send(["CLIENT", "ID"]) else {
            Issue.record("CLIENT ID did not return an integer")
            return
        }
        #expect(try await admin.send(["CLIENT", "KILL", "ID", String(id)]) == .integer(1))
        let error = await #expect(throws: RedisError.self) { try await victim.send(["PING"]) }
        #expect(error?.code == .io)
        let again = await #expect(throws: RedisError.self) { try await victim.send(["PING"]) }
        #expect(again?.code == .connectionClosed)
        await victim.close()
        await admin.close()
    }
}
