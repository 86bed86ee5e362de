import Coordinator
import Testing

/// Parsing of the PostgreSQL change feed's NOTIFY payloads: anything else is refused, never guessed.
struct StoreChangeTests {
    @Test func parsesEveryKind() {
        #expect(StoreChange(payload: "document:limit_policy:gold") == .document(.limitPolicy, name: "gold"))
        #expect(StoreChange(payload: "document:breaker_config:pay.ments:v2") == .document(.breakerConfig, name: "pay.ments:v2"))
        let hex = String(repeating: "ab", count: 32)
        #expect(StoreChange(payload: "token_created:" + hex) == .tokenCreated(secretHashHex: hex))
        #expect(StoreChange(payload: "token_revoked:tok_abc") == .tokenRevoked(id: "tok_abc"))
    }

    @Test(arguments: [
        "", "garbage", "document:", "document:limit_policy:", "document:unknown_kind:x", "document:limit_policy:bad name",
        "document:limit_policy:" + String(repeating: "x", count: 129), "token_created:", "token_created:ABCD",
        "token_created:" + String(repeating: "g", count: 64), "token_revoked:", "token_revoked:" + String(repeating: "x", count: 257),
    ])
    func refusesMalformedPayloads(_ payload: String) {
        #expect(StoreChange(payload: payload) == nil)
    }
}
