import RedisClient
import Testing

@Suite("RedisScript SHA-1 and reconnect backoff (no server)")
struct RedisScriptAndBackoffTests {
    @Test(arguments: [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        ("The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
    ])
    func sha1(source: String, expected: String) {
        #expect(RedisScript(source).sha1 == expected)
    }

    @Test func sha1OfLongAndMultibyteInput() {
        // 1 000 000 × "a" (FIPS 180 test vector) crosses many blocks.
        #expect(RedisScript(String(repeating: "a", count: 1_000_000)).sha1 == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        // 55/56/64-byte edges of the padding.
        #expect(RedisScript(String(repeating: "a", count: 55)).sha1 == "c1c8bbdc22796e28c0e15163d20899b65621d65a")
        #expect(RedisScript(String(repeating: "a", count: 56)).sha1 == "c2db330f6083854c99d4b5bfb6e8f29f201be699")
        #expect(RedisScript(String(repeating: "a", count: 64)).sha1 == "0098ba824b5c16427bd7a1122a5a442a25ec644d")
    }

    @Test func backoffIsExponentialWithFullJitterAndCapped() {
        let backoff = RedisBackoff()
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(50))
        #expect(backoff.ceiling(attempt: 1) == .milliseconds(100))
        #expect(backoff.ceiling(attempt: 4) == .milliseconds(800))
        #expect(backoff.ceiling(attempt: 5) == .seconds(1))
        #expect(backoff.ceiling(attempt: 1000) == .seconds(1))
        for attempt in 0..<12 {
            for _ in 0..<50 {
                let delay = backoff.delay(attempt: attempt)
                #expect(delay >= .milliseconds(1) && delay <= backoff.ceiling(attempt: attempt))
            }
        }
        let delays = Set((0..<50).map { _ in backoff.delay(attempt: 6) })
        #expect(delays.count > 1, "jittered")
    }

    @Test func configurationDefaults() throws {
        let c = try RedisConfiguration(url: "redis://h:1/0")
        #expect(c.commandTimeout == .milliseconds(50))
        #expect(c.connectTimeout == .milliseconds(200))
        #expect(c.reconnectBackoff == RedisBackoff(minimum: .milliseconds(50), maximum: .seconds(1)))
        #expect(c.clientName == nil)
    }
}
