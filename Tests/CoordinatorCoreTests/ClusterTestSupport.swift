import CoordinatorCore

/// A keyed checksum standing in for HMAC-SHA256 in core tests: 32 bytes from four FNV-1a-style
/// 64-bit lanes seeded by the key. Not cryptographic; it only has to change when any byte changes.
struct FakeAuthenticator: MessageAuthenticator {
    var key: UInt64

    func mac(_ bytes: [UInt8]) -> [UInt8] {
        var lanes: [UInt64] = [0xcbf2_9ce4_8422_2325 ^ key, 0x8422_2325_cbf2_9ce4 &+ key, ~key, key &* 31 &+ 7]
        for (index, byte) in bytes.enumerated() {
            for lane in lanes.indices {
                lanes[lane] = (lanes[lane] ^ UInt64(byte) ^ UInt64(truncatingIfNeeded: index &* (lane + 1))) &* 0x0000_0100_0000_01B3
                lanes[lane] ^= lanes[lane] >> 29
            }
        }
        var out: [UInt8] = []
        for lane in lanes {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: lane >> UInt64(shift))) }
        }
        return out
    }

    func verify(_ bytes: [UInt8], mac: [UInt8]) -> Bool {
        let expected = self.mac(bytes)
        guard expected.count == mac.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= expected[index] ^ mac[index] }
        return difference == 0
    }
}


/// A small breaker configuration for cluster tests: count window 10 (minimum 10), 50 % failures,
/// 1 s open wait, 3 probes.
func clusterBreakerConfig(
    minimumCalls: Int = 10, openWaitMs: Int64 = 1_000, halfOpenPermittedCalls: Int = 3,
    openWaitMultiplier: Double = 1, maxOpenWaitMs: Int64? = nil
) -> BreakerConfig {
    BreakerConfig(
        window: .count(10), minimumCalls: minimumCalls, failureRateThreshold: 50, slowCallRateThreshold: 100,
        slowCallDurationMs: 100, openWaitMs: openWaitMs, halfOpenPermittedCalls: halfOpenPermittedCalls,
        openWaitMultiplier: openWaitMultiplier, maxOpenWaitMs: maxOpenWaitMs)
}
