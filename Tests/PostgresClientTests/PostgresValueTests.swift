import Foundation
import PostgresClient
import Testing

@Suite("PostgresValue encoding and PostgresCell decoding (no server)")
struct PostgresValueTests {
    private func text(_ value: some PostgresEncodable) -> String? {
        value.postgresValue.bytes.map { String(decoding: $0, as: UTF8.self) }
    }

    private func cell(_ type: PostgresType, _ text: String?) -> PostgresCell {
        PostgresCell(type: type, text: text, name: "c")
    }

    // MARK: encoding

    @Test func scalarEncodings() {
        #expect(42.postgresValue == PostgresValue(type: .int8, bytes: Array("42".utf8)))
        #expect(Int64.min.postgresValue.type == .int8)
        #expect(text(Int64.min) == "-9223372036854775808")
        #expect(Int32(7).postgresValue.type == .int4)
        #expect(Int16(-7).postgresValue.type == .int2)
        #expect(true.postgresValue == PostgresValue(type: .bool, bytes: Array("t".utf8)))
        #expect(text(false) == "f")
        #expect("héllo".postgresValue == PostgresValue(type: .unspecified, bytes: Array("héllo".utf8)))
        #expect(text(1.5) == "1.5")
        #expect(text(Double.nan) == "NaN")
        #expect(text(-Double.infinity) == "-Infinity")
        #expect(PostgresValue.null.isNull)
        #expect(PostgresValue.null.description == "NULL")
    }

    @Test func byteaIsBinary() {
        let value = ([0, 1, 255] as [UInt8]).postgresValue
        #expect(value.type == .bytea)
        #expect(value.format == .binary)
        #expect(value.bytes == [0, 1, 255])
        #expect(value.description == "<3 bytes>::bytea")
    }

    @Test func uuidJSONAndLSN() throws {
        let uuid = UUID(uuidString: "5D0E7C1A-9A3F-4E0C-8F7E-2B1D4C6A8E90")!
        #expect(uuid.postgresValue == .text("5d0e7c1a-9a3f-4e0c-8f7e-2b1d4c6a8e90", type: .uuid))
        #expect(PostgresJSON(#"{"a":1}"#).postgresValue == .text(#"{"a":1}"#, type: .jsonb))
        struct Doc: Codable, Equatable { var b: Int; var a: String }
        let json = try PostgresJSON(encoding: Doc(b: 2, a: "x"))
        #expect(json.text == #"{"a":"x","b":2}"#)
        #expect(try json.decode(Doc.self) == Doc(b: 2, a: "x"))
        #expect(PostgresLSN(0x16_B374_D848).description == "16/B374D848")
        #expect(PostgresLSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(PostgresLSN("0/0")?.value == 0)
        #expect(PostgresLSN("16B374D848") == nil)
        #expect(PostgresLSN("1/2/3") == nil)
        #expect(PostgresLSN("123456789/0") == nil)
    }

    @Test func timestampEncodings() {
        #expect(PostgresTimestamp(millisecondsSince1970: 0).description == "1970-01-01 00:00:00+00")
        #expect(PostgresTimestamp(microsecondsSince1970: 1_714_979_289_123_456).description == "2024-05-06 07:08:09.123456+00")
        #expect(PostgresTimestamp(microsecondsSince1970: -1).description == "1969-12-31 23:59:59.999999+00")
        #expect(PostgresTimestamp(microsecondsSince1970: -63_517_780_800_000_000).description == "0044-03-15 12:00:00+00 BC")
        #expect(PostgresTimestamp(microsecondsSince1970: 253_402_300_800_000_000).description == "10000-01-01 00:00:00+00")
        let date = Date(timeIntervalSince1970: 1_714_979_289.5)
        #expect(date.postgresValue == .text("2024-05-06 07:08:09.5+00", type: .timestamptz))
        #expect(PostgresTimestamp(millisecondsSince1970: -1).millisecondsSince1970 == -1)
        #expect(PostgresTimestamp(microsecondsSince1970: -1).millisecondsSince1970 == -1) // floor
    }

    // MARK: decoding

