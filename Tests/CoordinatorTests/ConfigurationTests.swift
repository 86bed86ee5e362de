import Coordinator
import CoordinatorCore
import Foundation
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "coordinator-config-\(UUID().uuidString).json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func expectError(file text: String?, environment: [String: String] = [:], key: String, reason: String = "") throws {
        let path = try text.map(write)
        defer { if let path { try? FileManager.default.removeItem(atPath: path) } }
        do {
            _ = try ConfigurationLoader.load(file: path, environment: environment)
            Issue.record("expected an error for \(key)")
        } catch {
            #expect(error.key == key, "\(error)")
            if !reason.isEmpty { #expect(error.reason.contains(reason), "\(error)") }
        }
    }

    @Test("zero-config defaults are the pilot defaults")
    func defaults() throws {
        let configuration = try ConfigurationLoader.load(file: nil, environment: [:])
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 8080)
        #expect(configuration.dataDirectory == "./coordinator-data")
        #expect(configuration.maxBodyBytes == 65_536)
        #expect(configuration.policies["default"] == LimitPolicy.pilotDefault)
        #expect(configuration.defaultBreakerConfig == BreakerConfig.default)
    }

    @Test("file, then environment, then flags")
    func precedence() throws {
        let path = try write(#"{"server":{"host":"0.0.0.0","port":9000},"dataDir":"/tmp/x","log":{"level":"debug"},"limits":{"policies":{"p":{"limits":[{"rate":5,"periodMs":1000}]}},"defaultPolicy":"p"},"breakers":{"default":{"minimumCalls":7},"maxBreakers":3}}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try ConfigurationLoader.load(file: path, environment: [:])
        #expect(fromFile.host == "0.0.0.0" && fromFile.port == 9000 && fromFile.dataDirectory == "/tmp/x" && fromFile.logLevel == "debug")
        #expect(fromFile.policies["p"]?.limits.first?.rate == 5)
        #expect(fromFile.policies["default"] == LimitPolicy.pilotDefault, "the built-in default stays")
        #expect(fromFile.defaultPolicyName == "p")
        #expect(fromFile.defaultBreakerConfig.minimumCalls == 7)
        #expect(fromFile.maxBreakers == 3)

        let fromEnvironment = try ConfigurationLoader.load(
            file: path,
            environment: ["COORDINATOR_SERVER_PORT": "9100", "COORDINATOR_TOKEN_CACHE_TTL_MS": "1000", "COORDINATOR_ADMIN_TOKEN": "an-admin-token-of-length",
                          "COORDINATOR_BREAKERS_DEFAULT": #"{"openWaitMs":5000}"#, "UNRELATED": "x"]
        )
        #expect(fromEnvironment.port == 9100)
        #expect(fromEnvironment.tokenCacheTTLMilliseconds == 1000)
        #expect(fromEnvironment.adminToken == "an-admin-token-of-length")
        #expect(fromEnvironment.defaultBreakerConfig.openWaitMs == 5000)
        #expect(fromEnvironment.host == "0.0.0.0")

        let fromFlags = try ConfigurationLoader.load(file: path, environment: ["COORDINATOR_SERVER_PORT": "9100"], flags: .init(host: "127.0.0.2", port: 9200, dataDirectory: "/tmp/y"))
        #expect(fromFlags.port == 9200 && fromFlags.host == "127.0.0.2" && fromFlags.dataDirectory == "/tmp/y")
    }

    @Test("every key has an environment variable in README's configuration reference")
    func environmentNames() throws {
        let names = ConfigurationLoader.keys.map(\.environmentVariable)
        #expect(names.contains("COORDINATOR_SERVER_MAX_BODY_BYTES"))
        #expect(names.contains("COORDINATOR_TOKEN_CACHE_NEGATIVE_TTL_MS"))
        #expect(Set(names).count == names.count)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        for key in ConfigurationLoader.keys {
            #expect(readme.contains("`\(key.path)`"), "README lacks \(key.path)")
            #expect(readme.contains("`\(key.environmentVariable)`"), "README lacks \(key.environmentVariable)")
        }
    }

    @Test("invalid configurations name the bad key and why")
    func invalid() throws {
        try expectError(file: #"{"server":{"port":70000}}"#, key: "server.port", reason: "between 0 and 65535")
        try expectError(file: #"{"server":{"prot":8080}}"#, key: "server.prot", reason: "unknown key")
        try expectError(file: #"{"serverr":1}"#, key: "serverr", reason: "unknown key")
        try expectError(file: #"{"server":{"port":"8080"}}"#, key: "server.port", reason: "integer")
        try expectError(file: #"{"server":{"port":80.5}}"#, key: "server.port", reason: "integer")
        try expectError(file: #"{"server":{"port":true}}"#, key: "server.port", reason: "integer")
        try expectError(file: #"{"server":"x"}"#, key: "server", reason: "unknown key")
        try expectError(file: #"{"server":{"host":["a"]}}"#, key: "server.host", reason: "array")
        try expectError(file: #"{"sqlite":{"synchronous":"off"}}"#, key: "sqlite.synchronous", reason: "full, normal")
        try expectError(file: #"{"log":{"level":"loud"}}"#, key: "log.level")
        try expectError(file: #"{"adminToken":"short"}"#, key: "adminToken", reason: "16")
        try expectError(file: #"{"nodeId":"has space"}"#, key: "nodeId")
        try expectError(file: #"{"limits":{"policies":{"p":{"limits":[{"rate":0,"periodMs":1000}]}}}}"#, key: "limits.policies.p.limits[0].rate")
        try expectError(file: #"{"limits":{"policies":{"bad name":{"limits":[{"rate":1,"periodMs":1000}]}}}}"#, key: "limits.policies.bad name")
        try expectError(file: #"{"breakers":{"default":{"failureRateThreshold":0}}}"#, key: "breakers.default.failureRateThreshold")
        try expectError(file: #"{"breakers":{"default":{"minimumCall":1}}}"#, key: "breakers.default.minimumCall", reason: "unknown key")
        try expectError(file: "{not json", key: "(file)", reason: "not valid JSON")
        try expectError(file: "[1,2]", key: "(file)", reason: "JSON object")
        try expectError(file: nil, environment: ["COORDINATOR_SERVER_PORT": "eighty"], key: "server.port", reason: "integer")
        try expectError(file: nil, environment: ["COORDINATOR_REDIS_URL": "redis://127.0.0.1:6379/0"], key: "clusterSecret", reason: "secret")
        try expectError(file: nil, environment: ["COORDINATOR_REDIS_URL": "http://127.0.0.1:6379"], key: "redisUrl", reason: "redis://")
        try expectError(file: nil, environment: ["COORDINATOR_CLUSTER_SECRET": "short"], key: "clusterSecret", reason: "16")
        try expectError(file: nil, environment: ["COORDINATOR_ON_SHARED_STATE_LOSS": "panic"], key: "onSharedStateLoss", reason: "localShare")
        try expectError(file: #"{"clusterName":"has space"}"#, key: "clusterName")
        try expectError(file: #"{"breakers":{"sharing":"quorum(0)"}}"#, key: "breakers.sharing")
        #expect(try ConfigurationLoader.load(file: nil, environment: ["COORDINATOR_BREAKERS_SHARING": "aggregate"]).breakerSharing == .aggregate)
        #expect(try ConfigurationLoader.load(file: nil, environment: ["COORDINATOR_BREAKERS_SHARING": "quorum(3)"]).breakerSharing == .quorum(3))
        let cluster = try ConfigurationLoader.load(
            file: nil, environment: ["COORDINATOR_REDIS_URL": "redis://127.0.0.1:6379/0", "COORDINATOR_CLUSTER_SECRET": "0123456789abcdef"],
            flags: .init(clusterName: "blue", nodeID: "n1"))
        #expect(cluster.isClusterMode && cluster.clusterName == "blue" && cluster.nodeID == "n1" && cluster.onSharedStateLoss == .localShare)
        try expectError(file: nil, environment: ["COORDINATOR_BREAKERS_DEFAULT": "{"], key: "breakers.default", reason: "JSON")
        do {
            _ = try ConfigurationLoader.load(file: "/nonexistent/coordinator.json", environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(error.key == "(file)" && error.reason.contains("cannot read"))
        }
    }
}

/// The package root (this file is Tests/CoordinatorTests/…).
func packageRoot() -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}
