import Coordinator
import Testing

/// Parsing of the PostgreSQL change feed's NOTIFY payloads: anything else is refused, never guessed.
struct StoreChangeTests {
    @Test func parsesEveryKind() {
        #expect(StoreChange(payload: "document:limit_policy:gold") == .document(.limitPolicy, name: "gold"))
        #expect(StoreChange(payload: "document:breaker_config:pay.ments:v2") == .document(.breakerConfig, name: "pay.ments:v2"))
        let hex = String(repeating: "ab", count: 32)
        #expect(StoreChange(payload: "token_created:" + hex) == .tokenCreated(secretHashHex: hex))
        #expect(StoreChange(payload: "token_revoked:tok_abc:" + hex) == .tokenRevoked(id: "tok_abc", secretHashHex: hex))
        #expect(StoreChange(payload: "token_changed:odd:id:" + hex) == .tokenChanged(id: "odd:id", secretHashHex: hex))
    }

    @Test(arguments: [
        "", "garbage", "document:", "document:limit_policy:", "document:unknown_kind:x", "document:limit_policy:bad name",
        "document:limit_policy:" + String(repeating: "x", count: 129), "token_created:", "token_created:ABCD",
        "token_created:" + String(repeating: "g", count: 64), "token_revoked:", "token_revoked:tok_abc", "token_revoked::" + String(repeating: "ab", count: 32),
        "token_changed:tok_abc:ABCD", "token_revoked:" + String(repeating: "x", count: 257) + ":" + String(repeating: "ab", count: 32),
    ])
    func refusesMalformedPayloads(_ payload: String) {
        #expect(StoreChange(payload: payload) == nil)
    }
}