    @Test func integers() throws {
        #expect(try Int.decode(from: cell(.int4, "42")) == 42)
        #expect(try Int64.decode(from: cell(.int8, "-9223372036854775808")) == .min)
        #expect(try Int16.decode(from: cell(.int2, "-32768")) == -32768)
        #expect(try Int.decode(from: cell(.numeric, "12")) == 12)
        let range = #expect(throws: PostgresError.self) { try Int16.decode(from: cell(.int4, "70000")) }
        #expect(range?.code == .decoding)
        #expect(range?.message.contains("out of range") == true)
        let wrongType = #expect(throws: PostgresError.self) { try Int.decode(from: cell(.text, "42")) }
        #expect(wrongType?.code == .decoding)
        #expect(wrongType?.message.contains("column \"c\" (text)") == true)
        let fraction = #expect(throws: PostgresError.self) { try Int.decode(from: cell(.numeric, "1.5")) }
        #expect(fraction?.code == .decoding)
    }

    @Test func nullOnlyDecodesIntoOptionals() throws {
        #expect(try Int?.decode(from: cell(.int4, nil)) == nil)
        #expect(try String?.decode(from: cell(.text, nil)) == nil)
        #expect(try [UInt8]?.decode(from: cell(.bytea, nil)) == nil)
        #expect(try Int?.decode(from: cell(.int4, "5")) == 5)
        let error = #expect(throws: PostgresError.self) { try Int.decode(from: cell(.int4, nil)) }
        #expect(error?.code == .decoding)
        #expect(error?.message.contains("is NULL") == true)
    }

    @Test func textBoolDoubleUUIDJSONLSN() throws {
        #expect(try String.decode(from: cell(.pgLSN, "0/3000148")) == "0/3000148")
        #expect(try String.decode(from: cell(.varchar, "")) == "")
        #expect(try Bool.decode(from: cell(.bool, "t")))
        #expect(try !Bool.decode(from: cell(.bool, "f")))
        #expect(throws: PostgresError.self) { try Bool.decode(from: cell(.bool, "x")) }
        #expect(try Double.decode(from: cell(.float8, "1.25")) == 1.25)
        #expect(try Double.decode(from: cell(.float4, "-Infinity")) == -.infinity)
        #expect(try Double.decode(from: cell(.float8, "NaN")).isNaN)
        #expect(try Double.decode(from: cell(.int4, "3")) == 3)
        let uuid = try UUID.decode(from: cell(.uuid, "5d0e7c1a-9a3f-4e0c-8f7e-2b1d4c6a8e90"))
        #expect(uuid.uuidString == "5D0E7C1A-9A3F-4E0C-8F7E-2B1D4C6A8E90")
        #expect(throws: PostgresError.self) { try UUID.decode(from: cell(.uuid, "nope")) }
        #expect(throws: PostgresError.self) { try UUID.decode(from: cell(.int4, "1")) }
        #expect(try PostgresJSON.decode(from: cell(.jsonb, #"{"a": 1}"#)).text == #"{"a": 1}"#)
        #expect(try PostgresLSN.decode(from: cell(.pgLSN, "16/B374D848")) == PostgresLSN(0x16_B374_D848))
        #expect(throws: PostgresError.self) { try PostgresLSN.decode(from: cell(.pgLSN, "zz")) }
    }

    @Test func byteaHexAndEscapeFormats() throws {
        #expect(try [UInt8].decode(from: cell(.bytea, #"\x00ff10"#)) == [0, 255, 16])
        #expect(try [UInt8].decode(from: cell(.bytea, #"\xDEADbeef"#)) == [0xDE, 0xAD, 0xBE, 0xEF])
        #expect(try [UInt8].decode(from: cell(.bytea, #"\x"#)) == [])
        #expect(try [UInt8].decode(from: cell(.bytea, #"a\000\\b\377"#)) == [97, 0, 92, 98, 255])
        for bad in [#"\x0"#, #"\x0g"#, #"\x0 0"#, #"a\9"#, #"a\"#] {
            let error = #expect(throws: PostgresError.self, "\(bad)") { try [UInt8].decode(from: cell(.bytea, bad)) }
            #expect(error?.code == .decoding)
        }
        #expect(throws: PostgresError.self) { try [UInt8].decode(from: cell(.text, #"\x00"#)) }
    }

