import Coordinator
import CoordinatorCore
import Testing

@Suite("Bus authentication (HMAC-SHA256)")
struct BusAuthenticatorTests {
    @Test("RFC 4231 test case 2")
    func knownVector() {
        let authenticator = HMACBusAuthenticator(secret: "Jefe")
        let mac = authenticator.mac(Array("what do ya want for nothing?".utf8))
        #expect(Secrets.hex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(authenticator.verify(Array("what do ya want for nothing?".utf8), mac: mac))
        #expect(!authenticator.verify(Array("what do ya want for nothing!".utf8), mac: mac))
    }

    @Test("frames signed with the cluster secret are accepted; another secret's frames are forged")
    func forgedFrames() {
        let real = HMACBusAuthenticator(secret: "cluster-secret-0123456789")
        let forger = HMACBusAuthenticator(secret: "not-the-secret")
        var sender = BusSender(clusterName: "c1", nodeID: "node-a", incarnation: 7)
        let envelope = sender.envelope(kind: .tokenRevoked, payload: Array("tok_x".utf8), redisTimeMs: 1_000)
        var inbox = BusInbox(clusterName: "c1")
        #expect(inbox.receive(envelope.encode(authenticator: real), authenticator: real).envelope == envelope)
        let forged = sender.envelope(kind: .tokenRevoked, payload: Array("tok_y".utf8), redisTimeMs: 1_001)
        #expect(inbox.receive(forged.encode(authenticator: forger), authenticator: real).rejection == .badSignature)
    }
}
