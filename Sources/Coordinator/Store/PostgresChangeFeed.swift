import CoordinatorCore
import Logging
import PostgresClient
import Synchronization

/// One change announced by the PostgreSQL store's triggers on `PostgresMigrations.changeChannel`.
public enum StoreChange: Sendable, Equatable {
    /// A policy or breaker configuration was written or deleted.
    case document(DocumentKind, name: String)
    /// A token was created (its secret's SHA-256, hex).
    case tokenCreated(secretHashHex: String)
    /// A token was revoked or deleted: caches must drop it and refuse it from now on.
    case tokenRevoked(id: String, secretHashHex: String)
    /// A token row was edited otherwise (expiry, policy…): caches must drop what they hold of it.
    case tokenChanged(id: String, secretHashHex: String)

    /// Parses a NOTIFY payload; `nil` for anything else.
    public init?(payload: String) {
        if payload.hasPrefix("document:") {
            let rest = payload.dropFirst("document:".count)
            guard let colon = rest.firstIndex(of: ":"), let kind = DocumentKind(rawValue: String(rest[..<colon])) else { return nil }
            let name = String(rest[rest.index(after: colon)...])
            guard ResourceName.isValid(name) else { return nil }
            self = .document(kind, name: name)
        } else if payload.hasPrefix("token_created:") {
            let hex = String(payload.dropFirst("token_created:".count))
            guard Self.isSHA256Hex(hex) else { return nil }
            self = .tokenCreated(secretHashHex: hex)
        } else if payload.hasPrefix("token_revoked:") || payload.hasPrefix("token_changed:") {
            // `<id>:<hex>`; the id is everything before the last colon.
            let rest = payload.drop { $0 != ":" }.dropFirst()
            guard let colon = rest.lastIndex(of: ":") else { return nil }
            let id = String(rest[..<colon])
            let hex = String(rest[rest.index(after: colon)...])
            guard !id.isEmpty, id.utf8.count <= 256, Self.isSHA256Hex(hex) else { return nil }
            self = payload.hasPrefix("token_revoked:") ? .tokenRevoked(id: id, secretHashHex: hex) : .tokenChanged(id: id, secretHashHex: hex)
        } else {
            return nil
        }
    }
}

extension StoreChange {
    /// 64 lowercase hexadecimal digits.
    static func isSHA256Hex(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

/// Keeps one LISTEN connection on the current primary for the store's change feed — the second
/// channel beside the Redis bus, and the only one without Redis.
///
/// When the connection breaks, or the router's primary moves to another host (failover, fencing),
/// it connects to the primary the router knows now, LISTENs again and reports `.subscribed`; the
/// node then reloads what it keeps in memory, since notifications sent meanwhile are lost.
public final class PostgresChangeFeed: Sendable {
    /// What the feed reports to its consumer, in order.
    public enum Event: Sendable, Equatable {
        /// LISTENing on `host`; anything cached may be stale (notifications may have been missed).
        case subscribed(HostID)
        /// A change was announced.
        case change(StoreChange)
        /// A payload that is not a change (counted and ignored).
        case malformed(String)
        /// The LISTEN connection was lost or could not be opened.
        case lost(String)
    }

    /// How often the LISTEN connection is checked with `SELECT 1`.
    static let heartbeatInterval = Duration.seconds(5)
    let router: ReplicatedPostgres
    let connectTimeout: Duration
    private let state = Mutex<FeedState>(FeedState())

    struct FeedState {
        var host: HostID?
        var listener: PostgresListener?
        var closed = false
    }

    /// A feed over `router`'s primary; nothing happens until `run`.
    public init(router: ReplicatedPostgres, connectTimeout: Duration) {
        self.router = router
        self.connectTimeout = connectTimeout
    }

    /// The host LISTENed on, when connected.
    public var listeningOn: HostID? { state.withLock { $0.host } }

    /// Follows the primary until cancelled or closed, reporting every event to `handle`.
    public func run(_ handle: @Sendable (Event) async -> Void) async {
        var backoff = Duration.milliseconds(50)
        while !Task.isCancelled, !state.withLock({ $0.closed }) {
            guard let (host, target) = router.primaryTarget() else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            let listener: PostgresListener
            do {
                listener = try await PostgresListener.connect(
                    conninfo: target.conninfo, channels: [PostgresMigrations.changeChannel], connectTimeout: connectTimeout)
            } catch {
                if Task.isCancelled { return }
                await handle(.lost("cannot LISTEN on \(host): \(error)"))
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(1))
                continue
            }
            backoff = .milliseconds(50)
            let accepted = state.withLock { state -> Bool in
                if state.closed { return false }
                state.host = host
                state.listener = listener
                return true
            }
            guard accepted else {
                await listener.close()
                return
            }
            await handle(.subscribed(host))
            // The router may move the primary while this connection stays up (a fenced or demoted
            // host keeps its sessions): follow it.
            // And a LISTEN connection can die silently (a middlebox drops it; TCP keepalive takes hours):
            // a `SELECT 1` on it every few seconds notices.
            let router = router
            let heartbeatTimeout = connectTimeout
            let watchdog = Task {
                var lastHeartbeat = ContinuousClock.now
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    if router.primary != host {
                        await listener.close()
                        return
                    }
                    if ContinuousClock.now - lastHeartbeat >= Self.heartbeatInterval {
                        lastHeartbeat = ContinuousClock.now
                        do {
                            _ = try await listener.connection.execute("SELECT 1", deadline: ContinuousClock.now + heartbeatTimeout)
                        } catch {
                            await listener.close()
                            return
                        }
                    }
                }
            }
            var reason = "the primary moved away from \(host)"
            do {
                for try await notification in listener.notifications {
                    if let change = StoreChange(payload: notification.payload) {
                        await handle(.change(change))
                    } else {
                        await handle(.malformed(notification.payload))
                    }
                }
            } catch {
                reason = "LISTEN connection to \(host) lost: \(error)"
            }
            watchdog.cancel()
            await listener.close()
            state.withLock { state in
                state.host = nil
                state.listener = nil
            }
            if Task.isCancelled || state.withLock({ $0.closed }) { return }
            await handle(.lost(reason))
        }
    }

    /// Stops the feed: closes the LISTEN connection and ends `run`.
    public func close() async {
        let listener = state.withLock { state -> PostgresListener? in
            state.closed = true
            return state.listener
        }
        await listener?.close()
    }
}
