import CoordinatorCore
import Testing

@Suite("Cluster bus envelope")
struct ClusterBusTests {
    let auth = FakeAuthenticator(key: 0x5EC2E7)
    let sample = BusEnvelope(
        clusterName: "prod-eu", nodeID: "node-1", incarnation: 0xDEAD_BEEF_0102_0304, sequence: 42,
        redisTimeMs: 1_700_000_000_123, kind: .breakerState, payload: [1, 2, 3, 4, 5])

    func decode(_ frame: [UInt8], cluster: String = "prod-eu", max: Int = BusEnvelope.defaultMaximumPayloadLength) -> BusDecodeResult {
        BusEnvelope.decode(frame, expectedCluster: cluster, authenticator: auth, maximumPayloadLength: max)
    }

    @Test("every kind round-trips, with empty and large payloads and long names")
    func roundTrip() {
        for kind in BusMessageKind.allCases {
            for payload in [[], [0], Array(repeating: UInt8(0xAB), count: 70_000)] as [[UInt8]] {
                var envelope = sample
                envelope.kind = kind
                envelope.payload = payload
                envelope.redisTimeMs = -5
                let frame = envelope.encode(authenticator: auth)
                #expect(frame.count == BusEnvelope.fixedOverhead + 7 + 6 + payload.count)
                #expect(decode(frame) == .accepted(envelope))
            }
        }
        let long = BusEnvelope(
            clusterName: String(repeating: "é", count: 127) + "x", nodeID: String(repeating: "n", count: 128),
            incarnation: .max, sequence: .max, redisTimeMs: .min, kind: .memberLeft)
        #expect(long.clusterName.utf8.count == 255)
        #expect(decode(long.encode(authenticator: auth), cluster: long.clusterName) == .accepted(long))
    }

    @Test("the frame layout is the documented one")
    func layout() {
        let frame = sample.encode(authenticator: auth)
        #expect(Array(frame[0..<5]) == [0xC0, 0xB5, 1, BusMessageKind.breakerState.rawValue, 7])
        #expect(Array(frame[5..<12]) == Array("prod-eu".utf8))
        #expect(frame[12] == 6)
        #expect(Array(frame[19..<27]) == [0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4])
        #expect(Array(frame[27..<35]) == [0, 0, 0, 0, 0, 0, 0, 42])
        #expect(Array(frame[43..<47]) == [0, 0, 0, 5])
        #expect(Array(frame[47..<52]) == [1, 2, 3, 4, 5])
        #expect(Array(frame[52...]) == auth.mac(Array(frame[0..<52])))
    }

