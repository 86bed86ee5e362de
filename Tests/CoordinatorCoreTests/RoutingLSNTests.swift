import CoordinatorCore
import Testing

@Suite("Routing: LSN and host ids")
struct RoutingLSNTests {
    @Test("parses PostgreSQL's text form and prints it back")
    func roundTrip() throws {
        #expect(try LSN("16/B374D848").value == 0x16_B374_D848)
        #expect(try LSN("16/B374D848").description == "16/B374D848")
        #expect(try LSN("0/0") == .zero)
        #expect(LSN.zero.description == "0/0")
        #expect(try LSN("ffffffff/FFFFFFFF").value == UInt64.max)
        #expect(LSN(UInt64.max).description == "FFFFFFFF/FFFFFFFF")
        #expect(try LSN("a/b").description == "A/B")
        #expect(try LSN("00000001/0000000A").description == "1/A")
        #expect(try LSN(Substring("3/4")) == LSN(0x3_0000_0004))
        for value: UInt64 in [0, 1, 0xFFFF_FFFF, 0x1_0000_0000, 0xDEAD_BEEF_0000_0001] {
            #expect(try LSN(LSN(value).description).value == value)
        }
    }

    @Test("refuses anything else with the stable code", arguments: [
        "", "/", "1/", "/1", "1", "123456789/0", "0/123456789", "1/2/3", " 1/2", "1/2 ", "G/1", "-1/2", "+1/2",
        "1//2", "0x1/2", "1 /2",
    ])
    func invalid(_ text: String) {
        let error = #expect(throws: LSNFormatError.self) { try LSN(text) }
        #expect(error?.code == "invalid-lsn")
        #expect(error?.text == text)
        #expect(error?.description.hasPrefix("invalid-lsn:") == true)
    }

    @Test("compares as integers; distances in bytes")
    func compareAndDistance() throws {
        let low = try LSN("0/FFFFFFFF")
        let high = try LSN("1/0")
        #expect(low < high)
        #expect(high.bytes(after: low) == 1)
        #expect(low.bytes(after: high) == 0)
        #expect(high.bytes(after: high) == 0)
        #expect(high.distance(from: low) == 1)
        #expect(low.distance(from: high) == -1)
        #expect(LSN(UInt64.max).distance(from: .zero) == Int64.max)
        #expect(LSN.zero.distance(from: LSN(UInt64.max)) == Int64.min)
        #expect([high, LSN.zero, low].sorted() == [.zero, low, high])
    }

    @Test("host ids parse host:port and [v6]:port")
    func hostIDs() {
        #expect(HostID("db1:5432") == HostID(host: "db1", port: 5432))
        #expect(HostID("[::1]:6432") == HostID(host: "::1", port: 6432))
        #expect(HostID(host: "::1", port: 6432).description == "[::1]:6432")
        #expect(HostID(host: "127.0.0.1", port: 5432).description == "127.0.0.1:5432")
        #expect(HostID("db1") == nil)
        #expect(HostID(":5432") == nil)
        #expect(HostID("db1:0") == nil)
        #expect(HostID("db1:70000") == nil)
        #expect(WalReceiverInfo(status: "streaming", senderHost: "db1", senderPort: 5432).upstream == HostID("db1:5432"))
        #expect(WalReceiverInfo(status: "waiting", senderHost: "db1").upstream == nil)
        #expect(!WalReceiverInfo(status: "waiting").isStreaming)
    }

    @Test("observation helpers: backlog and position")
    func observationHelpers() {
        let replica = replicaObservation(replay: 0x100, receive: 0x180)
        #expect(replica.replayBacklogBytes == 0x80)
        #expect(replica.position == LSN(0x100))
        #expect(primaryObservation(0x500).position == LSN(0x500))
        #expect(primaryObservation(0x500).replayBacklogBytes == 0)
    }

    @Test("configuration defaults and validation")
    func configuration() {
        let defaults = TopologyConfiguration.default
        #expect(defaults.probeInterval == .milliseconds(500))
        #expect(defaults.failoverProbeInterval == .milliseconds(100))
        #expect(defaults.staleAfter == .milliseconds(1_500))
        #expect(defaults.quarantineBase == .milliseconds(250))
        #expect(defaults.quarantineMax == .seconds(5))
        #expect(defaults.validate().isEmpty)
        #expect(TopologyConfiguration(probeInterval: .seconds(1)).staleAfter == .seconds(3))
        let bad = TopologyConfiguration(
            probeInterval: .zero, quarantineBase: .seconds(2), quarantineMax: .seconds(1), jitterFraction: 1.5)
        #expect(bad.validate(prefix: "postgres.routing").map(\.key) == [
            "postgres.routing.probeIntervalMs", "postgres.routing.staleAfterMs", "postgres.routing.quarantineMaxMs",
            "postgres.routing.jitterFraction",
        ])
    }
}
