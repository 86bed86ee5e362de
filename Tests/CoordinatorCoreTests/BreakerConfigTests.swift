import CoordinatorCore
import Foundation
import Testing

@Suite("Breaker configuration")
struct BreakerConfigTests {
    private func decode(_ json: String) throws -> BreakerConfig {
        try JSONDecoder().decode(BreakerConfig.self, from: Data(json.utf8))
    }

    /// The `debugDescription` and dotted coding path of the decoding error `json` provokes.
    private func decodingFailure(_ json: String) -> (description: String, path: String)? {
        do {
            _ = try decode(json)
            return nil
        } catch let DecodingError.dataCorrupted(context) {
            return (context.debugDescription, context.codingPath.map(\.stringValue).joined(separator: "."))
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func defaultsAreResilience4j() {
        let d = BreakerConfig.default
        #expect(d.window == BreakerConfig.Window(type: .count, size: 100))
        #expect(d.minimumCalls == 100)
        #expect(d.failureRateThreshold == 50)
        #expect(d.slowCallRateThreshold == 100)
        #expect(d.slowCallDurationMs == 60_000)
        #expect(d.openWaitMs == 60_000)
        #expect(d.halfOpenPermittedCalls == 10)
        #expect(d.openWaitMultiplier == 1)
        #expect(d.maxOpenWaitMs == nil)
        #expect(d.maxHalfOpenWaitMs == 0)
        #expect(d.permitTimeoutMs == 60_000)
        #expect(d.slowCallDuration == .seconds(60))
        #expect(d.openWait == .seconds(60))
        #expect(d.permitTimeout == .seconds(60))
        #expect(d.maxHalfOpenWait == .zero)
        #expect(d.maxOpenWait == nil)
        #expect(d.validate().isEmpty)
    }

    @Test func emptyObjectDecodesToDefaults() throws {
        #expect(try decode("{}") == .default)
        #expect(try decode(#"{"window":{}}"#) == .default)
    }

    @Test func documentedShapeDecodes() throws {
        let config = try decode(
            #"""
            {"window":{"type":"time","size":30},"minimumCalls":20,"failureRateThreshold":25.5,
             "slowCallRateThreshold":80,"slowCallDurationMs":1500,"openWaitMs":2000,
             "halfOpenPermittedCalls":4,"openWaitMultiplier":1.5,"maxOpenWaitMs":9000,
             "maxHalfOpenWaitMs":7000,"permitTimeoutMs":3000}
            """#)
        #expect(
            config
                == BreakerConfig(
                    window: .time(seconds: 30), minimumCalls: 20, failureRateThreshold: 25.5,
                    slowCallRateThreshold: 80, slowCallDurationMs: 1500, openWaitMs: 2000,
                    halfOpenPermittedCalls: 4, openWaitMultiplier: 1.5, maxOpenWaitMs: 9000,
                    maxHalfOpenWaitMs: 7000, permitTimeoutMs: 3000))
        #expect(config.maxOpenWait == .seconds(9))
        #expect(config.maxHalfOpenWait == .seconds(7))
    }

    @Test func missingKeysTakeDefaults() throws {
        let config = try decode(#"{"window":{"type":"time"},"failureRateThreshold":10}"#)
        var expected = BreakerConfig.default
        expected.window = .time(seconds: 100)
        expected.failureRateThreshold = 10
        #expect(config == expected)

        let sizeOnly = try decode(#"{"window":{"size":7},"maxOpenWaitMs":null}"#)
        #expect(sizeOnly.window == .count(7))
        #expect(sizeOnly.maxOpenWaitMs == nil)
    }

    @Test func unknownTopLevelKeyIsNamed() throws {
        let failure = try #require(decodingFailure(#"{"minimumCalls":5,"failureRate":50}"#))
        #expect(failure.path == "failureRate")
        #expect(failure.description.hasPrefix(#"unknown key "failureRate" (allowed: window, minimumCalls, "#))
    }

    @Test func unknownKeysAreAllNamedSorted() throws {
        let failure = try #require(decodingFailure(#"{"zeta":1,"alpha":2}"#))
        #expect(failure.path == "alpha")
        #expect(failure.description.hasPrefix(#"unknown keys "alpha", "zeta" (allowed: "#))
    }

    @Test func unknownWindowKeyIsNamedWithItsPath() throws {
        let failure = try #require(decodingFailure(#"{"window":{"type":"count","kind":"x"}}"#))
        #expect(failure.path == "window.kind")
        #expect(failure.description == #"unknown key "window.kind" (allowed: type, size)"#)
    }

    @Test func unknownWindowTypeIsNamed() throws {
        let failure = try #require(decodingFailure(#"{"window":{"type":"sliding"}}"#))
        #expect(failure.path == "window.type")
        #expect(failure.description == #"window.type must be "count" or "time", not "sliding""#)
    }

    @Test func wrongValueTypeIsAnError() {
        #expect(throws: DecodingError.self) { try decode(#"{"minimumCalls":"ten"}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"window":3}"#) }
    }

    @Test func encodesTheDocumentedShape() throws {
        let data = try JSONEncoder().encode(BreakerConfig.default)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "window", "minimumCalls", "failureRateThreshold", "slowCallRateThreshold", "slowCallDurationMs",
                "openWaitMs", "halfOpenPermittedCalls", "openWaitMultiplier", "maxHalfOpenWaitMs", "permitTimeoutMs",
            ])
        let window = try #require(object["window"] as? [String: Any])
        #expect(window["type"] as? String == "count")
        #expect(window["size"] as? Int == 100)
        #expect(object["minimumCalls"] as? Int == 100)
        #expect(object["failureRateThreshold"] as? Double == 50)
        #expect(object["slowCallDurationMs"] as? Int == 60_000)
        #expect(object["halfOpenPermittedCalls"] as? Int == 10)

        var capped = BreakerConfig.default
        capped.maxOpenWaitMs = 120_000
        let cappedObject = try #require(
            try JSONSerialization.jsonObject(with: JSONEncoder().encode(capped)) as? [String: Any])
        #expect(cappedObject["maxOpenWaitMs"] as? Int == 120_000)
    }

    @Test func roundTrips() throws {
        let configs = [
            BreakerConfig.default,
            BreakerConfig(
                window: .time(seconds: 60), minimumCalls: 3, failureRateThreshold: 12.5, slowCallRateThreshold: 99.5,
                slowCallDurationMs: 250, openWaitMs: 500, halfOpenPermittedCalls: 2, openWaitMultiplier: 2,
                maxOpenWaitMs: 4000, maxHalfOpenWaitMs: 1000, permitTimeoutMs: 800),
        ]
        for config in configs {
            let data = try JSONEncoder().encode(config)
            #expect(try JSONDecoder().decode(BreakerConfig.self, from: data) == config)
        }
    }

    @Test func boundariesAreValid() {
        let valid = [
            BreakerConfig(window: .count(1), minimumCalls: 1, failureRateThreshold: 100, slowCallRateThreshold: 0.001,
                          slowCallDurationMs: 1, openWaitMs: 1, halfOpenPermittedCalls: 1),
            BreakerConfig(window: .count(10_000), minimumCalls: 1_000_000, halfOpenPermittedCalls: 10_000,
                          openWaitMultiplier: 10, maxOpenWaitMs: 604_800_000, maxHalfOpenWaitMs: 604_800_000,
                          permitTimeoutMs: 604_800_000),
            BreakerConfig(window: .time(seconds: 3600), openWaitMs: 604_800_000, maxOpenWaitMs: 604_800_000),
            BreakerConfig(window: .time(seconds: 1), maxOpenWaitMs: 60_000),
        ]
        for config in valid {
            #expect(config.validate() == [], "\(config)")
        }
    }

    @Test func everyRuleNamesItsKey() {
        let config = BreakerConfig(
            window: .count(0), minimumCalls: 0, failureRateThreshold: 0, slowCallRateThreshold: 100.5,
            slowCallDurationMs: 0, openWaitMs: 604_800_001, halfOpenPermittedCalls: 10_001,
            openWaitMultiplier: 0.5, maxOpenWaitMs: 5, maxHalfOpenWaitMs: -1, permitTimeoutMs: -3)
        #expect(
            config.validate() == [
                ValidationError(key: "window.size", reason: "must be between 1 and 10000 calls for a count window, got 0"),
                ValidationError(key: "minimumCalls", reason: "must be between 1 and 1000000, got 0"),
                ValidationError(key: "failureRateThreshold", reason: "must be a percentage greater than 0 and at most 100, got 0.0"),
                ValidationError(key: "slowCallRateThreshold", reason: "must be a percentage greater than 0 and at most 100, got 100.5"),
                ValidationError(key: "slowCallDurationMs", reason: "must be between 1 and 604800000 milliseconds (7 days), got 0"),
                ValidationError(key: "openWaitMs", reason: "must be between 1 and 604800000 milliseconds (7 days), got 604800001"),
                ValidationError(key: "halfOpenPermittedCalls", reason: "must be between 1 and 10000, got 10001"),
                ValidationError(key: "openWaitMultiplier", reason: "must be a finite number of at least 1 (1 = no backoff), got 0.5"),
                ValidationError(key: "maxOpenWaitMs", reason: "must be at least openWaitMs (604800001), got 5"),
                ValidationError(key: "maxHalfOpenWaitMs", reason: "must be between 0 (no limit) and 604800000 milliseconds (7 days), got -1"),
                ValidationError(key: "permitTimeoutMs", reason: "must be between 1 and 604800000 milliseconds (7 days), got -3"),
            ])
    }

    @Test func windowLimitsDependOnType() {
        #expect(
            BreakerConfig(window: .time(seconds: 3601)).validate() == [
                ValidationError(key: "window.size", reason: "must be between 1 and 3600 seconds for a time window, got 3601")
            ])
        #expect(
            BreakerConfig(window: .count(10_001)).validate() == [
                ValidationError(key: "window.size", reason: "must be between 1 and 10000 calls for a count window, got 10001")
            ])
        #expect(BreakerConfig(window: .count(3601)).validate() == [])
    }

    @Test func nonFiniteNumbersAreRefused() {
        let config = BreakerConfig(failureRateThreshold: .nan, openWaitMultiplier: .infinity)
        #expect(config.validate().map(\.key) == ["failureRateThreshold", "openWaitMultiplier"])
    }

    @Test func maxOpenWaitAboveSevenDaysIsRefused() {
        #expect(
            BreakerConfig(maxOpenWaitMs: 604_800_001).validate() == [
                ValidationError(key: "maxOpenWaitMs", reason: "must be at most 604800000 milliseconds (7 days), got 604800001")
            ])
    }

    @Test func keyPrefixIsPrepended() {
        let errors = BreakerConfig(window: .count(0), minimumCalls: 0).validate(keyPrefix: "breakers.payments")
        #expect(errors.map(\.key) == ["breakers.payments.window.size", "breakers.payments.minimumCalls"])
        #expect(errors.first?.description == "breakers.payments.window.size: must be between 1 and 10000 calls for a count window, got 0")
    }
}
