import CoordinatorCore
import Foundation
import Testing

@Suite("Rate limiter: policy model and keys")
struct LimiterPolicyTests {
    func decode(_ json: String) throws -> LimitPolicy {
        try JSONDecoder().decode(LimitPolicy.self, from: Data(json.utf8))
    }

    /// The `ValidationError` a decoding failure maps to.
    func decodingFailure(_ json: String) -> ValidationError? {
        do {
            _ = try decode(json)
            return nil
        } catch let error as DecodingError {
            return DecodingDiagnostics.validationError(error, prefix: "limits.default")
        } catch {
            return ValidationError(key: "?", reason: "\(error)")
        }
    }

    @Test func decodesTheDocumentedExample() throws {
        let policy = try decode(
            #"{"algorithm":"gcra","limits":[{"rate":10,"periodMs":1000,"burst":5},{"rate":10000,"periodMs":86400000}]}"#)
        #expect(
            policy
                == LimitPolicy(
                    algorithm: .gcra,
                    limits: [LimitSpec(rate: 10, periodMs: 1_000, burst: 5), LimitSpec(rate: 10_000, periodMs: 86_400_000, burst: 10_000)]))
        #expect(policy.validate().isEmpty)
    }

    @Test func defaults() throws {
        let policy = try decode(#"{"limits":[{"rate":7,"periodMs":1000}]}"#)
        #expect(policy.algorithm == .gcra)
        #expect(policy.limits == [LimitSpec(rate: 7, periodMs: 1_000, burst: 7)])
        let sliding = try decode(#"{"algorithm":"sliding_window","limits":[{"rate":7,"periodMs":1000}]}"#)
        #expect(sliding.algorithm == .slidingWindow)
        #expect(sliding.limits[0].burst == 7)
        #expect(sliding.validate().isEmpty)
    }

    @Test func encodesBurstExplicitlyAndRoundTrips() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(LimitPolicy.pilotDefault), as: UTF8.self)
        #expect(
            json
                == #"{"algorithm":"gcra","limits":[{"burst":20,"periodMs":1000,"rate":10},{"burst":10000,"periodMs":86400000,"rate":10000}]}"#)
        #expect(try decode(json) == .pilotDefault)
        let sliding = LimitPolicy(algorithm: .slidingWindow, limits: [LimitSpec(rate: 3, periodMs: 60_000)])
        let slidingJSON = String(decoding: try encoder.encode(sliding), as: UTF8.self)
        #expect(slidingJSON == #"{"algorithm":"sliding_window","limits":[{"burst":3,"periodMs":60000,"rate":3}]}"#)
        #expect(try decode(slidingJSON) == sliding)
        #expect(try decode(slidingJSON).validate().isEmpty)
    }