    @Test(arguments: [
        ("2024-05-06 07:08:09+00", PostgresType.timestamptz, Int64(1_714_979_289_000_000)),
        ("2024-05-06 07:08:09.5+02", .timestamptz, 1_714_972_089_500_000),
        ("2024-05-06 07:08:09.123456-03:30", .timestamptz, 1_714_991_889_123_456),
        ("2024-05-06T07:08:09Z", .timestamptz, 1_714_979_289_000_000),
        ("2024-05-06 07:08:09+0000", .timestamptz, 1_714_979_289_000_000),
        ("1900-01-01 00:00:00+00:53:28", .timestamptz, -2_208_992_008_000_000),
        ("0001-01-01 00:00:00+00", .timestamptz, -62_135_596_800_000_000),
        ("0044-03-15 12:00:00+00 BC", .timestamptz, -63_517_780_800_000_000),
        ("9999-12-31 23:59:59.999999+00", .timestamptz, 253_402_300_799_999_999),
        ("10000-01-01 00:00:00+00", .timestamptz, 253_402_300_800_000_000),
        ("2024-05-06 07:08:09.1234567+00", .timestamptz, 1_714_979_289_123_457),
        ("2024-05-06 07:08:09", .timestamp, 1_714_979_289_000_000),
        ("2024-02-29", .date, 1_709_164_800_000_000),
    ])
    func timestampFormats(text: String, type: PostgresType, micros: Int64) throws {
        let value = try PostgresTimestamp.decode(from: cell(type, text))
        #expect(value.microsecondsSince1970 == micros)
        let date = try Date.decode(from: cell(type, text))
        #expect(abs(date.timeIntervalSince1970 - Double(micros) / 1_000_000) < 0.000_002)
    }

    @Test(arguments: ["infinity", "-infinity", "2024-02-30 00:00:00+00", "2023-02-29", "2024-13-01", "24-01-01",
                      "2024-01-01 25:00:00+00", "2024-01-01 10:00:00+", "2024-01-01 10:00:00 UTC", "", "0000-01-01 BC"])
    func malformedTimestamps(text: String) {
        let error = #expect(throws: PostgresError.self) { try PostgresTimestamp.decode(from: cell(.timestamptz, text)) }
        #expect(error?.code == .decoding)
        let dateError = #expect(throws: PostgresError.self) { try Date.decode(from: cell(.timestamptz, text)) }
        #expect(dateError?.message.contains("Date") == true)
    }

    @Test func timestampTextRoundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        var samples: [Int64] = [0, -1, 1, 951_782_400_000_000 /* 2000-02-29 */, -62_135_596_800_000_001, -63_517_780_800_000_000]
        for _ in 0..<2000 { samples.append(Int64.random(in: -200_000_000_000_000_000...300_000_000_000_000_000, using: &generator)) }
        for micros in samples {
            let timestamp = PostgresTimestamp(microsecondsSince1970: micros)
            let text = String(decoding: timestamp.postgresValue.bytes ?? [], as: UTF8.self)
            let decoded = try PostgresTimestamp.decode(from: cell(.timestamptz, text))
            #expect(decoded == timestamp, "\(micros) -> \(text)")
        }
    }

    @Test func rowsDecodeByNameAndIndex() throws {
        let columns = [PostgresColumn(name: "id", type: .int8, index: 0), PostgresColumn(name: "note", type: .text, index: 1)]
        let rows = PostgresRows(columns: columns, cells: [Array("1".utf8), nil, Array("2".utf8), Array("b".utf8)],
                                commandTag: "SELECT 2", affectedRows: 2)
        #expect(rows.count == 2)
        #expect(try rows[0].decode(Int64.self, column: "id") == 1)
        #expect(try rows[0].decode(String?.self, column: "note") == nil)
        #expect(try rows[1].decode(String.self, at: 1) == "b")
        #expect(try rows.scalar(Int.self) == 1)
        #expect(rows.textRows == [["1", nil], ["2", "b"]])
        #expect(rows[1][column: "note"]?.text == "b")
        let missing = #expect(throws: PostgresError.self) { try rows[0].decode(Int.self, column: "nope") }
        #expect(missing?.message.contains("columns: id, note") == true)
        #expect(throws: PostgresError.self) { try rows[0].decode(Int.self, at: 2) }
        let empty = PostgresRows(columns: columns, cells: [])
        #expect(throws: PostgresError.self) { try empty.scalar(Int.self) }
    }
}
