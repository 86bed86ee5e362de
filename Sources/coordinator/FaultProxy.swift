import ArgumentParser
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Synchronization

/// `coordinator proxy`: a TCP fault proxy in toxiproxy's model, for the chaos suite on a kernel without
/// `netem`. Each route listens on one address and relays to one upstream; per direction it can add
/// latency with jitter, cap bandwidth, or swallow data (a black hole: callers wait for their
/// deadlines), and it can reset connections (RST). Toxics change at run time through a small HTTP API.
struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "TCP fault proxy (latency, jitter, bandwidth, black hole, reset) for chaos tests; see README.",
        discussion: "Control API on --control: GET /routes; PUT /routes/NAME/toxics with "
            + #"{"upstream":{"latencyMs":50,"jitterMs":10,"bandwidthKBps":0,"blackhole":false},"downstream":{…},"resetPeer":false}"#
            + " (upstream: client → server; downstream: server → client); DELETE /routes/NAME/toxics clears them.")

    @Option(name: .customLong("route"), help: "NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT (repeatable; LISTEN port 0 picks a free one).")
    var routes: [String] = []
    @Option(help: "Control API address HOST:PORT (port 0 picks a free one).") var control: String = "127.0.0.1:0"

    func validate() throws {
        guard !routes.isEmpty else { throw ValidationError("give at least one --route NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT") }
        var names = Set<String>()
        for text in routes {
            let route = try ProxyRouteSpec(parsing: text)
            guard names.insert(route.name).inserted else { throw ValidationError("--route: \(route.name) is given twice") }
        }
        _ = try ProxyRouteSpec.address(control, what: "--control")
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        var proxies: [String: ProxyRoute] = [:]
        var channels: [any Channel] = []
        for text in routes {
            let spec = try ProxyRouteSpec(parsing: text)
            let route = ProxyRoute(spec: spec)
            let channel = try await route.listen(group: group)
            channels.append(channel)
            proxies[spec.name] = route
            Self.say("proxy \(spec.name): listening on \(spec.listenHost):\(channel.localAddress?.port ?? 0) → \(spec.upstreamHost):\(spec.upstreamPort)")
        }
        let (controlHost, controlPort) = try ProxyRouteSpec.address(control, what: "--control")
        let router = Router()
        let registry = proxies
        router.get("/routes") { _, _ -> Response in
            let body = registry.keys.sorted().map { name in
                let route = registry[name]!
                return #"{"name":"\#(name)","listen":\#(route.listenPort.load(ordering: .relaxed)),"upstream":"\#(route.spec.upstreamHost):\#(route.spec.upstreamPort)","toxics":\#(route.toxicsJSON()),"connections":\#(route.connections.load(ordering: .relaxed))}"#
            }.joined(separator: ",")
            return Self.json(.ok, "[" + body + "]")
        }
        router.put("/routes/:name/toxics") { request, context -> Response in
            guard let name = context.parameters.get("name"), let route = registry[name] else {
                return Self.json(.notFound, #"{"error":"no such route"}"#)
            }
            let body = try await request.body.collect(upTo: 64 * 1024)
            do {
                let toxics = try JSONDecoder().decode(RouteToxics.self, from: Data(String(buffer: body).utf8))
                if let problem = toxics.problem { return Self.json(.badRequest, #"{"error":"\#(problem)"}"#) }
                route.set(toxics)
                Self.say("proxy \(name): toxics \(route.toxicsJSON())")
                return Self.json(.ok, route.toxicsJSON())
            } catch {
                return Self.json(.badRequest, #"{"error":"invalid toxics JSON"}"#)
            }
        }
        router.delete("/routes/:name/toxics") { _, context -> Response in
            guard let name = context.parameters.get("name"), let route = registry[name] else {
                return Self.json(.notFound, #"{"error":"no such route"}"#)
            }
            route.set(RouteToxics())
            Self.say("proxy \(name): toxics cleared")
            return Self.json(.ok, route.toxicsJSON())
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(controlHost, port: controlPort)),
            onServerRunning: { channel in
                Self.say("proxy control: listening on http://\(controlHost):\(channel.localAddress?.port ?? 0)")
            })
        try await app.runService()
        for channel in channels { try? await channel.close() }
    }

    /// One line on stdout, unbuffered (a parent reads the addresses as they come).
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// `NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT`.
struct ProxyRouteSpec: Sendable {
    var name: String
    var listenHost: String
    var listenPort: Int
    var upstreamHost: String
    var upstreamPort: Int

    init(parsing text: String) throws {
        let parts = text.split(separator: "=", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw ValidationError("--route \"\(text)\" is not NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT")
        }
        name = parts[0]
        (listenHost, listenPort) = try Self.address(parts[1], what: "--route \(parts[0]) listen address")
        (upstreamHost, upstreamPort) = try Self.address(parts[2], what: "--route \(parts[0]) upstream")
        guard upstreamPort > 0 else { throw ValidationError("--route \(name): the upstream port must not be 0") }
    }

    static func address(_ text: String, what: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port),
              colon != text.startIndex
        else { throw ValidationError("\(what): \"\(text)\" is not HOST:PORT") }
        return (String(text[..<colon]), port)
    }
}

/// What a route does to the bytes of one direction.
struct DirectionToxics: Codable, Sendable, Equatable {
    /// Added to every chunk, in milliseconds.
    var latencyMs: Int = 0
    /// ± uniformly random, in milliseconds (order is kept: a chunk never overtakes an earlier one).
    var jitterMs: Int = 0
    /// Cap in KiB/s (0: none).
    var bandwidthKBps: Int = 0
    /// Swallow every byte (the peer waits until its own deadline).
    var blackhole: Bool = false

    init() {}

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        latencyMs = try container.decodeIfPresent(Int.self, forKey: .latencyMs) ?? 0
        jitterMs = try container.decodeIfPresent(Int.self, forKey: .jitterMs) ?? 0
        bandwidthKBps = try container.decodeIfPresent(Int.self, forKey: .bandwidthKBps) ?? 0
        blackhole = try container.decodeIfPresent(Bool.self, forKey: .blackhole) ?? false
    }
}

/// Every toxic of a route.
struct RouteToxics: Codable, Sendable, Equatable {
    /// Client → server.
    var upstream = DirectionToxics()
    /// Server → client.
    var downstream = DirectionToxics()
    /// Reset (RST) every connection on its next byte, and every new one at once.
    var resetPeer = false

    init() {}

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        upstream = try container.decodeIfPresent(DirectionToxics.self, forKey: .upstream) ?? DirectionToxics()
        downstream = try container.decodeIfPresent(DirectionToxics.self, forKey: .downstream) ?? DirectionToxics()
        resetPeer = try container.decodeIfPresent(Bool.self, forKey: .resetPeer) ?? false
    }

    /// Why these toxics are refused, if they are.
    var problem: String? {
        for toxics in [upstream, downstream] {
            guard (0...600_000).contains(toxics.latencyMs), (0...600_000).contains(toxics.jitterMs),
                  (0...10_000_000).contains(toxics.bandwidthKBps) else {
                return "latencyMs and jitterMs must be 0…600000, bandwidthKBps 0…10000000"
            }
        }
        return nil
    }
}

/// One listening address relaying to one upstream.
final class ProxyRoute: Sendable {
    let spec: ProxyRouteSpec
    let listenPort = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    private let toxics = Mutex(RouteToxics())

    init(spec: ProxyRouteSpec) { self.spec = spec }

    func set(_ new: RouteToxics) { toxics.withLock { $0 = new } }
    func current() -> RouteToxics { toxics.withLock { $0 } }

    func toxicsJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(current()), as: UTF8.self)) ?? "{}"
    }

    /// Binds the listening socket; every accepted connection is relayed to the upstream.
    func listen(group: any EventLoopGroup) async throws -> any Channel {
        let route = self
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.autoRead, value: false)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { client in
                route.accept(client)
                return client.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: spec.listenHost, port: spec.listenPort).get()
        listenPort.store(channel.localAddress?.port ?? 0, ordering: .relaxed)
        return channel
    }

    private func accept(_ client: any Channel) {
        if current().resetPeer {
            ProxyRoute.reset(client)
            return
        }
        connections.add(1, ordering: .relaxed)
        client.closeFuture.whenComplete { _ in self.connections.subtract(1, ordering: .relaxed) }
        let route = self
        ClientBootstrap(group: client.eventLoop)
            .channelOption(ChannelOptions.autoRead, value: false)
            .connectTimeout(.seconds(5))
            .connect(host: spec.upstreamHost, port: spec.upstreamPort)
            .flatMap { server -> EventLoopFuture<Void> in
                // On the event loop both channels share.
                do {
                    try client.pipeline.syncOperations.addHandler(RelayHandler(route: route, direction: .upstream, partner: server))
                    try server.pipeline.syncOperations.addHandler(RelayHandler(route: route, direction: .downstream, partner: client))
                } catch {
                    server.close(promise: nil)
                    return client.eventLoop.makeFailedFuture(error)
                }
                return client.setOption(ChannelOptions.autoRead, value: true).flatMap {
                    server.setOption(ChannelOptions.autoRead, value: true)
                }
            }
            .whenFailure { _ in client.close(promise: nil) }
    }

    /// Closes with RST (linger 0).
    static func reset(_ channel: any Channel) {
        guard let provider = channel as? any SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Relays what one side reads to its partner, through the route's toxics for that direction.
/// Lives on the event loop shared by both channels of a connection.
final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    enum Direction { case upstream, downstream }

    let route: ProxyRoute
    let direction: Direction
    let partner: any Channel
    /// When the last scheduled chunk goes out: later chunks never overtake it.
    private var lastDue = NIODeadline.uptimeNanoseconds(0)

    init(route: ProxyRoute, direction: Direction, partner: any Channel) {
        self.route = route
        self.direction = direction
        self.partner = partner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let all = route.current()
        if all.resetPeer {
            ProxyRoute.reset(context.channel)
            ProxyRoute.reset(partner)
            return
        }
        let toxics = direction == .upstream ? all.upstream : all.downstream
        if toxics.blackhole { return }
        var delayNs = Int64(toxics.latencyMs) * 1_000_000
        if toxics.jitterMs > 0 { delayNs += Int64.random(in: -Int64(toxics.jitterMs)...Int64(toxics.jitterMs)) * 1_000_000 }
        if toxics.bandwidthKBps > 0 { delayNs += Int64(buffer.readableBytes) * 1_000_000_000 / (Int64(toxics.bandwidthKBps) * 1024) }
        let now = NIODeadline.now()
        let due = max(now + .nanoseconds(max(0, delayNs)), lastDue)
        lastDue = due
        let partner = partner
        if due <= now {
            partner.writeAndFlush(buffer, promise: nil)
        } else {
            context.eventLoop.scheduleTask(deadline: due) { partner.writeAndFlush(buffer, promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Close the partner once what is scheduled has gone out.
        let partner = partner
        context.eventLoop.scheduleTask(deadline: max(lastDue, .now())) { partner.close(promise: nil) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
        partner.close(promise: nil)
    }
}
