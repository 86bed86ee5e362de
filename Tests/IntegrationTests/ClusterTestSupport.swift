import Coordinator
import CoordinatorCore
import Foundation
import Logging

/// Shared helpers of the cluster-mode integration tests.
enum ClusterTestSupport {
    static let secret = "integration-cluster-secret-0123"

    /// A cluster-mode node on a fresh (or given) data directory. The Redis deadline is generous: a
    /// loaded CI machine must not look like a lost Redis (a killed server is noticed by its error).
    static func node(
        redisURL: String? = nil, cluster: String, nodeID: String, directory: String? = nil, sharing: BreakerSharing = .any,
        heartbeatMs: Int64 = 200, policies: [String: LimitPolicy] = [:],
        wrapStore: (@Sendable (any CoordinatorStore) -> any CoordinatorStore)? = nil
    ) async throws -> CoordinatorNode {
        var configuration = NodeConfiguration()
        configuration.dataDirectory = directory ?? NSTemporaryDirectory() + "coordinator-cluster-\(UUID().uuidString)"
        configuration.sqliteSynchronous = .normal
        configuration.redisURL = try redisURL ?? TestEnvironment.redisURL
        configuration.clusterName = cluster
        configuration.clusterSecret = secret
        configuration.nodeID = nodeID
        configuration.redisDeadlineMilliseconds = 2_000
        configuration.heartbeatIntervalMilliseconds = heartbeatMs
        configuration.breakerSharing = sharing
        configuration.policies = policies.merging(["default": .pilotDefault]) { $1 }
        var logger = Logger(label: "cluster-test")
        logger.logLevel = .critical
        guard let wrapStore else {
            return try await CoordinatorNode.start(configuration: configuration, logger: logger).node
        }
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        let store = try await SQLiteStore.open(path: configuration.databasePath, synchronous: .normal)
        return try await CoordinatorNode.start(
            configuration: configuration, store: wrapStore(store), storeKind: "sqlite", storeDetail: configuration.databasePath, logger: logger
        ).node
    }

    /// Runs every node's `ClusterService` (heartbeat, reconciliation, bus) until the task is cancelled.
    static func runServices(_ nodes: [CoordinatorNode]) -> Task<Void, any Error> {
        Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in nodes { group.addTask { try await ClusterService(node: node).run() } }
                try await group.waitForAll()
            }
        }
    }

    /// Polls `condition` every 20 ms for up to `seconds`.
    static func eventually(_ seconds: Double = 5, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}