    @Test func unknownKeysAreErrorsNamingThem() {
        #expect(
            decodingFailure(#"{"algoritm":"gcra","limits":[{"rate":1,"periodMs":1}]}"#)
                == ValidationError(key: "limits.default.algoritm", reason: #"unknown key "algoritm"; expected "algorithm", "limits", "mode", "syncIntervalMs""#))
        #expect(
            decodingFailure(#"{"limits":[{"rate":1,"periodMs":1},{"rate":1,"periodMs":1,"bursts":2}]}"#)
                == ValidationError(
                    key: "limits.default.limits[1].bursts", reason: #"unknown key "bursts"; expected "burst", "periodMs", "rate""#))
        #expect(
            decodingFailure(#"{"limits":[{"rate":1,"periodMs":1,"z":0,"b":1}]}"#)
                == ValidationError(
                    key: "limits.default.limits[0].b", reason: #"unknown keys "b", "z"; expected "burst", "periodMs", "rate""#))
    }

    @Test func shapeErrorsNameTheirKey() {
        #expect(decodingFailure(#"{"algorithm":"gcra"}"#) == ValidationError(key: "limits.default.limits", reason: "is required"))
        #expect(
            decodingFailure(#"{"limits":[{"periodMs":1}]}"#)
                == ValidationError(key: "limits.default.limits[0].rate", reason: "is required"))
        #expect(decodingFailure(#"{"algorithm":"leaky","limits":[]}"#)?.key == "limits.default.algorithm")
        #expect(decodingFailure(#"{"limits":[{"rate":"ten","periodMs":1}]}"#)?.key == "limits.default.limits[0].rate")
        #expect(DecodingDiagnostics.validationError(.dataCorrupted(.init(codingPath: [], debugDescription: "bad"))).key == "")
    }

    @Test func validationRules() {
        func errors(_ limits: [LimitSpec], _ algorithm: LimitAlgorithm = .gcra) -> [ValidationError] {
            LimitPolicy(algorithm: algorithm, limits: limits).validate()
        }
        #expect(LimitPolicy.pilotDefault.validate().isEmpty)
        #expect(errors([]) == [ValidationError(key: "limits", reason: "must hold 1 to 16 limits, has 0")])
        #expect(errors(Array(repeating: LimitSpec(rate: 1, periodMs: 1_000), count: 16)).isEmpty)
        #expect(
            errors(Array(repeating: LimitSpec(rate: 1, periodMs: 1_000), count: 17))
                == [ValidationError(key: "limits", reason: "must hold 1 to 16 limits, has 17")])
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 1_000), LimitSpec(rate: 0, periodMs: 1_000, burst: 1)])
                == [ValidationError(key: "limits[1].rate", reason: "must be 1...1000000000, is 0")])
        #expect(errors([LimitSpec(rate: 1_000_000_000, periodMs: 1_000)]).isEmpty)
        #expect(
            errors([LimitSpec(rate: 1_000_000_001, periodMs: 1_000_000, burst: 1)])
                == [ValidationError(key: "limits[0].rate", reason: "must be 1...1000000000, is 1000000001")])
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 0)])
                == [ValidationError(key: "limits[0].periodMs", reason: "must be 1...31622400000 (366 days), is 0")])
        #expect(errors([LimitSpec(rate: 1, periodMs: 31_622_400_000)]).isEmpty)
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 31_622_400_001)])
                == [ValidationError(key: "limits[0].periodMs", reason: "must be 1...31622400000 (366 days), is 31622400001")])
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 1_000, burst: 0)])
                == [ValidationError(key: "limits[0].burst", reason: "must be 1...1000000000, is 0")])
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 1_000, burst: 1_000_000_001)])
                == [ValidationError(key: "limits[0].burst", reason: "must be 1...1000000000, is 1000000001")])
        // Emission interval: 1 ms / 1 000 000 = 1 ns is fine, one more request is not.
        #expect(errors([LimitSpec(rate: 1_000_000, periodMs: 1)]).isEmpty)
        #expect(
            errors([LimitSpec(rate: 1_000_001, periodMs: 1, burst: 1)])
                == [ValidationError(key: "limits[0].rate", reason: "emission interval (periodMs × 1 000 000 / rate) is below 1 ns")])
        // Tolerance burst × period / rate ≤ 3660 days.
        #expect(errors([LimitSpec(rate: 1, periodMs: 31_622_400_000, burst: 10)]).isEmpty)
        #expect(
            errors([LimitSpec(rate: 1, periodMs: 31_622_400_000, burst: 11)])
                == [ValidationError(key: "limits[0].burst", reason: "burst × periodMs / rate must not exceed 3660 days")])
        // The sliding window has no burst; the same limits are fine with GCRA.
        #expect(
            errors([LimitSpec(rate: 10, periodMs: 1_000), LimitSpec(rate: 10, periodMs: 1_000, burst: 5)], .slidingWindow)
                == [ValidationError(key: "limits[1].burst", reason: "burst applies to gcra only")])
        #expect(errors([LimitSpec(rate: 2_000_000, periodMs: 1)], .slidingWindow).isEmpty)
        // Several problems are all reported, in order.
        #expect(
            errors([LimitSpec(rate: -1, periodMs: -1, burst: -1)]).map(\.key)
                == ["limits[0].rate", "limits[0].periodMs", "limits[0].burst"])
    }

    @Test func rateLimitKeys() {
        #expect(RateLimitKey.maximumLength == 256)
        #expect(RateLimitKey.isValid(String(repeating: "a", count: 256)))
        #expect(!RateLimitKey.isValid(String(repeating: "a", count: 257)))
        #expect(!RateLimitKey.isValid(""))
        #expect(RateLimitKey.isValid("user:42"))
        #expect(RateLimitKey.isValid("with space/and?punctuation#"))
        #expect(RateLimitKey.isValid("émoji🙂"))
        // 128 × "é" is 256 bytes; one more byte is too many.
        #expect(RateLimitKey.isValid(String(repeating: "é", count: 128)))
        #expect(!RateLimitKey.isValid(String(repeating: "é", count: 128) + "a"))
        for bad in ["\u{0}", "a\nb", "tab\t", "\u{1F}", "\u{7F}", "\u{85}", "\u{9F}"] {
            #expect(!RateLimitKey.isValid(bad), "\(bad.unicodeScalars.map(\.value))")
        }
        #expect(RateLimitKey.isValid("\u{A0}"))
        #expect(RateLimitKey.isValid("abc".dropFirst()))
    }

    @Test func modeAndSyncIntervalDecodeValidateAndRoundTrip() throws {
        let policy = try JSONDecoder().decode(LimitPolicy.self, from: Data(#"{"limits":[{"rate":5,"periodMs":1000}],"mode":"approximate","syncIntervalMs":20}"#.utf8))
        #expect(policy.mode == .approximate && policy.syncIntervalMs == 20)
        #expect(try JSONDecoder().decode(LimitPolicy.self, from: JSONEncoder().encode(policy)) == policy)
        let plain = try JSONDecoder().decode(LimitPolicy.self, from: Data(#"{"limits":[{"rate":5,"periodMs":1000}]}"#.utf8))
        #expect(plain.mode == .exact && plain.syncIntervalMs == 50)
        #expect(LimitPolicy(limits: [LimitSpec(rate: 1, periodMs: 1000)], syncIntervalMs: 0).validate().contains { $0.key == "syncIntervalMs" })
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(LimitPolicy.self, from: Data(#"{"limits":[{"rate":5,"periodMs":1000}],"mode":"fast"}"#.utf8))
        }
    }
}
