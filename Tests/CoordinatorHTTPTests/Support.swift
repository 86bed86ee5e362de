import Coordinator
import CoordinatorCore
import CoordinatorHTTP
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdTesting
import Logging
import Metrics
import NIOCore
import Prometheus
import Synchronization

/// A clock the test moves by hand.
final class ManualClock: NodeClock {
    private let state = Mutex<(mono: Int64, wall: Int64)>((1_000_000_000_000, 1_760_000_000_000))
    func monotonicNow() -> Instant { Instant(nanoseconds: state.withLock { $0.mono }) }
    func wallMilliseconds() -> Int64 { state.withLock { $0.wall } }
    func advance(milliseconds: Int64) {
        state.withLock {
            $0.mono += milliseconds * 1_000_000
            $0.wall += milliseconds
        }
    }
}

/// The process-wide Prometheus registry (swift-metrics can be bootstrapped once per process).
let sharedRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return registry
}()

let adminToken = "test-admin-token-0123456789"

/// A node on a fresh temporary data directory, with its router.
struct TestNode {
    let node: CoordinatorNode
    let api: CoordinatorAPI
    let clock: ManualClock
    let directory: String

    static func make(
        clock: ManualClock = ManualClock(), configure: (inout NodeConfiguration) -> Void = { _ in }
    ) async throws -> TestNode {
        let directory = NSTemporaryDirectory() + "coordinator-http-\(UUID().uuidString)"
        var configuration = NodeConfiguration()
        configuration.dataDirectory = directory
        configuration.adminToken = adminToken
        configuration.sqliteSynchronous = .normal
        configure(&configuration)
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let registry = sharedRegistry
        let (node, _) = try await CoordinatorNode.start(configuration: configuration, clock: clock, logger: logger)
        return TestNode(node: node, api: CoordinatorAPI(node: node, registry: registry, clock: clock), clock: clock, directory: directory)
    }

    func withClient(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: api.makeRouter())
        do {
            try await app.test(.router) { client in try await body(client) }
        } catch {
            await node.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        await node.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }
}

extension TestClientProtocol {
    @discardableResult
    func send(
        _ method: HTTPRequest.Method, _ uri: String, json body: String? = nil, admin: Bool = false, headers: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers = headers
        if admin { headers[.authorization] = "Bearer \(adminToken)" }
        if body != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { $0 }
    }
}

func int(_ value: Any?) -> Int? {
    if let value = value as? Int { return value }
    if let value = value as? NSNumber { return value.intValue }
    return nil
}