    @Test("specific rejections")
    func rejections() {
        let frame = sample.encode(authenticator: auth)
        #expect(decode(frame, cluster: "prod-us") == .rejected(.foreignCluster))
        #expect(
            BusEnvelope.decode(frame, expectedCluster: "prod-eu", authenticator: FakeAuthenticator(key: 1))
                == .rejected(.badSignature))
        #expect(decode(frame + [0]) == .rejected(.malformed(.trailingBytes)))
        #expect(decode(frame, max: 4) == .rejected(.malformed(.lengthOutOfBounds)))
        #expect(decode(frame, max: 5) == .accepted(sample))
        var version2 = frame
        version2[2] = 2
        #expect(decode(version2) == .rejected(.unsupportedVersion(2)))
        #expect(decode([]) == .rejected(.malformed(.truncated)))
        #expect(decode([0xC0]) == .rejected(.malformed(.truncated)))
        #expect(decode([0x00, 0xB5, 1]) == .rejected(.malformed(.badMagic)))
        // A zero-length cluster name or node id, a node id over 128 bytes.
        #expect(decode([0xC0, 0xB5, 1, 1, 0]) == .rejected(.malformed(.lengthOutOfBounds)))
        #expect(decode([0xC0, 0xB5, 1, 1, 1, 0x61, 0]) == .rejected(.malformed(.lengthOutOfBounds)))
        #expect(decode([0xC0, 0xB5, 1, 1, 1, 0x61, 129]) == .rejected(.malformed(.lengthOutOfBounds)))
        // A well-formed, correctly signed frame with an invalid node id is still refused.
        var writer = ByteWriter()
        writer.write([0xC0, 0xB5, 1, 1])
        writer.writeShortString("prod-eu")
        writer.writeShortString("bad node")
        writer.write(UInt64(1))
        writer.write(UInt64(1))
        writer.write(Int64(1))
        writer.write(UInt32(0))
        let signed = writer.bytes + auth.mac(writer.bytes)
        #expect(decode(signed) == .rejected(.malformed(.invalidName)))
        #expect(BusRejection.malformed(.truncated).label == "malformed")
        #expect(BusRejection.unsupportedVersion(9).description == "unsupported_version(9)")
        #expect(BusRejection.badSignature.label == "bad_signature")
    }

    @Test("every truncation of a valid frame is malformed(truncated)")
    func truncations() {
        let frame = sample.encode(authenticator: auth)
        for length in 0..<frame.count {
            #expect(decode(Array(frame[0..<length])) == .rejected(.malformed(.truncated)), "length \(length)")
        }
    }

    /// The reason a frame with bit `bit` of byte `index` flipped must be rejected for.
    func expectedRejection(flipped: [UInt8], index: Int, bit: Int) -> BusRejection? {
        let nodeStart = 13
        let nodeEnd = 19
        switch index {
        case 0, 1: return .malformed(.badMagic)
        case 2: return .unsupportedVersion(flipped[2])
        case 3: return BusMessageKind(rawValue: flipped[3]) == nil ? .malformed(.unknownKind) : .badSignature
        case 4, 12, 43..<47: return nil  // a length field: some malformation (checked by the caller)
        case 5..<12:
            return String(validating: flipped[5..<12], as: UTF8.self) == nil ? .malformed(.invalidName) : .foreignCluster
        case nodeStart..<nodeEnd:
            let id = String(decoding: flipped[nodeStart..<nodeEnd], as: UTF8.self)
            let valid = flipped[nodeStart..<nodeEnd].allSatisfy { $0 < 0x80 } && ResourceName.isValid(id)
            return valid ? .badSignature : .malformed(.invalidName)
        default: return .badSignature
        }
    }

    @Test("every single-bit flip of a valid frame is rejected for the right reason")
    func bitFlips() {
        let frame = sample.encode(authenticator: auth)
        for index in frame.indices {
            for bit in 0..<8 {
                var flipped = frame
                flipped[index] ^= UInt8(1 << bit)
                let result = decode(flipped)
                if let expected = expectedRejection(flipped: flipped, index: index, bit: bit) {
                    #expect(result == .rejected(expected), "byte \(index) bit \(bit)")
                } else if case .rejected(.malformed) = result {
                } else {
                    Issue.record("byte \(index) bit \(bit): \(result)")
                }
            }
        }
    }

    @Test("random bytes, random tails after a valid header, and random byte edits never crash or pass")
    func fuzz() {
        var random = SplitMix64(seed: 0xF022)
        let frame = sample.encode(authenticator: auth)
        var reasons: [String: Int] = [:]
        for round in 0..<20_000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0:
                bytes = (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            case 1:
                bytes = Array(frame[0..<Int.random(in: 0...frame.count, using: &random)])
                bytes += (0..<Int.random(in: 0...80, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            default:
                bytes = frame
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            }
            if bytes == frame { continue }
            let result = decode(bytes)
            guard let rejection = result.rejection else {
                Issue.record("accepted random frame \(bytes)")
                continue
            }
            reasons[rejection.label, default: 0] += 1
        }
        // The fuzzing reached every pre-replay rejection reason.
        for label in ["malformed", "unsupported_version", "foreign_cluster", "bad_signature"] {
            #expect(reasons[label, default: 0] > 0, "\(label) never produced: \(reasons)")
        }
    }

    @Test("the sender numbers messages from 1 under its incarnation")
    func sender() {
        var sender = BusSender(clusterName: "c", nodeID: "a", incarnation: 77)
        let first = sender.envelope(kind: .memberJoined, redisTimeMs: 10)
        let second = sender.envelope(kind: .tokenRevoked, payload: [9], redisTimeMs: 11)
        #expect(first.sequence == 1 && second.sequence == 2 && sender.lastSequence == 2)
        #expect(first.incarnation == 77 && second.payload == [9] && second.clusterName == "c")
    }

    @Test("the inbox drops replays and stale frames, and forged frames never touch its state")
    func inbox() {
        var sender = BusSender(clusterName: "prod-eu", nodeID: "node-2", incarnation: 5)
        var inbox = BusInbox(clusterName: "prod-eu")
        let one = sender.envelope(kind: .breakerTrip, redisTimeMs: 100_000).encode(authenticator: auth)
        let two = sender.envelope(kind: .breakerTrip, redisTimeMs: 100_010).encode(authenticator: auth)
        #expect(inbox.receive(one, authenticator: auth).envelope?.sequence == 1)
        #expect(inbox.receive(one, authenticator: auth) == .rejected(.replayed))
        #expect(inbox.receive(two, authenticator: auth).envelope?.sequence == 2)

        // A forgery (other key) with a far-future time: rejected and the guard's clock does not move.
        var forger = BusSender(clusterName: "prod-eu", nodeID: "node-9", incarnation: 1)
        let forged = forger.envelope(kind: .breakerState, redisTimeMs: 9_000_000).encode(authenticator: FakeAuthenticator(key: 3))
        #expect(inbox.receive(forged, authenticator: auth) == .rejected(.badSignature))
        #expect(inbox.replayGuard.newestRedisMs == 100_010)
        #expect(inbox.replayGuard.trackedSenders == 1)

        // A recording of an older incarnation, 31 s behind the newest Redis time: stale.
        inbox.replayGuard.observe(redisTimeMs: 131_000)
        var old = BusSender(clusterName: "prod-eu", nodeID: "node-2", incarnation: 4)
        let recorded = old.envelope(kind: .breakerState, redisTimeMs: 100_999).encode(authenticator: auth)
        #expect(inbox.receive(recorded, authenticator: auth) == .rejected(.stale))
        #expect(inbox.receive([1, 2, 3], authenticator: auth) == .rejected(.malformed(.badMagic)))
    }

    @Test("byte reader never over-reads")
    func byteReader() {
        var reader = ByteReader([0, 1, 2])
        #expect(reader.readUInt32() == nil)
        #expect(reader.offset == 0)
        #expect(reader.readUInt16() == 1)
        #expect(reader.readBytes(-1) == nil)
        #expect(reader.readBytes(2) == nil)
        #expect(reader.readShortString() == nil)
        #expect(reader.offset == 2)
        #expect(reader.readLengthPrefixed(maximumLength: 10) == nil)
        #expect(reader.readUInt8() == 2)
        #expect(reader.isAtEnd && reader.readUInt8() == nil)
        var writer = ByteWriter()
        writer.writeLengthPrefixed([7, 8])
        writer.write(UInt16(0x0102))
        writer.write(Int64(-2))
        var back = ByteReader(writer.bytes)
        #expect(back.readLengthPrefixed(maximumLength: 1) == nil)
        #expect(back.readLengthPrefixed(maximumLength: 2) == [7, 8])
        #expect(back.readUInt16() == 0x0102)
        #expect(back.readInt64() == -2)
        #expect(back.isAtEnd)
    }
}
