import PostgresClient
import Testing

@Suite("PostgresURL.parse: multi-host connection strings (no server)")
struct PostgresURLTests {
    @Test func multiHostURIKeepsEveryOtherOption() throws {
        let targets = try PostgresURL.parse(
            "postgresql://user:pw@h1:5432,h2:5433,h3/db?sslmode=require&application_name=x")
        #expect(targets.map(\.id) == ["h1:5432", "h2:5433", "h3:5432"])
        #expect(targets.map(\.host) == ["h1", "h2", "h3"])
        #expect(targets.map(\.port) == [5432, 5433, 5432])
        for target in targets {
            #expect(target.hostaddr == nil)
            for option in ["user='user'", "password='pw'", "dbname='db'", "sslmode='require'", "application_name='x'"] {
                #expect(target.conninfo.contains(option), "\(option) missing in \(target.id)")
            }
            // Each conninfo names exactly its own host, and libpq accepts it.
            let again = try PostgresURL.parse(target.conninfo)
            #expect(again.count == 1)
            #expect(again.first?.id == target.id)
        }
        #expect(targets[1].conninfo.contains("host='h2'"))
        #expect(!targets[1].conninfo.contains("h1"))
        #expect(!targets[1].conninfo.contains("h3"))
    }

    @Test func keyValueWithOnePortForAllHosts() throws {
        let targets = try PostgresURL.parse("host=a,b port=6000 dbname=x target_session_attrs=read-write")
        #expect(targets.map(\.id) == ["a:6000", "b:6000"])
        #expect(targets.allSatisfy { $0.conninfo.contains("target_session_attrs='read-write'") })
    }

    @Test func defaultPortAndEmptyPortEntries() throws {
        #expect(try PostgresURL.parse("postgresql://db.internal/app").map(\.id) == ["db.internal:5432"])
        #expect(try PostgresURL.parse("host=a,b port=,7000").map(\.id) == ["a:5432", "b:7000"])
    }

    @Test func hostaddrIsPairedWithHost() throws {
        let named = try PostgresURL.parse("host=db.example hostaddr=10.0.0.1 port=5433 user=u")
        #expect(named.count == 1)
        #expect(named[0].host == "db.example")
        #expect(named[0].hostaddr == "10.0.0.1")
        #expect(named[0].id == "db.example:5433")
        #expect(named[0].conninfo.contains("hostaddr='10.0.0.1'"))

        let addressesOnly = try PostgresURL.parse("hostaddr=10.0.0.1,10.0.0.2 port=1,2")
        #expect(addressesOnly.map(\.id) == ["10.0.0.1:1", "10.0.0.2:2"])
        #expect(addressesOnly.map(\.hostaddr) == ["10.0.0.1", "10.0.0.2"])
        #expect(!addressesOnly[0].conninfo.contains("host='"))
    }

    @Test func ipv6AndUnixSocketHosts() throws {
        let v6 = try PostgresURL.parse("postgresql://[::1]:5433,[fe80::1]/db")
        #expect(v6.map(\.host) == ["::1", "fe80::1"])
        #expect(v6.map(\.id) == ["[::1]:5433", "[fe80::1]:5432"])
        let socket = try PostgresURL.parse("host=/var/run/postgresql port=5444")
        #expect(socket.map(\.id) == ["/var/run/postgresql:5444"])
    }

    @Test func valuesAreQuotedAndEscaped() throws {
        let targets = try PostgresURL.parse(#"host=h password='a\'b\\c d' application_name=x"#)
        #expect(targets.count == 1)
        #expect(targets[0].conninfo.contains(#"password='a\'b\\c d'"#))
        #expect(try PostgresURL.parse(targets[0].conninfo).first?.id == "h:5432")
        #expect(!targets[0].description.contains("a'b"), "description must not show the password")
    }

    @Test func percentEncodedURIParts() throws {
        let targets = try PostgresURL.parse("postgresql://u:p%40ss@h%2Dx:5432/d%20b")
        #expect(targets.map(\.host) == ["h-x"])
        #expect(targets[0].conninfo.contains("password='p@ss'"))
        #expect(targets[0].conninfo.contains("dbname='d b'"))
    }

    @Test(arguments: [
        ("postgresql://h1:notaport/db", "invalid port"),
        ("host=a port=70000", "invalid port"),
        ("host=a port=0", "invalid port"),
        ("host=a,b,c port=1,2", "2 ports for 3 hosts"),
        ("host=a,b hostaddr=1.2.3.4", "2 host names but 1 hostaddr"),
        ("dbname=x user=y", "names no host"),
        ("", "names no host"),
        ("host=a,,b", "host entry 2 is empty"),
        ("bogus=1", "invalid connection option"),
        ("postgresql://h/db?nosuchparam=1", "invalid URI query parameter"),
        ("host='unterminated", "unterminated quoted string"),
        ("postgresql://[::1/db", "IPv6"),
        ("just garbage", "missing \"=\""),
        ("mysql://h/db", "missing \"=\""),
    ])
    func malformedInputIsAClearError(input: String, expected: String) {
        let error = #expect(throws: PostgresError.self) { try PostgresURL.parse(input) }
        #expect(error?.code == .invalidURL)
        #expect(error?.message.contains(expected) == true, "\(input): \(error?.message ?? "no error")")
    }

    @Test func poolConfigurationRejectsMultiHostStrings() throws {
        let error = #expect(throws: PostgresError.self) {
            try PostgresPoolConfiguration(conninfo: "postgresql://a,b/db")
        }
        #expect(error?.code == .invalidURL)
        let single = try PostgresPoolConfiguration(conninfo: "postgresql://a:6000/db", maxConnections: 0)
        #expect(single.target.id == "a:6000")
        #expect(single.maxConnections == 1)
    }
}
