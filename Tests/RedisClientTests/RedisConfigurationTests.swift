import RedisClient
import Testing

@Suite("Redis URL parsing (no server)")
struct RedisConfigurationTests {
    @Test func minimal() throws {
        let c = try RedisConfiguration(url: "redis://127.0.0.1:6380/2")
        #expect(c == RedisConfiguration(host: "127.0.0.1", port: 6380, database: 2))
    }

    @Test func defaults() throws {
        #expect(try RedisConfiguration(url: "redis://cache") == RedisConfiguration(host: "cache", port: 6379, database: 0))
        #expect(try RedisConfiguration(url: "redis://cache/") == RedisConfiguration(host: "cache"))
    }

    @Test func passwordOnlyAndUserPassword() throws {
        let p = try RedisConfiguration(url: "redis://:s3cr%40t@h:1/0")
        #expect(p.username == nil)
        #expect(p.password == "s3cr@t")
        let up = try RedisConfiguration(url: "redis://alice:pw@h:1/0")
        #expect(up.username == "alice")
        #expect(up.password == "pw")
        #expect(up.description == "redis://alice:***@h:1/0")
    }

    @Test func ipv6() throws {
        let c = try RedisConfiguration(url: "redis://[::1]:7000/1")
        #expect(c.host == "::1")
        #expect(c.port == 7000)
        #expect(c.description == "redis://[::1]:7000/1")
    }

    @Test(arguments: [
        ("127.0.0.1:6379", "expected redis://"),
        ("http://h:1/0", "scheme must be redis://"),
        ("rediss://h:1/0", "TLS"),
        ("redis://:6379/0", "missing host"),
        ("redis://h:0/0", "port must be"),
        ("redis://h:99999/0", "port must be"),
        ("redis://h:abc/0", "port must be"),
        ("redis://h:1/x", "database must be"),
        ("redis://h:1/-1", "database must be"),
        ("redis://h:1/0?timeout=1", "query"),
        ("redis://::1:6379", "brackets"),
        ("redis://[::1:6379", "unterminated"),
        ("redis://alice@h:1", "needs a password"),
        ("redis://:%zz@h:1", "percent-escape"),
    ])
    func rejects(url: String, reason: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidURL)
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "no error")")
    }

    @Test func errorMessageRedactsPassword() {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://u:hunter2@h:bad/0") }
        #expect(error?.message.contains("hunter2") == false)
    }
}
