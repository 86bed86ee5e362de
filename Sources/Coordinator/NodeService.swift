import CoordinatorCore
import Logging
import RedisClient
import ServiceLifecycle

/// Runs a node's timers as a long-lived `Service`, and on graceful shutdown closes the node after
/// everything that depends on it (the HTTP server, listed after it in the service group) stopped.
public struct NodeService: Service {
    public let node: CoordinatorNode

    public init(node: CoordinatorNode) {
        self.node = node
    }

    public func run() async throws {
        let interval = Duration.milliseconds(node.configuration.maintenanceIntervalMilliseconds)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    break
                }
                await node.maintain()
            }
        }
        await node.shutdown()
    }
}

/// Put last in the service group, so it hears the shutdown signal first (services shut down in
/// reverse order): it marks the node as draining — `/readyz` fails at once — while the HTTP server,
/// listed before it, goes on serving what it already accepted until it drains.
public struct NodeDrainService: Service {
    public let node: CoordinatorNode

    public init(node: CoordinatorNode) {
        self.node = node
    }

    public func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            return  // cancelled: the group is going down anyway
        }
        await node.beginDraining()
    }
}

/// Cluster mode's heartbeat: every `heartbeatIntervalMs` records this node in Redis, learns the live
/// set, and notices loss and recovery of Redis (limits go to local share and come back). On graceful
/// shutdown the node leaves the live set at once (done by `CoordinatorNode.shutdown`).
public struct ClusterService: Service {
    public let node: CoordinatorNode

    public init(node: CoordinatorNode) {
        self.node = node
    }

    public func run() async throws {
        guard let link = node.cluster else { return }
        let node = self.node
        let interval = Duration.milliseconds(node.configuration.heartbeatIntervalMilliseconds)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        do {
                            try await Task.sleep(for: interval)
                        } catch {
                            break
                        }
                        await node.heartbeatOnce()
                        // Reconcile at every heartbeat: a lost bus message heals within one interval.
                        await node.reconcileSharedState()
                    }
                }
                group.addTask {
                    // Approximate limits: each policy syncs at its own syncIntervalMs (checked inside).
                    while !Task.isCancelled {
                        do {
                            try await Task.sleep(for: .milliseconds(10))
                        } catch {
                            break
                        }
                        await node.syncApproximateLimits()
                    }
                }
                group.addTask {
                    // Breakers with aggregate sharing: window counters go to Redis every 100 ms.
                    while !Task.isCancelled {
                        do {
                            try await Task.sleep(for: .milliseconds(100))
                        } catch {
                            break
                        }
                        await node.flushAggregateCounters()
                    }
                }
                group.addTask {
                    let subscriber = link.makeSubscriber()
                    for await event in subscriber.events(channels: [link.keys.busChannel]) {
                        switch event {
                        case .subscribed:
                            // Messages may have been missed while unsubscribed: catch up now.
                            await node.reconcileSharedState()
                        case .message(_, let payload):
                            await node.receiveBusMessage(payload)
                        case .disconnected:
                            break
                        }
                    }
                    await subscriber.close()
                }
            }
        }
    }
}
